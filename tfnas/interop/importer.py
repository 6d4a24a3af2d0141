"""`tfnas import --from=darts-pt`: a search checkpoint of the authors' code as a tfnas run.

A checkpoint that `train_search.py` of ruocwang/darts-pt saved (`epoch`, `state_dict`,
`alpha`, `optimizer`, `arch_optimizer`, `scheduler`) becomes a run directory that `tfnas
select`, `tfnas analyze` and `tfnas report` take as if `tfnas search` had written it: the
supernet's weights, BN statistics and alphas through the name map (`tfnas.interop.
darts_pt`, checked both ways), the SGD momentum buffers and the alphas' Adam moments and step
(PT's tuning keeps the search's Adam, as the reference), and `config.json` with the space,
channels and cells read from the checkpoint. The space is the one of the checkpoint's
family whose supernet the map covers exactly (the `--space` given is tried first). No
PyTorch is needed (`tfnas.interop.torch_file`).
"""

import dataclasses
import hashlib
import os

import numpy as np
import tensorflow as tf

from tfnas.config import SearchConfig
from tfnas.errors import UsageError, WorkdirError
from tfnas.interop.darts_pt import map_variables, to_tf
from tfnas.interop.torch_file import read_torch_file
from tfnas.io import atomic_write_json, check_folder
from tfnas.search import SearchLoop, prepare_workdir
from tfnas.search.workdir import alphas_digest, log_epoch
from tfnas.spaces import SPACES, get_space

FAMILY_SPACES = {"darts": ("darts", "s1", "s2", "s3", "s4"), "nb201": ("nb201",)}
KEYS = ("epoch", "state_dict", "alpha")


def read_checkpoint(path):
    """The checkpoint's dict, checked to be a darts-pt search checkpoint."""
    ckpt = read_torch_file(path)
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in KEYS):
        have = sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise UsageError(f"{path} is not a darts-pt search checkpoint (expected the keys "
                         f"{', '.join(KEYS)}; it has {have})")
    flags = ckpt.get("candidate_flags")
    if isinstance(flags, dict) and not all(np.all(np.asarray(f)) for f in flags.values()):
        raise UsageError(f"{path} was saved during the reference's projection (edges already "
                         f"decided); import the search's own checkpoint instead")
    return ckpt


def shape_of(state_dict):
    """(family, channels, cells) of the supernet a state_dict belongs to (cells: NB201's
    per stage)."""
    stem = state_dict.get("stem.0.weight")
    cells = {int(k.split(".")[1]) for k in state_dict if k.startswith("cells.")}
    if stem is None or not cells:
        raise UsageError("the checkpoint's state_dict has no stem or cells: not a DARTS-PT "
                         "supernet")
    if any("<-" in k for k in state_dict):  # NB201 edges are named "j<-i"
        return "nb201", int(stem.shape[0]), (len(cells) - 2) // 3
    return "darts", int(stem.shape[0]) // 3, len(cells)


def _explicit(config, name, value):
    """The checkpoint's `value` of field `name`; an explicitly different flag is an error."""
    given, default = getattr(config, name), getattr(SearchConfig(), name)
    if given != default and given != value:
        raise UsageError(f"--{name}={given} contradicts the checkpoint ({name} {value}); leave "
                         f"it out")
    return value


