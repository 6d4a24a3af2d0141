"""Magnitude selection: the DARTS baseline (argmax of alpha)."""

import numpy as np

from tfnas.genotype import Edge, Genotype
from tfnas.spaces import get_space


def magnitude_genotype(space, weights, meta=None):
    """Derives a genotype from mixing weights by magnitude.

    DARTS family: per node keep the two input edges whose largest non-`none` weight is largest
    (ties keep the earlier edge), and on each the non-`none` op with the largest weight.
    NB201: per edge the argmax over all ops (`none` included).

    Args:
        space: a SearchSpace or its name.
        weights: cell type -> array [edges, max_ops] (softmaxed alphas, or the projected
            weights of a supernet under selection, where decided rows are one-hot).
        meta: stored in the genotype's `meta`.
    Returns:
        A validated Genotype.
    """
    space = get_space(space)
    cells = {}
    for ctype in space.cell_types:
        cspace, w = space.cells[ctype], np.asarray(weights[ctype], np.float64)
        if w.shape[0] != cspace.num_edges:
            raise ValueError(f"{ctype} weights have {w.shape[0]} rows, the cell has "
                             f"{cspace.num_edges} edges")
        best = []  # per edge: (op index, weight) of the best eligible op
        for e, ops in enumerate(cspace.ops):
            cand = space.candidates(ctype, e)
            k = max(cand, key=lambda k: (w[e, k], -k))  # ties -> earlier op
            best.append((k, w[e, k]))
        edges = []
        for node in cspace.nodes:
            eids = cspace.node_edges(node)
            if space.inputs_per_node:  # stable sort: ties keep the earlier edge
                eids = sorted(eids, key=lambda e: -best[e][1])[:space.inputs_per_node]
            for e in sorted(eids):
                edges.append(Edge(node, cspace.edges[e][1], cspace.ops[e][best[e][0]]))
        cells[ctype] = {"edges": edges, "concat": space.concat(ctype)}
    g = Genotype(space.ref, cells, dict(meta or {}, selector="magnitude"))
    g.validate("magnitude genotype")
    return g
