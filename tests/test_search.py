import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import tiny_config
from tfnas.errors import CheckpointError, TrainingError, WorkdirError
from tfnas.io import read_jsonl
from tfnas.search import SearchLoop, cosine_lr, run_search
from tfnas.search import loop as loop_module


def test_cosine_schedule_matches_pytorch():
    assert cosine_lr(0, 50, 0.025, 0.001) == pytest.approx(0.025)
    assert cosine_lr(25, 50, 0.025, 0.001) == pytest.approx(0.013)
    assert cosine_lr(50, 50, 0.025, 0.001) == pytest.approx(0.001)


def test_search_writes_the_run_directory_and_loss_goes_down(tmp_path):
    cfg = tiny_config(str(tmp_path), epochs=4, steps_per_epoch=6, channels=8)
    wd = str(tmp_path / "run")
    g = run_search(cfg, wd, log=lambda s: None)
    for name in ("config.json", "env.json", "alphas.jsonl", "metrics.jsonl",
                 "genotype_magnitude.json", "tb"):
        assert os.path.exists(os.path.join(wd, name)), name
    metrics = read_jsonl(os.path.join(wd, "metrics.jsonl"))
    assert [m["epoch"] for m in metrics] == [0, 1, 2, 3]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] - 0.2
    alphas = read_jsonl(os.path.join(wd, "alphas.jsonl"))
    assert len(alphas) == 4 and np.allclose(np.sum(alphas[-1]["softmax"]["normal"], 1), 1.0)
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["ckpt-00002.npz",
                                                                   "ckpt-00003.npz"]
    assert g.meta["method"] == "first_order" and g.meta["selector"] == "magnitude"


def _one_epoch(tmp_path, **kw):
    cfg = tiny_config(str(tmp_path), epochs=1, steps_per_epoch=2, **kw)
    loop = SearchLoop(cfg, str(tmp_path / "w"), tf.distribute.get_strategy(), is_chief=False,
                      log=lambda s: None)
    a0 = [a.numpy().copy() for a in loop.state.alphas]
    w0 = [w.numpy().copy() for w in loop.state.weights]
    loop.run()
    a1 = [a.numpy() for a in loop.state.alphas]
    w1 = [w.numpy() for w in loop.state.weights]
    return a0, a1, w0, w1


@pytest.mark.parametrize("rule", ["first_order", "second_order"])
def test_arch_updates_train_alpha_and_weights(tmp_path, rule):
    a0, a1, w0, w1 = _one_epoch(tmp_path, arch_update=rule)
    assert all(not np.array_equal(x, y) for x, y in zip(a0, a1))
    assert sum(not np.array_equal(x, y) for x, y in zip(w0, w1)) > 0.9 * len(w0)


def test_frozen_alpha_is_bit_identical(tmp_path):
    a0, a1, w0, w1 = _one_epoch(tmp_path, arch_update="frozen")
    assert all(np.array_equal(x, y) for x, y in zip(a0, a1))
    assert sum(not np.array_equal(x, y) for x, y in zip(w0, w1)) > 0.9 * len(w0)


def _assigns_per_step(loop, variable):
    """AssignVariableOps on `variable` in the traced search step (BN statistics updates)."""
    train, valid = loop.batches(0)
    cf = loop.state._step_fn.get_concrete_function(next(iter(train)), next(iter(valid)))
    handle = variable.value.handle
    inner = [i for e, i in cf.graph.captures if e is handle]
    assert len(inner) == 1
    return sum(1 for op in cf.graph.get_operations()
               if op.type == "AssignVariableOp" and op.inputs[0] is inner[0])


