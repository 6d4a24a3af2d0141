"""Convolution helpers checked against shift-and-sum references (forward and gradients).

TensorFlow 2.21's oneDNN gradient kernels of a dilated DepthwiseConv2dNative ignore the
dilation (tfnas.ops.conv): these tests compare against gradients computed from slices and
products only, so a kernel that gets the dilation wrong cannot pass them.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfnas.ops import conv
from tfnas.ops.layers import FactorizedReduce


_shift_and_sum = conv.shift_and_sum_depthwise


_value_and_grads = conv.value_and_grads


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
def test_dilated_depthwise_conv_and_its_gradients(stride, k, size, native, monkeypatch):
    if not native:
        monkeypatch.setattr(conv, "_onednn_cpu", lambda: False)
    rng = np.random.default_rng(k * 100 + size * 10 + stride)
    x = tf.constant(rng.normal(size=(2, size, size + 2, 3)), tf.float32)
    kernel = tf.constant(rng.normal(size=(k, k, 3, 1)), tf.float32)
    ref = _shift_and_sum(x, kernel, stride, 2)
    upstream = tf.constant(rng.normal(size=ref.shape), tf.float32)
    got = _value_and_grads(lambda a, b: conv.depthwise_conv2d(a, b, stride, 2), x, kernel,
                           upstream)
    want = _value_and_grads(lambda a, b: _shift_and_sum(a, b, stride, 2), x, kernel, upstream)
    for name, g, r in zip(("output", "d/dx", "d/dkernel"), got, want):
        assert g.shape == r.shape, name
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * np.abs(r).max(), err_msg=name)


def test_the_native_dilated_path_is_taken_where_it_is_checked():
    x = tf.zeros((1, 8, 8, 4))
    if not conv._onednn_cpu():
        pytest.skip("oneDNN off or a GPU visible: the native dilated kernel is not used")
    assert conv._can_run_native_dilated(x, 3, 2)
    assert not conv._can_run_native_dilated(tf.zeros((1, 7, 8, 4)), 3, 2)  # 7 % 2
    assert not conv._can_run_native_dilated(tf.zeros((1, 8, 8, 4), tf.float16), 3, 2)

    @tf.function
    def grads(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = conv.depthwise_conv2d(x, kernel, 1, 2)
        return tape.gradient(y, x)
    ops = {op.type for op in grads.get_concrete_function(
        x, tf.zeros((3, 3, 4, 1))).graph.get_operations()}
    assert "DepthwiseConv2dNativeBackpropInput" not in ops  # the kernel that drops dilation


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 9, 3), (1, 1, 1, 2)])
def test_subsample2_is_every_second_pixel(shape):
    x = tf.random.normal(shape)
    np.testing.assert_array_equal(conv.subsample2(x).numpy(), x[:, ::2, ::2, :].numpy())
    up = tf.random.normal(x[:, ::2, ::2, :].shape)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        a, b = tf.reduce_sum(conv.subsample2(x) * up), tf.reduce_sum(x[:, ::2, ::2, :] * up)
    np.testing.assert_array_equal(tape.gradient(a, x).numpy(), tape.gradient(b, x).numpy())


@pytest.mark.parametrize("size", [8, 7])
def test_factorized_reduce_is_two_shifted_1x1_convs(size):
    rng = np.random.default_rng(size)
    x = tf.constant(rng.normal(size=(2, size, size + 1, 6)), tf.float32)
    op = FactorizedReduce(4)
    op(x)

    def reference(x):
        r = tf.nn.relu(x)
        shifted = tf.pad(r[:, 1::2, 1::2, :], [[0, 0], [0, size % 2], [0, (size + 1) % 2],
                                                [0, 0]])
        y = tf.concat([tf.einsum("bhwc,cd->bhwd", r[:, ::2, ::2, :], op.k1[0, 0]),
                       tf.einsum("bhwc,cd->bhwd", shifted, op.k2[0, 0])], axis=-1)
        return op.bn(y, training=False)

    def both(fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y * tf.cos(tf.range(tf.size(y), dtype=tf.float32)).numpy()
                                 .reshape(y.shape))
        return [y.numpy()] + [g.numpy() for g in tape.gradient(loss, [x, op.k1, op.k2])]
    got, want = both(lambda t: op(t, training=False)), both(reference)
    assert got[0].shape == (2, -(-size // 2), -(-(size + 1) // 2), 4)
    for name, g, r in zip(("output", "d/dx", "d/dk1", "d/dk2"), got, want):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5, err_msg=name)


def test_dilated_depthwise_gradients_in_bfloat16():
    """The mixed_bfloat16 search takes the same native path (where oneDNN runs it)."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 8, 8, 4)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, 4, 1)), tf.float32)
    upstream = tf.constant(rng.normal(size=(2, 8, 8, 4)), tf.float32)
    want = _value_and_grads(lambda a, b: _shift_and_sum(a, b, 1, 2), x, kernel, upstream)
    got = _value_and_grads(
        lambda a, b: tf.cast(conv.depthwise_conv2d(tf.cast(a, tf.bfloat16),
                                                   tf.cast(b, tf.bfloat16), 1, 2), tf.float32),
        x, kernel, upstream)
    for name, g, r in zip(("output", "d/dx", "d/dkernel"), got, want):
        np.testing.assert_allclose(g, r, atol=0.03 * np.abs(r).max(), err_msg=name)


def test_gradient_gap_is_small_here_and_large_for_the_undilated_kernel(monkeypatch):
    """What tools/gpu_check.py reports on a GPU: ~1e-7 for right gradients, ~1 for a kernel
    that drops the dilation in its gradient (here: the native kernel differentiated)."""
    assert conv.gradient_gap() < 1e-5
    if not conv._onednn_cpu():
        pytest.skip("the native dilated kernel runs on oneDNN CPUs only")
    monkeypatch.setattr(conv, "_dilated_same",
                        lambda x, kernel, dilation: conv._native(x, kernel, 1, "SAME", dilation))
    assert conv.gradient_gap() > 0.1
