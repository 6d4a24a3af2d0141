"""Complete, atomic checkpoints of a supernet, its optimizers and the loop state.

A checkpoint is one `.npz` file: every model variable (weights, alphas, selection state,
BN statistics, RNG states), every optimizer variable, a JSON `state` blob (epoch, ...) and
a `meta` blob (format, tfnas version, what the owner adds, e.g. a config digest). A group
given as a dict names its variables (`model/cell_0/edge_0_2/sep_conv_3x3/depthwise_0`,
`w_opt/momentum/<that path>`): restore matches them by name and refuses, in one line, a
file where any saved or expected name is unmatched or a shape differs, so a code change
that reorders variables cannot restore wrong values. A group given as a list, and the
groups of files written before names (format 1), match by position and shape. Every
variable must be present either way: nothing is silently dropped (the `tf.train.Checkpoint`
trap of TF_NOTES 3).

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


FORMAT = 2


def _entries(groups, positional=()):
    """[(key, variable)] for {group: {name: variable} or [variables]}: named groups by name,
    lists (and the groups in `positional`: a format-1 file) by position."""
    out = []
    for group, variables in groups.items():
        if isinstance(variables, dict) and group not in positional:
            out.extend((f"{group}/{name}", v) for name, v in variables.items())
        else:
            values = variables.values() if isinstance(variables, dict) else variables
            out.extend((f"{group}/{i:05d}", v) for i, v in enumerate(values))
    return out


class Checkpointer:
    """Saves and restores `groups` ({name: [variables]}) under `folder`.

    Args:
        folder: where `ckpt-<epoch>.npz` files live.
        groups: e.g. {"model": model.variables, "w_opt": opt.variables}.
        keep: how many recent checkpoints to keep.
    """

    def __init__(self, folder, groups, keep=2, meta=None):
        self.folder, self.groups, self.keep = folder, groups, int(keep)
        self.meta = dict(meta or {})
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
        from tfnas import __version__
        meta = dict(self.meta, format=FORMAT, tfnas=__version__)
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
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
            meta = json.loads(arrays.pop("__meta__").tobytes().decode()) \
                if "__meta__" in arrays else {"format": 1}
        except Exception as e:
            raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); "
                                  f"delete it to resume from an earlier one, or pass "
                                  f"--overwrite") from e
        entries = _entries(self.groups, positional=self.groups if meta.get("format", 1) < 2
                           else ())
        _check(path, entries, arrays, meta)  # everything before assigning anything
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


def _check(path, entries, arrays, meta):
    """CheckpointError (one line) unless `arrays` holds exactly the `entries`' keys of the
    groups they belong to, in their shapes."""
    if meta.get("format", 1) > FORMAT:
        raise CheckpointError(f"checkpoint {path} was written by tfnas {meta.get('tfnas')} in a "
                              f"newer format; use that version or --overwrite")
    expected = dict(entries)
    groups = {k.split("/", 1)[0] for k in expected}
    missing = [k for k in expected if k not in arrays]
    extra = [k for k in arrays if k.split("/", 1)[0] in groups and k not in expected]
    if missing or extra:
        what = (f"lacks {len(missing)} variable(s) the model has (e.g. {missing[0]})"
                if missing else "")
        what += ("; " if missing and extra else "") + (
            f"holds {len(extra)} the model does not have (e.g. {extra[0]})" if extra else "")
        raise CheckpointError(f"checkpoint {path} {what}; it was written by a different model, "
                              f"config or tfnas version ({meta.get('tfnas', 'before 0.1.0')})")
    for key, v in entries:
        if tuple(arrays[key].shape) != tuple(v.shape):
            raise CheckpointError(f"checkpoint {path}: {key} has shape {arrays[key].shape}, "
                                  f"the model has {tuple(v.shape)}")

