"""Budget-aware selection: keep, at each decision, the most important op that still lets the
final network fit a parameter, multiply-add or latency budget.

The cost of a discrete network is additive over its kept edges:

    cost(genotype) = fixed + sum over kept edges e of cost[cell type][e][op]

where `cost[t][e][op]` sums the op's cost over every cell of type `t` of the final network
(each cell at its own channels and resolution) and `fixed` (stems, preprocessing, head) does
not depend on the genotype. Both come from the final network itself (`tfnas.build_model` at
the retraining size), so the prediction is exact for parameters and multiply-adds:

  * params: trainable parameters of the training network without the auxiliary head (the
    count the paper reports);
  * macs: multiply-adds of the convolutions and dense layers of the deployed graph
    (`tfnas.deploy.to_builtin`), per image;
  * latency_ms: onnxruntime batch-1 median of each op measured alone (`latency_table`), plus
    the measured remainder of the whole network: an additive estimate.

During selection the lower bound of the final cost given the decisions so far (undecided
edges at their cheapest candidate, each DARTS node keeping its two cheapest live inputs)
must stay within the budget; it does after every decision made through `Budget`, so the
final genotype fits.
"""

import dataclasses

import numpy as np

from tfnas.cost import count_macs, count_params
from tfnas.errors import UsageError

KINDS = ("params", "macs", "latency_ms")


@dataclasses.dataclass(frozen=True)
class Network:
    """The final (retraining) network the budget is about."""
    num_classes: int
    input_shape: tuple
    channels: int
    layers: int

    def to_json(self):
        return {"num_classes": self.num_classes, "input_shape": list(self.input_shape),
                "channels": self.channels, "layers": self.layers}


def _cells(model):
    """[(cell type, channels, input (H, W, C) of its edges, reduction)] of a discrete net."""
    out = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "DiscreteCell":
            h, w = layer.input[1].shape[1:3]
            out.append(("reduce" if layer.reduction else "normal", layer.channels,
                        (int(h), int(w), layer.channels), layer.reduction))
        elif kind == "NB201Cell":
            out.append(("cell", layer.channels, tuple(int(d) for d in layer.input.shape[1:]),
                        False))
    return out


