"""Measured cost of an export: parameters, multiply-adds, size on disk and latency.

    report = profile_export("exported/darts_v2", threads=2, batch_sizes=(1, 32))

Latency is timed with each artefact's own runtime (onnxruntime, TFLite; `.keras` and
SavedModel through TensorFlow with `--all_runtimes`) after warm-up runs; the median and the
90th percentile of the timed runs are reported per batch size, with the thread count.
"""

import os
import platform
import time

import numpy as np

from tfnas.artifacts import ARTEFACTS, artefact_label, load_runner
from tfnas.cpuinfo import cpu_info, runtime_settings
from tfnas.errors import UsageError
from tfnas.io import MARKER, atomic_write_json

LATENCY_FORMATS = ("onnx", "tflite")


def disk_size(path):
    """Bytes of a file, or of every file under a folder."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def time_runner(run, x, runs=30, warmup=5):
    """Milliseconds per call of `run(x)`: {median, p90, runs}, after `warmup` untimed calls."""
    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "runs": int(runs)}


def model_cost(keras_path):
    """(parameters, multiply-adds of one image) of an exported `.keras` model."""
    import keras

    from tfnas.cost import count_macs, count_params
    model = keras.models.load_model(keras_path)
    return count_params(model), count_macs(model)


def profile_export(folder, threads=2, batch_sizes=(1, 32), runs=30, warmup=5,
                   all_runtimes=False, log=print):
    """Measures every artefact of a `tfnas export` folder and writes FOLDER/profile.json.

    Raises:
        UsageError: `folder` is not a tfnas export, or a bad batch size / run count.
    """
    if not os.path.isfile(os.path.join(folder, MARKER)):
        raise UsageError(f"--dir={folder} is not a tfnas export folder (no {MARKER} marker)")
    if not batch_sizes or min(batch_sizes) < 1 or runs < 1 or warmup < 0 or threads < 0:
        raise UsageError("--batch_sizes must be positive integers, --runs >= 1, --warmup >= 0, "
                         "--threads >= 0")
    present = [n for n in ARTEFACTS if os.path.exists(os.path.join(folder, n))]
    report = {"threads": int(threads), "batch_sizes": [int(b) for b in batch_sizes],
              "machine": {"processor": platform.processor() or platform.machine(),
                          "cpus": os.cpu_count()},
              "cpu": cpu_info(), "runtime_settings": runtime_settings(),
              "size_bytes": {artefact_label(n): disk_size(os.path.join(folder, n))
                             for n in present},
              "latency": {}}
    if "model.keras" in present:
        report["params"], report["macs"] = model_cost(os.path.join(folder, "model.keras"))
    shape = _input_shape(folder)
    for name in present:
        if ARTEFACTS[name][0] not in LATENCY_FORMATS and not all_runtimes:
            continue
        run = load_runner(os.path.join(folder, name), threads=threads)
        label = artefact_label(name)
        report["latency"][label] = {}
        for b in batch_sizes:
            x = np.random.default_rng(0).normal(size=(b,) + shape).astype(np.float32)
            report["latency"][label][str(b)] = time_runner(run, x, runs, warmup)
            log(f"  {label:<12} batch {b:>4}: median "
                f"{report['latency'][label][str(b)]['median_ms']:.2f} ms")
    atomic_write_json(os.path.join(folder, "profile.json"), report)
    return report


def _input_shape(folder):
    import json
    path = os.path.join(folder, "parity.json")
    try:
        with open(path) as f:
            return tuple(int(d) for d in json.load(f)["input_shape"][1:])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path} is missing or unreadable ({type(e).__name__}); re-run "
                         f"tfnas export") from e


def format_table(report):
    """The profile as a plain-text table (one row per artefact)."""
    sizes = report["batch_sizes"]
    head = f"{'artefact':<14}{'size MB':>9}" + "".join(
        f"{f'b{b} median/p90 ms':>22}" for b in sizes)
    lines = []
    if "params" in report:
        lines.append(f"parameters {report['params']:,}; multiply-adds per image "
                     f"{report['macs'] / 1e6:.1f} M; threads {report['threads']}")
    lines.append(head)
    for label, size in report["size_bytes"].items():
        lat = report["latency"].get(label, {})
        cells = "".join(
            f"{lat[str(b)]['median_ms']:>12.2f} /{lat[str(b)]['p90_ms']:>8.2f}" if str(b) in lat
            else f"{'-':>22}" for b in sizes)
        lines.append(f"{label:<14}{size / 1e6:>9.2f}{cells}")
    return "\n".join(lines)
