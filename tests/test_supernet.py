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


def _grads_and_stats(model, x, y, leaving_out=frozenset()):
    """(gradients of the loss w.r.t. every trainable variable, BN statistics after the
    pass, ops in the traced graph); the statistics are restored after."""
    snap = [v.numpy() for v in model.non_trainable_variables]

    def step():
        with model.leaving_out(leaving_out):
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        return tape.gradient(loss, model.trainable_variables)
    fn = tf.function(step)
    ops = len(fn.get_concrete_function().graph.get_operations())
    grads = [None if g is None else g.numpy() for g in fn()]  # None: a left-out op
    stats = [v.numpy() for v in model.non_trainable_variables]
    for v, s in zip(model.non_trainable_variables, snap):
        v.assign(s)
    return grads, stats, ops


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_edges_of_one_kind_share_one_trace(space):
    """A traced pass holds one function per kind of edge; gradients and BN statistics equal
    those of per-edge traces up to float rounding (the sums may be ordered differently),
    decided edges (pruned graphs) included."""
    model = build_supernet(get_space(space), 4, 4 if space == "darts" else 1, 10, (8, 8, 3))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(6, 8, 8, 3)), tf.float32)
    y = tf.constant(rng.integers(0, 10, 6))
    ctype = model.space.cell_types[0]
    model.arch(ctype).fix_edge(1, 2)
    pruned = model.zero_ops()
    for leave in (frozenset(), pruned):
        model.share_edge_traces(False)
        g0, s0, ops0 = _grads_and_stats(model, x, y, leave)
        model.share_edge_traces(True)
        g1, s1, ops1 = _grads_and_stats(model, x, y, leave)
        pool = next(m.pool for c, _, _ in model.search_cells() for m in c.edges)
        # darts (4 cells at 8x8): C4 s1 8x8, C8 s2 8x8, C8 s1 4x4, C16 s2 4x4, C16 s1 2x2,
        # + edge 1 decided in cells 0 and 3; nb201 (3 cells): one per stage, + edge 1 in each
        assert len(pool.entries) == {("darts", False): 5, ("darts", True): 7,
                                     ("nb201", False): 3, ("nb201", True): 6}[
            space, bool(leave)], list(pool.entries)
        assert ops1 < ops0 / 2, (ops1, ops0)
        assert [g is None for g in g0] == [g is None for g in g1]
        assert leave or all(g is not None for g in g0)
        for a, b in zip(g0, g1):  # rounding: relative to the gradient's scale
            if a is not None:
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(a).max())
        for a, b in zip(s0, s1):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        # the ops' BN statistics were updated through the shared functions' outputs
        before = [v.numpy() for v in model.non_trainable_variables]
        assert sum(not np.array_equal(a, b) for a, b in zip(before, s1)) > len(s1) // 3


def test_a_search_with_shared_edge_traces_differs_only_by_rounding(tmp_path, monkeypatch):
    """The same tiny search with per-edge traces (TFNAS_SHARED_EDGE_TRACES=0): losses and
    alphas within float rounding amplified by training."""
    import json
    from helpers import tiny_config
    from tfnas.search import run_search
    runs = {}
    for shared in ("1", "0"):
        monkeypatch.setenv("TFNAS_SHARED_EDGE_TRACES", shared)
        folder = str(tmp_path / shared)
        run_search(tiny_config(folder, epochs=1, steps_per_epoch=6, batch_size=32),
                   folder + "/run", log=lambda s: None)
        runs[shared] = ([json.loads(r)["train_loss"] for r in open(folder + "/run/metrics.jsonl")],
                        json.loads(open(folder + "/run/alphas.jsonl").read().splitlines()[-1]))
    np.testing.assert_allclose(runs["1"][0], runs["0"][0], rtol=1e-4)
    for t, soft in runs["1"][1]["softmax"].items():
        np.testing.assert_allclose(soft, runs["0"][1]["softmax"][t], atol=1e-4)


def _calls(model, x, y):
    """Function-call ops in the outer graph of one traced training pass."""
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)
    graph = step.get_concrete_function().graph
    return sum(op.type in ("PartitionedCall", "StatefulPartitionedCall")
               for op in graph.get_operations())


