"""SDARTS-RS / SDARTS-ADV perturbations, SGAS(+PT) decisions, NAS-Bench-201 queries."""

import itertools
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from helpers import tiny_config
from tfnas.benchmarks import Benchmark, BenchmarkError
from tfnas.cli import main
from tfnas.io import read_jsonl
from tfnas.search import SearchLoop, run_search
from tfnas.derive import sgas_scores
from tfnas.spaces import get_space


def _loop(tmp_path, **kw):
    cfg = tiny_config(str(tmp_path), epochs=2, steps_per_epoch=2, **kw)
    return SearchLoop(cfg, str(tmp_path / "run"), tf.distribute.get_strategy(),
                      log=lambda s: None)


def _batch(loop, n=32):
    return next(iter(loop.pipeline.evaluation(loop.data.x_train[:n], loop.data.y_train[:n])))


def test_random_smoothing_perturbs_only_the_weight_step(tmp_path):
    loop = _loop(tmp_path / "rs", perturbation="random", arch_update="frozen", epsilon=0.3)
    pert = loop.state.perturbation
    pert.begin_epoch(loop.state, 1)
    assert float(pert.epsilon) == pytest.approx(0.03 + 0.27 * 1 / 2)
    pert.begin_epoch(loop.state, 0, tuning=True)
    assert float(pert.epsilon) == pytest.approx(0.3)
    probs = pert.probs(loop.state, None)
    for t, arch in zip(loop.space.cell_types, loop.model.archs):
        p, clean = probs[t].numpy(), arch.softmax().numpy()
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
        assert p.min() >= 0 and np.abs(p - clean).max() > 1e-3
        assert np.abs(p - clean).max() <= 2 * 0.3
    # a decided edge is never perturbed
    arch = loop.model.arch("normal")
    arch.fix_edge(2, 1)
    w = loop.model.mixing_weights(pert.probs(loop.state, None))["normal"].numpy()
    np.testing.assert_array_equal(w[2], [0.0, 1.0])
    arch.is_fixed.assign(tf.zeros_like(arch.is_fixed))

    # same seed, same data: alphas untouched (bit-identical), weights moved differently
    plain = _loop(tmp_path / "plain", perturbation="none", arch_update="frozen")
    for lp in (loop, plain):
        lp.state.w_opt.learning_rate.assign(0.1)
        lp.state.perturbation.begin_epoch(lp.state, 1)
    a0 = [a.numpy().copy() for a in loop.state.alphas]
    bt, bv = _batch(loop), _batch(loop)
    loop.state._step_fn(bt, bv)
    plain.state._step_fn(bt, bv)
    for a, b in zip(a0, loop.state.alphas):
        np.testing.assert_array_equal(a, b.numpy())
    np.testing.assert_array_equal(a0[0], plain.state.alphas[0].numpy())
    diff = max(float(np.abs(u.numpy() - v.numpy()).max())
               for u, v in zip(loop.state.weights, plain.state.weights))
    assert diff > 1e-6


def test_adversarial_perturbation_is_kept_only_if_it_raises_the_loss(tmp_path):
    loop = _loop(tmp_path, perturbation="adversarial", epsilon=0.3)
    loop.state.perturbation.begin_epoch(loop.state, 0, tuning=True)
    bt = _batch(loop)
    adv = loop.state.perturbation.probs(loop.state, bt)
    clean = {t: a.softmax() for t, a in zip(loop.space.cell_types, loop.model.archs)}
    l_adv = float(loop.state.reduced_loss(bt, probs=adv, training=False))
    l_clean = float(loop.state.reduced_loss(bt, probs=clean, training=False))
    moved = max(float(np.abs(adv[t].numpy() - clean[t].numpy()).max()) for t in adv)
    assert moved > 1e-3  # on this batch the attack succeeds
    assert l_adv > l_clean
    for t in adv:
        np.testing.assert_allclose(adv[t].numpy().sum(1), 1.0, atol=1e-5)


