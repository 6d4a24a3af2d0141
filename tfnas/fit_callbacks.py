"""The Keras callbacks of `tfnas train`'s `model.fit` loop: the test split's metrics, a guard
against divergence, stop requests at batch boundaries, and atomic model files."""

import math
import os

import keras

from tfnas.errors import TrainingError
from tfnas.io import atomic_path


class TestEvaluation(keras.callbacks.Callback):
    """Adds the test split's metrics to every epoch's logs as `test_*` (first in the list,
    so the guard, the model files and the history see them). The test split only reports:
    `best.keras` is chosen on the held-out validation split (`val_*`), if any."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        result = self.model.evaluate(self.dataset, verbose=0, return_dict=True)
        logs.update({"test_" + k: float(v) for k, v in result.items()})


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
