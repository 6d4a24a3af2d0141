#!/usr/bin/env python3
"""Times the authors' whole PT phase (ruocwang/darts-pt `pt_project`) on synthetic data.

Run by the reference's own Python (with PyTorch), on a CPU export of darts-pt, next to
`tools/bench.py --pt_phase=N`, which times `tfnas select` on the same configuration:
DARTS space (s5), C8, 5 cells, batch 32, random initial supernet, N weight-split and N
alpha-split images (32x32x3, 10 classes, uint8 noise scaled to [0, 1]), every op decision,
the topology decisions, and `--proj_intv` tuning epochs between them (the reference's own
loop: projection, then tuning, alpha and weight steps; its per-epoch evaluation of both
splits included). Model, architect and the accuracy helper come from the team's timing
script for the reference (`--rbench`, whose `build` and `accuracy` this imports); the
evaluation routine is written here with the signature `pt_project` calls (train_search.py's
`infer` reads its module-level argument parser).

Prints one JSON line: total seconds, seconds per decision event (projection + tuning), the
number of projections, and peak RSS.

    VENV/bin/python tools/rbench_pt_phase.py --rbench=RBENCH.py --darts_pt=EXPORT --images=128
"""

import argparse
import importlib.util
import json
import logging
import resource
import sys
import tempfile
import time


def load_rbench(path):
    spec = importlib.util.spec_from_file_location("rbench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class EventClock(logging.Handler):
    """Timestamps the start of every projection ('project op' / 'project edge') and the end
    ('projection finished') from the reference's log."""

    def __init__(self):
        super().__init__()
        self.marks = []

    def emit(self, record):
        msg = record.getMessage()
        if msg in ("project op", "project edge", "projection finished"):
            self.marks.append((msg, time.time()))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rbench", required=True)
    p.add_argument("--darts_pt", required=True)
    p.add_argument("--images", type=int, default=128, help="images per split")
    p.add_argument("--proj_intv", type=int, default=1, help="tuning epochs per projection")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    t_launch = time.time()
    rb = load_rbench(a.rbench)
    rb.check_tree(a.darts_pt)
    import numpy as np
    import torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    cfg = dict(space="darts", channels=8, layers=5, batch=a.batch)
    model, architect, hp = rb.build(cfg, a.darts_pt)
    import nasbench201.utils as ig_utils
    from sota.cnn.projection import pt_project
    ig_utils.accuracy = rb.accuracy  # the reference's helper fails on current PyTorch
    ig_utils.count_parameters_in_Compact = lambda m: 0.0  # builds a C36 L20 net: not PT work
    rng = np.random.default_rng(a.seed)

    def queue(n):
        x = torch.tensor(rng.integers(0, 255, (n, 3, 32, 32)), dtype=torch.float32) / 255
        y = torch.tensor(rng.integers(0, 10, n))
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                           batch_size=a.batch, shuffle=True)
    train_q, valid_q = queue(a.images), queue(a.images)

    def infer(q, model, log=True, _eval=True, weights_dict=None):
        model.eval() if _eval else model.train()
        hits = loss = n = 0.0
        with torch.no_grad():
            for x, y in q:
                if weights_dict is None:
                    batch_loss, logits = model._loss(x, y, return_logits=True)
                else:
                    logits = model(x, weights_dict=weights_dict)
                    batch_loss = model._criterion(logits, y)
                hits += float((logits.argmax(1) == y).sum())
                loss += float(batch_loss) * len(y)
                n += len(y)
        return hits / n * 100, loss / n

    tmp = tempfile.mkdtemp()
    args = argparse.Namespace(**vars(hp), learning_rate_min=0.001, proj_intv=a.proj_intv,
                              edge_decision="random", proj_crit_normal="acc",
                              proj_crit_reduce="acc", dev_resume_epoch=-1,
                              dev_save_checkpoint_dir=tmp, report_freq=10**9, fast=False)
    model.reset_optimizer(args.learning_rate, args.momentum, args.weight_decay)
    clock = EventClock()
    root = logging.getLogger()
    root.addHandler(clock)
    root.setLevel(logging.INFO)
    built = time.time()
    pt_project(train_q, valid_q, model, architect, model.optimizer, 0, args, infer, None, None)
    end = time.time()
    starts = [t for m, t in clock.marks if m != "projection finished"]
    bounds = starts + [end]
    print(json.dumps({
        "impl": "reference", "images_per_split": a.images, "proj_intv": a.proj_intv,
        "threads": a.threads, "torch": torch.__version__,
        "total_s": end - t_launch, "build_s": built - t_launch,
        "events": len(starts), "event_s": [b - s for s, b in zip(bounds, bounds[1:])],
        "kinds": [m for m, _ in clock.marks if m != "projection finished"],
        "genotype": str(model.genotype()),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))


if __name__ == "__main__":
    sys.exit(main())
