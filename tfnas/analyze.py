"""`tfnas analyze`: the paper's evidence that alpha does not measure operation strength.

- `strength` (paper Figures 1 and 7): per chosen edge and candidate op, discretise the edge to
  the op, fine-tune the rest of the supernet until validation accuracy stops improving and
  record it ("discretization accuracy at convergence"); beside it the op's softmaxed alpha
  and its PT score (supernet accuracy with the op removed). Kendall tau between the three.
- `shuffle` (paper Table 1): test accuracy of the trained supernet before and after swapping
  the weights of two compatible edges in every cell; optionally the same for a small ResNet
  and a small VGG with two layers of each stage swapped.
- `skip_gap` (paper Figure 3): per search epoch the mean over edges of
  softmax(alpha_skip) - softmax(alpha_best_other) against supernet validation accuracy.

Results are JSON + PNG under WORKDIR/analysis/; TensorBoard scalars under WORKDIR/tb/analysis.
"""

import json
import os
import time

import numpy as np
import scipy.stats

from tfnas.errors import ConfigError, WorkdirError
from tfnas.io import (append_jsonl, atomic_path, atomic_write_json, fmt_time, read_jsonl,
                      remove_stale_temps)
from tfnas.selection.pt import tune_supernet
from tfnas.selection.run import load_search
from tfnas.spaces import get_space

KINDS = ("strength", "shuffle", "skip_gap")


# --- statistics ---------------------------------------------------------------------------
def kendall_tau(x, y):
    """Kendall's tau-b (SciPy; ties in either ranking handled); nan for fewer than 2 points
    or a constant ranking."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(scipy.stats.kendalltau(x, y, variant="b").statistic)


def pearson(x, y):
    """Pearson's r (SciPy); nan for fewer than 2 points or a constant series."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(scipy.stats.pearsonr(x, y).statistic)


def _out_dir(workdir):
    path = os.path.join(workdir, "analysis")
    os.makedirs(path, exist_ok=True)
    remove_stale_temps(path)
    return path


