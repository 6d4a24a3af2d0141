"""SearchSpace, CellSpace and the registry of spaces (the format: see `tfnas.spaces`)."""

import dataclasses
import json
import os

from tfnas.errors import SpaceError
from tfnas.ops import OPS
from tfnas.registry import Registry

SPACES = Registry("search space")
# Spaces built with make_space in this process that are neither registered nor files: a
# genotype of such a space refers to it by name. Register it (SPACES.register) or use a JSON
# file to use it in another process.
_MADE = {}
FAMILIES = ("darts", "nb201")


def darts_edges(steps=4):
    """(node, input) pairs of a DARTS cell with `steps` intermediate nodes."""
    return tuple((node, j) for node in range(2, steps + 2) for j in range(node))


def nb201_edges(nodes=4):
    return tuple((node, j) for node in range(1, nodes) for j in range(node))


@dataclasses.dataclass(frozen=True)
class CellSpace:
    """Edges and per-edge candidate ops of one cell type."""

    edges: tuple      # ((node, input), ...) in edge-id order
    ops: tuple        # ((op names of edge 0), (op names of edge 1), ...)

    @property
    def num_edges(self):
        return len(self.edges)

    @property
    def max_ops(self):
        return max(len(o) for o in self.ops)

    @property
    def nodes(self):
        return sorted({n for n, _ in self.edges})

    def node_edges(self, node):
        """Edge ids whose output feeds `node`."""
        return [e for e, (n, _) in enumerate(self.edges) if n == node]

    def edge_id(self, node, inp):
        try:
            return self.edges.index((node, inp))
        except ValueError:
            raise SpaceError(f"no edge {inp}->{node} in this cell; edges: {list(self.edges)}") \
                from None


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A named search space.

    Attributes:
        name: registry name or the JSON's `name`.
        family: "darts" (normal + reduce cells, 2 inputs, concat of the intermediate nodes)
            or "nb201" (one cell type, node 0 input, output = last node).
        cells: cell type -> CellSpace.
    """

    name: str
    family: str
    cells: dict
    ref: str = None  # what get_space() needs to find it again: the name, or the JSON path

    def __post_init__(self):
        if self.ref is None:
            object.__setattr__(self, "ref", self.name)

    @property
    def cell_types(self):
        return tuple(self.cells)

    @property
    def steps(self):
        """Number of intermediate nodes."""
        return len(self.cells[self.cell_types[0]].nodes)

    def all_ops(self):
        return sorted({op for c in self.cells.values() for ops in c.ops for op in ops})

    def candidates(self, cell_type, edge):
        """Indices of the ops a derived architecture may keep on `edge` of `cell_type`: the
        one place that owns the family rule. DARTS-family genotypes never keep `none` (an
        edge is dropped by the topology instead); NB201 keeps any op, `none` included."""
        ops = self.cells[cell_type].ops[edge]
        return [k for k, op in enumerate(ops) if self.family == "nb201" or op != "none"]

    # --- the family rules, owned here (callers ask the space, not its family) ---------------
    @property
    def inputs_per_node(self):
        """How many input edges a derived node keeps: 2 (DARTS family; the others are
        dropped by topology decisions) or None (NB201: every edge stays, `none` included)."""
        return 2 if self.family == "darts" else None

    def topology_nodes(self, cell_type):
        """Nodes whose kept inputs are decided (more inputs than a node keeps)."""
        keep = self.inputs_per_node
        cspace = self.cells[cell_type]
        return [] if keep is None else [n for n in cspace.nodes
                                        if len(cspace.node_edges(n)) > keep]

    @property
    def skips_zero_ops(self):
        """Whether an op whose mixing weight is exactly zero is left uncomputed (so its BN
        statistics are not updated): the reference's DARTS MixedOp sums only ops with
        `w != 0` (a PT-masked op, the other ops of a decided edge); its NB201 cell computes
        every op, zero-weighted ones included."""
        return self.family == "darts"

    def tuning_epochs(self, events, per_decision):
        """Supernet tuning epochs after each of `events` selection decision events, as the
        reference schedules them (REFERENCE 4.2, 4.6): `per_decision` after each event and 1
        after the last; NB201 runs `per_decision * (events - 1)` epochs in all, so the event
        before the last gets one epoch less."""
        gaps = [per_decision] * (events - 1) + [1]
        if self.family == "nb201" and events > 1:
            gaps[-2] = max(per_decision - 1, 0)
        return gaps

    def concat(self, cell_type):
        """The nodes a derived cell concatenates (DARTS family: every intermediate node), or
        None where the cell's output is its last node (NB201)."""
        return list(self.cells[cell_type].nodes) if self.family == "darts" else None

    @property
    def default_form(self):
        """The discrete network a genotype of this space builds by default
        (`tfnas.build_model` forms: "cifar" for the DARTS family, "nb201")."""
        return "nb201" if self.family == "nb201" else "cifar"

    @property
    def cell_inputs(self):
        """The input states of a cell: (0, 1) = c_{k-2}, c_{k-1} (DARTS family), (0,) NB201."""
        return (0, 1) if self.family == "darts" else (0,)

    def to_json(self):
        return {"name": self.name, "family": self.family,
                "cells": {t: [list(o) for o in c.ops] for t, c in self.cells.items()}}


