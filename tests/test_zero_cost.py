"""Zero-Cost-PT (`tfnas select --selector=zc_pt`): the decisions follow the proxy, the run
resumes per iteration to the same result, and bad input gets one line."""

import json
import os
import shutil

import numpy as np
import pytest

from tfnas.cli import main
from tfnas.derive.proxies import PROXIES, Proxy
from tfnas.derive.zero_cost import EDGE_ORDERS, ZeroCost, zc_events
from tfnas.genotype import Genotype
from tfnas.io import read_jsonl
from tfnas.spaces import get_space

ZC = ["--selector=zc_pt", "--proxy=snip", "--zc_iterations=2", "--zc_validate_rounds=2"]


def _copy(searched, tmp_path, name="w"):
    wd = str(tmp_path / name)
    shutil.copytree(searched, wd)
    return wd


def test_zc_pt_decides_by_the_proxy_and_validates_every_candidate(searched, tmp_path):
    wd = _copy(searched, tmp_path)
    assert main(["select", f"--workdir={wd}", *ZC]) == 0
    g = Genotype.load(os.path.join(wd, "genotype.json"))
    assert g.meta["selector"] == "zc_pt" and g.meta["proxy"] == "snip"
    sel = os.path.join(wd, "selection")
    candidates = read_jsonl(os.path.join(sel, "candidates.jsonl"))
    assert [c["iteration"] for c in candidates] == [0, 1]
    rows = read_jsonl(os.path.join(sel, "scores.jsonl"))
    ops = [r for r in rows if r.get("kind") == "op"]
    space = g.space_obj
    assert len(ops) == 2 * sum(space.cells[t].num_edges for t in space.cell_types)
    for r in ops:  # kept: the op whose removal leaves the lowest proxy value
        assert r["choice"] == min(r["scores"], key=lambda op: (r["scores"][op],
                                                                list(r["scores"]).index(op)))
        assert all(np.isfinite(v) for v in r["scores"].values())
    topo = [r for r in rows if r.get("kind") == "topology"]
    assert topo and all(len(r["kept_inputs"]) == 2 for r in topo)
    for r in topo:  # each round drops the edge whose removal leaves the highest value
        for rnd in r["rounds"]:
            best = max(rnd["scores"].values())
            assert rnd["scores"][str(rnd["removed"])] == best
    validation = rows[-1]
    assert validation["kind"] == "validation"
    chosen = Genotype.from_json(candidates[validation["chosen"]]["genotype"])
    assert chosen.to_json()["cells"] == g.to_json()["cells"]
    distinct = {json.dumps(c["genotype"]["cells"], sort_keys=True) for c in candidates}
    assert len(validation["sums"]) == len(validation["candidate_iterations"]) == len(distinct)
    best = validation["candidate_iterations"][int(np.argmax(validation["sums"]))]
    assert validation["chosen"] == best
    # tfnas report draws the chosen candidate's proxy scores and the validation sums
    assert main(["report", f"--workdir={wd}"]) == 0
    for name in ("cells.png", "alpha_vs_pt.png", "selection.png"):
        with open(os.path.join(wd, "report", name), "rb") as f:
            assert f.read(4) == b"\x89PNG"


