"""Convolutions with PyTorch's symmetric padding, and a dilated depthwise convolution whose
gradient is right.

TensorFlow 2.21's oneDNN kernels for the gradients of a dilated `DepthwiseConv2dNative`
(`..BackpropInput`, `..BackpropFilter`) ignore `dilations`: they return the gradients of the
undilated convolution (equal to them to the bit; the forward kernel does honour the
dilation). Without oneDNN the native kernel rejects dilations altogether. So no
`DepthwiseConv2dNative` here is ever differentiated with a dilation:

- stride 2 with an even dilation and even padding (DARTS's `dil_conv_*` in reduction cells)
  reads only every second row and column: subsample the input first (a reshape and a
  contiguous slice, several times faster than a strided slice) and convolve at stride 1 with
  half the dilation; the same numbers with a quarter of the work;
- stride 1 under oneDNN (float32 / bfloat16, odd kernels, sizes divisible by the
  dilation): the native forward with our own gradient: the input gradient is the same
  convolution of the output gradient with the flipped kernel, the kernel gradient an
  undilated filter gradient over the dilation's phases (the input split into d x d
  interleaved sub-images, which the dilated kernel convolves independently);
- anything else: `tf.nn.depthwise_conv2d` with `dilations` (space-to-batch around an
  undilated kernel), TensorFlow's own path.
"""

import functools

import tensorflow as tf


def _pad(kernel, dilation):
    return (kernel - 1) * dilation // 2


def _conv_input(x, kernel, stride, dilation):
    """Returns (input, padding): 'SAME' at stride 1 (symmetric for odd kernels); at stride 2
    PyTorch's symmetric padding as an explicit tf.pad + 'VALID'. The bottom/right pad is
    trimmed by the rows the strided window never reaches, which changes nothing in the output
    but keeps oneDNN's depthwise backprop (and TF's EXPLICIT-padding gradient) from failing on
    sizes where (H + 2p - k_eff) is odd."""
    if kernel == 1:
        return x, "VALID"
    if stride == 1:
        return x, "SAME"
    p = _pad(kernel, dilation)
    k_eff = (kernel - 1) * dilation + 1
    pads = [[0, 0]]
    for size in (x.shape[1], x.shape[2]):
        extra = 0 if size is None else (size + 2 * p - k_eff) % stride
        pads.append([p, p - extra])
    return tf.pad(x, pads + [[0, 0]]), "VALID"


def conv2d(x, kernel, stride=1, dilation=1):
    x, pad = _conv_input(x, kernel.shape[0], stride, dilation)
    return tf.nn.conv2d(x, kernel, strides=stride, padding=pad, dilations=dilation)


def _static_hw(x):
    h, w = x.shape[1], x.shape[2]
    return (None, None) if h is None or w is None else (int(h), int(w))