def _edge_inputs(cspace, shape, reduction):
    """(edge, stride, input shape) of every edge of a cell whose preprocessed inputs have
    `shape`: in a reduction cell the edges from the two inputs run at stride 2 and those from
    intermediate nodes at the halved resolution."""
    h, w, c = shape
    half = (-(-h // 2), -(-w // 2), c)
    for e, (_, j) in enumerate(cspace.edges):
        if reduction:
            yield e, (2 if j < 2 else 1), (shape if j < 2 else half)
        else:
            yield e, 1, shape


def _op_instances(space, model):
    """(cell type, edge, op index, op name, input shape, channels, stride) of every
    candidate op of every cell of the discrete network `model`."""
    for ctype, channels, shape, reduction in _cells(model):
        for e, stride, edge_shape in _edge_inputs(space.cells[ctype], shape, reduction):
            for k, name in enumerate(space.cells[ctype].ops[e]):
                yield ctype, e, k, name, edge_shape, channels, stride


class OpCoster:
    """Cost of one candidate op at one input shape and stride, cached."""

    def __init__(self, kind, latency=None):
        self.kind, self.latency, self.cache = kind, latency or {}, {}

    def __call__(self, name, shape, channels, stride):
        key = (name, tuple(shape), channels, stride)
        if key not in self.cache:
            self.cache[key] = self._measure(*key)
        return self.cache[key]

    def _measure(self, name, shape, channels, stride):
        if name == "none":
            return 0.0
        if self.kind == "latency_ms":
            key = op_key(name, shape, stride)
            if key not in self.latency:
                raise UsageError(f"the latency table has no entry {key!r}; measure it for "
                                 f"this network (tfnas.derive.budget.latency_table)")
            return float(self.latency[key])
        op, deployed = _single_op(name, shape, channels, stride)
        if self.kind == "params":
            return float(count_params(op))
        return float(count_macs(deployed))


def op_key(name, shape, stride):
    return f"{name}@{shape[0]}x{shape[1]}x{shape[2]}/s{stride}"


def _single_op(name, shape, channels, stride):
    """(the tfnas op layer built at `shape`, its deployed graph as a keras.Model)."""
    import keras

    from tfnas.deploy import _Builder
    from tfnas.ops import build_op
    x = keras.Input(shape=tuple(shape))
    op = build_op(name, channels, stride, True, False, name="op")
    op(x)
    return op, keras.Model(x, _Builder().op(x, op, "op"))


class Budget:
    """A cost table of one space and final network, and a limit on the final cost.

    Args:
        space: the SearchSpace.
        kind: "params", "macs" or "latency_ms".
        limit: the largest allowed cost of the final network.
        network: the final Network (retraining size).
        latency: {op_key: ms} and "network@..." entries (kind latency_ms only).
    """

    def __init__(self, space, kind, limit, network, latency=None):
        if kind not in KINDS:
            raise UsageError(f"budget kind {kind!r} is unknown; expected one of {KINDS}")
        self.space, self.kind, self.limit, self.network = space, kind, float(limit), network
        coster = OpCoster(kind, latency)
        ref = _reference_genotype(space)
        model = _build(ref, network)
        self.table = {t: [np.zeros(len(ops)) for ops in space.cells[t].ops]
                      for t in space.cell_types}
        for ctype, e, k, name, shape, channels, stride in _op_instances(space, model):
            self.table[ctype][e][k] += coster(name, shape, channels, stride)
        self.fixed = self._total(model, latency) - self._edges_cost(ref)

    def _total(self, model, latency):
        if self.kind == "params":
            return float(count_params(model))
        if self.kind == "macs":
            from tfnas.deploy import to_builtin
            return float(count_macs(to_builtin(model)))
        key = "network@" + _network_key(self.network)
        if key not in latency:
            raise UsageError(f"the latency table has no whole-network entry {key!r}")
        return float(latency[key])

    def _edges_cost(self, genotype):
        total = 0.0
        for ctype in self.space.cell_types:
            cspace = self.space.cells[ctype]
            for edge in genotype.cells[ctype]["edges"]:
                e = cspace.edges.index((edge.node, edge.input))
                total += self.table[ctype][e][cspace.ops[e].index(edge.op)]
        return total

    def cost(self, genotype):
        """Predicted cost of the final network of `genotype`."""
        return self.fixed + self._edges_cost(genotype)

    # --- bounds over the selection state ---------------------------------------------------
    def _edge_costs(self, ctype, arch, override):
        """Per edge: the decided op's cost, or the cheapest candidate's (state read once)."""
        decided, fixed = arch.decided(), np.argmax(arch.fixed_w.numpy(), axis=-1)
        costs = []
        for e, table in enumerate(self.table[ctype]):
            if override is not None and override[:2] == (ctype, e):
                costs.append(table[override[2]])
            elif decided[e]:
                costs.append(table[int(fixed[e])])
            else:
                costs.append(min(table[k] for k in self.space.candidates(ctype, e)))
        return costs

    def lower_bound(self, archs, override=None, removed=None):
        """The cheapest final cost still reachable.

        Args:
            archs: cell type -> ArchParameters (decisions and removed edges).
            override: (cell type, edge, op index) assumed fixed.
            removed: (cell type, edge) assumed removed.
        """
        total = self.fixed
        for ctype in self.space.cell_types:
            cspace, arch = self.space.cells[ctype], archs[ctype]
            live = arch.live().copy()
            if removed is not None and removed[0] == ctype:
                live[removed[1]] = False
            edge_costs = self._edge_costs(ctype, arch, override)
            for node in cspace.nodes:
                costs = sorted(edge_costs[e] for e in cspace.node_edges(node) if live[e])
                total += sum(costs[:self.space.inputs_per_node])
        return total

    def check_feasible(self, archs):
        """Raises UsageError (before any work) when even the cheapest choices exceed it."""
        low = self.lower_bound(archs)
        if low > self.limit:
            raise UsageError(f"--max_{self.kind}={self.limit:g} cannot be met: the cheapest "
                             f"architecture of space {self.space.name!r} at "
                             f"{self.network.channels} channels, {self.network.layers} layers "
                             f"costs {low:g} {self.kind}")

    def op_fits(self, archs, ctype, edge, k):
        return self.lower_bound(archs, override=(ctype, edge, k)) <= self.limit + 1e-9

    def removal_fits(self, archs, ctype, edge):
        return self.lower_bound(archs, removed=(ctype, edge)) <= self.limit + 1e-9

    def to_json(self):
        return {"kind": self.kind, "limit": self.limit, "network": self.network.to_json()}


def _network_key(net):
    return f"{net.channels}c{net.layers}l{net.num_classes}k" + "x".join(
        str(d) for d in net.input_shape)


def _reference_genotype(space):
    """Any valid genotype of `space` (its fixed cost is what is left after its edges)."""
    from tfnas.derive.magnitude import magnitude_genotype
    weights = {t: np.ones((space.cells[t].num_edges, space.cells[t].max_ops))
               for t in space.cell_types}
    return magnitude_genotype(space, weights)


def _build(genotype, network):
    from tfnas.models import build_model
    return build_model(genotype, network.num_classes, network.input_shape, network.channels,
                       network.layers)


def latency_table(space, network, threads=1, runs=30, warmup=5, log=print):
    """Measures, once on the target, the onnxruntime batch-1 median latency (ms) of every
    candidate op alone at every shape the final network uses, and of one whole network.
    Returns {op_key: ms, "network@...": ms} for `Budget(kind="latency_ms", latency=...)`."""
    import os
    import tempfile

    import tensorflow as tf
    import tf2onnx

    from tfnas.artifacts import load_runner
    from tfnas.deploy import to_builtin
    from tfnas.profile import time_runner

    def measure(model):
        if len(model.layers) <= 1:  # the identity: nothing to run
            return 0.0
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            spec = (tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32),)
            tf2onnx.convert.from_keras(model, input_signature=spec, output_path=path)
            run = load_runner(path, threads=threads)
            x = np.zeros((1,) + tuple(model.input_shape[1:]), np.float32)
            return time_runner(run, x, runs, warmup)["median_ms"]

    table = {}
    ref = _build(_reference_genotype(space), network)
    for _, _, _, name, shape, channels, stride in _op_instances(space, ref):
        key = op_key(name, shape, stride)
        if name != "none" and key not in table:
            table[key] = measure(_single_op(name, shape, channels, stride)[1])
            log(f"  {key}: {table[key]:.3f} ms")
    table["network@" + _network_key(network)] = measure(to_builtin(ref))
    return table
