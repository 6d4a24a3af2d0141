"""Retrain a genotype from scratch: `model.fit` with standard Keras callbacks on one
machine, tfnas's own loop (tfnas/retrain.py) under MultiWorkerMirroredStrategy."""

import json
import math
import os

import keras

from tfnas import precision
from tfnas.errors import UsageError, WorkdirError
from tfnas.fit_callbacks import (AtomicModelSave, FiniteGuard, StopRequestGuard,  # noqa: F401
                                 TestEvaluation)
from tfnas.io import atomic_write_json, check_folder, dumps, remove_stale_temps

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

    Writes WORKDIR/train/: config.json, model.keras (the final epoch), best.keras (best
    accuracy on the --validation_split hold-out, only with one), history.csv/.json (`test_*`
    the test split, `val_*` the hold-out), summary.json (which split chose which file), tb/,
    the resume state: backup/ (fit's) or checkpoints/ (the custom loop's). Chief only.
    Returns a Keras History (the custom loop's holds every epoch, resumed ones included).
    """
    import tensorflow as tf
    from tfnas.data import hold_out, load_dataset
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
    data, valid = hold_out(data, config.validation_split, config.seed)
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
        opt = getattr(model.optimizer, "inner_optimizer", model.optimizer)
        seed_drop_path(model, opt.iterations, config.seed)
    log(f"training {genotype.meta.get('name', 'genotype')}: {model.count_params():,} params, "
        f"{steps} steps per epoch, {config.epochs} epochs" + " (tfnas's loop)" * (loop == "custom"))
    monitor = _monitor(config, has_validation=valid is not None)
    test = (data.x_test, data.y_test) if len(data.x_test) else None
    if loop == "custom":
        from tfnas.retrain import RetrainLoop
        history = keras.callbacks.History()
        history.history = RetrainLoop(model, config, pipe, len(data.x_train), test, steps,
                                      strategy, out, monitor, is_chief, log, valid=valid).run()
    else:
        history = _fit(model, config, pipe, valid, test, steps, out, monitor, log, verbose,
                       extra_callbacks)
    if is_chief:
        sizes = {name: 0 if split is None else len(split[1]) for name, split in (
            ("train", (None, data.y_train)), ("validation", valid), ("test", test))}
        _summarize(out, history.history, config, monitor, sizes, log)
    return history


def _fit(model, config, pipe, valid, test, steps, out, monitor, log, verbose, extra_callbacks):
    """`model.fit` from the committed state of an interrupted run, if any."""
    from tfnas import fit_state
    start = fit_state.restore(model, os.path.join(out, "backup"),
                              os.path.join(out, "history.csv"))
    if start:
        log(f"resuming after epoch {start} (train/backup/)")
    train_ds, val_ds, test_ds = _datasets(config, pipe, valid, test, start)
    callbacks = [TestEvaluation(test_ds)] if test_ds is not None else []
    history = model.fit(train_ds, epochs=config.epochs, steps_per_epoch=steps,
                        initial_epoch=start, validation_data=val_ds, shuffle=False,
                        callbacks=callbacks + _callbacks(model, config, out, monitor)
                        + list(extra_callbacks), verbose=verbose)
    atomic_write_json(os.path.join(out, "history.json"),
                      _csv_history(os.path.join(out, "history.csv")))
    return history


def _summarize(out, history, config, monitor, sizes, log):
    """train/summary.json: which split chose which model file, with the test split's numbers
    of each (the test split reports, it never chooses); one line each in the log."""
    acc = "logits_accuracy" if config.auxiliary else "accuracy"
    epochs = len(history.get("loss", []))
    if not epochs:
        return
    def at(e):
        return {k: history[k][e] for k in sorted(history) if k.startswith("test_")
                and e < len(history[k])}
    summary = {"splits": dict(sizes, validation_split=config.validation_split,
                              seed=config.seed),
               "model.keras": {"epoch": epochs, "chosen_by": "the final epoch",
                               **at(epochs - 1)},
               "best.keras": None}
    log(f"model.keras: the final epoch {epochs}" + "".join(
        f", {k} {v:.4f}" for k, v in summary["model.keras"].items() if k == "test_" + acc))
    if monitor in history:
        finite = [(v, e) for e, v in enumerate(history[monitor]) if v is not None
                  and math.isfinite(v)]
        if finite:
            best_e = max(finite, key=lambda t: (t[0], -t[1]))[1]
            summary["best.keras"] = {
                "epoch": best_e + 1, "chosen_by": f"highest {monitor} on the validation split "
                f"({sizes['validation']} training examples held out by --seed)",
                monitor: history[monitor][best_e], **at(best_e)}
            log(f"best.keras: epoch {best_e + 1} by {monitor} "
                f"{history[monitor][best_e]:.4f}" + "".join(
                    f", {k} {v:.4f}" for k, v in at(best_e).items() if k == "test_" + acc))
    atomic_write_json(os.path.join(out, "summary.json"), summary)


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
    history = {k: [number(r[k]) for r in rows] for k in (rows[0] if rows else {})
               if k != "epoch"}
    # Keras's CSVLogger adds an empty val_ column for every key when an epoch has no val_
    # keys (no --validation_split): not a metric
    return {k: v for k, v in history.items() if any(x is not None for x in v)}


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


def _datasets(config, pipe, valid, test, start):
    """fit's (training batches of epochs start.., each epoch seeded by its number as in the
    custom loop; validation batches or None; test batches or None)."""
    import numpy as np
    import tensorflow as tf
    data = pipe.data
    n_cls = data.num_classes

    def targets(x, y):
        y1 = tf.one_hot(y, n_cls)
        return x, ({"logits": y1, "aux_logits": y1} if config.auxiliary else y1)

    train_ds = pipe.epochs(np.arange(len(data.x_train)), start, config.epochs,
                           cutout_prob=1.0 if config.cutout else 0.0).map(targets)
    val_ds, test_ds = (None if split is None else pipe.evaluation(*split).map(targets)
                       for split in (valid, test))
    return train_ds, val_ds, test_ds


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
    """The history key whose best value selects best.keras (None: no best.keras; the test
    split never chooses)."""
    if not has_validation:
        return None
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
    ] + ([AtomicModelSave(os.path.join(out, "best.keras"), monitor=monitor,
                          history=os.path.join(out, "history.csv"))] if monitor else []) + [
        keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(out, "tb")),
        FitBackup(os.path.join(out, "backup")),  # commits what the others wrote
        StopRequestGuard(os.path.join(out, "backup"), after_commit=True),
    ]


def _check_cutout(config, data, style):
    """A cutout square whose half side reaches past the image erases every image whole."""
    h, w = data.input_shape[:2]
    if config.cutout and style == "cifar" and config.cutout_length // 2 >= max(h, w):
        raise UsageError(f"--cutout_length={config.cutout_length} erases the whole {h}x{w} "
                         f"image of every example; use at most {2 * max(h, w) - 1} (e.g. "
                         f"{max(1, min(h, w) // 2)}) or --nocutout")
