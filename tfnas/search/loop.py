"""The alternating search loop: alpha step on a validation batch, then weight step.

One `tf.function` per run serves every epoch. Gradients are computed per replica, summed
across replicas and applied in the cross-replica context, so global-norm clipping sees the
global gradient (TF_NOTES 1) and alphas stay identical on every replica.
"""

import functools
import math
import os
import sys
import time

import keras
import tensorflow as tf

from tfnas import precision
from tfnas.checkpoint import Checkpointer, metric_state, set_metric_state
from tfnas.config import SearchConfig
from tfnas.data import Pipeline, bilevel_split, load_dataset
from tfnas.errors import TrainingError, WorkdirError
from tfnas.grappler import apply_settings
from tfnas.io import check_folder, remove_stale_temps
from tfnas.search.components import ARCH_UPDATES, PERTURBATIONS
from tfnas.search.graphs import LoopGraphs
from tfnas.search.optim import DynamicLossScale, MomentumSGD, TorchAdam
from tfnas.search.workdir import (alphas_digest, epoch_line, log_epoch, prepare_workdir,
                                  truncate_logs, write_env)
from tfnas.derive import magnitude_genotype
from tfnas.distribute import (any_worker_fn, broadcast_from_chief, distribute_input,
                              num_workers, sum_over_replicas)
from tfnas.interrupt import STOP
from tfnas.spaces import get_space
from tfnas.supernet import build_supernet
from tfnas.supernet.mixed import MIXED_OPS

def _memory_and_bn(model, config):
    """--recompute (edges recompute their activations), then --sync_bn (which keeps per-edge
    traces: a collective per BN)."""
    if config.recompute:
        model.share_edge_traces(True, recompute=True)
    if config.sync_bn:
        model.set_synchronized_bn(True)


def cosine_lr(epoch, epochs, lr, lr_min):
    """PyTorch's CosineAnnealingLR(T_max=epochs, eta_min) value at `epoch`."""
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


