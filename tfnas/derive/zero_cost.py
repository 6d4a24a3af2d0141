"""Zero-Cost-PT (Xiang et al., "Zero-Cost Operation Scoring in Differentiable Architecture
Search", AAAI 2023): PT's perturbation scheme with a zero-cost proxy in place of the tuned
supernet's validation accuracy.

1. Search, `iterations` times (the paper's N): from the selection state the supernet
   started with, decide every edge in an order (`edge_order`: random, drawn per iteration
   from the seed, as the paper's default; or the edges' order; or its reverse): on one
   batch of the weight split (a new batch per decision event), score the supernet with each
   candidate op of the edge masked out and keep the op whose removal lowers the proxy most;
   then the topology (DARTS family) the same way: drop the input edge whose removal lowers
   it least. No tuning between decisions. Each iteration yields one candidate genotype.
2. Validation: every distinct candidate is built as its discrete network (freshly
   initialised, the search's channels and cells) and scored by the proxy summed over
   `validate_rounds` batches (the paper's V); the highest sum is the selection.

`tfnas select --selector=zc_pt` runs it on a search run (resumable per iteration);
`zero_cost_select` here is the library form on any supernet of this package:

    genotype = tfnas.derive.zero_cost_select(
        supernet, train_ds, build=lambda g: tfnas.build_model(g, 10, (32, 32, 3), 16, 8),
        zero_cost=ZeroCost(proxy="nwot", iterations=10, validate_rounds=100))
"""

import dataclasses
import json
import math

import numpy as np

from tfnas.derive.api import decide
from tfnas.derive.magnitude import magnitude_genotype
from tfnas.derive.perturbation import decision_events
from tfnas.derive.proxies import PROXIES, ProxyScorer
from tfnas.errors import UsageError
from tfnas.genotype import Genotype

EDGE_ORDERS = ("random", "order", "reverse")


class ProxyError(UsageError):
    """A proxy gave a value that is not finite."""


@dataclasses.dataclass
class ZeroCost:
    """Zero-Cost-PT's settings (the paper's defaults).

    Attributes:
        proxy: a registered proxy (`tfnas.derive.proxies.PROXIES`).
        iterations: N, the candidate architectures searched.
        validate_rounds: V, batches each distinct candidate is scored on.
        edge_order: "random" (per iteration), "order" or "reverse".
    """

    proxy: str = "nwot"
    iterations: int = 10
    validate_rounds: int = 100
    edge_order: str = "random"

    def check(self):
        """Raises UsageError naming the bad setting."""
        if self.proxy not in PROXIES:
            raise UsageError(f"proxy {self.proxy!r} is unknown; expected one of "
                             f"{', '.join(PROXIES.names())}")
        if self.edge_order not in EDGE_ORDERS:
            raise UsageError(f"edge order {self.edge_order!r} is unknown; expected one of "
                             f"{', '.join(EDGE_ORDERS)}")
        if self.iterations < 1 or self.validate_rounds < 1:
            raise UsageError("zero-cost iterations and validate_rounds must be at least 1")
        return self


def zc_events(space, seed, edge_order="random"):
    """The decision events of one iteration: every edge, then the topology (DARTS family);
    `random` is PT's schedule (`decision_events`), `order` / `reverse` fix the edge order."""
    events = decision_events(space, seed)
    if edge_order == "random":
        return events
    n = space.cells[space.cell_types[0]].num_edges
    edges = list(range(n)) if edge_order == "order" else list(range(n - 1, -1, -1))
    ops = [("op", {t: e for t in space.cell_types}) for e in edges]
    nodes = {t: space.topology_nodes(t) for t in space.cell_types}
    topo = [("topology", {t: nodes[t][i] for t in space.cell_types})
            for i in range(len(nodes[space.cell_types[0]]))]
    return ops + topo


