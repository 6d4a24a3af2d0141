"""Bad input: one readable line on stderr, exit code 2 (usage) or 1 (runtime)."""

import os

import pytest

from helpers import write_tiny_space
from tfnas.cli import main


@pytest.mark.parametrize("args,code,message", [
    (["--dataset=imagenet"], 2, "--dataset='imagenet' is invalid: expected one of"),
    (["--space=nope"], 2, "unknown search space 'nope'; registered: darts"),
    (["--strategy=horovod"], 2, "argument --strategy: invalid choice: 'horovod'"),
    (["--epochs=0"], 2, "--epochs=0 is invalid: expected a positive integer"),
    (["--train_portion=1"], 2, "--train_portion=1.0 is invalid: expected a number in (0, 1)"),
    (["--lr=-0.1"], 2, "--lr=-0.1 is invalid: expected a non-negative number"),
    (["--flagfile=/no/such.cfg"], 2, "No such file or directory"),
    (["--epochs=many"], 2, "argument --epochs: invalid int value: 'many'"),
    (["--dataset=npz:/no/such.npz"], 2, "dataset npz:/no/such.npz: /no/such.npz does not exist"),
])
def test_bad_input(tmp_path, capsys, args, code, message):
    wd = tmp_path / "run"
    rc = main(["search", f"--workdir={wd}"] + args)
    err = capsys.readouterr().err.strip()
    assert rc == code
    assert err.startswith("tfnas: error: ") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_flagfile_after_subcommand_and_config_written(tmp_path, capsys):
    space = write_tiny_space(str(tmp_path))
    cfg = tmp_path / "x.cfg"
    cfg.write_text(f"# comment\n--space={space}\n--channels=4\n--layers=3\n--epochs=1\n"
                   "--batch_size=32\n--steps_per_epoch=2\n--limit_examples=200\n")
    wd = tmp_path / "run"
    assert main(["search", f"--flagfile={cfg}", f"--workdir={wd}", "--epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/1" in out and "genotype_magnitude.json" in out
    assert os.path.exists(wd / "genotype_magnitude.json")
    # a different config on the same workdir is refused, the run is left as it was
    rc = main(["search", f"--flagfile={cfg}", f"--workdir={wd}", "--channels=8"])
    assert rc == 2 and "different config (channels: 4 -> 8)" in capsys.readouterr().err
    assert '"channels": 4' in (wd / "config.json").read_text()


def test_configs_parse_and_validate():
    from tfnas.cli import _config_from_args, build_parser
    from tfnas.config import SearchConfig
    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    names = sorted(f for f in os.listdir(root) if f.startswith(("search_", "quickstart")))
    assert "quickstart.cfg" in names and len(names) >= 3
    for name in names:
        path = os.path.join(root, name)
        first = open(path).readline()
        assert first.startswith("#"), f"{name} must start with a comment saying what it does"
        args = build_parser().parse_args(["search", f"--flagfile={path}", "--workdir=x"])
        _config_from_args(args, SearchConfig).validate()


def test_experiment_flagfile_serves_both_stages_but_explicit_flags_are_checked(tmp_path,
                                                                             capsys):
    from tfnas.cli import expand_flagfiles
    cfg = tmp_path / "exp.cfg"
    cfg.write_text("# both stages\n--epochs=3\n--seed=5\n--selector=pt_mag\n"
                   "--tune_epochs_per_decision=2\n")
    assert expand_flagfiles(["search", f"--flagfile={cfg}"]) == \
        ["search", "--epochs=3", "--seed=5"]
    # select ignores the search's flags, --seed included (the search's seed drives the order)
    assert expand_flagfiles(["select", f"--flagfile={cfg}", "--workdir=w"]) == \
        ["select", "--selector=pt_mag", "--tune_epochs_per_decision=2", "--workdir=w"]
    # typed on the command line, a flag of the other stage is an error
    assert main(["search", f"--workdir={tmp_path / 'r'}", "--selector=pt"]) == 2
    assert "unrecognized arguments: --selector=pt" in capsys.readouterr().err


def test_shipped_zoo_and_flagfiles_are_found_by_name(tmp_path, capsys, monkeypatch):
    from tfnas.genotype import resolve_genotype_path
    monkeypatch.chdir(tmp_path)  # another folder: nothing relative to the repository
    assert main(["list", "zoo"]) == 0
    assert capsys.readouterr().out.split() == ["darts_v1", "darts_v2"]
    assert main(["list", "configs"]) == 0
    names = [ln.split()[0] for ln in capsys.readouterr().out.splitlines()]
    assert "quickstart" in names and "paper/table2_darts_pt" in names and len(names) >= 69
    assert resolve_genotype_path("darts_v2").endswith("darts_v2.json")
    from tfnas.cli import expand_flagfiles
    flags = expand_flagfiles(["search", "--flagfile=paper/table2_darts_pt", "--workdir=w"])
    assert "--space=darts" in flags and "--epochs=50" in flags


def test_the_wheel_ships_the_zoo_and_the_flagfiles(tmp_path):
    import subprocess
    import sys
    import zipfile
    root = os.path.join(os.path.dirname(__file__), "..")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(tmp_path), root],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = [p for p in os.listdir(tmp_path) if p.endswith(".whl")]
    names = set(zipfile.ZipFile(tmp_path / wheel).namelist())
    assert {"tfnas/zoo/darts_v2.json", "tfnas/configs/quickstart.cfg",
            "tfnas/configs/paper/table2_darts_pt.cfg", "tfnas/resources.py"} <= names


def test_help_lists_tfnas_flags_only(capsys):
    """--helpfull shows the command's own flags, not absl's (--logtostderr, --pdb, ...); an
    absl flag is not accepted either."""
    with pytest.raises(SystemExit) as e:
        main(["search", "--helpfull"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--bn {global,replica}" in out and "--workdir" in out
    assert "logtostderr" not in out and "--pdb" not in out and "undefok" not in out
    assert main(["search", "--logtostderr", "--workdir=x"]) == 2
    assert "unrecognized arguments: --logtostderr" in capsys.readouterr().err
