"""Writes configs/paper/*.cfg: one flagfile per search/selection experiment of the paper.

Each file serves both stages (`tfnas search` ignores the selection flags in it and `tfnas
select` the search flags), starts with the commands and the paper's number, and carries
machine-readable `# key: value` lines that tools/reproduce.py reads (experiment, method,
metric, paper).

    python tools/make_paper_configs.py          # rewrite configs/paper/
"""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "configs", "paper")

SEARCH = dict(channels=16, layers=8, epochs=50, batch_size=64, train_portion=0.5, lr=0.025,
              lr_min=0.001, momentum=0.9, weight_decay=3e-4, grad_clip=5,
              arch_update="first_order", arch_lr=3e-4, arch_beta1=0.5, arch_weight_decay=1e-3,
              seed=2, ckpt_every=10)
NB201 = dict(SEARCH, space="nb201", channels=16, layers=5, epochs=100, seed=0, ckpt_every=20)
SELECT_PT = dict(selector="pt", crit="acc", tune_epochs_per_decision=5, tune_lr=0.0025)

# method: (search overrides, select flags, label)
METHODS = {
    "darts": ({}, {"selector": "magnitude"}, "DARTS"),
    "darts_pt": ({}, SELECT_PT, "DARTS+PT"),
    "darts_pt_mag": ({}, dict(SELECT_PT, selector="pt_mag"), "DARTS+PT-Mag"),
    "fixalpha_pt": ({"arch_update": "frozen"}, SELECT_PT, "DARTS+PT (fix alpha)"),
    "sdarts_rs": ({"perturbation": "random", "epsilon": 0.3}, {"selector": "magnitude"},
                  "SDARTS-RS"),
    "sdarts_rs_pt": ({"perturbation": "random", "epsilon": 0.3}, SELECT_PT, "SDARTS-RS+PT"),
    "sgas": ({"arch_update": "sgas", "space": "darts_none", "sgas_criterion": 1,
              "sgas_warmup": 9, "sgas_freq": 5}, {"selector": "magnitude"}, "SGAS (Crit.1)"),
    "sgas_pt": ({"arch_update": "sgas", "space": "darts_none", "sgas_criterion": 1,
                 "sgas_warmup": 9, "sgas_freq": 5, "sgas_op": "pt"}, {"selector": "magnitude"},
                "SGAS+PT (Crit.1)"),
}

TABLE2 = {"darts": "3.00 +- 0.14", "darts_pt": "2.61 +- 0.08", "darts_pt_mag": "2.85",
          "sdarts_rs": "2.67 +- 0.03", "sdarts_rs_pt": "2.54 +- 0.10",
          "sgas": "2.66 +- 0.24", "sgas_pt": "2.56 +- 0.10"}
TABLE3 = {  # (dataset, space): DARTS, DARTS+PT, fix-alpha
    ("cifar10", "s1"): (3.84, 3.50, 2.86), ("cifar10", "s2"): (4.85, 2.79, 2.59),
    ("cifar10", "s3"): (3.34, 2.49, 2.52), ("cifar10", "s4"): (7.20, 2.64, 2.58),
    ("cifar100", "s1"): (29.46, 24.48, 24.40), ("cifar100", "s2"): (26.05, 23.16, 23.30),
    ("cifar100", "s3"): (28.90, 22.03, 21.94), ("cifar100", "s4"): (22.85, 20.80, 20.66),
    ("svhn", "s1"): (4.58, 2.62, 2.39), ("svhn", "s2"): (3.53, 2.53, 2.32),
    ("svhn", "s3"): (3.41, 2.42, 2.32), ("svhn", "s4"): (3.05, 2.42, 2.39)}
IMAGENET16 = "npz:data/imagenet16_120.npz"  # see the header of the fig4 imagenet16 files


