#!/usr/bin/env python3
"""Writes a search checkpoint with the authors' own DARTS-PT code: runs in a Python with
PyTorch, imports the reference's modules from a CPU export of ruocwang/darts-pt (as
`tools/parity_reference.py`, whose `build` it uses), takes a few first-order search steps
on random batches (so BN statistics and both optimizers' states are not trivial), and saves
what `train_search.py` saves (`epoch`, `state_dict`, `alpha`, `optimizer`,
`arch_optimizer`, `scheduler`) with `torch.save`. Beside it, `OUT.npz` holds a fixed input
`x` (NCHW) and the supernet's eval-mode `logits` on it, for `tfnas import` to be checked
against.

    /path/to/ref/venv/bin/python tools/make_darts_pt_checkpoint.py --darts_pt DIR \
        --space darts --channels 4 --layers 3 --out tests/data/darts_pt_darts_c4_l3.pth.tar

The small checkpoints in tests/data were made this way (tests/data/NOTICE).
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_reference import NUM_CLASSES, build, supernet_parser  # noqa: E402


def main(argv=None):
    p = supernet_parser(__doc__, 4, 3)
    p.add_argument("--epoch", type=int, default=50, help="the epoch the checkpoint says")
    p.add_argument("--without", nargs="*", default=(),
                   help="entries to leave out (e.g. optimizer: a smaller test file)")
    a = p.parse_args(argv)
    import torch
    torch.manual_seed(a.seed)
    ref_space = "s5" if a.space == "darts" else a.space
    model, architect, hp, _ = build(ref_space, a.channels, a.layers, a.darts_pt)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(model.optimizer, 50, eta_min=0.001)
    g = torch.Generator().manual_seed(a.seed + 1)
    for _ in range(a.steps):
        xt, xv = (torch.randn(8, 3, 16, 16, generator=g) for _ in range(2))
        yt, yv = (torch.randint(0, NUM_CLASSES, (8,), generator=g) for _ in range(2))
        model.train()
        model.optimizer.zero_grad()
        architect.optimizer.zero_grad()
        architect.step(xt, yt, xv, yv, hp.learning_rate, model.optimizer)
        model.optimizer.zero_grad()
        architect.optimizer.zero_grad()
        model.step(xt, yt, hp)
        scheduler.step()
    ckpt = {"epoch": a.epoch, "state_dict": model.state_dict(),
            "alpha": model.arch_parameters(), "optimizer": model.optimizer.state_dict(),
            "arch_optimizer": architect.optimizer.state_dict(),
            "scheduler": scheduler.state_dict()}
    torch.save({k: v for k, v in ckpt.items() if k not in a.without}, a.out)
    x = torch.randn(4, 3, 16, 16, generator=g)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    np.savez(a.out + ".npz", x=x.numpy(), logits=logits.numpy())
    print(f"{a.out}: {os.path.getsize(a.out)} bytes")


if __name__ == "__main__":
    main()
