"""PC-DARTS-style partial channel connections (Xu et al., ICLR 2020) as a tfnas extension.

Each supernet edge sends only 1/K of its channels through the candidate ops; the other
channels bypass them (max-pooled at stride 2), and a channel shuffle mixes the two parts for
the next edge. Memory and compute of the mixed ops drop by about K. (PC-DARTS's edge
normalisation is not part of this example.)

    TFNAS_EXTENSIONS=examples/extensions/partial_channels.py \\
        tfnas search --flagfile=quickstart --mixed_op=partial_channel --workdir=runs/pc
"""

import tensorflow as tf

from tfnas.supernet.mixed import MIXED_OPS, MixedOp

K = 4  # PC-DARTS samples 1/4 of the channels on CIFAR-10


def channel_shuffle(x, groups):
    """Interleaves the channels of `groups` equal groups (ShuffleNet's shuffle)."""
    _, h, w, c = x.shape
    y = tf.reshape(x, [-1, h, w, groups, c // groups])
    return tf.reshape(tf.transpose(y, [0, 1, 2, 4, 3]), [-1, h, w, c])


@MIXED_OPS.register("partial_channel")
class PartialChannelMixedOp(MixedOp):
    """A MixedOp on the first channels/K channels; the rest bypass the ops."""

    def __init__(self, op_names, channels, stride=1, affine=False, pool_bn=True,
                 skip_zero=False, k=K, **kwargs):
        if channels % k:
            raise ValueError(f"partial_channel: {channels} channels do not split into {k}")
        super().__init__(op_names, channels // k, stride, affine, pool_bn, skip_zero, **kwargs)
        self.k, self.full_channels = int(k), int(channels)

    def build(self, input_shape):
        super().build(tuple(input_shape[:-1]) + (self.channels,))

    def call(self, x, weights, training=False):
        mixed = super().call(x[..., :self.channels], weights, training)
        rest = x[..., self.channels:]
        if self.stride > 1:
            rest = tf.nn.max_pool2d(rest, 2, 2, "SAME")
        return channel_shuffle(tf.concat([mixed, rest], axis=-1), self.k)

    def get_config(self):
        return {**super().get_config(), "channels": self.full_channels, "k": self.k}