def test_second_order_updates_bn_statistics_as_the_reference(tmp_path):
    """DARTS's unrolled step runs the valid pass at the virtual weights on a copy of the
    model, whose BN statistics are thrown away: per search step the real model's running
    statistics see the train pass of the hypergradient, its two finite-difference passes and
    the weight step (4), not the valid pass too; first order: the alpha pass and the weight
    step (2). The stem's BN and an edge's BN (a shared edge trace) alike."""
    from tfnas.ops.norm import BatchNorm, running_stats_frozen
    for rule, count in (("first_order", 2), ("second_order", 4)):
        cfg = tiny_config(str(tmp_path), arch_update=rule)
        loop = SearchLoop(cfg, str(tmp_path / rule), tf.distribute.get_strategy(),
                          log=lambda s: None)
        bns = [layer for layer in loop.model._flatten_layers() if isinstance(layer, BatchNorm)]
        edge_bn = next(b for b in bns if "/edge_" in b.path and "sep_conv" in b.path)
        for bn in (bns[0], edge_bn):
            assert _assigns_per_step(loop, bn.moving_mean) == count, (rule, bn.path)
    # frozen: batch statistics as in training, running statistics left alone
    bn = BatchNorm(affine=False)
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, (8, 4, 4, 3)), tf.float32)
    y = bn(x, training=True)
    mean = bn.moving_mean.numpy().copy()
    with running_stats_frozen():
        y2 = bn(x * 2.0, training=True)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mean)
    np.testing.assert_allclose(y2.numpy(), y.numpy(), atol=1e-4)  # normalised by the batch


def test_second_order_hypergradient_matches_double_backprop(tmp_path):
    # One normal cell at 8x8 with C=16. On the 3-cell C=4 test net (2x2 maps in the last
    # cell) ReLU kinks are so dense that no finite difference tracks the local Hessian.
    space = tmp_path / "one_cell.json"
    space.write_text('{"name": "one_cell", "family": "darts", "steps": 2, '
                     '"ops": ["skip_connect", "sep_conv_3x3"]}')
    cfg = tiny_config(str(tmp_path), arch_update="second_order", epochs=1, space=str(space),
                      channels=16, layers=1)
    loop = SearchLoop(cfg, str(tmp_path / "w"), tf.distribute.get_strategy(), is_chief=False)
    rng = np.random.default_rng(0)
    bt = (tf.constant(rng.normal(size=(32, 8, 8, 1)), tf.float32),
          tf.constant(rng.integers(0, 10, 32)))
    bv = (tf.constant(rng.normal(size=(32, 8, 8, 1)), tf.float32),
          tf.constant(rng.integers(0, 10, 32)))
    lr, wd = float(loop.state.w_opt.learning_rate.numpy()), cfg.weight_decay
    model = loop.model
    fd = [g.numpy() for g in loop.state.arch_update.hypergradient(loop.state, bt, bv)]

    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    a_idx = [i for i, v in enumerate(model.trainable_variables)
             if any(v is a for a in model.alphas)]
    alphas = [tv[i] for i in a_idx]

    def loss(values, batch):
        logits, _ = model.stateless_call(values, ntv, batch[0], training=True)
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            batch[1], logits, from_logits=True))

    with tf.GradientTape() as outer:
        outer.watch(alphas)
        vals = list(tv)
        for i, a in zip(a_idx, alphas):
            vals[i] = a
        w_idx = [i for i in range(len(tv)) if i not in a_idx]
        with tf.GradientTape() as inner:
            inner.watch([vals[i] for i in w_idx])
            lt = loss(vals, bt)
        g = inner.gradient(lt, [vals[i] for i in w_idx])
        unrolled = list(vals)
        for i, gi in zip(w_idx, g):
            unrolled[i] = vals[i] - lr * (gi + wd * vals[i])
        lv = loss(unrolled, bv)
    exact = [np.zeros(a.shape, np.float32) if x is None else x.numpy()
             for x, a in zip(outer.gradient(lv, alphas), alphas)]  # no reduce cell: None
    assert np.abs(exact[0]).sum() > 0
    num = math.sqrt(sum(((f - e) ** 2).sum() for f, e in zip(fd, exact)))
    den = math.sqrt(sum((e ** 2).sum() for e in exact))
    assert num / den < 0.02, num / den  # measured: 0.4% for this net


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    cfg = tiny_config(str(tmp_path), epochs=3, steps_per_epoch=3)
    full = run_search(cfg, str(tmp_path / "full"), log=lambda s: None)

    lines = []

    def die_after_epoch_2(line):
        lines.append(line)
        if line.startswith("epoch 2/3"):
            raise KeyboardInterrupt  # as if killed right after the checkpoint of epoch 2

    wd = str(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, wd, log=die_after_epoch_2)
    assert len(read_jsonl(os.path.join(wd, "metrics.jsonl"))) == 2
    resumed_lines = []
    resumed = run_search(cfg, wd, log=resumed_lines.append)
    assert resumed_lines[0].startswith("resuming") and len(resumed_lines) == 2
    assert resumed.meta["alphas_digest"] == full.meta["alphas_digest"]
    assert resumed.to_json()["cells"] == full.to_json()["cells"]
    a_full = read_jsonl(str(tmp_path / "full" / "alphas.jsonl"))
    a_res = read_jsonl(os.path.join(wd, "alphas.jsonl"))
    assert [r["epoch"] for r in a_res] == [0, 1, 2]
    np.testing.assert_allclose(a_res[-1]["softmax"]["normal"], a_full[-1]["softmax"]["normal"],
                               atol=1e-6)


