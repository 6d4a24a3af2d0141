"""Reruns an experiment of the paper: search -> select (-> train) per method and seed.

    python tools/reproduce.py table2 --seeds=0,1,2,3            # Table 2 (GPU-days)
    python tools/reproduce.py table4_nb201 --smoke --seeds=0     # the pipeline in minutes
    python tools/reproduce.py fig4_cifar10 --benchmark_table=nb201.csv
    python tools/reproduce.py --list

EXPERIMENT is an `# experiment:` name of configs/paper/*.cfg or a prefix of it (`table3`
runs all 12 dataset x space groups). Methods that share a search configuration (DARTS,
DARTS+PT, DARTS+PT-Mag) share one supernet per seed: it is trained once under
RUNS/EXPERIMENT/search_<hash>_s<seed>, then copied to each method's workdir before selection.
Every stage is the `tfnas` command in a subprocess, so whatever was interrupted resumes on
the next call, and finished stages are skipped. The summary (RUNS/EXPERIMENT/summary.md and
.csv) has mean and std per method next to the paper's number.

`--smoke` shrinks everything (digits, a C4 supernet of 3 cells or 1 NB201 cell per stage, 2
epochs of 2 steps, one tuning epoch per decision, one scoring batch) so any experiment's
whole pipeline runs in minutes on a CPU.
"""

import argparse
import csv
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SMOKE_SEARCH = {"dataset": "digits", "limit_examples": "300", "channels": "4", "epochs": "2",
                "steps_per_epoch": "2", "batch_size": "16", "ckpt_every": "1",
                "sgas_warmup": "0", "sgas_freq": "1", "sgas_pt_batches": "1"}
SMOKE_SELECT = {"tune_epochs_per_decision": "1", "score_batches": "1"}
SMOKE_TRAIN = {"dataset": "digits", "limit_examples": "300", "channels": "4", "epochs": "1",
               "batch_size": "32", "auxiliary": "false", "drop_path": "0.0"}


class ReproduceError(Exception):
    pass


def read_config(path):
    """{meta: {key: value}, search: [flags], select: [flags]} of a paper config."""
    from tfnas.cli import expand_flagfiles
    meta = {}
    with open(path) as f:
        for line in f:
            if line.startswith("# ") and ": " in line and " " not in line[2:].split(":")[0]:
                k, v = line[2:].split(": ", 1)
                meta.setdefault(k, v.strip())
    meta["paper"] = meta.get("paper", "").split(" (")[0]
    for key in ("experiment", "method", "label", "metric", "paper"):
        if key not in meta:
            raise ReproduceError(f"{path} lacks a '# {key}:' line")
    search = expand_flagfiles(["search", f"--flagfile={path}"])[1:]
    select = expand_flagfiles(["select", f"--flagfile={path}"])[1:]
    return {"path": path, "meta": meta, "search": search, "select": select}


def all_configs():
    return [read_config(p) for p in sorted(glob.glob(os.path.join(ROOT, "configs", "paper",
                                                                  "*.cfg")))]


def pick(experiment, methods=None):
    chosen = [c for c in all_configs()
              if c["meta"]["experiment"] == experiment or
              c["meta"]["experiment"].startswith(experiment + "_")]
    if methods:
        chosen = [c for c in chosen if c["meta"]["method"] in methods]
    if not chosen:
        names = sorted({c["meta"]["experiment"] for c in all_configs()})
        raise ReproduceError(f"no paper config for experiment {experiment!r}"
                             + (f" and methods {sorted(methods)}" if methods else "")
                             + f"; experiments: {', '.join(names)}")
    return chosen


def override(flags, values):
    """Replaces (or appends) --name=value flags."""
    out = [f for f in flags if f[2:].split("=", 1)[0] not in values]
    return out + [f"--{k}={v}" for k, v in values.items()]


def _as_values(text):
    """'--a=1 --b=x' -> {"a": "1", "b": "x"}."""
    out = {}
    for tok in text.split():
        if not tok.startswith("--") or "=" not in tok:
            raise ReproduceError(f"expected --name=value flags, got {tok!r}")
        k, v = tok[2:].split("=", 1)
        out[k] = v
    return out


def flag_value(flags, name, default=None):
    for f in flags:
        if f.startswith(f"--{name}="):
            return f.split("=", 1)[1]
    return default


