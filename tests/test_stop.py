"""SIGTERM / SIGINT as checkpoints, and one process per workdir.

Signals are real: the command (`tfnas.cli.main`, which installs the handlers) sends one to
its own process between two steps (as SLURM or `docker stop` would), or a parent process
sends it to a `tfnas` subprocess. Every case asserts the exit code, one line naming what was
saved, and that the rerun ends exactly where an uninterrupted run ends, with no duplicated
log row.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import write_tiny_space
from tfnas.cli import main
from tfnas.io import read_jsonl

HERE = os.path.dirname(os.path.abspath(__file__))


def _search_args(tmp, wd, epochs=3, **kw):
    args = ["search", f"--workdir={wd}", "--dataset=digits", f"--space={write_tiny_space(tmp)}",
            "--channels=4", "--layers=3", f"--epochs={epochs}", "--batch_size=32",
            "--steps_per_epoch=4", "--limit_examples=400", "--seed=3"]
    return args + [f"--{k}={v}" for k, v in kw.items()]


def _signal_at(monkeypatch, cls, attr, at, signum=signal.SIGTERM):
    """Wraps cls.attr (one call: one or more steps) to send `signum` to this process after
    its `at`-th call."""
    calls = [0]
    real = getattr(cls, attr)

    def wrapped(self, *a, **k):
        out = real(self, *a, **k)
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), signum)
        return out
    monkeypatch.setattr(cls, attr, wrapped)
    return calls


def _rows(path, drop=("seconds",)):
    return [{k: v for k, v in r.items() if k not in drop} for r in read_jsonl(path)]


def _digest(out):
    return [ln for ln in out.splitlines() if ln.startswith("final alphas digest")][-1]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A 3-epoch search run without a signal: (workdir, digest line)."""
    tmp = tmp_path_factory.mktemp("full")
    import io
    from contextlib import redirect_stdout
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(_search_args(str(tmp), str(tmp / "run"))) == 0
    return tmp / "run", _digest(buf.getvalue())


@pytest.mark.parametrize("at,signum,partial", [
    (6, signal.SIGTERM, True),    # epoch 2, after step 2 of 4: a mid-epoch state
    (4, signal.SIGINT, False),    # during the last step of epoch 1: the epoch's checkpoint
])
def test_search_stops_at_a_step_and_resumes_to_the_uninterrupted_result(
        tmp_path, capfd, monkeypatch, uninterrupted, at, signum, partial):
    from tfnas.search.loop import SearchLoop
    full, digest = uninterrupted
    wd = tmp_path / "run"
    calls = _signal_at(monkeypatch, SearchLoop, "_run_steps", at, signum)
    rc = main(_search_args(str(tmp_path), str(wd)))
    err = capfd.readouterr().err.strip().splitlines()
    name = signal.Signals(signum).name
    assert rc == 128 + signum and calls[0] == at  # no step after the requested one
    assert err[0] == (f"tfnas: {name} received: saving the state at the next step boundary "
                      f"(send it again to exit at once)")
    where = "of epoch 2 after step 2" if partial else "after epoch 1"
    assert err[1] == (f"tfnas: stopped by {name}: the state {where} is saved in "
                      f"{wd}/checkpoints; rerun the same command to resume")
    assert len(err) == 2
    assert os.path.exists(wd / "checkpoints" / "partial.npz") == partial
    assert [r["epoch"] for r in read_jsonl(wd / "metrics.jsonl")] == [0]
    assert not os.path.exists(wd / ".tfnas-lock")  # released
    monkeypatch.undo()
    assert main(_search_args(str(tmp_path), str(wd))) == 0
    out = capfd.readouterr().out
    assert ("resuming" in out) and _digest(out) == digest
    for name_ in ("metrics.jsonl", "alphas.jsonl"):  # every epoch once, the same numbers
        assert _rows(wd / name_) == _rows(full / name_)
    assert not os.path.exists(wd / "checkpoints" / "partial.npz")  # superseded


