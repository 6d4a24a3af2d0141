#!/usr/bin/env python3
"""The reference side of `tools/reference_parity.py`: runs in a Python with PyTorch and
imports the authors' own DARTS-PT modules from a CPU export of ruocwang/darts-pt (every
`.cuda(...)` call stripped). Nothing of the reference is copied here: its classes are
imported, built and stepped, and every quantity is written to one `.npz` file.

    python parity_reference.py --darts_pt DIR --out ref.npz --space darts --channels 8 \
        --layers 5 --batch 16 --steps 3

Written (float32 unless noted): `init/KEY` every state_dict entry and `init/alpha_T`
(T = normal, reduce; NB201: cell), `x_t y_t x_v y_v` (the fixed train / valid batches,
NCHW), `fwd/logits` `fwd/loss` (train mode), `grad/KEY` `grad/alpha_T` (d loss / d each),
`bn/KEY` (running statistics after that forward), `eval/logits` (eval mode after it),
then, from the initial state again, `--steps` first-order search steps as the reference's
`train()` loop runs them (alpha Adam step on the valid batch, weight SGD step on the train
batch): `stepK/KEY`, `stepK/alpha_T`, `stepK/mom/KEY` (SGD momentum buffers),
`stepK/adam_m/alpha_T`, `stepK/adam_v/alpha_T`, `stepK/loss`; the same as `tuneK/...` for
`--steps` tuning steps after the reference's own `project_op` fixed op `--tune_op` on edge
`--pt_edge` (weight SGD re-created at learning_rate / 10, as projection.py tunes); the PT op scores of one
edge (`pt/acc`, `pt/loss` [ops]: train-mode BN, the projected weights with that op masked,
as `project_op`) on the valid batch from the initial state, and `pt_bn/KEY` after them.
"""

import argparse
import os
import sys
import types

import numpy as np

NUM_CLASSES = 10


def stub_data_modules():
    """The reference imports torchvision and PIL for its data loaders only; the parity run
    feeds tensors, so empty stand-ins replace them."""
    class Stub(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (object,), {})

    for name in ("torchvision", "torchvision.datasets", "torchvision.datasets.utils",
                 "torchvision.transforms", "PIL", "PIL.Image"):
        sys.modules[name] = Stub(name)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, sys.modules[name])


def hparams():
    """The reference's train_search.py defaults (method darts-proj, first order)."""
    return argparse.Namespace(learning_rate=0.025, momentum=0.9, weight_decay=3e-4,
                              grad_clip=5.0, arch_learning_rate=3e-4, arch_weight_decay=1e-3,
                              method="darts-proj")


def build(space, channels, layers, root):
    stub_data_modules()
    sys.path.insert(0, os.path.abspath(root))
    import torch.nn as nn
    from nasbench201.architect_ig import Architect
    hp = hparams()
    if space == "nb201":
        from nasbench201.cell_operations import SearchSpaceNames
        from nasbench201.search_model_darts_proj import TinyNetworkDartsProj
        model = TinyNetworkDartsProj(C=channels, N=layers, max_nodes=4, num_classes=NUM_CLASSES,
                                     criterion=nn.CrossEntropyLoss(),
                                     search_space=SearchSpaceNames["nas-bench-201"], args=hp)
        cell_types = ["cell"]
    else:
        from sota.cnn.model_search_darts_proj import DartsNetworkProj
        from sota.cnn.spaces import spaces_dict
        model = DartsNetworkProj(channels, NUM_CLASSES, layers, nn.CrossEntropyLoss(),
                                 spaces_dict[space], hp)
        cell_types = ["normal", "reduce"]
    return model, Architect(model, hp), hp, cell_types


def state(model, cell_types, prefix, out):
    for k, v in model.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            out[f"{prefix}/{k}"] = v.detach().numpy().astype(np.float64)
    for t, a in zip(cell_types, model.arch_parameters()):
        out[f"{prefix}/alpha_{t}"] = a.detach().numpy().copy()


