"""PT selection on a tiny supernet trained on digits."""

import os

import numpy as np
import pytest
import tensorflow as tf

from helpers import tiny_config
from tfnas.cli import main
from tfnas.genotype import Genotype
from tfnas.io import read_jsonl
from tfnas.derive import decision_events
from tfnas.selection.pt import SelectConfig
from tfnas.selection.run import run_select
from tfnas.spaces import get_space


def test_schedule_matches_the_reference():
    ev = decision_events(get_space("darts"), seed=2)
    assert [k for k, _ in ev] == ["op"] * 14 + ["topology"] * 3
    assert sorted(t["normal"] for _, t in ev[:14]) == list(range(14))
    assert sorted(t["reduce"] for _, t in ev[14:]) == [3, 4, 5]
    assert ev == decision_events(get_space("darts"), seed=2)
    assert len(decision_events(get_space("nb201"), seed=0)) == 6
    # tuning epochs after each event: DARTS 5 * 16 + 1 = 81 in all, one after the last;
    # NB201 5 * (6 - 1) = 25 in all: decisions at epochs 0, 5, 10, 15, 20 and 24
    darts = get_space("darts").tuning_epochs(17, 5)
    assert darts == [5] * 16 + [1] and sum(darts) == 81
    nb201 = get_space("nb201").tuning_epochs(6, 5)
    assert nb201 == [5, 5, 5, 5, 4, 1] and sum(nb201) == 25
    assert [sum(nb201[:i]) for i in range(6)] == [0, 5, 10, 15, 20, 24]
    assert get_space("nb201").tuning_epochs(6, 0) == [0] * 5 + [1]
    assert get_space("s3").tuning_epochs(17, 0) == [0] * 16 + [1]


@pytest.mark.slow
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
    assert "empty does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["select", f"--workdir={tmp_path / 'empty'}"]) == 2
    assert "holds no finished search" in capsys.readouterr().err
    assert main(["select", f"--workdir={wd}", "--selector=best"]) == 2


def test_tfnas_select_and_the_keras_tuner_adapter_agree(searched, tmp_path):
    import shutil

    import keras_tuner as kt
    from tfnas.selection import (GenotypeHyperModel, PerturbationOracle, PerturbationSelector,
                                 genotype_from_values)
    from tfnas.selection.oracle import select_with_oracle
    from tfnas.selection.run import load_search

    cfg = SelectConfig(selector="pt", tune_epochs_per_decision=1, score_batches=2)
    wd = str(tmp_path / "cli")
    shutil.copytree(searched, wd)
    assert main(["select", f"--workdir={wd}", "--tune_epochs_per_decision=1",
                 "--score_batches=2"]) == 0
    written = Genotype.load(os.path.join(wd, "genotype.json"))
    # one state store: the selector's checkpoints and log, no KerasTuner project
    assert sorted(os.listdir(os.path.join(wd, "selection"))) == ["checkpoints", "config.json",
                                                                 "scores.jsonl"]

    # the same selector as KerasTuner trials of PerturbationOracle gives the same genotype
    kt_wd = str(tmp_path / "tuner")
    shutil.copytree(searched, kt_wd)
    loop = load_search(kt_wd, log=lambda s: None)
    folder = os.path.join(kt_wd, "selection")
    via_oracle = select_with_oracle(PerturbationSelector(loop, cfg, folder, log=lambda s: None),
                                    folder)
    assert via_oracle.to_json()["cells"] == written.to_json()["cells"]

    # the KerasTuner project reloads, and its best hyperparameters are that genotype
    oracle = PerturbationOracle(loop.space, seed=loop.config.seed)
    hm = GenotypeHyperModel(loop.space, 10, (8, 8, 1), channels=4, layers=3)
    tuner = kt.Tuner(oracle, hypermodel=hm, directory=folder, project_name="tuner",
                     overwrite=False)
    assert len(tuner.oracle.trials) == len(oracle.events) + 1
    best = tuner.get_best_hyperparameters()[0]
    assert genotype_from_values(loop.space, best.values).to_json()["cells"] == \
        written.to_json()["cells"]
    model = hm.build(best)  # a retrainable discrete network
    assert model.count_params() > 0

    # the same space as a baseline under RandomSearch
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype("float32")
    y = np.arange(16) % 10
    rs = kt.RandomSearch(hm, objective="val_accuracy", max_trials=2,
                         directory=str(tmp_path / "kt"), project_name="random", overwrite=True,
                         seed=1)
    rs.search(x, y, epochs=1, validation_data=(x, y), verbose=0)
    assert len(rs.oracle.trials) == 2
    genotype_from_values(loop.space, rs.get_best_hyperparameters()[0].values)


