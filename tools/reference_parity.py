#!/usr/bin/env python3
"""Step-for-step parity of tfnas with the authors' PyTorch DARTS-PT code.

The reference runs in its own Python (`tools/parity_reference.py` in a subprocess, with a
CPU export of ruocwang/darts-pt: `--reference_dir DIR` as prepared there, or `--darts_pt`
and `--reference_python`), twice: in float64 (the algorithm's numbers without rounding to
speak of) and in float32 (what the authors' code computes on a GPU or CPU); arrays come back
in `.npz` files. tfnas builds the same supernet, takes the reference's initial weights and
alphas through a name/shape map (every variable mapped, none left over: checked) and
computes the same quantities with its own product code (`SearchLoop.state.reduced_grads`,
`SearchLoop.state._step_fn`, the selector of `tfnas select`):

- one train-mode forward on a fixed batch: logits, loss, the BN running statistics after
  it, eval-mode logits; d loss / d every weight and alpha;
- `--steps` first-order search steps (alpha Adam, weight SGD with momentum, coupled L2,
  global clip, lr 0.025): every weight, BN statistic and alpha, the momentum buffers and
  Adam's moments after each step;
- `--steps` tuning steps after one op decision (the reference's `project_op` on edge 0,
  SGD re-created at lr 0.0025 as its projection tuning; tfnas: `fix_edge`, a fresh SGD):
  the same quantities;
- the PT op scores of one edge (accuracy and loss with each op masked, train-mode BN), the
  op they choose and the BN statistics after the scoring passes;
- one topology decision (DARTS family: the reference's own `project_edge` on the node with
  five inputs): every candidate evaluation of every round, the inputs kept, BN statistics.

    python tools/reference_parity.py --reference_dir DIR [--configs=darts_c8_l5] \
        [--json out.json]

Prints one table: per quantity the largest difference of tfnas from the float64 reference
(absolute, and relative to each tensor's scale), beside the same measure for the authors'
float32 run. A quantity is ok within its tolerance, or when tfnas is no further from the
float64 numbers than twice the authors' own float32 code is; decisions must be equal. Exits
1 otherwise. docs/PARITY.md has the last table and why the tolerances are what they are.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from tfnas.errors import UsageError
from tfnas.interop.darts_pt import map_variables, to_tf

CONFIGS = {
    "darts_c8_l5": dict(space="darts", channels=8, layers=5),
    "s1_c8_l5": dict(space="s1", channels=8, layers=5),
    "s2_c8_l5": dict(space="s2", channels=8, layers=5),
    "s3_c8_l5": dict(space="s3", channels=8, layers=5),
    "nb201_c8_n1": dict(space="nb201", channels=8, layers=1),
}
DEFAULT_CONFIGS = tuple(CONFIGS)
# S4's `noise` op draws fresh Gaussian noise in every training-mode call: no two codes can
# share it, so S4 is not a parity config.
FORWARD_TOL = 1e-5   # logits, loss, statistics: relative to the quantity's scale
# After a step: ReLU kinks sit at the 1e-6 scale of float32 rounding (docs/PARITY.md: in
# float64, input noise of 1e-6 moves the NB201 alpha gradient by 7e-3), and Adam's first
# step divides by |g|; a difference beyond both this and twice the authors' own float32
# error is a finding.
STEP_TOL = 1e-3
# the input change of the float64 yardstick runs: the size of tfnas's own forward difference
# from float64 (logits 2.3e-6 DARTS, 3.0e-6 S1; docs/PARITY.md has the 1e-6 table too)
KINK_PROBE = 3e-6
KINK_DRAWS = 4     # noise draws: a kink that one direction misses, another finds
TUNE_OP = 1        # the op the tuning steps' decision fixes on edge 0 (--tune_op there)
# --- tfnas side ---------------------------------------------------------------------------------
def build_loop(cfg, ref, folder):
    """A SearchLoop of `cfg` on 32x32x3 images, 10 classes, the reference's batch size."""
    import tensorflow as tf
    from tfnas.config import SearchConfig
    from tfnas.search import SearchLoop
    x = np.zeros((64, 32, 32, 3), np.uint8)
    y = np.arange(64) % 10
    data = os.path.join(folder, "data.npz")
    np.savez(data, x_train=x, y_train=y)
    config = SearchConfig(dataset=f"npz:{data}", space=cfg["space"], channels=cfg["channels"],
                          layers=cfg["layers"], batch_size=len(ref["y_t"]), epochs=1,
                          arch_update="first_order").validate()
    loop = SearchLoop(config, os.path.join(folder, "run"), tf.distribute.get_strategy(),
                      log=lambda s: None)
    loop.state.w_opt.learning_rate.assign(config.lr)  # the reference's epoch-0 rate
    return loop