def subsample2(x):
    """`x[:, ::2, ::2, :]` as a reshape and a contiguous slice (odd sizes padded by one row /
    column, which the subsampling drops). TensorFlow's strided slice and its gradient are
    3-5x slower on this CPU (fwd + bwd at [64, 32, 32, 32]: 11.8 ms vs 2.5 ms)."""
    h, w = _static_hw(x)
    c = x.shape[-1]
    if h is None or c is None:
        return x[:, ::2, ::2, :]
    if h % 2 or w % 2:
        x = tf.pad(x, [[0, 0], [0, h % 2], [0, w % 2], [0, 0]])
        h, w = h + h % 2, w + w % 2
    r = tf.reshape(x, [-1, h // 2, 2, w // 2, 2 * c])
    # tf.slice, not r[...]: the gradient of a Slice is a Pad, of a StridedSlice a slower
    # StridedSliceGrad (0.8 ms a call at C8 L5 B32)
    return tf.reshape(tf.slice(r, [0, 0, 0, 0, 0], [-1, -1, 1, -1, c]), [-1, h // 2, w // 2, c])


def _phases(x, d, h, w):
    """[B, H, W, C] -> [d*d*B, H/d, W/d, C]: the d x d interleaved sub-images of x."""
    c = x.shape[-1]
    t = tf.reshape(x, [-1, h // d, d, w // d, d, c])
    t = tf.transpose(t, [2, 4, 0, 1, 3, 5])
    return tf.reshape(t, [-1, h // d, w // d, c])


@functools.lru_cache(maxsize=None)
def _onednn_cpu():
    """oneDNN is on and the machine has no GPU: the native dilated forward kernel is the one
    tests/test_conv.py checks (physical devices: asking for logical ones would fix the
    device configuration before a caller sets it)."""
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=import-outside-toplevel
    return bool(_pywrap_util_port.IsMklEnabled()) and not tf.config.list_physical_devices("GPU")


def _native(x, kernel, stride, padding, dilation=1):
    return tf.raw_ops.DepthwiseConv2dNative(
        input=x, filter=kernel, strides=[1, stride, stride, 1], padding=padding,
        dilations=[1, dilation, dilation, 1])


def _dilated_same(x, kernel, dilation):
    """Stride-1 'SAME' dilated depthwise conv: native forward, our gradient (module doc)."""
    h, w = _static_hw(x)

    @tf.custom_gradient
    def run(x, kernel):
        # this graph's own copies: inside a tf.cond branch a tensor of the enclosing graph
        # (a kernel value passed in) cannot be captured by the gradient
        x, kernel = tf.identity(x), tf.identity(kernel)

        def grad(dy):
            dx = _dilated_same(dy, tf.reverse(kernel, [0, 1]), dilation)
            dk = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
                input=_phases(x, dilation, h, w), filter_sizes=tf.shape(kernel),
                out_backprop=_phases(dy, dilation, h, w), strides=[1, 1, 1, 1], padding="SAME")
            return dx, dk
        return _native(x, kernel, 1, "SAME", dilation), grad
    return run(x, tf.convert_to_tensor(kernel))


def _can_run_native_dilated(x, k, dilation):
    h, w = _static_hw(x)
    return (k % 2 == 1 and h is not None and h % dilation == 0 and w % dilation == 0
            and x.dtype in (tf.float32, tf.bfloat16) and _onednn_cpu())


def depthwise_conv2d(x, kernel, stride=1, dilation=1):
    """Depthwise conv with PyTorch's symmetric padding, dilation honoured in the gradient
    too (module doc)."""
    k = int(kernel.shape[0])
    if dilation == 1:
        x, pad = _conv_input(x, k, stride, 1)
        return _native(x, kernel, stride, pad)
    if stride == 2 and dilation % 2 == 0 and _pad(k, dilation) % 2 == 0:
        return depthwise_conv2d(subsample2(x), kernel, 1, dilation // 2)
    if stride > 1:  # every stride-th pixel of the stride-1 result (symmetric padding)
        return depthwise_conv2d(x, kernel, 1, dilation)[:, ::stride, ::stride, :]
    if _can_run_native_dilated(x, k, dilation):
        return _dilated_same(x, kernel, dilation)
    return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME", dilations=[dilation] * 2)


def shift_and_sum_depthwise(x, kernel, stride=1, dilation=1):
    """`depthwise_conv2d` as a sum of shifted, scaled slices of the padded input: slow, but
    made of ops whose gradients involve no convolution kernel. The reference that
    tests/test_conv.py and tools/gpu_check.py compare against."""
    k = int(kernel.shape[0])
    p = _pad(k, dilation)
    h, w = _static_hw(x)
    xp = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
    span = (k - 1) * dilation + 1
    ho, wo = (h + 2 * p - span) // stride + 1, (w + 2 * p - span) // stride + 1
    out = 0.0
    for i in range(k):
        for j in range(k):
            r, c = i * dilation, j * dilation
            window = xp[:, r:r + (ho - 1) * stride + 1:stride, c:c + (wo - 1) * stride + 1:stride]
            out = out + window * kernel[i, j, :, 0]
    return out


def value_and_grads(fn, x, kernel, upstream):
    """[fn(x, kernel), d/dx, d/dkernel] of sum(fn(x, kernel) * upstream), traced (numpy)."""
    @tf.function
    def run():
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = fn(x, kernel)
            loss = tf.reduce_sum(y * upstream)
        return [y] + tape.gradient(loss, [x, kernel])
    return [t.numpy() for t in run()]


def gradient_gap(size=8, channels=3, dtype=tf.float32, seed=0):
    """The largest relative gap between `depthwise_conv2d`'s output / input gradient / kernel
    gradient and the shift-and-sum reference's, over dilation 2, stride 1 and 2, kernels 3
    and 5, on the current default device (a wrong dilation in a gradient shows as ~1)."""
    rng = tf.random.Generator.from_seed(seed)
    worst = 0.0
    for stride in (1, 2):
        for k in (3, 5):
            x = rng.normal((2, size, size + 2, channels))
            kernel = rng.normal((k, k, channels, 1))
            up = rng.normal(shift_and_sum_depthwise(x, kernel, stride, 2).shape)
            got, want = (value_and_grads(
                lambda a, b, fn=fn: tf.cast(fn(tf.cast(a, dtype), tf.cast(b, dtype), stride, 2),
                                            tf.float32), x, kernel, up)
                for fn in (depthwise_conv2d, shift_and_sum_depthwise))
            for g, r in zip(got, want):
                worst = max(worst, float(abs(g - r).max()) / max(float(abs(r).max()), 1e-12))
    return worst
