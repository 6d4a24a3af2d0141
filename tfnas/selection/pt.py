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
Everything is checkpointed after each decision event: re-running resumes there. A stop
request (SIGTERM / SIGINT, `tfnas.interrupt`) during the tuning saves the state at the next
step (a partial checkpoint: the event's decisions, the tuning epoch and step); one during
the scoring of an event stops before the next scoring pass and resumes from the previous
event's checkpoint.
"""

import dataclasses
import os
import time


from tfnas.bilevel import tune_supernet
from tfnas.bilevel.graphs import MODES as GRAPH_MODES
from tfnas.checkpoint import Checkpointer
from tfnas.config import ConfigError, _f, check_numbers
from tfnas.interrupt import STOP
from tfnas.io import append_jsonl, fmt_time, read_jsonl, truncate_jsonl
from tfnas.derive import SELECTORS, decide, decision_events, get_selector, magnitude_genotype
from tfnas.derive.api import keeping_bn_stats
from tfnas.derive.perturbation import TOPOLOGY_RULES
from tfnas.derive.zero_cost import EDGE_ORDERS, ZeroCost
from tfnas.errors import UsageError


@dataclasses.dataclass
class SelectConfig:
    selector: str = _f("pt", "a registered selector: pt | pt_mag (progressive tuning, decided "
                             "by alpha) | zc_pt (Zero-Cost-PT: a proxy, no tuning) | "
                             "magnitude")
    crit: str = _f("acc", "PT score: accuracy (keep the op whose removal lowers it most) or "
                          "loss (raises it most)", ("acc", "loss"))
    tune_epochs_per_decision: int = _f(5, "supernet tuning epochs between decisions")
    tune_lr: float = _f(0.0025, "constant weight learning rate while tuning (reference)")
    ckpt_every_steps: int = _f(0, "also save the tuning's state every N steps (a preempted "
                                  "selection resumes there; 0: after each decision event and "
                                  "on SIGTERM)")
    score_batches: int = _f(0, "score on the first N batches of the alpha split (0: all)")
    bn_batch_stats: bool = _f(True, "BN uses batch statistics while scoring (reference)")
    seed: int = _f(-1, "seed of the edge order (-1: the search's seed)")
    max_params: int = _f(0, "budget: trainable parameters of the final network (0: none)")
    max_macs: int = _f(0, "budget: multiply-adds per image of the final network (0: none)")
    max_latency_ms: float = _f(0.0, "budget: onnxruntime batch-1 latency of the final "
                                    "network, estimated from a per-op table (0: none)")
    latency_table: str = _f("", "per-op latency table JSON for --max_latency_ms (default: "
                                "measured here once, kept in WORKDIR/selection)")
    final_channels: int = _f(0, "C of the final network the budget is about (0: the search's)")
    final_layers: int = _f(0, "cells of the final network (0: the search's)")
    topology_rule: str = _f("reference", "topology rounds: reference (each remaining input "
                                         "scored with only itself removed, as the authors' "
                                         "code) | cumulative (earlier rounds' removals stay "
                                         "out while later rounds are scored)",
                            TOPOLOGY_RULES)
    prune_decided: str = _f("auto", "trace graphs without the ops that decided and removed "
                                    "edges make zero (the same function, less work; rounding "
                                    "differs by ~1e-7): auto (when the batches ahead pay for "
                                    "the trace) | always | never",
                            GRAPH_MODES)
    proxy: str = _f("nwot", "zc_pt: the zero-cost proxy: nwot | jacob_cov | snip | grad_norm | "
                            "fisher | synflow (or one registered by an extension)")
    zc_iterations: int = _f(10, "zc_pt: candidate architectures searched (the paper's N)")
    zc_validate_rounds: int = _f(100, "zc_pt: batches each distinct candidate's discrete "
                                      "network is scored on (the paper's V)")
    zc_edge_order: str = _f("random", "zc_pt: the edge order of each iteration", EDGE_ORDERS)
    zc_at_init: bool = _f(False, "zc_pt: score the supernet as initialised from the run's seed "
                                 "instead of its trained weights")

    def budget_kind(self):
        """(kind, limit) of the budget flag that is set, or None."""
        set_ = [(k, v) for k, v in (("params", self.max_params), ("macs", self.max_macs),
                                    ("latency_ms", self.max_latency_ms)) if v]
        return set_[0] if set_ else None

    def validate(self):
        check_numbers(self, seed_allow=(-1,))
        if self.selector not in SELECTORS:
            raise ConfigError(f"--selector={self.selector!r} is invalid: expected one of "
                              f"{', '.join(SELECTORS.names())}")
        if self.crit not in ("acc", "loss"):
            raise ConfigError(f"--crit={self.crit!r} is invalid: expected acc or loss")
        if min(self.tune_epochs_per_decision, self.score_batches, self.tune_lr,
               self.ckpt_every_steps) < 0:
            raise ConfigError("--tune_epochs_per_decision, --score_batches, --tune_lr and "
                              "--ckpt_every_steps must be non-negative")
        budgets = [f"--max_{k}" for k, v in (("params", self.max_params), ("macs", self.max_macs),
                                             ("latency_ms", self.max_latency_ms)) if v]
        if min(self.max_params, self.max_macs, self.max_latency_ms, self.final_channels,
               self.final_layers) < 0:
            raise ConfigError("--max_params, --max_macs, --max_latency_ms, --final_channels "
                              "and --final_layers must be non-negative")
        if len(budgets) > 1:
            raise ConfigError(f"{' and '.join(budgets)}: give one budget at a time")
        if budgets and not get_selector(self.selector).decides:
            raise ConfigError(f"{budgets[0]} applies to --selector=pt or pt_mag "
                              f"({self.selector} makes no decisions to constrain)")
        if self.topology_rule not in TOPOLOGY_RULES:
            raise ConfigError(f"--topology_rule={self.topology_rule!r} is invalid: expected "
                              f"one of {', '.join(TOPOLOGY_RULES)}")
        if self.prune_decided not in GRAPH_MODES:
            raise ConfigError(f"--prune_decided={self.prune_decided!r} is invalid: expected "
                              f"one of {', '.join(GRAPH_MODES)}")
        if self.latency_table and not self.max_latency_ms:
            raise ConfigError("--latency_table is used with --max_latency_ms only")
        self._validate_zero_cost()
        return self

    def _validate_zero_cost(self):
        zc = {f: getattr(self, f) for f in ZC_FIELDS}
        if self.selector != "zc_pt":
            changed = [f"--{f}" for f, v in zc.items() if v != _DEFAULTS[f]]
            if changed:
                raise ConfigError(f"{', '.join(changed)}: for --selector=zc_pt only (the "
                                  f"selector is {self.selector})")
            return
        try:
            ZeroCost(self.proxy, self.zc_iterations, self.zc_validate_rounds,
                     self.zc_edge_order).check()
        except UsageError as e:
            raise ConfigError(f"--selector=zc_pt: {e}") from None

    to_json = lambda self: dataclasses.asdict(self)  # noqa: E731


ZC_FIELDS = ("proxy", "zc_iterations", "zc_validate_rounds", "zc_edge_order", "zc_at_init")
_DEFAULTS = SelectConfig().to_json()


class PerturbationSelector:
    """Runs a selector on a SearchLoop whose supernet holds the trained search state.

    Args:
        loop: a SearchLoop (its model and optimizers are tuned in place).
        config: a SelectConfig.
        folder: WORKDIR/selection.
    """

    def __init__(self, loop, config, folder, log=print, budget=None):
        self.loop, self.config, self.folder, self.log = loop, config, folder, log
        loop.ckpt_every_steps = config.ckpt_every_steps  # the tuning's, not the search's
        self.budget = budget
        # scoring skips masked and decided ops at run time (one trace for every decision)
        # where the reference does (DARTS family: a skipped op's BN statistics stay as they
        # are); not with synchronized BN, whose collectives would sit inside the conds
        skip = config.prune_decided != "never" and not loop.model.synchronized_bn() and \
            loop.space.skips_zero_ops
        loop.state.graphs.set_mode(config.prune_decided, ("eval",) if skip else ())
        self.space = loop.space
        self.seed = config.seed if config.seed >= 0 else loop.config.seed
        self.events = decision_events(self.space, self.seed)
        self.tuning_epochs = self.space.tuning_epochs(len(self.events),
                                                      config.tune_epochs_per_decision)
        # edges the search decided (SGAS): final, whatever the selection's topology rounds
        # score (read before `restore` loads the selection's own later decisions)
        self.search_decided = {t: [e for e, d in enumerate(loop.model.arch(t).decided()) if d]
                               for t in self.space.cell_types}
        self.restored_event, self._writer, self._last_score = -1, None, None
        self._resume = None  # a partial tuning state to continue (from `restore`)
        self._t_start, self._first = time.time(), 0
        self.checkpointer = Checkpointer(os.path.join(folder, "checkpoints"),
                                         loop.state.named_variables(), keep=2)
        self.scores_path = os.path.join(folder, "scores.jsonl")

    # --- scoring ---------------------------------------------------------------------------
    def score(self):
        """The supernet's (loss, accuracy) on the alpha split under the current masks. A
        second call with nothing changed in between (alphas, masks, the scoring graph; the
        weights change only in `tune_after`, which forgets the result) returns the first
        call's result: an event's next decision starts where the previous one ended (BN
        uses batch statistics or frozen running ones, so the pass gives the same numbers)."""
        if STOP.requested:  # before the next scoring pass: the last saved event stands
            STOP.check(f"the state after decision {self.restored_event + 1}/"
                       f"{len(self.events)} is saved in {self.checkpointer.folder}"
                       if self.restored_event >= 0 else
                       "no decision was saved yet (the selection starts again)")
        fn = self.loop.state._eval_fn  # the object itself: an id could be reused by a new graph
        key = tuple(v.numpy().tobytes() for t in self.space.cell_types
                    for v in self.loop.model.arch(t).weights)
        last = self._last_score
        if last is None or last[0] is not fn or last[1] != key:
            self._last_score = last = (fn, key, self.loop.evaluate(
                self.config.score_batches, self.config.bn_batch_stats))
        return last[2]

    def decide_op(self, ctype, edge):
        return self.decide("op", ctype, edge)

    def decide_topology(self, ctype, node):
        return self.decide("topology", ctype, node)

    def decide(self, kind, ctype, target):
        archs = {t: self.loop.model.arch(t) for t in self.space.cell_types}
        ops = max(len(o) for o in self.space.cells[ctype].ops)
        if self.loop.state.graphs.refresh("eval", (ops + 2) * self.loop.eval_batches(
                self.config.score_batches)):  # before + each candidate + after
            self.log(self.loop.state.graphs.describe("eval"))
        measure = self.score if not self.config.bn_batch_stats else \
            keeping_bn_stats(self.loop.model, self.score)  # the reference scores only
        return decide(archs, self.space, kind, ctype, target, self.score, self.config.crit,
                      budget=self.budget, selector=self.config.selector,
                      keep=self.search_decided[ctype], topology_rule=self.config.topology_rule,
                      measure=measure)

    def tune_after(self, i, resume=None):
        """Progressive tuning after decision event `i` (`SearchSpace.tuning_epochs`);
        `resume`: a partial tuning state of this event to continue."""
        epochs = self.tuning_epochs[i]
        self._last_score = None  # the weights change
        tune_supernet(self.loop, epochs, self.config.tune_lr, data_base=10_000 + i * 100,
                      log=self.log, writer=self._writer, step_base=i * 1000, resume=resume,
                      on_stop=lambda partial: self._save_partial(i, partial))

    def _save_partial(self, i, partial):
        self.checkpointer.save_partial({"event": i, "partial": partial})
        return (f"the state of decision {i + 1}/{len(self.events)}'s tuning (epoch "
                f"{partial['tune_epoch'] + 1}, step {partial['step']}) is saved in "
                f"{self.checkpointer.folder}")

    # --- the schedule ----------------------------------------------------------------------
    def restore(self):
        """Loads the last checkpointed decision event (if any) and drops log rows after it;
        returns the index of the next event to run."""
        os.makedirs(self.folder, exist_ok=True)
        self._last_score = None
        state = self.checkpointer.restore_latest()
        self.restored_event = state["event"] if state else -1
        self._resume = (state or {}).get("partial")
        if state is None and get_selector(self.config.selector).decides:
            self.loop.state.reset_weight_optimizer()  # a fresh SGD (REFERENCE 4.2)
        truncate_jsonl(self.scores_path, "event", self.restored_event + 1)
        n = len(self.events)
        if self._resume:
            self.log(f"resuming selection in the tuning after decision "
                     f"{self.restored_event + 1}/{n} (epoch {self._resume['tune_epoch'] + 1}, "
                     f"step {self._resume['step']})")
        elif self.restored_event >= 0:
            self.log(f"resuming selection after decision {self.restored_event + 1}/{n}")
        first = self.restored_event + (0 if self._resume else 1)
        self._t_start, self._first = time.time(), first
        return first

    def run_event(self, i):
        """Runs decision event `i` (decide on every cell type, tune, checkpoint) and returns
        its log rows. An event that the restored checkpoint already holds is not rerun: its
        rows come from scores.jsonl."""
        resume = self._resume if i == self.restored_event else None
        if i <= self.restored_event and resume is None:
            return [r for r in read_jsonl(self.scores_path) if r["event"] == i]
        if resume is not None:  # decided before a stop request in its tuning
            self._resume = None
            rows = [r for r in read_jsonl(self.scores_path) if r["event"] == i]
        else:
            rows = self._decide_event(i)
        self.tune_after(i, resume)
        self.checkpointer.save(i, {"event": i})
        self.restored_event = i
        done = i - self._first + 1
        left = (time.time() - self._t_start) / done * (len(self.events) - i - 1)
        self.log(f"decision {i + 1}/{len(self.events)} done; ETA {fmt_time(left)}")
        return rows

    def _decide_event(self, i):
        """The decisions of event `i` on every cell type, logged; their rows."""
        kind, targets = self.events[i]
        rows = []
        for ctype, target in targets.items():
            row = self.decide(kind, ctype, target)
            row["event"] = i
            append_jsonl(self.scores_path, row)
            self._tensorboard(i, row)
            self.log(self._describe(i, row))
            rows.append(row)
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
            "tune_epochs_per_decision": self.config.tune_epochs_per_decision,
            "tune_epochs": self.tuning_epochs})
        g.meta["selector"] = self.config.selector
        if self.budget is not None:
            g.meta["budget"] = dict(self.budget.to_json(), cost=self.budget.cost(g))
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
