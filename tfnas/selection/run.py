"""`tfnas select` as a library call on a search run directory: load the searched supernet,
run the selector (with its checkpoints: resumable), write the genotype."""

import json
import os
import shutil

import tensorflow as tf

from tfnas.config import SearchConfig
from tfnas.derive.budget import Budget, Network, latency_table
from tfnas.derive.selectors import get_selector
from tfnas.errors import UsageError, WorkdirError
from tfnas.io import atomic_write_json, remove_stale_temps
from tfnas.search import SearchLoop
from tfnas.selection.pt import PerturbationSelector, SelectConfig
from tfnas.selection.zero_cost import ZeroCostRun


def load_search(workdir, log=print, strategy=None, restore=True):
    """A SearchLoop holding the last checkpoint of the finished search in `workdir` (with
    `restore` False: the supernet as initialised from the run's seed). BN
    follows the run's `--bn` (global, the default: statistics over the global batch, so PT
    scores, and the decisions made from them, do not depend on the replica count).

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
    if restore and loop.checkpointer.restore_latest() is None:
        raise WorkdirError(f"{workdir} has no search checkpoint to select from")
    return loop


def run_select(workdir, config, overwrite=False, strategy=None, log=print):
    """Selects an architecture from the finished search in `workdir`; writes
    WORKDIR/genotype.json (and WORKDIR/selection/{config.json, scores.jsonl, checkpoints}).
    The selector's checkpoint of the last finished decision event is the one state store:
    re-running resumes there. (The same selector runs under KerasTuner through
    `tfnas.selection.oracle.select_with_oracle`.)"""
    config.validate()
    loop = load_search(workdir, log, strategy, restore=not config.zc_at_init)
    folder = os.path.join(workdir, "selection")
    budget = make_budget(loop, config, folder, log)  # an infeasible budget fails here
    sel_cfg = os.path.join(folder, "config.json")
    if os.path.exists(sel_cfg) and not overwrite:
        with open(sel_cfg) as f:  # fields added since it was written take their defaults
            old = {**SelectConfig().to_json(), **json.load(f)}
            if _results_part(old) != _results_part(config.to_json()):
                raise WorkdirError(f"{folder} holds a selection with a different config; pass "
                                   f"--overwrite to start it again")
    if overwrite:
        for path in (folder, os.path.join(workdir, "tb", "selection")):
            if os.path.isdir(path):
                shutil.rmtree(path)
    os.makedirs(folder, exist_ok=True)
    remove_stale_temps(folder)
    atomic_write_json(sel_cfg, config.to_json())
    if not get_selector(config.selector).decides:  # magnitude: no decisions, no tuning
        # the mixing weights: decisions made during the search (SGAS) count
        genotype = loop.current_genotype(meta={"run": os.path.abspath(workdir)})
    elif get_selector(config.selector).zero_cost:
        genotype = ZeroCostRun(loop, config, folder, log, budget).run()
    else:
        genotype = PerturbationSelector(loop, config, folder, log, budget).run()
    if loop.benchmark is not None:  # the search's --benchmark_table (NAS-Bench-201)
        genotype.meta["benchmark"] = loop.benchmark.query_genotype(genotype)
        log("benchmark: " + ", ".join(f"{k} {v}" for k, v in genotype.meta["benchmark"].items()))
    genotype.save(os.path.join(workdir, "genotype.json"))
    return genotype


def make_budget(loop, config, folder, log=print):
    """The Budget of `config` for the final network of this search (None without one);
    checks that some architecture of the space meets it, before any selection work.

    Raises:
        UsageError: no architecture meets the budget, or an unreadable --latency_table.
    """
    kind = config.budget_kind()
    if kind is None:
        return None
    net = Network(loop.data.num_classes, loop.data.input_shape,
                  config.final_channels or loop.config.channels,
                  config.final_layers or loop.config.layers)
    table = None
    if kind[0] == "latency_ms":
        table = _latency_table(loop, config, folder, net, log)
    budget = Budget(loop.space, kind[0], kind[1], net, latency=table)
    budget.check_feasible({t: loop.model.arch(t) for t in loop.space.cell_types})
    log(f"budget: {kind[0]} <= {kind[1]:g} for the final network "
        f"({net.channels} channels, {net.layers} layers)")
    return budget


def _latency_table(loop, config, folder, net, log):
    # beside selection/ so that `tfnas select --overwrite` does not throw the measurement away
    path = config.latency_table or os.path.join(os.path.dirname(folder),
                                                "latency_table.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            raise UsageError(f"--latency_table={path} is not a readable JSON table "
                             f"({type(e).__name__})") from e
    if config.latency_table:
        raise UsageError(f"--latency_table={path}: no such file")
    log("measuring the per-op latency table with onnxruntime (once; kept in "
        f"{path})")
    table = latency_table(loop.space, net, log=log)
    atomic_write_json(path, table)
    return table


def _results_part(cfg):
    """A selection config without the settings that cannot change its result (a resume may
    change them)."""
    return {k: v for k, v in cfg.items() if k != "ckpt_every_steps"}

