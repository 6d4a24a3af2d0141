"""Candidate operations (Keras layers) and the op registry."""

from tfnas.ops.norm import BatchNorm
from tfnas.ops.registry import OPS, build_op, serializable
from tfnas.ops.layers import (DilConv, FactorizedReduce, Identity, Noise, OpLayer, Pool,
                              ReLUConvBN, Zero, conv2d, depthwise_conv2d)

__all__ = ["OPS", "build_op", "serializable", "BatchNorm", "DilConv", "FactorizedReduce",
           "Identity", "Noise", "OpLayer", "Pool", "ReLUConvBN", "Zero", "conv2d",
           "depthwise_conv2d"]
