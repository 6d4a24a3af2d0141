"""Perturbation-based architecture selection (DARTS-PT, paper Algorithm 1; REFERENCE 4).

Starting from a trained supernet (a `tfnas search` run directory):

1. op decisions: per decision event, for each cell type, pick the next undecided edge (a
   random order drawn from the seed, as the reference), score every op by the supernet's
   validation accuracy with that op masked out, and fix the edge to the op whose removal
   hurts most (`crit="loss"`: raises the loss most). Selector `pt_mag` fixes the edge to the
   op with the largest alpha instead (the paper's ablation).
2. topology decisions (DARTS family): per node with more than two inputs, repeatedly remove
   the input edge whose removal leaves accuracy highest until two remain. Unlike the
   reference, edges removed in earlier rounds stay removed while later rounds are scored.
3. between decisions the supernet is tuned (`tune_epochs` epochs at a constant lr, alphas
   of undecided edges keep training unless the search froze them); after the last decision
   one more epoch, as the reference's schedule.

Selection state is variables of the supernet, so one traced graph serves every evaluation.
Everything is checkpointed after each decision event: re-running resumes there.
"""

import dataclasses
import os
import time

import numpy as np

from tfnas.checkpoint import Checkpointer
from tfnas.config import ConfigError, _f
from tfnas.errors import WorkdirError
from tfnas.io import (append_jsonl, atomic_write_json, fmt_time, read_jsonl,
                      remove_stale_temps, truncate_jsonl)
from tfnas.selection.magnitude import magnitude_genotype

SELECTORS = ("pt", "pt_mag", "magnitude")


@dataclasses.dataclass
class SelectConfig:
    selector: str = _f("pt", "pt | pt_mag (progressive tuning, decided by alpha) | magnitude",
                       SELECTORS)
    crit: str = _f("acc", "PT score: accuracy (keep the op whose removal lowers it most) or "
                          "loss (raises it most)", ("acc", "loss"))
    tune_epochs_per_decision: int = _f(5, "supernet tuning epochs between decisions")
    tune_lr: float = _f(0.0025, "constant weight learning rate while tuning (reference)")
    score_batches: int = _f(0, "score on the first N batches of the alpha split (0: all)")
    bn_batch_stats: bool = _f(True, "BN uses batch statistics while scoring (reference)")
    seed: int = _f(-1, "seed of the edge order (-1: the search's seed)")

    def validate(self):
        if self.selector not in SELECTORS:
            raise ConfigError(f"--selector={self.selector!r} is invalid: expected one of "
                              f"{', '.join(SELECTORS)}")
        if self.crit not in ("acc", "loss"):
            raise ConfigError(f"--crit={self.crit!r} is invalid: expected acc or loss")
        if self.tune_epochs_per_decision < 0 or self.score_batches < 0 or self.tune_lr < 0:
            raise ConfigError("--tune_epochs_per_decision, --score_batches and --tune_lr must "
                              "be non-negative")
        return self

    to_json = lambda self: dataclasses.asdict(self)  # noqa: E731


def tune_supernet(loop, epochs, lr, data_base, log=print, patience=0, writer=None,
                  step_base=0, eval_kw=None):
    """Fine-tunes a (partly discretised) supernet: alternating alpha/weight epochs at the
    constant weight lr `lr`, perturbations at their tuning strength. The one tuning routine
    of `tfnas select` (between decisions) and `tfnas analyze strength` (to convergence).

    Args:
        data_base: batch-order seed of the first epoch (epoch k uses data_base + k).
        patience: 0 runs exactly `epochs`; otherwise evaluates after every epoch and stops
            once validation accuracy has not improved for `patience` epochs (at most
            `epochs`).
        writer: optional tf.summary writer for tune/* scalars (step = step_base + epoch).
        eval_kw: keyword arguments of `loop.evaluate` for the patience evaluations (e.g.
            `{"batches": 20, "batch_stats": True}`, as PT scores are measured).
    Returns:
        (records, best validation accuracy or None when patience is 0).
    """
    records, best, stale = [], None, 0
    for k in range(epochs):
        t0 = time.time()
        rec = loop.train_epoch(k, lr, data_epoch=data_base + k, tuning=True)
        line = f"  tune {k + 1}/{epochs}: train loss {rec['train_loss']:.3f} " \
               f"acc {rec['train_acc']:.3f}"
        if patience:
            rec["valid_loss"], rec["valid_acc"] = loop.evaluate(**(eval_kw or {}))
            line += f" | valid acc {rec['valid_acc']:.3f}"
            if best is None or rec["valid_acc"] > best:
                best, stale = rec["valid_acc"], 0
            else:
                stale += 1
        log(line + f"  {time.time() - t0:.1f}s")
        records.append(rec)
        if writer is not None:
            import tensorflow as tf
            with writer.as_default(step=step_base + k):
                for key in ("train_loss", "train_acc", "valid_acc"):
                    if key in rec:
                        tf.summary.scalar(f"tune/{key}", rec[key])
        if patience and stale >= patience:
            break
    return records, best


