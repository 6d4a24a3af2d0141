"""Shared test helpers: a tiny search config that traces and runs in seconds."""

import json
import os

from tfnas.config import SearchConfig
from tfnas.genotype import Edge, Genotype


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


# The DARTS-PT authors' published cells (Apache-2.0, tests/data/NOTICE), converted by
# tools/import_darts_pt_genotypes.py, with the parameter count (M) the source gives for each.
PUBLISHED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                         "darts_pt_published.json")
# one cell per space, method and dataset kind: the default run; -m slow checks all 56
SAMPLE = ("darts_pt_s1_1", "blank_pt_s2_2", "darts_pt_s3_c100_1", "blank_pt_s4_svhn_1",
          "darts_pt_s5_0", "darts_pt_s5_2", "blank_pt_s5_3", "darts_pt_s2_svhn_1")


def published_genotypes():
    """name -> (Genotype, source entry) for the 56 published DARTS-PT cells."""
    with open(PUBLISHED) as f:
        entries = json.load(f)
    out = {}
    for name, e in entries.items():
        cells = {t: {"edges": [Edge(node=2 + i // 2, input=j, op=op)
                               for i, (op, j) in enumerate(e[t])],
                     "concat": e[t + "_concat"]} for t in ("normal", "reduce")}
        g = Genotype(e["space"], cells, {"name": name})
        g.validate(name)
        out[name] = (g, e)
    return out
