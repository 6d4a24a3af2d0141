"""Search-step throughput benchmark (first order, synthetic CIFAR-shaped data), optionally
side by side with the authors' PyTorch code in the same run.

Runs `SearchLoop`'s own traced step (alpha step + weight step, one device), its PT scoring
pass (a masked-op evaluation with BN batch statistics) and one whole PT op decision (accuracy
before, with each op of edge 0 masked, after; `--decision_batches` batches each). Prints
JSON: per config, train-batch images per second, PT scoring images per second (median of
timed steps after warm-up), the decision's seconds, seconds from launch to the end of the
first step (build + trace + first call), peak RSS, and the step's floating-point work
(TensorFlow's profiler on the traced step) as achieved GFLOP/s beside a float32 matmul's
GFLOP/s measured in the same process.

    python tools/bench.py                       # all three configs of the issue
    python tools/bench.py --configs=darts_c8_l5_b32 --steps=5
    python tools/bench.py --configs=darts_c16_l8_b64 --recompute   # the memory-saving step
    python tools/bench.py --input=folder:/data/cifar10   # + the input pipeline alone
    python tools/bench.py --configs=nb201_c16_n5_b64 --zc_proxies=nwot,synflow  # + proxies
    python tools/bench.py --rbench=RBENCH.py --reference_python=VENV/bin/python \
        --darts_pt=DARTS_PT_EXPORT --rounds=2               # side by side, measured ratios

Side by side: `--rbench` is a timing script for the reference (same three configs and
definitions: search step = alpha step + weight step, first order, img/s of the train batch;
PT scoring pass = a masked-op forward with BN batch statistics; first step; peak RSS), run by
the reference's own Python (with PyTorch) on a CPU export of ruocwang/darts-pt kept outside
this repository. For each config and round, tfnas and the reference run one after the other
in fresh processes (same machine, same hour), and the ratios are of the medians over rounds.
No reference number is stored in this repository: a ratio is only ever printed from a
measurement of both.

A whole PT phase (every decision and the tuning between them), side by side with the
reference's own projection loop: `tools/pt_phase.py`.

`--input=DATASET` also times the search's training input pipeline alone on a real dataset
(read, decode, crop, flip, normalise, batch: what feeds each step) at each config's batch
size, and prints its img/s over the step's.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "darts_c16_l8_b64": dict(space="darts", channels=16, layers=8, batch=64),
    "darts_c8_l5_b32": dict(space="darts", channels=8, layers=5, batch=32),
    "nb201_c16_n5_b64": dict(space="nb201", channels=16, layers=5, batch=64),
}


def run_one(name, steps, warmup, decision_batches=4, recompute=False, zc_proxies=()):
    """Times SearchLoop's own traced step on a synthetic CIFAR-shaped npz dataset."""
    t_launch = time.time()
    import tempfile

    import numpy as np
    import tensorflow as tf
    from tfnas.config import SearchConfig
    from tfnas.grappler import settings_in_force
    from tfnas.search import SearchLoop
    c = CONFIGS[name]
    b = c["batch"]
    tmp = tempfile.mkdtemp()
    rng = np.random.default_rng(0)
    n = max(4, 2 * decision_batches) * b  # the alpha split holds `decision_batches` batches
    np.savez(f"{tmp}/synthetic.npz", x_train=rng.integers(0, 255, (n, 32, 32, 3), np.uint8),
             y_train=rng.integers(0, 10, n))
    cfg = SearchConfig(dataset=f"npz:{tmp}/synthetic.npz", space=c["space"],
                       channels=c["channels"], layers=c["layers"], batch_size=b,
                       epochs=1, recompute=recompute).validate()
    loop = SearchLoop(cfg, f"{tmp}/run", tf.distribute.get_strategy(), is_chief=False)
    train, valid = loop.batches(0)
    bt, bv = next(iter(train)), next(iter(valid))
    loop.state._step_fn(bt, bv).numpy()
    first = time.time() - t_launch
    times = []
    for i in range(warmup + steps):
        t0 = time.time()
        loop.state._step_fn(bt, bv).numpy()
        if i >= warmup:
            times.append(time.time() - t0)
    med = statistics.median(times)
    # PT scoring pass: one masked-op evaluation of a batch (BN batch statistics, no gradient)
    arch = loop.model.archs[0]
    arch.mask_op(0, 0)
    loop.state._eval_fn(bv, training=True)
    pt_times = []
    for i in range(warmup + steps):
        t0 = time.time()
        loop.state._eval_fn(bv, training=True)
        float(loop.state.metrics["valid_acc"].result())
        if i >= warmup:
            pt_times.append(time.time() - t0)
    arch.reset_op_mask()
    pt = statistics.median(pt_times)
    decision = None
    if decision_batches:  # one whole op decision: score before, every op masked, after
        from tfnas.selection.pt import PerturbationSelector, SelectConfig
        sel = PerturbationSelector(loop, SelectConfig(score_batches=decision_batches),
                                   f"{tmp}/selection", log=lambda s: None)
        t0 = time.time()
        row = sel.decide_op(loop.space.cell_types[0], 0)
        decision = {"seconds": time.time() - t0, "batches": decision_batches,
                    "ops": len(row["scores"]), "evaluations": (len(row["scores"]) + 2)
                    * decision_batches}
    zc = zero_cost_costs(loop, bv, zc_proxies, med, pt) if zc_proxies else None
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    step_gflop = _step_gflop(loop, bt, bv)  # after the RSS: it traces the step once more
    return {"config": name, "images_per_s": b / med, "median_step_s": med,
            "pt_scoring_images_per_s": b / pt, "pt_scoring_batch_s": pt,
            "one_op_decision": decision, "zero_cost": zc, "first_step_s": first,
            "step_gflop": step_gflop, "achieved_gflop_s": step_gflop / med,
            "matmul_peak_gflop_s": _matmul_peak(),
            "peak_rss_gb": peak_rss_gb,
            "grappler": settings_in_force(), "recompute": recompute,
            "shared_edge_traces": os.environ.get("TFNAS_SHARED_EDGE_TRACES", "1") != "0",
            "steps": steps, "threads": {
                "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                "note": "0 = TensorFlow's default (all cores)"}}


def zero_cost_costs(loop, batch, proxies, med_step_s, pt_batch_s, repeats=3, images=25_000):
    """Each proxy's trace and per-batch seconds on the supernet (a masked op), and the whole
    selections these unit costs imply at the paper's split (`images` weight + `images` alpha
    examples): PT with its schedule (every candidate + before/after over the alpha split per
    decision, 5 tuning epochs per event) against zc_pt with the paper's N=10, V=100 (one
    batch per candidate; the validation's discrete networks counted at the supernet's cost,
    an upper bound). Estimates from measured unit costs, not a whole selection."""
    from tfnas.derive.proxies import ProxyScorer
    from tfnas.derive.zero_cost import zc_events
    space, b = loop.space, loop.batch_size
    events = zc_events(space, 0)
    # evaluations per iteration: every candidate op; per topology node with n inputs, rounds
    # scoring n, n - 1, ..., 3 remaining inputs
    cand = sum(len(space.candidates(t, tgt)) if kind == "op" else
               sum(range(3, len(space.cells[t].node_edges(tgt)) + 1))
               for kind, targets in events for t, tgt in targets.items())
    batches = -(-images // b)
    tune_epochs = sum(space.tuning_epochs(len(events), 5))
    pt_s = (cand + 2 * len(events) * len(space.cell_types)) * batches * pt_batch_s + \
        tune_epochs * batches * med_step_s
    arch = loop.model.archs[0]
    arch.mask_op(0, 1)
    out = {"pt_selection_estimate_s": pt_s, "proxies": {}}
    for name in proxies:
        scorer = ProxyScorer(loop.model, name)
        t0 = time.time()
        scorer(*batch)
        trace = time.time() - t0
        times = []
        for _ in range(repeats):
            t0 = time.time()
            scorer(*batch)
            times.append(time.time() - t0)
        per = statistics.median(times)
        zc_s = trace + 10 * cand * per + 10 * 100 * per
        out["proxies"][name] = {"trace_s": trace, "batch_s": per,
                                "zc_selection_estimate_s": zc_s, "pt_over_zc": pt_s / zc_s}
    arch.reset_op_mask()
    return out


def _graph_gflop(graph):
    """Floating-point operations of one call of a traced graph (TensorFlow's profiler: the
    ops with registered statistics, convolutions and matmuls and their gradients), in G."""
    from tensorflow.python.profiler import model_analyzer, option_builder
    opts = option_builder.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return model_analyzer.profile(graph, options=opts).total_float_ops / 1e9


def _step_gflop(loop, bt, bv):
    """The step's floating-point work, counted on a per-edge trace of it (the profiler does
    not look inside the shared edge functions the timed step calls)."""
    import tensorflow as tf
    loop.model.share_edge_traces(False)
    try:
        return _graph_gflop(tf.function(loop.state.step).get_concrete_function(bt, bv).graph)
    finally:
        loop.model.share_edge_traces(os.environ.get("TFNAS_SHARED_EDGE_TRACES", "1") != "0",
                                     recompute=loop.config.recompute)


def _matmul_peak(n=2048, repeats=10):
    """GFLOP/s of a float32 n x n matmul in this process (the machine's practical peak)."""
    import tensorflow as tf
    a = tf.random.normal((n, n))
    f = tf.function(lambda x: tf.matmul(x, x))
    f(a).numpy()
    times = []
    for _ in range(repeats):
        t0 = time.time()
        f(a).numpy()
        times.append(time.time() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def input_rate(spec, batch, batches=200):
    """Images per second of the search's training pipeline alone (first batch excluded)."""
    import numpy as np
    from tfnas.data import Pipeline, load_dataset
    data = load_dataset(spec)
    pipe = Pipeline(data, batch, seed=0)
    ds = pipe.train(np.arange(len(data.y_train)), 0, repeat=True).take(batches + 1)
    it = iter(ds)
    next(it)
    t0 = time.time()
    n = sum(int(x.shape[0]) for x, _ in it)
    return n / (time.time() - t0)


def _tfnas(name, a):
    out = subprocess.run([sys.executable, __file__, f"--_child={name}", f"--steps={a.steps}",
                          f"--warmup={a.warmup}", f"--decision_batches={a.decision_batches}"]
                         + (["--recompute"] if a.recompute else [])
                         + ([f"--zc_proxies={a.zc_proxies}"] if a.zc_proxies else []),
                         capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if out.returncode:
        return {"config": name, "error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _reference(name, a):
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ref.json")
        out = subprocess.run([a.reference_python, a.rbench, f"--darts_pt={a.darts_pt}",
                              f"--configs={name}", f"--steps={a.steps}",
                              f"--warmup={a.warmup}", f"--json={path}"],
                             capture_output=True, text=True)
        if out.returncode or not os.path.exists(path):
            return {"config": name, "error": (out.stderr.strip().splitlines() or ["?"])[-1:]}
        with open(path) as f:
            return json.load(f)["results"][0]


def _side_by_side(name, tfnas_runs, ref_runs):
    """Medians over rounds of both, and their ratios (tfnas / reference)."""
    ok_t = [r for r in tfnas_runs if "error" not in r]
    ok_r = [r for r in ref_runs if "error" not in r]
    if not ok_t or not ok_r:
        return {"config": name, "error": [r.get("error") for r in tfnas_runs + ref_runs]}
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    row = {"config": name, "rounds": len(ok_t),
           "search_img_s": {"tfnas": med(ok_t, "images_per_s"),
                            "reference": med(ok_r, "search_img_s")},
           "pt_scoring_img_s": {"tfnas": med(ok_t, "pt_scoring_images_per_s"),
                                "reference": med(ok_r, "pt_img_s")},
           "first_step_s": {"tfnas": med(ok_t, "first_step_s"),
                            "reference": med(ok_r, "first_step_s")},
           "peak_rss_gb": {"tfnas": med(ok_t, "peak_rss_gb"),
                           "reference": med(ok_r, "peak_rss_gb")},
           "tfnas_step_gflop": med(ok_t, "step_gflop"),
           "tfnas_achieved_gflop_s": med(ok_t, "achieved_gflop_s"),
           "matmul_peak_gflop_s": med(ok_t, "matmul_peak_gflop_s"),
           "tfnas_runs": tfnas_runs, "reference_runs": ref_runs}
    for k in ("search_img_s", "pt_scoring_img_s"):
        row[k]["ratio"] = row[k]["tfnas"] / row[k]["reference"]
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--decision_batches", type=int, default=4,
                   help="time one whole op decision scored on N batches (0: skip)")
    p.add_argument("--input", default="",
                   help="also time the input pipeline alone on this dataset (e.g. folder:PATH)")
    p.add_argument("--rbench", default="", help="the reference's timing script (side by side)")
    p.add_argument("--reference_python", default="", help="a Python with PyTorch for it")
    p.add_argument("--darts_pt", default="", help="CPU export of ruocwang/darts-pt")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds per config")
    p.add_argument("--recompute", action="store_true",
                   help="tfnas with --recompute (edges recompute activations: less memory)")
    p.add_argument("--zc_proxies", default="",
                   help="also time these zero-cost proxies (e.g. nwot,synflow) and estimate "
                        "whole zc_pt and PT selections from the unit costs")
    p.add_argument("--_child", default="")
    a = p.parse_args()
    if a._child:  # one config per process, so launch time and peak RSS are its own
        from tfnas.cpuinfo import onednn_active
        result = run_one(a._child, a.steps, a.warmup, a.decision_batches, a.recompute,
                         [p for p in a.zc_proxies.split(",") if p])
        print(json.dumps({**result, "onednn_active": onednn_active()}))
        return
    side = [bool(x) for x in (a.rbench, a.reference_python, a.darts_pt)]
    if any(side) and not all(side):
        sys.exit("side by side needs --rbench, --reference_python and --darts_pt together")
    results = []
    for name in a.configs.split(","):
        if name not in CONFIGS:
            sys.exit(f"unknown config {name!r}; known: {', '.join(CONFIGS)}")
        if all(side):
            runs_t, runs_r = [], []
            for _ in range(max(1, a.rounds)):  # alternate: same machine state for both
                runs_t.append(_tfnas(name, a))
                runs_r.append(_reference(name, a))
            results.append(_side_by_side(name, runs_t, runs_r))
            continue
        results.append(_tfnas(name, a))
        if a.input and "images_per_s" in results[-1]:
            rate = input_rate(a.input, CONFIGS[name]["batch"])
            results[-1].update(input=a.input, input_pipeline_images_per_s=rate,
                               input_over_step=rate / results[-1]["images_per_s"])
    from tfnas.cpuinfo import cpu_info, describe, runtime_settings
    print(json.dumps({"results": results, "cpu_count": os.cpu_count(),
                      "cpu": cpu_info(), "runtime_settings": runtime_settings(),
                      "load_avg_1min_at_end": os.getloadavg()[0]}, indent=1))
    print(f"measured on: {describe()}", file=sys.stderr)  # every figure says its CPU


if __name__ == "__main__":
    main()