def _writer(workdir):
    import tensorflow as tf
    return tf.summary.create_file_writer(os.path.join(workdir, "tb", "analysis"))


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save_png(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


# --- strength -----------------------------------------------------------------------------
def parse_edges(text, space):
    """'normal:3,reduce:5' -> [("normal", 3), ("reduce", 5)] (a bare number: first cell)."""
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        ctype, _, idx = item.rpartition(":")
        ctype = ctype or space.cell_types[0]
        if ctype not in space.cells:
            raise ConfigError(f"--edges: no cell type {ctype!r}; the space has "
                              f"{', '.join(space.cell_types)}")
        try:
            e = int(idx)
        except ValueError:
            raise ConfigError(f"--edges: {item!r} is not CELL:INDEX") from None
        n = space.cells[ctype].num_edges
        if not 0 <= e < n:
            raise ConfigError(f"--edges: edge {e} of {ctype} is out of range (0..{n - 1})")
        out.append((ctype, e))
    return out


def strength_targets(space, edges="", random_edges=0, seed=0, ops=""):
    """[(cell type, edge, [op indices])] the strength analysis visits."""
    if edges:
        chosen = parse_edges(edges, space)
    elif random_edges > 0:
        pool = [(t, e) for t in space.cell_types for e in range(space.cells[t].num_edges)]
        if random_edges > len(pool):
            raise ConfigError(f"--random_edges={random_edges} exceeds the {len(pool)} edges")
        rng = np.random.RandomState(seed)
        chosen = [pool[i] for i in sorted(rng.choice(len(pool), random_edges, replace=False))]
    else:
        raise ConfigError("strength needs --edges=CELL:INDEX,... or --random_edges=K")
    wanted = [o.strip() for o in ops.split(",") if o.strip()]
    out = []
    for ctype, e in chosen:
        names = list(space.cells[ctype].ops[e])
        for o in wanted:
            if o not in names:
                raise ConfigError(f"--ops: {o!r} is not on {ctype} edge {e} "
                                  f"(its ops: {', '.join(names)})")
        idx = [k for k, o in enumerate(names) if o in wanted] if wanted else \
            space.candidates(ctype, e)
        out.append((ctype, e, idx))
    return out


def run_strength(workdir, edges="", random_edges=0, max_epochs=10, patience=2, lr=0.0025,
                 ops="", score_batches=0, seed=0, log=print):
    """Discretisation accuracy at convergence of every op on the chosen edges.

    Each (edge, op) result is appended to analysis/strength.jsonl as soon as it finishes; a
    rerun skips those. Returns the summary dict also written to analysis/strength.json.
    """
    loop = load_search(workdir, log=log)
    space = loop.space
    targets = strength_targets(space, edges, random_edges, seed, ops)
    folder = _out_dir(workdir)
    path = os.path.join(folder, "strength.jsonl")
    settings = {"max_epochs": max_epochs, "patience": patience, "lr": lr,
                "score_batches": score_batches}
    done = {}
    for r in read_jsonl(path):
        if r.get("settings") != settings:
            raise WorkdirError(f"{path} was written with other settings ({r.get('settings')}); "
                               f"move it away to start again")
        done[(r["cell"], r["edge"], r["op"])] = r
    search_state = loop.checkpointer.list()[-1][1]
    todo = [(c, e, k) for c, e, ks in targets for k in ks
            if (c, e, space.cells[c].ops[e][k]) not in done]
    writer = _writer(workdir)
    t_start, finished = time.time(), 0
    baseline = {}
    for ctype, e, k in todo:
        op = space.cells[ctype].ops[e][k]
        loop.checkpointer.restore(search_state)  # the trained supernet, every time
        arch = loop.model.arch(ctype)
        if (ctype, e) not in baseline:
            baseline[(ctype, e)] = loop.evaluate(score_batches, batch_stats=True)[1]
        alpha = float(np.asarray(arch.softmax())[e, k])
        arch.mask_op(e, k)
        pt_acc = loop.evaluate(score_batches, batch_stats=True)[1]
        loop.checkpointer.restore(search_state)  # scoring with batch stats moved BN stats
        loop.reset_weight_optimizer()  # fresh SGD for the tuning, as `tfnas select`
        arch.fix_edge(e, k)
        # every accuracy of a row is measured the same way as the PT score beside it
        disc_acc = loop.evaluate(score_batches, batch_stats=True)[1]
        records, best = tune_supernet(loop, max_epochs, lr, data_base=20_000, log=log,
                                      patience=max(patience, 1),
                                      eval_kw={"batches": score_batches, "batch_stats": True})
        row = {"cell": ctype, "edge": e, "node": space.cells[ctype].edges[e][0],
               "input": space.cells[ctype].edges[e][1], "op": op, "alpha": alpha,
               "pt_acc_without": pt_acc, "supernet_acc": baseline[(ctype, e)],
               "acc_discretized": disc_acc,
               "acc_converged": disc_acc if best is None else best,  # None: 0 epochs
               "epochs": len(records), "settings": settings}
        append_jsonl(path, row)
        finished += 1
        eta = (time.time() - t_start) / finished * (len(todo) - finished)
        log(f"strength {ctype} edge {row['input']}->{row['node']} {op}: alpha {alpha:.3f}, "
            f"acc without it {pt_acc:.3f}, at convergence {row['acc_converged']:.3f} "
            f"({len(records)} epochs)  [{finished}/{len(todo)}, ETA {fmt_time(eta)}]")
        with writer.as_default(step=finished):
            import tensorflow as tf
            tf.summary.scalar(f"strength/{ctype}_edge{e}/{op}", row["acc_converged"])
        writer.flush()
    loop.checkpointer.restore(search_state)
    return summarize_strength(workdir, targets, space)


def summarize_strength(workdir, targets, space):
    folder = _out_dir(workdir)
    rows = read_jsonl(os.path.join(folder, "strength.jsonl"))
    edges = []
    for ctype, e, ks in targets:
        names = [space.cells[ctype].ops[e][k] for k in ks]
        mine = {r["op"]: r for r in rows if r["cell"] == ctype and r["edge"] == e}
        ops = [o for o in names if o in mine]
        alpha = [mine[o]["alpha"] for o in ops]
        pt = [-mine[o]["pt_acc_without"] for o in ops]  # higher = more important
        conv = [mine[o]["acc_converged"] for o in ops]
        node, inp = space.cells[ctype].edges[e]
        edges.append({
            "cell": ctype, "edge": e, "node": node, "input": inp, "ops": ops, "alpha": alpha,
            "pt_importance": pt, "acc_converged": conv,
            "tau_alpha_strength": kendall_tau(alpha, conv),
            "tau_pt_strength": kendall_tau(pt, conv),
            "tau_alpha_pt": kendall_tau(alpha, pt),
            "best_by_alpha": ops[int(np.argmax(alpha))] if ops else None,
            "best_by_pt": ops[int(np.argmax(pt))] if ops else None,
            "strongest": ops[int(np.argmax(conv))] if ops else None})
    summary = {"edges": edges,
               "note": "pt_importance = -(supernet accuracy with the op removed); "
                       "tau = Kendall tau-b over the ops of one edge"}
    atomic_write_json(os.path.join(folder, "strength.json"), summary)
    _plot_strength(edges, os.path.join(folder, "strength.png"))
    return summary


def _plot_strength(edges, path):
    plt = _plt()
    n = max(len(edges), 1)
    fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 3.8), squeeze=False)
    fig.subplots_adjust(wspace=0.6)
    for ax, ed in zip(axes[0], edges):
        x = np.arange(len(ed["ops"]))
        ax.bar(x - 0.2, ed["alpha"], 0.4, color="#4c72b0", label="softmax(alpha)")
        ax.set_ylabel("softmax(alpha)", color="#4c72b0")
        ax2 = ax.twinx()
        ax2.bar(x + 0.2, ed["acc_converged"], 0.4, color="#dd8452",
                label="accuracy at convergence")
        lo = min(ed["acc_converged"] or [0])
        ax2.set_ylim(max(0.0, lo - 0.05), min(1.0, max(ed["acc_converged"] or [1]) + 0.02))
        ax2.set_ylabel("accuracy at convergence", color="#dd8452")
        ax.set_xticks(x)
        ax.set_xticklabels(ed["ops"], rotation=35, ha="right", fontsize=7)
        ax.set_title(f"{ed['cell']} edge {ed['input']}->{ed['node']}: tau(alpha, strength) "
                     f"{ed['tau_alpha_strength']:.2f}", fontsize=8)
    fig.suptitle("operation strength: alpha (blue) vs discretisation accuracy at "
                 "convergence (orange)", fontsize=9)
    _save_png(fig, path)
    plt.close(fig)


