"""The search's optimizers in PyTorch's conventions, with small graphs: `MomentumSGD` for the
weights, `TorchAdam` for the alphas.

`keras.optimizers.SGD` adds about 36 graph ops per variable (for the 1,400 weight variables of
a C8 L5 supernet, 51k of the step's 85k ops, which dominate tracing and graph optimisation),
and its momentum convention (m = mu m - lr g) differs from PyTorch's while the learning rate
changes. This one does `buf = mu * buf + g; w -= lr * buf`, the reference's update, in a few
op per variable (`ResourceApplyMomentum`, whose rule is exactly this one). Called in the
cross-replica context, its updates reach every replica (`strategy.extended.update`).
"""

import tensorflow as tf


class MomentumSGD:
    """Args:
        variables: the variables it updates (create it inside the strategy scope).
        learning_rate: initial learning rate (a variable: assign to change it, no retrace).
        momentum: PyTorch-style momentum.
    """

    def __init__(self, variables, learning_rate, momentum=0.9):
        self.variables_to_train = list(variables)
        self.momentum = float(momentum)
        self.learning_rate = tf.Variable(float(learning_rate), trainable=False,
                                         dtype=tf.float32, name="sgd_learning_rate")
        self.iterations = tf.Variable(0, trainable=False, dtype=tf.int64, name="sgd_iterations")
        self.buffers = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                                    name="sgd_momentum") for v in self.variables_to_train]
        self._index = {id(v): i for i, v in enumerate(self.variables_to_train)}
        self._strategy = tf.distribute.get_strategy()

    @property
    def variables(self):
        """Its whole state, for checkpoints."""
        return [self.learning_rate, self.iterations] + self.buffers

    def buffer(self, variable):
        return self.buffers[self._index[id(variable)]]

    def apply_gradients(self, grads_and_vars):
        lr = self.learning_rate.value()
        mu = tf.constant(self.momentum, tf.float32)  # one constant, not one per variable
        for g, v in grads_and_vars:
            buf, var = self.buffer(v), _tf_variable(v)
            if var is None or var.dtype != g.dtype:
                new = buf * mu + g  # the same rule in plain ops
                buf.assign(new)
                v.assign_sub(lr * new)
            else:  # one op; on each replica's copies of the variable and its buffer
                self._strategy.extended.update(var, _apply_momentum, args=(buf, g, lr, mu),
                                               group=False)
        self.iterations.assign_add(1)


def _tf_variable(v):
    """The TensorFlow variable behind `v` (a Keras variable holds one, mirrored under a
    distribution strategy), or None."""
    inner = getattr(v, "_value", v)  # Keras 3's TensorFlow variable keeps it there
    return inner if isinstance(inner, tf.Variable) else None


def _apply_momentum(var, buf, grad, lr, mu):
    """buf = mu * buf + grad; var -= lr * buf (TensorFlow's Momentum kernel, no Nesterov)."""
    return tf.raw_ops.ResourceApplyMomentum(var=var.handle, accum=buf.handle, lr=lr,
                                            grad=grad, momentum=mu, use_nesterov=False)


class TorchAdam:
    """Adam exactly as `torch.optim.Adam` (the reference's alpha optimizer): eps 1e-8 added
    to sqrt(v) / sqrt(1 - beta2^t), outside the bias correction. (Keras's Adam adds its eps
    to the uncorrected sqrt(v), an eps that shrinks by sqrt(1 - beta2^t) early on, with a
    default of 1e-7.) Weight decay stays the caller's coupled L2 term on the gradient.

    Args:
        variables: the variables it updates (create it inside the strategy scope).
        learning_rate, beta_1, beta_2, epsilon: as torch's lr, betas, eps.
    """

    def __init__(self, variables, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        self.variables_to_train = list(variables)
        self.learning_rate, self.epsilon = float(learning_rate), float(epsilon)
        self.beta_1, self.beta_2 = float(beta_1), float(beta_2)
        self.iterations = tf.Variable(0, trainable=False, dtype=tf.int64, name="adam_iterations")
        self.m = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="adam_m")
                  for v in self.variables_to_train]
        self.v = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="adam_v")
                  for v in self.variables_to_train]
        self._index = {id(v): i for i, v in enumerate(self.variables_to_train)}

    @property
    def variables(self):
        """Its whole state, for checkpoints."""
        return [self.iterations] + self.m + self.v

    def apply_gradients(self, grads_and_vars):
        # bias corrections in float64, as torch computes them in Python (1 - 0.999^t in
        # float32 loses 5 digits to cancellation)
        t = tf.cast(self.iterations + 1, tf.float64)
        b1, b2 = self.beta_1, self.beta_2
        bc1 = tf.cast(1.0 - tf.pow(tf.constant(b1, tf.float64), t), tf.float32)
        bc2 = tf.cast(1.0 - tf.pow(tf.constant(b2, tf.float64), t), tf.float32)
        for g, var in grads_and_vars:
            i = self._index[id(var)]
            m = self.m[i].assign(b1 * self.m[i] + (1.0 - b1) * g)
            v = self.v[i].assign(b2 * self.v[i] + (1.0 - b2) * tf.square(g))
            denom = tf.sqrt(v) / tf.sqrt(bc2) + self.epsilon
            var.assign_sub(self.learning_rate / bc1 * m / denom)
        self.iterations.assign_add(1)


class DynamicLossScale:
    """Dynamic loss scaling for `mixed_float16` (the rule of Keras's LossScaleOptimizer):
    the loss is multiplied by `scale` before differentiation so small float16 gradients do
    not flush to zero; the gradients are divided by it after the all-reduce. An update whose
    gradients are not all finite is skipped; a step with a skipped update halves the scale,
    and after `period` finite steps in a row it doubles (a search step's alpha and weight
    updates are one step: one count, one adaptation at its end). Its two variables are
    checkpointed with the run.

    Args:
        initial: the first scale (2**15).
        period: finite steps before the scale doubles (2000).
    """

    def __init__(self, initial=2.0 ** 15, period=2000):
        self.scale = tf.Variable(float(initial), trainable=False, dtype=tf.float32,
                                 name="loss_scale")
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64,
                                      name="loss_scale_good_steps")
        self.period = int(period)

    @property
    def variables(self):
        return [self.scale, self.good_steps]

    def scale_loss(self, loss):
        return loss * self.scale

    def unscale(self, grads):
        inv = 1.0 / self.scale.value()
        return [g * inv for g in grads]

    def apply_if_finite(self, grads, apply, adapt=True):
        """Calls `apply(grads)` only when every gradient is finite (identical on every
        replica: `grads` are all-reduced); returns that bool. `adapt`: adapt the scale now
        (one update per step); a step of several updates passes False and calls
        `adapt(all finite)` once at its end."""
        finite = tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(g)) for g in grads]))

        def run():
            apply(grads)
            return tf.constant(True)
        tf.cond(finite, run, lambda: tf.constant(False))
        if adapt:
            self.adapt(finite)
        return finite

    def adapt(self, finite):
        """One step's scale rule: halve after a non-finite step, double after `period`
        finite steps in a row."""
        grow = finite & (self.good_steps + 1 >= self.period)
        factor = tf.where(finite, tf.where(grow, 2.0, 1.0), 0.5)
        self.scale.assign(tf.maximum(self.scale * factor, 1.0))
        self.good_steps.assign(tf.where(finite & ~grow, self.good_steps + 1, 0))
