"""Candidate operations as small Keras layers, registered by name.

Every op maps an NHWC tensor with `channels` channels to one with `channels` channels, at
stride 1 or 2. Convolutions pad symmetrically like the PyTorch reference (TF's "SAME" pads
only bottom/right at stride 2), so reduction cells compute what the reference computes.
Kernels are initialised like PyTorch's default (uniform in +-1/sqrt(fan_in)).
"""

import keras
import numpy as np
import tensorflow as tf

from tfnas.ops.conv import conv2d, depthwise_conv2d, subsample2
from tfnas.ops.norm import BatchNorm
from tfnas.ops.registry import OPS, serializable
from tfnas.ops.taps import relu, tap

def torch_init():
    """PyTorch's default conv init (uniform in +-1/sqrt(fan_in)). A new instance per weight:
    an instance made at import time would draw its seed before `set_random_seed`, and runs
    with the same seed would start from different weights in different processes."""
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")


def _inverse_window_counts(h, w):
    """9 / (real pixels in each 3x3 stride-2 window with symmetric padding 1), [1, H', W', 1]:
    turns avg_pool's sum/9 into the mean over real pixels. Computed once in numpy from the
    static size instead of per call in the graph."""
    def counts(n):
        starts = np.arange(0, n, 2) - 1
        return np.minimum(starts + 3, n) - np.maximum(starts, 0)
    return (9.0 / np.outer(counts(h), counts(w))).astype(np.float32)[None, :, :, None]


class OpLayer(keras.layers.Layer):
    """Base of the candidate ops: holds channels/stride/affine and their config.

    An op whose output comes out of a BN sets `folds_scale`: it takes `scale_by` (an
    `OutputScale`) and returns `scale_by * op(x)` with the product folded into that BN
    (what a mixed op's weight costs then: nothing but a per-channel scale)."""

    folds_scale = False

    def __init__(self, channels, stride=1, affine=True, **kwargs):
        super().__init__(**kwargs)
        if int(channels) <= 0:
            raise ValueError(f"{type(self).__name__}: channels must be positive, got {channels}")
        if stride not in (1, 2):
            raise ValueError(f"{type(self).__name__}: stride must be 1 or 2, got {stride}")
        self.channels, self.stride, self.affine = int(channels), int(stride), bool(affine)

    def build(self, input_shape):
        pass  # ops without weights; overriding build keeps Keras from a symbolic build pass

    def kernel(self, shape, name):
        return self.add_weight(shape=shape, initializer=torch_init(), name=name)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        s = self.stride
        return (n, None if h is None else -(-h // s), None if w is None else -(-w // s),
                self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "stride": self.stride,
                "affine": self.affine}


@serializable
class Zero(OpLayer):
    """The `none` op: zeros, spatially subsampled at stride 2."""

    def call(self, x, training=False):
        return (subsample2(x) if self.stride == 2 else x) * 0.0


@serializable
class Identity(OpLayer):
    def call(self, x, training=False):
        return x


@serializable
class Noise(OpLayer):
    """The `noise` op of S4: N(0, 1) shaped like the (subsampled) input."""

    def __init__(self, channels, stride=1, affine=True, seed=None, **kwargs):
        super().__init__(channels, stride, affine, **kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=False):
        shape = tf.shape(x[:, ::self.stride, ::self.stride, :])
        return keras.random.normal(shape, seed=self.seed_generator, dtype=x.dtype)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@serializable
class FactorizedReduce(OpLayer):
    """ReLU, two 1x1 stride-2 convs (the second shifted by one pixel), concat, BN.

    Odd sizes are handled by padding the shifted branch, so both halves have ceil(H/2) rows.
    """

    def __init__(self, channels, stride=2, affine=True, **kwargs):
        super().__init__(channels, 2, affine, **kwargs)
        if self.channels % 2:
            raise ValueError(f"FactorizedReduce needs even channels, got {channels}")
        self.bn = BatchNorm(affine=self.affine, name="bn")

    def build(self, input_shape):
        c_in, half = int(input_shape[-1]), self.channels // 2
        self.k1 = self.kernel((1, 1, c_in, half), "conv_1")
        self.k2 = self.kernel((1, 1, c_in, half), "conv_2")
        self.bn.build(self.compute_output_shape(input_shape))

    folds_scale = True

    def call(self, x, training=False, scale_by=None):
        x = relu(x)
        h, w = x.shape[1], x.shape[2]
        if h is None or w is None:
            shifted = tf.pad(x[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])
            y = tap("conv", tf.concat([conv2d(x, self.k1, 2), conv2d(shifted, self.k2, 2)],
                                      axis=-1))
            return self.bn(y, training=training, scale_by=scale_by)
        # Both 1x1 convs as one 2x2 stride-2 conv: k1 on the window's top-left pixel into the
        # first half of the channels, k2 on its bottom-right one into the second (the
        # other taps are exact zeros). Four times the multiply-adds, but no strided slice,
        # pad and concat (nor their gradients): forward + backward 3.2x faster at
        # [32, 32, 32, 16] on this CPU, the same outputs. Odd sizes: a zero row / column
        # at the bottom / right, as before.
        if h % 2 or w % 2:
            x = tf.pad(x, [[0, 0], [0, h % 2], [0, w % 2], [0, 0]])
        half = self.channels // 2
        kernel = (tf.pad(self.k1, [[0, 1], [0, 1], [0, 0], [0, half]])
                  + tf.pad(self.k2, [[1, 0], [1, 0], [0, 0], [half, 0]]))
        y = tap("conv", tf.nn.conv2d(x, tf.cast(kernel, x.dtype), 2, "VALID"))
        return self.bn(y, training=training, scale_by=scale_by)


@serializable
class ReLUConvBN(OpLayer):
    """ReLU -> KxK conv -> BN (cell preprocessing and the NB201 `nor_conv_*` ops)."""

    def __init__(self, channels, stride=1, affine=True, kernel_size=1, **kwargs):
        super().__init__(channels, stride, affine, **kwargs)
        self.kernel_size = int(kernel_size)
        self.bn = BatchNorm(affine=self.affine, name="bn")

    def build(self, input_shape):
        k = self.kernel_size
        self.k = self.kernel((k, k, int(input_shape[-1]), self.channels), "conv")
        self.bn.build(self.compute_output_shape(input_shape))

    folds_scale = True

    def call(self, x, training=False, scale_by=None):
        return self.bn(tap("conv", conv2d(relu(x), self.k, self.stride)), training=training,
                       scale_by=scale_by)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@serializable
class DilConv(OpLayer):
    """ReLU -> depthwise KxK (dilated) -> 1x1 -> BN. With `repeats=2` and dilation 1 it is
    the DARTS separable conv (the second block always at stride 1)."""

    def __init__(self, channels, stride=1, affine=True, kernel_size=3, dilation=1, repeats=1,
                 **kwargs):
        super().__init__(channels, stride, affine, **kwargs)
        self.kernel_size, self.dilation, self.repeats = int(kernel_size), int(dilation), int(repeats)
        self.bns = [BatchNorm(affine=self.affine, name=f"bn_{i}") for i in range(self.repeats)]

    def build(self, input_shape):
        k, c_in, c = self.kernel_size, int(input_shape[-1]), self.channels
        self.dw, self.pw = [], []
        out_shape = self.compute_output_shape(input_shape)
        for i in range(self.repeats):
            self.dw.append(self.kernel((k, k, c_in if i == 0 else c, 1), f"depthwise_{i}"))
            self.pw.append(self.kernel((1, 1, c_in if i == 0 else c, c), f"pointwise_{i}"))
            self.bns[i].build(out_shape)

    folds_scale = True

    def call(self, x, training=False, scale_by=None):
        for i in range(self.repeats):
            stride = self.stride if i == 0 else 1
            x = tap("conv", depthwise_conv2d(relu(x), self.dw[i], stride, self.dilation))
            x = self.bns[i](tap("conv", conv2d(x, self.pw[i])), training=training,
                            scale_by=scale_by if i == self.repeats - 1 else None)
        return x

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size,
                "dilation": self.dilation, "repeats": self.repeats}


