"""Run exported artefacts with their own runtimes only (Keras, TensorFlow, onnxruntime, TFLite).

    run = load_runner("exported/darts_v2/model.onnx", threads=2)
    logits = run(images)            # float32 NHWC batch -> numpy logits

Nothing here needs the tfnas layers: the exported graphs are built-in Keras layers
(`tfnas.deploy`), so these loaders are what a deployment without tfnas does too.
"""

import os
import warnings

import numpy as np

from tfnas.errors import UsageError

# file or folder name in an export -> (format, int8)
ARTEFACTS = {"model.keras": ("keras", False), "saved_model": ("savedmodel", False),
             "model.onnx": ("onnx", False), "model_int8.onnx": ("onnx", True),
             "model.tflite": ("tflite", False), "model_int8.tflite": ("tflite", True)}


def artefact_label(name):
    fmt, int8 = ARTEFACTS[name]
    return f"{fmt}_int8" if int8 else fmt


def load_runner(path, threads=0):
    """A callable images -> logits (numpy) for one exported artefact.

    Args:
        path: an artefact of an export folder (a name in ARTEFACTS).
        threads: intra-op threads of onnxruntime / TFLite (0: the runtime's default).
    Raises:
        UsageError: not an artefact name tfnas writes.
    """
    name = os.path.basename(os.path.normpath(path))
    if name not in ARTEFACTS:
        raise UsageError(f"{path}: not an exported artefact (expected one of "
                         f"{', '.join(ARTEFACTS)})")
    fmt = ARTEFACTS[name][0]
    if fmt == "keras":
        import keras
        model = keras.models.load_model(path)
        return lambda x: np.asarray(model(x, training=False))
    if fmt == "savedmodel":
        import tensorflow as tf
        loaded = tf.saved_model.load(path)
        return lambda x: np.asarray(loaded.serve(tf.constant(x)))
    if fmt == "onnx":
        return _onnx_runner(path, threads)
    return _tflite_runner(path, threads)


def _onnx_runner(path, threads):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: np.asarray(x, np.float32)})[0]


def tflite_interpreter(path=None, content=None, threads=0):
    """tf.lite.Interpreter without its deprecation banner (LiteRT is the successor; the
    TensorFlow-bundled interpreter runs the same flatbuffers)."""
    import tensorflow as tf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(model_path=path, model_content=content,
                                   num_threads=int(threads) or None)


def _tflite_runner(path, threads):
    interp = tflite_interpreter(path, threads=threads)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    state = {"shape": None}

    def run(x):
        x = np.asarray(x, np.float32)
        if state["shape"] != x.shape:
            interp.resize_tensor_input(inp["index"], list(x.shape))
            interp.allocate_tensors()
            state["shape"] = x.shape
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(out["index"]).copy()
    return run


def top1(run, x, y, batch=100):
    """Top-1 accuracy of `run` on normalised images `x` and labels `y`."""
    hits = 0
    for i in range(0, len(x), batch):
        hits += int(np.sum(np.argmax(run(x[i:i + batch]), axis=-1) == y[i:i + batch]))
    return hits / max(1, len(x))
