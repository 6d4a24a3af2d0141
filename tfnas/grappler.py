"""Grappler settings for tfnas's traced functions: cheaper graph optimisation of the huge
supernet step, which dominates the time to the first step.

Two settings, both in the rewriter options of the eager context's config, which every
function call hands to Grappler (TF2 has no public switch for either):

- **Memory optimizer off** (`memory_optimization: NO_MEM_OPT`). On the supernet's step it
  is the most expensive pass by far: on DARTS C8 L5 B32 it took 15.6 s of the 50.7 s first
  call (rewriting the graph's large sums, +5,450 nodes); turning it off changed neither the
  steady step time nor the numbers. `TFNAS_MEMORY_OPTIMIZER=1` keeps TensorFlow's default.
- **One meta-optimizer iteration** (`meta_optimizer_iterations: ONE`; TF's default is two).
  The second round of the same passes over the ~35k-node graph took 9.5 s of the 29.6 s
  first call at C8 L5 and removed 17 nodes; at C16 L8 the first call went 69 -> 45 s with
  the steady step unchanged. It changes float rounding (the graph is fused slightly
  differently): losses agree to ~3e-5 relative after 6 steps at C8 L5 (tests/test_grappler.py
  bounds it). `TFNAS_GRAPPLER_ITERATIONS=2` keeps TensorFlow's default.

And for the search only (`apply_settings(search=True)`, what `SearchLoop` calls), the passes
that do nothing to the supernet step's graph but take time on it (`TFNAS_GRAPPLER_PASSES=1`
keeps them): layout (NHWC on CPU already: 0 nodes changed, 3.1 s of the C16 L8 first call),
loop (0 nodes, 0.7 s), implementation selector (0.35 s) and the TFG passes (shape inference
and control-flow sinking, 4.2 s). The search's losses and alphas are bit-identical with and
without them (tests/test_grappler.py). The remapper (2 nodes fused, 3.9 s) and the
dependency optimizer (control edges, 4.5 s) stay on: with both off, a search run with
`--steps_per_execution=3` (steps inside a loop) no longer matched one step per call to the
bit, and keeping either restored it. `tfnas train` keeps every pass.

Only on CPUs, where they were measured: when TensorFlow sees a GPU, nothing is changed
(TensorFlow's defaults: its layout optimizer, for one, converts to NCHW for cuDNN) until a
GPU measurement says otherwise (`tools/gpu_check.py` reports the settings in force).

Measurements: docs/PERFORMANCE.md. This wraps a private property of TensorFlow's context
(`tensorflow.python.eager.context.Context.config`): when that is not there (another
TensorFlow), it changes nothing and `apply_settings()` returns an empty dict.
"""

import os

_APPLIED = {}


SEARCH_PASSES_OFF = ("layout_optimizer", "loop_optimization", "implementation_selector")


def _wanted(search=False):
    from tensorflow.core.protobuf import rewriter_config_pb2 as rc
    out = {}
    if search and os.environ.get("TFNAS_GRAPPLER_PASSES") != "1":
        out.update({name: rc.RewriterConfig.OFF for name in SEARCH_PASSES_OFF})
        out["disable_tfg_optimizer"] = True
    if os.environ.get("TFNAS_MEMORY_OPTIMIZER") != "1":
        out["memory_optimization"] = rc.RewriterConfig.NO_MEM_OPT
    if os.environ.get("TFNAS_GRAPPLER_ITERATIONS") != "2":
        out["meta_optimizer_iterations"] = rc.RewriterConfig.ONE
    return out


def apply_settings(search=False):
    """Applies tfnas's Grappler settings to functions traced or run from now on (the
    environment's opt-outs are read the first time; `search=True` adds the search's passes
    off, for the rest of the process). Returns the settings in force, {rewriter option:
    value}."""
    if _APPLIED and (not search or _APPLIED.get("search")):
        return dict(_APPLIED["settings"])
    if gpu_visible():  # measured on CPUs only: GPUs keep TensorFlow's defaults
        return {}
    try:
        from tensorflow.python.eager import context
        prop = context.Context.__dict__["config"]
        wanted = _wanted(search)
    except (ImportError, KeyError, AttributeError):
        return {}
    if _APPLIED:  # the property is patched already: it reads the settings on every call
        _APPLIED["settings"].update(wanted)
        _APPLIED["search"] = True
        return dict(_APPLIED["settings"])
    getter = prop.fget

    def config(self):
        cfg = getter(self)
        for key, value in _APPLIED["settings"].items():
            setattr(cfg.graph_options.rewrite_options, key, value)
        return cfg

    context.Context.config = property(config, prop.fset, prop.fdel, prop.__doc__)
    _APPLIED.update(settings=dict(wanted), search=search)
    return dict(wanted)


def gpu_visible():
    """Whether TensorFlow sees a GPU (listing devices does not initialise the runtime)."""
    try:
        import tensorflow as tf
        return bool(tf.config.list_physical_devices("GPU"))
    except Exception:  # noqa: BLE001 (no TensorFlow device API: treat as CPU)
        return False


def settings_in_force():
    """{"memory_optimizer": "off"|"default", "meta_optimizer_iterations": 1|2, "passes_off":
    [the search's passes turned off]}, read back from the context's config (what bench.py
    reports)."""
    try:
        from tensorflow.core.protobuf import rewriter_config_pb2 as rc
        from tensorflow.python.eager import context
        opts = context.context().config.graph_options.rewrite_options
    except (ImportError, AttributeError):
        return {}
    off = [name for name in SEARCH_PASSES_OFF if getattr(opts, name) == rc.RewriterConfig.OFF]
    return {"memory_optimizer": "off" if opts.memory_optimization == rc.RewriterConfig.NO_MEM_OPT
            else "default",
            "meta_optimizer_iterations": 1 if opts.meta_optimizer_iterations ==
            rc.RewriterConfig.ONE else 2,
            "passes_off": off + (["tfg"] if opts.disable_tfg_optimizer else [])}
