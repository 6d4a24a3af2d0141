"""Discrete networks, freeze-equivalence, .keras round trip, tfnas train and tfnas export."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas.cli import main
from tfnas.config import TrainConfig
from tfnas.errors import GenotypeError
from tfnas.export import export_model
from tfnas.genotype import Genotype
from tfnas.models import DiscreteCell, build_model
from tfnas.selection import magnitude_genotype
from tfnas.supernet import build_supernet
from tfnas.train import run_train

from helpers import SAMPLE, published_genotypes as _published  # noqa: E402


def _trainable_params_m(genotype, entry):
    classes = 100 if entry["found_on"] == "cifar100" else 10
    m = build_model(genotype, classes, (32, 32, 3), channels=36, layers=20)
    return sum(int(np.prod(w.shape)) for w in m.trainable_weights) / 1e6


def _check_params(names):
    gs = _published()
    assert len(gs) == 56
    for name in names:
        g, e = gs[name]
        # the authors' count (DARTS's count_parameters_in_MB: trainable, no auxiliary head),
        # written rounded or truncated to the decimals shown ("3.08" for 3.0886, "4.3" for
        # 4.3116)
        p = e["params_m"]
        unit = 10.0 ** -len(repr(p).split(".")[1])
        got = _trainable_params_m(g, e)
        assert p - unit / 2 <= got < p + unit, (name, got)


def test_published_cells_have_the_authors_parameter_counts():
    _check_params(SAMPLE)


@pytest.mark.slow
def test_every_published_cell_has_the_authors_parameter_count():
    _check_params(sorted(_published()))


def test_darts_v2_parameter_count_matches_the_paper():
    # DARTS V2 at C=36, 20 cells: 3.3 M parameters in the DARTS paper (auxiliary head excluded)
    m = build_model("darts_v2", 10, (32, 32, 3), channels=36, layers=20)
    assert m.count_params() == pytest.approx(3.35e6, rel=0.02)


def test_freeze_equivalence_supernet_vs_discrete_network():
    net = build_supernet("darts", 4, 5, 7, (8, 8, 3))
    rng = np.random.default_rng(3)
    g = magnitude_genotype(net.space, {t: rng.random(net.arch(t).shape)
                                       for t in net.space.cell_types})
    x = tf.constant(rng.normal(size=(4, 8, 8, 3)), tf.float32)
    net(x, training=True)  # move the BN statistics away from their initial values
    net.apply_genotype(g)
    want = net(x, training=False).numpy()

    model = build_model(g, 7, (8, 8, 3), channels=4, layers=5, search_mode=True)
    model.get_layer("stem").set_weights(net.stem.get_weights())
    model.get_layer("classifier").set_weights(net.classifier.get_weights())
    for i, (scell, ctype) in enumerate(zip(net.cells, net.cell_types)):
        dcell = model.get_layer(f"cell_{i}")
        assert isinstance(dcell, DiscreteCell)
        dcell.pre0.set_weights(scell.pre0.get_weights())
        dcell.pre1.set_weights(scell.pre1.get_weights())
        cspace = net.space.cells[ctype]
        for (n, j, op), layer in zip(dcell.edges, dcell.ops):
            e = cspace.edge_id(n, j)
            layer.set_weights(scell.edges[e].ops[cspace.ops[e].index(op)].get_weights())
    got = model(x, training=False).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_nb201_form_skips_none_edges():
    g = Genotype.from_nb201_string("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|"
                                   "avg_pool_3x3~2|")
    m = build_model(g, 5, (8, 8, 3), channels=4, layers=1)
    assert m(np.zeros((1, 8, 8, 3), np.float32)).shape == (1, 5)
    convs = [w for w in m.weights if "nor_conv" in w.path and w.path.endswith("/conv")]
    assert len(convs) == 3 * 1  # one nor_conv per cell, 3 cells (N=1 per stage)
    with pytest.raises(GenotypeError, match="cannot build the 'cifar' form"):
        build_model(g, 5, (8, 8, 3), form="cifar")


def test_keras_round_trip_is_identical_and_retrainable(tmp_path):
    m = build_model("darts_v1", 3, (8, 8, 1), channels=4, layers=3, auxiliary=True,
                    drop_path=0.2, form="cifar")
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)
    path = str(tmp_path / "m.keras")
    m.save(path)
    back = keras.models.load_model(path)  # safe mode, no custom_objects: registered layers
    np.testing.assert_array_equal(m(x)["logits"], back(x)["logits"])
    back.compile("sgd", loss={"logits": keras.losses.SparseCategoricalCrossentropy(True),
                              "aux_logits": keras.losses.SparseCategoricalCrossentropy(True)})
    h = back.fit(x, {"logits": np.array([0, 1]), "aux_logits": np.array([0, 1])}, epochs=1,
                 verbose=0)
    assert np.isfinite(h.history["loss"][0])


class _StopAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_train_smoke_on_digits_interrupted_and_resumed(tmp_path):
    cfg = TrainConfig(dataset="digits", channels=8, layers=5, epochs=4, batch_size=64,
                      cutout_length=4, drop_path=0.1, seed=1)
    wd = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_train(cfg, Genotype.load("darts_v2"), wd, verbose=0, log=lambda s: None,
                  extra_callbacks=[_StopAfter(1)])
    assert os.path.exists(os.path.join(wd, "train", "backup"))
    h = run_train(cfg, Genotype.load("darts_v2"), wd, verbose=0, log=lambda s: None)
    assert len(h.history["loss"]) == 2  # epochs 3 and 4 only: resumed after epoch 2
    rows = open(os.path.join(wd, "train", "history.csv")).read().strip().splitlines()
    assert len(rows) == 1 + 4
    assert h.history["test_logits_accuracy"][-1] > 0.5  # chance is 0.1
    assert os.path.exists(os.path.join(wd, "train", "model.keras"))
    assert not os.path.exists(os.path.join(wd, "train", "best.keras"))  # no validation split


def test_export_parity_for_published_cells(tmp_path):
    gs = _published()
    for name in ("darts_pt_s2_1", "darts_pt_s5_1"):
        m = build_model(gs[name][0], 10, (16, 16, 3), channels=4, layers=3)
        m(np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype(np.float32),
          training=True)  # non-trivial BN statistics
        report = export_model(m, str(tmp_path / name), formats=("keras", "onnx"))
        assert report["max_abs_diff"]["onnx"] < 1e-4 and report["input_shape"][0] is None
        assert sorted(os.listdir(tmp_path / name)) == [".tfnas", "model.keras", "model.onnx",
                                                       "parity.json"]


@pytest.mark.parametrize("args,message", [
    (["--genotype=/no/such.json"], "cannot read genotype /no/such.json"),
    (["--genotype=darts_v2", "--formats=keras,pdf"], "--formats: unknown ['pdf']"),
    (["--genotype=darts_v2", "--form=nb201"], "cannot build the 'nb201' form"),
    (["--genotype=darts_v2", "--input_shape=32,32"], "--input_shape='32,32' is invalid"),
])
def test_export_bad_input(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    rc = main(["export", f"--out={out}", "--channels=4", "--layers=3"] + args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_malformed_genotype_and_unwritable_out(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"space": "darts", "cells": {"normal": {"edges": []}}}')
    assert main(["export", f"--genotype={bad}", f"--out={tmp_path / 'o'}"]) == 2
    assert "has cell types ['normal', 'reduce']" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(["export", "--genotype=darts_v2", f"--out={blocker}/sub/out", "--channels=4",
               "--layers=3", "--formats=keras"])
    assert rc == 2 and "file is a file" in capsys.readouterr().err


def test_train_refuses_a_cutout_that_erases_every_image(tmp_path):
    from tfnas.errors import UsageError
    cfg = TrainConfig(dataset="digits", channels=4, layers=3, epochs=1, batch_size=64)
    wd = tmp_path / "run"
    with pytest.raises(UsageError, match=r"--cutout_length=16 erases the whole 8x8 image"):
        run_train(cfg, Genotype.load("darts_v2"), str(wd), verbose=0, log=lambda s: None)
    assert not (wd / "train").exists()