def _zero_op(loop, ctype, edge, op_index):
    """Zeroes every weight of op `op_index` on `edge` in every cell of type `ctype`: the op
    then outputs exactly zero (BN of a zero map is zero with batch or running statistics)."""
    for cell, t in zip(loop.model.cells, loop.model.cell_types):
        if t == ctype:
            for v in cell.edges[edge].ops[op_index].weights:
                v.assign(tf.zeros(v.shape, v.dtype))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A supernet where every path runs through normal/reduce edge 1 (input 1 -> node 2,
    ops [skip_connect, sep_conv_3x3]) then edge 4 (node 2 -> node 3): edges 0, 2, 3 are
    removed during training, and sep_conv on normal edge 1 is masked, so the trained signal
    of that edge is skip_connect's."""
    from tfnas.search import SearchLoop
    tmp = tmp_path_factory.mktemp("plant")
    space = tmp / "space.json"
    space.write_text('{"name": "plant", "family": "darts", "steps": 2, '
                     '"ops": ["skip_connect", "sep_conv_3x3"]}')
    cfg = tiny_config(str(tmp), space=str(space), arch_update="frozen", epochs=4,
                      steps_per_epoch=6, limit_examples=600)
    loop = SearchLoop(cfg, str(tmp / "run"), tf.distribute.get_strategy(), log=lambda s: None)
    for ctype in ("normal", "reduce"):
        for e in (0, 2, 3):
            loop.model.arch(ctype).remove_edge(e)
    loop.model.arch("normal").mask_op(1, 1)
    for epoch in range(cfg.epochs):
        loop.train_epoch(epoch, 0.05)
    arch = loop.model.arch("normal")
    arch.reset_op_mask()
    _zero_op(loop, "normal", 1, 1)
    return loop


def test_planted_case_pt_and_magnitude_disagree(planted, tmp_path):
    """sep_conv on normal edge 1 outputs zero (removing it changes nothing) but has the
    largest alpha; skip_connect carries every bit of signal. Magnitude keeps sep_conv, PT
    keeps skip_connect, and the recorded scores say why."""
    from tfnas.selection import PerturbationSelector
    from tfnas.derive import magnitude_genotype
    loop, edge = planted, 1
    arch = loop.model.arch("normal")
    alpha = arch.alpha.numpy()
    alpha[edge] = [-1.0, 1.0]
    arch.alpha.assign(alpha)
    mag = magnitude_genotype(loop.space, loop.model.softmax_numpy())
    assert ("sep_conv_3x3", 1) in [(e.op, e.input) for e in mag.cells["normal"]["edges"]
                                   if e.node == 2]
    selector = PerturbationSelector(loop, SelectConfig(selector="pt", score_batches=0),
                                    str(tmp_path / "sel"), log=lambda s: None)
    row = selector.decide_op("normal", edge)
    assert row["alphas"]["sep_conv_3x3"] > 0.85
    assert row["scores"]["sep_conv_3x3"]["acc"] == pytest.approx(row["acc_before"], abs=1e-6)
    # without skip_connect every cell outputs zero: one constant prediction
    assert row["scores"]["skip_connect"]["acc"] < 0.2 < row["acc_before"]
    assert row["choice"] == "skip_connect"
    np.testing.assert_array_equal(arch.fixed_w.numpy()[edge], [1.0, 0.0])
    arch.is_fixed.assign(tf.zeros_like(arch.is_fixed))


