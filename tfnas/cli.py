"""The `tfnas` command: one entry point, one subcommand per stage.

Flags are derived from the config dataclasses (one declaration per hyperparameter) and
parsed with absl's argparse_flags, so `--flagfile=configs/x.cfg` works after the subcommand:

    tfnas search --flagfile=configs/quickstart.cfg --workdir=runs/quickstart
"""

import argparse
import dataclasses
import logging
import os
import sys

from absl import flags as absl_flags
from absl.flags import argparse_flags

from tfnas.distribute import is_lost_peer, lost_peer_message  # noqa: F401 (API)
from tfnas.errors import TfnasError, UsageError
from tfnas.flagfiles import FLAG_LINE as _FLAG_LINE
from tfnas.flagfiles import expand_flagfiles  # noqa: F401 (part of the CLI's API)
from tfnas.interrupt import STOP, Interrupted
from tfnas.io import check_folder
from tfnas.runlock import chief_lock, workdir_lock

EXIT_USAGE, EXIT_RUNTIME = 2, 1


class _Parser(argparse_flags.ArgumentParser):
    """Usage errors as one line and exit code 2 (no usage dump)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --epoch is not --epochs
        kwargs.setdefault("inherited_absl_flags", None)  # absl's own flags stay out of help
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        """--flagfile=F anywhere (as absl reads it; absl's own flags are not inherited)."""
        if args is not None:
            args = expand_flagfiles(list(args))
        return super().parse_known_args(args, namespace)

    def error(self, message):
        if message.startswith("ambiguous option"):  # absl's own flags make a huge list
            message = message.split(" could match")[0] + " (no such flag)"
        if len(message) > 240:
            message = message[:237] + "..."
        raise UsageError(f"{message} (see {self.prog} --help)")


def _bool(text):
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


_bool.__name__ = "boolean"


def add_config_flags(parser, config_cls):
    """One flag per dataclass field: type from the default, help from the metadata."""
    for f in dataclasses.fields(config_cls):
        # argparse %-formats help text: a literal % must be doubled
        kw = {"default": f.default, "help": (f.metadata.get("help", "") +
                                             f" (default: {f.default!r})").replace("%", "%%")}
        if isinstance(f.default, bool):
            kw.update(type=_bool, nargs="?", const=True)
        else:
            kw["type"] = type(f.default)
        if f.metadata.get("choices"):
            kw["choices"] = f.metadata["choices"]
        parser.add_argument(f"--{f.name}", **kw)
        if isinstance(f.default, bool):  # absl's --noNAME, as in flagfiles
            parser.add_argument(f"--no{f.name}", dest=f.name, action="store_false",
                                help=argparse.SUPPRESS)


def _config_from_args(args, config_cls):
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})


def _add_run_flags(p):
    p.add_argument("--workdir", required=True, help="the run directory (created or resumed)")
    p.add_argument("--overwrite", type=_bool, nargs="?", const=True, default=False,
                   help="discard what the workdir holds and start again")
    _add_strategy_flags(p)


def _add_strategy_flags(p, choices=("default", "mirrored", "multi_worker")):
    p.add_argument("--strategy", default="default", choices=choices,
                   help="tf.distribute strategy" + ("; multi_worker reads TF_CONFIG"
                                                    if "multi_worker" in choices else
                                                    " (one machine: its GPUs or --cpu_devices)"))
    p.add_argument("--cpu_devices", type=int, default=0,
                   help="split the CPU into N logical devices (to run 'mirrored' on a CPU)")


