"""The deployable inference graph: a trained tfnas network rebuilt from built-in Keras layers.

    serving = tfnas.deploy.to_builtin(model)   # same logits, no tfnas layer inside

The training model is made of registered tfnas layers (cells, fused BN, PyTorch-style
padding), so its `.keras` file loads only where `tfnas` is imported. `to_builtin` rebuilds the
logits path out of `Conv2D`, `DepthwiseConv2D`, `ZeroPadding2D`, pooling, `Add`,
`Concatenate`, `Dense` and friends, with every BN that follows a convolution folded into that
convolution's kernel and bias. The result loads with plain `keras.models.load_model` in a
Python that has never imported tfnas, and it is the graph that SavedModel, ONNX and TFLite
exports are made from.

Exact equivalences used (checked by the parity tests):
  * stride-2 convs: PyTorch's symmetric padding is an explicit `ZeroPadding2D` + "valid";
  * stride-2 3x3 pooling with symmetric padding (max: padding ignored; avg: padding excluded
    from the count): the stride-1 "same" pool, whose padding is symmetric, sampled at every
    second pixel (a 1x1 max pool at stride 2), since window i of the strided pool is window
    2i of the stride-1 pool;
  * BN after a conv: kernel * gamma/sqrt(var+eps) per output channel, bias beta - mean * that.
Drop path and the auxiliary head are training-only and left out.
"""

import keras
import numpy as np

from tfnas.errors import TfnasError

L = keras.layers


class DeployError(TfnasError):
    """The model holds a layer that has no built-in inference equivalent here."""


def to_builtin(model, name=None):
    """Rebuilds the logits path of a `tfnas.build_model` network from built-in layers.

    Args:
        model: a model built by `tfnas.build_model` (or loaded from its `.keras` file).
        name: name of the new model (default: the model's name + "_deploy").
    Returns:
        A functional keras.Model whose layers all come from `keras.layers`, computing the
        same logits in inference mode (BN folded).
    Raises:
        DeployError: a layer this function does not know (not a tfnas network).
    """
    builder = _Builder()
    x = keras.Input(shape=tuple(model.input_shape[1:]), name="image")
    s0 = s1 = x
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("InputLayer", "AuxiliaryHead"):
            continue
        if kind == "StemConv":
            s0 = s1 = builder.conv_bn(x, layer.kernel, layer.stride, layer.bn, layer.name)
        elif kind == "ImageNetStem":
            s0, s1 = builder.imagenet_stem(x, layer)
        elif kind == "DiscreteCell":
            s0, s1 = s1, builder.darts_cell(s0, s1, layer)
        elif kind == "NB201Cell":
            s1 = builder.nb201_cell(s1, layer)
        elif kind == "ResidualReduction":
            s1 = builder.residual_reduction(s1, layer)
        elif kind == "BatchNorm":
            s1 = builder.batch_norm(s1, layer, layer.name)
        elif isinstance(layer, (L.ReLU, L.GlobalAveragePooling2D, L.Dense)):
            s1 = builder.clone(s1, layer)
        else:
            raise DeployError(f"cannot build a deployable graph: layer {layer.name!r} "
                              f"({kind}) is not part of a tfnas network")
    return keras.Model(x, s1, name=name or f"{model.name}_deploy")


def fold_bn(kernel, bn):
    """(kernel, bias) of a bias-free conv followed by `bn` in inference mode."""
    mean = np.asarray(bn.moving_mean.numpy(), np.float64)
    var = np.asarray(bn.moving_variance.numpy(), np.float64)
    gamma = bn.gamma.numpy() if bn.affine else np.ones_like(mean)
    beta = bn.beta.numpy() if bn.affine else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + bn.epsilon)
    k = np.asarray(kernel, np.float64) * scale  # the last axis is the output channel
    return k.astype(np.float32), (beta - mean * scale).astype(np.float32)


def _symmetric_pads(size, kernel, stride, dilation):
    """The (before, after) zero padding of tfnas.ops.conv2d at stride 2 for one axis."""
    p = (kernel - 1) * dilation // 2
    k_eff = (kernel - 1) * dilation + 1
    return p, p - (size + 2 * p - k_eff) % stride