class SearchLoop:
    """Trains a supernet as REFERENCE section 3.

    Args:
        config: a validated SearchConfig.
        workdir: the run directory.
        strategy: a tf.distribute.Strategy.
        is_chief: only the chief writes files.
        log: callable taking one line of progress text.
    """

    def __init__(self, config, workdir, strategy, is_chief=True, log=None, data=None):
        self.config, self.workdir, self.strategy = config, workdir, strategy
        self.is_chief = is_chief
        apply_settings(search=True)  # cheaper Grappler: a faster first step (tfnas/grappler.py)
        self.log = log or (lambda s: print(s, flush=True))
        self.replicas = strategy.num_replicas_in_sync
        if config.batch_size % self.replicas:
            raise WorkdirError(f"--batch_size={config.batch_size} must be divisible by the "
                               f"{self.replicas} replicas")
        # registered names first: an unknown one fails before any data is read
        arch_update = ARCH_UPDATES.get(config.arch_update)
        perturbation = PERTURBATIONS.get(config.perturbation)
        MIXED_OPS.get(config.mixed_op)
        keras.utils.set_random_seed(config.seed)
        self.data = data if data is not None else load_dataset(
            config.dataset, config.data_dir, config.download, config.limit_examples,
            config.skip_bad_images)
        if is_chief and os.path.isdir(workdir):
            remove_stale_temps(workdir)  # temp files of writes a kill interrupted
        self.train_idx, self.valid_idx = bilevel_split(len(self.data.x_train),
                                                       config.train_portion)
        if len(self.train_idx) < config.batch_size or len(self.valid_idx) < config.batch_size:
            raise WorkdirError(
                f"--batch_size={config.batch_size} is larger than a split of {config.dataset} "
                f"({len(self.train_idx)} weight / {len(self.valid_idx)} alpha examples)")
        self.pipeline = Pipeline(self.data, config.batch_size, config.seed, config.cutout,
                                 config.cutout_length)
        self.steps = len(self.train_idx) // config.batch_size
        if config.steps_per_epoch:
            self.steps = min(self.steps, config.steps_per_epoch)
        self.space = get_space(config.space)
        self.arch_update, self.perturbation = arch_update(), perturbation()
        with strategy.scope():
            with precision.policy(config.mixed_precision):
                self.model = build_supernet(self.space, config.channels, config.layers,
                                            self.data.num_classes, self.data.input_shape,
                                            skip_zero=config.skip_zero_ops,
                                            mixed_op=config.mixed_op)
            _memory_and_bn(self.model, config)
            self.alphas, self.weights = self.model.alphas, self.model.weight_variables
            self.w_opt = MomentumSGD(self.weights, config.lr, config.momentum)
            self.a_opt = TorchAdam(self.alphas, config.arch_lr, beta_1=config.arch_beta1,
                                   beta_2=config.arch_beta2)
            self.loss_scale = DynamicLossScale() if config.mixed_precision == "mixed_float16" else None
            self.metrics = {k: keras.metrics.Mean(name=k) for k in
                            ("train_loss", "alpha_loss", "valid_loss")}
            self.metrics.update({k: keras.metrics.SparseCategoricalAccuracy(name=k) for k in
                                 ("train_acc", "alpha_acc", "valid_acc")})
            self.arch_update.setup(self)
            self.perturbation.setup(self)
        self.checkpointer = Checkpointer(
            os.path.join(workdir, "checkpoints"), self.state_variables(),
            keep=config.keep_checkpoints)
        self.benchmark = None
        if config.benchmark_table:
            from tfnas.benchmarks import open_benchmark
            self.benchmark = open_benchmark(config.benchmark_table, self.space)
        # _eval_fn, _step_fn, _steps_fn: traced functions, specialised to decided edges
        self.graphs = LoopGraphs(self)
        self._stop_agreed = any_worker_fn(strategy)  # a stop request seen by any worker

    def state_variables(self):
        """Every variable a checkpoint must hold to resume exactly."""
        state = {"model": self.model.variables, "w_opt": self.w_opt.variables,
                 "a_opt": self.a_opt.variables, "methods": list(self.arch_update.variables) +
                 list(self.perturbation.variables)}
        return dict(state, loss_scale=self.loss_scale.variables) if self.loss_scale else state

    # --- pieces used by components (inside the traced step) --------------------------------
    def _loss(self, x, y, training=True, probs=None, metrics=None):
        logits = self.model(x, training=training, probs=probs)
        per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        if metrics:
            self.metrics[metrics + "_loss"].update_state(per_example)
            self.metrics[metrics + "_acc"].update_state(y, logits)
        return tf.nn.compute_average_loss(per_example,
                                          global_batch_size=self.config.batch_size)

    def reduced_grads(self, batch, variables, metrics=None, probs=None, training=True):
        """Gradients of the batch loss w.r.t. `variables` (variables, or tensors such as
        mixing probabilities), summed over replicas."""
        def replica_fn(x, y):
            with tf.GradientTape() as tape:
                for v in variables:
                    if isinstance(v, tf.Tensor):
                        tape.watch(v)
                loss = self._loss(x, y, training=training, probs=probs, metrics=metrics)
                if self.loss_scale:
                    loss = self.loss_scale.scale_loss(loss)
            grads = tape.gradient(loss, variables)
            # e.g. the reduce alpha of a net too shallow to have a reduction cell
            return [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        grads = sum_over_replicas(self.strategy, self.strategy.run(replica_fn, args=batch))
        return self.loss_scale.unscale(grads) if self.loss_scale else grads

    def apply_updates(self, grads, apply):
        """`apply(grads)`; under loss scaling only when every gradient is finite (the scale
        adapts once per step, at the end of `_step`)."""
        if self.loss_scale:
            self._finite.append(self.loss_scale.apply_if_finite(grads, apply, adapt=False))
        else:
            apply(grads)

    def reduced_loss(self, batch, probs=None, training=True):
        """The global mean loss of a batch (no gradients)."""
        per_replica = self.strategy.run(
            lambda x, y: self._loss(x, y, training=training, probs=probs), args=batch)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def apply_alpha_grads(self, grads):
        wd = self.config.arch_weight_decay
        self.apply_updates(grads, lambda gs: self.a_opt.apply_gradients(
            [(g + wd * a, a) for g, a in zip(gs, self.alphas)]))

    def _step(self, bt, bv):
        self._finite = []  # the step's updates (loss scaling: one adaptation per step)
        if self.arch_update.trains_alpha:
            self.arch_update.step(self, bt, bv)
        probs = self.perturbation.probs(self, bt)
        grads = self.reduced_grads(bt, self.weights, metrics="train", probs=probs)
        if self.config.grad_clip > 0:
            grads, _ = tf.clip_by_global_norm(grads, self.config.grad_clip)
        # Coupled L2 added after clipping, as torch's SGD(weight_decay) after clip_grad_norm_;
        # MomentumSGD then applies torch's momentum convention.
        wd = tf.constant(self.config.weight_decay, tf.float32)
        self.apply_updates(grads, lambda gs: self.w_opt.apply_gradients(
            [(g + wd * w, w) for g, w in zip(gs, self.weights)]))
        if self.loss_scale:
            self.loss_scale.adapt(tf.reduce_all(tf.stack(self._finite)))
        return self.metrics["train_loss"].result()

    def _steps(self, it_t, it_v, n):
        """Up to `n` steps in one call, stopping after the first non-finite loss; returns the
        running training loss after each step run (one host read per call)."""
        losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        for i in tf.range(n):
            loss = self._step_fn(next(it_t), next(it_v))
            losses = losses.write(i, loss)
            if not tf.math.is_finite(loss):
                break
        return losses.stack()

    def _run_steps(self, it_t, it_v, n):
        """`n` steps (fewer when one's loss is not finite); the running losses as floats."""
        if self.config.steps_per_execution == 1:  # the plain per-step call
            return [float(self._step_fn(next(it_t), next(it_v)))]
        return [float(v) for v in self._steps_fn(it_t, it_v, tf.constant(n, tf.int32))]

    def _eval_step(self, batch, training=False):
        def replica_fn(x, y):
            self._loss(x, y, training=training, metrics="valid")
        self.strategy.run(replica_fn, args=batch)

    # --- epochs --------------------------------------------------------------------------
    def cutout_prob(self, epoch, tuning=False):
        """Cutout probability of search epoch `epoch`: ramped linearly to `--cutout_prob` at
        the last epoch (REFERENCE 3); selection and analysis tuning use the ramp's end value,
        which the reference's transform keeps after the search."""
        c = self.config
        if not c.cutout:
            return 0.0
        if tuning:
            return c.cutout_prob
        return c.cutout_prob * min(epoch, c.epochs - 1) / max(c.epochs - 1, 1)

    def _datasets(self, epoch, data_epoch=None, tuning=False, skip=0):
        """The epoch's weight and alpha batches, from step `skip` on (every step takes one
        batch of each)."""
        prob = self.cutout_prob(epoch, tuning)
        seed = epoch if data_epoch is None else data_epoch  # batch order and augmentation
        train = functools.partial(self.pipeline.train, self.train_idx, 2 * seed,
                                  cutout_prob=prob, skip_batches=skip)
        valid = functools.partial(self.pipeline.train, self.valid_idx, 2 * seed + 1,
                                  cutout_prob=prob, repeat=True, skip_batches=skip)
        return self._distribute(train), self._distribute(valid)

    def _distribute(self, make):
        """Per-worker sharded input (tfnas.distribute.distribute_input)."""
        return distribute_input(self.strategy, make, self.config.batch_size)

    def reset_weight_optimizer(self):
        """Zeroes the weight optimizer's momentum (a fresh SGD), as the reference does before
        projection tuning (REFERENCE 4.2: the weight optimizer is re-created)."""
        for buf in self.w_opt.buffers:
            buf.assign(tf.zeros_like(buf))
        self.w_opt.iterations.assign(0)

    def eval_batches(self, batches=0, **_):
        """How many batches `evaluate(batches)` runs."""
        n = -(-len(self.valid_idx) // self.config.batch_size)
        return min(n, batches) if batches else n

    def evaluate(self, batches=0, batch_stats=False):
        """Loss/accuracy of the supernet on the alpha split (no gradients).

        Args:
            batches: use only the first N batches (0: the whole split).
            batch_stats: BN with batch statistics (training mode, as the reference's PT
                scoring; this also updates the running statistics, as there) instead of the
                running statistics.
        """
        for m in ("valid_loss", "valid_acc"):
            self.metrics[m].reset_state()
        x, y = self.data.x_train[self.valid_idx], self.data.y_train[self.valid_idx]
        self.graphs.check("eval")  # several workers: each decodes only its share of a batch
        for batch in self._distribute(functools.partial(self.pipeline.evaluation, x, y,
                                                        batches=batches)):
            self._eval_fn(batch, training=bool(batch_stats))
        loss = float(self.metrics["valid_loss"].result())
        if not math.isfinite(loss):
            raise TrainingError(
                f"validation loss became {loss}; the supernet diverged. The last good "
                f"checkpoint is kept in {self.checkpointer.folder}. Lower --lr or --arch_lr")
        return loss, float(self.metrics["valid_acc"].result())

    def train_epoch(self, epoch, lr, data_epoch=None, tuning=False, resume=None,
                    on_stop=None):
        """One pass of alternating steps at learning rate `lr`; returns the epoch's metrics.

        `data_epoch` seeds the batch order (default `epoch`); selection tuning passes its own
        counter so its batches differ from the search's, and `tuning=True` (perturbations
        use their tuning strength). `resume` ({"step", "metrics"}, what `on_stop` was given)
        continues an epoch stopped after that step, on the batches it would have seen. On a
        stop request (SIGTERM / SIGINT, `tfnas.interrupt`) between two steps of the epoch,
        `on_stop({"step", "metrics"})` saves the state and returns where, and `Interrupted`
        is raised; a request during the last step is left to the caller.
        """
        self.w_opt.learning_rate.assign(lr)
        self.perturbation.begin_epoch(self, epoch, tuning)
        for m in self.metrics.values():
            m.reset_state()
        done = 0
        if resume:
            done = int(resume["step"])
            set_metric_state(self.metrics, resume["metrics"])
        train, valid = self._datasets(epoch, data_epoch, tuning, skip=done)
        it_t, it_v = iter(train), iter(valid)
        bar = keras.utils.Progbar(self.steps, verbose=1 if sys.stdout.isatty() else 0,
                                  unit_name="step")
        if done:
            bar.update(done)
        self.graphs.check("step")
        while done < self.steps:
            n = min(self.config.steps_per_execution, self.steps - done)
            losses = self._run_steps(it_t, it_v, n)
            for j, loss in enumerate(losses):  # the running mean: non-finite from the bad step
                if not math.isfinite(loss):
                    raise TrainingError(
                        f"training loss became {loss} at epoch {epoch} step {done + j}; the "
                        f"last good checkpoint is kept in {self.checkpointer.folder}. Lower "
                        f"--lr or --arch_lr, or check the data")
            done += len(losses)
            bar.update(done, [("loss", losses[-1])])
            if done < self.steps and self._stop_agreed(STOP.requested):
                partial = {"step": done, "metrics": metric_state(self.metrics)}
                STOP.stop_in_epoch(on_stop and (lambda: on_stop(partial)), epoch, done)
        record = {"epoch": epoch, "lr": lr,
                  "train_loss": float(self.metrics["train_loss"].result()),
                  "train_acc": float(self.metrics["train_acc"].result())}
        if self.arch_update.trains_alpha:
            record["alpha_loss"] = float(self.metrics["alpha_loss"].result())
            record["alpha_acc"] = float(self.metrics["alpha_acc"].result())
        return record

    def run(self):
        """Trains from the last checkpoint (or scratch) to `config.epochs`; returns the
        magnitude genotype."""
        c = self.config
        state = self.resume_state()
        start = state["epoch"] + 1 if state else 0
        partial = (state or {}).get("partial")
        if self.is_chief:
            truncate_logs(self.workdir, start)
            write_env(self, resumed_from=start)
        if partial:
            self.log(f"resuming {self.workdir} in epoch {start + 1} after step "
                     f"{partial['step']}")
        elif start:
            self.log(f"resuming {self.workdir} after epoch {start - 1}")
        writer = tf.summary.create_file_writer(os.path.join(self.workdir, "tb")) \
            if self.is_chief else None
        t_run, epochs_done = time.time(), 0
        for epoch in range(start, c.epochs):
            t0 = time.time()
            self.graphs.refresh("step", (c.epochs - epoch) * self.steps)  # SGAS decides edges
            record = self.train_epoch(epoch, cosine_lr(epoch, c.epochs, c.lr, c.lr_min),
                                      resume=partial if epoch == start else None,
                                      on_stop=functools.partial(self._save_partial, epoch))
            self.arch_update.end_epoch(self, epoch)
            if (epoch + 1) % c.eval_every == 0 or epoch == c.epochs - 1:
                record["valid_loss"], record["valid_acc"] = self.evaluate()
            if self.benchmark is not None:
                record.update(self.benchmark.query_genotype(self.current_genotype(),
                                                            prefix="bench_"))
            record["seconds"] = time.time() - t0
            epochs_done += 1
            eta = (time.time() - t_run) / epochs_done * (c.epochs - epoch - 1)
            stop = self._stop_agreed(STOP.requested) and epoch < c.epochs - 1
            if self.is_chief:
                log_epoch(self.workdir, record, self.model.softmax_numpy(), writer,
                          zip(self.space.cell_types, self.alphas))
                if (epoch + 1) % c.ckpt_every == 0 or epoch == c.epochs - 1 or stop:
                    self.checkpointer.save(epoch, {"epoch": epoch})
            self.log(epoch_line(record, c.epochs, eta))
            if stop:
                STOP.check(f"the state after epoch {epoch + 1} is saved in "
                           f"{self.checkpointer.folder}", peer=True)
        soft = self.model.softmax_numpy()
        genotype = self.current_genotype(meta={
            "method": c.arch_update, "perturbation": c.perturbation, "seed": c.seed,
            "run": os.path.abspath(self.workdir), "alphas_digest": alphas_digest(soft)})
        if self.is_chief:
            genotype.save(os.path.join(self.workdir, "genotype_magnitude.json"))
        return genotype

    def _save_partial(self, epoch, partial):
        """Saves the state in the middle of `epoch` (a stop request); returns where."""
        if not self.is_chief:
            return f"the chief saves the state of epoch {epoch + 1} after step {partial['step']}"
        self.checkpointer.save_partial({"epoch": epoch - 1, "partial": partial})
        return (f"the state of epoch {epoch + 1} after step {partial['step']} is saved in "
                f"{self.checkpointer.folder}")

    def resume_state(self):
        """Restores the newest checkpoint; returns its loop state (None: from scratch). Several
        workers: the chief restores and broadcasts variables and state (local disks)."""
        workers = num_workers(self.strategy)
        state = self.checkpointer.restore_latest() if self.is_chief or workers == 1 else None
        if workers > 1:
            variables = [v for group in self.state_variables().values() for v in group]
            hook = getattr(self.arch_update, "state_for_workers", None)
            if self.is_chief and state is not None and hook is not None:
                state = dict(state, method=hook(self, state["epoch"] + 1))  # SGAS history
            state = broadcast_from_chief(self.strategy, self.is_chief, variables, state)
            if state is not None and "method" in state:
                self.arch_update.set_state_from_chief(self, state.pop("method"))
        return state

    def current_genotype(self, meta=None):
        """The magnitude genotype of the supernet's mixing weights (decided edges one-hot,
        removed edges absent: SGAS's decisions count)."""
        return magnitude_genotype(self.space, self.model.arch_weights_numpy(), meta=meta)

def run_search(config, workdir, overwrite=False, strategy=None, is_chief=True, log=None):
    """Validates `config`, prepares `workdir` and runs (or resumes) the search.

    Returns:
        The magnitude Genotype of the trained supernet.
    """
    config.validate()
    check_folder(workdir, "--workdir")
    strategy = strategy or tf.distribute.get_strategy()
    # the data is read and validated, and the supernet built, before anything is written
    loop = SearchLoop(config, workdir, strategy, is_chief, log)
    prepare_workdir(workdir, config, overwrite, is_chief)
    return loop.run()


__all__ = ["SearchLoop", "SearchConfig", "run_search", "cosine_lr", "prepare_workdir"]
