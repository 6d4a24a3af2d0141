"""Epochs of the alternating step, and the one tuning routine of PT.

`EpochRunner.train_epoch` runs a `SearchState`'s step over an epoch's training and
validation batches, which a subclass provides (`batches`): the search's array pipeline
(`tfnas.search.SearchLoop`) or a user's `tf.data` datasets (`DatasetRunner`, used by
`tfnas.derive.select`). `tune_supernet` is the tuning between PT decisions and of `tfnas
analyze`, on either runner.
"""

import math
import time

import tensorflow as tf

from tfnas.checkpoint import metric_state, set_metric_state
from tfnas.errors import TrainingError, UsageError
from tfnas.interrupt import STOP
from tfnas.progress import Progress


class EpochRunner:
    """Runs epochs of `self.state`'s step. A subclass sets `state` (a SearchState), `steps`
    (steps per epoch) and `steps_per_execution`, and defines `batches`."""

    steps_per_execution = 1
    batch_size = None  # images per step, for the progress lines (None: not known)
    ckpt_every_steps = 0  # save through `on_stop`'s saver every N steps too (0: never)

    def log(self, line):
        print(line, flush=True)

    def batches(self, epoch, data_epoch, tuning, skip):
        """The epoch's (training, validation) batches, from step `skip` on."""
        raise NotImplementedError

    def diverged_hint(self):
        """What to do when the loss is not finite (the end of the error message)."""
        return "lower the learning rates, or check the data"

    def _stop_agreed(self, requested):
        """A stop request seen by any worker (one process: this one's)."""
        return requested

    def _run_steps(self, it_t, it_v, n):
        """`n` steps (fewer when one's loss is not finite); the running losses as floats."""
        state = self.state
        if self.steps_per_execution == 1:  # the plain per-step call
            return [float(state._step_fn(next(it_t), next(it_v)))]
        return [float(v) for v in state._steps_fn(it_t, it_v, tf.constant(n, tf.int32))]

    def train_epoch(self, epoch, lr, data_epoch=None, tuning=False, resume=None,
                    on_stop=None):
        """One pass of alternating steps at learning rate `lr`; returns the epoch's metrics.

        `data_epoch` seeds the batch order (default `epoch`); selection tuning passes its own
        counter so its batches differ from the search's, and `tuning=True` (perturbations
        use their tuning strength). `resume` ({"step", "metrics"}, what `on_stop` was given)
        continues an epoch stopped after that step, on the batches it would have seen. On a
        stop request (SIGTERM / SIGINT, `tfnas.interrupt`) between two steps of the epoch,
        `on_stop({"step", "metrics"})` saves the state and returns where, and `Interrupted`
        is raised; a request during the last step is left to the caller. With
        `ckpt_every_steps`, `on_stop` also saves every that many steps (the run goes on).
        """
        state = self.state
        state.w_opt.learning_rate.assign(lr)
        state.perturbation.begin_epoch(state, epoch, tuning)
        for m in state.metrics.values():
            m.reset_state()
        done = 0
        if resume:
            done = int(resume["step"])
            set_metric_state(state.metrics, resume["metrics"])
        train, valid = self.batches(epoch, data_epoch, tuning, skip=done)
        it_t, it_v = iter(train), iter(valid)
        bar = Progress(self.steps, f"{'tune epoch' if tuning else 'epoch'} {epoch + 1}",
                       self.batch_size, self.log, start=done)
        state.graphs.check("step")
        while done < self.steps:
            n = min(self.steps_per_execution, self.steps - done)
            losses = self._run_steps(it_t, it_v, n)
            for j, loss in enumerate(losses):  # the running mean: non-finite from the bad step
                if not math.isfinite(loss):
                    raise TrainingError(f"training loss became {loss} at epoch {epoch} step "
                                        f"{done + j}; {self.diverged_hint()}")
            done += len(losses)
            bar.update(done, losses[-1])
            if done < self.steps and self._stop_agreed(STOP.requested):
                partial = {"step": done, "metrics": metric_state(state.metrics)}
                STOP.stop_in_epoch(on_stop and (lambda: on_stop(partial)), epoch, done)
            every = self.ckpt_every_steps
            if on_stop and every and done < self.steps and \
                    done // every > (done - len(losses)) // every:  # a multiple was crossed
                on_stop({"step": done, "metrics": metric_state(state.metrics)})
        record = {"epoch": epoch, "lr": lr,
                  "train_loss": float(state.metrics["train_loss"].result()),
                  "train_acc": float(state.metrics["train_acc"].result())}
        if state.arch_update.trains_alpha:
            record["alpha_loss"] = float(state.metrics["alpha_loss"].result())
            record["alpha_acc"] = float(state.metrics["alpha_acc"].result())
        return record


