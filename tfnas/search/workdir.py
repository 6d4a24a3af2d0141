"""The run directory of a search: what it holds, and the check that a resumed run is the
same run."""

import json
import os
import shutil

import numpy as np

from tfnas.errors import WorkdirError
from tfnas.io import append_jsonl, atomic_write_json, fmt_time, truncate_jsonl

RUN_FILES = ("config.json", "env.json", "checkpoints", "alphas.jsonl", "metrics.jsonl", "tb",
             "genotype_magnitude.json", "sgas.jsonl", "selection", "genotype.json",
             "import.json")


# settings that do not change a run's results (recompute: only float rounding): a resume may
# change them, e.g. add --recompute to a run that ran out of memory
NEUTRAL_KEYS = ("steps_per_execution", "recompute", "ckpt_every_steps")


def prepare_workdir(workdir, config, overwrite, is_chief=True):
    """Creates the run directory, or checks that an existing one ran the same config.

    Raises:
        WorkdirError: the workdir holds a different config and `overwrite` is False.
    """
    cfg_path = os.path.join(workdir, "config.json")
    if os.path.exists(cfg_path) and not overwrite:
        with open(cfg_path) as f:
            old = json.load(f)
        old = getattr(type(config), "migrate", dict)(old)  # keys renamed since
        new = config.to_json()
        # keys added in later versions count as their defaults (an old run still resumes)
        defaults = type(config)().to_json()
        old = {**{k: v for k, v in defaults.items() if k not in old}, **old}
        diff = sorted(k for k in (set(old) | set(new)) - set(NEUTRAL_KEYS)
                      if old.get(k) != new.get(k))
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:4])
            raise WorkdirError(f"workdir {workdir} holds a run with a different config ({shown}); "
                               f"use another --workdir, or --overwrite to discard it")
        return
    if is_chief:
        if overwrite:
            for name in RUN_FILES:
                p = os.path.join(workdir, name)
                if os.path.isdir(p):
                    shutil.rmtree(p)
                elif os.path.exists(p):
                    os.unlink(p)
        os.makedirs(workdir, exist_ok=True)
        atomic_write_json(cfg_path, config.to_json())


def write_env(loop, resumed_from):
    """WORKDIR/env.json: versions, host, devices and the run's shape (chief only)."""
    import platform
    import socket
    import sys

    import keras
    import numpy as np
    import tensorflow as tf
    env = {"tensorflow": tf.__version__, "keras": keras.__version__,
           "numpy": np.__version__, "python": platform.python_version(),
           "host": socket.gethostname(), "argv": sys.argv,
           "devices": [d.name for d in tf.config.list_logical_devices()],
           "replicas": loop.replicas, "strategy": type(loop.strategy).__name__,
           "seed": loop.config.seed, "resumed_from_epoch": resumed_from,
           "steps_per_epoch": loop.steps, "weights": loop.model.count_weights()}
    atomic_write_json(os.path.join(loop.workdir, "env.json"), env)


def config_digest(config):
    """Short hash of a config's result-relevant fields (NEUTRAL_KEYS left out): recorded in
    each checkpoint, so a file can be matched with the run that wrote it."""
    import hashlib
    fields = {k: v for k, v in config.to_json().items() if k not in NEUTRAL_KEYS}
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def alphas_digest(softmaxed):
    """Short hash of the softmaxed alphas (rounded to 1e-6), to compare runs and replicas."""
    import hashlib
    h = hashlib.sha1()
    for t in sorted(softmaxed):
        h.update(np.round(np.asarray(softmaxed[t], np.float64), 6).tobytes())
    return h.hexdigest()[:12]


def epoch_line(r, epochs, eta):
    """The progress line of a finished search epoch."""
    parts = [f"epoch {r['epoch'] + 1}/{epochs}",
             f"train loss {r['train_loss']:.3f} acc {r['train_acc']:.3f}"]
    if "valid_acc" in r:
        parts.append(f"valid loss {r['valid_loss']:.3f} acc {r['valid_acc']:.3f}")
    bench = [f"{k[6:]} {v:.2f}" for k, v in r.items() if k.startswith("bench_") and
             "_test" in k and isinstance(v, float)]
    if bench:
        parts.append("benchmark " + ", ".join(bench))
    parts.append(f"lr {r['lr']:.4f}  {r['seconds']:.1f}s  ETA {fmt_time(eta)}")
    return " | ".join(parts)


def log_epoch(workdir, record, softmax, writer, alphas):
    """An epoch's rows of metrics.jsonl and alphas.jsonl, and its TensorBoard scalars and
    alpha histograms (`alphas`: (cell type, alpha variable) pairs)."""
    import tensorflow as tf
    append_jsonl(os.path.join(workdir, "metrics.jsonl"), record)
    append_jsonl(os.path.join(workdir, "alphas.jsonl"), {
        "epoch": record["epoch"], "softmax": {t: w.round(6).tolist()
                                              for t, w in softmax.items()}})
    with writer.as_default(step=record["epoch"]):
        for k, v in record.items():
            if k != "epoch":
                tf.summary.scalar(k, v)
        for t, a in alphas:
            tf.summary.histogram(f"alpha_{t}", a)
    writer.flush()


def truncate_logs(workdir, start):
    """Drops the log rows of epochs from `start` on (a resume from an earlier checkpoint)."""
    for name in ("metrics.jsonl", "alphas.jsonl", "sgas.jsonl"):
        truncate_jsonl(os.path.join(workdir, name), "epoch", start)