@serializable
class Pool(OpLayer):
    """3x3 max or average pooling (average excludes padding), optionally followed by the
    affine-free BN that the DARTS search cell adds after pooling ops."""

    def __init__(self, channels, stride=1, affine=True, kind="max", bn=False, **kwargs):
        super().__init__(channels, stride, affine, **kwargs)
        if kind not in ("max", "avg"):
            raise ValueError(f"Pool kind must be 'max' or 'avg', got {kind!r}")
        self.kind, self.use_bn = kind, bool(bn)
        self.bn = BatchNorm(affine=self.affine, name="bn") if self.use_bn else None
        self.folds_scale = self.use_bn

    def build(self, input_shape):
        if self.bn is not None:
            self.bn.build(self.compute_output_shape(input_shape))

    def _pool(self, x):
        s = self.stride
        if s == 1:  # SAME at stride 1 is symmetric; avg_pool's SAME excludes the padding.
            fn = tf.nn.max_pool2d if self.kind == "max" else tf.nn.avg_pool2d
            return fn(x, 3, 1, "SAME")
        pads = [[0, 0], [1, 1], [1, 1], [0, 0]]
        if self.kind == "max":
            # the lowest value of the compute dtype (float16's is -65504, not -3e38)
            return tf.nn.max_pool2d(tf.pad(x, pads, constant_values=x.dtype.min), 3, 2, "VALID")
        # Symmetric padding with the count of real pixels per window (count_include_pad=False).
        total = tf.nn.avg_pool2d(tf.pad(x, pads), 3, 2, "VALID")
        return total * tf.constant(_inverse_window_counts(x.shape[1], x.shape[2]), x.dtype)

    def call(self, x, training=False, scale_by=None):
        y = self._pool(x)
        if self.bn is not None:
            return self.bn(y, training=training, scale_by=scale_by)
        return y if scale_by is None else y * tf.cast(scale_by.value, y.dtype)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "bn": self.use_bn}


# --- the registry: name -> builder(channels, stride, affine, pool_bn, **layer_kwargs) ---------

OPS.register("none", lambda c, s, a, pb, **kw: Zero(c, s, a, **kw))
OPS.register("noise", lambda c, s, a, pb, **kw: Noise(c, s, a, **kw))
OPS.register("skip_connect", lambda c, s, a, pb, **kw: Identity(c, 1, a, **kw) if s == 1
             else FactorizedReduce(c, 2, a, **kw))
for _k in ("max", "avg"):
    OPS.register(f"{_k}_pool_3x3", lambda c, s, a, pb, k=_k, **kw: Pool(
        c, s, a, kind=k, bn=pb, **kw))
for _k in (3, 5):
    OPS.register(f"sep_conv_{_k}x{_k}", lambda c, s, a, pb, k=_k, **kw: DilConv(
        c, s, a, kernel_size=k, dilation=1, repeats=2, **kw))
    OPS.register(f"dil_conv_{_k}x{_k}", lambda c, s, a, pb, k=_k, **kw: DilConv(
        c, s, a, kernel_size=k, dilation=2, repeats=1, **kw))
for _k in (1, 3):
    OPS.register(f"nor_conv_{_k}x{_k}", lambda c, s, a, pb, k=_k, **kw: ReLUConvBN(
        c, s, a, kernel_size=k, **kw))
