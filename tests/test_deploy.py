"""Deployment: built-in-layer graphs, artefacts that run without tfnas, int8, TFLite, profile."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from helpers import SAMPLE, published_genotypes
from tfnas.cli import main
from tfnas.deploy import DeployError, fold_bn, to_builtin
from tfnas.export import export_model
from tfnas.genotype import Edge, Genotype
from tfnas.models import build_model
from tfnas.optimizers import ReferenceSGD


def _trained_looking(model, seed=0):
    """Non-trivial BN statistics and affine parameters (fresh ones would hide folding bugs)."""
    rng = np.random.default_rng(seed)
    for v in model.variables:
        leaf = v.path.rsplit("/", 1)[-1]
        if leaf in ("moving_mean", "beta"):
            v.assign(rng.normal(0, 0.3, v.shape).astype(np.float32))
        elif leaf in ("moving_variance", "gamma"):
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
    return model


def _max_diff(model, deployed, shape, seed=1):
    x = np.random.default_rng(seed).normal(size=(3,) + shape).astype(np.float32)
    ref = model(x, training=False)
    ref = ref["logits"] if isinstance(ref, dict) else ref
    return float(np.max(np.abs(np.asarray(ref) - np.asarray(deployed(x)))))


def _only_builtin(model):
    return {type(layer).__module__.split(".")[0] for layer in model.layers} == {"keras"}


@pytest.mark.parametrize("name", SAMPLE[:4] + ("darts_pt_s5_0",))
@pytest.mark.parametrize("shape", [(16, 16, 3), (15, 15, 3)])  # odd sizes pad differently
def test_builtin_graph_equals_the_tfnas_model(name, shape):
    g = published_genotypes()[name][0]
    m = _trained_looking(build_model(g, 10, shape, channels=4, layers=5, auxiliary=True))
    d = to_builtin(m)
    assert _only_builtin(d)
    assert _max_diff(m, d, shape) < 1e-5
    assert not any("batch_normalization" in layer.name for layer in d.layers)  # all folded
    assert d.output.shape[-1] == 10  # logits only: the auxiliary head is training-only


def test_builtin_graph_nb201_with_all_none_node_and_imagenet_form():
    g = Genotype.from_nb201_string("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|"
                                   "avg_pool_3x3~1|nor_conv_1x1~2|")
    m = _trained_looking(build_model(g, 7, (16, 16, 3), channels=4, layers=1))
    d = to_builtin(m)
    assert _only_builtin(d) and _max_diff(m, d, (16, 16, 3)) < 1e-5
    m = _trained_looking(build_model("darts_v2", 5, (48, 48, 3), channels=8, layers=3,
                                     form="imagenet", auxiliary=True))
    d = to_builtin(m)
    assert _only_builtin(d) and _max_diff(m, d, (48, 48, 3)) < 1e-5


def test_fold_bn_matches_conv_then_bn_by_hand():
    from tfnas.ops import BatchNorm
    bn = BatchNorm(affine=True)
    bn.build((None, 4, 4, 2))
    bn.gamma.assign([2.0, 0.5])
    bn.beta.assign([1.0, -1.0])
    bn.moving_mean.assign([0.5, -2.0])
    bn.moving_variance.assign([4.0, 0.25])
    k, b = fold_bn(np.ones((1, 1, 3, 2), np.float32), bn)
    s = np.array([2.0, 0.5]) / np.sqrt(np.array([4.0, 0.25]) + 1e-5)
    np.testing.assert_allclose(k[0, 0, 0], s, rtol=1e-6)
    np.testing.assert_allclose(b, [1.0 - 0.5 * s[0], -1.0 + 2.0 * s[1]], rtol=1e-6)


def test_noise_op_has_no_deployable_form():
    edges = [Edge(2, 0, "noise"), Edge(2, 1, "sep_conv_3x3"), Edge(3, 0, "sep_conv_3x3"),
             Edge(3, 1, "sep_conv_3x3"), Edge(4, 0, "sep_conv_3x3"), Edge(4, 1, "sep_conv_3x3"),
             Edge(5, 0, "sep_conv_3x3"), Edge(5, 1, "sep_conv_3x3")]
    cells = {t: {"edges": edges, "concat": [2, 3, 4, 5]} for t in ("normal", "reduce")}
    m = build_model(Genotype("s4", cells), 10, (8, 8, 1), channels=4, layers=3)
    with pytest.raises(DeployError, match=r"op 'noise_0_2' \(Noise\) has no inference"):
        to_builtin(m)


_NO_TFNAS = r"""
import sys
sys.modules["tfnas"] = None  # any `import tfnas` now fails: nothing below may need it
import numpy as np, keras, onnxruntime as ort, tensorflow as tf, warnings
d = sys.argv[1]
ref = np.load(d + "/ref.npz")
x, want = ref["x"], ref["logits"]
saved = tf.saved_model.load(d + "/out/saved_model")
got = {"keras": keras.models.load_model(d + "/out/model.keras")(x, training=False),
       "savedmodel": saved.serve(x)}
