"""Extension points: every registry's contract, the worked examples of docs/EXTENDING.md
(PC-DARTS partial channels, a DrNAS-style regulariser) and the extension loader."""

import json
import math
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from helpers import tiny_config
from tfnas.cli import main
from tfnas.derive import SELECTORS, select
from tfnas.errors import UsageError
from tfnas.extensions import load_extension
from tfnas.genotype import Genotype
from tfnas.search import ARCH_UPDATES, PERTURBATIONS, SearchLoop
from tfnas.spaces import make_space
from tfnas.supernet import build_supernet
from tfnas.supernet.mixed import MIXED_OPS, MixedOp

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
EXAMPLES = os.path.join(ROOT, "examples", "extensions")
DOC = os.path.join(ROOT, "docs", "EXTENDING.md")


def _example(name):
    return load_extension(os.path.join(EXAMPLES, name))


def _tiny_net(mixed_op="standard", seed=0):
    tf.keras.utils.set_random_seed(seed)
    space = make_space("tiny", "darts", ops=["max_pool_3x3", "sep_conv_3x3"], steps=2)
    return build_supernet(space, channels=4, layers=3, num_classes=3, input_shape=(8, 8, 1),
                          mixed_op=mixed_op)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((32, 8, 8, 1)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 3, 32))).batch(16)


# --- registry contracts ------------------------------------------------------------------

@pytest.mark.parametrize("name", SELECTORS.names())
def test_every_selector_derives_a_valid_genotype(name):
    net = _tiny_net()
    if SELECTORS.get(name).zero_cost:  # scored by a proxy: the library form of zc_pt
        from tfnas.derive import ZeroCost, zero_cost_select
        g = zero_cost_select(net, _data(), build=lambda g: net,
                             zero_cost=ZeroCost("snip", iterations=1, validate_rounds=1))
        g.validate(name)
        assert len(g.cells["normal"]["edges"]) == 4
        assert {r["kind"] for r in g.meta["decisions"]} == {"op", "topology"}
        return
    g = select(net, _data(), selector=name, tune=None)
    g.validate(name)
    assert g.meta["selector"] == name and len(g.cells["normal"]["edges"]) == 4
    if SELECTORS.get(name).decides:
        for t in ("normal", "reduce"):  # every edge decided or removed
            arch = net.arch(t)
            assert all(d or not live for d, live in zip(arch.decided(), arch.live()))


def _one_epoch(tmp_path, **overrides):
    cfg = tiny_config(str(tmp_path), epochs=1, steps_per_epoch=2, **overrides)
    loop = SearchLoop(cfg, str(tmp_path / "run"), tf.distribute.get_strategy(),
                      log=lambda s: None)
    before = [np.array(a) for a in loop.state.alphas]
    rec = loop.train_epoch(0, cfg.lr)
    return loop, before, rec


# The built-in entries also run in tests/test_search.py and tests/test_methods.py by default;
# this contract over every registered entry is part of `-m slow` (about 100 s).
@pytest.mark.slow
@pytest.mark.parametrize("name", ARCH_UPDATES.names())
def test_every_arch_update_runs_an_epoch_with_finite_losses(name, tmp_path):
    loop, before, rec = _one_epoch(tmp_path, arch_update=name)
    assert math.isfinite(rec["train_loss"]) and 0 <= rec["train_acc"] <= 1
    moved = any(not np.array_equal(b, np.array(a)) for b, a in zip(before, loop.state.alphas))
    assert moved == loop.state.arch_update.trains_alpha


@pytest.mark.slow
@pytest.mark.parametrize("name", PERTURBATIONS.names())
def test_every_perturbation_runs_an_epoch_with_finite_losses(name, tmp_path):
    _, _, rec = _one_epoch(tmp_path, perturbation=name)
    assert math.isfinite(rec["train_loss"])


@pytest.mark.parametrize("name", MIXED_OPS.names())
def test_every_mixed_op_builds_a_supernet_with_the_standard_shapes(name):
    net, ref = _tiny_net(name), _tiny_net("standard")
    x = np.random.default_rng(0).random((2, 8, 8, 1)).astype(np.float32)
    assert net(x).shape == ref(x).shape == (2, 3)
    assert all(isinstance(e, MixedOp) for c in net.cells for e in c.edges)


def test_unknown_registered_names_fail_before_any_data_is_read(tmp_path):
    for flag, kind in (("arch_update", "architecture update"),
                       ("perturbation", "alpha perturbation"), ("mixed_op", "mixed op")):
        cfg = tiny_config(str(tmp_path), **{flag: "nope"}, dataset="npz:/no/such.npz")
        with pytest.raises(UsageError, match=f"unknown {kind} 'nope'; registered: "):
            SearchLoop(cfg, str(tmp_path / "run"), tf.distribute.get_strategy())


