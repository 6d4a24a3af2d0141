"""The `tfnas analyze` subcommand: the paper's diagnostics on a finished search."""

import os

from tfnas.errors import UsageError
from tfnas.io import check_folder
from tfnas.runlock import workdir_lock


def add_parser(sub, boolean, add_strategy_flags):
    """`tfnas analyze` (`boolean` and `add_strategy_flags`: the CLI's flag helpers)."""
    analyze = sub.add_parser(
        "analyze", help="the paper's diagnostics: strength | shuffle | skip_gap",
        description="strength: alpha vs PT score vs discretisation accuracy at convergence "
                    "per op (Figures 1, 7); shuffle: accuracy after swapping edges/layers "
                    "(Table 1); skip_gap: softmax(skip) - softmax(other) vs accuracy over the "
                    "search (Figure 3). Writes WORKDIR/analysis/KIND.{json,png}.")
    analyze.add_argument("kind", choices=("strength", "shuffle", "skip_gap"))
    analyze.add_argument("--workdir", required=True, help="a finished search run directory")
    add_strategy_flags(analyze, ("default", "mirrored"))
    analyze.add_argument("--edges", default="", help="strength: CELL:INDEX,... e.g. normal:3")
    analyze.add_argument("--random_edges", type=int, default=0,
                         help="strength: K random edges (from --seed) instead of --edges")
    analyze.add_argument("--ops", default="", help="strength: only these ops of each edge")
    analyze.add_argument("--proxies", default="",
                         help="strength: also these zero-cost proxies as criteria, e.g. "
                              "nwot,snip (tfnas.derive.proxies)")
    analyze.add_argument("--max_epochs", type=int, default=10,
                         help="strength: most fine-tuning epochs per op")
    analyze.add_argument("--patience", type=int, default=2,
                         help="strength: stop after N epochs without a better valid acc")
    analyze.add_argument("--tune_lr", type=float, default=0.0025,
                         help="strength: constant weight lr while fine-tuning (as select)")
    analyze.add_argument("--score_batches", type=int, default=0,
                         help="strength: PT score on the first N alpha batches (0: all)")
    analyze.add_argument("--trials", type=int, default=5, help="shuffle: random swaps")
    analyze.add_argument("--baselines", type=boolean, nargs="?", const=True, default=False,
                         help="shuffle: also train and shuffle a small ResNet and VGG")
    analyze.add_argument("--baseline_epochs", type=int, default=5,
                         help="shuffle: training epochs of each baseline network")
    analyze.add_argument("--cell", default="", help="skip_gap: cell type (default: the "
                                                    "first, normal or NB201's cell)")
    analyze.add_argument("--versus", default="",
                         help="skip_gap: op compared with skip (default: the strongest "
                              "other op; sep_conv_3x3 on S2)")
    analyze.add_argument("--seed", type=int, default=0,
                         help="seed of random edges, swaps and baselines")
    analyze.set_defaults(handler=cmd_analyze)


def cmd_analyze(args):
    from tfnas.distribute import make_strategy
    check_folder(args.workdir, "--workdir", must_exist=True)
    strategy, _ = make_strategy(args.strategy, args.cpu_devices)  # before devices initialise
    from tfnas import analyze
    for name in ("max_epochs", "trials", "baseline_epochs"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name}={getattr(args, name)} is invalid: expected a "
                             f"positive integer")
    for name in ("patience", "random_edges", "score_batches"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name}={getattr(args, name)} is invalid: expected 0 or more")
    from tfnas.config import check_seed
    check_seed(args.seed)
    with workdir_lock(args.workdir, f"analyze {args.kind}"):
        _run_analysis(analyze, args, strategy)
    folder = os.path.join(args.workdir, "analysis")
    print(f"results: {os.path.join(folder, args.kind + '.json')}, "
          f"{os.path.join(folder, args.kind + '.png')}")
    return 0


def _run_analysis(analyze, args, strategy):
    if args.kind == "strength":
        analyze.run_strength(args.workdir, args.edges, args.random_edges, args.max_epochs,
                             args.patience, args.tune_lr, args.ops, args.score_batches,
                             args.seed, strategy=strategy, proxies=args.proxies)
    elif args.kind == "shuffle":
        analyze.run_shuffle(args.workdir, args.trials, args.seed, args.baselines,
                            args.baseline_epochs, strategy=strategy)
    else:
        analyze.run_skip_gap(args.workdir, args.cell, args.versus)


