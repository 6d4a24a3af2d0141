"""PT as a library call (`tfnas.derive.select`) on a user's own supernet and tf.data."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from tfnas.derive import decide_op, score_ops, select
from tfnas.errors import UsageError
from tfnas.genotype import Genotype
from tfnas.spaces import make_space
from tfnas.supernet import build_supernet

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")


def _snippet():
    text = open(README).read()
    m = re.search(r"<!-- snippet: derive-select -->\s*```python\n(.*?)```", text, re.S)
    assert m, "the README lost its derive-select snippet"
    return m.group(1)


def test_readme_snippet_runs_and_decides_every_edge(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(_snippet(), "README.md:derive-select", "exec"), scope)
    g, supernet = scope["genotype"], scope["supernet"]
    assert isinstance(g, Genotype) and g.meta["selector"] == "pt"
    rows = g.meta["decisions"]
    assert [r["kind"] for r in rows] == ["op"] * 10 + ["topology"] * 2  # 5 edges, node 3
    for t in ("normal", "reduce"):
        arch = supernet.arch(t)
        live = arch.live()
        assert all(arch.decided()[e] or not live[e] for e in range(5))
        assert sum(live) == 4  # two inputs per node
        assert len(g.cells[t]["edges"]) == 4
    for r in rows[:10]:  # the choice is the op whose removal cost the most accuracy
        accs = {op: s["acc"] for op, s in r["scores"].items()}
        assert r["choice"] == min(accs, key=lambda op: (accs[op], list(accs).index(op)))
    assert "'op':" in capsys.readouterr().out


def _tiny(seed=0):
    tf.keras.utils.set_random_seed(seed)
    space = make_space("tiny", "darts", ops=["max_pool_3x3", "sep_conv_3x3"], steps=2)
    net = build_supernet(space, channels=4, layers=3, num_classes=3, input_shape=(8, 8, 1))
    rng = np.random.default_rng(seed)
    x = rng.random((48, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, 48)
    return net, tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def test_primitives_with_a_planted_evaluate():
    """decide_op keeps the op whose masking the evaluate callable scores worst."""
    net, _ = _tiny()
    arch = net.arch("normal")
    calls = []

    def evaluate():  # accuracy drops only when sep_conv (op 1) of edge 2 is masked
        mask = arch.op_mask.numpy()
        calls.append(mask.copy())
        return (1.0, 0.2 if mask[2, 1] == 0 else 0.9)

    assert score_ops(arch, 2, [0, 1], evaluate) == {0: (1.0, 0.9), 1: (1.0, 0.2)}
    assert np.all(arch.op_mask.numpy() == np.asarray(arch._valid))  # masks restored
    row = decide_op(arch, net.space, "normal", 2, evaluate)
    assert row["choice"] == "sep_conv_3x3" and arch.decided()[2]
    np.testing.assert_array_equal(arch.fixed_w.numpy()[2], [0.0, 1.0])
    row = decide_op(arch, net.space, "normal", 2, evaluate)  # already decided: kept as is
    assert row["decided_before"] and row["choice"] == "sep_conv_3x3"


def _planted_node(space_name="darts"):
    """The normal ArchParameters of a DARTS-family space and its node with 5 inputs."""
    from tfnas.spaces import get_space
    from tfnas.supernet.mixed import ArchParameters
    space = get_space(space_name)
    cspace = space.cells["normal"]
    arch = ArchParameters([len(o) for o in cspace.ops])
    arch.build(None)
    node = max(cspace.nodes, key=lambda n: len(cspace.node_edges(n)))
    return space, cspace, arch, node, cspace.node_edges(node)


def test_topology_never_drops_an_edge_decided_before():
    """An edge decided before the selection (SGAS during the search) survives every round,
    even when its removal would score best; the other rounds go by the planted scores."""
    from tfnas.derive import decide_topology
    space, cspace, arch, node, eids = _planted_node()
    assert len(eids) == 5
    value = dict(zip(eids, [0.5, 0.4, 0.01, 0.3, 0.2]))  # input 2 matters least

    def evaluate():
        live = arch.live()
        return (1.0, sum(value[e] for e in eids if live[e]))

    arch.fix_edge(eids[2], 0)
    for rule in ("reference", "cumulative"):
        for e in eids:
            arch.remove_edge(e, removed=False)
        row = decide_topology(arch, space, "normal", node, evaluate, keep=[eids[2]],
                              rule=rule)
        assert row["kept_inputs"] == [0, 2] and row["kept_decided"] == [2]
        assert [r["removed"] for r in row["rounds"]] == [eids[4], eids[3], eids[1]]
        assert [bool(x) for x in arch.live()[eids]] == [True, False, True, False, False]
        for e in eids:  # without `keep`, input 2 is the first to go
            arch.remove_edge(e, removed=False)
        row = decide_topology(arch, space, "normal", node, evaluate, rule=rule)
        assert row["rounds"][0]["removed"] == eids[2] and 2 not in row["kept_inputs"]
    with pytest.raises(ValueError, match="3 inputs were decided before"):
        for e in eids:
            arch.remove_edge(e, removed=False)
        decide_topology(arch, space, "normal", node, evaluate, keep=eids[:3])


def test_topology_rules_reference_scores_leave_one_out_cumulative_keeps_removals():
    """Planted accuracies with an interaction: after input 0 goes, removing input 3 costs
    nothing. The reference rule scores each round from the full node (earlier rounds' edges
    present again) and drops the next worst single edge; the cumulative rule sees the
    interaction."""
    from tfnas.derive import decide_topology
    space, cspace, arch, node, eids = _planted_node()
    e0, e1, e2, e3 = eids[:4]
    arch.remove_edge(eids[4])  # a node with 4 live inputs: two rounds
    single = {e0: 0.9, e1: 0.8, e2: 0.7, e3: 0.6}
    after_e0 = {e1: 0.5, e2: 0.6, e3: 0.95}
    seen = []

    def evaluate():
        gone = {e for e in eids[:4] if not arch.live()[e]}
        seen.append(frozenset(gone))
        if not gone:
            return (1.0, 0.92)
        if len(gone) == 1:
            return (1.0, single[gone.pop()])
        assert e0 in gone and len(gone) == 2
        return (1.0, after_e0[(gone - {e0}).pop()])

    row = decide_topology(arch, space, "normal", node, evaluate, rule="reference")
    assert [r["removed"] for r in row["rounds"]] == [e0, e1]
    assert row["kept_inputs"] == [cspace.edges[e][1] for e in (e2, e3)]
    assert row["rule"] == "reference"
    assert all(len(g) <= 1 for g in seen[:-1])  # never scored with two removed
    assert row["rounds"][1]["scores"] == {str(e): {"loss": 1.0, "acc": single[e]}
                                          for e in (e1, e2, e3)}
    assert [bool(arch.live()[e]) for e in eids[:4]] == [False, False, True, True]
    for e in eids[:4]:
        arch.remove_edge(e, removed=False)
    row = decide_topology(arch, space, "normal", node, evaluate, rule="cumulative")
    assert [r["removed"] for r in row["rounds"]] == [e0, e3]
    assert [bool(arch.live()[e]) for e in eids[:4]] == [False, True, True, False]
    with pytest.raises(ValueError, match="topology rule 'x' is unknown"):
        decide_topology(arch, space, "normal", node, evaluate, rule="x")


def test_select_magnitude_pt_mag_and_errors():
    net, ds = _tiny()
    mag = select(net, ds, selector="magnitude")
    assert mag.meta["selector"] == "magnitude"
    g = select(net, ds, selector="pt_mag", seed=1)
    for r in g.meta["decisions"]:
        if r["kind"] == "op":  # by alpha: the larger softmaxed alpha, ties the earlier op
            a = r["alphas"]
            assert r["choice"] == max(a, key=lambda op: (a[op], -list(a).index(op)))
    with pytest.raises(UsageError, match="selector 'best' is unknown"):
        select(net, ds, selector="best")
    net2, _ = _tiny()
    with pytest.raises(UsageError, match="yielded no examples"):
        select(net2, ds.take(0), selector="pt")


def _state_values(loop):
    return [v.numpy().copy() for v in loop.state.weights + loop.state.alphas]


def test_library_tuning_is_the_tuning_of_tfnas_select(tmp_path):
    """`tfnas.derive.select`'s tuning (a dataset `tune`) runs the step of `tfnas select`'s
    tuning (`tune_supernet` on the search run): alpha Adam on the validation batches, then
    momentum SGD with coupled L2 and the clip; given the same batches and start, the same
    weights and alphas come out. `arch_update="frozen"` keeps every alpha; an endless
    dataset is refused."""
    from tfnas.bilevel import tune_supernet
    from tfnas.config import SearchConfig
    from tfnas.derive import Tuning, make_tune
    from tfnas.search import SearchLoop
    from helpers import tiny_config

    cfg = tiny_config(str(tmp_path), steps_per_epoch=3)
    loop = SearchLoop(cfg, str(tmp_path / "run"), tf.distribute.get_strategy(),
                      log=lambda s: None)
    loop.model.arch("normal").fix_edge(0, 1)
    start = [v.numpy().copy() for v in loop.model.variables]
    alphas0 = [a.numpy().copy() for a in loop.state.alphas]
    tune_supernet(loop, 1, 0.01, data_base=7, log=lambda s: None)
    want = _state_values(loop)
    for v, value in zip(loop.model.variables, start):
        v.assign(value)
    train, valid = loop.batches(7, 7, tuning=True)
    tune = make_tune(loop.model, train.take(loop.steps), valid,
                     Tuning(epochs=1, lr=0.01, hyper=cfg))
    tune(0)
    got = _state_values(loop)
    n_alpha = len(loop.state.alphas)
    assert max(np.abs(a - b).max() for a, b in zip(got[-n_alpha:], alphas0)) > 1e-6
    for w, g in zip(want, got):  # alphas and weights as tfnas select's tuning
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)
    frozen = make_tune(loop.model, train.take(loop.steps), valid,
                       Tuning(epochs=1, hyper=SearchConfig(arch_update="frozen")))
    frozen(0)
    for a, before in zip(loop.state.alphas, got[-n_alpha:]):
        np.testing.assert_array_equal(a.numpy(), before)
    assert not np.allclose(loop.state.weights[0].numpy(), got[0])  # the weights trained
    with pytest.raises(UsageError, match="infinite"):
        make_tune(loop.model, train.repeat(), valid)
