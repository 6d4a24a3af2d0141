"""Graphs specialised to decided edges: same numbers as the full supernet, less work."""

import functools
import math
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from helpers import tiny_config
from tfnas.io import read_jsonl
from tfnas.search import SearchLoop
from tfnas.bilevel.graphs import SKIP_COST, TRACE_CALLS
from tfnas.selection.pt import SelectConfig
from tfnas.selection.run import run_select


def _loop(tmp, mode):
    cfg = tiny_config(str(tmp), steps_per_epoch=3)
    loop = SearchLoop(cfg, str(tmp / f"run_{mode}"), tf.distribute.get_strategy(),
                      is_chief=False, log=lambda s: None)
    loop.state.graphs.set_mode(mode)
    for t in loop.space.cell_types:  # tiny space: 5 edges of (max_pool_3x3, sep_conv_3x3)
        a = loop.model.arch(t)
        a.fix_edge(0, 0)   # keeps max_pool: sep_conv left out
        a.fix_edge(1, 1)   # keeps sep_conv
        a.fix_edge(2, 1)
        a.remove_edge(2)   # decided, then removed: nothing left
        a.remove_edge(3)   # removed while undecided; edge 4 stays a mixture
    return loop


def _run(loop):
    for kind in ("eval", "step"):
        loop.state.graphs.refresh(kind, calls_ahead=100)
    out = [loop.evaluate(batches=2, batch_stats=True)]
    out.append(loop.train_epoch(0, 0.05))
    out.append(loop.evaluate(batches=2, batch_stats=True))
    loop.model.arch("normal").mask_op(4, 1)  # a PT candidate: a dynamic mask, not left out
    out.append(loop.evaluate(batches=2, batch_stats=True))
    loop.model.arch("normal").reset_op_mask()
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("graphs")
    full, pruned = _loop(tmp, "never"), _loop(tmp, "always")
    return full, _run(full), pruned, _run(pruned)


def test_zero_ops_are_the_decided_and_removed_positions(pair):
    _, _, pruned, _ = pair
    zero = pruned.model.zero_ops()
    for t in ("normal", "reduce"):
        assert {(e, k) for c, e, k in zero if c == t} == {(0, 1), (1, 0), (2, 0), (2, 1),
                                                          (3, 0), (3, 1)}
    assert pruned.state.graphs.left_out == {"eval": zero, "step": zero}
    with pruned.model.leaving_out(zero):
        cell = pruned.model.search_cells()[0][0]
        assert [m.live_ops for m in cell.edges] == [[0], [1], [], [], [0, 1]]
    assert all(m.live_ops is None for m in cell.edges)  # only while tracing


