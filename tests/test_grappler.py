"""Grappler's memory optimizer is skipped (tfnas/grappler.py): same numbers, faster first call."""

import numpy as np
import tensorflow as tf

from tfnas.grappler import memory_optimizer_skipped, skip_memory_optimizer


def test_memory_optimizer_is_off_and_functions_still_run(monkeypatch):
    monkeypatch.setenv("TFNAS_MEMORY_OPTIMIZER", "1")
    assert skip_memory_optimizer() is False  # the user's opt-out
    monkeypatch.delenv("TFNAS_MEMORY_OPTIMIZER")
    assert skip_memory_optimizer() is True and skip_memory_optimizer() is True
    assert memory_optimizer_skipped()

    @tf.function
    def f(xs):  # a large sum: what the memory optimizer rewrites
        return tf.add_n([x * float(i + 1) for i, x in enumerate(tf.unstack(xs))])

    xs = np.arange(64 * 8, dtype=np.float32).reshape(64, 8)
    expected = (xs * np.arange(1, 65, dtype=np.float32)[:, None]).sum(0)
    np.testing.assert_allclose(f(tf.constant(xs)).numpy(), expected, rtol=1e-6)
