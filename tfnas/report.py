"""`tfnas report`: PNGs of a run (plain matplotlib, no graphviz needed).

- cells.png: the cells of genotype.json beside those of genotype_magnitude.json;
- alpha_vs_pt.png: per decided edge, each op's softmaxed alpha next to its PT score (the
  supernet's accuracy with the op removed; lower = more important), the paper's Figure 1;
- selection.png: the supernet's accuracy after each decision.
"""

import math
import os

from tfnas.errors import WorkdirError
from tfnas.genotype import Genotype
from tfnas.io import atomic_path, read_jsonl, remove_stale_temps


def _draw_cell(ax, genotype, ctype, title):
    cell = genotype.cells[ctype]
    inputs = list(genotype.space_obj.cell_inputs)
    darts = len(inputs) == 2
    nodes = sorted({e.node for e in cell["edges"]})
    order = inputs + nodes
    pos = {n: (i, (i % 2) * 0.6) for i, n in enumerate(order)}
    names = {0: "c_{k-2}", 1: "c_{k-1}"} if darts else {0: "in"}
    for n, (x, y) in pos.items():
        ax.add_patch(__import__("matplotlib").patches.Circle((x, y), 0.18, fc="#dde8f5" if
                                                              n in inputs else "#f5e3c8",
                                                              ec="k"))
        ax.text(x, y, names.get(n, str(n)), ha="center", va="center", fontsize=7)
    rad = 0.3
    for e in cell["edges"]:
        (x0, y0), (x1, y1) = pos[e.input], pos[e.node]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(
            arrowstyle="->", connectionstyle=f"arc3,rad={rad}", lw=0.8, shrinkA=9, shrinkB=9,
            ls=":" if e.op == "none" else "-"))
        # the label sits on the arc: the Bezier midpoint is mid + rad/2 * (dy, -dx)
        lx = (x0 + x1) / 2 + rad / 2 * (y1 - y0)
        ly = (y0 + y1) / 2 - rad / 2 * (x1 - x0)
        ax.text(lx, ly, e.op, fontsize=6, ha="center", va="center", color="#222",
                bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
    ax.set_aspect("equal")
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.set_ylim(-1.3, 1.0)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def _savefig(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130)


def write_report(workdir):
    """Writes WORKDIR/report/*.png; returns the paths written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = [os.path.join(workdir, n) for n in ("genotype.json", "genotype_magnitude.json")]
    found = [(p, Genotype.load(p)) for p in paths if os.path.exists(p)]
    if not found:
        raise WorkdirError(f"{workdir} has neither genotype.json nor genotype_magnitude.json; "
                           f"run `tfnas search` (and `tfnas select`) first")
    out = os.path.join(workdir, "report")
    os.makedirs(out, exist_ok=True)
    remove_stale_temps(out)
    rows = read_jsonl(os.path.join(workdir, "selection", "scores.jsonl"))
    zc = [r for r in rows if r["kind"] == "validation"]  # zc_pt: proxies, no accuracies
    if zc:  # the chosen candidate's decisions
        rows = [r for r in rows if r.get("iteration") == zc[-1]["chosen"]]
    ops_rows = [r for r in rows if r["kind"] == "op" and r["scores"]]
    figures = [("cells.png", _cells_figure(plt, found))]
    if ops_rows:
        figures.append(("alpha_vs_pt.png", _alpha_vs_pt_figure(plt, ops_rows)))
    if zc:
        figures.append(("selection.png", _validation_figure(plt, zc[-1])))
    elif rows:
        figures.append(("selection.png", _selection_figure(plt, rows)))
    written = []
    for name, fig in figures:
        written.append(os.path.join(out, name))
        _savefig(fig, written[-1])
        plt.close(fig)
    return written


def _cells_figure(plt, found):
    ctypes = found[0][1].space_obj.cell_types
    fig, axes = plt.subplots(len(ctypes), len(found), figsize=(6 * len(found),
                                                               2.6 * len(ctypes)),
                             squeeze=False)
    for col, (p, g) in enumerate(found):
        for row, ctype in enumerate(ctypes):
            label = g.meta.get("selector", "magnitude")
            _draw_cell(axes[row][col], g, ctype, f"{os.path.basename(p)} ({label}): {ctype}")
    fig.tight_layout()
    return fig


def _alpha_vs_pt_figure(plt, ops_rows):
    n = len(ops_rows)
    cols = min(4, n)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(3.6 * cols,
                                                                 2.6 * math.ceil(n / cols)),
                             squeeze=False)
    handles = None
    for ax, r in zip(axes.flat, ops_rows):
        names = list(r["scores"])
        xs = range(len(names))
        h1 = ax.bar([x - 0.2 for x in xs], [r["alphas"][o] for o in names], 0.4,
                    color="tab:blue")
        ax2 = ax.twinx()
        h2 = ax2.bar([x + 0.2 for x in xs], [_score(r["scores"][o]) for o in names], 0.4,
                     color="tab:orange")
        handles = handles or (h1, h2)
        ax.set_xticks(list(xs), [o.replace("_conv", "").replace("_3x3", "3")
                                 .replace("_5x5", "5") for o in names],
                      rotation=45, fontsize=6)
        ax.set_title(f"{r['cell']} {r['input']}->{r['node']}: {r['choice']}", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    what = f"{ops_rows[0]['proxy']} of the supernet" if "proxy" in ops_rows[0] else \
        "supernet accuracy"
    fig.legend(handles, ["softmax(alpha) (left axis)",
                         f"{what} with the op removed (right axis)"],
               loc="lower center", ncol=2, fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def _score(s):
    """A row's score of one op: PT's accuracy, or a zero-cost proxy's value (zc_pt)."""
    return s["acc"] if isinstance(s, dict) else s


def _validation_figure(plt, row):
    fig, ax = plt.subplots(figsize=(6, 3))
    sums = row["sums"]
    ax.bar(range(1, len(sums) + 1), sums,
           color=["tab:orange" if it == row["chosen"] else "tab:blue"
                  for it in row["candidate_iterations"]])
    ax.set_xlabel("distinct candidate")
    ax.set_ylabel(f"{row['proxy']} (sum over the validation batches)")
    ax.set_title("zc_pt validation (orange: selected)")
    fig.tight_layout()
    return fig


def _selection_figure(plt, rows):
    fig, ax = plt.subplots(figsize=(6, 3))
    accs = [r["acc_after"] for r in rows]
    ax.plot(range(1, len(accs) + 1), accs, marker="o")
    ax.set_xlabel("decision (one per cell type and event)")
    ax.set_ylabel("supernet accuracy after it")
    ax.set_title("supernet accuracy during selection")
    fig.tight_layout()
    return fig
