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
cfg = tiny_config(tmp, sync_bn=True, epochs=1, steps_per_epoch=3, channels=4)
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
loop_m = SearchLoop(cfg, tmp + "/m", mirrored, is_chief=False, log=lambda s: None)
loop_1 = SearchLoop(cfg, tmp + "/1", tf.distribute.get_strategy(), is_chief=False,
                    log=lambda s: None)
for v, w in zip(loop_1.model.variables, loop_m.model.variables):
    v.assign(w.numpy())
loop_m.run()
loop_1.run()
copies = [mirrored.experimental_local_results(a._value) for a in loop_m.alphas]  # tf variable
replica_diff = max(float(np.abs(c[0].numpy() - c[1].numpy()).max()) for c in copies)
alpha_diff = max(float(np.abs(a.numpy() - b.numpy()).max())
                 for a, b in zip(loop_m.alphas, loop_1.alphas))
weight_diff = max(float(np.abs(a.numpy() - b.numpy()).max())
                  for a, b in zip(loop_m.weights, loop_1.weights))
print(json.dumps({"replicas": mirrored.num_replicas_in_sync, "replica_diff": replica_diff,
                  "alpha_diff": alpha_diff, "weight_diff": weight_diff}))