class _Killed(BaseException):
    """A kill -9 stand-in: nothing after it runs, nothing is saved on the way out."""


@pytest.mark.parametrize("at,partial", [(7, True), (5, False)])
def test_a_kill_resumes_from_the_last_periodic_save(tmp_path, capfd, monkeypatch,
                                                    uninterrupted, at, partial):
    """--ckpt_every_steps=2: a run killed at epoch 2 step 3 resumes from its save after step
    2 (at step 1: from epoch 1's checkpoint) and ends with the uninterrupted alphas, every
    epoch logged once."""
    from tfnas.search.loop import SearchLoop
    full, digest = uninterrupted
    wd = tmp_path / "run"
    calls, real = [0], SearchLoop._run_steps

    def killed_after(self, *a, **k):
        out = real(self, *a, **k)
        calls[0] += 1
        if calls[0] == at:
            raise _Killed()
        return out
    monkeypatch.setattr(SearchLoop, "_run_steps", killed_after)
    with pytest.raises(_Killed):
        main(_search_args(str(tmp_path), str(wd), ckpt_every_steps=2))
    assert os.path.exists(wd / "checkpoints" / "partial.npz") == partial
    monkeypatch.undo()
    assert main(_search_args(str(tmp_path), str(wd), ckpt_every_steps=2)) == 0
    out = capfd.readouterr().out
    assert _digest(out) == digest
    assert (f"resuming {wd} in epoch 2 after step 2" in out) == partial
    for name_ in ("metrics.jsonl", "alphas.jsonl"):
        assert _rows(wd / name_) == _rows(full / name_)



def test_selection_stops_in_its_tuning_and_resumes_to_the_same_genotype(
        searched, tmp_path, capfd, monkeypatch):
    import shutil
    from tfnas.search.loop import SearchLoop
    args = ["--tune_epochs_per_decision=2", "--score_batches=2"]
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(searched, a)
    shutil.copytree(searched, b)
    assert main(["select", f"--workdir={a}"] + args) == 0
    # the tiny search has 4 steps an epoch: call 7 is the 3rd step of event 1's 2nd epoch
    _signal_at(monkeypatch, SearchLoop, "_run_steps", 7)
    capfd.readouterr()
    assert main(["select", f"--workdir={b}"] + args) == 143
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1] == (f"tfnas: stopped by SIGTERM: the state of decision 1/6's tuning (epoch "
                       f"2, step 3) is saved in {b}/selection/checkpoints; rerun the same "
                       f"command to resume")
    monkeypatch.undo()
    assert main(["select", f"--workdir={b}"] + args) == 0
    out = capfd.readouterr().out
    assert out.count("resuming selection") == 1
    assert "resuming selection in the tuning after decision 1/6 (epoch 2, step 3)" in out
    ga, gb = (json.loads((w / "genotype.json").read_text()) for w in (a, b))
    assert ga["cells"] == gb["cells"]
    assert _rows(a / "selection" / "scores.jsonl") == _rows(b / "selection" / "scores.jsonl")


