"""Retrain a genotype from scratch: `model.fit` with standard Keras callbacks on one
machine, tfnas's own loop (tfnas/retrain.py) under MultiWorkerMirroredStrategy."""

import json
import math
import os

import keras

from tfnas import precision
from tfnas.errors import TrainingError, UsageError, WorkdirError
from tfnas.io import atomic_path, atomic_write_json, check_folder, dumps, remove_stale_temps

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


LOOPS = ("auto", "fit", "custom")


def choose_loop(loop, multi_worker):
    """"fit" (Keras's model.fit) or "custom" (tfnas.retrain.RetrainLoop); "auto" takes the
    custom loop where fit cannot run: under MultiWorkerMirroredStrategy (Keras 3.15's fit
    reduces a distributed batch eagerly and its scalar logs along axis 0 there).

    Raises:
        UsageError: an unknown loop, or "fit" under `multi_worker`.
    """
    if loop not in LOOPS:
        raise UsageError(f"--loop={loop!r} is invalid: expected one of {', '.join(LOOPS)}")
    if loop == "fit" and multi_worker:
        raise UsageError("--loop=fit cannot run under --strategy=multi_worker (Keras 3's fit "
                         "fails there); use --loop=auto or --loop=custom")
    if loop == "auto":
        return "custom" if multi_worker else "fit"
    return loop


def run_train(config, genotype, workdir, strategy=None, log=print, verbose="auto",
              extra_callbacks=(), is_chief=True, loop="auto"):
    """Trains the discrete network of `genotype`; resumes an interrupted run in `workdir`.

    Writes WORKDIR/train/: config.json, model.keras (last), best.keras (best test accuracy),
    history.csv, history.json, tb/, and the resume state, kept when the run ends: backup/
    (fit's, `tfnas.fit_state`) or checkpoints/ (the custom loop's). Only the chief writes.
    Returns a Keras History (the custom loop's holds every epoch, resumed ones included).
    """
    import tensorflow as tf
    from tfnas.data import load_dataset
    from tfnas.grappler import apply_settings
    from tfnas.models import build_model, seed_drop_path

    apply_settings()
    config.validate()
    check_folder(workdir, "--workdir")
    out = os.path.join(workdir, "train")
    record = {"config": config.to_json(), "genotype": genotype.to_json()}
    _check_same_run(os.path.join(out, "config.json"), record, config)
    strategy = strategy or tf.distribute.get_strategy()
    loop = choose_loop(loop, isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy))
    _check_resume_state(out, loop)
    keras.utils.set_random_seed(config.seed)
    # the data is read and validated before anything is written into the workdir
    data = load_dataset(config.dataset, config.data_dir, config.download, config.limit_examples,
                        config.skip_bad_images)
    style = "imagenet" if config.form == "imagenet" else "cifar"
    _check_cutout(config, data, style)
    if is_chief:
        os.makedirs(out, exist_ok=True)
        remove_stale_temps(out)
        atomic_write_json(os.path.join(out, "config.json"), record)
    pipe, steps = _pipeline(config, data, style)
    with strategy.scope(), precision.policy(config.mixed_precision):
        model = build_model(genotype, data.num_classes, data.input_shape, config.channels,
                            config.layers, auxiliary=config.auxiliary,
                            drop_path=config.drop_path, form=config.form)
        _compile(model, config, steps)
        opt = model.optimizer
        seed_drop_path(model, getattr(opt, "inner_optimizer", opt).iterations, config.seed)
    log(f"training {genotype.meta.get('name', 'genotype')}: {model.count_params():,} "
        f"parameters, {steps} steps per epoch, {config.epochs} epochs"
        + (" (tfnas's loop)" if loop == "custom" else ""))
    monitor = _monitor(config, has_validation=len(data.x_test) > 0)
    if loop == "custom":
        from tfnas.retrain import RetrainLoop
        test = (data.x_test, data.y_test) if len(data.x_test) else None
        history = keras.callbacks.History()
        history.history = RetrainLoop(model, config, pipe, len(data.x_train), test, steps,
                                      strategy, out, monitor, is_chief, log).run()
        return history
    return _fit(model, config, pipe, data, steps, out, monitor, log, verbose, extra_callbacks)