def make_space(name, family, ops=None, normal=None, reduce=None, cell=None, steps=None,
               ref=None):
    """Builds and validates a SearchSpace from op lists.

    Args:
        ops: one op list used on every edge of every cell type; or
        normal/reduce (darts) or cell (nb201): one op list per edge.
        steps: intermediate nodes (darts default 4, nb201 default 3).
    Raises:
        SpaceError: what is wrong and where.
    """
    if family not in FAMILIES:
        raise SpaceError(f"space {name!r}: family must be one of {FAMILIES}, got {family!r}")
    if family == "darts":
        edges = darts_edges(steps or 4)
        types = {"normal": normal, "reduce": reduce}
    else:
        edges = nb201_edges((steps or 3) + 1)
        types = {"cell": cell}
    cells = {}
    for ctype, per_edge in types.items():
        if per_edge is None:
            if ops is None:
                raise SpaceError(f"space {name!r}: give `ops` (one list) or per-edge lists "
                                 f"for cell types {list(types)}")
            per_edge = [ops] * len(edges)
        if len(per_edge) != len(edges):
            raise SpaceError(f"space {name!r}, {ctype} cell: {len(per_edge)} edge lists "
                             f"given, the cell has {len(edges)} edges")
        for e, edge_ops in enumerate(per_edge):
            if not edge_ops or isinstance(edge_ops, str):
                raise SpaceError(f"space {name!r}, {ctype} edge {e}: expected a non-empty "
                                 f"list of op names, got {edge_ops!r}")
            if len(set(edge_ops)) != len(edge_ops):
                raise SpaceError(f"space {name!r}, {ctype} edge {e}: duplicate ops {edge_ops}")
            for op in edge_ops:
                if op not in OPS:
                    raise SpaceError(f"space {name!r}, {ctype} edge {e}: unknown op {op!r}; "
                                     f"registered: {', '.join(OPS.names())}")
        cells[ctype] = CellSpace(edges, tuple(tuple(o) for o in per_edge))
    space = SearchSpace(name, family, cells, ref)
    if space.ref not in SPACES:
        _MADE[space.ref] = space  # found again by name in this process (genotypes refer to it)
    return space


def load_space_file(path):
    """Reads a user space from JSON (see the module docstring)."""
    try:
        with open(path) as f:
            spec = json.load(f)
    except OSError as e:
        raise SpaceError(f"cannot read space file {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise SpaceError(f"space file {path} is not valid JSON: {e}") from e
    if not isinstance(spec, dict):
        raise SpaceError(f"space file {path}: expected a JSON object")
    known = {"name", "family", "ops", "normal", "reduce", "cell", "steps", "cells"}
    extra = set(spec) - known
    if extra:
        raise SpaceError(f"space file {path}: unknown keys {sorted(extra)}; allowed {sorted(known)}")
    kw = dict(spec)
    kw.update(kw.pop("cells", {}) or {})
    kw.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    kw.setdefault("family", "darts")
    return make_space(**kw, ref=os.path.abspath(path))


def get_space(name_or_path):
    """Returns a registered space by name, or loads a JSON space file by path."""
    if isinstance(name_or_path, SearchSpace):
        return name_or_path
    if isinstance(name_or_path, str) and (name_or_path.endswith(".json")
                                          or os.sep in name_or_path):
        return load_space_file(name_or_path)
    if name_or_path not in SPACES and name_or_path in _MADE:
        return _MADE[name_or_path]
    return SPACES.get(name_or_path)()
