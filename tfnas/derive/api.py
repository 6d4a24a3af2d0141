"""PT as a library call on any supernet of this package and any `tf.data` pipeline.

    genotype = tfnas.derive.select(supernet, valid_ds, tune=train_ds, selector="pt")

No run directory, no search loop: the supernet's own weights and alphas are the trained
state (they are changed in place: edges end up decided), `valid_ds` scores the ops, and
`tune` (optional) fine-tunes between decisions. `tfnas select` runs the same primitives
(`tfnas.derive.perturbation`) with checkpoints, resume, KerasTuner and TensorBoard around
them.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfnas.bilevel import ARCH_UPDATES, PERTURBATIONS, DatasetRunner, SearchState, tune_supernet
from tfnas.config import SearchConfig
from tfnas.derive.magnitude import magnitude_genotype
from tfnas.derive.perturbation import (TOPOLOGY_RULES, decide_op, decide_topology,
                                       decision_events)
from tfnas.derive.selectors import SELECTORS, get_selector
from tfnas.errors import UsageError


def make_evaluate(supernet, dataset, bn_batch_stats=True):
    """A callable -> (mean loss, accuracy) of `supernet` over `dataset` ((images, labels)
    batches) under its current masks; BN uses batch statistics when `bn_batch_stats` (as the
    reference's PT scoring). One traced function serves every call; where the space's
    reference skips zero-weight ops (DARTS family), a masked op is skipped at run time, so
    its BN statistics are left as the reference leaves them."""
    import contextlib
    skip = getattr(supernet.space, "skips_zero_ops", False) and hasattr(supernet, "leaving_out")

    @tf.function
    def batch_stats(x, y):
        with supernet.leaving_out((), skip_zero=True) if skip else contextlib.nullcontext():
            logits = supernet(x, training=bn_batch_stats)
        loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        hits = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int64),
                                tf.cast(y, tf.int64)), tf.float32)
        return tf.reduce_sum(loss), tf.reduce_sum(hits), tf.cast(tf.size(loss), tf.float32)

    def evaluate():
        total = np.zeros(3)
        for x, y in dataset:
            total += [float(v) for v in batch_stats(x, y)]
        if not total[2]:
            raise UsageError("select: the validation dataset yielded no examples")
        return total[0] / total[2], total[1] / total[2]
    return evaluate


def keeping_bn_stats(model, fn):
    """`fn` wrapped so that the BN running statistics of `model` are what they were before
    each call (a logging pass in training-mode BN that the reference does not make)."""
    stats = [v for v in model.variables
             if v.path.endswith(("moving_mean", "moving_variance"))]

    def call():
        saved = [v.numpy() for v in stats]
        try:
            return fn()
        finally:
            for v, value in zip(stats, saved):
                v.assign(value)
    return call


@dataclasses.dataclass
class Tuning:
    """How `select` tunes the supernet between decisions: as `tfnas select` does.

    Attributes:
        epochs: epochs after each decision (the reference's `proj_intv`; the space's
            schedule gives the last decision its own count, `SearchSpace.tuning_epochs`).
        steps: batches per epoch at most (0: one whole pass over the tuning dataset).
        lr: the constant weight learning rate (the reference's tuning rate).
        hyper: a `tfnas.config.SearchConfig` for the rest of the step (momentum, weight
            decay, clip, the alpha optimizer, `arch_update`: "first_order" trains the alphas
            of undecided edges as the reference does, "frozen" keeps them); None: defaults.
    """

    epochs: int = 5
    steps: int = 0
    lr: float = 0.0025
    hyper: SearchConfig = None


def make_tune(supernet, train, valid, tuning=None, log=None):
    """A callable(event) that tunes `supernet` after decision event `event` as `tfnas
    select` does (`tfnas.bilevel.tune_supernet`): per epoch one pass over `train` of the
    search step, the alpha update on the next batches of `valid` (alphas of undecided edges
    train; decided ones are fixed), then the weights with momentum SGD, coupled L2 and the
    global clip, at the constant rate `tuning.lr`. A fresh weight and alpha optimizer (the
    reference re-creates the weight optimizer and keeps the search's Adam, which a bare
    supernet does not have)."""
    tuning = tuning or Tuning()
    hyper = tuning.hyper or SearchConfig()
    state = SearchState(supernet, hyper, tf.distribute.get_strategy(),
                        ARCH_UPDATES.get(hyper.arch_update)(),
                        PERTURBATIONS.get(hyper.perturbation)())
    quiet = log or (lambda line: None)
    runner = DatasetRunner(state, train, valid, tuning.steps, log=quiet)
    space = supernet.space
    schedule = space.tuning_epochs(len(decision_events(space, 0)), tuning.epochs)

    def tune(event):
        tune_supernet(runner, schedule[event], tuning.lr, data_base=0, log=quiet)
    return tune


def select(supernet, valid_data, selector="pt", tune=None, tuning=None, crit="acc", seed=0,
           bn_batch_stats=True, log=None, budget=None, topology_rule="reference"):
    """Derives an architecture from a trained supernet by perturbation (paper Algorithm 1).

    Args:
        supernet: a supernet of this package (`tfnas.supernet.build_supernet` or any model
            built from its `ArchParameters` / `MixedOp` that has `space`, `arch(cell_type)`
            and `weight_variables`); its selection state is changed in place.
        valid_data: a `tf.data.Dataset` of (images, labels) batches that scores each op.
        selector: a registered selector (`tfnas.derive.selectors`): "pt", "pt_mag"
            (decided by alpha, with the same tuning) or "magnitude".
        tune: None (no tuning), a `tf.data.Dataset` of (images, labels) batches to tune
            on after each decision event as `tfnas select` does (`make_tune`, with
            `tuning`: a `Tuning`, None: the reference's), or a callable `tune(event_index)`.
        crit: "acc" (keep the op whose removal lowers accuracy most) or "loss".
        seed: the edge order (the reference draws it from its seed).
        bn_batch_stats: BN with batch statistics while scoring (the reference's default).
        log: optional callable taking one line per decision.
        budget: optional `tfnas.derive.budget.Budget`: each decision keeps the most
            important op (removes the least important edge) that still lets the final
            network fit it.
        topology_rule: "reference" or "cumulative" (`decide_topology`); edges decided
            before the call (SGAS) stay as they are.
    Returns:
        The Genotype; `genotype.meta["decisions"]` holds every decision row (and
        `meta["budget"]` the budget and the final cost).
    Raises:
        UsageError: an unknown selector or criterion, an empty dataset, or a budget that no
            architecture of the space meets.
    """
    chooser = _check_select_args(selector, crit, budget, topology_rule)
    space = supernet.space
    archs = {t: supernet.arch(t) for t in space.cell_types}
    if budget is not None:
        budget.check_feasible(archs)
    if not chooser.decides:
        return magnitude_genotype(space, supernet.arch_weights_numpy(), dict(selector=selector))
    evaluate = make_evaluate(supernet, valid_data, bn_batch_stats)
    measure = keeping_bn_stats(supernet, evaluate) if bn_batch_stats else evaluate
    if isinstance(tune, tf.data.Dataset):
        tune = make_tune(supernet, tune, valid_data, tuning, log)
    before, rows = {t: np.flatnonzero(archs[t].decided()).tolist() for t in space.cell_types}, []
    for i, (kind, targets) in enumerate(decision_events(space, seed)):
        for ctype, target in targets.items():
            row = decide(archs, space, kind, ctype, target, evaluate, crit, budget=budget,
                         selector=selector, keep=before[ctype], topology_rule=topology_rule,
                         measure=measure)
            rows.append(dict(row, event=i))
            if log:
                what = row.get("choice") if kind == "op" else row["kept_inputs"]
                log(f"decision {i + 1}: {ctype} {kind} {target} -> {what}")
        if tune is not None:
            tune(i)
    genotype = magnitude_genotype(space, supernet.arch_weights_numpy(), meta={
        "crit": crit, "seed": seed, "decisions": rows})
    genotype.meta["selector"] = selector  # the decided supernet's genotype, by `selector`
    if budget is not None:
        genotype.meta["budget"] = dict(budget.to_json(), cost=budget.cost(genotype))
    return genotype


def _check_select_args(selector, crit, budget, topology_rule):
    """The registered selector's instance, or a UsageError for bad arguments."""
    if selector not in SELECTORS:
        raise UsageError(f"select: selector {selector!r} is unknown; expected one of "
                         f"{', '.join(SELECTORS.names())}")
    chooser = get_selector(selector)
    if chooser.zero_cost:
        raise UsageError(f"select: selector {selector!r} scores with a zero-cost proxy: call "
                         f"tfnas.derive.zero_cost_select(supernet, data, build=...)")
    if crit not in ("acc", "loss"):
        raise UsageError(f"select: crit {crit!r} is unknown; expected acc or loss")
    if topology_rule not in TOPOLOGY_RULES:
        raise UsageError(f"select: topology_rule {topology_rule!r} is unknown; expected one "
                         f"of {', '.join(TOPOLOGY_RULES)}")
    if budget is not None and not chooser.decides:
        raise UsageError(f"select: a budget applies to selectors that decide edges, not "
                         f"{selector!r}")
    return chooser


def decide(archs, space, kind, ctype, target, evaluate, crit="acc", budget=None,
           selector="pt", keep=(), topology_rule="reference", measure=None):
    """One decision of an event ("op": edge `target`; "topology": node `target`) on the
    ArchParameters `archs[ctype]`, within `budget` when given (the row then holds
    "budget_bound": the cheapest final cost still reachable after it). `keep`: edges of
    `ctype` decided before the selection (a topology decision never drops them);
    `topology_rule`: see `decide_topology`; `measure`: the logged before/after accuracy
    (`decide_op`)."""
    arch = archs[ctype]
    if kind == "op":
        fits = None if budget is None else (
            lambda k: budget.op_fits(archs, ctype, target, k))
        row = decide_op(arch, space, ctype, target, evaluate, crit, fits=fits,
                        selector=selector, measure=measure)
    else:
        can_remove = None if budget is None else (
            lambda e: budget.removal_fits(archs, ctype, e))
        row = decide_topology(arch, space, ctype, target, evaluate, crit, can_remove,
                              keep=keep, rule=topology_rule, measure=measure)
    if budget is not None:
        row["budget_bound"] = budget.lower_bound(archs)
    return row