def run_steps(model, architect, hp, cell_types, batches, steps, prefix, out):
    """`steps` first-order steps as train_search.py's train() runs them (alpha Adam on the
    valid batch, then weight SGD on the train batch); the state after each as PREFIXk/."""
    xt, yt, xv, yv = batches
    names = dict((id(prm), name) for name, prm in model.named_parameters())
    for k in range(steps):
        model.train()
        model.optimizer.zero_grad(); architect.optimizer.zero_grad()
        architect.step(xt, yt, xv, yv, hp.learning_rate, model.optimizer)
        model.optimizer.zero_grad(); architect.optimizer.zero_grad()
        _, lt = model.step(xt, yt, hp)
        pre = f"{prefix}{k + 1}"
        state(model, cell_types, pre, out)
        out[f"{pre}/loss"] = np.float32(lt.item())
        for prm, st in model.optimizer.state.items():
            if "momentum_buffer" in st:
                out[f"{pre}/mom/{names[id(prm)]}"] = st["momentum_buffer"].numpy().copy()
        for t, alpha in zip(cell_types, model.arch_parameters()):
            st = architect.optimizer.state[alpha]
            out[f"{pre}/adam_m/alpha_{t}"] = st["exp_avg"].numpy().copy()
            out[f"{pre}/adam_v/alpha_{t}"] = st["exp_avg_sq"].numpy().copy()


def project(model, space, edge, op, on):
    """The reference's own `project_op` on `edge` (normal cell / the NB201 cell), or its
    undoing (`on=False`: the projection state is not part of `load_state_dict`)."""
    if on:
        model.project_op(edge, op) if space == "nb201" else \
            model.project_op(edge, op, "normal")
        return
    proj = model.proj_weights if space == "nb201" else model.proj_weights["normal"]
    flags = model.candidate_flags if space == "nb201" else model.candidate_flags["normal"]
    proj[edge][op] = 0
    flags[edge] = True


def pt_scores(model, space, edge, xv, yv):
    """(accuracy, loss) per op of `edge` (normal cell / the NB201 cell) with that op masked
    in the projected weights, train-mode BN under no_grad: `project_op`'s evaluation."""
    import torch
    import torch.nn.functional as F
    accs, losses = [], []
    n_ops = model.arch_parameters()[0].shape[1]
    for k in range(n_ops):
        model.train()
        with torch.no_grad():
            if space == "nb201":
                w = model.get_projected_weights()
            else:
                w = model.get_projected_weights("normal")
            mask = torch.ones_like(w[edge])
            mask[k] = 0
            w[edge] = w[edge] * mask
            logits = model(xv, weights=w) if space == "nb201" else \
                model(xv, weights_dict={"normal": w})
            losses.append(float(F.cross_entropy(logits, yv)))
            accs.append(float((logits.argmax(1) == yv).float().mean()))
    return np.asarray(accs), np.asarray(losses)


