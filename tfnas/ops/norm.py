"""Batch normalization with the fused kernel and PyTorch's conventions.

Keras 3's `BatchNormalization` computes moments and normalizes in separate ops; on this CPU
that was ~40% of a supernet step (PERF_NOTES). This layer calls the fused kernel instead and
keeps PyTorch semantics (eps 1e-5, momentum 0.1, unbiased running variance), so search cells
built with `affine=False` match the reference's `BatchNorm2d(C, affine=False)`.
"""

import contextlib

import keras
import tensorflow as tf

from tfnas.ops.registry import serializable

_FROZEN = [0]  # > 0: training-mode BN leaves its running statistics alone


@contextlib.contextmanager
def running_stats_frozen():
    """Training-mode BN (batch statistics) whose running statistics are not updated by the
    calls made (or traced) inside: the valid pass of DARTS's second order at the virtual
    weights, whose statistics the reference computes on a copy of the model and throws
    away. A process-wide switch read when a call is traced, not a thread-local one
    (MirroredStrategy traces each replica's function in a thread of its own)."""
    _FROZEN[0] += 1
    try:
        yield
    finally:
        _FROZEN[0] -= 1


def stats_frozen():
    """Whether training-mode BN calls made now leave the running statistics alone."""
    return _FROZEN[0] > 0


_BYPASSED = [0]  # > 0: BN layers traced now are identities (times their OutputScale)


@contextlib.contextmanager
def bypassed():
    """BN layers called (or traced) inside are identities, only their `OutputScale` still
    multiplies: the BN-free network SynFlow scores (`tfnas.derive.proxies`). Read at trace
    time, as `running_stats_frozen`."""
    _BYPASSED[0] += 1
    try:
        yield
    finally:
        _BYPASSED[0] -= 1


class OutputScale:
    """A scalar that multiplies a layer's output, folded into its last BN: the kernel's
    scale and offset become `scale * s`, `offset * s`, so `s * op(x)` costs no extra pass
    over the output, forward or backward (the gradient of `s` is the sum of the scale's
    gradient, which the fused BN gradient computes anyway). A plain object rather than a
    tensor, so Keras's autocast leaves the (float32) value alone under a mixed policy."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


@serializable
class BatchNorm(keras.layers.Layer):
    """Fused NHWC batch normalization.

    Args:
        affine: learn a scale and an offset (False in search cells, as the reference).
        momentum: PyTorch-style momentum of the running statistics (0.1).
        epsilon: added to the variance (1e-5, PyTorch's default).
        synchronized: under a multi-replica strategy, compute batch statistics over the global
            batch (one all-reduce per layer) so training matches a single-device run.
    """

    def __init__(self, affine=True, momentum=0.1, epsilon=1e-5, synchronized=False, **kwargs):
        # Under a mixed policy the kernel takes compute-dtype x with float32 scale, offset
        # and statistics: the variables are not autocast.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNorm momentum must be in [0, 1], got {momentum}")
        self.affine = bool(affine)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.synchronized = bool(synchronized)

    def build(self, input_shape):
        c = int(input_shape[-1])
        if self.affine:
            self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(
            shape=(c,), initializer="zeros", trainable=False, name="moving_mean")
        self.moving_variance = self.add_weight(
            shape=(c,), initializer="ones", trainable=False, name="moving_variance")

    def _scale_offset(self, c, scale_by=None):
        if scale_by is not None:
            s = tf.cast(scale_by.value, tf.float32)
            if self.affine:
                return self.gamma.value * s, self.beta.value * s
            return tf.broadcast_to(s, (c,)), tf.zeros((c,), tf.float32)
        if self.affine:
            return self.gamma.value, self.beta.value
        return tf.ones((c,), tf.float32), tf.zeros((c,), tf.float32)

    def _update(self, mean, var):
        if stats_frozen():
            return
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * (1.0 - m) + mean * m)
        self.moving_variance.assign(self.moving_variance * (1.0 - m) + var * m)

    def call(self, x, training=False, scale_by=None):
        """`scale_by`: an `OutputScale` multiplying the output (None: 1)."""
        if _BYPASSED[0]:
            return x if scale_by is None else tf.cast(scale_by.value, x.dtype) * x
        c = x.shape[-1]
        scale, offset = self._scale_offset(c, scale_by)
        if not training:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, scale, offset, mean=self.moving_mean.value,
                variance=self.moving_variance.value, epsilon=self.epsilon, is_training=False)
            return y
        ctx = tf.distribute.get_replica_context()
        if self.synchronized and ctx is not None and ctx.num_replicas_in_sync > 1:
            return self._sync_call(x, scale, offset, ctx)
        # The kernel updates the running statistics itself (exponential_avg_factor), with the
        # Bessel-corrected batch variance as PyTorch's running_var: 2 assigns and no extra
        # arithmetic ops per layer, which matters for tracing time (~1,200 BNs at C8 L5).
        y, mean, var, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=self.moving_mean.value,
            variance=self.moving_variance.value, epsilon=self.epsilon,
            exponential_avg_factor=self.momentum, data_format="NHWC", is_training=True)
        if not stats_frozen():
            self.moving_mean.assign(mean)
            self.moving_variance.assign(var)
        return y

    def _sync_call(self, x_in, scale, offset, ctx):
        x = tf.cast(x_in, tf.float32)  # statistics in float32 under a mixed policy
        n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), x.dtype)
        s = tf.reduce_sum(x, axis=[0, 1, 2])
        ss = tf.reduce_sum(tf.square(x), axis=[0, 1, 2])
        s, ss, n = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [s, ss, n])
        mean = s / n
        var = tf.maximum(ss / n - tf.square(mean), 0.0)
        self._update(mean, var * n / tf.maximum(n - 1.0, 1.0))
        inv = tf.math.rsqrt(var + self.epsilon) * scale
        return tf.cast(x * inv + (offset - mean * inv), x_in.dtype)

    def get_config(self):
        return {**super().get_config(), "affine": self.affine, "momentum": self.momentum,
                "epsilon": self.epsilon, "synchronized": self.synchronized}
