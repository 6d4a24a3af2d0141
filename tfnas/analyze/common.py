"""Shared helpers of `tfnas analyze`: statistics (SciPy), output folders, plots, test accuracy."""

import os

import numpy as np
import scipy.stats

from tfnas.io import atomic_path, remove_stale_temps

def kendall_tau(x, y):
    """Kendall's tau-b (SciPy; ties in either ranking handled); nan for fewer than 2 points
    or a constant ranking."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(scipy.stats.kendalltau(x, y, variant="b").statistic)


def pearson(x, y):
    """Pearson's r (SciPy); nan for fewer than 2 points or a constant series."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(scipy.stats.pearsonr(x, y).statistic)


def _out_dir(workdir):
    path = os.path.join(workdir, "analysis")
    os.makedirs(path, exist_ok=True)
    remove_stale_temps(path)
    return path


def _writer(workdir):
    import tensorflow as tf
    return tf.summary.create_file_writer(os.path.join(workdir, "tb", "analysis"))


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save_png(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def _test_accuracy(model, data, batch=256, **call_kw):
    from tfnas.data import Pipeline
    pipe = Pipeline(data, batch, 0, False, 16)
    correct = total = 0
    for x, y in pipe.evaluation(data.x_test, data.y_test):
        logits = model(x, training=False, **call_kw)
        correct += int(np.sum(np.argmax(np.asarray(logits), -1) == np.asarray(y)))
        total += int(len(y))
    return correct / max(total, 1)
