"""tfnas's own retraining loop (tfnas/retrain.py), the one `tfnas train` runs under
MultiWorkerMirroredStrategy, checked on one device against Keras's model.fit."""

import csv
import json
import os

import keras
import numpy as np
import pytest

from tfnas.config import TrainConfig
from tfnas.errors import UsageError, WorkdirError
from tfnas.genotype import Genotype
from tfnas.train import choose_loop, run_train


def _cfg(**kw):
    base = dict(dataset="digits", channels=4, layers=3, epochs=2, batch_size=64,
                cutout_length=4, seed=1, limit_examples=256, drop_path=0.2)
    return TrainConfig(**{**base, **kw})


def _weights(wd):
    return [w.numpy() for w in keras.models.load_model(
        os.path.join(wd, "train", "model.keras")).weights]


def _run(wd, loop, log=lambda s: None, **kw):
    return run_train(_cfg(**kw), Genotype.load("darts_v2"), str(wd), verbose=0, log=log,
                     loop=loop)


@pytest.mark.parametrize("auxiliary", [False, True])
def test_custom_loop_takes_fits_steps(tmp_path, auxiliary):
    """Two epochs: the same batches, drop-path masks, losses, metrics and weights as fit."""
    runs = {loop: _run(tmp_path / loop, loop, epochs=2, auxiliary=auxiliary,
                       validation_split=0.25) for loop in ("fit", "custom")}
    fit, custom = runs["fit"].history, runs["custom"].history
    assert set(fit) == set(custom), (fit, custom)  # fit's history keys
    acc = "logits_accuracy" if auxiliary else "accuracy"
    for key in ("loss", "val_loss", "val_" + acc, "test_loss", "test_" + acc):
        assert custom[key] == pytest.approx(fit[key], abs=1e-6), key
    for a, b in zip(_weights(tmp_path / "fit"), _weights(tmp_path / "custom")):
        np.testing.assert_allclose(a, b, atol=1e-6)
    out = tmp_path / "custom" / "train"
    assert sorted(os.listdir(out)) == ["best.keras", "checkpoints", "config.json",
                                       "history.csv", "history.json", "model.keras",
                                       "summary.json", "tb"]
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert len(rows) == 2 and float(rows[1]["loss"]) == custom["loss"][1]
    assert json.load(open(out / "history.json")) == custom
    for loop, h in (("fit", fit), ("custom", custom)):
        summary = json.load(open(tmp_path / loop / "train" / "summary.json"))
        assert summary["splits"] == {"train": 192, "validation": 64, "test": 360,
                                     "validation_split": 0.25, "seed": 1}
        assert summary["model.keras"]["epoch"] == 2
        assert summary["model.keras"]["test_" + acc] == h["test_" + acc][1]
        best = 1 if h["val_" + acc][1] > h["val_" + acc][0] else 0  # the first best
        assert summary["best.keras"]["epoch"] == best + 1
        assert summary["best.keras"]["val_" + acc] == h["val_" + acc][best]
        assert summary["best.keras"]["test_" + acc] == h["test_" + acc][best]
        assert "validation split" in summary["best.keras"]["chosen_by"]


def test_no_validation_split_no_best_model_and_the_test_split_only_reports(tmp_path):
    """Without --validation_split no file is chosen by the test split: model.keras is the
    final epoch, test_* report it; the hold-out itself is seeded, disjoint and whole."""
    from tfnas.data import hold_out, load_dataset
    from tfnas.errors import DataError
    h = _run(tmp_path / "w", "fit", epochs=1, auxiliary=False)
    out = tmp_path / "w" / "train"
    assert "best.keras" not in os.listdir(out)
    assert not any(k.startswith("val_") for k in h.history) and "test_accuracy" in h.history
    summary = json.load(open(out / "summary.json"))
    assert summary["best.keras"] is None and summary["splits"]["validation"] == 0
    assert summary["model.keras"]["test_accuracy"] == h.history["test_accuracy"][0]
    data = load_dataset("digits", limit=100)
    kept, (xv, yv) = hold_out(data, 0.1, seed=3)
    again, (xv2, _) = hold_out(data, 0.1, seed=3)
    assert len(yv) == 10 and len(kept.y_train) == 90
    np.testing.assert_array_equal(xv, xv2)
    np.testing.assert_array_equal(kept.x_train, again.x_train)
    rows = {r.tobytes() for r in data.x_train}
    assert {r.tobytes() for r in xv} | {r.tobytes() for r in kept.x_train} == rows
    assert not ({r.tobytes() for r in xv} & {r.tobytes() for r in kept.x_train})
    same, none = hold_out(data, 0.0, 3)
    assert same is data and none is None
    with pytest.raises(DataError, match="leaves 0 for validation and 100 for training"):
        hold_out(data, 0.001, 3)


