"""`model.fit`'s resume state for `tfnas train`, written atomically.

Keras's `BackupAndRestore` writes its weights file in place and its epoch number in a second
file after it: a kill inside `save_weights` leaves a file the next start cannot read, and a
kill between the two writes resumes epoch N's weights as epoch N-1. It also deletes the
state when a run ends, so re-running a finished run trained it again and appended to its
history. `FitBackup` instead commits each epoch as one folder, `backup/epoch-NNNNN/`
(weights with the optimizer state, `state.json`), built under a temporary name and renamed;
the older ones are removed after; the last one is kept, and a finished run re-run trains
nothing. It runs after every other epoch-end callback, so a committed epoch's model files
and history row are on disk; `restore` cuts `history.csv` back to the committed epochs.
"""

import csv
import io
import os
import shutil

import keras

from tfnas.errors import CheckpointError
from tfnas.io import atomic_write_json, atomic_write_text

PREFIX = "epoch-"
WEIGHTS = "state.weights.h5"


def _committed(folder):
    """[(epoch, path)] of the complete epoch folders, oldest first."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(PREFIX) and name[len(PREFIX):].isdigit() and \
                os.path.exists(os.path.join(path, "state.json")):
            found.append((int(name[len(PREFIX):]), path))
    return sorted(found)


class FitBackup(keras.callbacks.Callback):
    """Commits fit's state after every epoch (see the module docstring)."""

    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def on_epoch_end(self, epoch, logs=None):
        final = os.path.join(self.folder, f"{PREFIX}{epoch + 1:05d}")
        tmp = f"{final}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        self.model.save_weights(os.path.join(tmp, WEIGHTS))
        atomic_write_json(os.path.join(tmp, "state.json"), {"epoch": epoch + 1})
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        for name in os.listdir(self.folder):
            if os.path.join(self.folder, name) != final:
                shutil.rmtree(os.path.join(self.folder, name), ignore_errors=True)


def restore(model, folder, history_csv):
    """Loads the newest committed state into `model` (compiled) and cuts `history_csv` to
    its epochs; returns the epoch to start at (0 without a state).

    Raises:
        CheckpointError: the state cannot be read (it names the folder to remove).
    """
    if os.path.isdir(folder):  # temporary folders of a killed save
        for name in os.listdir(folder):
            if ".tmp-" in name:
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    states = _committed(folder)
    if not states:  # a kill while the first epoch was committed: its row may be there
        _cut_history(history_csv, 0)
        return 0
    epoch, path = states[-1]
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(os.path.join(path, WEIGHTS))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"the resume state {path} cannot be read ({e}); remove "
                              f"{folder} to train from the start") from e
    _cut_history(history_csv, epoch)
    return epoch


def _cut_history(path, epochs):
    """Keeps the header and the rows of epochs < `epochs` (drops a torn or uncommitted row)."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        text = f.read()
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or "epoch" not in rows[0]:
        return
    col = rows[0].index("epoch")
    keep = [rows[0]] + [r for r in rows[1:] if len(r) == len(rows[0]) and
                        r[col].isdigit() and int(r[col]) < epochs]
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n" if "\r\n" in text else "\n").writerows(keep)
    if out.getvalue() != text:
        atomic_write_text(path, out.getvalue())