def decision_events(space, seed):
    """The reference's schedule: all op decisions (random edge order per cell type), then
    the topology decisions (random node order). Returns [(kind, {cell type: edge|node})]."""
    rng = np.random.RandomState(seed)
    events = []
    orders = {t: rng.permutation(space.cells[t].num_edges).tolist() for t in space.cell_types}
    for i in range(space.cells[space.cell_types[0]].num_edges):
        events.append(("op", {t: orders[t][i] for t in space.cell_types}))
    if space.family == "darts":
        nodes = {t: [n for n in space.cells[t].nodes if len(space.cells[t].node_edges(n)) > 2]
                 for t in space.cell_types}
        node_orders = {t: [nodes[t][k] for k in rng.permutation(len(nodes[t]))]
                       for t in space.cell_types}
        for i in range(len(nodes[space.cell_types[0]])):
            events.append(("topology", {t: node_orders[t][i] for t in space.cell_types}))
    return events


class PerturbationSelector:
    """Runs a selector on a SearchLoop whose supernet holds the trained search state.

    Args:
        loop: a SearchLoop (its model and optimizers are tuned in place).
        config: a SelectConfig.
        folder: WORKDIR/selection.
    """

    def __init__(self, loop, config, folder, log=print):
        self.loop, self.config, self.folder, self.log = loop, config, folder, log
        self.space = loop.space
        self.seed = config.seed if config.seed >= 0 else loop.config.seed
        self.events = decision_events(self.space, self.seed)
        self.restored_event, self._writer = -1, None
        self._t_start, self._first = time.time(), 0
        self.checkpointer = Checkpointer(os.path.join(folder, "checkpoints"),
                                         loop.state_variables(), keep=2)
        self.scores_path = os.path.join(folder, "scores.jsonl")

    # --- scoring ---------------------------------------------------------------------------
    def score(self):
        """The supernet's (loss, accuracy) on the alpha split under the current masks."""
        return self.loop.evaluate(self.config.score_batches, self.config.bn_batch_stats)

    def _better(self, new, best):
        """Is `new` (loss, acc) a stronger signal of importance than `best`?"""
        if best is None:
            return True
        return new[1] < best[1] if self.config.crit == "acc" else new[0] > best[0]

    def decide_op(self, ctype, edge):
        arch = self.loop.model.arch(ctype)
        ops = self.space.cells[ctype].ops[edge]
        alphas = np.asarray(arch.softmax())[edge, :len(ops)]
        # DARTS-family genotypes never keep 'none' (the reference would emit another op
        # silently, REFERENCE 4.3); NB201 may keep it.
        candidates = [k for k, op in enumerate(ops)
                      if not (op == "none" and self.space.family == "darts")]
        before = self.score()
        scores, best, choice = {}, None, None
        node, inp = self.space.cells[ctype].edges[edge]
        decided, live = arch.decided()[edge], arch.live()[edge]
        if decided or not live:
            # decided or removed before selection (e.g. by SGAS during the search): kept as is
            kept = int(np.argmax(arch.fixed_w.numpy()[edge])) if decided else None
            return {"kind": "op", "cell": ctype, "edge": edge, "node": node, "input": inp,
                    "alphas": dict(zip(ops, alphas.round(6).tolist())), "scores": {},
                    "acc_before": before[1], "acc_after": before[1],
                    "choice": ops[kept] if kept is not None else None,
                    "decided_before": True}
        if self.config.selector == "pt_mag":
            choice = max(candidates, key=lambda k: alphas[k])
        else:
            for k in candidates:
                op = ops[k]
                arch.mask_op(edge, k)
                s = self.score()
                arch.reset_op_mask()
                scores[op] = {"loss": s[0], "acc": s[1]}
                if self._better(s, best):  # strict: ties keep the earlier op
                    best, choice = s, k
        arch.fix_edge(edge, choice)
        return {"kind": "op", "cell": ctype, "edge": edge, "node": node, "input": inp,
                "alphas": dict(zip(ops, alphas.round(6).tolist())), "scores": scores,
                "acc_before": before[1], "acc_after": self.score()[1], "choice": ops[choice]}

    def decide_topology(self, ctype, node):
        arch = self.loop.model.arch(ctype)
        cspace = self.space.cells[ctype]
        live = arch.live()
        eids = [e for e in cspace.node_edges(node) if live[e]]
        before = self.score()
        rounds = []
        while len(eids) > 2:
            results = {}
            for e in eids:
                arch.remove_edge(e)
                results[e] = self.score()
                arch.remove_edge(e, removed=False)
            # remove the edge whose absence leaves accuracy highest (ties: the later edge)
            worst = max(eids, key=lambda e: (results[e][1] if self.config.crit == "acc"
                                             else -results[e][0], e))
            arch.remove_edge(worst)
            eids.remove(worst)
            rounds.append({"scores": {str(e): {"loss": r[0], "acc": r[1]}
                                      for e, r in results.items()}, "removed": worst})
        return {"kind": "topology", "cell": ctype, "node": node,
                "kept_inputs": [cspace.edges[e][1] for e in eids], "rounds": rounds,
                "acc_before": before[1], "acc_after": self.score()[1]}

    def tune_after(self, i):
        """Progressive tuning after decision event `i` (one epoch after the last event)."""
        epochs = 1 if i == len(self.events) - 1 else self.config.tune_epochs_per_decision
        tune_supernet(self.loop, epochs, self.config.tune_lr, data_base=10_000 + i * 100,
                      log=self.log, writer=self._writer, step_base=i * 1000)

    # --- the schedule ----------------------------------------------------------------------
    def restore(self):
        """Loads the last checkpointed decision event (if any) and drops log rows after it;
        returns the index of the next event to run."""
        os.makedirs(self.folder, exist_ok=True)
        state = self.checkpointer.restore_latest()
        self.restored_event = state["event"] if state else -1
        if state is None and self.config.selector != "magnitude":
            self.loop.reset_weight_optimizer()  # fresh SGD for projection tuning (REFERENCE 4.2)
        truncate_jsonl(self.scores_path, "event", self.restored_event + 1)
        if self.restored_event >= 0:
            self.log(f"resuming selection after decision "
                     f"{self.restored_event + 1}/{len(self.events)}")
        self._t_start, self._first = time.time(), self.restored_event + 1
        return self.restored_event + 1

    def run_event(self, i):
        """Runs decision event `i` (decide on every cell type, tune, checkpoint) and returns
        its log rows. An event that the restored checkpoint already holds is not rerun: its
        rows come from scores.jsonl."""
        if i <= self.restored_event:
            return [r for r in read_jsonl(self.scores_path) if r["event"] == i]
        kind, targets = self.events[i]
        rows = []
        for ctype, target in targets.items():
            row = (self.decide_op(ctype, target) if kind == "op"
                   else self.decide_topology(ctype, target))
            row["event"] = i
            append_jsonl(self.scores_path, row)
            self._tensorboard(i, row)
            self.log(self._describe(i, row))
            rows.append(row)
        self.tune_after(i)
        self.checkpointer.save(i, {"event": i})
        self.restored_event = i
        done = i - self._first + 1
        left = (time.time() - self._t_start) / done * (len(self.events) - i - 1)
        self.log(f"decision {i + 1}/{len(self.events)} done; ETA {fmt_time(left)}")
        return rows

    def run(self):
        """Runs (or resumes) every decision event without KerasTuner; returns the Genotype.
        (`tfnas select` runs the same events through `PerturbationOracle`.)"""
        for i in range(self.restore(), len(self.events)):
            self.run_event(i)
        return self.genotype()

    def genotype(self):
        """The genotype of the (fully decided) supernet."""
        g = magnitude_genotype(self.space, self.loop.model.arch_weights_numpy(), meta={
            "crit": self.config.crit, "seed": self.seed,
            "run": os.path.abspath(self.loop.workdir),
            "tune_epochs_per_decision": self.config.tune_epochs_per_decision})
        g.meta["selector"] = self.config.selector
        return g

    def _tensorboard(self, i, row):
        import tensorflow as tf
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(
                os.path.join(self.loop.workdir, "tb", "selection"))
        with self._writer.as_default(step=i):
            tf.summary.scalar(f"selection/{row['cell']}_acc_before", row["acc_before"])
            tf.summary.scalar(f"selection/{row['cell']}_acc_after", row["acc_after"])
            tf.summary.text(f"decisions/{row['cell']}", self._describe(i, row))
        self._writer.flush()

    def _describe(self, i, row):
        head = f"decision {i + 1}/{len(self.events)} {row['cell']}"
        if row.get("decided_before"):
            return (f"{head} edge {row['input']}->{row['node']}: "
                    f"{row['choice'] or 'removed'} (decided during the search)")
        if row["kind"] == "op":
            scores = ", ".join(f"{op} {s['acc']:.3f}" for op, s in row["scores"].items())
            return (f"{head} edge {row['input']}->{row['node']}: {row['choice']}"
                    + (f" (acc without each op: {scores})" if scores else " (by alpha)"))
        return f"{head} node {row['node']}: keeps inputs {row['kept_inputs']}"