@pytest.mark.slow
def test_same_seed_same_result(tmp_path):
    cfg = tiny_config(str(tmp_path), epochs=1)
    g1 = run_search(cfg, str(tmp_path / "a"), log=lambda s: None)
    g2 = run_search(cfg, str(tmp_path / "b"), log=lambda s: None)
    assert g1.meta["alphas_digest"] == g2.meta["alphas_digest"]


def test_different_config_is_refused_unless_overwrite(tmp_path):
    cfg = tiny_config(str(tmp_path), epochs=1)
    wd = str(tmp_path / "run")
    run_search(cfg, wd, log=lambda s: None)
    before = open(os.path.join(wd, "config.json")).read()
    other = tiny_config(str(tmp_path), epochs=1, lr=0.01)
    with pytest.raises(WorkdirError, match=r"different config \(lr: 0.025 -> 0.01\)"):
        run_search(other, wd, log=lambda s: None)
    assert open(os.path.join(wd, "config.json")).read() == before
    run_search(other, wd, overwrite=True, log=lambda s: None)
    assert '"lr": 0.01' in open(os.path.join(wd, "config.json")).read()


def test_one_bn_rule_kept_by_the_run(tmp_path):
    """--bn decides synchronized BN for the search and what loads it, only on several
    replicas; a resume with another --bn is refused with nothing changed; an old run's
    `sync_bn` reads as the rule it ran with."""
    import json
    from tfnas.config import SearchConfig
    from tfnas.search.loop import _memory_and_bn
    from tfnas.spaces import make_space
    from tfnas.supernet import build_supernet
    space = make_space("tiny_bn", "darts", ops=["max_pool_3x3", "sep_conv_3x3"], steps=2)
    for bn, replicas, synced in (("global", 2, True), ("replica", 2, False),
                                 ("global", 1, False)):
        net = build_supernet(space, channels=4, layers=3, num_classes=3, input_shape=(8, 8, 1))
        _memory_and_bn(net, SearchConfig(bn=bn), replicas)
        assert net.synchronized_bn() == synced, (bn, replicas)
    assert SearchConfig.from_json({"sync_bn": True}).bn == "global"
    assert SearchConfig.from_json({"sync_bn": False}).bn == "replica"
    cfg = tiny_config(str(tmp_path), epochs=1)
    wd = str(tmp_path / "run")
    run_search(cfg, wd, log=lambda s: None)
    before = open(os.path.join(wd, "config.json")).read()
    with pytest.raises(WorkdirError, match=r"different config \(bn: 'global' -> 'replica'\)"):
        run_search(tiny_config(str(tmp_path), epochs=1, bn="replica"), wd, log=lambda s: None)
    assert open(os.path.join(wd, "config.json")).read() == before
    old = {k: v for k, v in json.loads(before).items() if k != "bn"}
    with open(os.path.join(wd, "config.json"), "w") as f:  # as an earlier version wrote it
        json.dump(dict(old, sync_bn=True), f)
    run_search(cfg, wd, log=lambda s: None)  # the same rule: resumes (finished: no steps)


