"""Every paper config validates; tools/reproduce.py runs one experiment in smoke mode."""

import csv
import glob
import os
import subprocess
import sys

import pytest

from tfnas.cli import build_parser, expand_flagfiles
from tfnas.config import SearchConfig
from tfnas.selection.pt import SelectConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = sorted(glob.glob(os.path.join(ROOT, "configs", "paper", "*.cfg")))
sys.path.insert(0, os.path.join(ROOT, "tools"))


def test_there_is_a_config_for_every_experiment_of_the_paper():
    names = {os.path.basename(p)[:-4] for p in PAPER}
    for m in ("darts", "darts_pt", "darts_pt_mag", "sdarts_rs", "sdarts_rs_pt", "sgas",
              "sgas_pt"):
        assert f"table2_{m}" in names
    for sp in ("s1", "s2", "s3", "s4"):
        for ds in ("cifar10", "cifar100", "svhn"):
            for m in ("darts", "darts_pt", "fixalpha_pt"):
                assert f"table3_{sp}_{ds}_{m}" in names
    assert {"table4_darts_fixalpha_pt", "table4_nb201_fixalpha_pt",
            "fig4_nb201_cifar100_darts_pt", "fig4_nb201_imagenet16_darts_pt",
            "fig9_nb201_tune1", "fig9_nb201_tune10"} <= names


@pytest.mark.parametrize("path", PAPER, ids=[os.path.basename(p) for p in PAPER])
def test_paper_config_parses_and_validates_for_search_and_select(path):
    with open(path) as f:
        head = [next(f) for _ in range(5)]
    assert head[1].startswith("# paper: ")
    assert "tfnas search --flagfile=configs/paper/" in head[3]
    assert "tfnas select --flagfile=configs/paper/" in head[4]
    parser = build_parser()
    args = parser.parse_args(expand_flagfiles(["search", f"--flagfile={path}",
                                               "--workdir=/tmp/x"]))
    import dataclasses
    cfg = SearchConfig(**{f.name: getattr(args, f.name)
                          for f in dataclasses.fields(SearchConfig)}).validate()
    assert cfg.epochs in (50, 100)
    args = parser.parse_args(expand_flagfiles(["select", f"--flagfile={path}",
                                               "--workdir=/tmp/x"]))
    sel = SelectConfig(**{f.name: getattr(args, f.name)
                          for f in dataclasses.fields(SelectConfig)}).validate()
    assert sel.seed == -1  # the search's seed drives the edge order
    if "_pt" in os.path.basename(path) and "sgas" not in path:
        assert sel.selector in ("pt", "pt_mag")


@pytest.mark.slow
def test_reproduce_smoke_runs_resumes_and_summarises(tmp_path):
    from test_methods import _fake_table
    table = _fake_table(tmp_path / "nb201.csv")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "reproduce.py"), "table4_nb201",
           "--smoke", "--seeds=0", f"--runs={tmp_path / 'runs'}", f"--benchmark_table={table}"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    # DARTS and DARTS+PT share one supernet; fix-alpha trains its own
    assert out.stdout.count("$ tfnas search") == 2 and out.stdout.count("$ tfnas select") == 3
    folder = tmp_path / "runs" / "table4_nb201_smoke"
    with open(folder / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["darts", "darts_pt", "fixalpha_pt"]
    from tfnas.benchmarks import Benchmark
    for r in rows:
        assert float(r["bench_cifar10_test"]) == Benchmark(table).query(r["arch_str"])[
            "cifar10_test"]
    md = (folder / "summary.md").read_text()
    assert "| DARTS+PT | 1 | 11.89 |" in md
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0 and "$ tfnas" not in again.stdout  # everything was done
    bad = subprocess.run(cmd[:2] + ["table99"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "no paper config for experiment 'table99'" in bad.stderr
