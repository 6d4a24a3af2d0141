"""tfnas's Grappler settings (tfnas/grappler.py): memory optimizer off (same numbers) and one
meta-optimizer iteration (rounding bounded here), each with its opt-out."""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tfnas.grappler import SEARCH_PASSES_OFF, apply_settings, settings_in_force

HERE = os.path.dirname(os.path.abspath(__file__))


def test_settings_are_in_force_and_functions_still_run():
    applied = apply_settings()
    assert apply_settings() == applied  # once per process
    in_force = settings_in_force()
    assert {k: in_force[k] for k in ("memory_optimizer", "meta_optimizer_iterations")} == {
        "memory_optimizer": "off", "meta_optimizer_iterations": 1}
    searching = apply_settings(search=True)  # what SearchLoop asks for
    assert set(searching) == set(applied) | set(SEARCH_PASSES_OFF) | {"disable_tfg_optimizer"}
    assert settings_in_force()["passes_off"] == list(SEARCH_PASSES_OFF) + ["tfg"]
    assert apply_settings() == searching  # for the rest of the process

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
                      TFNAS_MEMORY_OPTIMIZER="1", TFNAS_GRAPPLER_PASSES="1")  # per process
    assert default["grappler"] == {"memory_optimizer": "default", "meta_optimizer_iterations": 2,
                                   "passes_off": []}
    from helpers import tiny_config
    from tfnas.search import run_search
    folder = str(tmp_path / "ours")
    run_search(tiny_config(folder, epochs=1, steps_per_epoch=6, batch_size=32),
               folder + "/run", log=lambda s: None)
    assert settings_in_force() == {"memory_optimizer": "off", "meta_optimizer_iterations": 1,
                                   "passes_off": list(SEARCH_PASSES_OFF) + ["tfg"]}
    loss = [json.loads(line)["train_loss"] for line in open(folder + "/run/metrics.jsonl")]
    np.testing.assert_allclose(loss, default["loss"], rtol=1e-4)
    a = json.loads(open(folder + "/run/alphas.jsonl").read().splitlines()[-1])["softmax"]
    b = json.loads(default["alphas"])["softmax"]
    for t in a:
        np.testing.assert_allclose(np.asarray(a[t]), np.asarray(b[t]), atol=1e-4)


def test_the_search_passes_off_leave_the_numbers_unchanged(tmp_path):
    """Layout, remapper, loop, implementation selector, dependency optimizer and the TFG
    passes change nothing that the tiny search computes: the same losses and alphas, to the
    bit, as with them on (another process)."""
    kept = _search(str(tmp_path / "kept"), TFNAS_GRAPPLER_PASSES="1")
    assert kept["grappler"]["passes_off"] == []
    off = _search(str(tmp_path / "off"))
    assert off["grappler"]["passes_off"] == list(SEARCH_PASSES_OFF) + ["tfg"]
    assert off["loss"] == kept["loss"] and off["alphas"] == kept["alphas"]


def test_a_visible_gpu_keeps_tensorflows_defaults():
    """The settings were measured on CPUs: where TensorFlow sees a GPU, apply_settings
    changes nothing (a fresh process whose device listing reports one)."""
    code = ("import tensorflow as tf\n"
            "real = tf.config.list_physical_devices\n"
            "tf.config.list_physical_devices = lambda kind=None: (['GPU:0'] if kind == 'GPU' "
            "else real(kind))\n"
            "from tfnas import grappler\n"
            "print(grappler.apply_settings(search=True), grappler.settings_in_force())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == (
        "{} {'memory_optimizer': 'default', 'meta_optimizer_iterations': 2, 'passes_off': []}")