def run_stage(args, log_path):
    """One `tfnas` command in a subprocess, its output teed to `log_path`."""
    cmd = [sys.executable, "-m", "tfnas.cli", *args]
    print("$ tfnas " + " ".join(args), flush=True)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=ROOT)
        tail = []
        for line in proc.stdout:
            log.write(line)
            log.flush()
            tail = (tail + [line])[-5:]
            if line.startswith(("epoch ", "decision ", "SGAS ", "benchmark", "tfnas: error")):
                print("   " + line.rstrip(), flush=True)
        if proc.wait():
            raise ReproduceError(f"`tfnas {args[0]}` failed (exit {proc.returncode}); see "
                                 f"{log_path}:\n" + "".join(tail))


def finished_search(workdir, epochs):
    from tfnas.io import read_jsonl
    if not os.path.exists(os.path.join(workdir, "genotype_magnitude.json")):
        return False
    rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    return bool(rows) and rows[-1]["epoch"] == int(epochs) - 1


def run_one(cfg, seed, opts, out):
    """Search (shared), select and optionally train one method for one seed; returns a
    result row."""
    from tfnas.genotype import Genotype
    from tfnas.io import read_jsonl
    meta = cfg["meta"]
    nb201 = flag_value(cfg["search"], "space") == "nb201"
    search = override(cfg["search"], {"seed": str(seed)})
    select = list(cfg["select"])
    if opts.smoke:
        search = override(search, dict(SMOKE_SEARCH, layers="1" if nb201 else "3"))
        select = override(select, SMOKE_SELECT)
    if opts.search_flags:
        search = override(search, _as_values(opts.search_flags))
    if opts.select_flags:
        select = override(select, _as_values(opts.select_flags))
    if opts.data_dir:
        search = override(search, {"data_dir": opts.data_dir})
    if opts.download:
        search = override(search, {"download": "true"})
    if opts.benchmark_table and nb201:
        search = override(search, {"benchmark_table": os.path.abspath(opts.benchmark_table)})
    key = hashlib.sha1("\n".join(sorted(search)).encode()).hexdigest()[:8]
    search_wd = os.path.join(out, f"search_{key}_s{seed}")
    t0 = time.time()
    if not finished_search(search_wd, flag_value(search, "epochs")):
        run_stage(["search", *search, f"--workdir={search_wd}"],
                  os.path.join(search_wd + ".log"))
    wd = os.path.join(out, f"{meta['method']}_s{seed}")
    if not os.path.exists(os.path.join(wd, "config.json")):
        tmp = wd + ".copying"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(search_wd, tmp, ignore=shutil.ignore_patterns("selection",
                                                                      "genotype.json"))
        os.replace(tmp, wd)
    if not os.path.exists(os.path.join(wd, "genotype.json")):
        run_stage(["select", *select, f"--workdir={wd}"], os.path.join(wd, "select.log"))
    g = Genotype.load(os.path.join(wd, "genotype.json"))
    row = {"method": meta["method"], "label": meta["label"], "seed": seed,
           "paper": meta["paper"], "genotype": os.path.relpath(os.path.join(wd,
                                                                           "genotype.json"))}
    scores = read_jsonl(os.path.join(wd, "selection", "scores.jsonl"))
    metrics = read_jsonl(os.path.join(wd, "metrics.jsonl"))
    row["supernet_acc"] = scores[-1]["acc_after"] if scores else metrics[-1].get("valid_acc")
    if nb201:
        row["arch_str"] = g.to_nb201_string()
        for k, v in g.meta.get("benchmark", {}).items():
            if k != "index":
                row["bench_" + k] = v
    if opts.train:
        train = ["--form=nb201"] if nb201 else []
        dataset = flag_value(search, "dataset")
        flagfile = "configs/train_small_s1s4.cfg" if nb201 or not dataset.startswith(
            "cifar10") or flag_value(search, "space") not in ("darts", "darts_none") \
            else "configs/train_cifar10.cfg"
        train += [f"--flagfile={flagfile}", f"--dataset={dataset}", f"--seed={seed}"]
        if opts.smoke:
            train = override(train, dict(SMOKE_TRAIN, layers="1" if nb201 else "3"))
        if not os.path.exists(os.path.join(wd, "train", "history.json")):
            run_stage(["train", f"--genotype={os.path.join(wd, 'genotype.json')}", *train,
                       f"--workdir={wd}"], os.path.join(wd, "train.log"))
        with open(os.path.join(wd, "train", "history.json")) as f:
            hist = json.load(f)
        acc = hist.get("test_logits_accuracy") or hist.get("test_accuracy")  # final epoch
        if acc:
            row["test_error"] = round(100 * (1 - acc[-1]), 3)
    row["seconds"] = round(time.time() - t0, 1)
    return row


