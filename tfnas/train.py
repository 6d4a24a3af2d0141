"""Retrain a genotype from scratch with `model.fit` and standard Keras callbacks."""

import json
import math
import os

from tfnas.errors import WorkdirError
from tfnas.io import atomic_write_json

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def run_train(config, genotype, workdir, strategy=None, log=print, verbose="auto",
              extra_callbacks=()):
    """Trains the discrete network of `genotype`; resumes an interrupted run in `workdir`.

    Writes WORKDIR/train/: config.json, model.keras (last), best.keras (best test accuracy),
    history.csv, history.json, tb/, backup/ (BackupAndRestore state while running).
    Returns the Keras History.
    """
    import keras
    import numpy as np
    import tensorflow as tf
    from tfnas.data import Pipeline, load_dataset
    from tfnas.models import build_model, set_drop_path
    from tfnas.optimizers import EpochCosine, ReferenceSGD

    config.validate()
    out = os.path.join(workdir, "train")
    cfg_path = os.path.join(out, "config.json")
    record = {"config": config.to_json(), "genotype": genotype.to_json()}
    if os.path.exists(cfg_path):
        with open(cfg_path) as f:
            if json.load(f) != json.loads(json.dumps(record)):
                raise WorkdirError(f"{out} holds a training run with a different config or "
                                   f"genotype; use another --workdir")
    os.makedirs(out, exist_ok=True)
    atomic_write_json(cfg_path, record)
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(config.seed)
    data = load_dataset(config.dataset, config.data_dir, config.download, config.limit_examples)
    style = "imagenet" if config.form == "imagenet" else "cifar"
    if style == "imagenet":  # the reference's fixed ImageNet normalisation
        data.mean, data.std = IMAGENET_STATS
    pipe = Pipeline(data, config.batch_size, config.seed, config.cutout and style == "cifar",
                    config.cutout_length, style=style)
    steps = max(1, len(data.x_train) // config.batch_size)
    n_cls = data.num_classes

    def targets(x, y):
        y1 = tf.one_hot(y, n_cls)
        return x, ({"logits": y1, "aux_logits": y1} if config.auxiliary else y1)

    train_ds = pipe.train(np.arange(len(data.x_train)), 0, cutout_prob=1.0 if config.cutout
                          else 0.0, repeat=True).map(targets)
    val_ds = None
    if len(data.x_test):
        val_ds = pipe.evaluation(data.x_test, data.y_test).map(targets)
    if config.lr_schedule == "cosine":
        lr = EpochCosine(config.lr, config.epochs, steps)
    else:
        lr = keras.optimizers.schedules.ExponentialDecay(config.lr, steps, 0.97, staircase=True)
    with strategy.scope():
        model = build_model(genotype, n_cls, data.input_shape, config.channels, config.layers,
                            auxiliary=config.auxiliary, drop_path=config.drop_path,
                            form=config.form)
        loss = keras.losses.CategoricalCrossentropy(from_logits=True,
                                                    label_smoothing=config.label_smoothing)
        # The reference's step: global clip of the summed gradient, coupled L2, torch momentum.
        opt = ReferenceSGD(lr, momentum=config.momentum, l2=config.weight_decay,
                           clip_global_norm=config.grad_clip)
        if config.auxiliary:
            model.compile(opt, loss={"logits": loss, "aux_logits": loss},
                          loss_weights={"logits": 1.0, "aux_logits": config.auxiliary_weight},
                          metrics={"logits": ["accuracy"]})
        else:
            model.compile(opt, loss=loss, metrics=["accuracy"])
    monitor = ("val_logits_accuracy" if config.auxiliary else "val_accuracy") if val_ds \
        else "loss"
    callbacks = [
        keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: set_drop_path(
            model, e / config.epochs)),
        keras.callbacks.BackupAndRestore(os.path.join(out, "backup")),
        keras.callbacks.ModelCheckpoint(os.path.join(out, "model.keras")),
        keras.callbacks.ModelCheckpoint(os.path.join(out, "best.keras"), monitor=monitor,
                                        mode="min" if monitor == "loss" else "max",
                                        save_best_only=True),
        keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(out, "tb")),
        keras.callbacks.TerminateOnNaN(),
    ] + list(extra_callbacks)
    log(f"training {genotype.meta.get('name', 'genotype')}: {model.count_params():,} "
        f"parameters, {steps} steps per epoch, {config.epochs} epochs")
    history = model.fit(train_ds, epochs=config.epochs, steps_per_epoch=steps,
                        validation_data=val_ds, callbacks=callbacks, verbose=verbose)
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    if any(not math.isfinite(v) for vals in hist.values() for v in vals):
        from tfnas.errors import TrainingError
        raise TrainingError("training diverged (NaN loss); lower --lr")
    atomic_write_json(os.path.join(out, "history.json"), hist)
    return history
