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