class Mapped:
    """The reference's state_dict keys matched to tfnas variables (both ways checked)."""

    def __init__(self, loop, ref, cfg):
        model, space = loop.model, loop.space
        self.prefix = model.name + "/"
        keys = sorted(k[5:] for k in ref.files
                      if k.startswith("init/") and not k.startswith("init/alpha_"))
        try:
            self.pairs = map_variables(model, space, keys,
                                       {k: ref["init/" + k].shape for k in keys}, cfg["layers"])
        except UsageError as e:
            raise SystemExit(f"the name map does not cover both models: {e}")
        self.archs = {t: loop.model.arch(t) for t in space.cell_types}
        self.alphas = {t: a.alpha for t, a in self.archs.items()}
        arch_left = [v.path for v in model.variables if not v.path.startswith(self.prefix)
                     and not v.path.endswith(("/alpha", "op_mask", "fixed_w", "is_fixed",
                                              "edge_mask"))]
        if arch_left:
            raise SystemExit(f"tfnas variables outside the map: {arch_left}")

    def load(self, ref, prefix="init"):
        """The reference's state `prefix` into tfnas, and no edge masked, decided or removed
        (the reference's projection flags start clear at each of its sections)."""
        for key, var in self.pairs.items():
            var.assign(to_tf(var.path, ref[f"{prefix}/{key}"]))
        for t, a in self.alphas.items():
            a.assign(ref[f"{prefix}/alpha_{t}"])
            arch = self.archs[t]
            arch.reset_op_mask()
            arch.fixed_w.assign(np.zeros(arch.fixed_w.shape, np.float32))
            arch.is_fixed.assign(np.zeros(arch.is_fixed.shape, np.float32))
            arch.edge_mask.assign(np.ones(arch.edge_mask.shape, np.float32))


def _reset_optimizers(loop):
    for v in loop.state.w_opt.buffers + loop.state.a_opt.m + loop.state.a_opt.v:
        v.assign(np.zeros(v.shape, np.float32))
    loop.state.w_opt.iterations.assign(0)
    loop.state.a_opt.iterations.assign(0)


def _error(ours, theirs, floor):
    """(max abs difference, that relative to the tensor's scale, floored at `floor`)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        return float("inf"), float("inf")
    diff = float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
    scale = max(float(np.max(np.abs(theirs))) if theirs.size else 0.0, floor)
    return diff, diff / scale if scale else diff


def compare(rows, name, config, triples, tol, floor_frac=1e-3):
    """One row for a group of tensors [(label, tfnas, reference float64, reference
    float32)]: the worst difference of tfnas from the float64 reference, relative to each
    tensor's scale (floored at `floor_frac` of the group's largest, so near-zero tensors do
    not dominate; BN statistics use the group's largest: a batch mean near zero is measured
    against the statistics' scale), beside the same measure of the reference's own float32
    run. A quantity is ok within `tol`, or when tfnas is no further from the float64 numbers
    than twice the authors' float32 code is."""
    floor = floor_frac * max((float(np.max(np.abs(t[2]))) for t in triples if np.size(t[2])),
                             default=0.0)
    worst, ref_worst = (0.0, 0.0, ""), 0.0
    # sums of squares: tfnas - ref64, ref32 - ref64, ref64, each probe - ref64
    sq, probes = np.zeros(3), None
    for label, ours, ref64, ref32, *moved in triples:
        diff, rel = _error(ours, ref64, floor)
        if rel >= worst[1]:
            worst = (diff, rel, label)
        ref_worst = max(ref_worst, _error(ref32, ref64, floor)[1])
        a, b, c = (np.asarray(x, np.float64) for x in (ours, ref32, ref64))
        probes = np.zeros(len(moved)) if probes is None else probes
        probes += [np.sum((np.asarray(d, np.float64) - c) ** 2) for d in moved]
        if a.shape == c.shape:
            sq += [np.sum((a - c) ** 2), np.sum((b - c) ** 2), np.sum(c ** 2)]
        else:
            sq[0] = float("inf")
    norm = sq[2] if sq[2] else 1.0
    l2, ref_l2 = (float(np.sqrt(x / norm)) for x in sq[:2])
    kink_l2 = float(np.sqrt(np.max(probes) / norm)) if probes is not None and len(probes) \
        else 0.0
    # ok: within `tol`; or no further from float64 than twice the authors' float32 run (worst
    # tensor or whole group); or, over the whole group, than twice what the float64
    # reference itself moves when its inputs move by 1e-6 (ReLU kinks at rounding scale)
    ok = worst[1] <= tol or worst[1] <= 2 * ref_worst or l2 <= tol or l2 <= 2 * ref_l2 or \
        l2 <= 2 * kink_l2
    rows.append(dict(quantity=name, config=config, abs=worst[0], rel=worst[1],
                     ref_f32_rel=ref_worst, l2=l2, ref_f32_l2=ref_l2, kink_l2=kink_l2,
                     tol=tol, ok=bool(ok),
                     note=f"{len(triples)} tensors; worst {worst[2]}" if len(triples) > 1
                     else ""))


