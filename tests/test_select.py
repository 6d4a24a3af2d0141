"""PT selection on a tiny supernet trained on digits."""

import os

import numpy as np
import pytest

from helpers import tiny_config
from tfnas.cli import main
from tfnas.genotype import Genotype
from tfnas.io import read_jsonl
from tfnas.search import run_search
from tfnas.selection.pt import SelectConfig, decision_events, run_select
from tfnas.spaces import get_space


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pt")
    cfg = tiny_config(str(tmp), epochs=2, steps_per_epoch=4, channels=4)
    wd = str(tmp / "run")
    run_search(cfg, wd, log=lambda s: None)
    return wd


def test_schedule_matches_the_reference():
    ev = decision_events(get_space("darts"), seed=2)
    assert [k for k, _ in ev] == ["op"] * 14 + ["topology"] * 3
    assert sorted(t["normal"] for _, t in ev[:14]) == list(range(14))
    assert sorted(t["reduce"] for _, t in ev[14:]) == [3, 4, 5]
    assert ev == decision_events(get_space("darts"), seed=2)
    assert len(decision_events(get_space("nb201"), seed=0)) == 6


def test_pt_selects_by_the_recorded_scores_and_resumes(searched):
    import shutil
    wd = searched + "_copy"
    shutil.copytree(searched, wd)
    cfg = SelectConfig(selector="pt", tune_epochs_per_decision=1, score_batches=2)
    lines = []

    def stop_after_two(line):
        lines.append(line)
        if line.startswith("decision 2/") and "done" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_select(wd, cfg, log=stop_after_two)
    assert len(read_jsonl(os.path.join(wd, "selection", "scores.jsonl"))) == 4
    g = run_select(wd, cfg, log=lambda s: None)
    rows = read_jsonl(os.path.join(wd, "selection", "scores.jsonl"))
    # tiny space: 5 edges -> 5 op events + 2 topology events (nodes 3 has 3 inputs... ) x 2 cells
    space = get_space(Genotype.load(os.path.join(wd, "genotype.json")).space)
    n_events = len(decision_events(space, 3))
    assert len(rows) == 2 * n_events and [r["event"] for r in rows][::2] == list(range(n_events))
    for r in rows:
        if r["kind"] == "op":  # the kept op is the one whose removal hurt accuracy most
            accs = [r["scores"][op]["acc"] for op in r["scores"]]
            assert r["choice"] == list(r["scores"])[int(np.argmin(accs))]
    kept = {(e.node, e.input): e.op for e in g.cells["normal"]["edges"]}
    for r in rows:
        if r["kind"] == "op" and r["cell"] == "normal" and (r["node"], r["input"]) in kept:
            assert kept[(r["node"], r["input"])] == r["choice"]
    assert g.meta["selector"] == "pt"
    assert Genotype.load(os.path.join(wd, "genotype.json")).to_json() == g.to_json()
    # kill-and-resume ends with the same genotype and scores as an uninterrupted selection
    whole = searched + "_whole"
    shutil.copytree(searched, whole)
    g2 = run_select(whole, cfg, log=lambda s: None)
    assert g2.to_json()["cells"] == g.to_json()["cells"]
    rows2 = read_jsonl(os.path.join(whole, "selection", "scores.jsonl"))
    assert [r.get("choice", r.get("kept_inputs")) for r in rows2] == \
        [r.get("choice", r.get("kept_inputs")) for r in rows]


def test_cli_select_magnitude_and_errors(searched, tmp_path, capsys):
    import shutil
    wd = str(tmp_path / "w")
    shutil.copytree(searched, wd)
    assert main(["select", f"--workdir={wd}", "--selector=magnitude"]) == 0
    g = Genotype.load(os.path.join(wd, "genotype.json"))
    mag = Genotype.load(os.path.join(wd, "genotype_magnitude.json"))
    assert g.to_json()["cells"] == mag.to_json()["cells"]
    capsys.readouterr()
    assert main(["select", f"--workdir={tmp_path / 'empty'}"]) == 2
    assert "holds no finished search" in capsys.readouterr().err
    assert main(["select", f"--workdir={wd}", "--selector=best"]) == 2


def test_keras_tuner_oracle_gives_the_same_genotype_as_tfnas_select(searched, tmp_path):
    import shutil

    import tensorflow as tf
    from tfnas.config import SearchConfig
    from tfnas.search import SearchLoop
    from tfnas.selection.oracle import (GenotypeHyperModel, PerturbationOracle, PTTuner,
                                        genotype_from_values)
    from tfnas.selection.pt import PerturbationSelector
    import json

    cfg = SelectConfig(selector="pt", tune_epochs_per_decision=1, score_batches=2)
    direct_wd = str(tmp_path / "direct")
    shutil.copytree(searched, direct_wd)
    direct = run_select(direct_wd, cfg, log=lambda s: None)

    wd = str(tmp_path / "tuner")
    shutil.copytree(searched, wd)
    with open(os.path.join(wd, "config.json")) as f:
        scfg = SearchConfig.from_json(json.load(f))
    loop = SearchLoop(scfg, wd, tf.distribute.get_strategy(), log=lambda s: None)
    loop.checkpointer.restore_latest()
    selector = PerturbationSelector(loop, cfg, os.path.join(wd, "selection"), log=lambda s: None)
    oracle = PerturbationOracle(loop.space, seed=scfg.seed)
    hm = GenotypeHyperModel(loop.space, 10, (8, 8, 1), channels=4, layers=3)
    tuner = PTTuner(oracle, selector, hypermodel=hm, directory=str(tmp_path / "kt"),
                    project_name="pt", overwrite=True)
    tuner.search()
    best = tuner.get_best_hyperparameters()[0]
    g = genotype_from_values(loop.space, best.values)
    assert g.to_json()["cells"] == direct.to_json()["cells"]
    assert len(oracle.trials) == len(oracle.events) + 1
    assert os.path.exists(tmp_path / "kt" / "pt" / "oracle.json")
    model = tuner.hypermodel.build(best)  # a retrainable discrete network
    assert model.count_params() > 0

    # the same space as a baseline under RandomSearch
    import numpy as np
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype("float32")
    y = np.arange(16) % 10
    rs = __import__("keras_tuner").RandomSearch(
        hm, objective="val_accuracy", max_trials=2, directory=str(tmp_path / "kt"),
        project_name="random", overwrite=True, seed=1)
    rs.search(x, y, epochs=1, validation_data=(x, y), verbose=0)
    assert len(rs.oracle.trials) == 2
    genotype_from_values(loop.space, rs.get_best_hyperparameters()[0].values)


def test_report_writes_the_plots(searched, tmp_path, capsys):
    import shutil
    wd = str(tmp_path / "r")
    shutil.copytree(searched, wd)
    run_select(wd, SelectConfig(selector="pt", tune_epochs_per_decision=0, score_batches=1),
               log=lambda s: None)
    assert main(["report", f"--workdir={wd}"]) == 0
    names = sorted(os.listdir(os.path.join(wd, "report")))
    assert names == ["alpha_vs_pt.png", "cells.png", "selection.png"]
    for n in names:
        with open(os.path.join(wd, "report", n), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert main(["report", f"--workdir={tmp_path / 'none'}"]) == 2