def import_darts_pt(path, workdir, config, overwrite=False, log=print):
    """Writes a tfnas run directory from the darts-pt search checkpoint `path`.

    Args:
        config: a SearchConfig for everything the checkpoint does not say (the dataset the
            supernet is scored on, batch size, seed, ...); space, channels, layers and
            epochs come from the checkpoint.
    Returns:
        The magnitude Genotype of the imported supernet.
    Raises:
        UsageError: not such a checkpoint, or no space whose supernet it matches.
        WorkdirError: `workdir` holds another run and `overwrite` is False.
    """
    check_folder(workdir, "--workdir")
    if os.path.exists(os.path.join(workdir, "config.json")) and not overwrite:
        raise WorkdirError(f"{workdir} already holds a run; use another --workdir, or "
                           f"--overwrite to replace it with the import")
    ckpt = read_checkpoint(path)
    sd = {k: np.asarray(v) for k, v in ckpt["state_dict"].items()}
    family, channels, layers = shape_of(sd)
    config = dataclasses.replace(
        config, channels=_explicit(config, "channels", channels),
        layers=_explicit(config, "layers", layers), epochs=max(int(ckpt["epoch"]), 1))
    loop, pairs = _build_matching(config, family, sd, ckpt["alpha"], workdir, log)
    for key, var in pairs.items():
        var.assign(to_tf(var.path, sd[key]))
    for arch, alpha in zip(loop.model.archs, ckpt["alpha"]):
        arch.alpha.assign(np.asarray(alpha, np.float32))
    moved = _load_optimizers(loop, ckpt, pairs, log)
    prepare_workdir(workdir, loop.config, overwrite)
    epoch = loop.config.epochs - 1
    loop.checkpointer.save(epoch, {"epoch": epoch})
    soft = loop.model.softmax_numpy()
    log_epoch(workdir, {"epoch": epoch}, soft, tf.summary.create_noop_writer(),
              zip(loop.space.cell_types, loop.state.alphas))
    digest = hashlib.sha256()
    with open(path, "rb") as f:  # in chunks: a checkpoint may be larger than memory allows
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    digest = digest.hexdigest()
    atomic_write_json(os.path.join(workdir, "import.json"), {
        "from": "darts-pt", "checkpoint": os.path.abspath(path), "sha256": digest,
        "epoch": int(ckpt["epoch"]), "space": loop.config.space, "tensors": len(pairs),
        "optimizer_slots": moved, "not_imported": [k for k in ckpt if k not in (
            "epoch", "state_dict", "alpha", "optimizer", "arch_optimizer")]})
    genotype = loop.current_genotype(meta={
        "method": "darts-pt import", "seed": loop.config.seed, "run": os.path.abspath(workdir),
        "imported_from": os.path.abspath(path), "alphas_digest": alphas_digest(soft)})
    genotype.save(os.path.join(workdir, "genotype_magnitude.json"))  # last: the run is whole
    log(f"imported {len(pairs)} tensors, {len(loop.state.alphas)} alphas and {moved} "
        f"optimizer slots ({loop.config.space}, C{channels}, {layers} cells, epoch "
        f"{ckpt['epoch']}) into {workdir}")
    return genotype


def _build_matching(config, family, sd, alphas, workdir, log):
    """(SearchLoop, name pairs) of the first space of `family` (config.space first) whose
    supernet the checkpoint matches."""
    names = [n for n in FAMILY_SPACES[family] if n in SPACES.names()]
    if config.space != SearchConfig().space:  # given: only that one
        names = [config.space]
    keys = [k for k in sd if not k.endswith("num_batches_tracked")]
    shapes = {k: sd[k].shape for k in keys}
    alpha_shapes = [tuple(np.shape(a)) for a in alphas]
    errors, data = [], None
    for name in names:
        space = get_space(name)
        if [tuple(a) for a in _alpha_shapes(space)] != alpha_shapes:
            errors.append(f"{name}: alphas {alpha_shapes}")
            continue
        cfg = dataclasses.replace(config, space=name).validate()
        loop = SearchLoop(cfg, workdir, tf.distribute.get_strategy(), log=log, data=data)
        data = loop.data
        n_cls = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else None
        if n_cls is not None and n_cls != data.num_classes:
            raise UsageError(f"the checkpoint's classifier has {n_cls} classes; "
                             f"--dataset={cfg.dataset} has {data.num_classes}")
        try:
            return loop, map_variables(loop.model, space, keys, shapes, cfg.layers)
        except UsageError as e:
            errors.append(f"{name}: {e}")
    raise UsageError("no space matches the checkpoint: " + " | ".join(errors)[:600])


def _alpha_shapes(space):
    return [(space.cells[t].num_edges, space.cells[t].max_ops) for t in space.cell_types]


def _load_optimizers(loop, ckpt, pairs, log):
    """The SGD momentum buffers (by parameter index: the state_dict's parameters in order)
    and the alphas' Adam moments and step; returns how many slots were set."""
    moved, w_opt, a_opt = 0, loop.state.w_opt, loop.state.a_opt
    params = [k for k in pairs if not k.endswith(("running_mean", "running_var"))]
    sgd = ckpt.get("optimizer") or {}
    groups = sgd.get("param_groups") or [{}]
    if not sgd:
        log("  no SGD state in the checkpoint: momentum buffers start at zero")
    elif len(groups[0].get("params", ())) != len(params):
        log(f"  the SGD state covers {len(groups[0].get('params', ()))} tensors, the model "
            f"has {len(params)} parameters: momentum buffers not imported (PT's tuning starts "
            f"a fresh SGD anyway)")
    else:
        for i, st in sgd.get("state", {}).items():
            if "momentum_buffer" in st:
                var = pairs[params[groups[0]["params"].index(i)]]
                w_opt.buffer(var).assign(to_tf(var.path, np.asarray(st["momentum_buffer"])))
                moved += 1
    adam = (ckpt.get("arch_optimizer") or {}).get("state", {})
    for j in range(len(loop.state.alphas)):
        st = adam.get(j)
        if st and "exp_avg" in st:
            a_opt.m[j].assign(np.asarray(st["exp_avg"], np.float32))
            a_opt.v[j].assign(np.asarray(st["exp_avg_sq"], np.float32))
            a_opt.iterations.assign(int(np.asarray(st["step"])))
            moved += 2
    return moved
