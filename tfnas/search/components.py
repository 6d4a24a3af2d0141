"""Pluggable parts of the search loop: how alpha is updated, how it is perturbed.

An architecture update is a small class with hooks:

- `step(loop, train_batch, valid_batch)`: inside the traced search step, in the cross-replica
  context, before the weight update;
- `end_epoch(loop, epoch)`: eagerly after each search epoch (SGAS decides edges here).

An alpha perturbation has `begin_epoch(loop, epoch, tuning)` (eager: set its strength) and
`probs(loop, train_batch)` (traced: the probabilities the weight step uses; None = plain
softmax). Decided and removed edges always override the probabilities (ArchParameters.call),
so a perturbation never touches a decided edge. Methods are entries here, not forked loops.
"""

import os

import numpy as np
import tensorflow as tf

from tfnas.derive.perturbation import decide_op
from tfnas.derive.sgas import sgas_scores
from tfnas.io import append_jsonl, read_jsonl
from tfnas.ops.norm import running_stats_frozen
from tfnas.registry import Registry

ARCH_UPDATES = Registry("architecture update")
PERTURBATIONS = Registry("alpha perturbation")


class FirstOrder:
    """DARTS first order: Adam on d L_valid / d alpha at the current weights."""

    trains_alpha = True
    variables = ()

    def setup(self, loop):
        pass

    def step(self, loop, bt, bv):
        grads = loop.reduced_grads(bv, loop.alphas, metrics="alpha")
        loop.apply_alpha_grads(grads)

    def end_epoch(self, loop, epoch):
        pass


class SecondOrder(FirstOrder):
    """DARTS second order (unrolled): the hypergradient with a finite-difference
    Hessian-vector product (TF_NOTES 2, method D). All assigns happen in the cross-replica
    context, so every replica sees the same weights."""

    epsilon = 0.01  # norm of the weight perturbation of the finite difference (DARTS: 0.01)

    def setup(self, loop):
        self.backup = [tf.Variable(tf.zeros_like(w), trainable=False) for w in loop.weights]

    def step(self, loop, bt, bv):
        loop.apply_alpha_grads(self.hypergradient(loop, bt, bv))

    def hypergradient(self, loop, bt, bv):
        """d L_valid(w - lr * dL_train/dw, alpha) / d alpha, by finite differences."""
        ws, opt = loop.weights, loop.w_opt
        lr = tf.cast(opt.learning_rate, tf.float32)
        g_train = loop.reduced_grads(bt, ws)
        for b, w in zip(self.backup, ws):
            b.assign(w)
        # Virtual step of DARTS: w' = w - lr * (mu * buf + g + wd * w).
        for w, g in zip(ws, g_train):
            w.assign(w - lr * (opt.momentum * opt.buffer(w) + g + loop.config.weight_decay * w))
        with running_stats_frozen():  # the reference's unrolled copy: its BN stats are lost
            grads = loop.reduced_grads(bv, loop.alphas + ws, metrics="alpha")
        d_alpha, d_w = grads[:len(loop.alphas)], grads[len(loop.alphas):]
        r = self.epsilon / (tf.linalg.global_norm(d_w) + 1e-12)
        for w, b, d in zip(ws, self.backup, d_w):
            w.assign(b + r * d)
        g_plus = loop.reduced_grads(bt, loop.alphas)
        for w, b, d in zip(ws, self.backup, d_w):
            w.assign(b - r * d)
        g_minus = loop.reduced_grads(bt, loop.alphas)
        for w, b in zip(ws, self.backup):
            w.assign(b)
        return [da - lr * (gp - gm) / (2.0 * r) for da, gp, gm in zip(d_alpha, g_plus, g_minus)]


class Frozen:
    """Alpha stays at its initialisation (the paper's "fixed alpha" supernet)."""

    trains_alpha = False
    variables = ()

    def setup(self, loop):
        pass

    def step(self, loop, bt, bv):
        pass

    def end_epoch(self, loop, epoch):
        pass


