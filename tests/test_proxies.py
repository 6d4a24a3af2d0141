"""Zero-cost proxies (tfnas.derive.proxies): each against its definition written out in
numpy on small networks, and the registry's contract on supernets."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas.derive.proxies import PROXIES, ProxyScorer, get_proxy, kernels
from tfnas.ops import taps
from tfnas.supernet import build_supernet


def _dense_net(seed=0):
    """x -> dense(5) -> ReLU -> dense(3), no biases (a network with a known SynFlow)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, use_bias=False),
                             keras.layers.ReLU(), keras.layers.Dense(3, use_bias=False)])


def _batch(shape, classes, seed=0, n=6):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.normal(size=(n,) + shape).astype("float32")),
            tf.constant(rng.integers(0, classes, n)))


def _ce_grads(model, x, y):
    ws = kernels(model)
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            tf.cast(y, tf.int32), logits))
    return [w.numpy() for w in ws], [g.numpy() for g in tape.gradient(loss, ws)], logits


def test_synflow_snip_grad_norm_and_fisher_are_their_definitions():
    net = _dense_net()
    x, y = _batch((4,), 3)
    w1, w2 = (np.abs(w.numpy()).astype(np.float64) for w in net.weights)
    r = np.ones(4) @ w1 @ w2 @ np.ones(3)  # all-ones input through |W|: every ReLU passes
    # sum |w| dR/d|w| over each layer is R itself: two layers, 2R
    np.testing.assert_allclose(ProxyScorer(net, "synflow")(x, y), 2 * r, rtol=1e-5)
    ws, gs, logits = _ce_grads(net, x, y)
    np.testing.assert_allclose(ProxyScorer(net, "snip")(x, y),
                               sum(np.abs(w * g).sum() for w, g in zip(ws, gs)), rtol=1e-5)
    np.testing.assert_allclose(ProxyScorer(net, "grad_norm")(x, y),
                               sum(np.linalg.norm(g) for g in gs), rtol=1e-5)
    # fisher of the logits (a dense output): dL/dlogits = (softmax - onehot) / n
    z = logits.numpy().astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(3)[y.numpy()]) / len(z)
    np.testing.assert_allclose(ProxyScorer(net, "fisher")(x, y),
                               (0.5 * ((z * dz) ** 2).mean(0)).sum(), rtol=1e-4)


@pytest.fixture(scope="module")
def nb201():
    keras.utils.set_random_seed(0)
    return build_supernet("nb201", channels=4, layers=1, num_classes=5, input_shape=(8, 8, 3))


def test_nwot_and_jacob_cov_are_their_definitions(nb201):
    x, y = _batch((8, 8, 3), 5, n=8)
    with taps.recording("relu") as got:
        nb201(x, training=False)  # Zero-Cost-PT's nwot: BN's running statistics
    k = np.zeros((8, 8))
    for t in got["relu"]:
        c = (t.numpy().reshape(8, -1) > 0).astype(np.float64)
        k += c @ c.T + (1 - c) @ (1 - c).T
    assert len(got["relu"]) > 10  # every op's and block's ReLU was tapped
    np.testing.assert_allclose(ProxyScorer(nb201, "nwot")(x, y), np.linalg.slogdet(k)[1],
                               rtol=1e-6)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(nb201(x, training=True))
    jac = tape.gradient(total, x).numpy().reshape(8, -1).astype(np.float64)
    v = np.linalg.eigvalsh(np.corrcoef(jac))
    np.testing.assert_allclose(ProxyScorer(nb201, "jacob_cov")(x, y),
                               -np.sum(np.log(v + 1e-5) + 1 / (v + 1e-5)), rtol=1e-4)


@pytest.mark.parametrize("name", sorted(PROXIES.names()))
def test_every_proxy_is_finite_deterministic_stateless_and_sees_a_masked_op(name, nb201):
    x, y = _batch((8, 8, 3), 5, n=8)
    before = [v.numpy().copy() for v in nb201.variables]
    scorer = ProxyScorer(nb201, name)
    first = scorer(x, y)
    assert np.isfinite(first) and scorer(x, y) == first
    arch = nb201.arch("cell")
    arch.mask_op(0, 3)  # edge 0's nor_conv_3x3 (ops: none, skip, conv 1x1, conv 3x3, pool)
    try:
        masked = scorer(x, y)
    finally:
        arch.reset_op_mask()
    assert np.isfinite(masked) and masked != first
    assert scorer(x, y) == first  # the same traced function: masks are variables
    for v, b in zip(nb201.variables, before):  # BN statistics and weights untouched
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)


def test_a_proxy_traces_once_for_every_mask(nb201):
    x, y = _batch((8, 8, 3), 5, n=8)
    scorer = ProxyScorer(nb201, "snip")
    arch = nb201.arch("cell")
    for k in range(5):
        arch.mask_op(1, k)
        scorer(x, y)
        arch.reset_op_mask()
    assert scorer._fn.experimental_get_tracing_count() == 1


def test_an_unknown_proxy_lists_the_registered_ones():
    with pytest.raises(Exception, match="nwot"):
        get_proxy("nope")


def test_synflow_leaves_the_shared_edge_traces_with_their_batch_norms():
    """SynFlow traces the supernet with BN as identities: those edges must not end up in the
    shared edge functions that training and scoring reuse afterwards."""
    from tfnas.ops.norm import running_stats_frozen
    keras.utils.set_random_seed(0)
    net = build_supernet("nb201", channels=4, layers=1, num_classes=5, input_shape=(8, 8, 3))
    x, y = _batch((8, 8, 3), 5, n=8)
    ProxyScorer(net, "synflow")(x, y)  # first: any edge it left in the pool is BN-free
    one = x[:1]  # SynFlow's input is one image: the same shapes as this batch of one
    with running_stats_frozen():
        shared = tf.function(lambda t: net(t, training=True))(one).numpy()
        net.share_edge_traces(False)
        own = tf.function(lambda t: net(t, training=True))(one).numpy()
    np.testing.assert_allclose(shared, own, rtol=1e-4, atol=1e-5)
