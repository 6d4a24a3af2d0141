"""Interoperability with the authors' PyTorch DARTS-PT code (ruocwang/darts-pt).

The name map: every entry of the reference supernets' `state_dict` (`sota/cnn`
DartsNetworkProj for the DARTS family, `nasbench201` TinyNetworkDartsProj) to the path of
the tfnas supernet variable that holds it, and the layout change of each tensor. It is what
`tools/reference_parity.py` compares the two codes with, and what `tfnas import
--from=darts-pt` (`tfnas.interop.importer`) turns a reference search checkpoint into a
tfnas run directory with. `map_variables` checks it both ways: every reference entry lands
on a tfnas variable of the same shape, and every tfnas variable is reached.
"""

from tfnas.errors import UsageError

BN_KEYS = {"running_mean": "moving_mean", "running_var": "moving_variance",
           "weight": "gamma", "bias": "beta"}
SEP = {"1": "depthwise_0", "2": "pointwise_0", "3": "bn_0", "5": "depthwise_1",
       "6": "pointwise_1", "7": "bn_1"}


def _outer_path(key):
    """The tfnas path of a state_dict entry outside the cells (stem, head BN, classifier),
    None for `num_batches_tracked` (tfnas's BN momentum is fixed: no counter)."""
    p = key.split(".")
    if p[-1] == "num_batches_tracked":
        return None
    if p[0] == "stem":
        return "stem/conv" if p[1] == "0" else f"stem/bn/{BN_KEYS[p[2]]}"
    if p[0] == "lastact":
        return f"head_bn/{BN_KEYS[p[2]]}"
    if p[0] == "classifier":
        return f"classifier/{'kernel' if p[1] == 'weight' else 'bias'}"
    raise KeyError(key)


def darts_path(key, space, reduction):
    """The tfnas supernet path (without the model's own name) of reference state_dict `key`
    (`sota/cnn` DartsNetworkProj), or None for entries tfnas has no counterpart of."""
    p = key.split(".")
    if p[0] != "cells" or p[-1] == "num_batches_tracked":
        return _outer_path(key)
    cell = f"cell_{p[1]}"
    if p[2].startswith("preprocess"):
        pre = f"{cell}/pre{p[2][-1]}"
        if p[3] == "op":  # ReLUConvBN: 0 relu, 1 conv, 2 bn
            return f"{pre}/conv" if p[4] == "1" else f"{pre}/bn/{BN_KEYS[p[5]]}"
        return f"{pre}/{p[3]}" if p[3].startswith("conv") else f"{pre}/bn/{BN_KEYS[p[4]]}"
    edge, k, rest = int(p[3]), int(p[5]), p[6:]
    ctype = "reduce" if reduction[int(p[1])] else "normal"
    node, inp = space.cells[ctype].edges[edge]
    op = space.cells[ctype].ops[edge][k]
    base = f"{cell}/edge_{inp}_{node}/{op}"
    if "pool" in op:  # Sequential(pool, BN)
        return f"{base}/bn/{BN_KEYS[rest[1]]}"
    if rest[0] in ("conv_1", "conv_2"):  # FactorizedReduce (skip_connect, stride 2)
        return f"{base}/{rest[0]}"
    if rest[0] == "bn":
        return f"{base}/bn/{BN_KEYS[rest[1]]}"
    layer = SEP[rest[1]]
    return f"{base}/{layer}" if layer[0] != "b" else f"{base}/{layer}/{BN_KEYS[rest[2]]}"


def nb201_path(key, space, layers):
    """The tfnas path of reference state_dict `key` (nasbench201 TinyNetworkDartsProj with N
    = `layers` search cells per stage), or None where tfnas has no counterpart."""
    p = key.split(".")
    if p[0] != "cells" or p[-1] == "num_batches_tracked":
        return _outer_path(key)
    i = int(p[1])  # N cells, a reduction block, N cells, a reduction block, N cells
    stage, pos = divmod(i, layers + 1)
    if pos == layers:  # the ResNet reduction block after stage `stage`
        block = f"reduction_{stage + 1}"
        if p[2] == "downsample":
            return f"{block}/shortcut"
        return f"{block}/{p[2]}/conv" if p[4] == "1" else f"{block}/{p[2]}/bn/{BN_KEYS[p[5]]}"
    node, inp = (int(x) for x in p[3].split("<-"))
    op = space.cells["cell"].ops[space.cells["cell"].edge_id(node, inp)][int(p[4])]
    base = f"cell_{stage}_{pos}/edge_{inp}_{node}/{op}"
    return f"{base}/conv" if p[6] == "1" else f"{base}/bn/{BN_KEYS[p[7]]}"


def to_tf(path, value):
    """A reference tensor in tfnas's layout."""
    if value.ndim == 4:  # [out, in, kh, kw] -> [kh, kw, in, out]; depthwise [C, 1, kh, kw]
        return value.transpose(2, 3, 0, 1) if "depthwise" in path else \
            value.transpose(2, 3, 1, 0)
    if value.ndim == 2:  # Linear [out, in] -> Dense [in, out]
        return value.T
    return value


def map_variables(model, space, keys, shapes, layers):
    """{reference key: tfnas variable} for the `state_dict` `keys` (with their reference
    `shapes`) of a supernet of `space` (`layers`: cells; NB201: cells per stage).

    Raises:
        UsageError: an entry without a tfnas counterpart of its shape, or a tfnas variable
            (outside the architecture parameters) that no entry reaches; the message lists
            the first ones.
    """
    prefix = model.name + "/"
    by_path = {v.path[len(prefix):]: v for v in model.variables if v.path.startswith(prefix)}
    if space.family == "nb201":
        name_of = lambda key: nb201_path(key, space, layers)  # noqa: E731
    else:
        reduction = [bool(r) for _, _, r in model.search_cells()]
        name_of = lambda key: darts_path(key, space, reduction)  # noqa: E731
    pairs, unmatched = {}, []
    for key in keys:
        try:
            path = name_of(key)
        except (KeyError, IndexError, ValueError):
            unmatched.append(f"{key}: no tfnas counterpart")
            continue
        if path is None:
            continue
        if path not in by_path:
            unmatched.append(f"{key} -> {path}: no such tfnas variable")
            continue
        want, got = tuple(by_path[path].shape), _tf_shape(path, tuple(shapes[key]))
        if want != got:
            unmatched.append(f"{key} -> {path}: shape {got} vs tfnas {want}")
            continue
        pairs[key] = by_path[path]
    reached = {v.path[len(prefix):] for v in pairs.values()}
    unmatched += [f"tfnas {p}: no reference entry" for p in sorted(set(by_path) - reached)]
    if unmatched:
        more = f" (and {len(unmatched) - 6} more)" if len(unmatched) > 6 else ""
        raise UsageError(f"the {space.name} supernet does not match the checkpoint: "
                         + "; ".join(unmatched[:6]) + more)
    return pairs


def _tf_shape(path, shape):
    if len(shape) == 4:
        return (shape[2], shape[3], shape[0], shape[1]) if "depthwise" in path else \
            (shape[2], shape[3], shape[1], shape[0])
    return shape[::-1] if len(shape) == 2 else shape