def test_sgas_scores_by_hand():
    space = get_space("darts_none")  # none first, then 7 ops
    probs = np.full((14, 8), 1 / 8)
    probs[3] = [0.02, 0.9, 0.08 / 6, 0.08 / 6, 0.08 / 6, 0.08 / 6, 0.08 / 6, 0.08 / 6]
    probs[5] = [0.5] + [0.5 / 7] * 7
    s1 = sgas_scores(space, "normal", probs, criterion=1)
    imp = 1 - probs[:, 0]
    cert = []
    for row in probs:
        p = row[1:] / row[1:].sum()
        cert.append(1 + np.sum(p * np.log(p)) / math.log(7))
    mm = lambda v: (np.asarray(v) - np.min(v)) / (np.max(v) - np.min(v))  # noqa: E731
    np.testing.assert_allclose(s1, mm(imp) * mm(cert), atol=1e-9)
    assert int(np.argmax(s1)) == 3 and s1[5] == 0.0
    # criterion 2: an edge whose distribution just changed loses stability
    hist = [probs.copy() for _ in range(4)]
    old = probs.copy()
    old[3] = [0.02, 0.08 / 6, 0.9, 0.08 / 6, 0.08 / 6, 0.08 / 6, 0.08 / 6, 0.08 / 6]
    hist[-1] = old
    s2 = sgas_scores(space, "normal", probs, hist, criterion=2)
    stab = [np.mean([np.minimum(probs[e, 1:] / probs[e, 1:].sum(),
                                h[e, 1:] / h[e, 1:].sum()).sum() for h in hist])
            for e in range(14)]
    np.testing.assert_allclose(s2, mm(imp) * mm(cert) * mm(stab), atol=1e-9)


def test_sgas_scores_ignore_float32_rounding_of_the_softmax():
    """A space without 'none': every edge's importance is exactly 1, however its float32
    softmax row rounds (rows summing to 1 +- an ulp or two used to be min-max scaled into
    a 0..1 'importance' that picked the edge: a decision that differed between CPUs)."""
    space = get_space("darts")  # no 'none'
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), size=14).astype(np.float32)
    probs[3] = [0.9] + [0.1 / 6] * 6  # the most certain edge
    sums = probs.astype(np.float64).sum(1)
    assert sums.max() - sums.min() > 0  # the rounding is really there
    s = sgas_scores(space, "normal", probs, criterion=1)
    cert = []
    for row in probs.astype(np.float64):
        p = row / row.sum()
        cert.append(1 + np.sum(p * np.log(p)) / math.log(7))
    cert = np.asarray(cert)
    np.testing.assert_allclose(s, (cert - cert.min()) / (cert.max() - cert.min()), atol=1e-9)
    assert int(np.argmax(s)) == 3
    # the same decision from rows perturbed by an ulp (another CPU's rounding)
    bumped = np.nextafter(probs, np.float32(1))
    assert int(np.argmax(sgas_scores(space, "normal", bumped, criterion=1))) == 3


def test_sgas_decides_on_schedule_in_score_order_and_never_revisits(tmp_path):
    cfg = tiny_config(str(tmp_path), arch_update="sgas", epochs=4, steps_per_epoch=2,
                      sgas_warmup=1, sgas_freq=1, sgas_criterion=2)
    wd = str(tmp_path / "run")
    g = run_search(cfg, wd, log=lambda s: None)
    rows = read_jsonl(os.path.join(wd, "sgas.jsonl"))
    assert [(r["epoch"], r["cell"]) for r in rows] == \
        [(e, t) for e in (1, 2, 3) for t in ("normal", "reduce")]
    for t in ("normal", "reduce"):
        mine = [r for r in rows if r["cell"] == t]
        assert len({r["edge"] for r in mine}) == 3  # never revisited
        for r in mine:  # the best-scoring candidate, ties to the lower edge id
            best = max(r["scores"].items(), key=lambda kv: (kv[1], -int(kv[0])))
            assert r["edge"] == int(best[0])
            assert str(r["edge"]) in r["scores"]
        for a, b in zip(mine, mine[1:]):
            assert str(a["edge"]) not in b["scores"]
    kept = {(e.node, e.input): e.op for e in g.cells["normal"]["edges"]}
    for r in rows:
        if r["cell"] == "normal":
            assert kept[(r["node"], r["input"])] == r["op"]
            for j in r["pruned_inputs"]:
                assert (r["node"], j) not in kept

    # selection after SGAS keeps its decisions: magnitude = genotype_magnitude.json, and PT
    # leaves the decided edges alone
    from tfnas.genotype import Genotype
    from tfnas.selection.pt import SelectConfig
    from tfnas.selection.run import run_select
    mag = run_select(wd, SelectConfig(selector="magnitude"), log=lambda s: None)
    assert mag.to_json()["cells"] == Genotype.load(
        os.path.join(wd, "genotype_magnitude.json")).to_json()["cells"]
    pt = run_select(wd, SelectConfig(selector="pt", tune_epochs_per_decision=0,
                                     score_batches=1), overwrite=True, log=lambda s: None)
    pt_kept = {(e.node, e.input): e.op for e in pt.cells["normal"]["edges"]}
    for r in rows:
        if r["cell"] == "normal":
            assert pt_kept[(r["node"], r["input"])] == r["op"]
    decided = {r["edge"] for r in rows if r["cell"] == "normal"}
    for r in read_jsonl(os.path.join(wd, "selection", "scores.jsonl")):
        if r["kind"] == "op" and r["cell"] == "normal":
            assert r.get("decided_before", False) == (r["edge"] in decided or
                                                      r["choice"] is None)

    # SGAS+PT: same edge order rule, the op by the PT criterion
    cfg = tiny_config(str(tmp_path / "pt"), arch_update="sgas", sgas_op="pt", epochs=1,
                      steps_per_epoch=2, sgas_warmup=0, sgas_pt_batches=2)
    run_search(cfg, str(tmp_path / "pt_run"), log=lambda s: None)
    rows = read_jsonl(os.path.join(tmp_path / "pt_run", "sgas.jsonl"))
    assert len(rows) == 2
    for r in rows:
        accs = {op: s["acc"] for op, s in r["pt_scores"].items()}
        assert set(accs) == {"max_pool_3x3", "sep_conv_3x3"}
        assert r["op"] == min(accs, key=lambda op: (accs[op], list(accs).index(op)))


