"""The two supernet families: DARTS-style (normal/reduce cells) and NB201-style."""

import contextlib
import os

import keras
import numpy as np
import tensorflow as tf

from tfnas.ops import BatchNorm, FactorizedReduce, ReLUConvBN, conv2d, serializable
from tfnas.ops.taps import tap
from tfnas.ops.layers import torch_init
from tfnas.supernet.mixed import MIXED_OPS, ArchParameters, MixedOp, TracePool


@serializable
class StemConv(keras.layers.Layer):
    """3x3 conv (no bias, symmetric padding) -> affine BN; also the NB201 stem."""

    def __init__(self, channels, stride=1, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.stride = int(channels), int(stride)
        self.bn = BatchNorm(affine=True, name="bn")

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(3, 3, int(input_shape[-1]), self.channels),
                                      initializer=torch_init(), name="conv")
        n, h, w, _ = input_shape
        self.bn.build((n, h, w, self.channels))

    def call(self, x, training=False):
        return self.bn(tap("conv", conv2d(x, self.kernel, self.stride)), training=training)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "stride": self.stride}


class SearchCell(keras.layers.Layer):
    """A DARTS search cell: preprocess the two inputs, mixed ops on every edge, concat."""

    def __init__(self, cell_space, channels, reduction, reduction_prev, skip_zero,
                 mixed_op="standard", **kwargs):
        super().__init__(**kwargs)
        self.cell_space, self.reduction = cell_space, reduction
        self.pre0 = (FactorizedReduce(channels, 2, affine=False, name="pre0") if reduction_prev
                     else ReLUConvBN(channels, 1, affine=False, kernel_size=1, name="pre0"))
        self.pre1 = ReLUConvBN(channels, 1, affine=False, kernel_size=1, name="pre1")
        self.edges = [
            MIXED_OPS.get(mixed_op)(ops, channels, 2 if reduction and j < 2 else 1,
                                    affine=False, pool_bn=True, skip_zero=skip_zero,
                                    name=f"edge_{j}_{node}")
            for (node, j), ops in zip(cell_space.edges, cell_space.ops)]
        self.concat = cell_space.nodes
        self.built = True  # sub-layers build on first call; no symbolic build pass

    def call(self, s0, s1, weights, training=False):
        states = [self.pre0(s0, training=training), self.pre1(s1, training=training)]
        for node in self.concat:
            states.append(tf.add_n([
                self.edges[e](states[self.cell_space.edges[e][1]], weights[e], training=training)
                for e in self.cell_space.node_edges(node)]))
        return tf.concat([states[n] for n in self.concat], axis=-1)


class NB201SearchCell(keras.layers.Layer):
    """An NB201 search cell: every node sums mixed ops from all earlier nodes; output = last."""

    def __init__(self, cell_space, channels, skip_zero, mixed_op="standard", **kwargs):
        super().__init__(**kwargs)
        self.cell_space = cell_space
        self.edges = [MIXED_OPS.get(mixed_op)(ops, channels, 1, affine=False, pool_bn=False,
                                              skip_zero=skip_zero, name=f"edge_{j}_{node}")
                      for (node, j), ops in zip(cell_space.edges, cell_space.ops)]
        self.built = True

    def call(self, x, weights, training=False):
        states = [x]
        for node in self.cell_space.nodes:
            states.append(tf.add_n([
                self.edges[e](states[self.cell_space.edges[e][1]], weights[e], training=training)
                for e in self.cell_space.node_edges(node)]))
        return states[-1]


