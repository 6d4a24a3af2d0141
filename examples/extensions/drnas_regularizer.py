"""A DrNAS-style Dirichlet regulariser of alpha (Chen et al., ICLR 2021) as a tfnas
extension: an architecture update that adds `WEIGHT * KL(Dir(beta) || Dir(PRIOR))` per
edge to the validation loss, with DrNAS's concentration beta = elu(alpha) + 1. It pulls
every edge's concentration towards the uniform prior, which keeps the architecture
distribution from collapsing early. (DrNAS also samples the mixing weights from the
Dirichlet in the weight step; that would be a perturbation, not part of this example.)

    TFNAS_EXTENSIONS=examples/extensions/drnas_regularizer.py \\
        tfnas search --flagfile=quickstart --arch_update=dirichlet_kl --workdir=runs/drnas
"""

import tensorflow as tf

from tfnas.bilevel.updates import ARCH_UPDATES, FirstOrder

WEIGHT = 1e-3
PRIOR = 1.0


def dirichlet_kl(beta, prior, valid):
    """Sum over edges of KL(Dir(beta) || Dir(prior)) over each edge's real ops (`valid`)."""
    lg = lambda v: tf.math.lgamma(v) * valid  # noqa: E731
    b0 = tf.reduce_sum(beta * valid, axis=-1)
    p = prior * valid
    p0 = tf.reduce_sum(p, axis=-1)
    kl = (tf.math.lgamma(b0) - tf.reduce_sum(lg(beta), axis=-1) - tf.math.lgamma(p0)
          + tf.reduce_sum(lg(tf.maximum(p, 1e-12)), axis=-1)
          + tf.reduce_sum(valid * (beta - p) * (tf.math.digamma(beta)
                                                - tf.math.digamma(b0)[:, None]), axis=-1))
    return tf.reduce_sum(kl)


@ARCH_UPDATES.register("dirichlet_kl")
class DirichletKL(FirstOrder):
    """First-order DARTS plus the Dirichlet KL on every cell type's alpha."""

    def regulariser(self, state):
        return tf.add_n([dirichlet_kl(tf.nn.elu(a.alpha) + 1.0, PRIOR, a._valid)
                         for a in state.model.archs])

    def step(self, state, bt, bv):
        grads = state.reduced_grads(bv, state.alphas, metrics="alpha")
        with tf.GradientTape() as tape:
            reg = self.regulariser(state)
        extra = tape.gradient(reg, state.alphas)
        state.apply_alpha_grads([g + WEIGHT * e for g, e in zip(grads, extra)])
