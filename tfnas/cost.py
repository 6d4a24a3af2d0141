"""What a network costs, one definition each, used by budgets, export and profile.

- parameters: trainable weights (what the paper reports; the auxiliary head is counted only
  where the model has it);
- MACs: multiply-adds per image of the convolution and dense layers, each kernel applied
  once per output position (`Conv2D`, `DepthwiseConv2D`, `SeparableConv2D`, `Dense`, in
  nested models too). BN, activations, pooling and additions are not counted: the
  convention of the NAS papers (DARTS's "multiply-add operations"). A deployed network's
  BN is folded into its convolutions, so its count equals the training network's.
"""

import numpy as np


def count_params(model):
    """Trainable parameters of a Keras model."""
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def count_macs(model):
    """Multiply-adds per image of a built functional (or Sequential) Keras model's
    convolution and dense layers, nested models included."""
    import keras
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
        elif isinstance(layer, keras.layers.SeparableConv2D):  # both at the output's grid
            total += (int(np.prod(layer.depthwise_kernel.shape)) +
                      int(np.prod(layer.pointwise_kernel.shape))) * _positions(layer.output.shape)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                                keras.layers.Dense)):
            total += int(np.prod(layer.kernel.shape)) * _positions(layer.output.shape)
    return total


def _positions(shape):
    """Output positions per image: every axis between the batch and the channels."""
    return int(np.prod([int(d) for d in shape[1:-1]])) if len(shape) > 2 else 1
