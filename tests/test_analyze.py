"""tfnas analyze: strength (with resume), shuffle (swaps really move weights), skip_gap."""

import json
import os
import shutil

import numpy as np
import pytest

from tfnas import analyze
from tfnas.cli import main
from tfnas.io import read_jsonl


def test_kendall_tau_by_hand():
    # pairs of [1,2,3,4] vs [1,3,2,4]: 5 concordant, 1 discordant -> 4/6
    assert analyze.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert analyze.kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # tau-b with a tie in y: C=2, D=0, ties_y=1 -> 2 / sqrt(3 * 2)
    assert analyze.kendall_tau([1, 2, 3], [1, 2, 2]) == pytest.approx(2 / np.sqrt(6))
    assert np.isnan(analyze.kendall_tau([1, 1], [1, 2]))


def test_strength_one_edge_resumes_without_redoing_finished_ops(searched, tmp_path):
    wd = str(tmp_path / "s")
    shutil.copytree(searched, wd)
    lines = []

    def stop_after_first(line):
        lines.append(line)
        if line.startswith("strength "):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        analyze.run_strength(wd, edges="normal:1", max_epochs=2, patience=1, score_batches=2,
                             log=stop_after_first)
    first = read_jsonl(os.path.join(wd, "analysis", "strength.jsonl"))
    assert [r["op"] for r in first] == ["max_pool_3x3"]
    lines.clear()
    summary = analyze.run_strength(wd, edges="normal:1", max_epochs=2, patience=1,
                                   score_batches=2, log=lines.append)
    assert sum(ln.startswith("strength ") for ln in lines) == 1  # only the unfinished op
    rows = read_jsonl(os.path.join(wd, "analysis", "strength.jsonl"))
    assert rows[0] == first[0] and [r["op"] for r in rows] == ["max_pool_3x3", "sep_conv_3x3"]
    (edge,) = summary["edges"]
    assert edge["ops"] == ["max_pool_3x3", "sep_conv_3x3"]
    for r in rows:
        assert 0.0 <= r["acc_converged"] <= 1.0 and 1 <= r["epochs"] <= 2
    a, c = [r["alpha"] for r in rows], [r["acc_converged"] for r in rows]
    hand = np.sign(a[0] - a[1]) * np.sign(c[0] - c[1])  # two ops: +1, -1 (or nan on a tie)
    tau = edge["tau_alpha_strength"]
    assert (np.isnan(tau) and hand == 0) or (-1 <= tau <= 1 and tau == pytest.approx(hand))
    assert edge["alpha"] == pytest.approx(a)
    with open(os.path.join(wd, "analysis", "strength.png"), "rb") as f:
        assert f.read(4) == b"\x89PNG"
    # the supernet on disk is untouched by the analysis
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == \
        sorted(os.listdir(os.path.join(searched, "checkpoints")))


def test_analyze_errors(searched, tmp_path, capsys):
    assert main(["analyze", "strength", f"--workdir={tmp_path / 'nothing'}",
                 "--edges=normal:1"]) == 2
    assert "nothing does not exist" in capsys.readouterr().err
    (tmp_path / "nothing").mkdir()
    assert main(["analyze", "strength", f"--workdir={tmp_path / 'nothing'}",
                 "--edges=normal:1"]) == 2
    assert "holds no finished search" in capsys.readouterr().err
    assert main(["analyze", "strength", f"--workdir={searched}", "--edges=normal:99"]) == 2
    assert "out of range (0..4)" in capsys.readouterr().err
    assert main(["analyze", "strength", f"--workdir={searched}", "--edges=normal:1",
                 "--ops=skip_connect"]) == 2
    assert "'skip_connect' is not on normal edge 1" in capsys.readouterr().err
    assert main(["analyze", "strength", f"--workdir={searched}"]) == 2
    assert "--edges" in capsys.readouterr().err
    assert main(["analyze", "skip_gap", f"--workdir={tmp_path / 'nothing'}"]) == 2


