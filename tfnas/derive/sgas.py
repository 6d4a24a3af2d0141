"""SGAS's edge scores (Li et al. 2020; REFERENCE 4.7): pure functions of the mixing weights."""

import math

import numpy as np


def _minmax(v):
    """SGAS's normalisation to [0, 1]; a constant vector (e.g. edge importance in a space
    without 'none') becomes all ones, so it does not zero the product of criteria."""
    v = np.asarray(v, np.float64)
    span = v.max() - v.min()
    return (v - v.min()) / span if span > 0 else np.ones_like(v)


def _non_none(space, ctype, probs):
    """Per edge: (mass on non-'none' ops, renormalised distribution over them)."""
    out = []
    for e, ops in enumerate(space.cells[ctype].ops):
        keep = [k for k, op in enumerate(ops) if op != "none"]
        p = np.asarray(probs[e], np.float64)[keep]
        out.append((p.sum(), p / max(p.sum(), 1e-12)))
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