def _flags(d):
    return [f"--{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in d.items()]


def write(name, experiment, method, label, metric, paper, search, select, notes=()):
    path = os.path.join(OUT, name + ".cfg")
    wd = f"runs/{name}_s{search['seed']}"
    nb201 = search.get("space") == "nb201"
    lines = [
        f"# {label}: {experiment_title(experiment)}",
        f"# paper: {paper}" + ("" if paper == "-" else f" ({metric})"),
        "#",
        f"#   tfnas search --flagfile=configs/paper/{name}.cfg --workdir={wd}",
        f"#   tfnas select --flagfile=configs/paper/{name}.cfg --workdir={wd}",
    ]
    if nb201:
        lines.append("#   add --benchmark_table=PATH (a NAS-Bench-201 CSV or official file) to "
                     "search to log the queried accuracy each epoch")
    else:
        train_cfg = "train_cifar10.cfg" if search["dataset"] == "cifar10" and \
            search.get("space", "darts") in ("darts", "darts_none") else "train_small_s1s4.cfg"
        lines.append(f"#   tfnas train --genotype={wd}/genotype.json "
                     f"--flagfile=configs/{train_cfg} --dataset={search['dataset']} "
                     f"--workdir={wd}")
    lines.append(f"#   or all seeds: python tools/reproduce.py {experiment} --seeds=0,1,2,3")
    lines += [f"# {n}" for n in notes]
    lines += ["#", f"# experiment: {experiment}", f"# method: {method}", f"# label: {label}",
              f"# metric: {metric}", "#", "# search"]
    lines += _flags(search)
    lines += ["# select"] + _flags(select)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


TITLES = {
    "table2": "Table 2, DARTS space on CIFAR-10",
    "table3": "Table 3, spaces S1-S4 (RobustDARTS)",
    "table4": "Table 4, fixed alpha on more spaces (CIFAR-10)",
    "fig4": "Figure 4, NAS-Bench-201 trajectories",
    "fig9": "Figure 9, number of tuning epochs between decisions (NAS-Bench-201, CIFAR-10)",
}


def experiment_title(experiment):
    return TITLES[experiment.split("_")[0]]


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".cfg"):
            os.unlink(os.path.join(OUT, f))
    written = []
    for m, paper in TABLE2.items():
        s_over, sel, label = METHODS[m]
        search = {**SEARCH, "dataset": "cifar10", "space": "darts", **s_over}
        notes = []
        if m.startswith("sgas"):
            notes = ["SGAS decides 8 edges at epochs 10, 15, ..., 45 (warm-up 9, every 5);",
                     "not reproduced: its batch size growth (+8 per decision) and search "
                     "drop-path 0.3"]
        written.append(write(f"table2_{m}", "table2", m, label, "CIFAR-10 test error %",
                             paper, search, sel, notes))
    for (ds, sp), nums in TABLE3.items():
        for m, num in zip(("darts", "darts_pt", "fixalpha_pt"), nums):
            s_over, sel, label = METHODS[m]
            search = {**SEARCH, "dataset": ds, "space": sp, **s_over}
            written.append(write(f"table3_{sp}_{ds}_{m}", f"table3_{sp}_{ds}", m, label,
                                 f"{ds} test error %", str(num), search, sel))
    for m, num in (("darts", "3.00"), ("darts_pt", "2.61"), ("fixalpha_pt", "2.87")):
        s_over, sel, label = METHODS[m]
        written.append(write(f"table4_darts_{m}", "table4_darts", m, label,
                             "CIFAR-10 test error %", num,
                             {**SEARCH, "dataset": "cifar10", "space": "darts", **s_over}, sel))
    for m, num in (("darts", "45.7"), ("darts_pt", "11.89"), ("fixalpha_pt", "6.20")):
        s_over, sel, label = METHODS[m]
        written.append(write(f"table4_nb201_{m}", "table4_nb201", m, label,
                             "NB201 CIFAR-10 test error %", num,
                             {**NB201, "dataset": "cifar10", **s_over}, sel))
    for ds in ("cifar10", "cifar100", "imagenet16"):
        dataset = IMAGENET16 if ds == "imagenet16" else ds
        notes = ["the paper plots test accuracy against search epochs (no table); select "
                 "on snapshots (search --epochs=N) to redraw it"]
        if ds == "imagenet16":
            notes.append("ImageNet16-120 is not in tensorflow-datasets: write an npz with "
                         "x_train/y_train/x_test/y_test (uint8 16x16x3, 120 classes) there")
        for m in ("darts", "darts_pt", "fixalpha_pt"):
            s_over, sel, label = METHODS[m]
            written.append(write(f"fig4_nb201_{ds}_{m}", f"fig4_{ds}", m, label,
                                 f"NB201 {ds} test accuracy %", "-",
                                 {**NB201, "dataset": dataset, **s_over}, sel, notes))
    for k in (1, 2, 3, 5, 10):
        sel = dict(SELECT_PT, tune_epochs_per_decision=k)
        written.append(write(f"fig9_nb201_tune{k}", "fig9", f"darts_pt_tune{k}",
                             f"DARTS+PT, {k} tuning epochs", "NB201 CIFAR-10 test accuracy %",
                             "-", dict(NB201, dataset="cifar10"), sel,
                             ["the paper: gains beyond 5 tuning epochs are marginal"]))
    print(f"wrote {len(written)} configs to {OUT}")


if __name__ == "__main__":
    main()