def test_shuffle_swaps_edge_weights_and_restores_them(searched, tmp_path, monkeypatch):
    from tfnas.selection.run import load_search
    loop = load_search(searched, log=lambda s: None)
    cells = loop.model.cells
    original = [[[v.numpy().copy() for v in e.weights] for e in c.edges] for c in cells]
    seen = []
    real = analyze.shuffle._test_accuracy

    def spy(model, data, **kw):
        seen.append([[[v.numpy().copy() for v in e.weights] for e in c.edges] for c in cells])
        return real(model, data, **kw)

    monkeypatch.setattr(analyze.shuffle, "_test_accuracy", spy)
    res = analyze.shuffle_supernet(loop, trials=2, seed=1, log=lambda s: None)
    assert len(res["after"]) == 2 and 0 <= res["before"] <= 1
    for t, swaps in enumerate(res["swaps"]):
        assert len(swaps) == len(cells)  # one swap in every cell
        during = seen[1 + t]
        for i, a, b in swaps:
            for wa, wb in zip(during[i][a], original[i][b]):
                np.testing.assert_array_equal(wa, wb)  # edge a now holds b's weights
            assert any(not np.array_equal(x, y) for x, y in zip(during[i][a], original[i][a]))
    now = [[[v.numpy() for v in e.weights] for e in c.edges] for c in cells]
    for c0, c1 in zip(original, now):
        for e0, e1 in zip(c0, c1):
            for x, y in zip(e0, e1):
                np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_shuffle_cli_with_baselines(searched, tmp_path):
    wd = str(tmp_path / "sh")
    shutil.copytree(searched, wd)
    assert main(["analyze", "shuffle", f"--workdir={wd}", "--trials=2", "--baselines",
                 "--baseline_epochs=1"]) == 0
    with open(os.path.join(wd, "analysis", "shuffle.json")) as f:
        res = json.load(f)
    assert set(res) == {"supernet", "resnet", "vgg"}
    for r in res.values():
        assert len(r["after"]) == 2 and 0 <= r["after_mean"] <= 1
    assert os.path.getsize(os.path.join(wd, "analysis", "shuffle.png")) > 1000


def test_skip_gap_on_a_synthetic_history(tmp_path):
    wd = tmp_path / "h"
    wd.mkdir()
    (wd / "config.json").write_text(json.dumps({"space": "s2"}))
    rng = np.random.default_rng(0)
    rows, metrics, expected = [], [], []
    for epoch in range(5):
        skip = rng.uniform(0.2, 0.8, size=14)
        soft = np.stack([skip, 1 - skip], 1)  # S2: [skip_connect, sep_conv_3x3]
        rows.append({"epoch": epoch, "softmax": {"normal": soft.tolist(),
                                                 "reduce": soft.tolist()}})
        metrics.append({"epoch": epoch, "valid_acc": 0.5 + 0.05 * epoch})
        expected.append(float(np.mean(skip - (1 - skip))))
    (wd / "alphas.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (wd / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    res = analyze.run_skip_gap(str(wd), log=lambda s: None)
    assert res["versus"] == "sep_conv_3x3"
    np.testing.assert_allclose(res["gap"], expected, atol=1e-12)
    assert res["pearson_gap_acc"] == pytest.approx(
        np.corrcoef(expected, [m["valid_acc"] for m in metrics])[0, 1])
    assert (wd / "analysis" / "skip_gap.png").stat().st_size > 1000


def test_strength_ranks_ops_by_zero_cost_proxies_too(searched, tmp_path, capsys):
    from tfnas.derive.proxies import ProxyScorer
    from tfnas.selection.run import load_search
    wd = str(tmp_path / "p")
    shutil.copytree(searched, wd)
    summary = analyze.run_strength(wd, edges="normal:1", max_epochs=1, patience=1,
                                   score_batches=2, proxies="snip,nwot", log=lambda s: None)
    rows = read_jsonl(os.path.join(wd, "analysis", "strength.jsonl"))
    (edge,) = summary["edges"]
    conv = [r["acc_converged"] for r in rows]
    for name in ("snip", "nwot"):  # nwot reads the running statistics: none moved before
        values = [r["proxy_without"][name] for r in rows]
        assert edge[f"{name}_importance"] == pytest.approx([-v for v in values])
        tau = edge[f"tau_{name}_strength"]
        assert (np.isnan(tau) and np.isnan(analyze.kendall_tau(values, conv))) or \
            tau == pytest.approx(analyze.kendall_tau([-v for v in values], conv))
    assert set(summary["mean_tau_strength"]) == {"alpha", "pt", "snip", "nwot"}
    # the recorded value is the proxy of the trained supernet with that op masked
    loop = load_search(wd, log=lambda s: None)
    batch = next(iter(loop.pipeline.train(loop.train_idx, 30_000, repeat=True)))
    loop.model.arch("normal").mask_op(1, 0)
    for name in ("snip", "nwot"):
        assert ProxyScorer(loop.model, name)(*batch) == pytest.approx(
            rows[0]["proxy_without"][name], rel=1e-5)
    assert main(["analyze", "strength", f"--workdir={wd}", "--edges=normal:1",
                 "--proxies=bogus"]) == 2
    assert "'bogus' is not a proxy" in capsys.readouterr().err
