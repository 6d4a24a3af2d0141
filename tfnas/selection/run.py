"""`tfnas select` as a library call on a search run directory: load the searched supernet,
run the selector (PT and PT-Mag through KerasTuner), write the genotype."""

import json
import os
import shutil

import tensorflow as tf

from tfnas.config import SearchConfig
from tfnas.errors import WorkdirError
from tfnas.io import atomic_write_json, remove_stale_temps
from tfnas.search import SearchLoop
from tfnas.selection.oracle import select_with_oracle
from tfnas.selection.pt import PerturbationSelector


def load_search(workdir, log=print, strategy=None):
    """A SearchLoop holding the last checkpoint of the finished search in `workdir`.

    Raises:
        WorkdirError: no finished search there.
    """
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(os.path.join(workdir, "genotype_magnitude.json")) or \
            not os.path.exists(cfg_path):
        raise WorkdirError(f"{workdir} holds no finished search (no config.json / "
                           f"genotype_magnitude.json); run `tfnas search --workdir={workdir}` "
                           f"first")
    with open(cfg_path) as f:
        search_config = SearchConfig.from_json(json.load(f))
    loop = SearchLoop(search_config, workdir, strategy or tf.distribute.get_strategy(),
                      log=log)
    if loop.checkpointer.restore_latest() is None:
        raise WorkdirError(f"{workdir} has no search checkpoint to select from")
    return loop


def run_select(workdir, config, overwrite=False, strategy=None, log=print):
    """Selects an architecture from the finished search in `workdir`; writes
    WORKDIR/genotype.json (and WORKDIR/selection/{config.json, scores.jsonl, checkpoints,
    tuner/}). PT and PT-Mag run as KerasTuner trials of a `PerturbationOracle` (one trial per
    decision event); re-running resumes from the KerasTuner project and the selector's
    checkpoint of the last finished event."""
    config.validate()
    loop = load_search(workdir, log, strategy)
    folder = os.path.join(workdir, "selection")
    sel_cfg = os.path.join(folder, "config.json")
    if os.path.exists(sel_cfg) and not overwrite:
        with open(sel_cfg) as f:
            if json.load(f) != config.to_json():
                raise WorkdirError(f"{folder} holds a selection with a different config; pass "
                                   f"--overwrite to start it again")
    if overwrite:
        for path in (folder, os.path.join(workdir, "tb", "selection")):
            if os.path.isdir(path):
                shutil.rmtree(path)
    os.makedirs(folder, exist_ok=True)
    remove_stale_temps(folder)
    atomic_write_json(sel_cfg, config.to_json())
    if config.selector == "magnitude":  # the DARTS baseline: no decisions, no tuning
        # the mixing weights: decisions made during the search (SGAS) count
        genotype = loop.current_genotype(meta={"run": os.path.abspath(workdir)})
    else:
        genotype = select_with_oracle(PerturbationSelector(loop, config, folder, log), folder)
    if loop.benchmark is not None:  # the search's --benchmark_table (NAS-Bench-201)
        genotype.meta["benchmark"] = loop.benchmark.query_genotype(genotype)
        log("benchmark: " + ", ".join(f"{k} {v}" for k, v in genotype.meta["benchmark"].items()))
    genotype.save(os.path.join(workdir, "genotype.json"))
    return genotype
