"""Shared test helpers: a tiny search config that traces and runs in seconds."""

import json
import os

from tfnas.config import SearchConfig


def write_tiny_space(folder):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "tiny_space.json")
    with open(path, "w") as f:
        json.dump({"name": "tiny", "family": "darts", "steps": 2,
                   "ops": ["max_pool_3x3", "sep_conv_3x3"]}, f)
    return path


def tiny_config(folder, **overrides):
    kw = dict(dataset="digits", space=write_tiny_space(folder), channels=4, layers=3,
              epochs=2, batch_size=32, steps_per_epoch=4, limit_examples=400, seed=3,
              eval_every=1, ckpt_every=1)
    kw.update(overrides)
    return SearchConfig(**kw).validate()