def supernet_parser(doc, channels, layers):
    """The flags of a reference-side tool: where the reference is, the output, the supernet
    (space, channels, cells), steps and seed."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--darts_pt", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--space", default="darts")
    p.add_argument("--channels", type=int, default=channels)
    p.add_argument("--layers", type=int, default=layers)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None):
    p = supernet_parser(__doc__, 8, 5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--pt_edge", type=int, default=0)
    p.add_argument("--tune_op", type=int, default=1, help="the op the tuning steps' decision "
                                                          "fixes on --pt_edge")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                   help="float64: the reference's numbers without its own float32 rounding "
                        "(the same initial weights: built in float32, then converted)")
    p.add_argument("--perturb_seed", type=int, default=0, help="which noise draw")
    p.add_argument("--perturb", type=float, default=0.0,
                   help="multiply both batches by 1 + PERTURB * N(0, 1) noise (seeded): how "
                        "much the reference itself moves under an input change of rounding "
                        "size (ReLU kinks)")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(2)
    torch.manual_seed(a.seed)
    ref_space = "s5" if a.space == "darts" else a.space
    model, architect, hp, cell_types = build(ref_space, a.channels, a.layers, a.darts_pt)
    g = torch.Generator().manual_seed(a.seed + 1)
    xt, xv = (torch.randn(a.batch, 3, 32, 32, generator=g) for _ in range(2))
    yt, yv = (torch.randint(0, NUM_CLASSES, (a.batch,), generator=g) for _ in range(2))
    out = {"x_t": xt.numpy(), "y_t": yt.numpy(), "x_v": xv.numpy(), "y_v": yv.numpy()}
    if a.perturb:
        noise = torch.Generator().manual_seed(a.seed + 2 + a.perturb_seed)
        xt, xv = (x * (1 + a.perturb * torch.randn(x.shape, generator=noise)) for x in (xt, xv))
    if a.dtype == "float64":
        model.double()  # parameters converted in place: the optimizers keep them
        for alpha in model.arch_parameters():
            alpha.data = alpha.data.double()
        proj = getattr(model, "proj_weights", None)  # the projected one-hot rows
        if isinstance(proj, dict):
            model.proj_weights = {k: v.double() for k, v in proj.items()}
        elif proj is not None:
            model.proj_weights = proj.double()
        xt, xv = xt.double(), xv.double()
    state(model, cell_types, "init", out)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    init_alphas = [x.detach().clone() for x in model.arch_parameters()]

    # one forward / backward in train mode
    model.train()
    loss, logits = model._loss(xt, yt, return_logits=True)
    loss.backward()
    out["fwd/logits"], out["fwd/loss"] = logits.detach().numpy(), np.float32(loss.item())
    for name, prm in model.named_parameters():
        out[f"grad/{name}"] = (prm.grad if prm.grad is not None
                               else torch.zeros_like(prm)).numpy().copy()
    for t, alpha in zip(cell_types, model.arch_parameters()):
        out[f"grad/alpha_{t}"] = alpha.grad.numpy().copy()
    for k, v in model.state_dict().items():
        if "running_" in k:
            out[f"bn/{k}"] = v.numpy().copy()
    model.eval()
    with torch.no_grad():
        out["eval/logits"] = model(xt).numpy()

    # search steps from the initial state, as train_search.py's train()
    model.load_state_dict(init)
    model.set_arch_parameters(init_alphas)
    model.reset_optimizer(hp.learning_rate, hp.momentum, hp.weight_decay)
    for opt in (model.optimizer, architect.optimizer):
        opt.zero_grad()
    architect.optimizer.state.clear()
    run_steps(model, architect, hp, cell_types, (xt, yt, xv, yv), a.steps, "step", out)
    # tuning steps after one op decision (projection.py's tuning: the weight optimizer
    # re-created at learning_rate / 10, the edge's row one-hot, alphas still training)
    model.load_state_dict(init)
    model.set_arch_parameters(init_alphas)
    model.reset_optimizer(hp.learning_rate / 10, hp.momentum, hp.weight_decay)
    architect.optimizer.state.clear()
    project(model, a.space, a.pt_edge, a.tune_op, True)
    run_steps(model, architect, hp, cell_types, (xt, yt, xv, yv), a.steps, "tune", out)
    project(model, a.space, a.pt_edge, a.tune_op, False)
    # PT from the initial state (the steps above are ill-conditioned: their float32 and
    # float64 runs part by percents, which would swamp what the PT passes add)
    model.load_state_dict(init)
    model.set_arch_parameters(init_alphas)
    out["pt/acc"], out["pt/loss"] = pt_scores(model, a.space, a.pt_edge, xv, yv)
    for k, v in model.state_dict().items():  # after the PT passes (train-mode BN)
        if "running_" in k:
            out[f"pt_bn/{k}"] = v.numpy().copy()
    if a.space != "nb201":  # one topology decision, from the initial state again
        model.load_state_dict(init)
        model.set_arch_parameters(init_alphas)
        topology(model, a.darts_pt, a.seed, xv, yv, out)
    np.savez(a.out, **out)


def topology(model, root, seed, xv, yv, out):
    """The reference's own `project_edge` on the normal cell (its random node drawn from the
    first seed from `seed` on that draws the node with 5 inputs: 3 rounds), scored on the valid batch by an `infer` with the reference's signature (train-mode
    BN under no_grad; accuracy as a fraction). Writes `topo/nid`, `topo/kept` (edge ids),
    `topo/evals` [(edge removed, accuracy, loss)] in the order they ran, `topo_bn/KEY`."""
    import torch
    import torch.nn.functional as F
    from sota.cnn.projection import project_edge
    evals = []

    def infer(queue, net, log=False, _eval=False, weights_dict=None):
        net.eval() if _eval else net.train()
        with torch.no_grad():
            logits = net(xv, weights_dict=weights_dict)
            w = weights_dict["normal"]
            removed = [e for e in range(w.shape[0]) if float(w[e].abs().sum()) == 0.0]
            acc = float((logits.argmax(1) == yv).float().mean())
            loss = float(F.cross_entropy(logits, yv))
        evals.append((removed[0] if removed else -1, acc, loss))
        return acc, loss
    args = argparse.Namespace(proj_crit={"normal": "acc", "reduce": "acc"},
                              edge_decision="random")
    draw = seed  # the first seed from `seed` on whose draw is the node with 5 inputs (nid 2)
    while np.random.RandomState(draw).choice([0, 1, 2], size=1)[0] != 2:
        draw += 1
    np.random.seed(draw)
    nid, kept = project_edge(model, [(xv, yv)], args, infer, "normal")
    out["topo/nid"], out["topo/kept"] = np.int64(nid), np.asarray(kept, np.int64)
    out["topo/evals"] = np.asarray(evals, np.float64)
    for k, v in model.state_dict().items():
        if "running_" in k:
            out[f"topo_bn/{k}"] = v.numpy().copy()


if __name__ == "__main__":
    main()
