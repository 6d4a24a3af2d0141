"""Pluggable parts of the search loop: how alpha is updated, how it is perturbed.

An architecture update is a tiny class with one hook, `step(loop, train_batch, valid_batch)`,
called inside the traced search step in the cross-replica context before the weight update.
An alpha perturbation returns the probabilities the weight step uses (None: plain softmax).
Later methods (SDARTS, SGAS) add entries here instead of forking the loop.
"""

import tensorflow as tf

from tfnas.registry import Registry

ARCH_UPDATES = Registry("architecture update")
PERTURBATIONS = Registry("alpha perturbation")


class FirstOrder:
    """DARTS first order: Adam on d L_valid / d alpha at the current weights."""

    trains_alpha = True

    def setup(self, loop):
        pass

    def step(self, loop, bt, bv):
        grads = loop.reduced_grads(bv, loop.alphas, metrics="alpha")
        loop.apply_alpha_grads(grads)


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

    def setup(self, loop):
        pass

    def step(self, loop, bt, bv):
        pass


class NoPerturbation:
    def setup(self, loop):
        pass

    def probs(self, loop, bt):
        return None


ARCH_UPDATES.register("first_order", FirstOrder)
ARCH_UPDATES.register("second_order", SecondOrder)
ARCH_UPDATES.register("frozen", Frozen)
PERTURBATIONS.register("none", NoPerturbation)
