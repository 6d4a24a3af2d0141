"""What a search step does to alpha: architecture updates and alpha perturbations.

An architecture update is a small class with hooks:

- `setup(state)`: once, inside the strategy scope (create its variables there);
- `step(state, train_batch, valid_batch)`: inside the traced step, in the cross-replica
  context, before the weight update;
- `end_epoch(run, epoch)`: eagerly after each epoch of a search run (`run`: the
  `SearchLoop`, with its run directory and log; SGAS decides edges here). Tuning outside a
  search (`tfnas.derive.select`) never calls it.

An alpha perturbation has `setup(state)`, `begin_epoch(state, epoch, tuning)` (eager: set
its strength) and `probs(state, train_batch)` (traced: the probabilities the weight step
uses; None = plain softmax). Decided and removed edges always override the probabilities
(ArchParameters.call), so a perturbation never touches a decided edge.

`state` is the `tfnas.bilevel.SearchState`: the supernet, its optimizers and the step's
pieces (`reduced_grads`, `apply_alpha_grads`, ...). Methods are entries here, not forked
loops; the search's SGAS (which needs the run) registers itself from `tfnas.search`.
"""

import tensorflow as tf

from tfnas.ops.norm import running_stats_frozen
from tfnas.registry import Registry

ARCH_UPDATES = Registry("architecture update")
PERTURBATIONS = Registry("alpha perturbation")


class FirstOrder:
    """DARTS first order: Adam on d L_valid / d alpha at the current weights."""

    trains_alpha = True
    variables = ()

    def setup(self, state):
        pass

    def step(self, state, bt, bv):
        grads = state.reduced_grads(bv, state.alphas, metrics="alpha")
        state.apply_alpha_grads(grads)

    def end_epoch(self, run, epoch):
        pass


class SecondOrder(FirstOrder):
    """DARTS second order (unrolled): the hypergradient with a finite-difference
    Hessian-vector product (TF_NOTES 2, method D). All assigns happen in the cross-replica
    context, so every replica sees the same weights."""

    epsilon = 0.01  # norm of the weight perturbation of the finite difference (DARTS: 0.01)

    def setup(self, state):
        self.backup = [tf.Variable(tf.zeros_like(w), trainable=False) for w in state.weights]

    def step(self, state, bt, bv):
        state.apply_alpha_grads(self.hypergradient(state, bt, bv))

    def hypergradient(self, state, bt, bv):
        """d L_valid(w - lr * dL_train/dw, alpha) / d alpha, by finite differences."""
        ws, opt = state.weights, state.w_opt
        lr = tf.cast(opt.learning_rate, tf.float32)
        g_train = state.reduced_grads(bt, ws)
        for b, w in zip(self.backup, ws):
            b.assign(w)
        # Virtual step of DARTS: w' = w - lr * (mu * buf + g + wd * w).
        for w, g in zip(ws, g_train):
            w.assign(w - lr * (opt.momentum * opt.buffer(w) + g + state.config.weight_decay * w))
        with running_stats_frozen():  # the reference's unrolled copy: its BN stats are lost
            grads = state.reduced_grads(bv, state.alphas + ws, metrics="alpha")
        d_alpha, d_w = grads[:len(state.alphas)], grads[len(state.alphas):]
        r = self.epsilon / (tf.linalg.global_norm(d_w) + 1e-12)
        for w, b, d in zip(ws, self.backup, d_w):
            w.assign(b + r * d)
        g_plus = state.reduced_grads(bt, state.alphas)
        for w, b, d in zip(ws, self.backup, d_w):
            w.assign(b - r * d)
        g_minus = state.reduced_grads(bt, state.alphas)
        for w, b in zip(ws, self.backup):
            w.assign(b)
        return [da - lr * (gp - gm) / (2.0 * r) for da, gp, gm in zip(d_alpha, g_plus, g_minus)]


class Frozen:
    """Alpha stays at its initialisation (the paper's "fixed alpha" supernet)."""

    trains_alpha = False
    variables = ()

    def setup(self, state):
        pass

    def step(self, state, bt, bv):
        pass

    def end_epoch(self, run, epoch):
        pass


# --- alpha perturbations (SDARTS) -----------------------------------------------------------
class NoPerturbation:
    variables = ()

    def setup(self, state):
        pass

    def begin_epoch(self, state, epoch, tuning=False):
        pass

    def probs(self, state, bt):
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

    def setup(self, state):
        self.epsilon = tf.Variable(0.0, trainable=False, name="sdarts_epsilon")
        self.rng = tf.random.Generator.from_seed(state.config.seed + 7919)
        self.variables = [self.epsilon, self.rng.state]

    def begin_epoch(self, state, epoch, tuning=False):
        c = state.config
        eps = c.epsilon if tuning else 0.03 + (c.epsilon - 0.03) * epoch / c.epochs
        self.epsilon.assign(eps)

    def _noise(self, arch):
        eps = self.epsilon.value()
        return self.rng.uniform(arch.shape, -eps, eps) * arch._valid

    def probs(self, state, bt):
        return {t: _to_simplex(a.softmax() + self._noise(a), a._valid)
                for t, a in zip(state.space.cell_types, state.model.archs)}


class AdversarialPerturbation(RandomSmoothing):
    """SDARTS-ADV: a 7-step L-inf PGD attack on the softmaxed alphas against the training
    batch (step 2 eps / 7, random start, projected to the eps-ball and the simplex after
    every step, BN in inference mode), kept only if it raises the loss (REFERENCE 4.7)."""

    steps = 7

    def probs(self, state, bt):
        types, archs = state.space.cell_types, state.model.archs
        eps = self.epsilon.value()
        clean = [a.softmax() for a in archs]
        p = [_to_simplex(c + self._noise(a), a._valid) for c, a in zip(clean, archs)]
        lr = 2.0 * eps / self.steps
        for _ in range(self.steps):
            grads = state.reduced_grads(bt, p, probs=dict(zip(types, p)), training=False)
            p = [_to_simplex(tf.clip_by_value(q + lr * tf.sign(g), c - eps, c + eps), a._valid)
                 for q, g, c, a in zip(p, grads, clean, archs)]
        adv = state.reduced_loss(bt, probs=dict(zip(types, p)), training=False)
        base = state.reduced_loss(bt, probs=dict(zip(types, clean)), training=False)
        keep = adv > base
        return {t: tf.where(keep, q, c) for t, q, c in zip(types, p, clean)}


ARCH_UPDATES.register("first_order", FirstOrder)
ARCH_UPDATES.register("second_order", SecondOrder)
ARCH_UPDATES.register("frozen", Frozen)
PERTURBATIONS.register("none", NoPerturbation)
PERTURBATIONS.register("random", RandomSmoothing)
PERTURBATIONS.register("adversarial", AdversarialPerturbation)
