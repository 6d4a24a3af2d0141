"""`tfnas export` and `tfnas profile`: the deployment commands of the `tfnas` CLI."""

import os
import sys

from tfnas.errors import UsageError


def add_parsers(sub, boolean):
    export = sub.add_parser(
        "export", help="export a network to .keras, SavedModel, ONNX, TFLite (+ int8)",
        description="Export built-in-layer graphs (BN folded) and check parity against the "
                    "tfnas model (max abs diff <= 1e-4 for float formats).")
    export.add_argument("--genotype", required=True, help="genotype JSON path or zoo name")
    export.add_argument("--weights", default="", help="a trained model.keras (default: an "
                                                      "initialised model)")
    export.add_argument("--out", required=True,
                        help="output folder (created; an earlier export there is replaced "
                             "only with --overwrite, anything else never)")
    export.add_argument("--overwrite", type=boolean, nargs="?", const=True, default=False,
                        help="replace an earlier tfnas export at --out")
    export.add_argument("--formats", default="keras,savedmodel,onnx",
                        help="comma list of keras, savedmodel, onnx, tflite")
    export.add_argument("--int8", type=boolean, nargs="?", const=True, default=False,
                        help="also write int8 ONNX / TFLite (static, calibrated on --data)")
    export.add_argument("--int8_target", default="auto",
                        choices=("auto", "vnni", "avx2", "arm"),
                        help="the CPU the int8 artefacts are for: auto (this machine), vnni "
                             "(x86 with AVX512_VNNI / AVX_VNNI), avx2 (x86 without VNNI: "
                             "7-bit ONNX weights, so 16-bit sums cannot saturate) or arm")
    export.add_argument("--data", default="", help="dataset for int8 calibration and top-1 "
                        "(same names as training: digits, cifar10, folder:PATH, npz:PATH)")
    export.add_argument("--data_dir", default="", help="tfds data_dir for --data")
    export.add_argument("--calibration_images", type=int, default=256,
                        help="training images that calibrate int8")
    export.add_argument("--eval_images", type=int, default=0,
                        help="test images for top-1 (0: the whole test split)")
    export.add_argument("--profile", type=boolean, nargs="?", const=True, default=False,
                        help="then measure size and latency (as `tfnas profile`, with the "
                             "flags below)")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset")
    export.add_argument("--channels", type=int, default=36,
                        help="C of the first cell, without --weights")
    export.add_argument("--layers", type=int, default=20,
                        help="cells (cells per stage for nb201), without --weights")
    export.add_argument("--num_classes", type=int, default=10,
                        help="classifier width, without --weights")
    export.add_argument("--input_shape", default="32,32,3",
                        help="H,W,C of the input, without --weights")
    export.add_argument("--form", default="", help="cifar | imagenet | nb201 (default: from "
                                                   "the genotype)")
    _profile_flags(export, boolean)
    export.set_defaults(handler=cmd_export)

    profile = sub.add_parser(
        "profile", help="params, MACs, size and latency of an export folder",
        description="Time each artefact of a `tfnas export` folder with its own runtime "
                    "after warm-up; write FOLDER/profile.json and print a table.")
    profile.add_argument("--dir", required=True, help="a `tfnas export` --out folder")
    _profile_flags(profile, boolean)
    profile.set_defaults(handler=cmd_profile)


def _profile_flags(p, boolean):
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of each runtime")
    p.add_argument("--batch_sizes", default="1,32", help="comma list of batch sizes")
    p.add_argument("--runs", type=int, default=30, help="timed runs per batch size")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs before timing")
    p.add_argument("--all_runtimes", type=boolean, nargs="?", const=True, default=False,
                   help="also time .keras and SavedModel (TensorFlow)")


def _ints(text, flag):
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--{flag}={text!r} is invalid: expected a comma list of integers") \
            from None


def cmd_profile(args):
    from tfnas.profile import format_table, profile_export
    report = profile_export(args.dir, args.threads, _ints(args.batch_sizes, "batch_sizes"),
                            args.runs, args.warmup, args.all_runtimes)
    print(format_table(report))
    print(f"wrote {os.path.join(args.dir, 'profile.json')}")
    return 0


