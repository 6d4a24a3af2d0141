"""Architecture parameters with per-edge selection state, and the mixed op."""

import keras
import numpy as np
import tensorflow as tf
from keras.src.backend import AutocastScope  # no public name in Keras 3.15
from keras.src.backend.common.stateless_scope import get_stateless_scope

from tfnas.registry import Registry
from tfnas.ops import Zero, build_op, serializable
from tfnas.ops.norm import OutputScale, stats_frozen


@serializable
class ArchParameters(keras.layers.Layer):
    """Alpha of one cell type plus its selection state, all as variables.

    `alpha` [edges, max_ops] is the only trainable weight. The selection state is
    non-trainable so PT can change it inside an already traced function (no retrace):

    - `op_mask` [edges, max_ops]: 0 removes an op from the mixture (PT scoring). As in the
      reference, the remaining softmax weights are not renormalised.
    - `fixed_w` [edges, max_ops] and `is_fixed` [edges]: a decided edge uses its one-hot row
      and gets no alpha gradient.
    - `edge_mask` [edges]: 0 removes the whole edge (topology decisions).

    Edges with fewer ops than `max_ops` are padded; padded entries always weigh 0.

    Args:
        ops_per_edge: number of candidate ops of each edge.
    """

    def __init__(self, ops_per_edge, **kwargs):
        kwargs.setdefault("dtype", "float32")  # alphas and their softmax stay float32
        super().__init__(**kwargs)
        self.ops_per_edge = [int(n) for n in ops_per_edge]
        e, k = len(self.ops_per_edge), max(self.ops_per_edge)
        valid = np.zeros((e, k), np.float32)
        for i, n in enumerate(self.ops_per_edge):
            valid[i, :n] = 1.0
        self._valid = valid
        self.alpha = self.add_weight(shape=(e, k), name="alpha",
                                     initializer=keras.initializers.RandomNormal(stddev=1e-3))
        self.op_mask = self.add_weight(shape=(e, k), name="op_mask", trainable=False,
                                       initializer=keras.initializers.Constant(valid))
        self.fixed_w = self.add_weight(shape=(e, k), name="fixed_w", trainable=False,
                                       initializer="zeros")
        self.is_fixed = self.add_weight(shape=(e,), name="is_fixed", trainable=False,
                                        initializer="zeros")
        self.edge_mask = self.add_weight(shape=(e,), name="edge_mask", trainable=False,
                                         initializer="ones")
        self.built = True

    @property
    def shape(self):
        return self._valid.shape

    def softmax(self, alpha=None):
        """Softmax of alpha over each edge's real ops (padding gets exactly 0)."""
        a = self.alpha.value if alpha is None else alpha
        return tf.nn.softmax(a + (self._valid - 1.0) * 1e9, axis=-1)

    def call(self, probs=None):
        """Mixing weights [edges, max_ops] after masks and decisions.

        Args:
            probs: optional replacement for softmax(alpha) (e.g. SDARTS's perturbed
                probabilities); decided and removed edges still override it.
        """
        soft = self.softmax() if probs is None else probs
        w = tf.where(self.is_fixed.value[:, None] > 0.5, self.fixed_w.value,
                     soft * self.op_mask.value)
        return w * self.edge_mask.value[:, None]

    # --- selection state (call outside `strategy.run`) ----------------------------------------
    # Every change assigns the whole variable: under MirroredStrategy a sliced assign
    # (`v[i].assign(x)`) reaches only the first replica's copy, and the replicas would then
    # score, train and decide with different masks.
    def _set(self, var, index, value):
        new = np.array(var.numpy())
        new[index] = value
        var.assign(new)

    def fix_edge(self, edge, op_index):
        row = np.zeros(self.shape[1], np.float32)
        row[op_index] = 1.0
        self._set(self.fixed_w, edge, row)
        self._set(self.is_fixed, edge, 1.0)

    def mask_op(self, edge, op_index):
        self._set(self.op_mask, (edge, op_index), 0.0)

    def reset_op_mask(self):
        self.op_mask.assign(self._valid)

    def decided(self):
        """[edges] bool: edges fixed to one op."""
        return self.is_fixed.numpy() > 0.5

    def live(self):
        """[edges] bool: edges not removed."""
        return self.edge_mask.numpy() > 0.5

    def remove_edge(self, edge, removed=True):
        self._set(self.edge_mask, edge, 0.0 if removed else 1.0)

    def get_config(self):
        return {**super().get_config(), "ops_per_edge": self.ops_per_edge}