for name in ("model.onnx", "model_int8.onnx"):
    s = ort.InferenceSession(d + "/out/" + name, providers=["CPUExecutionProvider"])
    got[name] = s.run(None, {s.get_inputs()[0].name: x})[0]
for name in ("model.tflite", "model_int8.tflite"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = tf.lite.Interpreter(model_path=d + "/out/" + name)
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    it.resize_tensor_input(i, list(x.shape)); it.allocate_tensors()
    it.set_tensor(i, x); it.invoke(); got[name] = it.get_tensor(o)
for k, v in got.items():
    print(k, float(np.max(np.abs(np.asarray(v) - want))),
          int(np.sum(np.argmax(np.asarray(v), -1) == np.argmax(want, -1))))
print("tfnas imported:", any(m.startswith("tfnas") and sys.modules[m] for m in sys.modules))
"""


def test_every_artefact_runs_without_tfnas(tmp_path):
    m = _trained_looking(build_model("darts_v2", 10, (16, 16, 3), channels=4, layers=3,
                                     auxiliary=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 16, 16, 3)).astype(np.float32)
    report = export_model(m, str(tmp_path / "out"), formats=("keras", "savedmodel", "onnx",
                                                              "tflite"),
                          int8=True, calibration=x, evaluation=(x, np.arange(16) % 10))
    assert set(report["max_abs_diff"]) == {"keras", "savedmodel", "onnx", "onnx_int8",
                                           "tflite", "tflite_int8"}
    assert set(report["top1"]) == set(report["max_abs_diff"]) | {"keras_source"}
    assert report["calibration_images"] == 16 and report["evaluated_images"] == 16
    np.savez(tmp_path / "ref.npz", x=x[:4], logits=np.asarray(m(x[:4])["logits"]))
    (tmp_path / "check.py").write_text(_NO_TFNAS)
    r = subprocess.run([sys.executable, str(tmp_path / "check.py"), str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines()
            if line and not line.startswith("tfnas imported")}
    for fmt in ("keras", "savedmodel", "model.onnx", "model.tflite"):
        assert float(rows[fmt][0]) < 1e-4, (fmt, rows[fmt])
    scale = float(np.abs(np.load(tmp_path / "ref.npz")["logits"]).max())
    for fmt in ("model_int8.onnx", "model_int8.tflite"):  # int8: close, not exact
        assert 0 < float(rows[fmt][0]) < 0.25 * scale, (fmt, rows[fmt], scale)
    assert "tfnas imported: False" in r.stdout
    import onnx
    ops = {n.op_type for n in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops  # BN folded into the convs
    from tfnas.artifacts import tflite_interpreter
    kinds = [t["dtype"] for t in tflite_interpreter(
        str(tmp_path / "out" / "model_int8.tflite")).get_tensor_details()]
    assert kinds.count(np.int8) > 20  # int8 weights and activations, float only at the ends
    onnx_int8 = onnx.load(str(tmp_path / "out" / "model_int8.onnx")).graph.node
    assert sum(n.op_type == "QuantizeLinear" for n in onnx_int8) > 20


def test_export_cli_int8_top1_and_profile_from_a_trained_model_file(tmp_path):
    """Through the installed command in a fresh process: a `tfnas train` model.keras (compiled
    with ReferenceSGD) exports with int8 calibrated on digits, then gets profiled."""
    m = build_model("darts_v2", 10, (8, 8, 1), channels=4, layers=3, auxiliary=True)
    m.compile(optimizer=ReferenceSGD(0.01, momentum=0.9),
              loss={"logits": keras.losses.SparseCategoricalCrossentropy(True),
                    "aux_logits": keras.losses.SparseCategoricalCrossentropy(True)})
    m.save(tmp_path / "model.keras")
    out = tmp_path / "exp"
    cmd = [sys.executable, "-m", "tfnas.cli", "export", "--genotype=darts_v2",
           f"--weights={tmp_path / 'model.keras'}", f"--out={out}",
           "--formats=keras,onnx,tflite", "--int8", "--data=digits", "--calibration_images=32",
           "--eval_images=50", "--profile", "--runs=3", "--warmup=1", "--batch_sizes=1,4"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    parity = json.loads((out / "parity.json").read_text())
    assert parity["evaluated_images"] == 50 and parity["calibration_images"] == 32
    assert parity["data"] == "digits" and len(parity["normalisation"]["mean"]) == 1
    assert parity["top1"]["onnx"] == parity["top1"]["keras_source"] == parity["top1"]["tflite"]
    profile = json.loads((out / "profile.json").read_text())
    assert set(profile["latency"]) == {"onnx", "onnx_int8", "tflite", "tflite_int8"}
    assert set(profile["latency"]["onnx"]) == {"1", "4"}
    lat = profile["latency"]["tflite"]["4"]
    assert lat["runs"] == 3 and 0 < lat["median_ms"] <= lat["p90_ms"]
    assert profile["params"] == to_builtin(m).count_params() and profile["macs"] > 0
    assert "onnx_int8" in r.stdout and "b4 median/p90 ms" in r.stdout
    from tfnas.cpuinfo import int8_target
    here = int8_target("auto")
    assert f"int8 for {here} CPUs (ONNX reduce_range={here == 'avx2'}), measured on: " \
        in r.stdout
    assert parity["int8"]["measured_on_target"] and profile["cpu"] == parity["cpu"]


@pytest.mark.parametrize("args,message", [
    (["--formats=keras", "--int8", "--data=digits"], "--int8 quantizes onnx and tflite"),
    (["--formats=onnx", "--int8"], "--int8 needs calibration images: pass --data"),
    (["--formats=onnx,pdf"], "--formats: unknown ['pdf']"),
    (["--profile", "--batch_sizes=1,x"], "--batch_sizes='1,x' is invalid"),
    (["--formats=onnx", "--int8", "--data=nope"], "unknown dataset 'nope'; registered: "),
])
def test_export_refuses_bad_deployment_flags_before_work(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    rc = main(["export", "--genotype=darts_v2", f"--out={out}", "--channels=4",
               "--layers=3"] + args)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1
    assert not out.exists() and "exporting" not in captured.out  # refused before any work


def test_profile_refuses_a_folder_that_is_not_an_export(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["profile", f"--dir={tmp_path}"]) == 2
    assert "is not a tfnas export folder" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["mine.txt"]


# --- int8 that knows its target --------------------------------------------------------------
_CPUINFO = {
    "xeon_vnni": ("vendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338\n"
                  "flags\t\t: fpu sse avx avx2 fma avx512f avx512bw avx512_vnni\n\n", "vnni"),
    "epyc_avx2": ("vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B12\n"
                  "flags\t\t: fpu sse avx avx2 fma sha_ni\n\n", "avx2"),
    "client_avx_vnni": ("vendor_id\t: GenuineIntel\nmodel name\t: 12th Gen Core\n"
                        "flags\t\t: avx avx2 fma avx_vnni\n\n", "vnni"),
}


@pytest.mark.parametrize("name", sorted(_CPUINFO))
def test_int8_target_follows_the_cpu(tmp_path, name):
    from tfnas.cpuinfo import cpu_info, int8_settings, int8_target
    text, want = _CPUINFO[name]
    (tmp_path / "cpuinfo").write_text(text)
    info = cpu_info(str(tmp_path / "cpuinfo"))
    assert info["model"] == text.split("model name\t: ")[1].split("\n")[0]
    assert int8_target("auto", info) == want
    assert int8_settings(want)["onnx"]["reduce_range"] == (want == "avx2")
    assert int8_target("arm", info) == "arm"  # an explicit target is kept


def test_int8_target_on_arm_and_a_bad_target():
    from tfnas.cpuinfo import int8_target
    from tfnas.errors import UsageError
    arm = {"machine": "aarch64", "isa": {"asimd": True, "asimddp": True}}
    assert int8_target("auto", arm) == "arm"
    with pytest.raises(UsageError, match="--int8_target='sse' is invalid: expected one of "
                                         "auto, vnni, avx2, arm"):
        int8_target("sse")


def _onnx_int8_weights(path):
    """The int8 weight tensors of a QDQ model (initializers feeding DequantizeLinear)."""
    import onnx
    from onnx import numpy_helper
    g = onnx.load(path).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    return [inits[n.input[0]] for n in g.node if n.op_type == "DequantizeLinear"
            and n.input[0] in inits and inits[n.input[0]].dtype == np.int8
            and inits[n.input[0]].ndim == 4]


def test_int8_for_avx2_uses_7_bit_weights_and_says_where_it_was_measured(tmp_path):
    """avx2 (x86 without VNNI): every ONNX weight in [-64, 64], so u8 x s8 pair sums stay
    below 2**15; vnni: the full 8-bit range. parity.json holds the target, its settings, the
    CPU, and a warning when it was measured on another kind of CPU."""
    from tfnas.cpuinfo import int8_target
    m = _trained_looking(build_model("darts_v2", 10, (16, 16, 3), channels=4, layers=3))
    x = np.random.default_rng(0).normal(size=(16, 16, 16, 3)).astype(np.float32)
    here = int8_target("auto")
    reports = {}
    for target in ("avx2", "vnni"):
        out = tmp_path / target
        reports[target] = export_model(m, str(out), formats=("onnx",), int8=True,
                                       calibration=x, int8_target=target)
        weights = _onnx_int8_weights(str(out / "model_int8.onnx"))
        assert len(weights) > 10
        lo, hi = min(int(w.min()) for w in weights), max(int(w.max()) for w in weights)
        if target == "avx2":
            assert max(-lo, hi) == 64, (lo, hi)  # symmetric 7-bit: 255 * 64 * 2 < 2**15
        else:
            assert max(-lo, hi) == 127  # per-channel: each channel's largest weight maps to 127
        saved = json.loads((out / "parity.json").read_text())
        assert saved["int8"]["target"] == target and saved["int8"]["measured_on"] == here
        assert saved["int8"]["settings"]["onnx"]["reduce_range"] == (target == "avx2")
        assert saved["cpu"]["isa"]["avx2"] in (True, False) and saved["cpu"]["model"]
        warned = any("was measured here, on a" in w for w in saved["warnings"])
        assert warned == (target != here)


def test_int8_warnings_name_a_top1_drop_beyond_the_bound():
    from tfnas.export import int8_warnings
    report = {"int8": {"target": "vnni", "measured_on": "vnni", "measured_on_target": True,
                       "top1_bound": 0.01},
              "top1": {"onnx": 0.90, "onnx_int8": 0.885, "tflite": 0.90,
                       "tflite_int8": 0.8925},
              "evaluated_images": 400}
    assert int8_warnings(report) == [
        "onnx int8 top-1 0.8850 is 1.5 points below float 0.9000 on 400 images (bound 1 "
        "point)"]  # tflite lost 0.75 points: within the bound
    assert int8_warnings({"top1": {}}) == []