class SelectionState:
    """The selection variables of every cell type, to restore between iterations (edges
    decided before, e.g. by SGAS during the search, stay decided)."""

    def __init__(self, supernet):
        self.archs = [supernet.arch(t) for t in supernet.space.cell_types]
        self.saved = [[v.numpy() for v in self._vars(a)] for a in self.archs]

    @staticmethod
    def _vars(arch):
        return [arch.op_mask, arch.fixed_w, arch.is_fixed, arch.edge_mask]

    def restore(self):
        for arch, values in zip(self.archs, self.saved):
            for v, value in zip(self._vars(arch), values):
                v.assign(value)


def _where(arch, space, ctype):
    """What the current masks remove on `ctype` (for an error message)."""
    cells = space.cells[ctype]
    masked = np.argwhere((arch.op_mask.numpy() < 0.5) & (arch._valid > 0.5))
    if len(masked):
        e, k = masked[0]
        node, inp = cells.edges[e]
        return f"{ctype} edge {e} ({inp}->{node}) with {cells.ops[e][k]} masked"
    removed = [e for e, live in enumerate(arch.live()) if not live]
    return f"{ctype} with edge(s) {removed} removed" if removed else f"{ctype} unmasked"


def proxy_evaluate(scorer, batch, arch, space, ctype):
    """evaluate() for `decide`: (nan, proxy value) on `batch` under the current masks (the
    value in the accuracy slot: the op whose removal lowers it most is kept).

    Raises:
        ProxyError: a value that is not finite, naming the masked op or removed edge.
    """
    def evaluate():
        value = scorer(*batch)
        if not math.isfinite(value):
            raise ProxyError(f"proxy {scorer.name} gave {value} on {_where(arch, space, ctype)}"
                             f"; nothing was written")
        return float("nan"), value
    return evaluate


def proxy_row(row, proxy, iteration):
    """A decision row of `decide` with proxy values named as such (no before / after
    values: Zero-Cost-PT measures the candidates only)."""
    out = {k: v for k, v in row.items() if k not in ("acc_before", "acc_after", "scores",
                                                     "rounds")}
    out.update(proxy=proxy, iteration=iteration)
    if row["kind"] == "op":
        out["scores"] = {op: s["acc"] for op, s in row.get("scores", {}).items()}
    else:
        out["rounds"] = [{"scores": {e: s["acc"] for e, s in r["scores"].items()},
                          "removed": r["removed"]} for r in row["rounds"]]
    return out


def search_candidate(supernet, scorer, batches, zc, iteration, seed, decide, log=None):
    """One iteration of step 1: returns (genotype, rows). `batches`: an iterator of (x, y);
    `decide`: `tfnas.derive.api.decide` with the budget and topology rule bound."""
    space = supernet.space
    archs = {t: supernet.arch(t) for t in space.cell_types}
    keep = {t: np.flatnonzero(archs[t].decided()).tolist() for t in space.cell_types}
    rows = []
    for i, (kind, targets) in enumerate(zc_events(space, seed + iteration, zc.edge_order)):
        batch = next(batches)
        for ctype, target in targets.items():
            evaluate = proxy_evaluate(scorer, batch, archs[ctype], space, ctype)
            row = decide(archs, space, kind, ctype, target, evaluate, keep=keep[ctype])
            rows.append(dict(proxy_row(row, zc.proxy, iteration), event=i))
            if log:
                what = row.get("choice") if kind == "op" else row["kept_inputs"]
                log(f"zc_pt iteration {iteration + 1}/{zc.iterations} decision {i + 1}: "
                    f"{ctype} {kind} {target} -> {what}")
    genotype = magnitude_genotype(space, supernet.arch_weights_numpy(),
                                  meta={"selector": "zc_pt", "proxy": zc.proxy,
                                        "iteration": iteration})
    return genotype, rows


