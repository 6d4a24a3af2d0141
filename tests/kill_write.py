"""Run in a subprocess: starts one tfnas write to PATH and SIGKILLs itself in the middle of
it (after the new bytes are written, before the rename or the end of the line), as a power
cut or `kill -9` would. Usage: kill_write.py KIND PATH (KIND: json, jsonl, checkpoint)."""

import os
import signal
import sys

import numpy as np

from tfnas import io as tio
from tfnas.checkpoint import Checkpointer

kind, path = sys.argv[1], sys.argv[2]


def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


class Var:
    """The piece of a tf.Variable that Checkpointer uses."""

    def __init__(self, value):
        self.value = np.asarray(value, np.float32)
        self.shape = self.value.shape

    def numpy(self):
        return self.value


if kind == "json":
    os.replace = die  # the temp file is complete, the rename never happens
    tio.atomic_write_json(path, {"new": True, "loss": float("nan")})
elif kind == "jsonl":
    class Torn:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def write(self, text):
            self.f.write(text[: len(text) // 2])  # half a line reaches the disk
            self.f.flush()
            die()

    real_open = open
    tio.open = lambda p, mode="r": Torn(real_open(p, mode))  # module-level name lookup
    tio.append_jsonl(path, {"epoch": 99, "loss": 1.0})
elif kind == "checkpoint":
    os.replace = die
    Checkpointer(os.path.dirname(path), {"model": [Var([1.0, 2.0])]}, keep=2).save(
        7, {"epoch": 7})
raise SystemExit("the write finished: the kill did not happen")
