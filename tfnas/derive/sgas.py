"""SGAS's edge scores (Li et al. 2020; REFERENCE 4.7): pure functions of the mixing weights."""

import math

import numpy as np


# Differences below this are float32 rounding of a softmax (its rows sum to 1 within a few
# ulps, 6e-8 each), not a signal: min-max scaling would blow them up to the full [0, 1].
ROUNDING = 1e-6


def _minmax(v):
    """SGAS's normalisation to [0, 1]; a vector constant up to float32 rounding (e.g. edge
    importance in a space without 'none') becomes all ones, so it neither zeroes the product
    of criteria nor lets rounding pick the edge."""
    v = np.asarray(v, np.float64)
    span = v.max() - v.min()
    return (v - v.min()) / span if span > ROUNDING else np.ones_like(v)


def _non_none(space, ctype, probs):
    """Per edge: (mass on non-'none' ops, renormalised distribution over them). The mass is
    1 - the mass on 'none' (exactly 1 on an edge without 'none', where summing the float32
    softmax would give 1 +- a few ulps that differ from edge to edge and CPU to CPU)."""
    out = []
    for e, ops in enumerate(space.cells[ctype].ops):
        keep = [k for k, op in enumerate(ops) if op != "none"]
        row = np.asarray(probs[e], np.float64)
        p = row[keep]
        none = [k for k, op in enumerate(ops) if op == "none"]
        mass = 1.0 - row[none].sum() if none else 1.0
        out.append((mass, p / max(p.sum(), 1e-12)))
    return out


def sgas_scores(space, ctype, probs, history=(), criterion=1, window=4):
    """SGAS edge scores (Li et al. 2020; REFERENCE 4.7) of every edge of `ctype`.

    Criterion 1: normalize(importance) x normalize(certainty), importance = softmax mass on
    the non-'none' ops, certainty = 1 - entropy(renormalised non-'none' ops) / log(#ops).
    Criterion 2 multiplies in normalize(stability): the mean histogram intersection of the
    current distribution with those of the last `window` epochs (`history`, oldest first).
    """
    cur = _non_none(space, ctype, probs)
    imp = np.array([m for m, _ in cur])
    cert = []
    for _, p in cur:
        n = len(p)
        ent = -np.sum(p * np.log(np.clip(p, 1e-12, None)))
        cert.append(1.0 - ent / math.log(n) if n > 1 else 1.0)
    score = _minmax(imp) * _minmax(cert)
    if criterion == 2:
        past = [_non_none(space, ctype, h) for h in list(history)[-window:]]
        stab = np.array([np.mean([np.minimum(p, old[e][1]).sum() for old in past])
                         if past else 1.0 for e, (_, p) in enumerate(cur)])
        score = score * _minmax(stab)
    return score