def test_selection_killed_in_its_tuning_resumes_from_its_periodic_save(
        searched, tmp_path, capfd, monkeypatch):
    """`tfnas select --ckpt_every_steps=2`: killed at the 3rd step of event 1's 2nd tuning
    epoch, the rerun continues from its save after step 2 and ends with the genotype and
    scores of a run never killed (a changed --ckpt_every_steps is not a changed config)."""
    import shutil
    from tfnas.search.loop import SearchLoop
    args = ["--tune_epochs_per_decision=2", "--score_batches=2"]
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(searched, a)
    shutil.copytree(searched, b)
    assert main(["select", f"--workdir={a}"] + args) == 0
    calls, real = [0], SearchLoop._run_steps

    def killed_after(self, *x, **k):
        out = real(self, *x, **k)
        calls[0] += 1
        if calls[0] == 7:
            raise _Killed()
        return out
    monkeypatch.setattr(SearchLoop, "_run_steps", killed_after)
    with pytest.raises(_Killed):
        main(["select", f"--workdir={b}", "--ckpt_every_steps=2"] + args)
    monkeypatch.undo()
    capfd.readouterr()
    assert main(["select", f"--workdir={b}", "--ckpt_every_steps=3"] + args) == 0
    out = capfd.readouterr().out
    assert "resuming selection in the tuning after decision 1/6 (epoch 2, step 2)" in out
    ga, gb = (json.loads((w / "genotype.json").read_text()) for w in (a, b))
    assert ga["cells"] == gb["cells"]
    assert _rows(a / "selection" / "scores.jsonl") == _rows(b / "selection" / "scores.jsonl")


def test_selection_stopped_while_scoring_resumes_from_the_last_event(
        searched, tmp_path, capfd, monkeypatch):
    import shutil
    from tfnas.search.loop import SearchLoop
    b = tmp_path / "b"
    shutil.copytree(searched, b)
    args = ["--tune_epochs_per_decision=1", "--score_batches=2"]
    # scoring passes call evaluate(); the 4th is inside event 0's first decision
    _signal_at(monkeypatch, SearchLoop, "evaluate", 4)
    assert main(["select", f"--workdir={b}"] + args) == 143
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1].endswith("no decision was saved yet (the selection starts again); rerun "
                            "the same command to resume")
    assert not os.listdir(b / "selection" / "checkpoints") if os.path.isdir(
        b / "selection" / "checkpoints") else True
    monkeypatch.undo()
    assert main(["select", f"--workdir={b}"] + args) == 0
    rows = read_jsonl(b / "selection" / "scores.jsonl")
    keys = [(r["event"], r["cell"]) for r in rows]
    assert len(keys) == len(set(keys)) == 12  # 6 events x 2 cell types, none twice


def test_custom_retraining_loop_stops_mid_epoch_and_resumes_exactly(tmp_path, capfd,
                                                                     monkeypatch):
    from tfnas.retrain import RetrainLoop
    base = ["train", "--genotype=darts_v2", "--dataset=digits", "--channels=4", "--layers=3",
            "--epochs=2", "--batch_size=64", "--limit_examples=256", "--loop=custom",
            "--auxiliary=false", "--cutout=false"]
    assert main(base + [f"--workdir={tmp_path / 'a'}"]) == 0
    real_init = RetrainLoop.__init__
    calls = [0]

    def init(self, *a, **k):
        real_init(self, *a, **k)
        steps = self._steps_fn

        def counted(*args):
            out = steps(*args)
            calls[0] += 1
            if calls[0] == 6:  # epoch 2 (4 steps an epoch), after its 2nd step
                os.kill(os.getpid(), signal.SIGTERM)
            return out
        self._steps_fn = counted
    monkeypatch.setattr(RetrainLoop, "__init__", init)
    wd = tmp_path / "b"
    assert main(base + [f"--workdir={wd}"]) == 143
    assert "the state of epoch 2 after step 2 is saved in" in capfd.readouterr().err
    monkeypatch.undo()
    assert main(base + [f"--workdir={wd}"]) == 0
    assert "resuming" in capfd.readouterr().out
    ha = json.loads((tmp_path / "a" / "train" / "history.json").read_text())
    hb = json.loads((wd / "train" / "history.json").read_text())
    assert ha == hb and len(hb["loss"]) == 2


