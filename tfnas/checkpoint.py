"""Complete, atomic checkpoints of a supernet, its optimizers and the loop state.

A checkpoint is one `.npz` file: every model variable (weights, alphas, selection state,
BN statistics, RNG states), every optimizer variable and a JSON `state` blob (epoch, ...).
Variables are matched by position and shape on restore, and every one must be present, so
nothing is silently dropped (the `tf.train.Checkpoint` trap of TF_NOTES 3).

Besides the numbered checkpoints, `partial.npz` holds the state in the middle of a unit of
work (an epoch, a selection's tuning) when a run was stopped by SIGTERM or SIGINT
(`tfnas.interrupt`). It records which numbered checkpoint it continues (`after`) and counts
only while that one is still the newest: a numbered save removes it, and a stale one (a kill
between the two) is ignored and removed.
"""

import glob
import json
import os
import re
import tempfile

import numpy as np

from tfnas.errors import CheckpointError, TrainingError
from tfnas.io import TMP_PREFIX, remove_stale_temps, umask_mode

PARTIAL = "partial.npz"


def metric_state(metrics):
    """{name: [values]} of Keras metrics' variables (running totals and counts: float32,
    exact through JSON): part of a partial state."""
    return {k: [float(v.numpy()) for v in m.variables] for k, m in metrics.items()}


def set_metric_state(metrics, state):
    for k, values in (state or {}).items():
        for v, value in zip(metrics[k].variables, values):
            v.assign(value)


def _entries(groups):
    """[(key, variable)] for {group: [variables]}, keys unique and stable."""
    out = []
    for group, variables in groups.items():
        for i, v in enumerate(variables):
            # By position: Keras puts per-instance names ("supernet_2") into variable paths.
            out.append((f"{group}/{i:05d}", v))
    return out


class Checkpointer:
    """Saves and restores `groups` ({name: [variables]}) under `folder`.

    Args:
        folder: where `ckpt-<epoch>.npz` files live.
        groups: e.g. {"model": model.variables, "w_opt": opt.variables}.
        keep: how many recent checkpoints to keep.
    """

    def __init__(self, folder, groups, keep=2):
        self.folder, self.groups, self.keep = folder, groups, int(keep)
        if os.path.isdir(folder):
            remove_stale_temps(folder)  # what a kill during an earlier save left behind

    def path(self, epoch):
        return os.path.join(self.folder, f"ckpt-{epoch:05d}.npz")

    def list(self):
        found = []
        for p in glob.glob(os.path.join(self.folder, "ckpt-*.npz")):
            m = re.fullmatch(r"ckpt-(\d+)\.npz", os.path.basename(p))
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def save(self, epoch, state):
        """Writes `ckpt-<epoch>.npz` atomically, drops the oldest beyond `keep` and any
        partial state (the new checkpoint is newer).

        Raises:
            TrainingError: a variable holds NaN or inf (nothing is written: the newest
                checkpoint on disk stays the last good one).
        """
        self._write(self.path(epoch), state)
        for _, old in self.list()[:-self.keep]:
            os.unlink(old)
        self._drop_partial()

    def save_partial(self, state):
        """Writes `partial.npz` (the state in the middle of a unit of work) atomically; it
        continues the newest numbered checkpoint (or none)."""
        found = self.list()
        self._write(os.path.join(self.folder, PARTIAL),
                    dict(state, after=found[-1][0] if found else None))

    def _drop_partial(self):
        p = os.path.join(self.folder, PARTIAL)
        if os.path.exists(p):
            os.unlink(p)

    def _write(self, path, state):
        arrays = {k: np.asarray(v.numpy()) for k, v in _entries(self.groups)}
        bad = [k for k, a in arrays.items()
               if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a))]
        if bad:
            raise TrainingError(
                f"the state holds NaN/inf values ({len(bad)} variables, e.g. {bad[0]}); no "
                f"checkpoint was written, the last good one in {self.folder} is kept. Lower "
                f"the learning rate or check the data")
        os.makedirs(self.folder, exist_ok=True)
        arrays["__state__"] = np.frombuffer(json.dumps(state).encode(), np.uint8)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=TMP_PREFIX + "ckpt-",
                                   suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            umask_mode(tmp)  # mkstemp's 0600 -> what a plain open() would make
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def restore(self, path):
        """Restores every variable from `path`; returns the state dict.

        Raises:
            CheckpointError: unreadable file, or a variable missing / shaped differently (the
                file is left untouched).
        """
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in f.files}
            state = json.loads(arrays.pop("__state__").tobytes().decode())
        except Exception as e:
            raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); "
                                  f"delete it to resume from an earlier one, or pass "
                                  f"--overwrite") from e
        entries = _entries(self.groups)
        for key, v in entries:  # check everything before assigning anything
            if key not in arrays:
                raise CheckpointError(f"checkpoint {path} lacks variable {key}; it was written "
                                      f"by a different model or config")
            if tuple(arrays[key].shape) != tuple(v.shape):
                raise CheckpointError(f"checkpoint {path}: {key} has shape "
                                      f"{arrays[key].shape}, the model has {tuple(v.shape)}")
        for key, v in entries:
            v.assign(arrays[key])
        return state

    @staticmethod
    def _peek(path):
        """The state blob of a checkpoint file, nothing assigned (an unreadable partial
        state counts as stale)."""
        try:
            with np.load(path) as f:
                return json.loads(f["__state__"].tobytes().decode())
        except Exception:  # noqa: BLE001
            return {"after": "unreadable"}

    def restore_latest(self):
        """Restores the newest state: the partial one if it continues the newest numbered
        checkpoint, else that checkpoint; returns its state (None when there is none). A
        restored partial state keeps its `after` key."""
        found = self.list()
        newest = found[-1][0] if found else None
        partial = os.path.join(self.folder, PARTIAL)
        if os.path.exists(partial):
            if self._peek(partial).get("after") == newest:
                return self.restore(partial)
            os.unlink(partial)  # a kill between a numbered save and the removal
        return self.restore(found[-1][1]) if found else None
