"""`tfnas analyze strength` (paper Figures 1 and 7): discretisation accuracy at convergence
per op beside its alpha, its PT score and (`--proxies`) zero-cost proxies' values with it
masked, each criterion's Kendall tau with the accuracy at convergence."""

import os
import time

import numpy as np

from tfnas.analyze.common import _out_dir, _plt, _save_png, _writer, kendall_tau
from tfnas.errors import ConfigError, WorkdirError
from tfnas.io import append_jsonl, atomic_write_json, fmt_time, read_jsonl
from tfnas.bilevel import tune_supernet
from tfnas.selection.run import load_search

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


def _finished_rows(path, settings):
    """{(cell, edge, op): row} already in strength.jsonl (same settings, or an error)."""
    done = {}
    for r in read_jsonl(path):
        if r.get("settings") != settings:
            raise WorkdirError(f"{path} was written with other settings ({r.get('settings')}); "
                               f"move it away to start again")
        done[(r["cell"], r["edge"], r["op"])] = r
    return done


def parse_proxies(text):
    """'nwot,snip' -> ["nwot", "snip"] (registered proxies only)."""
    from tfnas.derive.proxies import PROXIES
    names = [p.strip() for p in text.split(",") if p.strip()]
    for name in names:
        if name not in PROXIES:
            raise ConfigError(f"--proxies: {name!r} is not a proxy; expected some of "
                              f"{', '.join(PROXIES.names())}")
    return names


def _proxy_values(loop, names, seed):
    """callable() -> {proxy: value} of the supernet under its current masks on one fixed
    batch of the weight split (the same batch for every op)."""
    from tfnas.derive.proxies import ProxyScorer
    if not names:
        return dict
    batch = next(iter(loop.pipeline.train(loop.train_idx, 30_000 + seed, repeat=True)))
    scorers = {n: ProxyScorer(loop.model, n) for n in names}
    return lambda: {n: sc(*batch) for n, sc in scorers.items()}


def _measure_op(loop, search_state, ctype, e, k, baseline, proxy_values, tuning, log):
    """One (edge, op) row: alpha, PT score, proxies, accuracy discretised and converged."""
    max_epochs, patience, lr, score_batches = tuning
    space = loop.space
    loop.checkpointer.restore(search_state)  # the trained supernet, every time
    arch = loop.model.arch(ctype)
    arch.mask_op(e, k)  # proxies first: the scoring passes below move BN statistics
    without = proxy_values()
    arch.reset_op_mask()
    if (ctype, e) not in baseline:
        baseline[(ctype, e)] = loop.evaluate(score_batches, batch_stats=True)[1]
    alpha = float(np.asarray(arch.softmax())[e, k])
    arch.mask_op(e, k)
    pt_acc = loop.evaluate(score_batches, batch_stats=True)[1]
    loop.checkpointer.restore(search_state)  # scoring with batch stats moved BN stats
    loop.state.reset_weight_optimizer()  # fresh SGD for the tuning, as `tfnas select`
    arch.fix_edge(e, k)
    # every accuracy of a row is measured the same way as the PT score beside it
    disc_acc = loop.evaluate(score_batches, batch_stats=True)[1]
    records, best = tune_supernet(loop, max_epochs, lr, data_base=20_000, log=log,
                                  patience=max(patience, 1),
                                  eval_kw={"batches": score_batches, "batch_stats": True})
    row = {"cell": ctype, "edge": e, "node": space.cells[ctype].edges[e][0],
           "input": space.cells[ctype].edges[e][1], "op": space.cells[ctype].ops[e][k],
           "alpha": alpha, "pt_acc_without": pt_acc, "supernet_acc": baseline[(ctype, e)],
           "acc_discretized": disc_acc,
           "acc_converged": disc_acc if best is None else best,  # None: 0 epochs
           "epochs": len(records)}
    if without:
        row["proxy_without"] = without
    return row