# --- shuffle ------------------------------------------------------------------------------
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


def _test_accuracy(model, data, batch=256, **call_kw):
    from tfnas.data import Pipeline
    pipe = Pipeline(data, batch, 0, False, 16)
    correct = total = 0
    for x, y in pipe.evaluation(data.x_test, data.y_test):
        logits = model(x, training=False, **call_kw)
        correct += int(np.sum(np.argmax(np.asarray(logits), -1) == np.asarray(y)))
        total += int(len(y))
    return correct / max(total, 1)


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


def run_shuffle(workdir, trials=5, seed=0, baselines=False, baseline_epochs=5, log=print):
    loop = load_search(workdir, log=log)
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


# --- skip gap -----------------------------------------------------------------------------
def skip_gaps(space, alpha_rows, cell_type, other=""):
    """Per epoch: mean over the edges that have skip_connect of softmax(skip) minus the
    softmax of the strongest other op (or of `other`, e.g. sep_conv_3x3 for S2)."""
    cspace = space.cells[cell_type]
    edges = [e for e, ops in enumerate(cspace.ops) if "skip_connect" in ops]
    if not edges:
        raise ConfigError(f"no {cell_type} edge of space {space.name!r} has skip_connect")
    gaps = []
    for row in alpha_rows:
        soft = np.asarray(row["softmax"][cell_type], np.float64)
        vals = []
        for e in edges:
            ops = list(cspace.ops[e])
            s = soft[e, ops.index("skip_connect")]
            if other:
                if other not in ops:
                    continue
                o = soft[e, ops.index(other)]
            else:
                o = max(soft[e, k] for k, name in enumerate(ops)
                        if name not in ("skip_connect", "none"))
            vals.append(s - o)
        gaps.append(float(np.mean(vals)) if vals else float("nan"))
    return gaps


def run_skip_gap(workdir, cell_type="", other="", log=print):
    cfg_path = os.path.join(workdir, "config.json")
    alphas = read_jsonl(os.path.join(workdir, "alphas.jsonl"))
    metrics = {r["epoch"]: r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))}
    if not os.path.exists(cfg_path) or not alphas:
        raise WorkdirError(f"{workdir} holds no search history (config.json, alphas.jsonl); "
                           f"run `tfnas search --workdir={workdir}` first")
    with open(cfg_path) as f:
        space = get_space(json.load(f)["space"])
    cell_type = cell_type or space.cell_types[0]
    if cell_type not in space.cells:
        raise ConfigError(f"--cell={cell_type!r}: the space has {', '.join(space.cell_types)}")
    if not other and space.name == "s2":
        other = "sep_conv_3x3"
    gaps = skip_gaps(space, alphas, cell_type, other)
    epochs = [r["epoch"] for r in alphas]
    acc = [metrics.get(e, {}).get("valid_acc") for e in epochs]
    pairs = [(g, a) for g, a in zip(gaps, acc) if a is not None and np.isfinite(g)]
    result = {"cell": cell_type, "versus": other or "strongest non-skip op", "epochs": epochs,
              "gap": gaps, "valid_acc": acc,
              "pearson_gap_acc": pearson([p[0] for p in pairs], [p[1] for p in pairs])}
    folder = _out_dir(workdir)
    atomic_write_json(os.path.join(folder, "skip_gap.json"), result)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([e + 1 for e in epochs], gaps, "o-", color="#4c72b0", ms=3)
    ax.axhline(0, color="#999", lw=0.6)
    ax.set_xlabel("search epoch")
    ax.set_ylabel(f"mean softmax(skip) - softmax({other or 'best other'})", color="#4c72b0",
                  fontsize=8)
    ax2 = ax.twinx()
    ax2.plot([e + 1 for e, a in zip(epochs, acc) if a is not None],
             [a for a in acc if a is not None], "s--", color="#dd8452", ms=3)
    ax2.set_ylabel("supernet valid accuracy", color="#dd8452")
    ax.set_title(f"skip gap vs accuracy (cell type {cell_type!r}), Pearson r = "
                 f"{result['pearson_gap_acc']:.2f}", fontsize=9)
    _save_png(fig, os.path.join(folder, "skip_gap.png"))
    plt.close(fig)
    log(f"skip gap: {gaps[0]:+.3f} (epoch 1) -> {gaps[-1]:+.3f} (epoch {epochs[-1] + 1}); "
        f"Pearson r with valid acc {result['pearson_gap_acc']:.2f}")
    return result