# --- SGAS -----------------------------------------------------------------------------------
class SGAS(FirstOrder):
    """SGAS: first-order DARTS plus greedy edge decisions during the search.

    After epoch `sgas_warmup` and every `sgas_freq` epochs after it, each cell type fixes the
    undecided edge with the highest SGAS score to its best op (alpha argmax over non-'none'
    ops, or the PT criterion with `--sgas_op=pt`: SGAS+PT). A node with two decided inputs
    loses its other input edges. Decisions are ArchParameters state, so they are checkpointed
    with the model; each is one line of WORKDIR/sgas.jsonl.
    """

    def setup(self, loop):
        self.history = None  # softmaxed alphas per finished epoch (criterion 2)

    def _load_history(self, loop, epoch):
        rows = read_jsonl(os.path.join(loop.workdir, "alphas.jsonl"))
        return [r["softmax"] for r in rows if r["epoch"] < epoch]

    # Several workers: only the chief's run directory holds alphas.jsonl, so on resume the
    # chief sends the history (criterion 2's stability) with its checkpoint state.
    def state_for_workers(self, loop, start):
        return self._load_history(loop, start) if start else []

    def set_state_from_chief(self, loop, history):
        self.history = history

    def end_epoch(self, loop, epoch):
        c = loop.config
        if self.history is None:
            self.history = self._load_history(loop, epoch) if epoch else []
        soft = loop.model.softmax_numpy()
        due = epoch >= c.sgas_warmup and (epoch - c.sgas_warmup) % c.sgas_freq == 0
        if due:
            for ctype in loop.space.cell_types:
                row = self.decide(loop, ctype, soft, epoch)
                if row:
                    loop.log(f"SGAS epoch {epoch + 1}: {ctype} edge {row['input']}->"
                             f"{row['node']} = {row['op']}")
                    if loop.is_chief:
                        append_jsonl(os.path.join(loop.workdir, "sgas.jsonl"), row)
        self.history.append({t: np.asarray(v).tolist() for t, v in soft.items()})

    def decide(self, loop, ctype, soft, epoch):
        space, arch = loop.space, loop.model.arch(ctype)
        cspace = space.cells[ctype]
        fixed, live = arch.decided(), arch.live()
        cand = [e for e in range(cspace.num_edges) if live[e] and not fixed[e]]
        if not cand:
            return None
        hist = [h[ctype] for h in self.history]
        scores = sgas_scores(space, ctype, soft[ctype], hist, loop.config.sgas_criterion)
        edge = max(cand, key=lambda e: (scores[e], -e))
        ops = cspace.ops[edge]
        if loop.config.sgas_op == "pt":  # SGAS+PT: the same edge, the op by perturbation
            row = decide_op(arch, space, ctype, edge, lambda: loop.evaluate(
                loop.config.sgas_pt_batches, batch_stats=True))
            op, pt_scores = row["choice"], row["scores"]
        else:
            k = max(space.candidates(ctype, edge), key=lambda k: (soft[ctype][edge][k], -k))
            arch.fix_edge(edge, k)
            op, pt_scores = ops[k], {}
        node, inp = cspace.edges[edge]
        fixed, live = arch.decided(), arch.live()
        node_fixed = [e for e in cspace.node_edges(node) if fixed[e]]
        pruned = []
        if len(node_fixed) >= 2:  # SGAS's check_edges: the node has its two inputs
            for e in cspace.node_edges(node):
                if e not in node_fixed and live[e]:
                    arch.remove_edge(e)
                    pruned.append(cspace.edges[e][1])
        return {"epoch": epoch, "cell": ctype, "edge": edge, "node": node, "input": inp,
                "op": op, "score": float(scores[edge]),
                "scores": {str(e): float(scores[e]) for e in cand},
                "pt_scores": pt_scores, "pruned_inputs": pruned}


