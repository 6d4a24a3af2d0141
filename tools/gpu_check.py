"""A short, prepared check of the multi-GPU path (run it whenever a GPU machine is lent).

On every visible GPU under `MirroredStrategy` (or, for a dry run, on N logical CPUs with
`--cpu_devices=N`), with synthetic CIFAR-shaped data:

  1. a first-order DARTS search step (synchronized BN), timed: global and per-device img/s,
     seconds from launch to the end of the first step;
  2. the alphas after the timed steps are bit-identical on every replica;
  3. peak memory per GPU (tf.config.experimental.get_memory_info);
  4. one whole PT op decision on the mirrored supernet (score before, every op masked, after);
  5. steps 1-3 again under `--mixed_precision=mixed_bfloat16` and `mixed_float16` (img/s,
     finite loss, alphas identical; float32 alphas, BN statistics and loss; float16 with
     dynamic loss scaling, its final scale reported);
  6. the dilated depthwise convolution's output and gradients on the first device against a
     shift-and-sum reference (`tfnas.ops.conv.gradient_gap`, float32 and bfloat16): TF's
     oneDNN gradient kernels ignore the dilation, and what a GPU kernel does is checked
     here, not assumed.

Prints one JSON object (also written to --out).

    python tools/gpu_check.py                          # all visible GPUs, C16 L8, 64 per GPU
    python tools/gpu_check.py --cpu_devices=2 --channels=4 --layers=3 --steps=2   # dry run
"""

import argparse
import json
import os
import sys
import tempfile
import time


def _args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu_devices", type=int, default=0,
                   help="dry run on N logical CPU devices instead of GPUs")
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--batch_per_replica", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed steps after one warm-up step")
    p.add_argument("--decision_batches", type=int, default=4)
    p.add_argument("--precisions", default="float32,mixed_bfloat16,mixed_float16",
                   help="comma-separated: each one is timed (the PT decision: the first)")
    p.add_argument("--out", default="gpu_check.json")
    return p.parse_args()


def _synthetic(folder, n, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    path = os.path.join(folder, "synthetic.npz")
    np.savez(path, x_train=rng.integers(0, 255, (n, 32, 32, 3), np.uint8),
             y_train=rng.integers(0, 10, n))
    return path


def _memory(devices):
    import tensorflow as tf
    out = {}
    for d in devices:
        if "GPU" in d.upper():
            try:
                info = tf.config.experimental.get_memory_info(d.split("device:")[-1])
                out[d] = {"peak_gb": info["peak"] / 1e9, "current_gb": info["current"] / 1e9}
            except (ValueError, RuntimeError) as e:
                out[d] = {"error": str(e)[:200]}
    return out


def _timed_search(cfg, strategy, tmp, steps, t_launch):
    """A mirrored SearchLoop and the timing of its first-order step under `cfg`."""
    import numpy as np
    from tfnas.search import SearchLoop
    replicas = strategy.num_replicas_in_sync
    loop = SearchLoop(cfg, os.path.join(tmp, "run_" + cfg.mixed_precision), strategy,
                      is_chief=False, log=lambda s: None)
    train, valid = loop.batches(0)
    bt, bv = next(iter(train)), next(iter(valid))
    loss = float(loop.state._step_fn(bt, bv))
    first_step_s = time.time() - t_launch
    times = []
    for _ in range(steps):
        t0 = time.time()
        loss = float(loop.state._step_fn(bt, bv))
        times.append(time.time() - t0)
    median = float(np.median(times)) if times else float("nan")
    spread = max(float(np.max(np.abs(np.asarray(r) - np.asarray(
        strategy.experimental_local_results(v)[0]))))
        for v in loop.state.alphas for r in strategy.experimental_local_results(v))
    scale = {"loss_scale": float(loop.state.loss_scale.scale.numpy())} if loop.state.loss_scale else {}
    return loop, {
        **scale, "seconds_since_launch_at_first_step": first_step_s, "median_step_s": median,
        "images_per_s": cfg.batch_size / median,
        "images_per_s_per_device": cfg.batch_size / median / replicas,
        "loss_finite": bool(np.isfinite(loss)),
        "alphas_max_replica_difference": spread, "alphas_identical": spread == 0.0}


def main():
    a = _args()
    t_launch = time.time()
    import tensorflow as tf
    from tfnas.distribute import split_cpu
    gpus = tf.config.list_physical_devices("GPU")
    if a.cpu_devices:
        split_cpu(a.cpu_devices)
    elif not gpus:
        sys.exit("gpu_check: no GPU visible (tf.config.list_physical_devices('GPU') is empty); "
                 "use --cpu_devices=N for a dry run on CPU")
    from tfnas.config import SearchConfig
    from tfnas.grappler import settings_in_force
    from tfnas.selection.pt import PerturbationSelector, SelectConfig
    devices = ([d.name for d in tf.config.list_logical_devices("CPU")] if a.cpu_devices
               else [d.name for d in tf.config.list_logical_devices("GPU")])
    strategy = tf.distribute.MirroredStrategy(devices)
    replicas = strategy.num_replicas_in_sync
    batch = a.batch_per_replica * replicas
    tmp = tempfile.mkdtemp()
    data = _synthetic(tmp, max(4, 2 * a.decision_batches) * batch)
    runs, loop = {}, None
    for i, precision in enumerate(a.precisions.split(",")):
        cfg = SearchConfig(dataset=f"npz:{data}", space="darts", channels=a.channels,
                           layers=a.layers, batch_size=batch, epochs=1, bn="global",
                           mixed_precision=precision).validate()
        run_loop, runs[precision] = _timed_search(cfg, strategy, tmp, a.steps, t_launch)
        loop = loop or run_loop
    selector = PerturbationSelector(loop, SelectConfig(score_batches=a.decision_batches),
                                    os.path.join(tmp, "selection"), log=lambda s: None)
    t0 = time.time()
    row = selector.decide_op(loop.space.cell_types[0], 0)
    seconds = time.time() - t0
    from tfnas.ops.conv import gradient_gap
    with tf.device(devices[0]):
        gaps = {d: gradient_gap(dtype=getattr(tf, d)) for d in ("float32", "bfloat16")}
    report = {
        "devices": devices, "replicas": replicas, "gpus_visible": len(gpus),
        "config": {"space": "darts", "channels": a.channels, "layers": a.layers,
                   "global_batch": batch, "bn": "global", "arch_update": "first_order"},
        "runs": runs,
        "alphas_identical": all(r["alphas_identical"] for r in runs.values()),
        "loss_finite": all(r["loss_finite"] for r in runs.values()),
        "memory": _memory(devices),
        "dilated_conv_gradient_gap": gaps,
        "pt_decision": {"seconds": seconds, "choice": row["choice"],
                        "ops_scored": len(row["scores"]), "batches": a.decision_batches},
        "versions": {"tensorflow": tf.__version__},
        # tfnas's CPU-measured Grappler settings apply only where no GPU is visible
        "grappler": settings_in_force(),
    }
    text = json.dumps(report, indent=1)
    with open(a.out, "w") as f:
        f.write(text + "\n")
    print(text)
    # bfloat16 keeps ~3 significant digits; a dropped dilation shows as a gap near 1
    ok = (report["alphas_identical"] and report["loss_finite"]
          and gaps["float32"] < 1e-4 and gaps["bfloat16"] < 0.05)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