def run_tfnas(cfg_name, cfg, r, q, folder, steps, k):
    """The parity rows of one config: `r` the float64 reference run, `q` the float32 one
    (the same initial weights and batches), `k` the float64 runs on inputs moved by 1e-6
    (one per noise draw)."""
    import tensorflow as tf
    loop = build_loop(cfg, r, folder)
    m = Mapped(loop, r, cfg)
    rows = []
    nhwc = lambda a: tf.constant(a.transpose(0, 2, 3, 1).astype(np.float32))  # noqa: E731
    xt, yt = nhwc(r["x_t"]), tf.constant(r["y_t"].astype(np.int64))
    xv, yv = nhwc(r["x_v"]), tf.constant(r["y_v"].astype(np.int64))
    keys = sorted(m.pairs)
    bn_keys = [k for k in keys if "running_" in k]
    grad_keys = [k for k in keys if f"grad/{k}" in r.files]

    def tensors(prefix, key_list, ours):
        return [(key, ours(key), *(to_tf(m.pairs[key].path, run[f"{prefix}/{key}"])
                                   for run in (r, q, *k))) for key in key_list]

    def one(label, ours, key):
        return [(label, ours, r[key], q[key], *(run[key] for run in k))]

    # one train-mode forward: logits, loss, BN statistics; eval-mode logits after it
    m.load(q)  # the float32 initial weights (the float64 run converted the same ones)
    logits = loop.model(xt, training=True)
    compare(rows, "logits (train mode)", cfg_name, one("", logits, "fwd/logits"), FORWARD_TOL)
    loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
        yt, logits, from_logits=True))
    compare(rows, "loss (train mode)", cfg_name, one("", loss, "fwd/loss"), FORWARD_TOL)
    compare(rows, "BN running stats after it", cfg_name,
            tensors("bn", bn_keys, lambda k: m.pairs[k].numpy()), FORWARD_TOL, 1.0)
    compare(rows, "logits (eval mode)", cfg_name,
            one("", loop.model(xt, training=False), "eval/logits"), FORWARD_TOL)
    # gradients of the same forward (the product's reduced_grads), from the initial state
    m.load(q)
    grads = loop.state.reduced_grads((xt, yt), [m.pairs[k] for k in grad_keys]
                                     + list(m.alphas.values()))
    by_key = dict(zip(grad_keys, grads))
    compare(rows, "d loss / d weights", cfg_name,
            tensors("grad", grad_keys, lambda k: by_key[k].numpy()), FORWARD_TOL)
    compare(rows, "d loss / d alpha", cfg_name,
            [(t, g.numpy(), *(run[f"grad/alpha_{t}"] for run in (r, q, *k)))
             for t, g in zip(m.alphas, grads[len(grad_keys):])], FORWARD_TOL)

    # search steps from the initial state
    m.load(q)
    _reset_optimizers(loop)
    step_rows(rows, cfg_name, loop, m, (xt, yt, xv, yv), steps, "step", tensors, keys,
              grad_keys, (r, q, *k))
    # tuning steps after one op decision (the reference's projection tuning: SGD re-created
    # at lr / 10, the decided row one-hot, the other alphas training)
    m.load(q)
    _reset_optimizers(loop)
    ctype = loop.space.cell_types[0]
    loop.model.arch(ctype).fix_edge(0, TUNE_OP)
    loop.state.w_opt.learning_rate.assign(loop.config.lr / 10)
    # the decided edge's other ops weigh zero from now on: the reference skips them (DARTS
    # family: no forward, no gradient, no SGD update, BN statistics left), tfnas's full step
    # graph runs them at weight 0 (their statistics move, L2 decays their weights); nothing
    # downstream ever reads them again, so they are compared apart, as a known difference
    dead = _dead_keys(loop, keys) if loop.space.skips_zero_ops else set()
    step_rows(rows, cfg_name, loop, m, (xt, yt, xv, yv), steps, "tune", tensors,
              [key for key in keys if key not in dead], grad_keys, (r, q, *k))
    if dead:
        compare(rows, "tuning: zero-weight ops (differs)", cfg_name,
                tensors(f"tune{steps}", sorted(dead), lambda key: m.pairs[key].numpy()),
                float("inf"), 1.0)
    loop.state.w_opt.learning_rate.assign(loop.config.lr)

    # PT: the op scores of one edge (normal cell), train-mode BN, on the valid batch, from
    # the initial state: the product's selector (its traced eval graph, run-time skips and
    # choice), its alpha split replaced by the reference's batch
    m.load(q)
    edge, ctype = 0, loop.space.cell_types[0]
    row = pt_decision(loop, folder, ctype, edge, (xv, yv))
    all_ops = list(loop.space.cells[ctype].ops[edge])
    # tfnas never scores `none` in a DARTS-family space (a genotype there cannot keep it;
    # docs/DESIGN.md): the candidates it scores are compared
    idx = [k for k, op in enumerate(all_ops) if op in row["scores"]]
    ops = [all_ops[k] for k in idx]
    compare(rows, "PT: accuracy with each op masked", cfg_name,
            [("", [row["scores"][op]["acc"] for op in ops], r["pt/acc"][idx],
              q["pt/acc"][idx])], 0.0)
    compare(rows, "PT: loss with each op masked", cfg_name,
            [("", [row["scores"][op]["loss"] for op in ops], r["pt/loss"][idx],
              q["pt/loss"][idx])], FORWARD_TOL)
    # strict '<' in project_op: the first minimum (over the ops tfnas may choose)
    theirs = ops[int(np.argmin(r["pt/acc"][idx]))]
    rows.append(dict(quantity="PT: the op chosen", config=cfg_name,
                     abs=float(row["choice"] != theirs), rel=float(row["choice"] != theirs),
                     ref_f32_rel=0.0, tol=0.0, ok=row["choice"] == theirs,
                     note=f"tfnas {row['choice']}, reference {theirs}"))
    # the reference scores `none` too: one more training-mode pass (BN updates) than tfnas
    extra = len(idx) < len(all_ops)
    compare(rows, "PT: BN running stats after the passes" + " (differs)" * extra, cfg_name,
            tensors("pt_bn", bn_keys, lambda key: m.pairs[key].numpy()),
            float("inf") if extra else FORWARD_TOL, 1.0)
    if "topo/nid" in r.files:
        m.load(q)
        topology_rows(rows, cfg_name, loop, folder, r, q, (xv, yv),
                      lambda: tensors("topo_bn", bn_keys, lambda k: m.pairs[k].numpy()))
    return rows