# --- the worked examples -----------------------------------------------------------------

def test_partial_channels_example(tmp_path):
    pc = _example("partial_channels.py")
    x = tf.reshape(tf.range(8.0), [1, 1, 1, 8])
    np.testing.assert_array_equal(pc.channel_shuffle(x, 4).numpy().ravel(),
                                  [0, 2, 4, 6, 1, 3, 5, 7])
    net, ref = _tiny_net("partial_channel"), _tiny_net("standard")
    edge = net.cells[0].edges[0]
    assert isinstance(edge, pc.PartialChannelMixedOp) and edge.channels == 1
    assert net.count_weights() < ref.count_weights()
    # a whole search through the CLI, the extension loaded from $TFNAS_EXTENSIONS
    cfg = tiny_config(str(tmp_path), mixed_op="partial_channel", channels=8)
    wd = tmp_path / "run"
    os.environ["TFNAS_EXTENSIONS"] = os.path.join(EXAMPLES, "partial_channels.py")
    try:
        rc = main(["search", f"--workdir={wd}", f"--space={cfg.space}", "--channels=8",
                   "--layers=3", "--epochs=1", "--steps_per_epoch=2", "--batch_size=32",
                   "--limit_examples=400", "--mixed_op=partial_channel"])
    finally:
        del os.environ["TFNAS_EXTENSIONS"]
    assert rc == 0
    assert json.loads((wd / "config.json").read_text())["mixed_op"] == "partial_channel"
    Genotype.load(str(wd / "genotype_magnitude.json")).validate("pc")


def test_drnas_regulariser_example(tmp_path):
    dr = _example("drnas_regularizer.py")
    valid = np.ones((1, 2), np.float32)
    same = dr.dirichlet_kl(tf.constant([[1.0, 1.0]]), 1.0, valid)
    beta21 = dr.dirichlet_kl(tf.constant([[2.0, 1.0]]), 1.0, valid)  # Beta(2,1) || Beta(1,1)
    assert abs(float(same)) < 1e-6
    assert float(beta21) == pytest.approx(math.log(2) - 0.5, abs=1e-5)
    padded = dr.dirichlet_kl(tf.constant([[2.0, 1.0, 7.0]]), 1.0,
                             np.array([[1, 1, 0]], np.float32))  # padding ignored
    assert float(padded) == pytest.approx(float(beta21), abs=1e-5)
    # the update = first order + WEIGHT * d KL / d alpha, on the same batch
    first, _, _ = _one_epoch(tmp_path / "a", arch_update="first_order")
    drnas, _, _ = _one_epoch(tmp_path / "b", arch_update="dirichlet_kl")
    diff = max(float(np.max(np.abs(np.array(a) - np.array(b))))
               for a, b in zip(first.state.alphas, drnas.state.alphas))
    assert 0 < diff < 1e-2  # the regulariser moved alpha, a little


def test_extension_loader_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad_ext.py"
    bad.write_text("raise RuntimeError('broken on purpose')\n")
    os.environ["TFNAS_EXTENSIONS"] = str(bad)
    try:
        assert main(["list", "zoo"]) == 2
    finally:
        del os.environ["TFNAS_EXTENSIONS"]
    err = capsys.readouterr().err.strip()
    assert "failed to load: RuntimeError: broken on purpose" in err and len(err.splitlines()) == 1
    with pytest.raises(UsageError, match="no such file"):
        load_extension(str(tmp_path / "missing.py"))
    ext = tmp_path / "twice.py"
    ext.write_text("from tfnas.derive import SELECTORS, Selector\n"
                   "SELECTORS.register('twice_ext', Selector)\n")
    assert load_extension(str(ext)) is load_extension(str(ext))  # loaded once, no clash


def _doc_snippets():
    text = open(DOC).read()
    return dict(re.findall(r"<!-- snippet: ([\w-]+) -->\s*```python\n(.*?)```", text, re.S))


@pytest.mark.parametrize("name", ["op", "space", "dataset", "selector", "proxy"])
def test_extending_doc_snippets_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    snippets = _doc_snippets()
    assert name in snippets, f"docs/EXTENDING.md lost its {name} snippet"
    scope = {}
    exec(compile(snippets[name], f"EXTENDING.md:{name}", "exec"), scope)
    scope["check"]()  # each snippet ends with a check() of what it registered