def test_progress_lines_off_a_terminal(tmp_path, monkeypatch):
    """Off a terminal (a cluster's log), a line per TFNAS_PROGRESS_SECONDS inside every
    epoch and evaluation pass: step, images per second, loss, ETA (0: every step)."""
    import re
    monkeypatch.setenv("TFNAS_PROGRESS_SECONDS", "0")
    lines = []
    run_search(tiny_config(str(tmp_path), epochs=1, steps_per_epoch=4), str(tmp_path / "r"),
               log=lines.append)
    steps = [m.groups() for m in (re.fullmatch(
        r"  epoch 1: step (\d)/4, ([\d.]+) img/s, loss ([\d.]+), ETA \d+m\d\ds", x)
        for x in lines) if m]
    assert [int(s) for s, _, _ in steps] == [1, 2, 3]  # the epoch's own line ends it
    assert all(float(r) > 0 for _, r, _ in steps)
    assert any(re.fullmatch(r"  eval: step 1/\d+, [\d.]+ img/s, ETA .*", x) for x in lines)
    monkeypatch.setenv("TFNAS_PROGRESS_SECONDS", "3600")  # the default kind: none so soon
    lines.clear()
    run_search(tiny_config(str(tmp_path), epochs=1, steps_per_epoch=4), str(tmp_path / "s"),
               log=lines.append)
    assert not [x for x in lines if "step " in x]


def test_checkpoints_name_every_variable_and_refuse_a_mismatch(tmp_path):
    """Search checkpoints key variables by path (optimizer slots by the path they serve)
    with the tfnas version and config digest; restore goes by name (a reordered model gets
    the right values), refuses unmatched names in one line, and still reads files written
    before names (by position)."""
    import json
    from tfnas import __version__
    from tfnas.checkpoint import Checkpointer
    loop = SearchLoop(tiny_config(str(tmp_path)), str(tmp_path / "run"),
                      tf.distribute.get_strategy(), log=lambda s: None)
    loop.train_epoch(0, 0.025)
    loop.checkpointer.save(0, {"epoch": 0})
    path = loop.checkpointer.path(0)
    with np.load(path) as f:
        keys, meta = set(f.files), json.loads(f["__meta__"].tobytes().decode())
    assert meta["format"] == 2 and meta["tfnas"] == __version__ and len(meta["config"]) == 12
    conv = [k for k in keys if k.startswith("model/") and k.endswith("/sep_conv_3x3/pointwise_0")]
    assert conv and "w_opt/momentum/" + conv[0][len("model/"):] in keys
    assert {"a_opt/m/arch_normal/alpha", "w_opt/learning_rate", "a_opt/iterations"} <= keys
    want = [v.numpy().copy() for v in loop.model.variables]
    named = loop.state.named_variables()
    reordered = dict(named, model=dict(reversed(list(named["model"].items()))))
    for v in loop.model.variables:
        v.assign(tf.zeros_like(v))
    Checkpointer(loop.checkpointer.folder, reordered).restore(path)
    for v, w in zip(loop.model.variables, want):
        np.testing.assert_array_equal(v.numpy(), w)
    fewer = dict(named, model=dict(list(named["model"].items())[1:]))
    with pytest.raises(CheckpointError, match=r"holds 1 the model does not have \(e\.g\. model/"):
        Checkpointer(loop.checkpointer.folder, fewer).restore(path)
    renamed = dict(named, w_opt={("x" + k): v for k, v in named["w_opt"].items()})
    with pytest.raises(CheckpointError, match=r"lacks \d+ variable\(s\) the model has"):
        Checkpointer(loop.checkpointer.folder, renamed).restore(path)
    # a file of the first format: positional keys, no meta
    old = str(tmp_path / "old.npz")
    arrays = {f"{g}/{i:05d}": np.asarray(v.numpy()) for g, vs in named.items()
              for i, v in enumerate(vs.values())}
    np.savez(old, __state__=np.frombuffer(b'{"epoch": 0}', np.uint8), **arrays)
    for v in loop.model.variables:
        v.assign(tf.zeros_like(v))
    assert Checkpointer(loop.checkpointer.folder, named).restore(old) == {"epoch": 0}
    for v, w in zip(loop.model.variables, want):
        np.testing.assert_array_equal(v.numpy(), w)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config(str(tmp_path), epochs=3, grad_clip=0.0)
    monkeypatch.setattr(loop_module, "cosine_lr",
                        lambda e, *a: 0.025 if e == 0 else 1e30)
    wd = str(tmp_path / "run")
    with pytest.raises(TrainingError, match=r"training loss became (nan|inf) at epoch 1"):
        run_search(cfg, wd, log=lambda s: None)
    ckpts = sorted(os.listdir(os.path.join(wd, "checkpoints")))
    assert ckpts == ["ckpt-00000.npz"]
    monkeypatch.undo()
    loop = SearchLoop(cfg, wd, tf.distribute.get_strategy(), log=lambda s: None)
    assert loop.checkpointer.restore_latest() == {"epoch": 0}
    assert all(np.isfinite(v.numpy()).all() for v in loop.model.variables)


