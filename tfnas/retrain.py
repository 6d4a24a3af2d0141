"""tfnas's own retraining loop: `tfnas train` under MultiWorkerMirroredStrategy.

Keras 3.15's `model.fit` cannot run under MultiWorkerMirroredStrategy: before the first step
it averages one distributed batch with an eager `strategy.reduce` (which MWMS cannot do
eagerly), and it averages its logged scalars with `reduce("MEAN", v, axis=0)`
(tensorflow/tensorflow#72388). This loop trains the same compiled model as fit does (the
same `ReferenceSGD` step: one all-reduce of the whole gradient list, the global clip and the
coupled L2 on the summed gradient; the same losses, metric names and files), with what a
multi-machine run needs:

- per-worker input: each worker decodes and augments only its slice of every global batch;
- `--steps_per_execution` steps per `tf.function` call, the loss checked after every step;
- an exact resume: after every epoch the chief checkpoints the whole state (model, optimizer,
  loss scale, the history) into train/checkpoints/, and every worker resumes from the chief's
  state (broadcast, so local disks work); the batch order and augmentation of epoch e are
  seeded by e, so a resumed run ends with the weights of an uninterrupted one (drop-path
  masks excepted: they come from TensorFlow's stateful op RNG, which a new process
  restarts);
- the BN running statistics, which each replica updates from its own share of the batches,
  are averaged over all replicas at the end of every epoch (one all-reduce), so validation,
  the saved model and a resume see the statistics of all the data, the same on every worker;
- only the chief writes files.
"""

import functools
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from tfnas.checkpoint import Checkpointer, metric_state, set_metric_state
from tfnas.distribute import any_worker_fn, broadcast_from_chief, distribute_input, \
    num_workers, sum_over_replicas
from tfnas.errors import TrainingError
from tfnas.interrupt import STOP
from tfnas.io import atomic_path, atomic_write_json, atomic_write_text, fmt_time


def metric_names(auxiliary):
    """fit's history keys for one split (prefixed with `val_` for the validation split,
    `test_` for the test split)."""
    if auxiliary:
        return ["loss", "logits_loss", "aux_logits_loss", "logits_accuracy"]
    return ["loss", "accuracy"]