@serializable
class ResidualReduction(keras.layers.Layer):
    """NB201's ResNet basic block between stages: two ReLU-conv-BN 3x3 (the first at stride
    2) plus an avg-pool 2x2 -> 1x1 conv shortcut. Affine, not searched."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.conv_a = ReLUConvBN(channels, 2, affine=True, kernel_size=3, name="conv_a")
        self.conv_b = ReLUConvBN(channels, 1, affine=True, kernel_size=3, name="conv_b")

    def build(self, input_shape):
        self.shortcut = self.add_weight(shape=(1, 1, int(input_shape[-1]), self.channels),
                                        initializer=torch_init(), name="shortcut")
        self.conv_a.build(input_shape)
        self.conv_b.build(self.conv_a.compute_output_shape(input_shape))

    def call(self, x, training=False):
        y = self.conv_b(self.conv_a(x, training=training), training=training)
        return y + tap("conv", conv2d(tf.nn.avg_pool2d(x, 2, 2, "SAME"), self.shortcut))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


class Supernet(keras.Model):
    """Common part of the supernets: alphas per cell type, selection state, variable split."""

    def _make_arch(self, space):
        self.space = space
        self.archs = [ArchParameters([len(o) for o in space.cells[t].ops], name=f"arch_{t}")
                      for t in space.cell_types]

    def _create_variables(self):
        # One eager call creates every variable; marking the model built first skips Keras's
        # symbolic build pass, which costs ~40 s at C16 L8.
        self.built = True
        self(tf.zeros((1,) + self.in_shape))
        self.share_edge_traces(os.environ.get("TFNAS_SHARED_EDGE_TRACES", "1") != "0")

    def share_edge_traces(self, enabled=True, recompute=False):
        """Edges of one kind (ops, channels, stride, input shape) share one traced function
        (`TracePool`): a traced step holds each kind's forward and backward once instead of
        once per edge (C16 L8: 112 edges, 5 kinds). Edge layers that replace `call` and
        synchronized BN (a collective per layer) keep their own traces.

        Args:
            recompute: the backward pass recomputes every shared edge's activations
                (`tf.recompute_grad`) instead of keeping them from the forward pass: less
                memory, more compute (implies sharing).
        """
        pool = TracePool(recompute) if (enabled or recompute) and \
            not self.synchronized_bn() else None
        for cell, _, _ in self.search_cells():
            for m in cell.edges:
                m.pool = pool if type(m).call is MixedOp.call else None

    def arch(self, cell_type):
        return self.archs[self.space.cell_types.index(cell_type)]

    @property
    def alphas(self):
        """The architecture variables, one per cell type (owned by the alpha optimizer)."""
        return [a.alpha for a in self.archs]

    @property
    def weight_variables(self):
        """Every trainable variable except the alphas (owned by the weight optimizer)."""
        alpha_ids = {id(a) for a in self.alphas}
        return [v for v in self.trainable_variables if id(v) not in alpha_ids]

    def mixing_weights(self, probs=None):
        """{cell type: [edges, max_ops]} weights after masks/decisions (as tensors)."""
        probs = probs or {}
        return {t: a(probs.get(t)) for t, a in zip(self.space.cell_types, self.archs)}

    def arch_weights_numpy(self):
        return {t: np.asarray(w) for t, w in self.mixing_weights().items()}

    def softmax_numpy(self):
        return {t: np.asarray(a.softmax()) for t, a in zip(self.space.cell_types, self.archs)}

    def apply_genotype(self, genotype):
        """Fixes every edge to `genotype`: kept edges one-hot on their op, other edges removed.
        The supernet then computes exactly the discrete architecture (zero-weight ops are
        skipped)."""
        for ctype in self.space.cell_types:
            arch, cspace = self.arch(ctype), self.space.cells[ctype]
            kept = genotype.kept_ops(ctype)
            for e, (node, j) in enumerate(cspace.edges):
                op = kept.get((node, j))
                if op is None or op == "none":
                    arch.fix_edge(e, 0)
                    arch.remove_edge(e)
                else:
                    arch.fix_edge(e, cspace.ops[e].index(op))
                    arch.remove_edge(e, removed=False)

    def search_cells(self):
        """[(cell layer, cell type, reduction)] of every search cell, in order."""
        raise NotImplementedError

    # --- graphs of the decided structure ---------------------------------------------------
    def zero_ops(self):
        """frozenset of (cell type, edge, op) whose mixing weight the selection state makes
        zero whatever the masks and alphas: the other ops of a decided edge, every op of a
        removed edge. A graph traced `leaving_out` them computes the same numbers."""
        zero = set()
        for t, a in zip(self.space.cell_types, self.archs):
            fixed, live, row = a.decided(), a.live(), a.fixed_w.numpy()
            for e, n in enumerate(a.ops_per_edge):
                zero.update((t, e, k) for k in range(n)
                            if not live[e] or (fixed[e] and row[e, k] == 0.0))
        return frozenset(zero)

    @contextlib.contextmanager
    def leaving_out(self, ops, skip_zero=False):
        """While a graph is traced inside, every mixed op computes only its ops that are not
        in `ops` ((cell type, edge, op) triples, as `zero_ops`); with `skip_zero`, each op
        that remains runs only when its mixing weight is non-zero (a `tf.cond`: masks and
        decisions made after the trace are skipped too)."""
        edges = [(t, e, m) for cell, t, _ in self.search_cells()
                 for e, m in enumerate(cell.edges)]
        built = [m.skip_zero for _, _, m in edges]
        for t, e, m in edges:
            m.live_ops = [k for k in range(len(m.ops)) if (t, e, k) not in ops] if ops \
                else None
            m.skip_zero = m.skip_zero or bool(skip_zero)
        try:
            yield
        finally:
            for (_, _, m), skip in zip(edges, built):
                m.live_ops, m.skip_zero = None, skip

    def synchronized_bn(self):
        """Whether the BN layers use cross-replica statistics (a collective per BN)."""
        return any(isinstance(layer, BatchNorm) and layer.synchronized
                   for layer in self._flatten_layers(include_self=False, recursive=True))

    def set_synchronized_bn(self, synchronized=True):
        """Use cross-replica batch statistics in every BN (set before tracing)."""
        for layer in self._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, BatchNorm):
                layer.synchronized = bool(synchronized)
        if synchronized:
            self.share_edge_traces(False)

    def count_weights(self):
        """Number of trainable weights excluding alphas (the reference's parameter count)."""
        return int(sum(np.prod(v.shape) for v in self.weight_variables))


class DartsSupernet(Supernet):
    """The DARTS supernet (REFERENCE 2.1).

    Args:
        space: a darts-family SearchSpace.
        channels: C of the first cell (16 in the paper's search).
        layers: number of cells; reductions at layers//3 and 2*layers//3.
        num_classes: classifier width.
        input_shape: (H, W, C_in) of the images; any size and channel count.
        stem_multiplier: the stem outputs stem_multiplier*C channels.
        skip_zero: skip zero-weight ops (see MixedOp; off by default).
        mixed_op: the registered edge layer (`MIXED_OPS`; "standard" is MixedOp).
    """

    def __init__(self, space, channels=16, layers=8, num_classes=10, input_shape=(32, 32, 3),
                 stem_multiplier=3, skip_zero=False, mixed_op="standard", **kwargs):
        super().__init__(**kwargs)
        if space.family != "darts":
            raise ValueError(f"DartsSupernet needs a darts-family space, got {space.family!r}")
        if layers < 1 or channels < 1:
            raise ValueError(f"layers and channels must be positive, got {layers}, {channels}")
        self._make_arch(space)
        self.stem = StemConv(stem_multiplier * channels, name="stem")
        reductions = {layers // 3, 2 * layers // 3} if layers >= 3 else set()
        self.cells, c, red_prev = [], channels, False
        for i in range(layers):
            red = i in reductions
            c = c * 2 if red else c
            ctype = "reduce" if red else "normal"
            self.cells.append(SearchCell(space.cells[ctype], c, red, red_prev, skip_zero,
                                         mixed_op, name=f"cell_{i}"))
            red_prev = red
        self.cell_types = ["reduce" if i in reductions else "normal" for i in range(layers)]
        self.classifier = keras.layers.Dense(num_classes, name="classifier", dtype="float32")
        self.num_classes, self.in_shape = num_classes, tuple(input_shape)
        self._create_variables()  # create every variable now

    def search_cells(self):
        return [(cell, ctype, ctype == "reduce")
                for cell, ctype in zip(self.cells, self.cell_types)]

    def call(self, x, training=False, probs=None):
        weights = self.mixing_weights(probs)
        s0 = s1 = self.stem(x, training=training)
        for cell, ctype in zip(self.cells, self.cell_types):
            s0, s1 = s1, cell(s0, s1, weights[ctype], training=training)
        return self.classifier(tf.reduce_mean(s1, axis=[1, 2]))


class NB201Supernet(Supernet):
    """The NAS-Bench-201 supernet (REFERENCE 2.4): stem, 3 stages of `cells_per_stage`
    search cells at C, 2C, 4C joined by residual reduction blocks, BN-ReLU-GAP-dense."""

    def __init__(self, space, channels=16, cells_per_stage=5, num_classes=10,
                 input_shape=(32, 32, 3), skip_zero=False, mixed_op="standard", **kwargs):
        super().__init__(**kwargs)
        if space.family != "nb201":
            raise ValueError(f"NB201Supernet needs an nb201-family space, got {space.family!r}")
        self._make_arch(space)
        self.stem = StemConv(channels, name="stem")
        self.body, c = [], channels
        for stage in range(3):
            if stage:
                c *= 2
                self.body.append(ResidualReduction(c, name=f"reduction_{stage}"))
            self.body += [NB201SearchCell(space.cells["cell"], c, skip_zero, mixed_op,
                                          name=f"cell_{stage}_{i}")
                          for i in range(cells_per_stage)]
        self.head_bn = BatchNorm(affine=True, name="head_bn")
        self.classifier = keras.layers.Dense(num_classes, name="classifier", dtype="float32")
        self.num_classes, self.in_shape = num_classes, tuple(input_shape)
        self._create_variables()

    def search_cells(self):
        return [(layer, "cell", False) for layer in self.body
                if isinstance(layer, NB201SearchCell)]

    def call(self, x, training=False, probs=None):
        w = self.mixing_weights(probs)["cell"]
        x = self.stem(x, training=training)
        for layer in self.body:
            x = layer(x, w, training=training) if isinstance(layer, NB201SearchCell) \
                else layer(x, training=training)
        x = tf.nn.relu(self.head_bn(x, training=training))
        return self.classifier(tf.reduce_mean(x, axis=[1, 2]))


def build_supernet(space, channels=16, layers=8, num_classes=10, input_shape=(32, 32, 3),
                   **kwargs):
    """Builds the supernet family that `space` belongs to (`layers` = cells per stage for
    NB201)."""
    from tfnas.spaces import get_space
    space = get_space(space)
    if space.family == "nb201":
        return NB201Supernet(space, channels, layers, num_classes, input_shape, **kwargs)
    return DartsSupernet(space, channels, layers, num_classes, input_shape, **kwargs)
