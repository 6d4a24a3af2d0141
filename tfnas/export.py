"""Export a trained network: `.keras`, SavedModel, ONNX and TFLite (float32 and int8).

Every format is written from the deployable graph (`tfnas.deploy.to_builtin`: built-in Keras
layers, BN folded), so each artefact runs with its own runtime alone. Each float artefact is
checked against the tfnas model (max abs difference <= TOLERANCE); int8 artefacts are
reported (difference, top-1 beside float) but not held to the float tolerance. int8 is made
for a target CPU (`tfnas.cpuinfo`: VNNI x86, AVX2-only x86, ARM); parity.json records the
target, its settings and the CPU it was measured on, and a top-1 drop beyond
INT8_TOP1_BOUND, or a measurement on another kind of CPU than the target, is a warning
there and in the command's output.
"""

import glob
import os
import shutil
import tempfile

import numpy as np

from tfnas import precision
from tfnas.artifacts import artefact_label, load_runner, top1, tflite_interpreter
from tfnas.cost import count_macs, count_params
from tfnas.deploy import to_builtin
from tfnas.errors import TfnasError, UsageError
from tfnas.io import MARKER, TMP_PREFIX, check_folder, check_links, dumps, umask_mode

FORMATS = ("keras", "savedmodel", "onnx", "tflite")
DEFAULT_FORMATS = ("keras", "savedmodel", "onnx")
INT8_FORMATS = ("onnx", "tflite")
TOLERANCE = 1e-4
INT8_TOP1_BOUND = 0.01  # top-1 an int8 artefact may lose against its float one (1 point)


class ParityError(TfnasError):
    """An exported model disagrees with the Keras model beyond the tolerance."""


