"""Fault injection: bad inputs, kills during writes, divergence, lost peers.

Every bad-input case asserts: the exit code, one line on stderr that names the problem, no
traceback, nothing created where it should not be, and every file that existed before
byte-identical afterwards.
"""

import hashlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import write_tiny_space
from tfnas.cli import lost_peer_message, main
from tfnas.errors import TrainingError
from tfnas.io import TMP_PREFIX, read_jsonl, truncate_jsonl

HERE = os.path.dirname(os.path.abspath(__file__))


def _snapshot(root):
    """{relative path: sha1} of every file under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if os.path.islink(p):  # the sandbox's loops and dangling links: their targets
                out[os.path.relpath(p, root)] = "-> " + os.readlink(p)
                continue
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha1(fh.read()).hexdigest()
    return out


@pytest.fixture
def sandbox(tmp_path):
    """A folder with a user's files: notes.txt, mine/notes.txt, a flagfile, bad datasets."""
    (tmp_path / "notes.txt").write_text("my notes\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me\n")
    (tmp_path / "bad_line.cfg").write_text("# ok\n--epochs=2\n--=3\n")
    (tmp_path / "garbage.keras").write_bytes(b"not a zip file")
    (tmp_path / "garbage.npz").write_bytes(b"\x00\x01 not an npz")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(40, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "huge_label.npz", x_train=x, y_train=np.r_[np.arange(39) % 3, 10**9])
    np.savez(tmp_path / "one_class.npz", x_train=x, y_train=np.zeros(40, np.int64))
    np.savez(tmp_path / "declared.npz", x_train=x, y_train=np.arange(40) % 4, num_classes=3)
    np.savez(tmp_path / "short_labels.npz", x_train=x, y_train=np.arange(30) % 3)
    _image_folder(tmp_path / "one_class_folder", classes=("cat",))
    _image_folder(tmp_path / "corrupt_folder", classes=("cat", "dog"), corrupt="dog/003.jpg")
    _image_folder(tmp_path / "split_folder" / "train", classes=("cat", "dog"))
    _image_folder(tmp_path / "split_folder" / "test", classes=("cat", "cow"))
    (tmp_path / "space.json").write_text(open(write_tiny_space(str(tmp_path / "sp"))).read())
    (tmp_path / "table.csv").write_text("x,y\n1,2\n")
    (tmp_path / "latin1.cfg").write_bytes(b"# caf\xe9 settings\n--epochs=2\n")
    g = json.loads(open(os.path.join(HERE, "..", "export", "darts_v2.json")).read())
    g["cells"]["normal"]["conact"] = g["cells"]["normal"].pop("concat")
    (tmp_path / "typo_genotype.json").write_text(json.dumps(g))
    os.symlink("loop_b", tmp_path / "loop_a")
    os.symlink("loop_a", tmp_path / "loop_b")
    os.symlink("/nonexistent-disk/runs", tmp_path / "dangling")
    return tmp_path


def _image_folder(root, classes, corrupt=None, n=6):
    from PIL import Image
    rng = np.random.default_rng(1)
    for c in classes:
        os.makedirs(root / c, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                root / c / f"{i:03d}.jpg")
    if corrupt:
        (root / corrupt).write_bytes(b"\xff\xd8 this is not really a jpeg")