def run_strength(workdir, edges="", random_edges=0, max_epochs=10, patience=2, lr=0.0025,
                 ops="", score_batches=0, seed=0, log=print, strategy=None, proxies=""):
    """Discretisation accuracy at convergence of every op on the chosen edges (`proxies`:
    also each named proxy's value with the op masked).

    Each (edge, op) result is appended to analysis/strength.jsonl as soon as it finishes; a
    rerun skips those. Returns the summary dict also written to analysis/strength.json.
    """
    names = parse_proxies(proxies)
    loop = load_search(workdir, log=log, strategy=strategy)
    space = loop.space
    targets = strength_targets(space, edges, random_edges, seed, ops)
    folder = _out_dir(workdir)
    path = os.path.join(folder, "strength.jsonl")
    settings = {"max_epochs": max_epochs, "patience": patience, "lr": lr,
                "score_batches": score_batches}
    if names:
        settings["proxies"] = names
    proxy_values = _proxy_values(loop, names, seed)
    done = _finished_rows(path, settings)
    search_state = loop.checkpointer.list()[-1][1]
    todo = [(c, e, k) for c, e, ks in targets for k in ks
            if (c, e, space.cells[c].ops[e][k]) not in done]
    writer = _writer(workdir)
    t_start, finished = time.time(), 0
    baseline = {}
    for ctype, e, k in todo:
        op = space.cells[ctype].ops[e][k]
        row = _measure_op(loop, search_state, ctype, e, k, baseline, proxy_values,
                          (max_epochs, patience, lr, score_batches), log)
        row["settings"] = settings
        append_jsonl(path, row)
        finished += 1
        eta = (time.time() - t_start) / finished * (len(todo) - finished)
        log(f"strength {ctype} edge {row['input']}->{row['node']} {op}: alpha "
            f"{row['alpha']:.3f}, acc without it {row['pt_acc_without']:.3f}, at convergence "
            f"{row['acc_converged']:.3f} ({row['epochs']} epochs)  [{finished}/{len(todo)}, "
            f"ETA {fmt_time(eta)}]")
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
        names = sorted(set().union(*(mine[o].get("proxy_without", {}) for o in ops))) \
            if ops else []
        proxy = {n: [-mine[o].get("proxy_without", {}).get(n, np.nan) for o in ops]
                 for n in names}  # higher = more important, as pt_importance
        edges.append({
            **{f"{n}_importance": v for n, v in proxy.items()},
            **{f"tau_{n}_strength": kendall_tau(v, conv) for n, v in proxy.items()},
            "cell": ctype, "edge": e, "node": node, "input": inp, "ops": ops, "alpha": alpha,
            "pt_importance": pt, "acc_converged": conv,
            "tau_alpha_strength": kendall_tau(alpha, conv),
            "tau_pt_strength": kendall_tau(pt, conv),
            "tau_alpha_pt": kendall_tau(alpha, pt),
            "best_by_alpha": ops[int(np.argmax(alpha))] if ops else None,
            "best_by_pt": ops[int(np.argmax(pt))] if ops else None,
            "strongest": ops[int(np.argmax(conv))] if ops else None})
    criteria = sorted({k[4:-9] for ed in edges for k in ed
                       if k.startswith("tau_") and k.endswith("_strength")})
    summary = {"edges": edges,
               "mean_tau_strength": {c: _nanmean([ed.get(f"tau_{c}_strength") for ed in edges])
                                     for c in criteria},
               "note": "pt_importance = -(supernet accuracy with the op removed); "
                       "PROXY_importance = -(the proxy's value with the op removed); "
                       "tau = Kendall tau-b over the ops of one edge; mean_tau_strength: its "
                       "mean over the edges, per criterion"}
    atomic_write_json(os.path.join(folder, "strength.json"), summary)
    _plot_strength(edges, os.path.join(folder, "strength.png"))
    return summary


def _nanmean(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


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