def test_topology_removes_a_useless_input(planted, tmp_path):
    """Node 3 gets its inputs 0 and 1 back, each fixed to a zeroed sep_conv (useless);
    input 2 carries the signal. The removed edge is a useless one, never input 2."""
    from tfnas.selection import PerturbationSelector
    loop = planted
    cspace = loop.space.cells["normal"]
    eids = list(cspace.node_edges(3))
    assert [cspace.edges[e][1] for e in eids] == [0, 1, 2]
    arch = loop.model.arch("normal")
    # the selectors first: edges fixed before one is made count as decided by the search
    selectors = {crit: PerturbationSelector(loop, SelectConfig(crit=crit, score_batches=0),
                                            str(tmp_path / crit), log=lambda s: None)
                 for crit in ("acc", "loss")}
    for e in eids[:2]:
        arch.remove_edge(e, removed=False)
        arch.fix_edge(e, 1)
        _zero_op(loop, "normal", e, 1)
    for crit, selector in selectors.items():
        row = selector.decide_topology("normal", 3)
        removed = row["rounds"][0]["removed"]
        assert removed in eids[:2] and 2 in row["kept_inputs"]
        scores = row["rounds"][0]["scores"]
        # without input 2 node 3 is zero (node 2 still reaches the cell output)
        assert scores[str(eids[2])]["loss"] > scores[str(removed)]["loss"]
        assert scores[str(eids[2])]["acc"] < scores[str(removed)]["acc"]
        assert row["acc_after"] == pytest.approx(row["acc_before"], abs=1e-6)
        arch.remove_edge(removed, removed=False)


def test_pt_mag_end_to_end_keeps_decided_edges_fixed(searched, tmp_path):
    import shutil

    import tensorflow as tf
    from tfnas.selection.run import load_search
    wd = str(tmp_path / "mag")
    shutil.copytree(searched, wd)
    g = run_select(wd, SelectConfig(selector="pt_mag", tune_epochs_per_decision=1,
                                    score_batches=1), log=lambda s: None)
    assert g.meta["selector"] == "pt_mag"
    rows = read_jsonl(os.path.join(wd, "selection", "scores.jsonl"))
    for r in rows:
        if r["kind"] == "op":  # decided by alpha: the largest softmaxed alpha at decision time
            assert r["scores"] == {}
            assert r["choice"] == max(r["alphas"], key=r["alphas"].get)
    # every edge is decided: alpha gradients of the supernet are exactly zero
    loop = load_search(wd, log=lambda s: None)
    from tfnas.selection import PerturbationSelector
    sel = PerturbationSelector(loop, SelectConfig(selector="pt_mag"),
                               os.path.join(wd, "selection"), log=lambda s: None)
    sel.restore()
    x, y = next(iter(loop.pipeline.evaluation(loop.data.x_train[:32], loop.data.y_train[:32])))
    with tf.GradientTape() as tape:
        logits = loop.model(x, training=True)
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
            y, logits, from_logits=True))
    grads = tape.gradient(loss, loop.state.alphas)
    for gr in grads:
        assert gr is None or float(tf.reduce_max(tf.abs(gr))) == 0.0
    # TensorBoard has the selection run
    assert os.listdir(os.path.join(wd, "tb", "selection"))


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


@pytest.mark.parametrize("batch_stats", [True, False])
def test_an_events_next_decision_reuses_the_pass_the_previous_one_ended_with(tmp_path,
                                                                             batch_stats):
    """Normal then reduce in one event: the reduce decision's `acc_before` is the normal
    decision's `acc_after` without a second pass (nothing changed between them), equal to
    the bit to a fresh pass; after tuning (weights changed) the selector evaluates again."""
    from tfnas.search import SearchLoop
    from tfnas.selection import PerturbationSelector
    loop = SearchLoop(tiny_config(str(tmp_path), limit_examples=200), str(tmp_path / "run"),
                      tf.distribute.get_strategy(), log=lambda s: None)
    sel = PerturbationSelector(loop, SelectConfig(score_batches=2, bn_batch_stats=batch_stats,
                                                  tune_epochs_per_decision=1),
                               str(tmp_path / "sel"), log=lambda s: None)
    calls = []
    evaluate = loop.evaluate
    loop.evaluate = lambda *a, **k: calls.append(1) or evaluate(*a, **k)
    normal = sel.decide_op("normal", 0)
    assert len(calls) == 2 + 2  # before, two candidates, after
    reduce = sel.decide_op("reduce", 1)
    assert len(calls) == 4 + 3  # two candidates, after: `before` is normal's `after`
    assert reduce["acc_before"] == normal["acc_after"]
    fresh = evaluate(2, batch_stats)
    assert sel.score() == fresh  # bit-equal: same masks, weights and batches
    assert len(calls) == 7
    sel.tune_after(0)
    sel.score()
    assert len(calls) == 8
