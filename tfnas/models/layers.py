"""Registered layers of the discrete networks: cells, the auxiliary head, ImageNet stems."""

import keras
import tensorflow as tf

from tfnas.ops import BatchNorm, FactorizedReduce, ReLUConvBN, build_op, serializable
from tfnas.ops.layers import torch_init, conv2d


@serializable
class DiscreteCell(keras.layers.Layer):
    """A DARTS cell of a genotype: two preprocessed inputs, each kept edge's op, the sum per
    node and the concat nodes. Drop-path (training only) zeroes whole non-identity branches
    per example at rate `drop_rate` (a variable, ramped during training).

    Args:
        edges: [[node, input, op], ...] (two per intermediate node).
        concat: nodes concatenated into the output.
        channels: C of this cell.
        reduction, reduction_prev: this / the previous cell halves the resolution.
        affine: BN scale/offset (False in search mode).
        pool_bn: the supernet's extra BN after pooling ops (search mode).
        drop_path: maximum drop-path rate of this cell.
    """

    def __init__(self, edges, concat, channels, reduction=False, reduction_prev=False,
                 affine=True, pool_bn=False, drop_path=0.0, **kwargs):
        super().__init__(**kwargs)
        self.edges = [[int(n), int(j), str(op)] for n, j, op in edges]
        self.concat, self.channels = [int(n) for n in concat], int(channels)
        self.reduction, self.reduction_prev = bool(reduction), bool(reduction_prev)
        self.affine, self.pool_bn, self.drop_path = bool(affine), bool(pool_bn), float(drop_path)
        self.pre0 = (FactorizedReduce(channels, 2, affine=affine, name="pre0") if reduction_prev
                     else ReLUConvBN(channels, 1, affine=affine, kernel_size=1, name="pre0"))
        self.pre1 = ReLUConvBN(channels, 1, affine=affine, kernel_size=1, name="pre1")
        self.ops = [build_op(op, channels, 2 if reduction and j < 2 else 1, affine, pool_bn,
                             name=f"{op}_{j}_{n}") for n, j, op in self.edges]
        self.drop_rate = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                         name="drop_rate")
        self.nodes = sorted({n for n, _, _ in self.edges})

    def build(self, input_shapes):
        s0, s1 = input_shapes
        self.pre0.build(s0)
        self.pre1.build(s1)
        h, w = s1[1], s1[2]
        pre_shape = (None, h, w, self.channels)
        for op in self.ops:
            op.build(pre_shape)

    mask_seed = None  # a MaskSeed (tfnas.models.seed_drop_path), else TF's stateful RNG

    def _drop(self, y, training, index):
        if not training or not self.drop_path:
            return y
        keep = 1.0 - self.drop_rate
        shape = [tf.shape(y)[0], 1, 1, 1]
        u = (tf.random.uniform(shape, dtype=y.dtype) if self.mask_seed is None
             else self.mask_seed.uniform(shape, index, y.dtype))
        return y / keep * tf.floor(keep + u)

    def call(self, inputs, training=False):
        s0, s1 = inputs
        states = {0: self.pre0(s0, training=training), 1: self.pre1(s1, training=training)}
        for node in self.nodes:
            terms = []
            for index, ((n, j, name), op) in enumerate(zip(self.edges, self.ops)):
                if n == node:
                    y = op(states[j], training=training)
                    terms.append(y if name == "skip_connect" and op.stride == 1
                                 else self._drop(y, training, index))
            states[node] = tf.add_n(terms)
        return tf.concat([states[n] for n in self.concat], axis=-1)

    def compute_output_shape(self, input_shapes):
        s1 = input_shapes[1]
        s = 2 if self.reduction else 1
        h = None if s1[1] is None else -(-s1[1] // s)
        w = None if s1[2] is None else -(-s1[2] // s)
        return (s1[0], h, w, self.channels * len(self.concat))

    def get_config(self):
        return {**super().get_config(), "edges": self.edges, "concat": self.concat,
                "channels": self.channels, "reduction": self.reduction,
                "reduction_prev": self.reduction_prev, "affine": self.affine,
                "pool_bn": self.pool_bn, "drop_path": self.drop_path}


class MaskSeed:
    """Drop-path masks of one cell from a stateless RNG keyed by (seed, cell, edge, update,
    replica): the update counter is a variable restored with the checkpoint (the optimizer's
    iterations), so a resumed run draws exactly the masks of an uninterrupted one, whatever
    the process. Not a variable of the cell: the `.keras` format is unchanged."""

    def __init__(self, seed, cell, step):
        self.key, self.step = (int(seed) % (1 << 31)) * 4096 + int(cell) * 64, step

    def uniform(self, shape, edge, dtype):
        ctx = tf.distribute.get_replica_context()
        replica = ctx.replica_id_in_sync_group if ctx is not None else 0
        step = tf.cast(tf.convert_to_tensor(self.step), tf.int64)
        seed = tf.stack([tf.constant(self.key + edge, tf.int64),
                         step * 4096 + tf.cast(replica, tf.int64)])
        return tf.random.stateless_uniform(shape, seed=seed, dtype=dtype)


@serializable
class NB201Cell(keras.layers.Layer):
    """A discrete NB201 cell: node i sums its non-`none` edges; `none` edges compute nothing."""

    def __init__(self, edges, channels, affine=True, **kwargs):
        super().__init__(**kwargs)
        self.edges = [[int(n), int(j), str(op)] for n, j, op in edges]
        self.channels, self.affine = int(channels), bool(affine)
        self.ops = [None if op == "none" else build_op(op, channels, 1, affine, False,
                                                       name=f"{op}_{j}_{n}")
                    for n, j, op in self.edges]
        self.ops_list = [op for op in self.ops if op is not None]
        self.nodes = sorted({n for n, _, _ in self.edges})

    def build(self, input_shape):
        for op in self.ops_list:
            op.build(input_shape)

    def call(self, x, training=False):
        states = {0: x}
        for node in self.nodes:
            terms = [op(states[j], training=training)
                     for (n, j, _), op in zip(self.edges, self.ops)
                     if n == node and op is not None]
            states[node] = tf.add_n(terms) if terms else tf.zeros_like(x)
        return states[self.nodes[-1]]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "edges": self.edges, "channels": self.channels,
                "affine": self.affine}


@serializable
class AuxiliaryHead(keras.layers.Layer):
    """DARTS's auxiliary classifiers (REFERENCE 5).

    CIFAR (`imagenet=False`, for 8x8 inputs): ReLU, 5x5 avg-pool stride 3 (smaller inputs:
    global), 1x1 conv 128, BN, ReLU, 2x2 conv 768 (1x1 below 2x2), BN, ReLU, dense.
    ImageNet (`imagenet=True`, for 14x14 inputs): the same with pool stride 2 and no BN after
    the 768-channel conv (DARTS's `AuxiliaryHeadImageNet` leaves it out).
    """

    def __init__(self, num_classes, imagenet=False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.imagenet = int(num_classes), bool(imagenet)
        self.stride = 2 if self.imagenet else 3
        self.bn1 = BatchNorm(name="bn1")
        self.bn2 = None if self.imagenet else BatchNorm(name="bn2")
        self.fc = keras.layers.Dense(self.num_classes, name="fc", dtype="float32")

    def build(self, input_shape):
        h = input_shape[1]
        self.pool = 5 if h is not None and h >= 5 else None
        out = (h - 5) // self.stride + 1 if self.pool else 1
        self.k2 = 2 if out >= 2 else 1
        self.w1 = self.add_weight(shape=(1, 1, int(input_shape[-1]), 128), name="conv1",
                                  initializer=torch_init())
        self.w2 = self.add_weight(shape=(self.k2, self.k2, 128, 768), name="conv2",
                                  initializer=torch_init())
        self.bn1.build((None, out, out, 128))
        o2 = out - self.k2 + 1
        if self.bn2 is not None:
            self.bn2.build((None, o2, o2, 768))
        self.fc.build((None, 768))

    def call(self, x, training=False):
        x = tf.nn.relu(x)
        x = tf.nn.avg_pool2d(x, 5, self.stride, "VALID") if self.pool else \
            tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        x = tf.nn.relu(self.bn1(conv2d(x, self.w1), training=training))
        x = tf.nn.conv2d(x, self.w2, 1, "VALID")
        if self.bn2 is not None:
            x = self.bn2(x, training=training)
        x = tf.nn.relu(x)
        return self.fc(tf.reduce_mean(x, axis=[1, 2]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "imagenet": self.imagenet}


@serializable
class ImageNetStem(keras.layers.Layer):
    """DARTS ImageNet stems: stem0 = conv3x3/2 (C/2), BN, ReLU, conv3x3/2 (C), BN;
    stem1 = ReLU, conv3x3/2 (C), BN. Returns (s0, s1) at 1/4 and 1/8 resolution."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.bns = [BatchNorm(name=f"bn{i}") for i in range(3)]

    def build(self, input_shape):
        c, cin = self.channels, int(input_shape[-1])
        self.k = [self.add_weight(shape=s, name=f"conv{i}", initializer=torch_init())
                  for i, s in enumerate([(3, 3, cin, c // 2), (3, 3, c // 2, c), (3, 3, c, c)])]
        h = input_shape[1]
        for i, bn in enumerate(self.bns):
            hh = None if h is None else -(-h // 2 ** (i + 1))
            bn.build((None, hh, hh, c // 2 if i == 0 else c))

    def call(self, x, training=False):
        x = tf.nn.relu(self.bns[0](conv2d(x, self.k[0], 2), training=training))
        s0 = self.bns[1](conv2d(x, self.k[1], 2), training=training)
        s1 = self.bns[2](conv2d(tf.nn.relu(s0), self.k[2], 2), training=training)
        return s0, s1

    def compute_output_shape(self, input_shape):
        h = input_shape[1]
        q = lambda d: None if h is None else -(-h // d)  # noqa: E731
        return ((None, q(4), q(4), self.channels), (None, q(8), q(8), self.channels))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}
