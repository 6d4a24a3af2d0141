"""The op registry and the serialization decorator shared by every tfnas layer."""

import keras

from tfnas.registry import Registry

#: name -> builder(channels, stride, affine, pool_bn) returning a Keras layer.
OPS = Registry("op")


def serializable(cls):
    """Registers a layer class for `.keras` loading under the `tfnas` package."""
    return keras.saving.register_keras_serializable(package="tfnas")(cls)


def build_op(op_name, channels, stride, affine, pool_bn=False, **kwargs):
    """Builds the candidate op `name` as a Keras layer.

    Args:
        op_name: a registered op name, e.g. "sep_conv_3x3".
        channels: output channels (equal to the input channels inside a cell).
        stride: 1, or 2 on the edges from the inputs of a reduction cell.
        affine: whether batch norms learn scale/offset (False in search cells).
        pool_bn: add the extra BatchNorm after pooling ops (DARTS search cells).
        **kwargs: Keras layer arguments such as `name`.
    """
    if stride not in (1, 2):
        raise ValueError(f"op stride must be 1 or 2, got {stride}")
    return OPS.get(op_name)(channels, stride, affine, pool_bn, **kwargs)