def load_search(workdir, log=print, strategy=None):
    """A SearchLoop holding the last checkpoint of the finished search in `workdir`.

    Raises:
        WorkdirError: no finished search there.
    """
    import json

    import tensorflow as tf
    from tfnas.config import SearchConfig
    from tfnas.search import SearchLoop
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(os.path.join(workdir, "genotype_magnitude.json")) or \
            not os.path.exists(cfg_path):
        raise WorkdirError(f"{workdir} holds no finished search (no config.json / "
                           f"genotype_magnitude.json); run `tfnas search --workdir={workdir}` "
                           f"first")
    with open(cfg_path) as f:
        search_config = SearchConfig.from_json(json.load(f))
    loop = SearchLoop(search_config, workdir, strategy or tf.distribute.get_strategy(),
                      log=log)
    if loop.checkpointer.restore_latest() is None:
        raise WorkdirError(f"{workdir} has no search checkpoint to select from")
    return loop


def run_select(workdir, config, overwrite=False, strategy=None, log=print):
    """Selects an architecture from the finished search in `workdir`; writes
    WORKDIR/genotype.json (and WORKDIR/selection/{config.json, scores.jsonl, checkpoints,
    tuner/}). PT and PT-Mag run as KerasTuner trials of a `PerturbationOracle` (one trial per
    decision event); re-running resumes from the KerasTuner project and the selector's
    checkpoint of the last finished event."""
    import json
    import shutil
    config.validate()
    loop = load_search(workdir, log, strategy)
    folder = os.path.join(workdir, "selection")
    sel_cfg = os.path.join(folder, "config.json")
    if os.path.exists(sel_cfg) and not overwrite:
        with open(sel_cfg) as f:
            if json.load(f) != config.to_json():
                raise WorkdirError(f"{folder} holds a selection with a different config; pass "
                                   f"--overwrite to start it again")
    if overwrite:
        for path in (folder, os.path.join(workdir, "tb", "selection")):
            if os.path.isdir(path):
                shutil.rmtree(path)
    os.makedirs(folder, exist_ok=True)
    remove_stale_temps(folder)
    atomic_write_json(sel_cfg, config.to_json())
    if config.selector == "magnitude":  # the DARTS baseline: no decisions, no tuning
        # the mixing weights: decisions made during the search (SGAS) count
        genotype = loop.current_genotype(meta={"run": os.path.abspath(workdir)})
    else:
        from tfnas.selection.oracle import select_with_oracle
        genotype = select_with_oracle(PerturbationSelector(loop, config, folder, log), folder)
    if loop.benchmark is not None:  # the search's --benchmark_table (NAS-Bench-201)
        genotype.meta["benchmark"] = loop.benchmark.query_genotype(genotype)
        log("benchmark: " + ", ".join(f"{k} {v}" for k, v in genotype.meta["benchmark"].items()))
    genotype.save(os.path.join(workdir, "genotype.json"))
    return genotype