def _dead_keys(loop, keys):
    """The reference keys (`cells.I._ops.E._ops.K...`) of ops the selection state makes zero
    for good (`Supernet.zero_ops`)."""
    zero, cells = loop.model.zero_ops(), loop.model.search_cells()
    dead = set()
    for key in keys:
        p = key.split(".")
        if p[0] == "cells" and len(p) > 5 and p[2] == "_ops" and p[4] == "_ops":
            if (cells[int(p[1])][1], int(p[3]), int(p[5])) in zero:
                dead.add(key)
    return dead


def step_rows(rows, cfg_name, loop, m, batches, steps, prefix, tensors, keys, grad_keys,
              runs):
    """`steps` steps of the product's traced step on the reference's batches, compared after
    each with the reference's PREFIXk/ state: weights and BN statistics, alphas, momentum
    buffers, Adam moments."""
    xt, yt, xv, yv = batches
    r = runs[0]
    what = {"step": "step", "tune": "tuning step"}[prefix]
    for n in range(1, steps + 1):
        loop.state._step_fn((xt, yt), (xv, yv))
        pre = f"{prefix}{n}"
        compare(rows, f"{what} {n}: weights and BN stats", cfg_name,
                tensors(pre, keys, lambda key: m.pairs[key].numpy()), STEP_TOL)
        compare(rows, f"{what} {n}: alphas", cfg_name,
                [(t, a.numpy(), *(run[f"{pre}/alpha_{t}"] for run in runs))
                 for t, a in m.alphas.items()], STEP_TOL)
        compare(rows, f"{what} {n}: SGD momentum buffers", cfg_name,
                tensors(f"{pre}/mom", [key for key in grad_keys if f"{pre}/mom/{key}" in r.files],
                        lambda key: loop.state.w_opt.buffer(m.pairs[key]).numpy()), STEP_TOL)
        compare(rows, f"{what} {n}: Adam moments", cfg_name,
                [(f"{t} {s}", getattr(loop.state.a_opt, s)[i].numpy(),
                  *(run[f"{pre}/adam_{s}/alpha_{t}"] for run in runs))
                 for i, t in enumerate(m.alphas) for s in ("m", "v")], STEP_TOL)