def _fit(model, config, pipe, data, steps, out, monitor, log, verbose, extra_callbacks):
    """`model.fit` from the committed state of an interrupted run, if any."""
    from tfnas import fit_state
    start = fit_state.restore(model, os.path.join(out, "backup"),
                              os.path.join(out, "history.csv"))
    if start:
        log(f"resuming after epoch {start} (train/backup/)")
    train_ds, val_ds = _datasets(config, pipe, data, start)
    history = model.fit(train_ds, epochs=config.epochs, steps_per_epoch=steps,
                        initial_epoch=start, validation_data=val_ds, shuffle=False,
                        callbacks=_callbacks(model, config, out, monitor)
                        + list(extra_callbacks), verbose=verbose)
    atomic_write_json(os.path.join(out, "history.json"),
                      _csv_history(os.path.join(out, "history.csv")))
    return history


def _check_resume_state(out, loop):
    """A run is resumed by the loop that started it (fit's backup/ and the custom loop's
    checkpoints/ hold different state)."""
    theirs = {"fit": ("checkpoints", "custom"), "custom": ("backup", "fit")}[loop]
    if os.path.isdir(os.path.join(out, theirs[0])) and os.listdir(os.path.join(out, theirs[0])):
        raise WorkdirError(
            f"{out} holds the resume state of a run of the {theirs[1]} loop ({theirs[0]}/); "
            f"resume it with the same --strategy (or --loop={theirs[1]}), or use another "
            f"--workdir")


def _csv_history(path):
    """{key: [value per epoch]} of every epoch in fit's history.csv (resumed runs append)."""
    import csv
    with open(path) as f:
        rows = list(csv.DictReader(f))
    def number(text):  # CSVLogger writes "NA" for a key an epoch lacks
        try:
            return float(text)
        except (TypeError, ValueError):
            return None
    return {k: [number(r[k]) for r in rows] for k in (rows[0] if rows else {}) if k != "epoch"}


def _check_same_run(cfg_path, record, config):
    """An existing train/ must hold the same config (fields added later count as their
    defaults) and genotype."""
    if not os.path.exists(cfg_path):
        return
    with open(cfg_path) as f:
        old = json.load(f)
    old["config"] = {**{k: v for k, v in type(config)().to_json().items()
                        if k not in old.get("config", {})}, **old.get("config", {})}
    new = json.loads(dumps(record))
    for rec in (old, new):  # fields that do not change results may change on resume
        rec["config"].pop("steps_per_execution", None)
    if old != new:
        raise WorkdirError(f"{os.path.dirname(cfg_path)} holds a training run with a different "
                           f"config or genotype; use another --workdir")


def _pipeline(config, data, style):
    """(the input Pipeline, steps per epoch)."""
    from tfnas.data import Pipeline
    if style == "imagenet":  # the reference's fixed ImageNet normalisation
        data.mean, data.std = IMAGENET_STATS
    pipe = Pipeline(data, config.batch_size, config.seed, config.cutout and style == "cifar",
                    config.cutout_length, style=style)
    return pipe, max(1, len(data.x_train) // config.batch_size)


def _datasets(config, pipe, data, start):
    """fit's (training batches of epochs start.., each epoch seeded by its number as in the
    custom loop; test batches or None)."""
    import numpy as np
    import tensorflow as tf
    n_cls = data.num_classes

    def targets(x, y):
        y1 = tf.one_hot(y, n_cls)
        return x, ({"logits": y1, "aux_logits": y1} if config.auxiliary else y1)

    train_ds = pipe.epochs(np.arange(len(data.x_train)), start, config.epochs,
                           cutout_prob=1.0 if config.cutout else 0.0).map(targets)
    val_ds = pipe.evaluation(data.x_test, data.y_test).map(targets) if len(data.x_test) \
        else None
    return train_ds, val_ds


def _compile(model, config, steps):
    """The reference's step: global clip of the summed gradient, coupled L2, torch momentum,
    a cosine stepped per epoch (or x0.97 per epoch for ImageNet)."""
    from tfnas.optimizers import EpochCosine, ReferenceSGD
    if config.lr_schedule == "cosine":
        lr = EpochCosine(config.lr, config.epochs, steps)
    else:
        lr = keras.optimizers.schedules.ExponentialDecay(config.lr, steps, 0.97, staircase=True)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True,
                                                label_smoothing=config.label_smoothing)
    opt = ReferenceSGD(lr, momentum=config.momentum, l2=config.weight_decay,
                       clip_global_norm=config.grad_clip)
    if config.auxiliary:
        model.compile(opt, loss={"logits": loss, "aux_logits": loss},
                      loss_weights={"logits": 1.0, "aux_logits": config.auxiliary_weight},
                      metrics={"logits": ["accuracy"]},
                      steps_per_execution=config.steps_per_execution)
    else:
        model.compile(opt, loss=loss, metrics=["accuracy"],
                      steps_per_execution=config.steps_per_execution)


