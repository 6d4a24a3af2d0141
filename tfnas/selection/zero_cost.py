"""`tfnas select --selector=zc_pt`: Zero-Cost-PT (`tfnas.derive.zero_cost`) on a search run,
with files and resume.

WORKDIR/selection/ holds `candidates.jsonl` (one row per finished iteration: its genotype),
`scores.jsonl` (every decision's proxy values per op or edge, with its iteration; then the
validation sums) and TensorBoard scalars under WORKDIR/tb/selection. Each iteration reads
its own seeded stream of weight-split batches, so a selection killed at any moment resumes
at the first iteration not in `candidates.jsonl` and ends with the same result as an
uninterrupted one.
"""

import os
import time

import keras

from tfnas.derive.proxies import ProxyScorer
from tfnas.derive.zero_cost import (ZeroCost, iterate_candidates, make_decide,
                                    validate_candidates)
from tfnas.genotype import Genotype
from tfnas.io import append_jsonl, fmt_time, read_jsonl, truncate_jsonl
from tfnas.models import build_model

_STREAM = 500_000  # data epochs of the iterations' batch streams (apart from the search's)


class ZeroCostRun:
    """Runs Zero-Cost-PT on a SearchLoop's supernet (trained, or as initialised when the
    loop was not restored).

    Args:
        loop: a SearchLoop.
        config: a SelectConfig with selector "zc_pt".
        folder: WORKDIR/selection.
        budget: optional Budget (each decision keeps what still fits).
    """

    def __init__(self, loop, config, folder, log=print, budget=None):
        self.loop, self.config, self.folder, self.log, self.budget = loop, config, folder, \
            log, budget
        self.zc = ZeroCost(config.proxy, config.zc_iterations, config.zc_validate_rounds,
                           config.zc_edge_order).check()
        self.seed = config.seed if config.seed >= 0 else loop.config.seed
        self.candidates_path = os.path.join(folder, "candidates.jsonl")
        self.scores_path = os.path.join(folder, "scores.jsonl")
        self._decide = make_decide(budget, config.topology_rule)

    def _batches(self, stream):
        """An endless iterator of (images, labels) weight-split batches, seeded by `stream`
        (augmented as the search's, no cutout: Zero-Cost-PT reads the training transform)."""
        lp = self.loop
        return iter(lp.pipeline.train(lp.train_idx, _STREAM + stream, repeat=True))

    def _restore(self):
        """The candidates of finished iterations (rows of later ones are dropped)."""
        os.makedirs(self.folder, exist_ok=True)
        done = read_jsonl(self.candidates_path) if os.path.exists(self.candidates_path) else []
        truncate_jsonl(self.scores_path, "iteration", len(done))
        if done:
            self.log(f"resuming zc_pt after iteration {len(done)}/{self.zc.iterations}")
        return [Genotype.from_json(r["genotype"]) for r in done]

    def run(self):
        """Searches the candidates (or resumes), validates them; returns the Genotype."""
        pool = self._restore()
        model = self.loop.model
        scorer = ProxyScorer(model, self.zc.proxy)
        t0, first = time.time(), len(pool)
        for it, genotype, rows in iterate_candidates(model, scorer, self.zc, self.seed,
                                                     self._decide, self._batches, first):
            for row in rows:
                append_jsonl(self.scores_path, row)
            append_jsonl(self.candidates_path, {"iteration": it, "genotype": genotype.to_json()})
            pool.append(genotype)
            left = (time.time() - t0) / (it - first + 1) * (self.zc.iterations - it - 1)
            self.log(f"zc_pt iteration {it + 1}/{self.zc.iterations}: {_short(genotype)}; "
                     f"ETA {fmt_time(left)}")
        sums, firsts, best = validate_candidates(pool, self._build,
                                                 self._batches(self.zc.iterations), self.zc,
                                                 self.log)
        truncate_jsonl(self.scores_path, "iteration", self.zc.iterations)
        append_jsonl(self.scores_path, {"kind": "validation", "iteration": self.zc.iterations,
                                        "proxy": self.zc.proxy, "sums": sums,
                                        "candidate_iterations": firsts, "chosen": best})
        self._tensorboard(sums)
        return self._result(pool[best], sums)

    def _build(self, genotype):
        """The discrete network of a candidate at the search's channels and cells, freshly
        initialised from the seed (the same for every candidate)."""
        keras.utils.set_random_seed(self.seed)
        cfg, data = self.loop.config, self.loop.data
        return build_model(genotype, data.num_classes, data.input_shape, channels=cfg.channels,
                           layers=cfg.layers)

    def _result(self, genotype, sums):
        g = Genotype(genotype.space, genotype.cells, meta={
            "selector": "zc_pt", "proxy": self.zc.proxy, "iterations": self.zc.iterations,
            "validate_rounds": self.zc.validate_rounds, "edge_order": self.zc.edge_order,
            "at_init": self.config.zc_at_init, "seed": self.seed, "validation_sums": sums,
            "chosen_iteration": genotype.meta.get("iteration"),
            "run": os.path.abspath(self.loop.workdir)})
        if self.budget is not None:
            g.meta["budget"] = dict(self.budget.to_json(), cost=self.budget.cost(g))
        return g

    def _tensorboard(self, sums):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        writer = tf.summary.create_file_writer(os.path.join(self.loop.workdir, "tb",
                                                            "selection"))
        with writer.as_default():
            for i, value in enumerate(sums):
                tf.summary.scalar(f"zc_pt/{self.zc.proxy}_validation_sum", value, step=i)
        writer.flush()


def _short(genotype):
    return "; ".join(f"{t}: " + ", ".join(e.op for e in c["edges"])
                     for t, c in genotype.cells.items())