def check_formats(formats, int8=False):
    """Validates the requested formats and --int8 before any work.

    Raises:
        UsageError: unknown or no formats; --int8 without an int8-capable format.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UsageError(f"--formats: unknown {unknown}; expected a comma list of "
                         f"{', '.join(FORMATS)}")
    if int8 and not set(formats) & set(INT8_FORMATS):
        raise UsageError(f"--int8 quantizes {' and '.join(INT8_FORMATS)}; add one of them to "
                         f"--formats")


def check_export_out(out, overwrite=False):
    """Refuses an --out that tfnas must not replace (before any work starts).

    An existing folder is replaced only with `overwrite` and only if it is an earlier export
    (it holds the `.tfnas` marker that every export writes); a file, or a folder of someone
    else's files, is never replaced.

    Raises:
        UsageError: one sentence saying why and what to do.
    """
    check_links(out, "--out")  # a loop or a dangling link: named as such
    check_folder(os.path.dirname(os.path.abspath(out)), "--out's parent")
    if os.path.isfile(out) or os.path.islink(out):
        raise UsageError(f"--out={out} is a file; tfnas never replaces a file: pass a new "
                         f"folder path")
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.exists(os.path.join(out, MARKER)):
            raise UsageError(f"--out={out} holds files that tfnas did not write (no {MARKER} "
                             f"marker); nothing was changed: pass a new folder path")
        if not overwrite:
            raise UsageError(f"--out={out} holds an earlier export; pass --overwrite to "
                             f"replace it, or choose another folder")


def export_model(model, out, formats=DEFAULT_FORMATS, opset=17, batch=2, seed=0,
                 initialised=False, overwrite=False, int8=False, calibration=None,
                 evaluation=None, meta=None, int8_target="auto"):
    """Writes the requested formats into `out` and checks them against `model`.

    Everything is written into a temporary folder beside `out` and moved into place only
    when every parity check passed, so a failure leaves nothing half-written. An existing
    `out` is replaced only if it is an earlier export and `overwrite` is set.

    Args:
        model: a tfnas network (`tfnas.build_model`, or a loaded `model.keras` of it).
        formats: any of FORMATS.
        int8: also write post-training static int8 quantizations of ONNX / TFLite.
        calibration: normalised float32 images for int8 calibration (needed with `int8`).
        int8_target: the CPU the int8 artefacts are for: auto (this machine), vnni, avx2
            (x86 without VNNI: 7-bit ONNX weights) or arm (`tfnas.cpuinfo`).
        evaluation: (images, labels) of a test split: top-1 of every artefact is reported.
        meta: extra JSON-able facts for parity.json (dataset, normalisation).
    Returns:
        The parity report (also written to OUT/parity.json).
    Raises:
        UsageError: unknown format, unwritable `out`, or an `out` that must not be replaced.
        ParityError: a float format differs from Keras by more than TOLERANCE.
    """
    formats = tuple(formats)
    check_formats(formats, int8)
    from tfnas.cpuinfo import cpu_info, int8_settings, int8_target as resolve_target
    target = resolve_target(int8_target)
    if int8 and (calibration is None or not len(calibration)):
        raise UsageError("--int8 needs calibration images: pass --data (and "
                         "--calibration_images > 0)")
    check_export_out(out, overwrite)
    tmp = _make_temp(out)
    try:
        settings = int8_settings(target) if int8 else None
        report = _write_all(model, tmp, formats, opset, batch, seed, settings, calibration,
                            evaluation)
        report.update(initialised_only=bool(initialised), cpu=cpu_info(), **(meta or {}))
        if int8:
            here = resolve_target("auto")
            report["int8"] = {"target": target, "requested": int8_target,
                              "settings": settings, "measured_on": here,
                              "measured_on_target": here == target,
                              "top1_bound": INT8_TOP1_BOUND}
        report["warnings"] = int8_warnings(report)
        bad = {k: v for k, v in report["max_abs_diff"].items()
               if not k.endswith("_int8") and not v <= TOLERANCE}
        if bad:
            raise ParityError(f"export parity failed: {bad} exceed {TOLERANCE} (nothing written "
                              f"to {out})")
        with open(os.path.join(tmp, "parity.json"), "w") as f:
            f.write(dumps(report, indent=1))
        with open(os.path.join(tmp, MARKER), "w") as f:
            f.write(dumps({"written_by": "tfnas export", "formats": list(formats),
                           "int8": bool(int8)}) + "\n")
        _swap_into_place(tmp, out, overwrite)
        return report
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)


def _make_temp(out):
    parent = os.path.dirname(os.path.abspath(out)) or "."
    prefix = _temp_prefix(out)
    for stale in glob.glob(os.path.join(glob.escape(parent), glob.escape(prefix) + "*")):
        shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted export of `out`
    try:
        os.makedirs(parent, exist_ok=True)
        return tempfile.mkdtemp(dir=parent, prefix=prefix)
    except OSError as e:
        raise UsageError(f"--out={out}: cannot write there ({e.strerror})") from e


def _temp_prefix(out):
    return f"{TMP_PREFIX}export-{os.path.basename(os.path.abspath(out))}-"


def _swap_into_place(tmp, out, overwrite):
    check_export_out(out, overwrite)  # again: `out` may have changed meanwhile
    old = None
    if os.path.isdir(out) and os.listdir(out):  # an earlier export: swap, then delete
        old = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(out)),
                               prefix=_temp_prefix(out))
        os.replace(out, os.path.join(old, "previous"))
    umask_mode(tmp, 0o777)
    os.replace(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def int8_warnings(report):
    """Sentences about int8 artefacts a user must not miss: a top-1 drop beyond the report's
    bound against the float artefact of the same runtime, and a measurement made on another
    kind of CPU than the target."""
    info = report.get("int8")
    if not info:
        return []
    out = []
    if not info["measured_on_target"]:
        out.append(f"int8 made for {info['target']} CPUs was measured here, on a "
                   f"{info['measured_on']} CPU: its accuracy on the target is not measured")
    top1s = report.get("top1", {})
    for fmt in INT8_FORMATS:
        f, q = top1s.get(fmt), top1s.get(fmt + "_int8")
        if f is not None and q is not None and f - q > info["top1_bound"]:
            out.append(f"{fmt} int8 top-1 {q:.4f} is {100 * (f - q):.1f} points below float "
                       f"{f:.4f} on {report.get('evaluated_images')} images (bound "
                       f"{100 * info['top1_bound']:g} point)")
    return out


def _write_all(model, tmp, formats, opset, batch, seed, int8, calibration, evaluation):
    """`int8`: None, or the settings of `tfnas.cpuinfo.int8_settings`."""
    import keras
    import tensorflow as tf
    shape = tuple(model.input_shape[1:])
    x = np.random.default_rng(seed).normal(size=(batch,) + shape).astype(np.float32)
    ref = _main_output(model(x, training=False))
    with precision.policy("float32"):  # artefacts are float32 whatever the training policy
        serving = to_builtin(model)
    dtypes = {str(layer.compute_dtype) for layer in model.layers} - {"float32"}
    source_dtype = dtypes.pop() if dtypes else "float32"
    mixed = {}
    if source_dtype != "float32":
        # A mixed-precision model computes in bfloat16 or float16: the artefacts are checked
        # against the float32 Keras graph of the same weights, and the gap to the mixed model
        # is reported (16-bit rounding, not an export error).
        ref, mixed_ref = _main_output(serving(x, training=False)), ref
        mixed = {"source_compute_dtype": source_dtype, "mixed_vs_float32_max_abs_diff":
                 float(np.max(np.abs(np.asarray(mixed_ref, np.float32) - ref)))}
    report = {**mixed, "input_shape": [None, *shape], "opset": opset, "tolerance": TOLERANCE,
              "graph": "built-in Keras layers, BN folded into convolutions",
              "params": count_params(serving), "macs": count_macs(serving),
              "max_abs_diff": {}, "top1": {},
              "versions": {"tensorflow": tf.__version__, "keras": keras.__version__}}
    written = []
    saved_model = os.path.join(tmp, "saved_model")
    if "savedmodel" in formats or "tflite" in formats:
        serving.export(saved_model, format="tf_saved_model", verbose=False)
        written.append("saved_model")
    if "keras" in formats:
        serving.save(os.path.join(tmp, "model.keras"))
        written.append("model.keras")
    if "onnx" in formats:
        written += _write_onnx(serving, tmp, shape, opset, int8, calibration, report)
    if "tflite" in formats:
        written += _write_tflite(saved_model, tmp, int8, calibration)
    if "savedmodel" not in formats and os.path.exists(saved_model):
        shutil.rmtree(saved_model)  # only the TFLite converter's input
        written.remove("saved_model")
    for name in written:
        run = load_runner(os.path.join(tmp, name))
        label = artefact_label(name)
        report["max_abs_diff"][label] = _diff(ref, run(x))
        if evaluation is not None:
            report["top1"][label] = top1(run, *evaluation)
    if evaluation is not None:
        report["top1"]["keras_source"] = top1(
            lambda b: _main_output(model(b, training=False)), *evaluation)
        report["evaluated_images"] = int(len(evaluation[1]))
    if int8:
        report["calibration_images"] = int(len(calibration))
    return report


def _write_onnx(serving, tmp, shape, opset, int8, calibration, report):
    """model.onnx, and model_int8.onnx with `int8`'s ONNX settings."""
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx
    spec = (tf.TensorSpec((None,) + shape, tf.float32, name="image"),)
    path = os.path.join(tmp, "model.onnx")
    tf2onnx.convert.from_keras(serving, input_signature=spec, opset=opset, output_path=path)
    report["versions"].update(tf2onnx=tf2onnx.__version__, onnxruntime=ort.__version__)
    if not int8:
        return ["model.onnx"]
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(calibration, max(1, len(calibration) // 32)))

        def get_next(self):
            b = next(self.batches, None)
            return None if b is None else {"image": np.asarray(b, np.float32)}

    prepared = os.path.join(tmp, "prepared.onnx")  # shape inference + graph optimisation
    quant_pre_process(path, prepared, skip_symbolic_shape=True)
    cfg = int8["onnx"]
    quantize_static(prepared, os.path.join(tmp, "model_int8.onnx"), Reader(),
                    quant_format=QuantFormat[cfg["format"]], per_channel=cfg["per_channel"],
                    activation_type=QuantType[cfg["activation_type"]],
                    weight_type=QuantType[cfg["weight_type"]],
                    reduce_range=cfg["reduce_range"])
    os.remove(prepared)
    return ["model.onnx", "model_int8.onnx"]


def _write_tflite(saved_model, tmp, int8, calibration):
    import tensorflow as tf

    def convert(quantize):
        conv = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        if quantize:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([calibration[i:i + 1]]
                                                   for i in range(len(calibration)))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = conv.inference_output_type = tf.float32
        return conv.convert()

    names = ["model.tflite"] + (["model_int8.tflite"] if int8 else [])
    for name in names:
        content = convert(name.endswith("_int8.tflite"))
        tflite_interpreter(content=content)  # refuses a flatbuffer the runtime cannot load
        with open(os.path.join(tmp, name), "wb") as f:
            f.write(content)
    return names


def _main_output(y):
    y = y["logits"] if isinstance(y, dict) else y
    return np.asarray(y)


def _diff(a, b):
    return float(np.max(np.abs(a - _main_output(b))))
