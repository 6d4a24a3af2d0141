"""Run in a subprocess (needs its own TF runtime): mirrored on 2 logical CPUs vs 1 device."""

import json
import sys
import tempfile

from tfnas.distribute import split_cpu

split_cpu(2)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, sys.argv[1])
from helpers import tiny_config  # noqa: E402
from tfnas.search import SearchLoop  # noqa: E402

tmp = tempfile.mkdtemp()
cfg = tiny_config(tmp, bn="global", epochs=1, steps_per_epoch=3, channels=4)
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
loop_m = SearchLoop(cfg, tmp + "/m", mirrored, is_chief=False, log=lambda s: None)
loop_1 = SearchLoop(cfg, tmp + "/1", tf.distribute.get_strategy(), is_chief=False,
                    log=lambda s: None)
for v, w in zip(loop_1.model.variables, loop_m.model.variables):
    v.assign(w.numpy())
calls = {"batch_reduce_to": 0, "reduce": 0, "sizes": []}
_batch, _reduce = type(mirrored.extended).batch_reduce_to, type(mirrored).reduce


def _count(name, fn):
    def wrapped(self, *a, **k):
        calls[name] += 1
        if name == "batch_reduce_to":
            calls["sizes"].append(len(a[1]))  # values in one batched all-reduce
        return fn(self, *a, **k)
    return wrapped


type(mirrored.extended).batch_reduce_to = _count("batch_reduce_to", _batch)
type(mirrored).reduce = _count("reduce", _reduce)
train, valid = loop_m.batches(0)
loop_m.state._step_fn.get_concrete_function(next(iter(train)), next(iter(valid)))  # one trace
# gradient lists: the alpha list and the weight list (sync BN all-reduces 3 values per layer)
traced = {"gradient_batches": sum(n in (len(loop_m.state.alphas), len(loop_m.state.weights))
                                  for n in calls["sizes"]), "reduce": calls["reduce"]}
type(mirrored.extended).batch_reduce_to, type(mirrored).reduce = _batch, _reduce
loop_m.run()
loop_1.run()
copies = [mirrored.experimental_local_results(a._value) for a in loop_m.state.alphas]  # tf variable
replica_diff = max(float(np.abs(c[0].numpy() - c[1].numpy()).max()) for c in copies)
alpha_diff = max(float(np.abs(a.numpy() - b.numpy()).max())
                 for a, b in zip(loop_m.state.alphas, loop_1.alphas))
weight_diff = max(float(np.abs(a.numpy() - b.numpy()).max())
                  for a, b in zip(loop_m.state.weights, loop_1.weights))
print(json.dumps({"replicas": mirrored.num_replicas_in_sync, "replica_diff": replica_diff,
                  "alpha_diff": alpha_diff, "weight_diff": weight_diff,
                  "reductions_per_step": traced, "weights": len(loop_m.state.weights)}))

# selection state (PT masks, SGAS / PT decisions, topology removals) reaches every replica
arch = loop_m.model.archs[0]
arch.mask_op(0, 1)
arch.fix_edge(1, 0)
arch.remove_edge(2)
state_diff = max(float(np.abs(np.asarray(c[0]) - np.asarray(c[1])).max())
                 for v in (arch.op_mask, arch.fixed_w, arch.is_fixed, arch.edge_mask)
                 for c in [mirrored.experimental_local_results(v._value)])
print(json.dumps({"selection_state_replica_diff": state_diff}))
