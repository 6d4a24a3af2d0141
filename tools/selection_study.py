"""Selectors side by side on the same finished searches: each `tfnas select` run in a fresh
process on a copy of the run, its wall time (launch included) and the selected genotype's
NAS-Bench-201 accuracies (the search's `--benchmark_table`).

    python tools/selection_study.py --runs=runs/nb201_s0,runs/nb201_s1,runs/nb201_s2 \
        --out=study.json \
        --variants='magnitude:--selector=magnitude' \
        --variants='pt:--selector=pt --tune_epochs_per_decision=1' \
        --variants='zc_nwot:--selector=zc_pt --proxy=nwot' \
        --variants='zc_nwot_init:--selector=zc_pt --proxy=nwot --zc_at_init'

Prints one line per run and variant, then a table of means over the runs; writes every row
to `--out` (JSON) as it goes, so a long study can be read while it runs.
"""

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def select_once(run, flags, scratch):
    """(seconds, genotype JSON) of `tfnas select` with `flags` on a copy of `run`."""
    wd = os.path.join(scratch, "run")
    if os.path.exists(wd):
        shutil.rmtree(wd)
    shutil.copytree(run, wd, ignore=shutil.ignore_patterns("selection", "genotype.json"))
    tfnas = shutil.which("tfnas", path=os.path.dirname(sys.executable)) or "tfnas"
    cmd = [tfnas, "select", f"--workdir={wd}", *shlex.split(flags)]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(wd, "genotype.json")) as f:
        return seconds, json.load(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True, help="comma-separated finished search runs")
    p.add_argument("--variants", action="append", required=True, help="NAME:FLAGS")
    p.add_argument("--out", default="selection_study.json")
    a = p.parse_args(argv)
    variants = [v.split(":", 1) for v in a.variants]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for run in a.runs.split(","):
            for name, flags in variants:
                seconds, g = select_once(run, flags, scratch)
                bench = g.get("meta", {}).get("benchmark", {})
                row = {"run": run, "variant": name, "flags": flags, "seconds": seconds,
                       "arch": g.get("arch_str"), "benchmark": bench, "cells": g["cells"]}
                rows.append(row)
                print(f"{os.path.basename(run)} {name}: {seconds:.1f} s {row['arch']} "
                      f"{bench}", flush=True)
                with open(a.out, "w") as f:
                    json.dump(rows, f, indent=1)
    if not rows[0]["benchmark"]:  # no --benchmark_table: the kept cells say it
        return 0
    print("\n| variant | mean seconds | " + " | ".join(sorted(rows[0]["benchmark"])) + " |")
    for name, _ in variants:
        mine = [r for r in rows if r["variant"] == name]
        cells = [f"{statistics.mean(r['benchmark'][k] for r in mine):.2f}"
                 for k in sorted(rows[0]["benchmark"])]
        print(f"| {name} | {statistics.mean(r['seconds'] for r in mine):.1f} | "
              + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