def test_fit_stops_without_committing_a_partial_epoch(tmp_path, capfd, monkeypatch):
    from tfnas import train as train_mod
    base = ["train", "--genotype=darts_v2", "--dataset=digits", "--channels=4", "--layers=3",
            "--epochs=2", "--batch_size=64", "--limit_examples=256", "--auxiliary=false", "--cutout=false"]
    assert main(base + [f"--workdir={tmp_path / 'a'}"]) == 0
    real = train_mod.StopRequestGuard.on_train_batch_end
    seen = [0]

    def batch_end(self, batch, logs=None):
        if not self.after_commit:  # one of the two guards counts
            seen[0] += 1
            if seen[0] == 6:  # epoch 2, 2nd batch
                os.kill(os.getpid(), signal.SIGTERM)
        return real(self, batch, logs)
    monkeypatch.setattr(train_mod.StopRequestGuard, "on_train_batch_end", batch_end)
    wd = tmp_path / "b"
    capfd.readouterr()
    assert main(base + [f"--workdir={wd}"]) == 143
    err = capfd.readouterr().err
    assert "epoch 2 stopped after step 2; the epochs before it are committed in" in err
    hist = (wd / "train" / "history.csv").read_text().splitlines()
    assert len(hist) == 2  # the header and epoch 1 only
    assert not [p for d, _, fs in os.walk(wd) for p in fs if p.startswith(".tfnas-tmp")]
    monkeypatch.undo()
    assert main(base + [f"--workdir={wd}"]) == 0
    ha = json.loads((tmp_path / "a" / "train" / "history.json").read_text())
    hb = json.loads((wd / "train" / "history.json").read_text())
    assert ha == hb and len(hb["loss"]) == 2


def _start(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "tfnas.cli"] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), **kw)


