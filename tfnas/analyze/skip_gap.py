"""`tfnas analyze skip_gap` (paper Figure 3): softmax(skip) - softmax(best other op) per
search epoch against validation accuracy."""

import json
import os

import numpy as np

from tfnas.analyze.common import _out_dir, _plt, _save_png, pearson
from tfnas.errors import ConfigError, WorkdirError
from tfnas.io import atomic_write_json, read_jsonl
from tfnas.spaces import get_space

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