class DatasetRunner(EpochRunner):
    """Epochs over `tf.data` datasets: each epoch passes over `train` once (at most `steps`
    batches; 0: all of it); the alpha steps take the next batches of `valid`, repeated (one
    iterator across epochs, so they go through all of it). One device, or the strategy the
    state was built under (the datasets are distributed as they are: their batch is the
    global batch). No resume: `skip` is not supported."""

    def __init__(self, state, train, valid, steps=0, log=None):
        self.state, self.train, self.valid = state, train, valid
        if log is not None:
            self.log = log
        n = _cardinality(train)
        self.steps = min(n, steps) if steps else n
        self._valid_it = None

    def batches(self, epoch, data_epoch, tuning, skip):
        if skip:
            raise TrainingError("a DatasetRunner epoch cannot resume in the middle")
        strategy, train = self.state.strategy, self.train
        if self._valid_it is None:
            valid = self.valid.repeat()
            if strategy.num_replicas_in_sync > 1:
                valid = strategy.experimental_distribute_dataset(valid)
            self._valid_it = iter(valid)
        if strategy.num_replicas_in_sync > 1:
            train = strategy.experimental_distribute_dataset(train)
        return train, self._valid_it

    def diverged_hint(self):
        return "lower tune_lr, or check the data"


def _cardinality(dataset):
    """Batches in one pass of `dataset` (counted when tf.data does not know it)."""
    n = int(dataset.cardinality())
    if n == tf.data.INFINITE_CARDINALITY:
        raise UsageError("the tuning dataset is infinite: give one that ends (one pass is "
                         "an epoch)")
    if n == tf.data.UNKNOWN_CARDINALITY:
        n = int(dataset.reduce(0, lambda count, _: count + 1))
    if n <= 0:
        raise UsageError("the tuning dataset yielded no batches")
    return n


def tune_supernet(runner, epochs, lr, data_base, log=print, patience=0, writer=None,
                  step_base=0, eval_kw=None, resume=None, on_stop=None):
    """Fine-tunes a (partly discretised) supernet: alternating alpha/weight epochs at the
    constant weight lr `lr`, perturbations at their tuning strength. The one tuning routine
    of `tfnas select` (between decisions), `tfnas analyze strength` (to convergence) and
    `tfnas.derive.select`.

    Args:
        runner: an EpochRunner (a SearchLoop, or a DatasetRunner).
        data_base: batch-order seed of the first epoch (epoch k uses data_base + k).
        patience: 0 runs exactly `epochs`; otherwise evaluates after every epoch and stops
            once validation accuracy has not improved for `patience` epochs (at most
            `epochs`; the runner needs an `evaluate`).
        writer: optional tf.summary writer for tune/* scalars (step = step_base + epoch).
        eval_kw: keyword arguments of `runner.evaluate` for the patience evaluations (e.g.
            `{"batches": 20, "batch_stats": True}`, as PT scores are measured).
        resume: {"tune_epoch", "step", "metrics"} of a tuning stopped by a stop request
            (without patience): it continues there, on the same batches.
        on_stop: `on_stop(partial)` saves such a state and returns where (see
            `EpochRunner.train_epoch`); without it a stop request raises with nothing saved.
    Returns:
        (records, best validation accuracy or None when patience is 0).
    """
    records, best, stale = [], None, 0
    graphs = runner.state.graphs
    if epochs and graphs.refresh("step", epochs * runner.steps):  # decided edges
        log(graphs.describe("step"))
    if epochs and patience and graphs.refresh(
            "eval", epochs * runner.eval_batches(**(eval_kw or {}))):
        log(graphs.describe("eval"))
    first = int(resume["tune_epoch"]) if resume else 0
    for k in range(first, epochs):
        t0 = time.time()
        if k > first and STOP.requested:  # between two tuning epochs
            STOP.check(on_stop({"tune_epoch": k, "step": 0, "metrics": {}}) if on_stop else
                       f"tuning stopped after epoch {k}; its state is not saved here")
        stop = on_stop and (lambda p, k=k: on_stop(dict(p, tune_epoch=k)))
        rec = runner.train_epoch(k, lr, data_epoch=data_base + k, tuning=True,
                                 resume=resume if k == first else None, on_stop=stop)
        line = f"  tune {k + 1}/{epochs}: train loss {rec['train_loss']:.3f} " \
               f"acc {rec['train_acc']:.3f}"
        if patience:
            rec["valid_loss"], rec["valid_acc"] = runner.evaluate(**(eval_kw or {}))
            line += f" | valid acc {rec['valid_acc']:.3f}"
            if best is None or rec["valid_acc"] > best:
                best, stale = rec["valid_acc"], 0
            else:
                stale += 1
        log(line + f"  {time.time() - t0:.1f}s")
        records.append(rec)
        if writer is not None:
            with writer.as_default(step=step_base + k):
                for key in ("train_loss", "train_acc", "valid_acc"):
                    if key in rec:
                        tf.summary.scalar(f"tune/{key}", rec[key])
        if patience and stale >= patience:
            break
    return records, best
