"""Export a genotype (and weights) to `.keras`, SavedModel and ONNX, with parity checks."""

import glob
import os
import shutil
import tempfile

import numpy as np

from tfnas.errors import TfnasError, UsageError
from tfnas.io import MARKER, TMP_PREFIX, check_folder, dumps

FORMATS = ("keras", "savedmodel", "onnx")
TOLERANCE = 1e-4


class ParityError(TfnasError):
    """An exported model disagrees with the Keras model beyond the tolerance."""


def count_macs(model, input_shape):
    """Multiply-adds of one forward pass (inference), from TF's float-op profiler / 2."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import \
        convert_variables_to_constants_v2
    fn = tf.function(lambda x: model(x, training=False))
    cf = fn.get_concrete_function(tf.TensorSpec((1,) + tuple(input_shape), tf.float32))
    frozen = convert_variables_to_constants_v2(cf)
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    info = tf.compat.v1.profiler.profile(graph=frozen.graph, options=opts)
    return int(info.total_float_ops // 2)


def check_export_out(out, overwrite=False):
    """Refuses an --out that tfnas must not replace (before any work starts).

    An existing folder is replaced only with `overwrite` and only if it is an earlier export
    (it holds the `.tfnas` marker that every export writes); a file, or a folder of someone
    else's files, is never replaced.

    Raises:
        UsageError: one sentence saying why and what to do.
    """
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


def export_model(model, out, formats=FORMATS, opset=17, batch=2, seed=0, initialised=False,
                 overwrite=False):
    """Writes the requested formats into `out` and checks them against `model`.

    Everything is written into a temporary folder beside `out` and moved into place only
    when every parity check passed, so a failure leaves nothing half-written. An existing
    `out` is replaced only if it is an earlier export and `overwrite` is set.

    Returns:
        The parity report (also written to OUT/parity.json).
    Raises:
        UsageError: unknown format, unwritable `out`, or an `out` that must not be replaced.
        ParityError: a format differs from Keras by more than 1e-4.
    """
    import keras
    import tensorflow as tf
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UsageError(f"--formats: unknown {unknown}; expected a comma list of "
                         f"{', '.join(FORMATS)}")
    check_export_out(out, overwrite)
    parent = os.path.dirname(os.path.abspath(out)) or "."
    prefix = f"{TMP_PREFIX}export-{os.path.basename(os.path.abspath(out))}-"
    for stale in glob.glob(os.path.join(glob.escape(parent), glob.escape(prefix) + "*")):
        shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted export of `out`
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=parent, prefix=prefix)
    except OSError as e:
        raise UsageError(f"--out={out}: cannot write there ({e.strerror})") from e
    try:
        shape = tuple(model.input_shape[1:])
        x = np.random.default_rng(seed).normal(size=(batch,) + shape).astype(np.float32)
        ref = _main_output(model(x, training=False))
        serving = _inference_model(model)
        report = {"input_shape": [None, *shape], "opset": opset, "tolerance": TOLERANCE,
                  "initialised_only": bool(initialised), "max_abs_diff": {},
                  "versions": {"tensorflow": tf.__version__, "keras": keras.__version__}}
        if "keras" in formats:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            back = keras.models.load_model(path)
            report["max_abs_diff"]["keras"] = _diff(ref, back(x, training=False))
        if "savedmodel" in formats:
            path = os.path.join(tmp, "saved_model")
            serving.export(path, format="tf_saved_model", verbose=False)
            loaded = tf.saved_model.load(path)
            report["max_abs_diff"]["savedmodel"] = _diff(ref, loaded.serve(x))
        if "onnx" in formats:
            import onnxruntime as ort
            import tf2onnx
            spec = (tf.TensorSpec((None,) + shape, tf.float32, name="image"),)
            path = os.path.join(tmp, "model.onnx")
            tf2onnx.convert.from_keras(serving, input_signature=spec, opset=opset,
                                       output_path=path)
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
            report["max_abs_diff"]["onnx"] = _diff(ref, got)
            report["versions"].update(tf2onnx=tf2onnx.__version__, onnxruntime=ort.__version__)
        bad = {k: v for k, v in report["max_abs_diff"].items() if not v <= TOLERANCE}
        if bad:
            raise ParityError(f"export parity failed: {bad} exceed {TOLERANCE} (nothing written "
                              f"to {out})")
        with open(os.path.join(tmp, "parity.json"), "w") as f:
            f.write(dumps(report, indent=1))
        with open(os.path.join(tmp, MARKER), "w") as f:
            f.write(dumps({"written_by": "tfnas export", "formats": list(formats)}) + "\n")
        check_export_out(out, overwrite)  # again: `out` may have changed meanwhile
        old = None
        if os.path.isdir(out) and os.listdir(out):  # an earlier export: swap, then delete
            old = tempfile.mkdtemp(dir=parent, prefix=prefix)
            os.replace(out, os.path.join(old, "previous"))
        os.replace(tmp, out)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return report
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)


def _main_output(y):
    y = y["logits"] if isinstance(y, dict) else y
    return np.asarray(y)


def _diff(a, b):
    return float(np.max(np.abs(a - _main_output(b))))


def _inference_model(model):
    """The logits-only functional model (drops the auxiliary head for serving)."""
    import keras
    if isinstance(model.output, dict):
        return keras.Model(model.inputs, model.output["logits"], name=model.name + "_serving")
    return model
