import numpy as np
import pytest
import tensorflow as tf

from tfnas.genotype import Genotype
from tfnas.selection import magnitude_genotype
from tfnas.spaces import SPACES, get_space
from tfnas.supernet import DartsSupernet, build_supernet


def small(space, channels=1, **kw):
    layers = 1 if get_space(space).family == "nb201" else 3
    return build_supernet(space, 4, layers, 5, (8, 8, channels), **kw)


@pytest.mark.parametrize("name", SPACES.names())
def test_every_space_builds_and_trains(name):
    net = small(name, channels=3 if name == "nb201" else 1)
    x = tf.random.normal((2,) + net.in_shape)
    with tf.GradientTape() as tape:
        logits = net(x, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits([0, 1], logits))
    assert tuple(logits.shape) == (2, 5)
    grads = tape.gradient(loss, net.alphas + net.weight_variables)
    assert all(g is not None for g in grads[:len(net.alphas)])
    # every alpha gets a gradient, except for S4 noise edges' ops nothing is special
    assert all(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads[:len(net.alphas)])
    space = get_space(name)
    for t, a in zip(space.cell_types, net.alphas):
        assert tuple(a.shape) == (space.cells[t].num_edges, space.cells[t].max_ops)
        assert np.abs(a.numpy()).max() < 0.01  # 1e-3 * N(0, 1)


def test_parameter_counts_match_the_reference():
    # Counted: every trainable weight except the alphas (conv kernels, affine BN of the stem
    # and NB201 blocks, classifier with bias) -- what the reference's count_parameters sums.
    darts = build_supernet("darts", 16, 8, 10)
    assert darts.count_weights() == pytest.approx(1.931e6, rel=0.01)
    nb201 = build_supernet("nb201", 16, 5, 10)
    assert nb201.count_weights() == pytest.approx(1.686e6, rel=0.01)
    assert len(darts.alphas) == 2 and len(nb201.alphas) == 1


def test_alphas_are_apart_from_weights():
    net = small("s2")
    ids = {id(v) for v in net.weight_variables}
    assert not any(id(a) in ids for a in net.alphas)
    assert len(net.weight_variables) + len(net.alphas) == len(net.trainable_variables)
    assert all("alpha" in a.path for a in net.alphas)


def test_masking_and_fixing_take_effect_without_retrace():
    net = small("s3")
    x = tf.random.normal((2, 8, 8, 1))
    traces = []

    @tf.function
    def f(t):
        traces.append(1)
        return net(t, training=False)

    base = f(x).numpy()
    arch = net.arch("normal")
    arch.mask_op(3, 2)
    masked = f(x).numpy()
    assert not np.allclose(base, masked)
    np.testing.assert_allclose(masked, net(x, training=False).numpy(), atol=1e-5)
    arch.reset_op_mask()
    np.testing.assert_allclose(f(x).numpy(), base, atol=1e-6)
    arch.fix_edge(0, 1)
    fixed = f(x).numpy()
    assert not np.allclose(base, fixed)
    np.testing.assert_allclose(fixed, net(x, training=False).numpy(), atol=1e-5)
    arch.remove_edge(5)
    assert not np.allclose(fixed, f(x).numpy())
    assert len(traces) == 1


def test_fixed_edge_gets_zero_alpha_gradient():
    net = small("s3")
    arch = net.arch("normal")
    arch.fix_edge(1, 2)
    arch.remove_edge(4)
    x = tf.random.normal((2, 8, 8, 1))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(net(x, training=True) ** 2)
    g = tape.gradient(loss, arch.alpha).numpy()
    assert np.all(g[1] == 0) and np.all(g[4] == 0)
    assert np.abs(g[0]).sum() > 0 and np.abs(g[2]).sum() > 0
    w = arch().numpy()
    np.testing.assert_array_equal(w[1], np.eye(3)[2])
    np.testing.assert_array_equal(w[4], np.zeros(3))


def _kept_ops_forward(net, genotype, x):
    """The discrete network computed by hand from the supernet's own op layers."""
    s0 = s1 = net.stem(x, training=False)
    for cell, ctype in zip(net.cells, net.cell_types):
        cspace, kept = net.space.cells[ctype], genotype.kept_ops(ctype)
        states = [cell.pre0(s0, training=False), cell.pre1(s1, training=False)]
        for node in cspace.nodes:
            terms = []
            for e in cspace.node_edges(node):
                j = cspace.edges[e][1]
                if (node, j) in kept:
                    op = cell.edges[e].ops[cspace.ops[e].index(kept[(node, j)])]
                    terms.append(op(states[j], training=False))
            states.append(tf.add_n(terms))
        s0, s1 = s1, tf.concat(states[2:], axis=-1)
    return net.classifier(tf.reduce_mean(s1, axis=[1, 2]))


@pytest.mark.parametrize("space,skip_zero", [("s1", False), ("s3", True)])
def test_all_edges_fixed_equals_kept_ops_only(space, skip_zero):
    net = small(space, skip_zero=skip_zero)
    rng = np.random.default_rng(1)
    weights = {t: rng.random(net.arch(t).shape) for t in net.space.cell_types}
    g = magnitude_genotype(net.space, weights)
    x = tf.random.normal((3, 8, 8, 1))
    net.apply_genotype(g)
    got = tf.function(lambda t: net(t, training=False))(x).numpy()
    want = _kept_ops_forward(net, g, x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert magnitude_genotype(net.space, net.arch_weights_numpy()).to_json()["cells"] == \
        g.to_json()["cells"]


def test_input_shapes_and_channels():
    net = DartsSupernet(get_space("s2"), 4, 2, 3, (12, 10, 3))
    assert tuple(net(tf.zeros((1, 12, 10, 3))).shape) == (1, 3)
    with pytest.raises(ValueError, match="darts-family"):
        DartsSupernet(get_space("nb201"), 4, 2, 3)


def test_json_space_file(tiny_space_file):
    space = get_space(tiny_space_file)
    assert space.family == "darts" and space.cells["normal"].num_edges == 5
    net = build_supernet(tiny_space_file, 4, 3, 2, (8, 8, 1))
    assert tuple(net.alphas[0].shape) == (5, 2)
    assert isinstance(Genotype.from_json(magnitude_genotype(space, net.softmax_numpy())
                                         .to_json()), Genotype)
