"""The search run: data, run directory, checkpoints and the epochs of the search.

The step itself (alpha step on a validation batch, then weight step; one traced function
per run) and the state it trains are `tfnas.bilevel.SearchState`; this module adds what a
run needs around it: the dataset and its bilevel split, the input pipeline, checkpoints,
resume, the per-epoch logs and TensorBoard, and the epoch schedule (cosine rate, SGAS).
"""

import functools
import math
import os
import sys
import time

import keras
import tensorflow as tf

from tfnas import precision
from tfnas.bilevel import EpochRunner, SearchState
from tfnas.checkpoint import Checkpointer
from tfnas.config import SearchConfig
from tfnas.data import Pipeline, bilevel_split, load_dataset
from tfnas.errors import TrainingError, WorkdirError
from tfnas.grappler import apply_settings
from tfnas.io import check_folder, remove_stale_temps
from tfnas.search.components import ARCH_UPDATES, PERTURBATIONS
from tfnas.search.workdir import (alphas_digest, config_digest, epoch_line, log_epoch,
                                  prepare_workdir, truncate_logs, write_env)
from tfnas.derive import magnitude_genotype
from tfnas.distribute import any_worker_fn, broadcast_from_chief, distribute_input, num_workers
from tfnas.interrupt import STOP
from tfnas.progress import Progress
from tfnas.spaces import get_space
from tfnas.supernet import build_supernet
from tfnas.supernet.mixed import MIXED_OPS

def _memory_and_bn(model, config, replicas):
    """--recompute (edges recompute their activations), then --bn=global on several replicas
    (synchronized BN, which keeps per-edge traces: a collective per BN). The same rule for
    the search and everything that loads it (selection, analysis)."""
    if config.recompute:
        model.share_edge_traces(True, recompute=True)
    if config.bn == "global" and replicas > 1:
        model.set_synchronized_bn(True)


def cosine_lr(epoch, epochs, lr, lr_min):
    """PyTorch's CosineAnnealingLR(T_max=epochs, eta_min) value at `epoch`."""
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


class SearchLoop(EpochRunner):
    """Trains a supernet as REFERENCE section 3 (its state: `self.state`, a SearchState).

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
        with strategy.scope():
            with precision.policy(config.mixed_precision):
                self.model = build_supernet(self.space, config.channels, config.layers,
                                            self.data.num_classes, self.data.input_shape,
                                            skip_zero=config.skip_zero_ops,
                                            mixed_op=config.mixed_op)
            _memory_and_bn(self.model, config, self.replicas)
        self.state = SearchState(self.model, config, strategy, arch_update(), perturbation(),
                                 global_batch_size=config.batch_size)
        self.steps_per_execution, self.batch_size = config.steps_per_execution, config.batch_size
        self.ckpt_every_steps = config.ckpt_every_steps
        self.checkpointer = Checkpointer(
            os.path.join(workdir, "checkpoints"), self.state.named_variables(),
            keep=config.keep_checkpoints, meta={"config": config_digest(config)})
        self.benchmark = None
        if config.benchmark_table:
            from tfnas.benchmarks import open_benchmark
            self.benchmark = open_benchmark(config.benchmark_table, self.space)
        self._stop_agreed = any_worker_fn(strategy)  # a stop request seen by any worker

    def state_variables(self):
        """Every variable a checkpoint must hold to resume exactly."""
        return self.state.variables()

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

    def batches(self, epoch, data_epoch=None, tuning=False, skip=0):
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
            self.state.metrics[m].reset_state()
        x, y = self.data.x_train[self.valid_idx], self.data.y_train[self.valid_idx]
        self.state.graphs.check("eval")  # several workers: each decodes its share of a batch
        progress = Progress(self.eval_batches(batches), "scoring" if batch_stats else "eval",
                            self.config.batch_size, self.log, bar=False)
        for i, batch in enumerate(self._distribute(functools.partial(
                self.pipeline.evaluation, x, y, batches=batches))):
            self.state._eval_fn(batch, training=bool(batch_stats))
            progress.update(i + 1)
        loss = float(self.state.metrics["valid_loss"].result())
        if not math.isfinite(loss):
            raise TrainingError(
                f"validation loss became {loss}; the supernet diverged. The last good "
                f"checkpoint is kept in {self.checkpointer.folder}. Lower --lr or --arch_lr")
        return loss, float(self.state.metrics["valid_acc"].result())

    def diverged_hint(self):
        return (f"the last good checkpoint is kept in {self.checkpointer.folder}. Lower "
                f"--lr or --arch_lr, or check the data")

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
            self.state.graphs.refresh("step", (c.epochs - epoch) * self.steps)  # SGAS decides edges
            record = self.train_epoch(epoch, cosine_lr(epoch, c.epochs, c.lr, c.lr_min),
                                      resume=partial if epoch == start else None,
                                      on_stop=functools.partial(self._save_partial, epoch))
            self.state.arch_update.end_epoch(self, epoch)
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
                          zip(self.space.cell_types, self.state.alphas))
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
            hook = getattr(self.state.arch_update, "state_for_workers", None)
            if self.is_chief and state is not None and hook is not None:
                state = dict(state, method=hook(self, state["epoch"] + 1))  # SGAS history
            state = broadcast_from_chief(self.strategy, self.is_chief, variables, state)
            if state is not None and "method" in state:
                self.state.arch_update.set_state_from_chief(self, state.pop("method"))
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