def test_corrupt_checkpoint_is_a_clear_error_and_left_alone(tmp_path):
    cfg = tiny_config(str(tmp_path), epochs=1)
    wd = str(tmp_path / "run")
    run_search(cfg, wd, log=lambda s: None)
    path = os.path.join(wd, "checkpoints", "ckpt-00000.npz")
    with open(path, "wb") as f:
        f.write(b"garbage")
    with pytest.raises(CheckpointError, match="ckpt-00000.npz is unreadable"):
        run_search(cfg, wd, log=lambda s: None)
    assert open(path, "rb").read() == b"garbage"


@pytest.mark.slow
def test_same_seed_same_weights_in_a_new_process():
    import subprocess
    import sys
    code = ("import keras, numpy as np; keras.utils.set_random_seed(4); "
            "from tfnas.supernet import build_supernet; "
            "m = build_supernet('s2', 4, 3, 3, (8, 8, 1)); "
            "print(repr(float(sum(np.abs(v.numpy()).sum() for v in m.variables))))")
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=300).stdout.strip().splitlines()[-1] for _ in range(2)]
    assert outs[0] == outs[1]


def test_steps_per_execution_changes_nothing_but_the_host_reads(tmp_path):
    """Several steps per tf.function call: the same alphas as one step per call, 2 calls for
    an epoch of 4 steps at 3 per call (3 + 1), and a run may resume with another value."""
    one = run_search(tiny_config(str(tmp_path)), str(tmp_path / "one"), log=lambda s: None)
    cfg = tiny_config(str(tmp_path), steps_per_execution=3)
    loop = SearchLoop(cfg, str(tmp_path / "three"), tf.distribute.get_strategy(),
                      log=lambda s: None)
    calls = []
    inner = loop.state._steps_fn
    loop.state._steps_fn = lambda *a: calls.append(int(a[2])) or inner(*a)
    loop_module.prepare_workdir(str(tmp_path / "three"), cfg, False)
    three = loop.run()
    assert calls == [3, 1, 3, 1]  # 2 epochs
    assert three.meta["alphas_digest"] == one.meta["alphas_digest"]
    # the finished run, started again with another value: the same run (nothing refused)
    again = run_search(tiny_config(str(tmp_path), steps_per_execution=4), str(tmp_path / "one"),
                       log=lambda s: None)
    assert again.meta["alphas_digest"] == one.meta["alphas_digest"]
    with pytest.raises(WorkdirError, match="lr: 0.025 -> 0.01"):  # others still count
        run_search(tiny_config(str(tmp_path), steps_per_execution=4, lr=0.01),
                   str(tmp_path / "one"), log=lambda s: None)


@pytest.mark.parametrize("spe", [1, 4])
def test_non_finite_loss_is_caught_at_its_own_step_whatever_the_steps_per_call(
        tmp_path, monkeypatch, spe):
    cfg = tiny_config(str(tmp_path), epochs=2, grad_clip=0.0, steps_per_execution=spe)
    monkeypatch.setattr(loop_module, "cosine_lr", lambda e, *a: 0.025 if e == 0 else 1e30)
    with pytest.raises(TrainingError, match=r"became (nan|inf) at epoch 1 step 1;"):
        run_search(cfg, str(tmp_path / "run"), log=lambda s: None)