def topology_rows(rows, cfg_name, loop, folder, r, q, batch, bn_tensors):
    """One topology decision of the normal cell (the node the reference drew), from the
    initial state: every candidate evaluation of every round, the kept inputs, and the BN
    statistics after it."""
    node = int(r["topo/nid"]) + 3  # the reference's nid2eids: {0: node 3, 1: 4, 2: 5}
    row = pt_decision(loop, folder, "normal", node, batch, kind="topology")
    ours = [(int(e), s["acc"], s["loss"]) for rnd in row["rounds"]
            for e, s in sorted(rnd["scores"].items(), key=lambda kv: int(kv[0]))]
    theirs = [(int(e), a, loss) for e, a, loss in r["topo/evals"]]
    same_order = [e for e, _, _ in ours] == [e for e, _, _ in theirs]
    rows.append(dict(quantity="topology: the edges each round scores", config=cfg_name,
                     abs=float(not same_order), rel=float(not same_order), ref_f32_rel=0.0,
                     tol=0.0, ok=same_order, note=f"tfnas {[e for e, _, _ in ours]}"))
    if same_order:
        compare(rows, "topology: accuracy without each edge", cfg_name,
                [("", [a for _, a, _ in ours], r["topo/evals"][:, 1], q["topo/evals"][:, 1])],
                0.0)
        compare(rows, "topology: loss without each edge", cfg_name,
                [("", [x for _, _, x in ours], r["topo/evals"][:, 2], q["topo/evals"][:, 2])],
                FORWARD_TOL)
    edges = loop.space.cells["normal"].edges
    kept = sorted(edges[int(e)][1] for e in r["topo/kept"])
    rows.append(dict(quantity="topology: the inputs kept", config=cfg_name,
                     abs=float(sorted(row["kept_inputs"]) != kept),
                     rel=float(sorted(row["kept_inputs"]) != kept), ref_f32_rel=0.0, tol=0.0,
                     ok=sorted(row["kept_inputs"]) == kept,
                     note=f"node {node}: tfnas {row['kept_inputs']}, reference {kept}"))
    compare(rows, "topology: BN running stats after it", cfg_name, bn_tensors(), FORWARD_TOL,
            1.0)