# --- alpha perturbations (SDARTS) -----------------------------------------------------------
class NoPerturbation:
    variables = ()

    def setup(self, loop):
        pass

    def begin_epoch(self, loop, epoch, tuning=False):
        pass

    def probs(self, loop, bt):
        return None


def _to_simplex(p, valid):
    """SDARTS's clip(): each row clamped to [0, 1] and renormalised to sum 1; a row that
    clamps to all zeros becomes one-hot on its (pre-clamp) argmax. Padding stays 0."""
    top = tf.one_hot(tf.argmax(tf.where(valid > 0, p, -1e9), axis=-1), tf.shape(p)[-1],
                     dtype=p.dtype)
    q = tf.clip_by_value(p, 0.0, 1.0) * valid
    total = tf.reduce_sum(q, axis=-1, keepdims=True)
    q = tf.where(total > 0, q, top)
    return q / tf.reduce_sum(q, axis=-1, keepdims=True)


class RandomSmoothing(NoPerturbation):
    """SDARTS-RS: the weight step sees softmax(alpha) + U(-eps, eps), clipped back to the
    simplex. eps grows linearly from 0.03 to `--epsilon` over the search and is `--epsilon`
    during PT tuning (REFERENCE 4.7); alpha itself is never changed."""

    def setup(self, loop):
        self.epsilon = tf.Variable(0.0, trainable=False, name="sdarts_epsilon")
        self.rng = tf.random.Generator.from_seed(loop.config.seed + 7919)
        self.variables = [self.epsilon, self.rng.state]

    def begin_epoch(self, loop, epoch, tuning=False):
        c = loop.config
        eps = c.epsilon if tuning else 0.03 + (c.epsilon - 0.03) * epoch / c.epochs
        self.epsilon.assign(eps)

    def _noise(self, arch):
        eps = self.epsilon.value()
        return self.rng.uniform(arch.shape, -eps, eps) * arch._valid

    def probs(self, loop, bt):
        return {t: _to_simplex(a.softmax() + self._noise(a), a._valid)
                for t, a in zip(loop.space.cell_types, loop.model.archs)}


class AdversarialPerturbation(RandomSmoothing):
    """SDARTS-ADV: a 7-step L-inf PGD attack on the softmaxed alphas against the training
    batch (step 2 eps / 7, random start, projected to the eps-ball and the simplex after
    every step, BN in inference mode), kept only if it raises the loss (REFERENCE 4.7)."""

    steps = 7

    def probs(self, loop, bt):
        types, archs = loop.space.cell_types, loop.model.archs
        eps = self.epsilon.value()
        clean = [a.softmax() for a in archs]
        p = [_to_simplex(c + self._noise(a), a._valid) for c, a in zip(clean, archs)]
        lr = 2.0 * eps / self.steps
        for _ in range(self.steps):
            grads = loop.reduced_grads(bt, p, probs=dict(zip(types, p)), training=False)
            p = [_to_simplex(tf.clip_by_value(q + lr * tf.sign(g), c - eps, c + eps), a._valid)
                 for q, g, c, a in zip(p, grads, clean, archs)]
        adv = loop.reduced_loss(bt, probs=dict(zip(types, p)), training=False)
        base = loop.reduced_loss(bt, probs=dict(zip(types, clean)), training=False)
        keep = adv > base
        return {t: tf.where(keep, q, c) for t, q, c in zip(types, p, clean)}


ARCH_UPDATES.register("first_order", FirstOrder)
ARCH_UPDATES.register("second_order", SecondOrder)
ARCH_UPDATES.register("frozen", Frozen)
ARCH_UPDATES.register("sgas", SGAS)
PERTURBATIONS.register("none", NoPerturbation)
PERTURBATIONS.register("random", RandomSmoothing)
PERTURBATIONS.register("adversarial", AdversarialPerturbation)