def test_zc_pt_resumes_at_the_first_unfinished_iteration(searched, tmp_path):
    whole = _copy(searched, tmp_path, "whole")
    assert main(["select", f"--workdir={whole}", *ZC]) == 0
    wd = _copy(searched, tmp_path, "cut")
    assert main(["select", f"--workdir={wd}", *ZC]) == 0
    sel = os.path.join(wd, "selection")
    # a kill after iteration 1's decision rows, before its candidate row and the validation
    rows = read_jsonl(os.path.join(sel, "scores.jsonl"))
    with open(os.path.join(sel, "candidates.jsonl")) as f:
        first = f.readline()
    with open(os.path.join(sel, "candidates.jsonl"), "w") as f:
        f.write(first)
    with open(os.path.join(sel, "scores.jsonl"), "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows if r.get("kind") != "validation"))
    os.remove(os.path.join(wd, "genotype.json"))
    assert main(["select", f"--workdir={wd}", *ZC]) == 0
    a = read_jsonl(os.path.join(whole, "selection", "scores.jsonl"))
    b = read_jsonl(os.path.join(sel, "scores.jsonl"))
    assert a == b
    ga, gb = (Genotype.load(os.path.join(w, "genotype.json")) for w in (whole, wd))
    assert ga.to_json()["cells"] == gb.to_json()["cells"]


def test_zc_pt_at_initialisation_scores_the_untrained_supernet(searched, tmp_path):
    trained, init = _copy(searched, tmp_path, "t"), _copy(searched, tmp_path, "i")
    assert main(["select", f"--workdir={trained}", *ZC[:-2], "--zc_iterations=1",
                 "--zc_validate_rounds=1"]) == 0
    assert main(["select", f"--workdir={init}", *ZC[:-2], "--zc_iterations=1",
                 "--zc_validate_rounds=1", "--zc_at_init"]) == 0
    a, b = (read_jsonl(os.path.join(w, "selection", "scores.jsonl"))[0]["scores"]
            for w in (trained, init))
    assert a.keys() == b.keys() and a != b
    assert Genotype.load(os.path.join(init, "genotype.json")).meta["at_init"] is True


@pytest.fixture
def nan_proxy():
    class NaNProxy(Proxy):
        def value(self, model, x, y):
            import tensorflow as tf
            return tf.constant(float("nan"))
    PROXIES.register("nan_for_test", NaNProxy)
    yield "nan_for_test"
    PROXIES._items.pop("nan_for_test")


def test_bad_input_gets_one_line(searched, tmp_path, capsys, nan_proxy):
    wd = _copy(searched, tmp_path)
    for flags, message in (
            (["--selector=zc_pt", "--proxy=bogus"], "proxy 'bogus' is unknown"),
            (["--selector=pt", "--proxy=snip"], "--proxy: for --selector=zc_pt only"),
            (["--zc_iterations=3"], "--zc_iterations: for --selector=zc_pt only"),
            (["--selector=zc_pt", "--zc_iterations=0"], "at least 1"),
            (["--selector=zc_pt", "--zc_edge_order=sideways"], "sideways")):
        capsys.readouterr()
        assert main(["select", f"--workdir={wd}", *flags]) == 2, flags
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (flags, err)
    assert main(["select", f"--workdir={wd}", "--selector=zc_pt",
                 f"--proxy={nan_proxy}"]) != 0
    err = capsys.readouterr().err
    assert "gave nan on" in err and "masked" in err and "Traceback" not in err
    assert not os.path.exists(os.path.join(wd, "genotype.json"))


def test_edge_orders_cover_every_edge_then_the_topology():
    space = get_space("darts")
    n = space.cells["normal"].num_edges
    for order in EDGE_ORDERS:
        events = zc_events(space, 0, order)
        ops = [t["normal"] for k, t in events if k == "op"]
        assert sorted(ops) == list(range(n))
        assert [k for k, _ in events] == ["op"] * n + ["topology"] * 3  # nodes 3, 4, 5
    assert [t["normal"] for k, t in zc_events(space, 0, "reverse") if k == "op"] == \
        list(range(n - 1, -1, -1))
    with pytest.raises(Exception, match="edge order"):
        ZeroCost(edge_order="sideways").check()


def test_the_library_call_selects_as_the_decisions_say_and_leaves_the_state(tiny_space_file):
    import keras
    import tensorflow as tf

    from tfnas import build_model
    from tfnas.derive import select, zero_cost_select
    from tfnas.errors import UsageError
    from tfnas.supernet import build_supernet
    keras.utils.set_random_seed(1)
    net = build_supernet(tiny_space_file, channels=4, layers=3, num_classes=3,
                         input_shape=(8, 8, 3))
    rng = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensor_slices(
        (rng.normal(size=(32, 8, 8, 3)).astype("float32"), rng.integers(0, 3, 32))).batch(8)
    arch = net.arch("normal")
    before = arch.is_fixed.numpy().copy()
    g = zero_cost_select(net, data, build=lambda g: build_model(g, 3, (8, 8, 3), 4, 3),
                         zero_cost=ZeroCost("grad_norm", iterations=2, validate_rounds=2))
    np.testing.assert_array_equal(arch.is_fixed.numpy(), before)
    assert g.meta["proxy"] == "grad_norm" and len(g.meta["validation_sums"]) in (1, 2)
    last = [r for r in g.meta["decisions"] if r["iteration"] == g.meta["chosen_iteration"]]
    kept = {(r["cell"], r["node"], r["input"]): r["choice"] for r in last if r["kind"] == "op"}
    for ctype, cell in g.cells.items():
        for e in cell["edges"]:
            assert kept[(ctype, e.node, e.input)] == e.op
    with pytest.raises(UsageError, match="zero_cost_select"):
        select(net, data, selector="zc_pt")


@pytest.mark.slow  # two fresh processes (~40 s): -m slow
def test_zc_pt_on_two_replicas_scores_as_one_device(searched, tmp_path):
    import subprocess
    import sys
    rows = {}
    for name, extra in (("one", []), ("two", ["--strategy=mirrored", "--cpu_devices=2"])):
        wd = _copy(searched, tmp_path, name)
        out = subprocess.run([sys.executable, "-m", "tfnas.cli", "select", f"--workdir={wd}",
                              *ZC, "--zc_iterations=1", "--proxy=nwot", *extra],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        rows[name] = read_jsonl(os.path.join(wd, "selection", "scores.jsonl"))
    assert len(rows["one"]) == len(rows["two"])
    for a, b in zip(rows["one"], rows["two"]):
        if a.get("kind") != "op":
            continue
        assert b["scores"] == pytest.approx(a["scores"], rel=1e-5)
        values = sorted(a["scores"].values())
        if len(values) > 1 and values[1] - values[0] > 1e-4 * abs(values[0]):
            assert a["choice"] == b["choice"]  # not a near-tie that rounding may flip


def test_zc_pt_keeps_every_candidate_within_a_budget(searched, tmp_path):
    from tfnas.cost import count_params
    from tfnas.derive.budget import Budget, Network
    from tfnas.models import build_model
    space = Genotype.load(os.path.join(searched, "genotype_magnitude.json")).space_obj
    params = Budget(space, "params", 1e12, Network(10, (8, 8, 1), 4, 3))
    ops = space.cells["normal"].ops[0]
    limit = int(params.fixed + params.table["normal"][0][ops.index("sep_conv_3x3")])
    wd = _copy(searched, tmp_path)
    assert main(["select", f"--workdir={wd}", *ZC, "--proxy=synflow",
                 f"--max_params={limit}"]) == 0
    for c in read_jsonl(os.path.join(wd, "selection", "candidates.jsonl")):
        g = Genotype.from_json(c["genotype"])
        assert count_params(build_model(g, 10, (8, 8, 1), 4, 3)) <= limit
    g = Genotype.load(os.path.join(wd, "genotype.json"))
    assert g.meta["budget"]["limit"] == limit and g.meta["budget"]["cost"] <= limit
    rows = [r for r in read_jsonl(os.path.join(wd, "selection", "scores.jsonl"))
            if r["kind"] == "op"]
    assert all(r["choice"] not in r.get("over_budget", []) for r in rows)
    assert any(r.get("over_budget") for r in rows)  # the budget really constrained a choice
