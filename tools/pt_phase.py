#!/usr/bin/env python3
"""A whole PT phase, end to end, optionally side by side with the authors' PyTorch code.

tfnas: `PerturbationSelector` (what `tfnas select --selector=pt` runs) on a random initial
DARTS supernet (space darts, C8, 5 cells, batch 32), N weight-split and N alpha-split
synthetic images, every decision event (14 op events and 3 topology events per cell type)
scored on the whole alpha split, `--proj_intv` tuning epochs after each. Timed from launch
(data, build, every trace) to the last event, and per event.

Side by side (`--rbench`, `--reference_python`, `--darts_pt`): the reference's own
`pt_project` on the same configuration in a fresh process (tools/rbench_pt_phase.py), tfnas
and the reference alternating per round. Prints per implementation: total seconds, the
sum over early op events (first half of the edges), late op events (most edges decided) and
topology events, and the ratios reference / tfnas (> 1: tfnas faster).

    python tools/pt_phase.py --images=128                      # tfnas alone
    python tools/pt_phase.py --images=128 --rbench=RBENCH.py \\
        --reference_python=VENV/bin/python --darts_pt=EXPORT  # side by side
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run_tfnas(images, proj_intv, prune, seed=0):
    t_launch = time.time()
    import tempfile

    import numpy as np
    import tensorflow as tf
    from tfnas.config import SearchConfig
    from tfnas.search import SearchLoop
    from tfnas.selection.pt import PerturbationSelector, SelectConfig
    tmp = tempfile.mkdtemp()
    rng = np.random.default_rng(seed)
    np.savez(f"{tmp}/synthetic.npz",
             x_train=rng.integers(0, 255, (2 * images, 32, 32, 3), np.uint8),
             y_train=rng.integers(0, 10, 2 * images))
    cfg = SearchConfig(dataset=f"npz:{tmp}/synthetic.npz", space="darts", channels=8,
                       layers=5, batch_size=32, epochs=1, seed=seed).validate()
    loop = SearchLoop(cfg, f"{tmp}/run", tf.distribute.get_strategy(), is_chief=False,
                      log=lambda s: None)
    sel = PerturbationSelector(loop, SelectConfig(tune_epochs_per_decision=proj_intv,
                                                  prune_decided=prune),
                               f"{tmp}/selection", log=lambda s: None)
    built = time.time()
    kinds, event_s = [], []
    for i in range(sel.restore(), len(sel.events)):
        t0 = time.time()
        sel.run_event(i)
        event_s.append(time.time() - t0)
        kinds.append("project " + ("op" if sel.events[i][0] == "op" else "edge"))
    end = time.time()
    return {"impl": "tfnas", "images_per_split": images, "proj_intv": proj_intv,
            "prune_decided": prune, "total_s": end - t_launch, "build_s": built - t_launch,
            "events": len(event_s), "event_s": event_s, "kinds": kinds,
            "retraces": loop.state.graphs.retraces, "genotype": str(sel.genotype().to_json()["cells"]),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "threads": "TensorFlow default (all cores)"}


def phases(run):
    """Seconds of early op events, late op events and topology events."""
    ops = [s for s, k in zip(run["event_s"], run["kinds"]) if k == "project op"]
    topo = [s for s, k in zip(run["event_s"], run["kinds"]) if k != "project op"]
    half = len(ops) // 2
    return {"total_s": run["total_s"], "early_op_events_s": sum(ops[:half]),
            "late_op_events_s": sum(ops[half:]), "topology_events_s": sum(topo)}


def _child(argv):
    out = subprocess.run(argv, capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-3:]}
    return json.loads(lines[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=128, help="images per split")
    p.add_argument("--proj_intv", type=int, default=1, help="tuning epochs per decision")
    p.add_argument("--prune_decided", default="auto", choices=("auto", "always", "never"))
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--rbench", default="")
    p.add_argument("--reference_python", default="")
    p.add_argument("--darts_pt", default="")
    p.add_argument("--_child", action="store_true")
    a = p.parse_args()
    if a._child:
        print(json.dumps(run_tfnas(a.images, a.proj_intv, a.prune_decided)))
        return
    side = [bool(x) for x in (a.rbench, a.reference_python, a.darts_pt)]
    if any(side) and not all(side):
        sys.exit("side by side needs --rbench, --reference_python and --darts_pt together")
    runs = {"tfnas": [], "reference": []}
    for _ in range(max(1, a.rounds)):
        runs["tfnas"].append(_child([sys.executable, __file__, "--_child",
                                     f"--images={a.images}", f"--proj_intv={a.proj_intv}",
                                     f"--prune_decided={a.prune_decided}"]))
        if all(side):
            runs["reference"].append(_child([
                a.reference_python, os.path.join(HERE, "rbench_pt_phase.py"),
                f"--rbench={a.rbench}", f"--darts_pt={a.darts_pt}", f"--images={a.images}",
                f"--proj_intv={a.proj_intv}"]))
    summary = {}
    for impl, rs in runs.items():
        ok = [phases(r) for r in rs if "error" not in r]
        if ok:
            summary[impl] = {k: statistics.median(r[k] for r in ok) for k in ok[0]}
    if len(summary) == 2:
        summary["reference_over_tfnas"] = {
            k: summary["reference"][k] / summary["tfnas"][k] for k in summary["tfnas"]}
    print(json.dumps({"summary": summary, "runs": runs, "cpu_count": os.cpu_count(),
                      "load_avg_1min_at_end": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