class _Kill(Exception):
    pass


class _KillAtEnd(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise _Kill


@pytest.mark.parametrize("drop", [0.0, 0.2])
def test_fit_resumes_exactly_with_drop_path(tmp_path, drop):
    """fit killed after epoch 2 of 3 (its state committed) and re-run: the uninterrupted
    history and weights (each epoch's batches and drop-path masks are seeded); a finished
    run re-run trains nothing and keeps its history."""
    whole = _run(tmp_path / "whole", "fit", epochs=3, drop_path=drop).history
    with pytest.raises(_Kill):
        run_train(_cfg(epochs=3, drop_path=drop), Genotype.load("darts_v2"), str(tmp_path / "cut"), verbose=0,
                  log=lambda s: None, loop="fit", extra_callbacks=[_KillAtEnd(2)])
    lines = []
    _run(tmp_path / "cut", "fit", log=lines.append, epochs=3, drop_path=drop)
    assert "resuming after epoch 2 (train/backup/)" in lines
    assert json.load(open(tmp_path / "cut" / "train" / "history.json")) == whole
    for a, b in zip(_weights(tmp_path / "whole"), _weights(tmp_path / "cut")):
        np.testing.assert_array_equal(a, b)
    assert os.listdir(tmp_path / "cut" / "train" / "backup") == ["epoch-00003"]
    again = _run(tmp_path / "cut", "fit", epochs=3, drop_path=drop)
    assert again.history == {} or all(not v for v in again.history.values())
    assert json.load(open(tmp_path / "cut" / "train" / "history.json")) == whole


def _kill_after(epoch):
    def log(line):
        if line.startswith(f"epoch {epoch}/"):  # printed after the epoch's checkpoint
            raise _Kill
    return log


def test_custom_loop_resumes_exactly(tmp_path):
    """Killed after epoch 2 of 3 and re-run: the weights and history of an uninterrupted run
    (the checkpoint holds the optimizer state and the history; batch order and augmentation
    are seeded by the epoch, drop-path masks by the update count, restored with the
    optimizer)."""
    whole = _run(tmp_path / "whole", "custom", epochs=3).history
    assert whole != _run(tmp_path / "no_drop", "custom", epochs=3, drop_path=0.0).history
    with pytest.raises(_Kill):
        _run(tmp_path / "cut", "custom", log=_kill_after(2), epochs=3)
    assert len(json.load(open(tmp_path / "cut" / "train" / "history.json"))["loss"]) == 2
    lines = []
    resumed = _run(tmp_path / "cut", "custom", log=lines.append, epochs=3).history
    assert any(line.startswith("resuming") for line in lines), lines
    assert not any(line.startswith("epoch 1/") for line in lines), lines
    assert resumed == whole  # every epoch, bit for bit
    for a, b in zip(_weights(tmp_path / "whole"), _weights(tmp_path / "cut")):
        np.testing.assert_array_equal(a, b)
    # a finished run re-run: nothing to do, the same history
    assert _run(tmp_path / "cut", "custom", epochs=3).history == whole


def test_steps_per_execution_does_not_change_the_custom_loop(tmp_path):
    one = _run(tmp_path / "one", "custom", epochs=2).history
    three = _run(tmp_path / "three", "custom", epochs=2, steps_per_execution=3).history
    assert one == three
    # a run may resume with another N (it does not change results)
    with pytest.raises(_Kill):
        _run(tmp_path / "mixed", "custom", log=_kill_after(1), epochs=2)
    assert _run(tmp_path / "mixed", "custom", epochs=2, steps_per_execution=3).history == one


def test_a_run_is_resumed_by_the_loop_that_started_it(tmp_path):
    with pytest.raises(_Kill):
        _run(tmp_path / "run", "custom", log=_kill_after(1))
    with pytest.raises(WorkdirError, match=r"resume state of a run of the custom loop"):
        _run(tmp_path / "run", "fit")
    os.makedirs(tmp_path / "fit" / "train" / "backup" / "x")
    with pytest.raises(WorkdirError, match=r"resume state of a run of the fit loop"):
        _run(tmp_path / "fit", "custom")


def test_loop_choice(capsys):
    assert choose_loop("auto", multi_worker=True) == "custom"
    assert choose_loop("auto", multi_worker=False) == "fit"
    assert choose_loop("custom", multi_worker=False) == "custom"
    with pytest.raises(UsageError, match="--loop=fit cannot run under --strategy=multi_worker"):
        choose_loop("fit", multi_worker=True)
    with pytest.raises(UsageError, match="--loop='scan' is invalid"):
        choose_loop("scan", multi_worker=False)
    # the CLI refuses before it joins a cluster (no TF_CONFIG needed to be told)
    from tfnas.cli import main
    assert main(["train", "--genotype=darts_v2", "--workdir=unused", "--strategy=multi_worker",
                 "--loop=fit"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tfnas: error: --loop=fit cannot run under"), err


def test_custom_loop_stops_on_a_non_finite_loss_and_writes_nothing(tmp_path):
    from tfnas.errors import TrainingError
    with pytest.raises(TrainingError, match=r"training diverged: loss became (nan|inf) at "
                                            r"epoch 1 step [1-3];"):
        _run(tmp_path / "run", "custom", epochs=1, lr=1e30, grad_clip=0.0)
    left = set(os.listdir(tmp_path / "run" / "train"))
    assert left <= {"config.json", "tb"}, left  # no model, history or checkpoint


def test_custom_loop_under_float16_scales_the_loss_and_checkpoints_the_scale(tmp_path):
    """mixed_float16: tfnas's loss scale (the search's) on the summed gradients, its state
    in the checkpoint; the run learns and the model keeps float32 variables."""
    h = _run(tmp_path / "run", "custom", epochs=2, drop_path=0.0,
             mixed_precision="mixed_float16").history
    assert np.all(np.isfinite(h["loss"])) and h["loss"][1] < h["loss"][0], h
    ckpt = sorted((tmp_path / "run" / "train" / "checkpoints").iterdir())[-1]
    with np.load(ckpt) as f:
        scale, good = float(f["loss_scale/00000"]), int(f["loss_scale/00001"])
    # the first steps overflow float16 at 2**15 (measured: two skipped, scale 2**13); each
    # skip halves the scale and restarts the count of finite updates (8 steps in all)
    skipped = np.log2(2.0 ** 15 / scale)
    assert skipped == int(skipped) and 1 <= skipped <= 4, scale
    assert 1 <= good <= 8 - skipped, (scale, good)


def test_fit_state_is_committed_atomically(tmp_path):
    """A killed save leaves a temporary folder (removed at the next start) and the previous
    epoch's state; history rows of epochs after the committed one (and a torn row) are cut;
    an unreadable state is one error naming the folder."""
    from tfnas import fit_state
    from tfnas.errors import CheckpointError
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), epochs=1, verbose=0)
    folder = tmp_path / "backup"
    backup = fit_state.FitBackup(str(folder))
    backup.set_model(model)
    backup.on_epoch_end(0)
    saved = [w.numpy() for w in model.weights] + [v.numpy() for v in model.optimizer.variables]
    backup.on_epoch_end(1)
    assert os.listdir(folder) == ["epoch-00002"]
    (folder / "epoch-00003.tmp-4242").mkdir()  # a save killed half way
    (folder / "epoch-00003.tmp-4242" / "state.weights.h5").write_bytes(b"torn")
    hist = tmp_path / "history.csv"
    hist.write_text("epoch,loss\r\n0,1.5\r\n1,1.25\r\n2,1.0\r\n3,0.")
    for v in model.weights + model.optimizer.variables:
        v.assign(v * 0 + 7)
    assert fit_state.restore(model, str(folder), str(hist)) == 2
    now = [w.numpy() for w in model.weights] + [v.numpy() for v in model.optimizer.variables]
    assert len(now) == len(saved) and all(np.array_equal(a, b) for a, b in zip(now, saved))
    assert os.listdir(folder) == ["epoch-00002"]
    assert hist.read_bytes() == b"epoch,loss\r\n0,1.5\r\n1,1.25\r\n"
    assert fit_state.restore(model, str(tmp_path / "none"), str(hist)) == 0
    (folder / "epoch-00002" / fit_state.WEIGHTS).write_bytes(b"not hdf5")
    with pytest.raises(CheckpointError, match=r"resume state .*epoch-00002 cannot be read"
                                              r".*remove .*backup to train from the start"):
        fit_state.restore(model, str(folder), str(hist))