def iterate_candidates(supernet, scorer, zc, seed, decide, batches_for, start=0, log=None):
    """Step 1 from iteration `start`: yields (iteration, genotype, rows), each iteration from
    the selection state the supernet started with (restored again after the last one);
    `batches_for(iteration)` -> the iterator of (x, y) that iteration reads."""
    state = SelectionState(supernet)
    try:
        for it in range(start, zc.iterations):
            state.restore()
            yield (it, *search_candidate(supernet, scorer, batches_for(it), zc, it, seed,
                                         decide, log))
    finally:
        state.restore()


def validate_candidates(genotypes, build, batches, zc, log=None):
    """Step 2: ([proxy sum over `zc.validate_rounds` batches], [its first index in
    `genotypes`]) per distinct candidate (`build(genotype)` -> its discrete Keras model), and
    the best one's index in `genotypes` (the first of equal sums)."""
    sums, first = {}, {}
    rounds = [next(batches) for _ in range(zc.validate_rounds)]
    for i, g in enumerate(genotypes):
        key = json.dumps(g.to_json()["cells"], sort_keys=True)
        if key in sums:
            continue
        scorer = ProxyScorer(build(g), zc.proxy)
        total = 0.0
        for x, y in rounds:
            value = scorer(x, y)
            if not math.isfinite(value):
                raise ProxyError(f"proxy {zc.proxy} gave {value} on candidate {i + 1} "
                                 f"({key}); nothing was written")
            total += value
        sums[key], first[key] = total, i
        if log:
            log(f"zc_pt validation: candidate {i + 1} {zc.proxy} sum {total:.6g}")
    best = max(sums, key=lambda k: (sums[k], -first[k]))
    return list(sums.values()), list(first.values()), first[best]


def make_decide(budget=None, topology_rule="reference"):
    """`decide` as `search_candidate` calls it: the proxy in the accuracy slot, no before /
    after pass (Zero-Cost-PT measures only the candidates), within `budget` if given."""
    def nothing():
        return float("nan"), float("nan")

    def run(archs, space, kind, ctype, target, evaluate, keep=()):
        return decide(archs, space, kind, ctype, target, evaluate, "acc", budget=budget,
                      selector="zc_pt", keep=keep, topology_rule=topology_rule,
                      measure=nothing)
    return run


def zero_cost_select(supernet, data, build, zero_cost=None, seed=0, budget=None,
                     topology_rule="reference", log=None):
    """Zero-Cost-PT on `supernet` as it is (trained or freshly built), batches from `data`
    (a `tf.data.Dataset` of (images, labels), repeated as needed).

    Args:
        build: callable(Genotype) -> the candidate's discrete Keras model (validation).
        zero_cost: a `ZeroCost` (default: nwot, N=10, V=100, random edge order).
        seed: the edge orders (iteration i draws from seed + i).
        budget: optional `tfnas.derive.Budget` every decision keeps to.
    Returns:
        The chosen Genotype; `meta["decisions"]` holds every decision row and
        `meta["validation_sums"]` each distinct candidate's proxy sum. The supernet's
        selection state is what it was before the call.
    Raises:
        UsageError: bad settings; ProxyError: a proxy value that is not finite.
    """
    zc = (zero_cost or ZeroCost()).check()
    batches = iter(data.repeat())
    scorer = ProxyScorer(supernet, zc.proxy)
    if budget is not None:
        budget.check_feasible({t: supernet.arch(t) for t in supernet.space.cell_types})
    pool, rows = [], []
    for _, genotype, r in iterate_candidates(supernet, scorer, zc, seed,
                                             make_decide(budget, topology_rule),
                                             lambda it: batches, log=log):
        pool.append(genotype)
        rows += r
    sums, _, best = validate_candidates(pool, build, batches, zc, log)
    return Genotype(pool[best].space, pool[best].cells, meta={
        "selector": "zc_pt", "proxy": zc.proxy, "seed": seed, "decisions": rows,
        "validation_sums": sums, "chosen_iteration": best})