def _wait_for_line(proc, prefix, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting with {prefix!r}")


def test_a_real_sigterm_from_outside_then_a_second_command_and_a_second_signal(tmp_path,
                                                                                capfd):
    """A parent sends SIGTERM to a running `tfnas search`; meanwhile a second search on the
    same workdir is refused by the lock; a second SIGTERM exits at once (the lock file stays,
    the lock does not); the rerun ends exactly where an uninterrupted run ends."""
    epochs = 30
    assert main(_search_args(str(tmp_path), str(tmp_path / "full"), epochs=epochs)) == 0
    digest = _digest(capfd.readouterr().out)
    wd = tmp_path / "run"
    args = _search_args(str(tmp_path), str(wd), epochs=epochs)
    proc = _start(args)
    try:
        _wait_for_line(proc, f"epoch 1/{epochs}")
        second = subprocess.run([sys.executable, "-m", "tfnas.cli"] + args,
                                capture_output=True, text=True, timeout=300)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{wd} is in use by `tfnas search` (pid {proc.pid} on host" \
        in lines[0], lines
    assert proc.returncode == 143, err
    assert "tfnas: stopped by SIGTERM: the state" in err and "Traceback" not in err
    done = [r["epoch"] for r in read_jsonl(wd / "metrics.jsonl")]
    assert done == list(range(len(done))) and len(done) < epochs  # no row twice
    proc = _start(args)
    try:
        _wait_for_line(proc, "resuming")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143
    assert "tfnas: second SIGTERM: exiting at once" in err
    held = json.loads((wd / ".tfnas-lock").read_text())  # left by the exit, lock released
    assert held["pid"] == proc.pid
    assert main(args) == 0
    out = capfd.readouterr().out
    assert _digest(out) == digest
    assert [r["epoch"] for r in read_jsonl(wd / "metrics.jsonl")] == list(range(epochs))
    assert _rows(wd / "metrics.jsonl") == _rows(tmp_path / "full" / "metrics.jsonl")


# --- the lock --------------------------------------------------------------------------------
def test_a_held_lock_refuses_every_writing_command_and_changes_nothing(searched, tmp_path,
                                                                       capfd):
    """search, select, train and analyze on a workdir another process holds; export on an
    --out another export holds: one line naming the holder, exit 2, nothing changed."""
    import hashlib
    import shutil
    from tfnas.runlock import LOCK_NAME, export_lock, workdir_lock
    wd = tmp_path / "run"
    shutil.copytree(searched, wd)

    def snapshot():
        return {os.path.relpath(os.path.join(d, f), tmp_path):
                hashlib.sha1(open(os.path.join(d, f), "rb").read()).hexdigest()
                for d, _, fs in os.walk(tmp_path) for f in fs}
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from tfnas.runlock import workdir_lock, export_lock\n"
        f"a = workdir_lock({str(wd)!r}, 'search').acquire()\n"
        f"b = export_lock({str(tmp_path / 'exp')!r}).acquire()\n"
        "print('held', flush=True); time.sleep(120)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        commands = [
            _search_args(str(tmp_path / "sp"), str(wd), epochs=2),
            ["select", f"--workdir={wd}"],
            ["train", "--genotype=darts_v2", "--dataset=digits", f"--workdir={wd}"],
            ["analyze", "skip_gap", f"--workdir={wd}"],
        ]
        before = snapshot()
        capfd.readouterr()
        for args in commands:
            assert main(args) == 2, args
            err = capfd.readouterr().err.strip().splitlines()
            assert err == [f"tfnas: error: {wd} is in use by `tfnas search` (pid "
                           f"{holder.pid} on host {os.uname().nodename}, since " +
                           err[0].split(", since ")[1]], err
        assert main(["export", "--genotype=darts_v2", f"--out={tmp_path / 'exp'}",
                     "--channels=4", "--layers=3", "--formats=keras"]) == 2
        err = capfd.readouterr().err
        assert f"{tmp_path / 'exp'} is in use by `tfnas export` (pid {holder.pid}" in err
        assert snapshot() == before
        assert not (tmp_path / "exp").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its file is left, the lock is not; taken over
    assert json.loads((wd / LOCK_NAME).read_text())["pid"] == holder.pid
    with workdir_lock(str(wd), "test") as lock:
        assert json.loads((wd / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert lock.fd is not None
    assert not (wd / LOCK_NAME).exists()  # released: removed
    with export_lock(str(tmp_path / "exp")):
        pass
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tfnas")]


def test_a_lock_on_a_new_workdir_leaves_no_folder_when_nothing_was_written(tmp_path):
    from tfnas.errors import WorkdirError
    from tfnas.runlock import workdir_lock
    wd = tmp_path / "new"
    with workdir_lock(str(wd), "search"):
        assert wd.is_dir()
        with pytest.raises(WorkdirError, match=r"is in use by `tfnas search` \(pid "):
            workdir_lock(str(wd), "select").acquire()
    assert not wd.exists()


# --- smaller guarantees ----------------------------------------------------------------------
def test_help_text_is_text(capfd):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    out = capfd.readouterr().out
    assert "~25% slower steps" in out and "{'" not in out and "%%" not in out


def test_noflag_form_of_a_boolean_flag(tmp_path):
    from tfnas.cli import build_parser
    args = build_parser().parse_args(["train", "--genotype=x", f"--workdir={tmp_path}",
                                      "--nocutout", "--noauxiliary"])
    assert args.cutout is False and args.auxiliary is False


def test_checkpoints_follow_the_umask(tmp_path):
    import numpy as np
    from tfnas.checkpoint import Checkpointer
    from tfnas.io import _UMASK

    class Var:
        shape = (2,)

        def numpy(self):
            return np.ones(2, np.float32)

        def assign(self, value):
            pass
    ck = Checkpointer(str(tmp_path), {"m": [Var()]})
    ck.save(0, {"epoch": 0})
    ck.save_partial({"epoch": 0, "partial": {"step": 1}})
    for name in ("ckpt-00000.npz", "partial.npz"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~_UMASK
    assert ck.restore_latest()["partial"] == {"step": 1}
    ck.save(1, {"epoch": 1})  # a newer numbered checkpoint supersedes the partial state
    assert not (tmp_path / "partial.npz").exists() and ck.restore_latest() == {"epoch": 1}


def test_a_stale_partial_state_is_ignored(tmp_path):
    import numpy as np
    from tfnas.checkpoint import Checkpointer

    class Var:
        shape = ()

        def __init__(self):
            self.value = np.float32(0)

        def numpy(self):
            return self.value

        def assign(self, v):
            self.value = np.float32(v)
    v = Var()
    ck = Checkpointer(str(tmp_path), {"m": [v]})
    v.value = np.float32(1)
    ck.save(0, {"epoch": 0})
    v.value = np.float32(2)
    ck.save_partial({"epoch": 0, "partial": {"step": 1}})
    partial = (tmp_path / "partial.npz").read_bytes()
    v.value = np.float32(3)
    ck.save(1, {"epoch": 1})
    (tmp_path / "partial.npz").write_bytes(partial)  # a kill between the save and the removal
    v.value = np.float32(9)
    assert ck.restore_latest() == {"epoch": 1} and float(v.value) == 3.0
    assert not (tmp_path / "partial.npz").exists()


def test_train_history_is_cut_when_no_epoch_was_committed(tmp_path):
    """A kill while fit committed its first epoch: history.csv has the row, backup/ nothing;
    the rerun must not list epoch 0 twice."""
    from tfnas.fit_state import restore
    hist = tmp_path / "history.csv"
    hist.write_text("epoch,loss\n0,2.5\n")
    assert restore(None, str(tmp_path / "backup"), str(hist)) == 0
    assert hist.read_text() == "epoch,loss\n"


def test_only_commands_with_step_loops_take_over_sigterm():
    """export, report, profile... have no step boundary to stop at: SIGTERM must still end
    them (Python's default), not set a flag nobody reads."""
    from tfnas import cli
    for cmd in (["list", "zoo"], ["query", "--table=x.csv", "--arch_str=y"],
                ["export", "--genotype=darts_v2", "--out=x"], ["report", "--workdir=x"]):
        assert not cli._polls_for_stop(cli.build_parser().parse_args(cmd)), cmd
    for cmd in (["search", "--workdir=x"], ["select", "--workdir=x"],
                ["train", "--genotype=darts_v2", "--workdir=x"]):
        assert cli._polls_for_stop(cli.build_parser().parse_args(cmd)), cmd
    assert cli._polls_for_stop(cli.build_parser().parse_args(
        ["analyze", "strength", "--workdir=x"]))
    assert not cli._polls_for_stop(cli.build_parser().parse_args(
        ["analyze", "skip_gap", "--workdir=x"]))
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["list", "zoo"]) == 0
    assert signal.getsignal(signal.SIGTERM) == before


def test_fit_stopped_in_an_epochs_last_step_commits_that_epoch(tmp_path, capfd, monkeypatch):
    """A request during the last step lets the epoch finish and be committed, then stops."""
    from tfnas import train as train_mod
    base = ["train", "--genotype=darts_v2", "--dataset=digits", "--channels=4", "--layers=3",
            "--epochs=3", "--batch_size=64", "--limit_examples=256", "--auxiliary=false",
            "--cutout=false", f"--workdir={tmp_path}"]
    real = train_mod.StopRequestGuard.on_train_batch_end
    seen = [0]

    def batch_end(self, batch, logs=None):
        if not self.after_commit:
            seen[0] += 1
            if seen[0] == 4:  # the last of epoch 1's 4 steps
                os.kill(os.getpid(), signal.SIGTERM)
        return real(self, batch, logs)
    monkeypatch.setattr(train_mod.StopRequestGuard, "on_train_batch_end", batch_end)
    assert main(base) == 143
    err = capfd.readouterr().err
    assert f"the state after epoch 1 is committed in {tmp_path}/train/backup" in err
    assert len((tmp_path / "train" / "history.csv").read_text().splitlines()) == 2
    assert os.listdir(tmp_path / "train" / "backup") == ["epoch-00001"]
