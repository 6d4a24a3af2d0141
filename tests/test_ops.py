"""Every registered op, found by iterating the registry."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas.ops import OPS, BatchNorm, Pool, build_op

CASES = [(name, stride, affine) for name in OPS.names() for stride in (1, 2)
         for affine in (True, False)]


@pytest.mark.parametrize("name,stride,affine", CASES)
def test_op_contract(name, stride, affine):
    c = 8
    op = build_op(name, c, stride, affine, pool_bn=True)
    x = tf.random.normal((2, 9 if stride == 2 else 8, 8, c))  # odd size at stride 2 too
    y = op(x, training=True)
    expect = (2, -(-x.shape[1] // stride), 8 // stride, c)
    assert tuple(y.shape) == expect
    assert tuple(op.compute_output_shape(x.shape)) == expect

    # config round-trip: same class, same config, same number of weights
    clone = type(op).from_config(op.get_config())
    assert clone.get_config() == op.get_config()
    clone(x)
    assert len(clone.weights) == len(op.weights)
    # serialization through Keras's registry (what .keras files use)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(op))
    assert type(restored) is type(op)

    # eager equals tf.function (inference mode; noise is random by definition)
    if name != "noise":
        eager = op(x, training=False)
        graph = tf.function(lambda t: op(t, training=False))(x)
        np.testing.assert_allclose(eager.numpy(), graph.numpy(), atol=1e-5)

    # one gradient step runs and changes the weights (if any)
    if op.trainable_weights:
        opt = keras.optimizers.SGD(0.1)
        before = [w.numpy().copy() for w in op.trainable_weights]
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(op(x, training=True)))
        grads = tape.gradient(loss, op.trainable_weights)
        assert all(g is not None for g in grads)
        opt.apply_gradients(zip(grads, op.trainable_weights))
        assert any(not np.allclose(b, w.numpy()) for b, w in zip(before, op.trainable_weights))


def test_pool_bn_and_affine_weights():
    assert isinstance(build_op("max_pool_3x3", 4, 1, False, pool_bn=True).bn, BatchNorm)
    assert build_op("avg_pool_3x3", 4, 1, False, pool_bn=False).bn is None
    sep = build_op("sep_conv_3x3", 4, 1, affine=False)
    sep(tf.zeros((1, 8, 8, 4)))
    assert len(sep.trainable_weights) == 4  # 2x (depthwise, pointwise); BN has no scale/offset
    sep_aff = build_op("sep_conv_3x3", 4, 1, affine=True)
    sep_aff(tf.zeros((1, 8, 8, 4)))
    assert len(sep_aff.trainable_weights) == 8


def test_avg_pool_excludes_padding_like_pytorch():
    x = tf.reshape(tf.range(16, dtype=tf.float32), (1, 4, 4, 1))
    y1 = Pool(1, 1, kind="avg")(x)[0, :, :, 0].numpy()
    assert y1[0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)  # corner: 4 real pixels, not /9
    y2 = Pool(1, 2, kind="avg")(x)[0, :, :, 0].numpy()
    # symmetric padding 1 at stride 2 (PyTorch): window rows/cols {-1,0,1}, {1,2,3}
    assert y2[0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)
    assert y2[1, 1] == pytest.approx(np.mean([5, 6, 7, 9, 10, 11, 13, 14, 15]))
    m2 = Pool(1, 2, kind="max")(-x)[0, :, :, 0].numpy()
    assert m2[0, 0] == 0.0  # padding never wins a max


def test_batchnorm_matches_pytorch_conventions():
    bn = BatchNorm(affine=False)
    x = tf.random.normal((4, 3, 3, 2)) * 3.0 + 1.0
    y = bn(x, training=True).numpy()
    xn = x.numpy()
    mean, var = xn.mean(axis=(0, 1, 2)), xn.var(axis=(0, 1, 2))
    np.testing.assert_allclose(y, (xn - mean) / np.sqrt(var + 1e-5), atol=1e-4)
    unbiased = xn.var(axis=(0, 1, 2), ddof=1)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * mean, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 + 0.1 * unbiased, rtol=1e-4)


def test_bad_stride_and_channels():
    with pytest.raises(ValueError, match="stride must be 1 or 2, got 3"):
        build_op("sep_conv_3x3", 4, 3, True)
    with pytest.raises(ValueError, match="channels must be positive"):
        build_op("sep_conv_3x3", 0, 1, True)


def test_avg_pool_stride2_odd_sizes_match_a_nanmean_reference():
    x = tf.random.normal((2, 7, 9, 3))
    y = Pool(3, 2, kind="avg")(x).numpy()
    xp = np.pad(x.numpy(), ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=np.nan)
    ref = np.array([[np.nanmean(xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :], axis=(1, 2))
                     for j in range(5)] for i in range(4)]).transpose(2, 0, 1, 3)
    np.testing.assert_allclose(y, ref, atol=1e-5)


FOLDING = [(name, stride, affine) for name in OPS.names() for stride in (1, 2)
           for affine in (True, False) if build_op(name, 4, stride, affine).folds_scale]


@pytest.mark.parametrize("name,stride,affine", FOLDING)
def test_a_scale_folded_into_the_last_bn_equals_the_product(name, stride, affine):
    """`op(x, scale_by=OutputScale(w))` is `w * op(x)`: outputs, every gradient (x, w, the
    op's kernels) and the BN statistics, in training and in inference."""
    from tfnas.ops.norm import OutputScale
    keras.utils.set_random_seed(3)
    c = 8
    op = build_op(name, c, stride, affine, pool_bn=True)
    x = tf.random.normal((4, 9 if stride == 2 else 8, 8, c))
    op(x)
    dy = tf.random.normal(op.compute_output_shape(x.shape)[:3] + (c,))
    w = tf.constant(0.37)
    stats = list(op.non_trainable_variables)
    for training in (True, False):
        results = []
        for fold in (False, True):
            before = [v.numpy().copy() for v in stats]
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                y = op(x, training=training, scale_by=OutputScale(w)) if fold \
                    else w * op(x, training=training)
            grads = tape.gradient(y, [x, w] + op.trainable_weights, output_gradients=dy)
            results.append(([y] + grads, [v.numpy().copy() for v in stats]))
            for v, b in zip(stats, before):
                v.assign(b)
        (plain, plain_stats), (folded, folded_stats) = results
        assert len(plain) == len(folded) == 3 + len(op.trainable_weights)
        for a, b in zip(plain, folded):
            scale = float(tf.reduce_max(tf.abs(a)))
            assert scale > 0
            np.testing.assert_allclose(b.numpy(), a.numpy(), atol=2e-6 * scale, rtol=1e-5)
        for a, b in zip(plain_stats, folded_stats):
            np.testing.assert_array_equal(a, b)  # statistics do not depend on the scale


def test_a_mixed_op_multiplies_only_the_ops_without_a_bn():
    """The DARTS mixed op's weights are folded into each op's last BN: its traced forward
    and backward hold one output-sized multiply per op without a BN (skip_connect at
    stride 1) instead of one per op, and compute the same numbers."""
    import tfnas.supernet.mixed as mixed
    from tfnas.spaces import get_space
    names = get_space("darts").cells["normal"].ops[0]
    keras.utils.set_random_seed(0)
    m = mixed.MixedOp(names, 8, 1)
    x = tf.random.normal((4, 8, 8, 8))
    m(x, tf.fill([len(names)], 0.125), training=True)
    weights = tf.nn.softmax(tf.random.normal([len(names)]))
    out = {}
    for fold in (False, True):
        def fn(x, w):
            with tf.GradientTape() as tape:
                tape.watch(w)
                y = m.plain_call(x, w, True, None)
                loss = tf.reduce_sum(y * y)
            return y, tape.gradient(loss, w)
        mixed.FOLD_WEIGHTS = fold
        try:
            graph = tf.function(fn).get_concrete_function(x, weights).graph
            big_muls = [op for op in graph.get_operations() if op.type == "Mul"
                        and op.outputs[0].shape.rank == 4]
            out[fold] = (len(big_muls), [t.numpy() for t in fn(x, weights)])
        finally:
            mixed.FOLD_WEIGHTS = True
    live = [n for n in names if n != "none"]
    assert out[False][0] >= 3 * len(live)  # w*y forward, w*dy and dy*y backward per op
    assert out[True][0] <= 3 * sum(n == "skip_connect" for n in live) + 2  # + loss y*y
    for a, b in zip(out[False][1], out[True][1]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())


def test_synchronized_bn_folds_the_scale_too():
    """The all-reduced BN (`--bn=global` on several replicas) takes the folded scale the same way as the kernel."""
    from tfnas.ops.norm import OutputScale

    class OneReplica:  # all_reduce over one replica: the values themselves
        def all_reduce(self, op, values):
            return values

    for affine in (False, True):
        bn = BatchNorm(affine=affine, synchronized=True)
        x = tf.random.normal((4, 5, 5, 6)) * 3.0 + 1.0
        bn.build(x.shape)
        w = tf.constant(-0.8)
        plain = w * bn._sync_call(x, *bn._scale_offset(6), OneReplica())
        folded = bn._sync_call(x, *bn._scale_offset(6, OutputScale(w)), OneReplica())
        np.testing.assert_allclose(folded.numpy(), plain.numpy(), rtol=1e-5, atol=1e-5)
        kernel = bn(x, training=True, scale_by=OutputScale(w))  # one replica: the fused path
        np.testing.assert_allclose(kernel.numpy(), plain.numpy(), rtol=1e-4, atol=1e-4)


def test_an_op_that_is_any_keras_layer_is_multiplied():
    """docs/EXTENDING.md allows any Keras layer as an op: one without `folds_scale` is
    weighted by a plain product."""
    import tfnas.supernet.mixed as mixed

    class Double(keras.layers.Layer):
        def call(self, x, training=False):
            return 2.0 * x

    x = tf.random.normal((2, 4, 4, 3))
    y = mixed.weighted(Double(), tf.constant(0.25), x, True)
    np.testing.assert_allclose(y.numpy(), 0.5 * x.numpy(), rtol=1e-6)