def _fake_table(path, n=None):
    """Every NB201 architecture with made-up but deterministic numbers."""
    ops = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
    with open(path, "w") as f:
        f.write("index,arch_str,cifar10_test,cifar100_test,imagenet16_test\n")
        for i, c in enumerate(itertools.product(ops, repeat=6)):
            if n is not None and i >= n:
                break
            s = f"|{c[0]}~0|+|{c[1]}~0|{c[2]}~1|+|{c[3]}~0|{c[4]}~1|{c[5]}~2|"
            f.write(f"{i},{s},{50 + i % 50},{20 + i % 30},{10 + i % 20}\n")
    return str(path)


def test_query_adapter_csv(tmp_path, capsys):
    table = _fake_table(tmp_path / "t.csv", n=200)
    b = Benchmark(table)
    s = "|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"
    assert b.query(s) == {"index": 1, "cifar10_test": 51.0, "cifar100_test": 21.0,
                          "imagenet16_test": 11.0}
    assert b.query("|none~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|")["index"] == 5
    with pytest.raises(BenchmarkError, match="is not in"):
        b.query("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|"
                "nor_conv_3x3~1|nor_conv_3x3~2|")
    with pytest.raises(BenchmarkError, match="not in space|is not in"):
        b.query("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,arch\n0,x\n")
    with pytest.raises(BenchmarkError, match="missing column"):
        Benchmark(str(bad))
    assert main(["query", f"--table={table}", f"--arch_str={s}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cifar100_test"] == 21.0
    assert main(["query", f"--table={table}", "--arch_str=|x~0|"]) == 2
    assert main(["query", f"--table={tmp_path / 'none.csv'}", f"--arch_str={s}"]) == 2


def test_official_api_path_when_installed(tmp_path):
    pytest.importorskip("nas_201_api")
    path = os.environ.get("NB201_BENCHMARK_FILE")
    if not path:
        pytest.skip("set NB201_BENCHMARK_FILE to the official .pth file")
    row = Benchmark(path).query("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|"
                                "skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    assert 0 <= row["index"] < 15625 and 80 < row["cifar10_test"] < 100


def test_nb201_search_logs_the_benchmark_each_epoch(tmp_path):
    table = _fake_table(tmp_path / "all.csv")
    cfg = tiny_config(str(tmp_path), space="nb201", layers=1, epochs=2, steps_per_epoch=2,
                      benchmark_table=table)
    wd = str(tmp_path / "run")
    g = run_search(cfg, wd, log=lambda s: None)
    metrics = read_jsonl(os.path.join(wd, "metrics.jsonl"))
    assert [("bench_cifar10_test" in m) for m in metrics] == [True, True]
    assert metrics[-1]["bench_index"] == Benchmark(table).query(g.to_nb201_string())["index"]