# (args, exit code, text the one line must contain, path that must not exist afterwards)
S = "{sb}"
CASES = {
    "workdir is a file": (["search", "--workdir={sb}/notes.txt"], 2,
                          "notes.txt is a file, not a folder", None),
    "workdir under a file": (["search", "--workdir={sb}/notes.txt/run"], 2,
                             "cannot be created", None),
    "workdir not writable": (["search", "--workdir=/proc/tfnas_run"], 2,
                             "cannot be written", "/proc/tfnas_run"),
    "train workdir is a file": (["train", "--genotype=darts_v2", "--workdir={sb}/notes.txt",
                                 "--dataset=digits"], 2, "is a file, not a folder", None),
    "train workdir not writable": (["train", "--genotype=darts_v2", "--dataset=digits",
                                    "--workdir=/proc/tfnas_train"], 2, "cannot be written",
                                   None),
    "train on several machines without TF_CONFIG": (
        ["train", "--genotype=darts_v2", "--dataset=digits", "--workdir={sb}/t",
         "--strategy=multi_worker"], 2, "needs the TF_CONFIG environment variable", "{sb}/t"),
    "select workdir is a file": (["select", "--workdir={sb}/notes.txt"], 2,
                                 "is a file, not a folder", None),
    "select workdir missing": (["select", "--workdir={sb}/nothing"], 2, "does not exist",
                               "{sb}/nothing"),
    "select workdir without a search": (["select", "--workdir={sb}/mine"], 2,
                                        "holds no finished search", None),
    "analyze workdir is a file": (["analyze", "skip_gap", "--workdir={sb}/notes.txt"], 2,
                                  "is a file", None),
    "report workdir is a file": (["report", "--workdir={sb}/notes.txt"], 2, "is a file", None),
    "export out is a user file": (["export", "--genotype=darts_v2", "--out={sb}/notes.txt"], 2,
                                  "never replaces a file", None),
    "export out is a user folder": (["export", "--genotype=darts_v2", "--out={sb}/mine"], 2,
                                    "did not write", None),
    "export --overwrite on a user folder": (["export", "--genotype=darts_v2", "--out={sb}/mine",
                                             "--overwrite"], 2, "did not write", None),
    "export out under a file": (["export", "--genotype=darts_v2", "--out={sb}/notes.txt/o"], 2,
                                "is a file", None),
    "export weights not a model": (["export", "--genotype=darts_v2", "--out={sb}/o",
                                    "--weights={sb}/garbage.keras"], 2,
                                   "is not a loadable .keras model", "{sb}/o"),
    "export zero channels": (["export", "--genotype=darts_v2", "--out={sb}/o",
                              "--channels=0"], 2, "--channels=0 is invalid", "{sb}/o"),
    "export unknown format": (["export", "--genotype=darts_v2", "--out={sb}/o",
                               "--formats=keras,pdf"], 2, "unknown ['pdf']", "{sb}/o"),
    "malformed flagfile line": (["search", "--flagfile={sb}/bad_line.cfg", "--workdir={sb}/r"],
                                2, "bad_line.cfg line 3: '--=3' is not a flag", "{sb}/r"),
    "malformed flag": (["search", "--=3", "--workdir={sb}/r"], 2, "'--=3' is not a flag",
                       "{sb}/r"),
    "abbreviated flag": (["search", "--epoch=3", "--workdir={sb}/r"], 2,
                         "unrecognized arguments: --epoch=3", "{sb}/r"),
    "flagfile is a folder": (["search", "--flagfile={sb}/mine", "--workdir={sb}/r"], 2,
                             "Is a directory", "{sb}/r"),
    "absurd label": (["search", "--dataset=npz:{sb}/huge_label.npz", "--workdir={sb}/r"], 1,
                     "largest label is 1000000000", "{sb}/r"),
    "single class npz": (["search", "--dataset=npz:{sb}/one_class.npz", "--workdir={sb}/r"], 1,
                         "single class", "{sb}/r"),
    "label beyond declared classes": (["search", "--dataset=npz:{sb}/declared.npz",
                                       "--workdir={sb}/r"], 1, "outside 0..2", "{sb}/r"),
    "images and labels differ": (["search", "--dataset=npz:{sb}/short_labels.npz",
                                  "--workdir={sb}/r"], 1, "differ in length", "{sb}/r"),
    "npz is garbage": (["search", "--dataset=npz:{sb}/garbage.npz", "--workdir={sb}/r"], 1,
                       "cannot read npz dataset", "{sb}/r"),
    "single class folder": (["search", "--dataset=folder:{sb}/one_class_folder",
                             "--workdir={sb}/r"], 1, "single class", "{sb}/r"),
    "undecodable image": (["search", "--dataset=folder:{sb}/corrupt_folder",
                           "--workdir={sb}/r"], 1, "corrupt_folder/dog/003.jpg", "{sb}/r"),
    "test classes differ": (["search", "--dataset=folder:{sb}/split_folder",
                             "--workdir={sb}/r"], 1, "differ from the training classes",
                            "{sb}/r"),
    "missing folder dataset": (["search", "--dataset=folder:{sb}/nope", "--workdir={sb}/r"], 2,
                               "does not exist", "{sb}/r"),
    "missing npz dataset": (["search", "--dataset=npz:{sb}/nope.npz", "--workdir={sb}/r"], 2,
                            "nope.npz does not exist", "{sb}/r"),
    "csv given as npz": (["search", "--dataset=npz:{sb}/table.csv", "--workdir={sb}/r"], 1,
                         "not an .npz archive (numpy's np.savez format) (it looks like text: "
                         "a CSV?)", "{sb}/r"),
    "negative seed": (["search", "--seed=-1", "--workdir={sb}/r"], 2,
                      "--seed=-1 is invalid: expected an integer in 0..4294967295", "{sb}/r"),
    "seed beyond 32 bits": (["train", "--genotype=darts_v2", "--seed=4294967296",
                             "--workdir={sb}/r"], 2, "--seed=4294967296 is invalid", "{sb}/r"),
    "select seed below -1": (["select", "--workdir={sb}/mine", "--seed=-2"], 2,
                             "--seed=-2 is invalid: expected an integer in 0..4294967295 or -1",
                             None),
    "analyze negative seed": (["analyze", "shuffle", "--workdir={sb}/mine", "--seed=-5"], 2,
                              "--seed=-5 is invalid", None),
    "flagfile not UTF-8": (["search", "--flagfile={sb}/latin1.cfg", "--workdir={sb}/r"], 2,
                           "latin1.cfg line 1 is not UTF-8 text (byte 0xe9 at column 6)",
                           "{sb}/r"),
    "genotype with an unknown key": (["train", "--genotype={sb}/typo_genotype.json",
                                      "--workdir={sb}/r"], 2,
                                     "cells.normal: unknown key 'conact' (did you mean "
                                     "'concat'?)", "{sb}/r"),
    "workdir is a symlink loop": (["search", "--workdir={sb}/loop_a"], 2,
                                  "goes through a loop of symbolic links", None),
    "workdir under a dangling symlink": (["search", "--workdir={sb}/dangling/run1"], 2,
                                         "dangling is a symbolic link to /nonexistent-disk/runs, "
                                         "which does not exist", None),
    "export out is a dangling symlink": (["export", "--genotype=darts_v2", "--out={sb}/dangling"],
                                         2, "--out={sb}/dangling: {sb}/dangling is a symbolic "
                                            "link to /nonexistent-disk/runs", None),
    "negative cpu devices": (["search", "--cpu_devices=-3", "--workdir={sb}/r"], 2,
                             "--cpu_devices=-3 is invalid", "{sb}/r"),
    "select workdir is a dangling symlink": (["select", "--workdir={sb}/dangling"], 2,
                                             "which does not exist (a disk that is not mounted?)",
                                             None),
    "batch larger than the data": (["search", "--batch_size=5000", "--workdir={sb}/r",
                                    "--space={sb}/space.json"], 2, "larger than a split",
                                   None),
    "query table missing": (["query", "--table={sb}/nope.csv", "--arch_str=x"], 2,
                            "nope.csv", None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_changes_nothing(name, sandbox, capsys):
    args, code, text, absent = CASES[name]
    args = [a.replace(S, str(sandbox)) for a in args]
    before = _snapshot(sandbox)
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert err.startswith("tfnas: error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err and text.replace(S, str(sandbox)) in err, err
    after = _snapshot(sandbox)
    assert {k: v for k, v in after.items() if k in before} == before  # byte-identical
    new = set(after) - set(before)
    assert not new, f"{name} wrote {sorted(new)}"
    if absent:
        assert not os.path.exists(absent.replace(S, str(sandbox)))


def test_the_console_script_prints_no_traceback(sandbox):
    """The installed entry point (own process, TensorFlow imported): one line, exit 2."""
    out = subprocess.run([sys.executable, "-m", "tfnas.cli", "search",
                          f"--workdir={sandbox}/notes.txt"], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"tfnas: error: --workdir={sandbox}/notes.txt is a file, not a folder; pass a folder "
        f"path"]


def test_skip_bad_images_warns_with_a_count(sandbox, capsys):
    from tfnas.data import load_dataset
    d = load_dataset(f"folder:{sandbox}/corrupt_folder", skip_bad_images=True)
    assert len(d.x_train) == 11 and d.num_classes == 2  # 12 files, one undecodable
    err = capsys.readouterr().err
    assert "skipped 1 undecodable image(s)" in err and "dog/003.jpg" in err


def test_a_data_error_leaves_nothing_so_the_fixed_command_runs(sandbox, capsys):
    wd = sandbox / "run"
    base = [f"--workdir={wd}", f"--space={sandbox}/space.json", "--channels=4", "--layers=3",
            "--epochs=1", "--batch_size=16", "--steps_per_epoch=1", "--limit_examples=64"]
    assert main(["search", f"--dataset=npz:{sandbox}/one_class.npz"] + base) == 1
    assert not wd.exists()
    assert main(["search", "--dataset=digits"] + base) == 0
    assert (wd / "genotype_magnitude.json").exists()


# --- exports: --overwrite replaces only what tfnas wrote ------------------------------------
def test_export_overwrite_replaces_only_an_earlier_export(sandbox, capsys):
    out = sandbox / "exp"
    args = ["export", "--genotype=darts_v2", f"--out={out}", "--channels=4", "--layers=3",
            "--formats=keras"]
    assert main(args) == 0
    assert sorted(os.listdir(out)) == [".tfnas", "model.keras", "parity.json"]
    first = _snapshot(out)
    assert main(args) == 2
    assert "holds an earlier export; pass --overwrite" in capsys.readouterr().err
    assert _snapshot(out) == first
    (sandbox / (TMP_PREFIX + "export-exp-stale")).mkdir()  # an interrupted export's leftover
    assert main(args + ["--overwrite", "--layers=5"]) == 0
    assert _snapshot(out) != first and (out / ".tfnas").exists()
    assert not [p for p in os.listdir(sandbox) if p.startswith(TMP_PREFIX)]


# --- kill -9 in the middle of every kind of write --------------------------------------------
@pytest.mark.parametrize("kind,name", [
    ("json", "config.json"), ("json", "env.json"), ("json", "genotype.json"),
    ("json", "genotype_magnitude.json"), ("jsonl", "metrics.jsonl"),
    ("jsonl", "alphas.jsonl"), ("jsonl", "scores.jsonl"), ("checkpoint", "checkpoints")])
def test_kill_during_write_keeps_the_old_file_and_the_next_start_cleans_up(tmp_path, kind,
                                                                            name):
    from tfnas.checkpoint import Checkpointer
    from tfnas.io import remove_stale_temps
    target = tmp_path / name
    if kind == "json":
        target.write_text('{"old": true}\n')
    elif kind == "jsonl":
        target.write_text('{"epoch": 0, "loss": 2.0}\n{"epoch": 1, "loss": 1.5}\n')
    else:
        target.mkdir()
        (target / "ckpt-00003.npz").write_bytes(b"an older checkpoint")
        target = target / "ckpt-00007.npz"
    before = _snapshot(tmp_path)
    proc = subprocess.run([sys.executable, os.path.join(HERE, "kill_write.py"), kind,
                           str(target)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]  # really killed mid-write
    after = _snapshot(tmp_path)
    if kind == "jsonl":
        # the complete rows survive; the torn half line is skipped, then dropped on resume
        assert [r["epoch"] for r in read_jsonl(str(target))] == [0, 1]
        truncate_jsonl(str(target), "epoch", 2)
        assert target.read_text() == '{"epoch": 0, "loss": 2.0}\n{"epoch": 1, "loss": 1.5}\n'
        return
    assert {k: v for k, v in after.items() if k in before} == before  # old files intact
    leftovers = [k for k in after if os.path.basename(k).startswith(TMP_PREFIX)]
    assert len(leftovers) == 1, after  # the killed write's complete temp file, never renamed
    if kind == "checkpoint":
        assert not os.path.exists(target)
    folder = os.path.dirname(target)
    if kind == "checkpoint":
        Checkpointer(folder, {}, keep=2)  # what a resumed run creates first
    else:
        remove_stale_temps(folder)
    assert _snapshot(tmp_path) == before


def test_torn_line_elsewhere_is_an_error_naming_the_line(tmp_path):
    from tfnas.errors import CheckpointError
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"epoch": 0}\n{"epo\n{"epoch": 2}\n')
    with pytest.raises(CheckpointError, match="metrics.jsonl line 2 is not JSON"):
        read_jsonl(str(p))


# --- divergence -----------------------------------------------------------------------------
def _strict(path):
    def bad(token):
        raise ValueError(f"non-strict JSON token {token} in {path}")
    with open(path) as f:
        return [json.loads(line, parse_constant=bad) for line in f if line.strip()]


def test_divergence_stops_at_once_and_keeps_only_finite_state(sandbox, capsys):
    wd = sandbox / "run"
    rc = main(["search", f"--workdir={wd}", f"--space={sandbox}/space.json", "--channels=4",
               "--layers=3", "--epochs=3", "--batch_size=16", "--steps_per_epoch=3",
               "--limit_examples=96", "--lr=1e12", "--grad_clip=0", "--ckpt_every=1"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert "diverged" in err or "became nan" in err.lower() or "NaN/inf" in err, err
    for name in ("metrics.jsonl", "alphas.jsonl"):
        if (wd / name).exists():
            _strict(wd / name)
    for f in os.listdir(wd / "checkpoints") if (wd / "checkpoints").exists() else []:
        with np.load(wd / "checkpoints" / f) as z:
            assert all(np.all(np.isfinite(z[k])) for k in z.files
                       if np.issubdtype(z[k].dtype, np.floating)), f


def test_checkpointer_refuses_non_finite_state(tmp_path):
    import tensorflow as tf
    from tfnas.checkpoint import Checkpointer
    v = tf.Variable([1.0, 2.0])
    ck = Checkpointer(str(tmp_path / "ck"), {"m": [v]})
    ck.save(0, {"epoch": 0})
    v.assign([1.0, float("inf")])
    with pytest.raises(TrainingError, match="NaN/inf"):
        ck.save(1, {"epoch": 1})
    assert [e for e, _ in ck.list()] == [0]


def test_json_files_are_strict(tmp_path):
    from tfnas.io import append_jsonl, atomic_write_json
    atomic_write_json(str(tmp_path / "a.json"), {"x": float("nan"), "y": [1.0, float("inf")]})
    append_jsonl(str(tmp_path / "b.jsonl"), {"loss": float("-inf"), "ok": np.float32(0.5)})
    with open(tmp_path / "a.json") as f:
        assert json.loads(f.read(), parse_constant=lambda t: 1 / 0) == {"x": None,
                                                                         "y": [1.0, None]}
    assert _strict(tmp_path / "b.jsonl") == [{"loss": None, "ok": 0.5}]


def test_train_guard_stops_before_callbacks_save():
    from tfnas.train import FiniteGuard
    g = FiniteGuard()
    g.on_train_batch_end(0, {"loss": 1.0, "accuracy": float("nan")})  # only losses count
    with pytest.raises(TrainingError, match="loss became nan at step 3"):
        g.on_train_batch_end(3, {"loss": float("nan")})
    with pytest.raises(TrainingError, match="val_loss became inf in epoch 2"):
        g.on_epoch_end(1, {"loss": 1.0, "val_loss": math.inf})


# --- multi-worker: a lost peer is one line ------------------------------------------------
def test_lost_peer_message_names_the_worker(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 0}}))

    class UnavailableError(Exception):
        pass

    e = UnavailableError("Collective ops is aborted by: failed to connect to all addresses\n"
                         "The error could be from a previous operation. Restart your program "
                         "to reset. [/job:worker/replica:0/task:1 is unavailable]")
    msg = lost_peer_message(e)
    assert msg.startswith("lost contact with worker 1 (UnavailableError)")
    assert "Restart all workers with the same command" in msg
    rc_line = []
    monkeypatch.setattr("tfnas.cli.build_parser", lambda: (_ for _ in ()).throw(e))
    import io
    import contextlib
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        rc_line.append(main(["search", "--workdir=x"]))
    assert rc_line == [1] and buf.getvalue().count("\n") == 1
    assert buf.getvalue().startswith("tfnas: error: lost contact with worker 1")


def test_unexpected_error_is_one_line_unless_asked(monkeypatch, capsys):
    monkeypatch.setattr("tfnas.cli.build_parser", lambda: (_ for _ in ()).throw(
        TypeError("boom\nsecond line")))
    assert main(["search", "--workdir=x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: TypeError: boom" in err
    monkeypatch.setenv("TFNAS_TRACEBACK", "1")
    with pytest.raises(TypeError):
        main(["search", "--workdir=x"])


def test_atomic_path_leaves_the_old_file_when_the_writer_fails(tmp_path):
    from tfnas.io import atomic_path
    p = tmp_path / "plot.png"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(str(p)) as tmp:
            assert tmp.endswith(".png") and os.path.basename(tmp).startswith(TMP_PREFIX)
            open(tmp, "wb").write(b"half")
            raise RuntimeError("the writer died")
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["plot.png"]


def test_best_model_is_saved_atomically_and_survives_a_resume(tmp_path):
    import keras
    from tfnas.train import AtomicModelSave
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    best, hist = tmp_path / "best.keras", tmp_path / "history.csv"
    cb = AtomicModelSave(str(best), monitor="val_accuracy", history=str(hist))
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_end(0, {"val_accuracy": 0.5})
    first = best.read_bytes()
    model.layers[0].kernel.assign(np.ones((2, 1), np.float32))
    cb.on_epoch_end(1, {"val_accuracy": 0.4})  # worse: not saved
    assert best.read_bytes() == first
    cb.on_epoch_end(2, {"val_accuracy": float("nan")})  # non-finite: never saved
    assert best.read_bytes() == first
    # a resumed run reads the best so far from the CSV log and keeps the better file
    hist.write_text("epoch,val_accuracy\n0,0.5\n1,0.4\n")
    resumed = AtomicModelSave(str(best), monitor="val_accuracy", history=str(hist))
    resumed.set_model(model)
    resumed.on_train_begin()
    resumed.on_epoch_end(2, {"val_accuracy": 0.45})
    assert best.read_bytes() == first
    resumed.on_epoch_end(3, {"val_accuracy": 0.6})
    assert best.read_bytes() != first
    assert sorted(os.listdir(tmp_path)) == ["best.keras", "history.csv"]


def test_device_out_of_memory_is_one_line(monkeypatch, capsys):
    import tensorflow as tf
    oom = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor\nmore")
    monkeypatch.setattr("tfnas.cli.build_parser", lambda: (_ for _ in ()).throw(oom))
    assert main(["search", "--workdir=x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of device memory" in err and "--batch_size" in err


def test_atomic_writes_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    from tfnas.io import _UMASK, atomic_write_json
    atomic_write_json(str(tmp_path / "x.json"), {"a": 1})
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~_UMASK