class _Builder:
    """Emits built-in layers with unique names and copies or folds their weights."""

    def __init__(self):
        self.names = {}

    def _name(self, base):
        base = base.replace("/", "_")
        n = self.names.get(base, 0)
        self.names[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def _apply(self, layer, x, weights=None):
        y = layer(x)
        if weights is not None:
            layer.set_weights(weights)
        return y

    def _pad_for(self, x, kernel, stride, dilation, name):
        """Returns (input, padding) for a conv, like tfnas.ops.layers._conv_input."""
        if kernel == 1:
            return x, "valid"
        if stride == 1:
            return x, "same"
        pads = tuple(_symmetric_pads(int(s), kernel, stride, dilation) for s in x.shape[1:3])
        return L.ZeroPadding2D(pads, name=self._name(name + "_pad"))(x), "valid"

    def conv_bn(self, x, kernel, stride, bn, name, relu=False, dilation=1):
        """[ReLU ->] conv (no bias) -> BN, as one Conv2D with the BN folded in."""
        if relu:
            x = L.ReLU(name=self._name(name + "_relu"))(x)
        kernel = kernel.numpy() if hasattr(kernel, "numpy") else kernel
        k = int(kernel.shape[0])
        x, padding = self._pad_for(x, k, stride, dilation, name)
        conv = L.Conv2D(int(kernel.shape[-1]), k, strides=stride, padding=padding,
                        dilation_rate=dilation, name=self._name(name + "_conv"))
        return self._apply(conv, x, list(fold_bn(kernel, bn)))

    def depthwise(self, x, kernel, stride, dilation, name):
        kernel = kernel.numpy()
        k = int(kernel.shape[0])
        subsample = stride > 1 and dilation > 1  # TF has no strided dilated depthwise conv
        x, padding = self._pad_for(x, k, 1 if subsample else stride, dilation, name)
        conv = L.DepthwiseConv2D(k, strides=1 if subsample else stride, padding=padding,
                                 dilation_rate=dilation, use_bias=False,
                                 name=self._name(name + "_depthwise"))
        y = self._apply(conv, x, [kernel])
        return self.subsample(y, name) if subsample else y

    def subsample(self, x, name):
        """x[:, ::2, ::2, :] as a built-in layer."""
        return L.MaxPooling2D(1, strides=2, name=self._name(name + "_subsample"))(x)

    def batch_norm(self, x, bn, name):
        layer = L.BatchNormalization(epsilon=bn.epsilon, center=bn.affine, scale=bn.affine,
                                     name=self._name(name))
        weights = ([bn.gamma.numpy(), bn.beta.numpy()] if bn.affine else []) + [
            bn.moving_mean.numpy(), bn.moving_variance.numpy()]
        return self._apply(layer, x, weights)

    def clone(self, x, layer):
        # float32 whatever policy the network was trained under (mixed_bfloat16/float16)
        new = type(layer).from_config({**layer.get_config(), "name": self._name(layer.name),
                                       "dtype": "float32"})
        return self._apply(new, x, layer.get_weights() or None)

    def zeros(self, x, stride, name):
        if stride > 1:
            x = self.subsample(x, name)
        return L.Rescaling(0.0, name=self._name(name + "_zero"))(x)

    def op(self, x, op, name):
        """One candidate-op layer (tfnas.ops) as built-in layers."""
        kind = type(op).__name__
        if kind == "Identity":
            return x
        if kind == "Zero":
            return self.zeros(x, op.stride, name)
        if kind == "ReLUConvBN":
            return self.conv_bn(x, op.k, op.stride, op.bn, name, relu=True)
        if kind == "FactorizedReduce":
            return self.factorized_reduce(x, op, name)
        if kind == "DilConv":
            for i in range(op.repeats):
                x = L.ReLU(name=self._name(f"{name}_relu{i}"))(x)
                x = self.depthwise(x, op.dw[i], op.stride if i == 0 else 1, op.dilation,
                                   f"{name}_{i}")
                x = self.conv_bn(x, op.pw[i], 1, op.bns[i], f"{name}_pointwise{i}")
            return x
        if kind == "Pool":
            return self.pool(x, op, name)
        raise DeployError(f"cannot build a deployable graph: op {op.name!r} ({kind}) has no "
                          f"inference equivalent")

    def pool(self, x, op, name):
        cls = L.MaxPooling2D if op.kind == "max" else L.AveragePooling2D
        y = cls(3, strides=1, padding="same", name=self._name(f"{name}_{op.kind}pool"))(x)
        if op.stride > 1:
            y = self.subsample(y, name)
        return self.batch_norm(y, op.bn, f"{name}_bn") if op.bn is not None else y

    def factorized_reduce(self, x, op, name):
        half = op.channels // 2
        x = L.ReLU(name=self._name(name + "_relu"))(x)
        # The BN follows the concat: fold it into both halves at once, then split.
        k, bias = fold_bn(np.concatenate([op.k1.numpy(), op.k2.numpy()], axis=-1), op.bn)
        a = self._apply(L.Conv2D(half, 1, strides=2, name=self._name(name + "_conv1")), x,
                        [k[..., :half], bias[:half]])
        shifted = L.Cropping2D(((1, 0), (1, 0)), name=self._name(name + "_shift"))(x)
        shifted = L.ZeroPadding2D(((0, 1), (0, 1)), name=self._name(name + "_shiftpad"))(shifted)
        b = self._apply(L.Conv2D(half, 1, strides=2, name=self._name(name + "_conv2")), shifted,
                        [k[..., half:], bias[half:]])
        return L.Concatenate(name=self._name(name + "_concat"))([a, b])

    def add(self, terms, name):
        return terms[0] if len(terms) == 1 else L.Add(name=self._name(name))(terms)

    def darts_cell(self, s0, s1, cell):
        states = {0: self.op(s0, cell.pre0, f"{cell.name}_pre0"),
                  1: self.op(s1, cell.pre1, f"{cell.name}_pre1")}
        for node in cell.nodes:
            terms = [self.op(states[j], op, f"{cell.name}_{op.name}")
                     for (n, j, _), op in zip(cell.edges, cell.ops) if n == node]
            states[node] = self.add(terms, f"{cell.name}_node{node}")
        return L.Concatenate(name=self._name(f"{cell.name}_concat"))(
            [states[n] for n in cell.concat])

    def nb201_cell(self, x, cell):
        states = {0: x}
        for node in cell.nodes:
            terms = [self.op(states[j], op, f"{cell.name}_{op.name}")
                     for (n, j, _), op in zip(cell.edges, cell.ops)
                     if n == node and op is not None]
            states[node] = (self.add(terms, f"{cell.name}_node{node}") if terms
                            else self.zeros(x, 1, f"{cell.name}_node{node}"))
        return states[cell.nodes[-1]]

    def residual_reduction(self, x, block):
        y = self.op(x, block.conv_a, f"{block.name}_a")
        y = self.op(y, block.conv_b, f"{block.name}_b")
        short = L.AveragePooling2D(2, strides=2, padding="same",
                                   name=self._name(f"{block.name}_shortcut_pool"))(x)
        conv = L.Conv2D(block.channels, 1, use_bias=False,
                        name=self._name(f"{block.name}_shortcut_conv"))
        short = self._apply(conv, short, [block.shortcut.numpy()])
        return L.Add(name=self._name(f"{block.name}_add"))([y, short])

    def imagenet_stem(self, x, stem):
        y = self.conv_bn(x, stem.k[0], 2, stem.bns[0], f"{stem.name}_0")
        y = L.ReLU(name=self._name(f"{stem.name}_0_relu"))(y)
        s0 = self.conv_bn(y, stem.k[1], 2, stem.bns[1], f"{stem.name}_1")
        s1 = self.conv_bn(s0, stem.k[2], 2, stem.bns[2], f"{stem.name}_2", relu=True)
        return s0, s1