def _check_export_args(args):
    from tfnas.export import check_export_out, check_formats
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    check_formats(formats, args.int8)
    for name in ("opset", "channels", "layers", "num_classes"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name}={getattr(args, name)} is invalid: expected a "
                             f"positive integer")
    if args.calibration_images < 0 or args.eval_images < 0:
        raise UsageError("--calibration_images and --eval_images must be >= 0")
    if args.int8 and not (args.data and args.calibration_images):
        raise UsageError("--int8 needs calibration images: pass --data (and "
                         "--calibration_images > 0)")
    if args.profile:
        _ints(args.batch_sizes, "batch_sizes")
    if args.data:  # an unknown dataset name fails before the model is built
        from tfnas.data import DATASETS, dataset_kind
        DATASETS.get(dataset_kind(args.data))
    check_export_out(args.out, args.overwrite)  # before any work
    try:
        shape = tuple(int(v) for v in args.input_shape.split(","))
        assert len(shape) == 3 and min(shape) > 0
    except (ValueError, AssertionError):
        raise UsageError(f"--input_shape={args.input_shape!r} is invalid: expected H,W,C") \
            from None
    return formats, shape


def _load_model(args, genotype, shape):
    from tfnas.models import build_model
    if not args.weights:
        print("no --weights: exporting an initialised model (for latency and format checks)")
        return build_model(genotype, args.num_classes, shape, args.channels, args.layers,
                           form=args.form or None)
    import keras
    if not os.path.isfile(args.weights):
        raise UsageError(f"--weights={args.weights}: no such file")
    try:  # compile=False: the training optimizer (ReferenceSGD) is not needed to export
        return keras.models.load_model(args.weights, compile=False)
    except Exception as e:
        raise UsageError(f"--weights={args.weights} is not a loadable .keras model "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e


def _export_data(args, model, form):
    """(calibration images, (test images, labels), meta) from --data, normalised like
    training; (None, None, {}) without --data."""
    if not args.data:
        return None, None, {}
    import numpy as np

    from tfnas.data import Pipeline, load_dataset
    from tfnas.train import IMAGENET_STATS
    data = load_dataset(args.data, args.data_dir)
    shape = tuple(model.input_shape[1:])
    if data.input_shape != shape:
        raise UsageError(f"--data={args.data} has {data.input_shape} images but the model "
                         f"takes {shape}")
    if form == "imagenet":
        data.mean, data.std = IMAGENET_STATS
    pipe = Pipeline(data, 256, 0, style="imagenet" if form == "imagenet" else "cifar")

    def arrays(x, y):
        xs, ys = zip(*[(a.numpy(), b.numpy()) for a, b in pipe.evaluation(x, y)])
        return np.concatenate(xs), np.concatenate(ys)

    n = args.calibration_images
    calib = arrays(data.x_train[:n], data.y_train[:n])[0] if n else None
    m = args.eval_images or len(data.x_test)
    evaluation = arrays(data.x_test[:m], data.y_test[:m]) if len(data.x_test) else None
    meta = {"data": args.data, "normalisation": {"mean": list(data.mean),
                                                 "std": list(data.std), "scale": "x/255"}}
    return calib, evaluation, meta


def cmd_export(args):
    from tfnas.export import check_export_out, export_model
    from tfnas.genotype import Genotype
    formats, shape = _check_export_args(args)
    genotype = Genotype.load(args.genotype)
    model = _load_model(args, genotype, shape)
    form = args.form or genotype.space_obj.default_form
    if any(type(layer).__name__ == "ImageNetStem" for layer in model.layers):
        form = "imagenet"
    calib, evaluation, meta = _export_data(args, model, form)
    from tfnas.runlock import export_lock
    with export_lock(args.out):
        check_export_out(args.out, args.overwrite)  # again: another export may have finished
        report = export_model(model, args.out, formats, args.opset,
                              initialised=not args.weights, overwrite=args.overwrite,
                              int8=args.int8, calibration=calib, evaluation=evaluation,
                              int8_target=args.int8_target,
                              meta=meta)
    print(f"exported to {args.out}: {', '.join(report['max_abs_diff'])}; parameters "
          f"{report['params']:,} (deployed: no auxiliary head, BN folded); "
          f"multiply-adds {report['macs'] / 1e6:.1f} M per image; max abs diff "
          + ", ".join(f"{k} {v:.1e}" for k, v in report["max_abs_diff"].items()))
    if report["top1"]:
        print("top-1 on " + f"{report['evaluated_images']} test images: " + ", ".join(
            f"{k} {v:.4f}" for k, v in report["top1"].items()))
    if "int8" in report:
        q = report["int8"]
        print(f"int8 for {q['target']} CPUs (ONNX reduce_range="
              f"{q['settings']['onnx']['reduce_range']}), measured on: "
              f"{report['cpu']['model']} ({q['measured_on']})")
    for line in report["warnings"]:
        print(f"tfnas: warning: {line}", file=sys.stderr)
    if args.profile:
        args.dir = args.out
        return cmd_profile(args)
    return 0
