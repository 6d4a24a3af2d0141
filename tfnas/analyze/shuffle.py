"""`tfnas analyze shuffle` (paper Table 1): accuracy after swapping the weights of compatible
edges (and, for reference, of layers of a small ResNet / VGG)."""

import os

import numpy as np

from tfnas.analyze.common import _out_dir, _plt, _save_png, _test_accuracy, _writer
from tfnas.errors import WorkdirError
from tfnas.io import atomic_write_json
from tfnas.selection.run import load_search

def compatible_pairs(space, ctype, reduction):
    """Edge pairs of a cell whose MixedOps have the same ops and stride (swappable)."""
    cspace = space.cells[ctype]
    stride = [2 if reduction and j < 2 else 1 for _, j in cspace.edges]
    return [(a, b) for a in range(cspace.num_edges) for b in range(a + 1, cspace.num_edges)
            if cspace.ops[a] == cspace.ops[b] and stride[a] == stride[b]]


def _swap(vars_a, vars_b):
    for va, vb in zip(vars_a, vars_b):
        tmp = va.numpy().copy()
        va.assign(vb.numpy())
        vb.assign(tmp)


def shuffle_supernet(loop, trials=5, seed=0, log=print):
    """Test accuracy before / after swapping two random compatible edges in every cell
    (weights of the two MixedOps swapped; alphas untouched); restores the supernet after
    each trial. Returns a dict with the per-trial accuracies and the swaps."""
    model, space = loop.model, loop.space
    if not len(loop.data.x_test):
        raise WorkdirError("shuffle needs a test split; the dataset has none")
    search_cells = model.search_cells()  # DARTS cells or NB201's cells across stages
    cells = [cell for cell, _, _ in search_cells]
    rng = np.random.RandomState(seed)
    before = _test_accuracy(model, loop.data)
    after, swaps = [], []
    for t in range(trials):
        trial_swaps = []
        for i, (cell, ctype, reduction) in enumerate(search_cells):
            pairs = compatible_pairs(space, ctype, reduction)
            if not pairs:
                continue
            a, b = pairs[rng.randint(len(pairs))]
            trial_swaps.append((i, a, b))
        for i, a, b in trial_swaps:
            _swap(cells[i].edges[a].weights, cells[i].edges[b].weights)
        acc = _test_accuracy(model, loop.data)
        for i, a, b in reversed(trial_swaps):
            _swap(cells[i].edges[a].weights, cells[i].edges[b].weights)
        after.append(acc)
        swaps.append(trial_swaps)
        log(f"shuffle trial {t + 1}/{trials}: supernet test acc {before:.3f} -> {acc:.3f}")
    return {"before": before, "after": after, "swaps": swaps}


def _baseline(kind, input_shape, num_classes, width=16):
    """A small ResNet or VGG: 3 stages; each stage = an entry block (changes the shape) then
    three same-shape blocks (any two of them can be swapped)."""
    import keras
    from keras import layers as L
    x_in = keras.Input(input_shape)
    x = L.Conv2D(width, 3, padding="same", use_bias=False)(x_in)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    stages = []
    for s in range(3):
        c = width * 2 ** s
        stride = 1 if s == 0 else 2
        names = []
        for b in range(4):
            name = f"{kind}_s{s}_b{b}"
            if kind == "vgg":
                x = L.Conv2D(c, 3, strides=stride if b == 0 else 1, padding="same",
                             use_bias=False, name=name)(x)
                x = L.BatchNormalization(name=name + "_bn")(x)
                x = L.ReLU()(x)
            else:
                y = L.Conv2D(c, 3, strides=stride if b == 0 else 1, padding="same",
                             use_bias=False, name=name)(x)
                y = L.BatchNormalization(name=name + "_bn")(y)
                y = L.ReLU()(y)
                y = L.Conv2D(c, 3, padding="same", use_bias=False, name=name + "_2")(y)
                y = L.BatchNormalization(name=name + "_bn2")(y)
                sc = x if b > 0 else L.Conv2D(c, 1, strides=stride, use_bias=False,
                                              name=name + "_proj")(x)
                x = L.ReLU()(L.Add()([y, sc]))
            names.append(name)
        stages.append(names)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(num_classes)(x)
    return keras.Model(x_in, out, name=kind), stages


def _block_weights(model, name):
    return [v for layer in model.layers if layer.name == name or
            layer.name.startswith(name + "_") for v in layer.weights]


def shuffle_baselines(data, epochs=5, trials=5, seed=0, log=print):
    """Trains a small ResNet and a small VGG on `data`; per trial, swaps the weights of two
    random same-shape blocks in every stage and measures test accuracy (then swaps back)."""
    import keras
    from tfnas.data import Pipeline
    out = {}
    pipe = Pipeline(data, 64, seed, False, 16)
    for kind in ("resnet", "vgg"):
        keras.utils.set_random_seed(seed)
        model, stages = _baseline(kind, data.input_shape, data.num_classes)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        train = pipe.evaluation(data.x_train, data.y_train).shuffle(64, seed=seed)
        model.fit(train, epochs=epochs, verbose=0, shuffle=False)
        before = _test_accuracy(model, data)
        rng = np.random.RandomState(seed)
        after = []
        for t in range(trials):
            pairs = []
            for st in stages:
                i, j = sorted(rng.choice([1, 2, 3], 2, replace=False))
                pairs.append((_block_weights(model, st[i]), _block_weights(model, st[j])))
            for a, b in pairs:
                _swap(a, b)
            after.append(_test_accuracy(model, data))
            for a, b in reversed(pairs):
                _swap(a, b)
        log(f"shuffle {kind}: test acc {before:.3f} -> {np.mean(after):.3f} "
            f"(+- {np.std(after):.3f} over {trials} trials)")
        out[kind] = {"before": before, "after": after, "params": model.count_params()}
    return out


def run_shuffle(workdir, trials=5, seed=0, baselines=False, baseline_epochs=5, log=print,
                strategy=None):
    loop = load_search(workdir, log=log, strategy=strategy)
    result = {"supernet": shuffle_supernet(loop, trials, seed, log)}
    if baselines:
        result.update(shuffle_baselines(loop.data, baseline_epochs, trials, seed, log))
    for key, r in result.items():
        r["after_mean"] = float(np.mean(r["after"]))
        r["after_std"] = float(np.std(r["after"]))
    folder = _out_dir(workdir)
    atomic_write_json(os.path.join(folder, "shuffle.json"), result)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    names = list(result)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [result[n]["before"] for n in names], 0.4, label="before")
    ax.bar(x + 0.2, [result[n]["after_mean"] for n in names], 0.4,
           yerr=[result[n]["after_std"] for n in names], label="after swapping")
    ax.set_xticks(x)
    ax.set_xticklabels(names)
    ax.set_ylabel("test accuracy")
    ax.set_title("layer / edge shuffling (paper Table 1)", fontsize=9)
    ax.legend(fontsize=7)
    _save_png(fig, os.path.join(folder, "shuffle.png"))
    plt.close(fig)
    writer = _writer(workdir)
    import tensorflow as tf
    with writer.as_default(step=0):
        for n in names:
            tf.summary.scalar(f"shuffle/{n}_before", result[n]["before"])
            tf.summary.scalar(f"shuffle/{n}_after", result[n]["after_mean"])
    writer.flush()
    return result