@serializable
class MixedOp(keras.layers.Layer):
    """Weighted sum of candidate ops on one edge.

    Two ways to leave out ops whose weight is zero, both exact (adding w * op(x) = 0 changes
    no sum, and its gradient is 0): `skip_zero` tests every weight at run time (`tf.cond`:
    one graph serves every mask, but it slows the undecided ops), and
    `live_ops`, a list of op indices set while a graph is traced (`Supernet.leaving_out`),
    builds a graph of only those ops, for a selection state that makes the others zero
    for good (decided or removed edges).

    Args:
        op_names: the candidate ops of this edge.
        channels: channels of the edge's input and output.
        stride: 2 on the input edges of a reduction cell.
        affine: BN scale/offset in the ops (False in search cells).
        pool_bn: the DARTS extra BN after pooling ops.
        skip_zero: skip ops with a zero weight (tf.cond per op; pays off once edges are
            decided).
    """

    def __init__(self, op_names, channels, stride=1, affine=False, pool_bn=True, skip_zero=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.op_names, self.channels, self.stride = list(op_names), int(channels), int(stride)
        self.affine, self.pool_bn, self.skip_zero = bool(affine), bool(pool_bn), bool(skip_zero)
        self.ops = [build_op(n, channels, stride, affine, pool_bn, name=n) for n in op_names]
        self.live_ops = None  # None: every op; else the indices a traced graph computes

    def build(self, input_shape):
        for op in self.ops:
            op.build(input_shape)

    pool = None  # a TracePool shared by the edges of a supernet, else traced per edge

    def call(self, x, weights, training=False):
        if self.pool is not None and not tf.executing_eagerly():
            return self.pool.call(self, x, weights, training)
        return self.plain_call(x, weights, training, self.live_ops)

    def trace_key(self, x, training):
        """What the traced computation depends on besides the variables' values."""
        live = None if self.live_ops is None else tuple(self.live_ops)
        return (type(self), tuple(self.op_names), self.channels, self.stride, self.affine,
                self.pool_bn, self.skip_zero, live, bool(training), x.dtype,
                tuple(x.shape[1:]))

    def plain_call(self, x, weights, training, live_ops):
        """The edge's output; `live_ops`: the op indices computed (None: all). The `none`
        op is never computed: w * 0 adds nothing to the sum and its weight's gradient,
        <0, dy>, is 0 (what the tape gives an unused weight)."""
        n, h, w_, _ = x.shape
        s = self.stride
        out_shape = [tf.shape(x)[0], -(-h // s), -(-w_ // s), self.channels]
        zeros = lambda: tf.zeros(out_shape, x.dtype)  # noqa: E731
        live = range(len(self.ops)) if live_ops is None else live_ops
        total = None
        # mixing weights come in float32 (softmax of float32 alphas), one unstack (and one
        # op in the gradient) instead of a slice each
        per_op = tf.unstack(weights)
        for k in live:
            op, wk = self.ops[k], per_op[k]
            if isinstance(op, Zero):
                continue
            if self.skip_zero:
                y = _unless_zero(op, wk, x, training, zeros)
            else:
                y = weighted(op, wk, x, training)
            total = y if total is None else total + y
        return zeros() if total is None else total  # a removed edge

    def get_config(self):
        return {**super().get_config(), "op_names": self.op_names, "channels": self.channels,
                "stride": self.stride, "affine": self.affine, "pool_bn": self.pool_bn,
                "skip_zero": self.skip_zero}


FOLD_WEIGHTS = True  # False: w * op(x) as a separate product (for A/B timing only)


def weighted(op, wk, x, training):
    """wk * op(x). An op ending in a BN takes the float32 weight into that BN's scale and
    offset (`OutputScale`): no multiply over the output and none in the gradient (its
    weight's gradient comes out of the BN gradient's scale term). Others multiply in their
    compute dtype (bfloat16/float16 under a mixed policy). A user op may be any Keras layer:
    without `folds_scale` it is multiplied."""
    if FOLD_WEIGHTS and getattr(op, "folds_scale", False):
        return op(x, training=training, scale_by=OutputScale(wk))
    return tf.cast(wk, x.dtype) * op(x, training=training)


def _unless_zero(op, wk, x, training, zeros):
    """wk * op(x), or zeros without running the op when wk is 0 (`tf.cond`). Inside a Keras
    stateless scope (a shared edge trace) the op's variable updates (BN statistics) become
    outputs of the cond, so they leave the branch's graph; the skipped branch returns the
    values unchanged."""
    scope = get_stateless_scope()
    state = list(op.non_trainable_variables) if scope is not None and training else []
    before = [scope.get_current_value(v) for v in state]

    def run():
        y = weighted(op, wk, x, training)
        return [y] + [scope.get_current_value(v) for v in state]

    out = tf.cond(tf.not_equal(wk, 0.0), run, lambda: [zeros()] + before)
    for v, value in zip(state, out[1:]):
        scope.add_update((v, value))
    return out[0]


# name -> MixedOp class: what every supernet edge is made of (`--mixed_op`). An entry takes
# (op_names, channels, stride, affine, pool_bn, skip_zero, name=...) and is called as
# `layer(x, weights, training)`; e.g. a partial-channel edge (docs/EXTENDING.md).
MIXED_OPS = Registry("mixed op")
MIXED_OPS.register("standard", MixedOp)


class TracePool:
    """One traced function per kind of edge (`MixedOp.trace_key`: ops, channels, stride,
    input shape and dtype, live ops, training): every edge of a kind calls it with its own
    variables' values (Keras's stateless scope), so a traced supernet pass holds each kind's
    forward and backward once instead of once per edge. BN statistics the ops update come
    back as outputs and are assigned to the calling edge's variables. TensorFlow inlines the
    calls before optimising, so the executed graph is the per-edge one (the same ops; sums
    may round in another order)."""

    def __init__(self, recompute=False):
        self.entries = {}
        self.recompute = bool(recompute)

    def call(self, layer, x, weights, training):
        key = layer.trace_key(x, training)
        if key not in self.entries:
            live = None if layer.live_ops is None else tuple(layer.live_ops)
            self.entries[key] = self._make(layer, live, training)
        fn, changed = self.entries[key]
        # the variables' own dtype: inside, each op casts as it would on its own (a layer's
        # autocast here would hand BN its float32 statistics in 16 bits)
        # and as tensors: a (distributed) variable passed to a tf.function is bound by its
        # handle, which under MirroredStrategy is the first replica's on every replica
        with AutocastScope(None):
            tv = [tf.convert_to_tensor(v.value) for v in layer.trainable_variables]
            nv = [tf.convert_to_tensor(v.value) for v in layer.non_trainable_variables]
        if self.recompute and training:
            y, *updates = _recomputed(fn, len(tv), len(nv))(*tv, *nv, x, weights)
        else:
            y, updates = fn(tv, nv, x, weights)
        if not stats_frozen():
            for i, value in zip(changed, updates):
                layer.non_trainable_variables[i].assign(value)
        return y

    @staticmethod
    def _make(template, live_ops, training):
        changed = []  # indices of the non-trainable variables the ops assign (BN statistics)

        def edge(trainable, non_trainable, x, weights):
            mapping = list(zip(template.trainable_variables, trainable)) + list(
                zip(template.non_trainable_variables, non_trainable))
            with AutocastScope(None):  # the scope converts values to each variable's dtype
                scope = keras.StatelessScope(state_mapping=mapping)
            with scope:
                y = template.plain_call(x, weights, training, live_ops)
            new = [scope.get_current_value(v) for v in template.non_trainable_variables]
            changed[:] = [i for i, (a, b) in enumerate(zip(new, non_trainable)) if a is not b]
            return y, [new[i] for i in changed]
        return tf.function(edge), changed


def _recomputed(fn, n_trainable, n_other):
    """`fn` on flat arguments with a gradient that recomputes the edge's activations in the
    backward pass instead of keeping them from the forward pass (`tf.recompute_grad`'s idea;
    `fn` is pure: its BN updates are outputs, assigned once by the caller, so recomputing
    changes no state). Only the edge input waits for the output gradient (a data
    dependency, so the recomputation is not scheduled early); the variables' values do not
    need to, which keeps the graph small."""
    @tf.custom_gradient
    def call(*args):
        tv, nv = list(args[:n_trainable]), list(args[n_trainable:n_trainable + n_other])
        x, weights = args[-2], args[-1]
        y, updates = fn(tv, nv, x, weights)

        def grad(dy, *_):
            first = tf.reduce_max(tf.reshape(dy, [-1])[:1])
            wait = tf.where(tf.equal(first, first), 0.0, float("nan"))  # 0, not foldable
            x_again = x + tf.cast(wait, x.dtype)
            with tf.GradientTape() as tape:
                tape.watch(tv + [x_again, weights])
                y_again, _ = fn(tv, nv, x_again, weights)
            d = tape.gradient(y_again, tv + [x_again, weights], output_gradients=dy,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return d[:n_trainable] + [tf.zeros_like(v) for v in nv] + d[n_trainable:]
        return [y] + list(updates), grad
    return call
