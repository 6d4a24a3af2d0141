"""The PT primitives (paper Algorithm 1; REFERENCE 4.3-4.4), free of files and schedules.

Each acts on one `ArchParameters` (a cell type's alpha and selection state) and an
`evaluate()` callable returning the supernet's (loss, accuracy) on validation data under the
current masks. They are what `tfnas select`, SGAS+PT during the search and the library call
`tfnas.derive.select` share.
"""

import numpy as np

from tfnas.derive.selectors import get_selector


def score_ops(arch, edge, candidates, evaluate):
    """{op index: (loss, acc)} of the supernet with each candidate op of `edge` masked out
    (the others keep their weights: no renormalisation, as the reference)."""
    scores = {}
    for k in candidates:
        arch.mask_op(edge, k)
        try:
            scores[k] = tuple(evaluate())
        finally:
            arch.reset_op_mask()
    return scores


def decide_op(arch, space, cell_type, edge, evaluate, crit="acc", by_alpha=False, fits=None,
              selector=None, measure=None):
    """Scores `edge`, fixes it to the chosen op and returns the decision row.

    Args:
        arch: the ArchParameters of `cell_type`.
        space: the SearchSpace (its `candidates` owns which ops may be kept).
        evaluate: callable -> (loss, acc) under the current masks.
        crit: "acc" or "loss".
        by_alpha: keep the op with the largest softmaxed alpha instead (PT-Mag).
        fits: optional callable(op index) -> bool (a budget): the choice is the most
            important op among those that fit; every candidate is still scored.
        selector: a registered selector's name (default "pt", or "pt_mag" with by_alpha).
        measure: the callable of the logged accuracy before and after the decision (default
            `evaluate`); one without side effects keeps the BN running statistics as the
            reference, which scores the candidates only.
    Returns:
        {"kind": "op", "cell", "edge", "node", "input", "alphas", "scores", "acc_before",
         "acc_after", "choice"} (+ "decided_before" for an edge decided or removed earlier,
         which is left as it is; + "over_budget": ops that did not fit, with `fits`).
    """
    ops = space.cells[cell_type].ops[edge]
    node, inp = space.cells[cell_type].edges[edge]
    alphas = np.asarray(arch.softmax())[edge, :len(ops)]
    measure = measure or evaluate
    before = tuple(measure())
    row = {"kind": "op", "cell": cell_type, "edge": edge, "node": node, "input": inp,
           "alphas": dict(zip(ops, alphas.round(6).tolist())), "scores": {},
           "acc_before": before[1]}
    decided, live = arch.decided()[edge], arch.live()[edge]
    if decided or not live:  # e.g. by SGAS during the search: kept as it is
        kept = int(np.argmax(arch.fixed_w.numpy()[edge])) if decided else None
        return {**row, "acc_after": before[1], "decided_before": True,
                "choice": ops[kept] if kept is not None else None}
    candidates = space.candidates(cell_type, edge)
    allowed = [k for k in candidates if fits is None or fits(k)]
    if fits is not None:
        row["over_budget"] = [ops[k] for k in candidates if k not in allowed]
        if not allowed:
            raise ValueError(f"{cell_type} edge {edge}: no candidate op fits the budget")
    chooser = get_selector(selector or ("pt_mag" if by_alpha else "pt"))
    scores = score_ops(arch, edge, candidates, evaluate) if chooser.scores_ops else {}
    choice = chooser.choose(scores, alphas, allowed, crit)
    if scores:
        row["scores"] = {ops[k]: {"loss": s[0], "acc": s[1]} for k, s in scores.items()}
    arch.fix_edge(edge, choice)
    return {**row, "acc_after": tuple(measure())[1], "choice": ops[choice]}


TOPOLOGY_RULES = ("reference", "cumulative")