def pt_decision(loop, folder, ctype, target, batch, kind="op"):
    """The decision row of `tfnas select`'s selector (`kind` "op": edge `target`;
    "topology": node `target`), scored on `batch`."""
    from tfnas.selection.pt import PerturbationSelector, SelectConfig
    selector = PerturbationSelector(loop, SelectConfig(), os.path.join(folder, "selection"),
                                    log=lambda s: None)

    def evaluate(batches=0, batch_stats=False):  # SearchLoop.evaluate on one given batch
        for name in ("valid_loss", "valid_acc"):
            loop.state.metrics[name].reset_state()
        loop.state._eval_fn(batch, training=bool(batch_stats))
        return (float(loop.state.metrics["valid_loss"].result()),
                float(loop.state.metrics["valid_acc"].result()))
    loop.evaluate = evaluate
    return selector.decide(kind, ctype, target)


def run_reference(args, cfg, out, dtype, perturb=0.0, draw=0):
    cmd = [args.reference_python, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                               "parity_reference.py"), f"--dtype={dtype}",
           f"--darts_pt={args.darts_pt}", f"--out={out}", f"--space={cfg['space']}",
           f"--channels={cfg['channels']}", f"--layers={cfg['layers']}",
           f"--batch={args.batch}", f"--steps={args.steps}", f"--seed={args.seed}",
           f"--perturb={perturb}", f"--perturb_seed={draw}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"the reference run failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return np.load(out)


def table(rows):
    lines = ["tfnas (float32) against the reference in float64; 'ref f32': the reference's "
             "own float32 run against it; 'l2': over the whole group; 'kink l2': the float64 "
             f"reference against itself on inputs moved by {KINK_PROBE:g} (the largest of "
             f"{KINK_DRAWS} draws)",
             f"{'quantity':40s} {'config':12s} {'max abs':>9s} {'max rel':>9s} "
             f"{'ref f32':>9s} {'l2':>9s} {'ref l2':>9s} {'kink l2':>9s} {'tol':>6s}  ok"]
    for r in rows:
        lines.append(f"{r['quantity'][:40]:40s} {r['config']:12s} {r['abs']:9.2e} "
                     f"{r['rel']:9.2e} {r['ref_f32_rel']:9.2e} {r.get('l2', r['rel']):9.2e} "
                     f"{r.get('ref_f32_l2', r['ref_f32_rel']):9.2e} "
                     f"{r.get('kink_l2', 0.0):9.2e} {r['tol']:6.0e}  "
                     f"{'yes' if r['ok'] else 'NO'}"
                     + (f"  ({r['note']})" if r.get("note") and not r["ok"] else ""))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference_dir", default=os.environ.get("TFNAS_REFERENCE_DIR", ""),
                   help="what prepare_reference.sh made: DIR/darts-pt and DIR/venv "
                        "(default: $TFNAS_REFERENCE_DIR)")
    p.add_argument("--darts_pt", default="", help="a CPU export of ruocwang/darts-pt")
    p.add_argument("--reference_python", default="", help="a Python with PyTorch")
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                   help=f"a comma list of {', '.join(CONFIGS)}")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    if args.reference_dir:
        args.darts_pt = args.darts_pt or os.path.join(args.reference_dir, "darts-pt")
        args.reference_python = args.reference_python or os.path.join(
            args.reference_dir, "venv", "bin", "python")
    for flag, path in (("--darts_pt", args.darts_pt),
                       ("--reference_python", args.reference_python)):
        if not path or not os.path.exists(path):
            p.error(f"{flag}: {path or 'not given'} does not exist (or give --reference_dir)")
    rows = []
    for name in args.configs.split(","):
        if name not in CONFIGS:
            raise SystemExit(f"--configs: {name!r} is unknown; expected {', '.join(CONFIGS)}")
        with tempfile.TemporaryDirectory() as folder:
            runs = [("float64", 0.0, 0), ("float32", 0.0, 0)] + [
                ("float64", KINK_PROBE, i) for i in range(KINK_DRAWS)]
            r, q, *k = (run_reference(args, CONFIGS[name], os.path.join(folder, f"{i}.npz"),
                                      *run) for i, run in enumerate(runs))
            rows += run_tfnas(name, CONFIGS[name], r, q, folder, args.steps, k)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "batch": args.batch, "steps": args.steps,
                       "seed": args.seed}, f, indent=1)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
