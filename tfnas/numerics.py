"""Every candidate op's numbers under this process's kernel settings, to hold against another
setting's: oneDNN on or off, oneDNN's instruction set (`ONEDNN_MAX_CPU_ISA=AVX2` runs the
kernels an AVX2-only CPU gets on any newer x86 CPU).

For each op (both strides, affine batch norms, training mode) and for one small supernet of
each family: the output and the gradient of `sum(output * upstream)` with respect to the
input and every trainable weight (alphas included), on inputs, weights and upstream drawn
from a seeded numpy generator (no TensorFlow random state: two processes agree exactly).
TensorFlow's own Eigen kernels (oneDNN off) are the reference: a kernel that gets a
dilation, a padding or a stride wrong differs by the size of the values, while two correct
float32 kernels differ by summation order (measured here: under 1e-5 of the largest value).

    python -m tfnas.numerics OUT.npz     # writes this process's numbers
    python tools/cpu_report.py --check_numerics   # this setting against oneDNN off
"""

import os
import subprocess
import sys
import tempfile

import numpy as np

TOLERANCE = 1e-4  # of the largest magnitude of each array (module docstring)
SKIPPED = ("noise", "none")  # fresh random draws per call; zeros


def _randomize(layer, rng):
    for w in layer.trainable_weights:
        value = rng.normal(size=tuple(w.shape)) * 0.5
        if "gamma" in w.path or "scale" in w.path:
            value = 1.0 + 0.2 * value
        w.assign(value.astype("float32"))


def _value_and_grads(layer, x, rng, call):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = call(x)
        upstream = tf.constant(rng.normal(size=tuple(y.shape)).astype("float32"))
        loss = tf.reduce_sum(y * upstream)
    weights = list(layer.trainable_weights)
    grads = tape.gradient(loss, [x] + weights)
    out = {"out": y.numpy(), "d_input": grads[0].numpy()}
    for i, (w, g) in enumerate(zip(weights, grads[1:])):
        # by position and own name: Keras numbers layer names per process (sep_conv_3x3_2),
        # so paths differ between processes that built other layers before
        out[f"d_{i:04d}_{w.name}"] = tf.convert_to_tensor(g).numpy()
    return out


def op_results(seed=0, channels=4, size=8):
    """{"op/stride/array": ndarray} for every registered op but `SKIPPED`."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tfnas.ops import OPS, build_op  # pylint: disable=import-outside-toplevel
    results = {}
    for i, name in enumerate(OPS.names()):
        if name in SKIPPED:
            continue
        for stride in (1, 2):
            rng = np.random.default_rng([seed, i, stride])
            op = build_op(name, channels, stride, True, pool_bn=True)
            height = size + 1 if stride == 2 else size  # odd sizes at stride 2 too
            x = tf.constant(rng.normal(size=(2, height, size, channels)).astype("float32"))
            results.update(_numbers(op, x, rng, f"{name}/s{stride}"))
    return results


def _numbers(layer, x, rng, prefix):
    """`layer` built on `x`, its weights drawn from `rng`: {prefix/array: ndarray}."""
    layer(x, training=True)
    _randomize(layer, rng)
    arrays = _value_and_grads(layer, x, rng, lambda t: layer(t, training=True))
    return {f"{prefix}/{k}": v for k, v in arrays.items()}


def supernet_results(seed=0):
    """{"family/array": ndarray} for a DARTS (C4, 3 cells) and an NB201 (C4, N1) supernet."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tfnas.supernet import build_supernet  # pylint: disable=import-outside-toplevel
    results = {}
    for i, (space, layers) in enumerate((("darts", 3), ("nb201", 1))):
        rng = np.random.default_rng([seed, 100 + i])
        net = build_supernet(space, channels=4, layers=layers, input_shape=(16, 16, 3))
        x = tf.constant(rng.normal(size=(2, 16, 16, 3)).astype("float32"))
        results.update(_numbers(net, x, rng, space))
    return results


def results(seed=0):
    """Every op's and both supernets' numbers (see the module docstring)."""
    return {**op_results(seed), **supernet_results(seed)}


def compare(got, want):
    """{key: largest |got - want| / largest |want|} over the keys of `want`.

    Raises:
        ValueError: a key missing from `got`, or of another shape.
    """
    errors = {}
    for key, ref in want.items():
        if key not in got or got[key].shape != ref.shape:
            raise ValueError(f"{key}: missing or of another shape in the compared results")
        scale = max(float(np.max(np.abs(ref))), 1e-30)
        errors[key] = float(np.max(np.abs(got[key] - ref))) / scale
    return errors


def worst_per_op(errors):
    """{"op/stride" or family: (largest error, its array)}."""
    worst = {}
    for key, err in errors.items():
        cut = min(i for i in (key.find("/d_"), key.find("/out"), len(key)) if i >= 0)
        group, array = key[:cut], key[cut + 1:]
        if err >= worst.get(group, (-1.0, ""))[0]:
            worst[group] = (err, array)
    return worst


def results_in_subprocess(env_changes, seed=0):
    """`results(seed)` computed by a fresh Python with `env_changes` applied to this
    environment (a value None removes the variable)."""
    env = dict(os.environ)
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "numbers.npz")
        proc = subprocess.run([sys.executable, "-m", "tfnas.numerics", path, str(seed)],
                              env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"tfnas.numerics failed under {env_changes}:\n"
                               f"{proc.stderr[-2000:]}")
        with np.load(path) as f:
            return {k: f[k] for k in f.files}


def main(argv):
    path, seed = argv[0], int(argv[1]) if len(argv) > 1 else 0
    np.savez(path, **results(seed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
