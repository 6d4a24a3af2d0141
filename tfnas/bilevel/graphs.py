"""The traced functions of a search state, and graphs specialised to the decided structure.

Selection decides edges one by one: a decided edge keeps one op and a removed edge none, so
most of the supernet's ops end up multiplied by a weight that is zero for good. A graph
traced `leaving_out` those ops (`Supernet.zero_ops`) computes the same function (adding
w * op(x) = 0 changes no sum and its gradient is zero), with less work the more edges are
decided: on DARTS C8 L5 with 13 of 14 edges decided, the PT scoring pass runs 2.6x and
the tuning step 2.5x faster than the full graph (docs/PERFORMANCE.md).

A new graph costs a trace, and it is not bit-identical: Grappler fuses and reorders the
smaller graph's sums differently (losses differ in the 7th digit; tests/test_graphs.py bounds
it). So the choice must not depend on timing or history, or the same command (or a resumed
one) could compute different numbers: `LoopGraphs.refresh(kind, calls_ahead)` picks, from
the selection state and the work ahead alone, either the full graph or the one leaving out
every zero op. Under `mode="auto"` it prunes when the calls ahead, times the share of work
saved (an op-count estimate), exceed `TRACE_CALLS` calls of the smaller graph (a trace
costs about 15-50 calls of the full graph on the benchmark configs); `"always"` prunes
whenever an op is zero for good, `"never"` keeps the full graph (the search's numbers). Every worker
of a multi-worker run makes the same choice, so their collectives match.
"""

import tensorflow as tf

MODES = ("auto", "always", "never")
KINDS = ("eval", "step")
TRACE_CALLS = 50
# Estimated cost (in OP_COST units) of an op that a run-time-skipping graph skips: the
# tf.cond that skips it (measured on DARTS C8 L5 B32 with 13 of 14 edges decided: 101 ms a
# scoring call against 70 ms for the graph without the zero ops, ~0.17 units per op).
SKIP_COST = 0.17
# Relative work of an op in the cost estimate (unknown names count 1; each cell adds 1 for
# its preprocessing). Only used to predict the share of work a smaller graph leaves.
OP_COST = {"none": 0.0, "skip_connect": 0.2, "max_pool_3x3": 0.5, "avg_pool_3x3": 0.5,
           "sep_conv_3x3": 2.0, "sep_conv_5x5": 2.0, "sep_conv_7x7": 2.0}


class LoopGraphs:
    """Owns a SearchState's `_eval_fn`, `_step_fn` and `_steps_fn`.

    Args:
        state: the SearchState (its `eval_step`, `step`, `steps` are traced).
        mode: "auto", "always" or "never" (see the module docstring).
    """

    def __init__(self, state, mode="auto"):
        self.state = state
        self.left_out, self.skip_at_run_time = {}, frozenset()
        self.set_mode(mode)
        self.retraces = {k: 0 for k in KINDS}
        for kind in KINDS:
            self._install(kind, frozenset())

    def set_mode(self, mode, skip_at_run_time=()):
        """`skip_at_run_time`: kinds whose graphs skip zero-weight ops with a `tf.cond` per
        op (`Supernet.leaving_out(skip_zero=True)`): one trace serves every later decision
        and mask, so selection need not retrace to skip what it decided; a graph leaving
        the zero ops out is then traced only when the work ahead pays for it against this
        one (SKIP_COST). The same numbers up to float rounding."""
        if mode not in MODES:
            raise ValueError(f"graph mode {mode!r}: expected one of {', '.join(MODES)}")
        self.mode = mode
        skip = frozenset(skip_at_run_time)
        if not skip <= set(KINDS):
            raise ValueError(f"graph kinds {sorted(skip)}: expected among {', '.join(KINDS)}")
        changed, self.skip_at_run_time = skip ^ self.skip_at_run_time, skip
        for kind in changed & set(self.left_out):
            self._install(kind, self.left_out[kind])

    # --- tracing -------------------------------------------------------------------------
    def _traced(self, fn, left_out, skip, **kwargs):
        model = self.state.model

        def body(*args, **kw):
            with model.leaving_out(left_out, skip):  # read while tracing only
                return fn(*args, **kw)
        return tf.function(body, **kwargs)

    def _install(self, kind, left_out):
        state, skip = self.state, kind in self.skip_at_run_time
        if kind == "eval":
            state._eval_fn = self._traced(state.eval_step, left_out, skip)
        else:
            state._step_fn = self._traced(state.step, left_out, skip,
                                         jit_compile=state.config.jit_compile or None)
            state._steps_fn = self._traced(state.steps, left_out, skip)
        self.left_out[kind] = left_out

    # --- specialisation ------------------------------------------------------------------
    def cost(self, left_out):
        """Estimated work of a graph leaving out `left_out` (arbitrary units)."""
        total = 0.0
        for cell, ctype, _ in self.state.model.search_cells():
            total += 1.0
            for e, edge in enumerate(cell.edges):
                total += sum(OP_COST.get(name, 1.0) for k, name in enumerate(edge.op_names)
                             if (ctype, e, k) not in left_out)
        return total

    def target(self, calls_ahead, kind=None):
        """The ops the graph of `kind` for `calls_ahead` calls leaves out: none, or every
        zero op (auto: when the calls ahead, times the share of work saved against the
        graph that keeps them, exceed TRACE_CALLS calls of the smaller graph)."""
        zero = self.state.model.zero_ops()
        if self.mode == "never" or not zero:
            return frozenset()
        if self.mode == "auto":
            kept = self.cost(frozenset()) if kind not in self.skip_at_run_time else \
                self.cost(zero) + SKIP_COST * len(zero)
            share = self.cost(zero) / max(kept, 1e-9)
            if calls_ahead * (1.0 - share) < TRACE_CALLS * share:
                return frozenset()
        return zero

    def check(self, kind):
        """Before a call: if `kind`'s graph leaves out an op whose weight may no longer be
        zero (an edge put back), installs the full graph."""
        cur = self.left_out[kind]
        if cur and not cur <= self.state.model.zero_ops():
            self._install(kind, frozenset())

    def refresh(self, kind, calls_ahead):
        """Before `calls_ahead` calls of `kind` ("eval" or "step") under a new selection
        state: installs the graph `target` picks. Call it where no candidate is temporarily
        masked or removed (it would be left out too, and put back by `check`). Returns True
        when a new graph was installed (traced on its first call). A graph leaving out an op
        that is no longer zero is always replaced (the target leaves out only zero ops)."""
        target = self.target(calls_ahead, kind)
        if target == self.left_out[kind]:
            return False
        self._install(kind, target)
        self.retraces[kind] += 1
        return True

    def describe(self, kind):
        """One line for the log after a refresh that installed a new graph."""
        n = len(self.left_out[kind])
        what = {"eval": "scoring", "step": "tuning"}[kind]
        if n:
            return (f"  {what} graph retraced without {n} zero op{'s' if n != 1 else ''} of "
                    f"decided/removed edges")
        return f"  {what} graph retraced with every op" + (
            " (zero-weight ops skipped at run time)" if kind in self.skip_at_run_time else "")