def decide_topology(arch, space, cell_type, node, evaluate, crit="acc", can_remove=None,
                    keep=(), rule="reference", measure=None):
    """Drops input edges of `node`, one per round, until `space.inputs_per_node` remain: each
    round removes the live edge whose absence leaves accuracy highest (`loss`: loss lowest;
    ties: the later edge).

    Args:
        can_remove: optional callable(edge) -> bool (a budget): which edges a round may drop.
        keep: edges that no round may drop (decided before the selection, e.g. by SGAS
            during the search: a decision made final stays final).
        rule: "reference" scores every remaining edge with only that edge removed (the
            edges dropped in earlier rounds present again; the reference's `project_edge`
            rebuilds its weights per candidate and removes the losers only at the end);
            "cumulative" keeps earlier rounds' edges removed while later rounds are scored.
        measure: the callable of the logged accuracy before and after (see `decide_op`).
    Returns:
        {"kind": "topology", "cell", "node", "kept_inputs", "rounds", "acc_before",
         "acc_after", "rule"} (+ "kept_decided": the inputs that `keep` protected).
    """
    if rule not in TOPOLOGY_RULES:
        raise ValueError(f"topology rule {rule!r} is unknown; expected one of "
                         f"{', '.join(TOPOLOGY_RULES)}")
    cspace = space.cells[cell_type]
    live = arch.live()
    eids = [e for e in cspace.node_edges(node) if live[e]]
    protected = [e for e in eids if e in set(keep)]
    if len(protected) > space.inputs_per_node:
        raise ValueError(f"{cell_type} node {node}: {len(protected)} inputs were decided "
                         f"before, more than the {space.inputs_per_node} it keeps")
    measure = measure or evaluate
    before = tuple(measure())
    rounds, dropped = [], []
    while len(eids) > space.inputs_per_node:
        results = _without_each(arch, eids, evaluate)
        removable = [e for e in eids if e not in protected
                     and (can_remove is None or _can_remove(arch, can_remove, e, dropped,
                                                            rule))]
        if not removable:
            raise ValueError(f"{cell_type} node {node}: no input edge can be removed "
                             f"(decided before or over the budget)")
        worst = max(removable, key=lambda e: (results[e][1] if crit == "acc"
                                              else -results[e][0], e))
        eids.remove(worst)
        dropped.append(worst)
        if rule == "cumulative":
            arch.remove_edge(worst)
        rounds.append({"scores": {str(e): {"loss": r[0], "acc": r[1]}
                                  for e, r in results.items()}, "removed": worst})
    for e in dropped:
        arch.remove_edge(e)
    row = {"kind": "topology", "cell": cell_type, "node": node,
           "kept_inputs": [cspace.edges[e][1] for e in eids], "rounds": rounds,
           "acc_before": before[1], "acc_after": tuple(measure())[1], "rule": rule}
    if protected:
        row["kept_decided"] = [cspace.edges[e][1] for e in protected]
    return row


def _without_each(arch, eids, evaluate):
    """{edge: (loss, acc)} with each of `eids` removed in turn (the others as they are)."""
    results = {}
    for e in eids:
        arch.remove_edge(e)
        try:
            results[e] = tuple(evaluate())
        finally:
            arch.remove_edge(e, removed=False)
    return results


def _can_remove(arch, can_remove, edge, dropped, rule):
    """`can_remove(edge)` judged with this decision's earlier drops applied (the reference
    rule applies them only at the end; a budget must still see them)."""
    if rule == "cumulative" or not dropped:
        return can_remove(edge)
    for e in dropped:
        arch.remove_edge(e)
    try:
        return can_remove(edge)
    finally:
        for e in dropped:
            arch.remove_edge(e, removed=False)


def decision_events(space, seed):
    """The reference's schedule: all op decisions (a random edge order per cell type), then
    the topology decisions (a random node order; DARTS family). Returns
    [(kind, {cell type: edge | node})]."""
    rng = np.random.RandomState(seed)
    events = []
    orders = {t: rng.permutation(space.cells[t].num_edges).tolist() for t in space.cell_types}
    for i in range(space.cells[space.cell_types[0]].num_edges):
        events.append(("op", {t: orders[t][i] for t in space.cell_types}))
    nodes = {t: space.topology_nodes(t) for t in space.cell_types}
    if any(nodes.values()):
        node_orders = {t: [nodes[t][k] for k in rng.permutation(len(nodes[t]))]
                       for t in space.cell_types}
        for i in range(len(nodes[space.cell_types[0]])):
            events.append(("topology", {t: node_orders[t][i] for t in space.cell_types}))
    return events