def build_parser():
    parser = _Parser(prog="tfnas", description="Differentiable NAS with perturbation-based "
                                              "architecture selection (DARTS-PT).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    from tfnas.cli_analyze import add_parser as add_analyze
    for add in (_add_search, _add_select, _add_report, _add_train):
        add(sub)
    add_analyze(sub, _bool, _add_strategy_flags)
    for add in (_add_query, _add_listing, _add_import):
        add(sub)
    from tfnas.cli_deploy import add_parsers
    add_parsers(sub, _bool)
    return parser


def _add_search(sub):
    from tfnas.config import SearchConfig
    search = sub.add_parser("search", help="train a weight-sharing supernet",
                            description="Train a supernet (DARTS first/second order or fixed "
                                        "alpha) and write the run directory.")
    _add_run_flags(search)
    add_config_flags(search, SearchConfig)
    search.set_defaults(handler=cmd_search)


def _add_select(sub):
    from tfnas.selection.pt import SelectConfig
    select = sub.add_parser("select", help="select an architecture from a trained supernet",
                            description="Perturbation-based selection (PT), PT-Mag or "
                                        "magnitude on a finished `tfnas search` workdir; "
                                        "writes WORKDIR/genotype.json. Re-running resumes.")
    select.add_argument("--workdir", required=True, help="a finished search run directory")
    select.add_argument("--overwrite", type=_bool, nargs="?", const=True, default=False,
                        help="start the selection again")
    _add_strategy_flags(select, ("default", "mirrored"))
    add_config_flags(select, SelectConfig)
    select.set_defaults(handler=cmd_select)


def _add_report(sub):
    report = sub.add_parser("report", help="plot cells, alpha vs PT scores, selection",
                            description="Write WORKDIR/report/*.png.")
    report.add_argument("--workdir", required=True, help="a search (and selection) run "
                                                         "directory")
    report.set_defaults(handler=cmd_report)


def _add_train(sub):
    from tfnas.config import TrainConfig
    train = sub.add_parser("train", help="retrain a genotype from scratch",
                           description="Retrain a genotype (model.fit on one machine, "
                                       "tfnas's own loop under multi_worker); re-running "
                                       "resumes.")
    train.add_argument("--genotype", required=True, help="genotype JSON path or zoo name")
    train.add_argument("--workdir", required=True, help="run directory (writes WORKDIR/train)")
    _add_strategy_flags(train)
    train.add_argument("--loop", default="auto", choices=("auto", "fit", "custom"),
                       help="auto: Keras's model.fit on one machine, tfnas's own loop (exact "
                            "resume, per-worker input) under multi_worker, where fit cannot "
                            "run")
    add_config_flags(train, TrainConfig)
    train.set_defaults(handler=cmd_train)


def _add_query(sub):
    query = sub.add_parser("query", help="look up a NAS-Bench-201 architecture",
                           description="Print the benchmark's accuracies (CIFAR-10, CIFAR-100, "
                                       "ImageNet16-120) and index of an NB201 architecture.")
    what = query.add_mutually_exclusive_group(required=True)
    what.add_argument("--genotype", help="an nb201 genotype JSON (e.g. WORKDIR/genotype.json)")
    what.add_argument("--arch_str", help="|op~0|+|op~0|op~1|+|op~0|op~1|op~2|")
    query.add_argument("--benchmark", default="nb201", choices=("nb201",))
    query.add_argument("--table", required=True,
                       help="CSV table (index,arch_str,<metrics>) or official benchmark file")
    query.add_argument("--json", type=_bool, nargs="?", const=True, default=False,
                       help="print one JSON object instead of a table")
    query.set_defaults(handler=cmd_query)


def _add_listing(sub):
    listing = sub.add_parser("list", help="list the shipped genotypes or flagfiles",
                             description="zoo: genotype names for --genotype; configs: "
                                         "flagfile names for --flagfile (from any folder).")
    listing.add_argument("what", choices=("zoo", "configs"))
    listing.set_defaults(handler=cmd_list)


def _add_import(sub):
    from tfnas.config import SearchConfig
    imp = sub.add_parser("import", help="turn another code's search checkpoint into a run",
                         description="Import a search checkpoint of the authors' PyTorch "
                                     "DARTS-PT code (train_search.py's checkpoint_N.pth.tar) "
                                     "as a tfnas run directory that `tfnas select`, "
                                     "`analyze` and `report` take. No PyTorch needed. The "
                                     "space, channels and cells come from the checkpoint; "
                                     "--dataset names the data PT scores on.")
    imp.add_argument("checkpoint", help="the PyTorch checkpoint file")
    imp.add_argument("--from", dest="source", default="darts-pt", choices=("darts-pt",),
                     help="the code that wrote it (default: darts-pt)")
    _add_run_flags(imp)
    add_config_flags(imp, SearchConfig)
    imp.set_defaults(handler=cmd_import)


def cmd_import(args):
    from tfnas.config import SearchConfig
    from tfnas.interop.importer import import_darts_pt
    config = _config_from_args(args, SearchConfig)
    check_folder(args.workdir, "--workdir")
    with workdir_lock(args.workdir, "import"):
        import_darts_pt(args.checkpoint, args.workdir, config, args.overwrite)
    print(f"magnitude genotype: {os.path.join(args.workdir, 'genotype_magnitude.json')}")
    return 0


def cmd_list(args):
    from tfnas.resources import find_resource, list_resources
    for name in list_resources(args.what):
        with open(find_resource(args.what, name)) as f:
            head = f.readline().strip() if args.what == "configs" else ""
        first = head.lstrip("# ") if head.startswith("#") else ""
        print(f"{name:44s} {first}".rstrip())
    return 0


def cmd_select(args):
    from tfnas.distribute import make_strategy
    from tfnas.selection.pt import SelectConfig
    from tfnas.selection.run import run_select
    check_folder(args.workdir, "--workdir", must_exist=True)
    strategy, _ = make_strategy(args.strategy, args.cpu_devices)  # before devices initialise
    config = _config_from_args(args, SelectConfig).validate()
    with workdir_lock(args.workdir, "select"):
        genotype = run_select(args.workdir, config, args.overwrite, strategy)
    print(f"genotype: {os.path.join(args.workdir, 'genotype.json')}")
    if "budget" in genotype.meta:
        b = genotype.meta["budget"]
        print(f"budget: {b['kind']} {b['cost']:g} of at most {b['limit']:g} "
              f"({100 * b['cost'] / b['limit']:.1f}%) for the final network at "
              f"{b['network']['channels']} channels, {b['network']['layers']} layers")
    return 0


def cmd_query(args):
    import json

    from tfnas.benchmarks import Benchmark, format_result
    from tfnas.genotype import Genotype
    arch = args.arch_str
    if args.genotype:
        arch = Genotype.load(args.genotype).to_nb201_string()
    row = Benchmark(args.table).query(arch)
    print(json.dumps({"arch_str": arch, **row}) if args.json else format_result(arch, row))
    return 0


def cmd_report(args):
    from tfnas.report import write_report
    check_folder(args.workdir, "--workdir", must_exist=True)
    for path in write_report(args.workdir):
        print(path)
    return 0


def cmd_train(args):
    from tfnas.config import TrainConfig
    from tfnas.distribute import make_strategy
    from tfnas.genotype import Genotype
    from tfnas.train import choose_loop, run_train
    choose_loop(args.loop, args.strategy == "multi_worker")  # before any cluster is joined
    config = _config_from_args(args, TrainConfig).validate()
    genotype = Genotype.load(args.genotype)
    strategy, is_chief = make_strategy(args.strategy, args.cpu_devices)
    check_folder(args.workdir, "--workdir")
    with chief_lock(is_chief, args.workdir, "train"):
        run_train(config, genotype, args.workdir, strategy, is_chief=is_chief, loop=args.loop)
    if is_chief:
        print(f"trained model: {os.path.join(args.workdir, 'train', 'model.keras')}")
    return 0


def cmd_search(args):
    from tfnas.config import SearchConfig
    from tfnas.distribute import make_strategy
    from tfnas.search import run_search
    config = _config_from_args(args, SearchConfig).validate()
    strategy, is_chief = make_strategy(args.strategy, args.cpu_devices)
    check_folder(args.workdir, "--workdir")
    with chief_lock(is_chief, args.workdir, "search"):
        genotype = run_search(config, args.workdir, args.overwrite, strategy, is_chief)
    if is_chief:
        print(f"magnitude genotype: {os.path.join(args.workdir, 'genotype_magnitude.json')}")
    print(f"final alphas digest: {genotype.meta['alphas_digest']}", flush=True)
    return 0


def _polls_for_stop(args):
    """Commands with step loops that poll `STOP` (tfnas.interrupt): search, select, train
    and analyze strength. Export, report, profile and the rest have no step boundary to
    stop at, so SIGTERM keeps ending them at once (their writes are atomic)."""
    return args.command in ("search", "select", "train") or (
        args.command == "analyze" and args.kind == "strength")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        for arg in argv:
            if arg.startswith("--") and arg != "--" and not _FLAG_LINE.fullmatch(arg):
                shown = arg if len(arg) <= 60 else arg[:57] + "..."
                raise UsageError(f"{shown!r} is not a flag (expected --name=value or --name)")
        from tfnas.extensions import load_extensions
        load_extensions()  # $TFNAS_EXTENSIONS and `tfnas.extensions` entry points
        args = build_parser().parse_args(expand_flagfiles(list(argv)))
        if os.environ.get("TFNAS_TRACEBACK"):  # the whole traceback, Keras frames included
            import keras
            keras.config.disable_traceback_filtering()
        if _polls_for_stop(args):  # the others keep Python's default: SIGTERM ends them
            STOP.install()  # SIGTERM / SIGINT: save at the next step boundary
        return args.handler(args)
    except Interrupted as e:
        print(f"tfnas: {e}", file=sys.stderr)
        return e.exit_code
    except TfnasError as e:
        print(f"tfnas: error: {e}", file=sys.stderr)
        return e.exit_code
    except absl_flags.Error as e:  # e.g. a missing --flagfile
        print(f"tfnas: error: {str(e).replace('ERROR:: ', '')}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tfnas: interrupted; rerun the same command to resume from the last checkpoint",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tfnas list configs | head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as e:  # a disk that filled up or went read-only while running
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"tfnas: error: {e.strerror or e}{where}; what was written before is intact: "
              f"fix the cause and rerun the same command to resume", file=sys.stderr)
        return EXIT_RUNTIME
    except MemoryError:
        print("tfnas: error: out of memory; lower --batch_size, --channels or --layers",
              file=sys.stderr)
        return EXIT_RUNTIME
    except Exception as e:  # noqa: BLE001 (one line unless asked for the traceback)
        if is_lost_peer(e):
            print(f"tfnas: error: {lost_peer_message(e)}", file=sys.stderr)
            return EXIT_RUNTIME
        if type(e).__name__ == "ResourceExhaustedError":  # device (GPU) memory
            print("tfnas: error: out of device memory (ResourceExhaustedError); lower "
                  "--batch_size, --channels or --layers, then rerun the same command to resume",
                  file=sys.stderr)
            return EXIT_RUNTIME
        if os.environ.get("TFNAS_TRACEBACK"):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"tfnas: internal error: {type(e).__name__}: {first} (rerun with "
              f"TFNAS_TRACEBACK=1 for the traceback and report it)", file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        STOP.uninstall()


def _quiet_tensorflow_import():
    """Imports TensorFlow and looks for GPUs with fd 2 sent to a temporary file: TF's C++
    start-up banner (written before any log setting applies) is dropped, and so is the
    `failed call to cuInit` error that the GPU-capable wheel logs on a machine without an
    NVIDIA driver. Anything logged is shown if the import fails, or if the machine has an
    NVIDIA device (then a GPU problem must be seen)."""
    import tempfile
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        show = False
        try:
            import tensorflow
            tensorflow.config.list_physical_devices("GPU")  # initialises CUDA (or fails)
            show = os.path.exists("/dev/nvidiactl")
        except BaseException:
            show = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if show:
                tmp.seek(0)
                sys.stderr.write(tmp.read().decode(errors="replace"))
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def console_main():
    _quiet_tensorflow_import()
    sys.exit(main())


if __name__ == "__main__":
    console_main()
