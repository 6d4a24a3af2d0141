"""Discrete networks built from a Genotype, as Keras functional models of registered layers.

    model = tfnas.build_model(genotype, num_classes=10, input_shape=(32, 32, 3), channels=36,
                              layers=20, auxiliary=True)

Forms: "cifar" (DARTS CIFAR network), "imagenet" (the DARTS ImageNet stems for 224x224) and
"nb201" (the fixed NB201 skeleton). `search_mode=True` builds BN without scale/offset and the
extra BN after pooling, exactly the supernet's structure, so a supernet's weights can be copied
in (the freeze-equivalence test).
"""

import keras

from tfnas.errors import GenotypeError, UsageError
from tfnas.genotype import Genotype
from tfnas.models.layers import AuxiliaryHead, DiscreteCell, ImageNetStem, MaskSeed, NB201Cell
from tfnas.ops import BatchNorm
from tfnas.supernet.networks import ResidualReduction, StemConv

FORMS = ("cifar", "imagenet", "nb201")


def build_model(genotype, num_classes, input_shape, channels=36, layers=20, auxiliary=False,
                drop_path=0.0, form=None, search_mode=False, name="tfnas_model"):
    """Builds the discrete network of `genotype`.

    Args:
        genotype: a Genotype, a path to its JSON or a zoo name ("darts_v2").
        num_classes: classifier width.
        input_shape: (H, W, C) of the images.
        channels: C of the first cell (stage for NB201).
        layers: number of cells (cells per stage for NB201).
        auxiliary: add the auxiliary head after cell 2*layers//3 (second output).
        drop_path: the final drop-path rate of every cell: one rate for all cells, ramped
            linearly over the epochs by `tfnas.train` (the reference's `drop_path_prob *
            epoch / epochs`; no per-depth scaling).
        form: "cifar", "imagenet" or "nb201"; default from the genotype's space family.
        search_mode: affine-free BN and pooling BN as in the supernet.
    Returns:
        A keras.Model with outputs `logits` (and `aux_logits` when `auxiliary`).
    Raises:
        UsageError: a form the genotype's space does not support.
    """
    if not isinstance(genotype, Genotype):
        genotype = Genotype.load(genotype)
    family = genotype.family
    form = form or genotype.space_obj.default_form
    if form not in FORMS:
        raise UsageError(f"model form {form!r} is unknown; expected one of {', '.join(FORMS)}")
    if (form == "nb201") != (family == "nb201"):
        raise GenotypeError(f"a genotype of space {genotype.space!r} ({family} family) cannot "
                            f"build the {form!r} form")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    if form == "nb201":
        outputs = _nb201(genotype, inputs, channels, layers, num_classes, search_mode)
    else:
        outputs = _darts(genotype, inputs, channels, layers, num_classes, auxiliary, drop_path,
                         form, search_mode)
    return keras.Model(inputs, outputs, name=name)


def _darts(genotype, x, channels, layers, num_classes, auxiliary, drop_path, form, search_mode):
    affine = not search_mode
    if form == "imagenet":
        s0, s1 = ImageNetStem(channels, name="stem")(x)
        red_prev = True
    else:
        s0 = s1 = StemConv(3 * channels, name="stem")(x)
        red_prev = False
    reductions = {layers // 3, 2 * layers // 3} if layers >= 3 else set()
    c, aux = channels, None
    for i in range(layers):
        red = i in reductions
        c = c * 2 if red else c
        cell = genotype.cells["reduce" if red else "normal"]
        s0, s1 = s1, DiscreteCell(
            [[e.node, e.input, e.op] for e in cell["edges"]], list(cell["concat"]), c, red,
            red_prev, affine=affine, pool_bn=search_mode,
            drop_path=drop_path,
            name=f"cell_{i}")([s0, s1])
        red_prev = red
        if auxiliary and i == 2 * layers // 3:
            aux = AuxiliaryHead(num_classes, imagenet=form == "imagenet", name="aux_head")(s1)
    pooled = keras.layers.GlobalAveragePooling2D(name="global_pool")(s1)
    logits = keras.layers.Dense(num_classes, name="classifier", dtype="float32")(pooled)
    if aux is not None:
        return {"logits": logits, "aux_logits": aux}
    return logits


def _nb201(genotype, x, channels, cells_per_stage, num_classes, search_mode):
    edges = [[e.node, e.input, e.op] for e in genotype.cells["cell"]["edges"]]
    x = StemConv(channels, name="stem")(x)
    c = channels
    for stage in range(3):
        if stage:
            c *= 2
            x = ResidualReduction(c, name=f"reduction_{stage}")(x)
        for i in range(cells_per_stage):
            x = NB201Cell(edges, c, affine=not search_mode, name=f"cell_{stage}_{i}")(x)
    x = keras.layers.ReLU(name="head_relu")(BatchNorm(affine=True, name="head_bn")(x))
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    return keras.layers.Dense(num_classes, name="classifier", dtype="float32")(x)


def set_drop_path(model, fraction):
    """Sets every cell's drop-path rate to `fraction` of its maximum (0 disables it)."""
    for layer in model.layers:
        if isinstance(layer, DiscreteCell):
            layer.drop_rate.assign(layer.drop_path * float(fraction))


def seed_drop_path(model, step, seed):
    """Draws every cell's drop-path masks from (seed, cell, edge, `step`, replica), `step`
    being a variable that counts updates and is checkpointed (the optimizer's iterations):
    a resumed training draws the masks of the uninterrupted one."""
    cells = [layer for layer in model.layers if isinstance(layer, DiscreteCell)]
    for k, cell in enumerate(cells):
        cell.mask_seed = MaskSeed(seed, k, step)


__all__ = ["build_model", "set_drop_path", "seed_drop_path", "FORMS", "DiscreteCell", "NB201Cell",
           "AuxiliaryHead", "ImageNetStem"]
