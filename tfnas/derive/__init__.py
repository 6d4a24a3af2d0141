"""Deriving an architecture from a supernet: pure primitives and the library call.

Imports flow one way: `ops` -> `spaces` -> `supernet` -> `bilevel` -> `derive` -> `search` ->
`selection`. This layer knows supernets, spaces and the bilevel step (its library call tunes
with it) only; it takes an `evaluate()` callable instead of a search run, so the search
(SGAS+PT), `tfnas select` and a user's own Keras supernet all use the same code.
"""

from tfnas.derive.selectors import SELECTORS, Selector, choose_op, get_selector, stronger
from tfnas.derive.magnitude import magnitude_genotype
from tfnas.derive.perturbation import decide_op, decide_topology, decision_events, score_ops
from tfnas.derive.sgas import sgas_scores
from tfnas.derive.api import Tuning, decide, make_evaluate, make_tune, select  # noqa: I100
from tfnas.derive.budget import Budget, Network
from tfnas.derive.proxies import PROXIES, Proxy, ProxyScorer
from tfnas.derive.zero_cost import ZeroCost, zero_cost_select

__all__ = ["magnitude_genotype", "choose_op", "decide_op", "decide_topology",
           "decision_events", "score_ops", "stronger", "sgas_scores", "select",
           "make_evaluate", "make_tune", "Tuning", "decide", "Budget", "Network", "SELECTORS",
           "Selector", "get_selector", "PROXIES", "Proxy", "ProxyScorer", "ZeroCost",
           "zero_cost_select"]