def _monitor(config, has_validation):
    """The history key whose best value selects best.keras."""
    if not has_validation:
        return "loss"
    return "val_logits_accuracy" if config.auxiliary else "val_accuracy"


def _callbacks(model, config, out, monitor):
    from tfnas.fit_state import FitBackup
    from tfnas.models import set_drop_path
    return [
        FiniteGuard(),  # first: a non-finite loss stops fit before any callback saves
        StopRequestGuard(os.path.join(out, "backup")),
        keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: set_drop_path(
            model, e / config.epochs)),
        AtomicModelSave(os.path.join(out, "model.keras")),
        AtomicModelSave(os.path.join(out, "best.keras"), monitor=monitor,
                        history=os.path.join(out, "history.csv")),
        keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(out, "tb")),
        FitBackup(os.path.join(out, "backup")),  # commits what the others wrote
        StopRequestGuard(os.path.join(out, "backup"), after_commit=True),
    ]


class FiniteGuard(keras.callbacks.Callback):
    """Stops `fit` with a TrainingError at the first non-finite training loss (checked every
    batch) or validation loss, before any later callback saves a checkpoint or model: what
    is on disk stays the last good state."""

    def _check(self, logs, where):
        for key, value in (logs or {}).items():
            if "loss" in key and not math.isfinite(float(value)):
                raise TrainingError(f"training diverged: {key} became {float(value)} {where}; "
                                    f"the last good model and backup are kept. Lower --lr")

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f"at step {batch}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, f"in epoch {epoch + 1}")


class StopRequestGuard(keras.callbacks.Callback):
    """Ends `fit` with `Interrupted` after SIGTERM / SIGINT (`tfnas.interrupt`): inside an
    epoch at the next batch boundary, before any epoch-end callback could commit a partial
    epoch (fit keeps no state inside an epoch: the rerun redoes it from the last commit); a
    request during an epoch's last step lets the epoch finish, and `after_commit` (the
    instance placed after FitBackup) stops once it is committed."""

    def __init__(self, backup, after_commit=False):
        super().__init__()
        self.backup, self.after_commit, self.epoch = backup, after_commit, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        from tfnas.interrupt import STOP
        if STOP.requested and not self.after_commit and \
                batch + 1 < (self.params or {}).get("steps", float("inf")):
            STOP.check(f"epoch {self.epoch + 1} stopped after step {batch + 1}; the epochs "
                       f"before it are committed in {self.backup} and the rerun starts epoch "
                       f"{self.epoch + 1} again")

    def on_epoch_end(self, epoch, logs=None):
        from tfnas.interrupt import STOP
        if STOP.requested and self.after_commit and \
                epoch + 1 < (self.params or {}).get("epochs", 0):
            STOP.check(f"the state after epoch {epoch + 1} is committed in {self.backup}")


class AtomicModelSave(keras.callbacks.Callback):
    """Saves the model to `path` at the end of every epoch (or, with `monitor`, when the
    monitored value improved), through a temp file and a rename: a kill never leaves a
    truncated `.keras` file. The best value so far is read back from `history` (the
    CSVLogger file) on resume, so a resumed run does not overwrite a better `best.keras`."""

    def __init__(self, path, monitor=None, history=None):
        super().__init__()
        self.path, self.monitor, self.history = path, monitor, history
        self.lower_is_better = bool(monitor) and "loss" in monitor
        self.best = None

    def on_train_begin(self, logs=None):
        if self.monitor and self.history and os.path.exists(self.path) and \
                os.path.exists(self.history):
            import csv
            with open(self.history) as f:
                values = [float(r[self.monitor]) for r in csv.DictReader(f)
                          if r.get(self.monitor) not in (None, "")]
            values = [v for v in values if math.isfinite(v)]
            if values:
                self.best = min(values) if self.lower_is_better else max(values)

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor:
            value = (logs or {}).get(self.monitor)
            if value is None or not math.isfinite(float(value)):
                return
            value = float(value)
            if self.best is not None and (value >= self.best if self.lower_is_better
                                          else value <= self.best):
                return
            self.best = value
        with atomic_path(self.path) as tmp:
            self.model.save(tmp)


def _check_cutout(config, data, style):
    """A cutout square whose half side reaches past the image erases every image whole."""
    h, w = data.input_shape[:2]
    if config.cutout and style == "cifar" and config.cutout_length // 2 >= max(h, w):
        raise UsageError(f"--cutout_length={config.cutout_length} erases the whole {h}x{w} "
                         f"image of every example; use at most {2 * max(h, w) - 1} (e.g. "
                         f"{max(1, min(h, w) // 2)}) or --nocutout")
