"""tfnas's Grappler settings (tfnas/grappler.py): memory optimizer off (same numbers) and one
meta-optimizer iteration (rounding bounded here), each with its opt-out."""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tfnas.grappler import apply_settings, settings_in_force

HERE = os.path.dirname(os.path.abspath(__file__))


def test_settings_are_in_force_and_functions_still_run():
    applied = apply_settings()
    assert apply_settings() == applied  # once per process
    assert settings_in_force() == {"memory_optimizer": "off", "meta_optimizer_iterations": 1}

    @tf.function
    def f(xs):  # a large sum: what the memory optimizer rewrites
        return tf.add_n([x * float(i + 1) for i, x in enumerate(tf.unstack(xs))])

    xs = np.arange(64 * 8, dtype=np.float32).reshape(64, 8)
    expected = (xs * np.arange(1, 65, dtype=np.float32)[:, None]).sum(0)
    np.testing.assert_allclose(f(tf.constant(xs)).numpy(), expected, rtol=1e-6)


_SEARCH = """
import json, sys
sys.path.insert(0, {tests!r})
import tensorflow as tf
from helpers import tiny_config
from tfnas.grappler import settings_in_force
from tfnas.search import run_search
cfg = tiny_config({folder!r}, epochs=1, steps_per_epoch=6, batch_size=32)
g = run_search(cfg, {folder!r} + "/run", log=lambda s: None)
rows = [json.loads(line) for line in open({folder!r} + "/run/metrics.jsonl")]
print(json.dumps({{"grappler": settings_in_force(), "loss": [r["train_loss"] for r in rows],
                   "alphas": open({folder!r} + "/run/alphas.jsonl").read().splitlines()[-1]}}))
"""


def _search(folder, **env):
    """The tiny search in a fresh process with the environment `env`."""
    os.makedirs(folder)
    out = subprocess.run([sys.executable, "-c", _SEARCH.format(tests=HERE, folder=folder)],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_one_iteration_changes_only_rounding_and_the_opt_outs_restore_defaults(tmp_path):
    default = _search(str(tmp_path / "default"), TFNAS_GRAPPLER_ITERATIONS="2",
                      TFNAS_MEMORY_OPTIMIZER="1")  # another process: settings are per process
    assert default["grappler"] == {"memory_optimizer": "default", "meta_optimizer_iterations": 2}
    from helpers import tiny_config
    from tfnas.search import run_search
    folder = str(tmp_path / "ours")
    run_search(tiny_config(folder, epochs=1, steps_per_epoch=6, batch_size=32),
               folder + "/run", log=lambda s: None)
    assert settings_in_force() == {"memory_optimizer": "off", "meta_optimizer_iterations": 1}
    loss = [json.loads(line)["train_loss"] for line in open(folder + "/run/metrics.jsonl")]
    np.testing.assert_allclose(loss, default["loss"], rtol=1e-4)
    a = json.loads(open(folder + "/run/alphas.jsonl").read().splitlines()[-1])["softmax"]
    b = json.loads(default["alphas"])["softmax"]
    for t in a:
        np.testing.assert_allclose(np.asarray(a[t]), np.asarray(b[t]), atol=1e-4)