class RetrainLoop:
    """Trains a compiled retraining model (tfnas.train) epoch by epoch.

    Args:
        model: the discrete network, built and compiled (ReferenceSGD) in `strategy`'s scope.
        config: the TrainConfig.
        pipe: the input Pipeline; `train_size` training examples, `test` (x, y) or None
            (`test_*` in the history), `valid` (x, y) or None: the held-out validation split
            (`val_*`) that chooses best.keras.
        steps: steps per epoch.
        out: WORKDIR/train (written by the chief only).
        monitor: the history key whose best value selects best.keras (None: none).
    """

    def __init__(self, model, config, pipe, train_size, test, steps, strategy, out,
                 monitor, is_chief=True, log=print, valid=None):
        self.model, self.config, self.pipe = model, config, pipe
        self.splits = {"val_": valid, "test_": test}
        self.train_size, self.steps, self.strategy = train_size, steps, strategy
        self.out, self.monitor, self.is_chief, self.log = out, monitor, is_chief, log
        opt = model.optimizer
        self.opt = getattr(opt, "inner_optimizer", opt)  # float16: our loss scale below
        self.variables = list(model.trainable_variables)
        self.names = metric_names(config.auxiliary)
        with strategy.scope():
            self.opt.build(self.variables)
            self.loss_scale = None
            if config.mixed_precision == "mixed_float16":
                from tfnas.bilevel.optim import DynamicLossScale
                self.loss_scale = DynamicLossScale()
            self.metrics = {f"{p}{n}": (keras.metrics.CategoricalAccuracy(name=p + n)
                                        if n.endswith("accuracy") else keras.metrics.Mean(
                                            name=p + n))
                            for p in ("", "val_", "test_") for n in self.names}
        groups = {"model": model.variables, "optimizer": self.opt.variables}
        if self.loss_scale:
            groups["loss_scale"] = self.loss_scale.variables
        self.checkpointer = Checkpointer(os.path.join(out, "checkpoints"), groups, keep=2)
        self.bn_stats = [v for v in model.non_trainable_variables
                         if v.path.endswith(("moving_mean", "moving_variance"))]
        self._steps_fn = tf.function(self._steps)
        self._average_bn_fn = tf.function(self._average_bn)
        self._eval_fn = tf.function(self._eval_step, reduce_retracing=True)  # last batch
        self._stop_agreed = any_worker_fn(strategy)  # a stop request seen by any worker

    # --- the traced step ---------------------------------------------------------------------
    def _losses(self, x, y, training, prefix):
        """Per-example total loss; updates the `prefix` metrics (in a replica)."""
        c = self.config
        out = self.model(x, training=training)
        y1 = tf.one_hot(y, self.pipe.data.num_classes)

        def ce(logits):
            return keras.losses.categorical_crossentropy(
                y1, tf.cast(logits, tf.float32), from_logits=True,
                label_smoothing=c.label_smoothing)
        if c.auxiliary:
            logits, main, aux = out["logits"], ce(out["logits"]), ce(out["aux_logits"])
            total = main + c.auxiliary_weight * aux
            self.metrics[prefix + "logits_loss"].update_state(main)
            self.metrics[prefix + "aux_logits_loss"].update_state(aux)
            self.metrics[prefix + "logits_accuracy"].update_state(y1, logits)
        else:
            logits = out
            total = ce(logits)
            self.metrics[prefix + "accuracy"].update_state(y1, logits)
        self.metrics[prefix + "loss"].update_state(total)
        return total

    def _replica_grads(self, x, y):
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(self._losses(x, y, True, ""),
                                              global_batch_size=self.config.batch_size)
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            if self.loss_scale:
                loss = self.loss_scale.scale_loss(loss)
        grads = tape.gradient(loss, self.variables)
        return [tf.zeros_like(v) if g is None else g for g, v in zip(grads, self.variables)]

    def _step(self, x, y):
        grads = sum_over_replicas(self.strategy, self.strategy.run(self._replica_grads,
                                                                   args=(x, y)))

        def apply(gs):
            self.opt.apply_gradients(zip(gs, self.variables))
        with self.strategy.scope():  # cross-replica: ReferenceSGD takes the summed gradients
            if self.loss_scale:
                self.loss_scale.apply_if_finite(self.loss_scale.unscale(grads), apply)
            else:
                apply(grads)
        return self.metrics["loss"].result()

    def _steps(self, it, n):
        """Up to `n` steps, stopping after the first non-finite loss; the running loss after
        each step run (one host read per call)."""
        losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        for i in tf.range(n):
            loss = self._step(*next(it))
            losses = losses.write(i, loss)
            if not tf.math.is_finite(loss):
                break
        return losses.stack()

    def _average_bn(self):
        """Every replica's BN running statistics set to their mean over all replicas (one
        batched all-reduce): each replica updated its own copy from its share of the batches."""
        local = self.strategy.run(lambda: [tf.identity(v.value) for v in self.bn_stats])
        n = float(self.strategy.num_replicas_in_sync)
        with self.strategy.scope():
            for v, total in zip(self.bn_stats, sum_over_replicas(self.strategy, local)):
                v.assign(total / n)

    def _eval_step(self, x, y, prefix):
        self.strategy.run(lambda a, b: self._losses(a, b, False, prefix), args=(x, y))

    # --- epochs ------------------------------------------------------------------------------
    def _input(self, make):
        return distribute_input(self.strategy, make, self.config.batch_size)

    def train_epoch(self, epoch, resume=None, state=None):
        """One epoch; returns fit's training logs. `resume` ({"step", "metrics"}) continues
        an epoch stopped after that step, on the batches it would have seen; on a stop
        request (SIGTERM / SIGINT) between two steps the chief saves such a partial state
        (with the loop `state`) and `Interrupted` is raised."""
        from tfnas.models import set_drop_path
        c = self.config
        set_drop_path(self.model, epoch / c.epochs)
        done = int(resume["step"]) if resume else 0
        set_metric_state(self.metrics, (resume or {}).get("metrics"))
        it = iter(self._input(functools.partial(
            self.pipe.train, np.arange(self.train_size), epoch,
            cutout_prob=1.0 if c.cutout else 0.0, skip_batches=done)))
        bar = keras.utils.Progbar(self.steps, verbose=1 if sys.stdout.isatty() else 0,
                                  unit_name="step")
        if done:
            bar.update(done)
        while done < self.steps:
            n = min(c.steps_per_execution, self.steps - done)
            losses = [float(v) for v in self._steps_fn(it, tf.constant(n, tf.int32))]
            for j, loss in enumerate(losses):
                if not math.isfinite(loss):
                    raise TrainingError(
                        f"training diverged: loss became {loss} at epoch {epoch + 1} step "
                        f"{done + j}; the last good model and checkpoint are kept. Lower --lr")
            done += len(losses)
            bar.update(done, [("loss", losses[-1])])
            if done < self.steps and self._stop_agreed(STOP.requested):
                STOP.stop_in_epoch(lambda: self._save_partial(epoch, done, state), epoch,
                                   done)
        if self.strategy.num_replicas_in_sync > 1 and self.bn_stats:
            self._average_bn_fn()
        return {n: float(self.metrics[n].result()) for n in self.names}

    def _save_partial(self, epoch, step, state):
        """Saves the loop `state` with the position inside `epoch` (chief); returns where."""
        if not self.is_chief:
            return f"the chief saves the state of epoch {epoch + 1} after step {step}"
        self.checkpointer.save_partial(dict(state, partial={
            "step": step, "metrics": metric_state(self.metrics)}))
        return (f"the state of epoch {epoch + 1} after step {step} is saved in "
                f"{self.checkpointer.folder}")

    def evaluate(self):
        """The logs of the validation (`val_*`) and test (`test_*`) splits, as fit's."""
        logs = {}
        for prefix, split in self.splits.items():
            if split is None:
                continue
            for batch in self._input(functools.partial(self.pipe.evaluation, *split)):
                self._eval_fn(*batch, prefix=prefix)
            logs.update({prefix + n: float(self.metrics[prefix + n].result())
                         for n in self.names})
            if not math.isfinite(logs[prefix + "loss"]):
                raise TrainingError(f"training diverged: {prefix}loss became "
                                    f"{logs[prefix + 'loss']}; the last good model and "
                                    f"checkpoint are kept. Lower --lr")
        return logs

    def resume(self):
        """Restores the newest checkpoint (several workers: the chief's, broadcast); returns
        its state or None."""
        workers = num_workers(self.strategy)
        state = self.checkpointer.restore_latest() if self.is_chief or workers == 1 else None
        if workers > 1:
            variables = [v for group in self.checkpointer.groups.values() for v in group]
            state = broadcast_from_chief(self.strategy, self.is_chief, variables, state)
        return state

    def run(self):
        """Trains from the last checkpoint (or scratch) to `config.epochs`; returns the whole
        history ({key: [value per epoch]})."""
        c = self.config
        state = self.resume() or {"epoch": -1, "history": {}, "best": None}
        partial = state.pop("partial", None)
        state.pop("after", None)
        if partial:
            self.log(f"resuming {self.out} in epoch {state['epoch'] + 2} after step "
                     f"{partial['step']}")
        elif state["epoch"] >= 0:
            self.log(f"resuming {self.out} after epoch {state['epoch'] + 1}")
        writers = {s: tf.summary.create_file_writer(os.path.join(self.out, "tb", s))
                   for s in ("train", "validation")} if self.is_chief else None
        t_run, first = time.time(), state["epoch"] + 1
        for epoch in range(state["epoch"] + 1, c.epochs):
            t0 = time.time()
            for m in self.metrics.values():
                m.reset_state()
            logs = self.train_epoch(epoch, partial if epoch == first else None, state)
            logs.update(self.evaluate())
            for k, v in logs.items():
                state["history"].setdefault(k, []).append(v)
            state["epoch"] = epoch
            if self.is_chief:
                self._write(epoch, logs, state, writers)
            eta = (time.time() - t_run) / (epoch - first + 1) * (c.epochs - epoch - 1)
            self.log(f"epoch {epoch + 1}/{c.epochs} | " + " ".join(
                f"{k} {v:.4f}" for k, v in logs.items()) +
                f" | {time.time() - t0:.1f}s  ETA {fmt_time(eta)}")
            if epoch < c.epochs - 1:  # a request during the epoch's last step: saved above
                STOP.check(f"the state after epoch {epoch + 1} is saved in "
                           f"{self.checkpointer.folder}", peer=self._stop_agreed(STOP.requested))
        return state["history"]

    def _write(self, epoch, logs, state, writers):
        """The chief's files after an epoch; the checkpoint last, so a kill before it redoes
        the epoch (same seeds: the same files again)."""
        with atomic_path(os.path.join(self.out, "model.keras")) as tmp:
            self.model.save(tmp)
        value = logs.get(self.monitor) if self.monitor else None
        lower = value is not None and "loss" in self.monitor
        if value is not None and math.isfinite(value) and (
                state["best"] is None or (value < state["best"] if lower
                                          else value > state["best"])):
            state["best"] = value
            with atomic_path(os.path.join(self.out, "best.keras")) as tmp:
                self.model.save(tmp)
        hist = state["history"]
        keys = sorted(hist)
        rows = ["epoch," + ",".join(keys)] + [
            ",".join([str(e)] + [repr(hist[k][e]) for k in keys]) for e in range(epoch + 1)]
        atomic_write_text(os.path.join(self.out, "history.csv"), "\n".join(rows) + "\n")
        atomic_write_json(os.path.join(self.out, "history.json"), hist)
        for split, writer in writers.items():
            with writer.as_default(step=epoch):
                for k, v in logs.items():
                    if k.startswith("val_") == (split == "validation"):
                        tf.summary.scalar("epoch_" + k.removeprefix("val_"), v)
            writer.flush()
        self.checkpointer.save(epoch, state)
