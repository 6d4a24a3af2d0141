"""Grappler settings for tfnas's traced functions.

TensorFlow's Grappler memory optimizer is on by default and TF2 has no public switch for it
(`tf.config.optimizer.set_experimental_options` has no `memory_optimization` key). On the
supernet's step it is the most expensive pass by far: on DARTS C8 L5 B32 it took 15.6 s of
the 50.7 s first call (rewriting the graph's large sums, +5,450 nodes), and turning it off
changed neither the steady step time nor the numbers (docs/PERFORMANCE.md has the
measurements, also of peak memory).

`skip_memory_optimizer()` sets `memory_optimization: NO_MEM_OPT` in the rewriter options of
the eager context's config, which every function call hands to Grappler. It wraps a private
property of TensorFlow's context (`tensorflow.python.eager.context.Context.config`): when that
is not there (another TensorFlow), it changes nothing and returns False.
`TFNAS_MEMORY_OPTIMIZER=1` keeps TensorFlow's default.
"""

import os

_APPLIED = []


def skip_memory_optimizer():
    """Turns Grappler's memory optimizer off for functions traced or run from now on, once
    per process. Returns True when it is off."""
    if os.environ.get("TFNAS_MEMORY_OPTIMIZER") == "1":
        return False
    if _APPLIED:
        return True
    try:
        from tensorflow.core.protobuf import rewriter_config_pb2
        from tensorflow.python.eager import context
        prop = context.Context.__dict__["config"]
        getter = prop.fget
    except (ImportError, KeyError, AttributeError):
        return False
    off = rewriter_config_pb2.RewriterConfig.NO_MEM_OPT

    def config(self):
        cfg = getter(self)
        cfg.graph_options.rewrite_options.memory_optimization = off
        return cfg

    context.Context.config = property(config, prop.fset, prop.fdel, prop.__doc__)
    _APPLIED.append(True)
    return True


def memory_optimizer_skipped():
    """True when this process runs its functions without the memory optimizer."""
    try:
        from tensorflow.core.protobuf import rewriter_config_pb2
        from tensorflow.python.eager import context
        mode = context.context().config.graph_options.rewrite_options.memory_optimization
        return mode == rewriter_config_pb2.RewriterConfig.NO_MEM_OPT
    except (ImportError, AttributeError):
        return False