def test_recompute_reruns_each_edge_in_the_backward_pass_with_the_same_numbers(tmp_path):
    model = build_supernet(get_space("darts"), 4, 3, 10, (8, 8, 3))
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(6, 8, 8, 3)), tf.float32)
    y = tf.constant(rng.integers(0, 10, 6))
    edges = sum(len(c.edges) for c, _, _ in model.search_cells())
    g0, s0, _ = _grads_and_stats(model, x, y)
    kept = _calls(model, x, y)
    model.share_edge_traces(True, recompute=True)
    g1, s1, _ = _grads_and_stats(model, x, y)
    # each edge's function once forward, once in the gradient; recomputing adds a forward
    assert _calls(model, x, y) == kept + edges, (kept, edges)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(a).max())
    # BN statistics are assigned once, from the first forward pass (a second update would
    # move them by momentum 0.1 of the gap, far beyond this rounding bound)
    for a, b in zip(s0, s1):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # synchronized BN keeps per-edge traces (a collective per BN), recompute included
    model.set_synchronized_bn(True)
    model.share_edge_traces(True, recompute=True)
    assert all(m.pool is None for c, _, _ in model.search_cells() for m in c.edges)


def test_run_time_zero_op_skipping_trains_under_shared_edge_traces(monkeypatch):
    """`skip_zero` (a tf.cond per op) inside the shared edge functions: a training pass traces
    (the BN statistics an op updates leave the cond as outputs), computes what the plain
    supernet computes, and a masked op's BN statistics are left untouched (it did not run)."""
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(6, 8, 8, 3)), tf.float32)
    y = tf.constant(rng.integers(0, 10, 6))
    nets = [build_supernet(get_space("darts"), 4, 3, 10, (8, 8, 3), skip_zero=s)
            for s in (False, True)]
    nets[1].set_weights(nets[0].get_weights())
    results = []
    for net in nets:
        assert all(m.pool is not None for c, _, _ in net.search_cells() for m in c.edges)
        net.arch("normal").mask_op(2, 4)  # op 4 of edge 2: weight 0 in the normal cell
        results.append(_grads_and_stats(net, x, y))
    (g0, s0, _), (g1, s1, _) = results
    for a, b in zip(g0, g1):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(a).max())
    masked = [c.edges[2].ops[4] for c, t, _ in nets[1].search_cells() if t == "normal"]
    assert len(masked) == 1 and masked[0].name == get_space("darts").cells["normal"].ops[2][4]
    skipped = {id(v) for m in masked for v in m.non_trainable_variables}
    assert skipped
    for v, a, b, start in zip(nets[1].non_trainable_variables, s0, s1,
                              [v.numpy() for v in nets[1].non_trainable_variables]):
        if id(v) in skipped:
            np.testing.assert_array_equal(b, start)  # the op did not run: stats untouched
            assert not np.array_equal(a, start)  # it ran (weight 0) and updated them
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_none_op_is_never_computed(monkeypatch):
    """w * none(x) = 0 adds nothing, and its weight's gradient <0, dy> is 0: the mixed op
    leaves it out, gradients unchanged up to rounding, none's alpha still gets its softmax
    gradient."""
    from tfnas.ops import Zero
    import tfnas.supernet.mixed as mixed
    rng = np.random.default_rng(4)
    y = tf.constant(rng.integers(0, 5, 6))
    for space in ("nb201", "s3"):  # the spaces with `none` (the darts space has none)
        net = small(space, channels=3)
        x = tf.constant(rng.normal(size=(6,) + net.in_shape), tf.float32)
        net.share_edge_traces(False)  # every op in the outer graph, to count them
        g_skip, _, ops_skip = _grads_and_stats(net, x, y)
        monkeypatch.setattr(mixed, "Zero", type("Computed", (), {}))
        g_all, _, ops_all = _grads_and_stats(net, x, y)
        monkeypatch.undo()
        net.share_edge_traces(True)
        assert ops_skip < ops_all
        for a, b in zip(g_all, g_skip):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(a).max())
        none = net.space.cells[net.space.cell_types[0]].ops[0].index("none")
        assert np.abs(g_skip[0][:, none]).min() > 0  # alpha of `none`: softmax coupling
        monkeypatch.setattr(Zero, "call", lambda *a, **k: 1 / 0)
        _grads_and_stats(net, x, y)  # never called
        monkeypatch.undo()