def _close(a, b):
    """Equal up to float32 rounding: Grappler fuses and sums the smaller graph differently."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-6, atol=0)


def test_pruned_graphs_compute_the_same_function(pair):
    full, full_out, pruned, pruned_out = pair
    assert full.state.graphs.left_out["step"] == frozenset()
    assert pruned.state.graphs.retraces == {"eval": 1, "step": 1}
    assert all(_close(a, b) for a, b in zip(full_out, pruned_out)), (full_out, pruned_out)
    assert [o[1] for o in full_out[::2]] == [o[1] for o in pruned_out[::2]]  # accuracies
    assert full_out[1]["train_loss"] > 0 and full_out[0] != full_out[3]
    for a, b in zip(full.model.trainable_variables, pruned.model.trainable_variables):
        assert a.name == b.name
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


def test_auto_prunes_by_the_work_ahead_and_falls_back_when_an_edge_returns(pair):
    _, _, pruned, _ = pair
    g = pruned.state.graphs
    zero = pruned.model.zero_ops()
    g.set_mode("auto")
    share = g.cost(zero) / g.cost(frozenset())
    assert 0.3 < share < 0.9
    # prunes when calls * (1 - share) >= TRACE_CALLS * share, whatever the history
    few = math.ceil(TRACE_CALLS * share / (1 - share)) - 1
    assert g.target(few) == frozenset() and g.target(few + 1) == zero
    assert g.refresh("eval", calls_ahead=few)  # back to the full graph
    assert g.left_out["eval"] == frozenset() and not g.refresh("eval", calls_ahead=few)
    assert g.refresh("eval", calls_ahead=few + 1) and g.left_out["eval"] == zero
    # an edge put back: the graph that leaves it out is replaced before the next call
    arch = pruned.model.arch("reduce")
    arch.remove_edge(3, removed=False)
    try:
        pruned.evaluate(batches=1, batch_stats=True)
        assert g.left_out["eval"] == frozenset()
    finally:
        arch.remove_edge(3)
        g.set_mode("never")
    assert g.target(10**9) == frozenset()
    with pytest.raises(ValueError, match="auto, always, never"):
        g.set_mode("sometimes")


def test_selection_with_pruned_graphs_decides_the_same(searched):
    """never: the search's full graph; always: a graph without the zero ops after every
    decision; auto with one scoring batch: never worth a trace, so every decision is scored
    by the one graph that skips zero-weight ops at run time. Same decisions, same scores up
    to float rounding."""
    modes = ("never", "always", "auto")
    rows, genotypes, lines = {}, {}, {m: [] for m in modes}
    for mode in modes:
        wd = f"{searched}_prune_{mode}"
        shutil.copytree(searched, wd)
        cfg = SelectConfig(selector="pt", tune_epochs_per_decision=0, score_batches=1,
                           prune_decided=mode)
        genotypes[mode] = run_select(wd, cfg, log=lines[mode].append).to_json()["cells"]
        rows[mode] = read_jsonl(os.path.join(wd, "selection", "scores.jsonl"))
    assert genotypes["never"] == genotypes["always"] == genotypes["auto"]
    said = lambda m: [x for x in lines[m] if "graph retraced" in x]  # noqa: E731
    assert said("never") == [] == said("auto") and len(said("always")) >= 5
    assert said("always")[:2] == [
        "  scoring graph retraced without 1 zero op of decided/removed edges",
        "  scoring graph retraced without 2 zero ops of decided/removed edges"]
    assert len(rows["always"]) == len(rows["never"]) == len(rows["auto"]) >= 10
    for other in ("always", "auto"):
        for a, b in zip(rows["never"], rows[other]):
            assert a.keys() == b.keys() and a.get("choice") == b.get("choice")
            assert a.get("kept_inputs") == b.get("kept_inputs")
            assert _close([a["acc_before"], a["acc_after"]], [b["acc_before"], b["acc_after"]])
            for op, s in a.get("scores", {}).items():
                assert _close(s, b["scores"][op]), (other, s, b["scores"][op])


def test_run_time_skipping_graph_and_its_cost_model(pair):
    """A scoring graph that skips zero-weight ops at run time: one tf.cond per op in the
    traced graph; under auto, pruning must beat it (not the full graph) to pay for a
    trace."""
    _, _, pruned, _ = pair
    g = pruned.state.graphs
    zero = pruned.model.zero_ops()
    g.set_mode("always")
    g.refresh("eval", 1)  # the graph without the zero ops, whatever the tests before did
    before = dict(g.left_out)
    assert before["eval"] == zero
    try:
        g.set_mode("auto", skip_at_run_time=("eval",))
        assert g.left_out == before  # reinstalled with the flag, leaving out the same ops
        share_full = g.cost(zero) / g.cost(frozenset())
        share_skip = g.cost(zero) / (g.cost(zero) + SKIP_COST * len(zero))
        assert share_full < share_skip < 1
        calls = math.ceil(TRACE_CALLS * share_full / (1 - share_full)) + 1
        assert g.target(calls, "step") == zero and g.target(calls, "eval") == frozenset()
        assert g.target(math.ceil(TRACE_CALLS * share_skip / (1 - share_skip)) + 1,
                        "eval") == zero
        assert g.refresh("eval", calls) and g.left_out["eval"] == frozenset()
        assert g.describe("eval") == ("  scoring graph retraced with every op (zero-weight "
                                      "ops skipped at run time)")
        batch = next(iter(pruned._distribute(functools.partial(
            pruned.pipeline.evaluation, pruned.data.x_train[:4], pruned.data.y_train[:4]))))
        library = pruned.state._eval_fn.get_concrete_function(
            batch, training=True).graph.as_graph_def().library.function
        # the conds sit in the shared edge functions: one per op of every edge kind
        conds = [n for f in library for n in f.node_def if n.op in ("If", "StatelessIf")]
        assert len(conds) >= 2, [f.signature.name for f in library]
        with pytest.raises(ValueError, match="graph kinds"):
            g.set_mode("auto", skip_at_run_time=("tune",))
    finally:
        g.set_mode("always")
        g.refresh("eval", 100)