def _mean_std(values):
    import statistics
    vals = [float(v) for v in values if v is not None and v != ""]
    if not vals:
        return ""
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} +- {statistics.stdev(vals):.3f}"


def summarize(rows, configs, out, experiment, smoke):
    """Writes summary.csv (one row per method and seed) and summary.md (mean +- std)."""
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = os.path.join(out, ".summary.csv")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, os.path.join(out, "summary.csv"))
    numeric = [k for k in keys if k in ("supernet_acc", "test_error") or k.startswith("bench_")]
    metric = {c["meta"]["method"]: c["meta"]["metric"] for c in configs}
    lines = [f"# {experiment}" + (" (smoke: tiny supernets on digits; not comparable to the "
                                  "paper)" if smoke else ""), "",
             "| method | seeds | paper (" + "; ".join(sorted(set(metric.values()))) + ") | "
             + " | ".join(numeric) + " |",
             "|---" * (3 + len(numeric)) + "|"]
    for c in configs:
        m = c["meta"]["method"]
        mine = [r for r in rows if r["method"] == m]
        if not mine:
            continue
        lines.append(f"| {c['meta']['label']} | {len(mine)} | {c['meta']['paper']} | "
                     + " | ".join(_mean_std([r.get(k) for r in mine]) for k in numeric) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, ".summary.md"), "w") as f:
        f.write(text)
    os.replace(os.path.join(out, ".summary.md"), os.path.join(out, "summary.md"))
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", nargs="?", help="e.g. table2, table3_s2_cifar10, fig4")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (paper: 0,1,2,3)")
    p.add_argument("--methods", default="", help="only these methods (comma-separated)")
    p.add_argument("--smoke", action="store_true", help="tiny everything, minutes on a CPU")
    p.add_argument("--train", action="store_true", help="also retrain each genotype")
    p.add_argument("--runs", default="runs/reproduce", help="where the run folders go")
    p.add_argument("--benchmark_table", default="", help="NAS-Bench-201 table for NB201 runs")
    p.add_argument("--search_flags", default="",
                   help="extra search flags for every run, e.g. '--channels=8 --epochs=10' "
                        "(a CPU-sized variant); they also change the run's folder")
    p.add_argument("--select_flags", default="", help="extra select flags for every run")
    p.add_argument("--data_dir", default="", help="tensorflow-datasets data_dir")
    p.add_argument("--download", action="store_true", help="let tfds download the data")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    opts = p.parse_args(argv)
    from tfnas.cli import _quiet_tensorflow_import
    _quiet_tensorflow_import()  # tfnas imports TensorFlow; keep its banner out of the log
    try:
        if opts.list or not opts.experiment:
            by_exp = {}
            for c in all_configs():
                by_exp.setdefault(c["meta"]["experiment"], []).append(c["meta"]["method"])
            for e, ms in sorted(by_exp.items()):
                print(f"{e:<22} {', '.join(ms)}")
            return 0
        try:
            seeds = [int(s) for s in opts.seeds.split(",") if s.strip()]
        except ValueError:
            raise ReproduceError(f"--seeds={opts.seeds!r}: expected integers like 0,1,2,3") \
                from None
        methods = {m.strip() for m in opts.methods.split(",") if m.strip()}
        configs = pick(opts.experiment, methods)
        custom = (opts.search_flags + " | " + opts.select_flags).strip(" |")
        suffix = ("_smoke" if opts.smoke else "") + (
            "_custom-" + hashlib.sha1(custom.encode()).hexdigest()[:6] if custom else "")
        out = os.path.join(opts.runs, opts.experiment + suffix)
        os.makedirs(out, exist_ok=True)
        rows = []
        for seed in seeds:
            for cfg in configs:
                print(f"== {cfg['meta']['experiment']} / {cfg['meta']['label']} / seed {seed}",
                      flush=True)
                rows.append(run_one(cfg, seed, opts, out))
        print(summarize(rows, configs, out, opts.experiment, opts.smoke))
        print(f"summary: {os.path.join(out, 'summary.md')}, {os.path.join(out, 'summary.csv')}")
        return 0
    except ReproduceError as e:
        print(f"reproduce: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reproduce: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
