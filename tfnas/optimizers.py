"""`ReferenceSGD`: the reference's retraining optimizer as a Keras optimizer for `model.fit`.

PyTorch's DARTS retraining does, per step: `loss.backward()`, `clip_grad_norm_(params, 5)`,
then `SGD(momentum=0.9, weight_decay=3e-4).step()`, which adds the *coupled* L2 term `wd * w`
to the (clipped) gradient and updates `buf = mu * buf + g; w -= lr * buf`.

Keras's `SGD(weight_decay=...)` is decoupled (`w -= lr * wd * w`, outside the momentum), and
`global_clipnorm` clips each replica's local gradient before the cross-replica sum
(TF_NOTES 1). This optimizer sums the gradients across replicas first (one all-reduce of the
whole list, as Keras does), clips the global gradient by its global norm, adds `l2 * w`, and
applies PyTorch's momentum convention, so one replica and N replicas take the same step.
Called in the cross-replica context (tfnas's retraining loop), it takes gradients already
summed over replicas.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfnas")
class ReferenceSGD(keras.optimizers.Optimizer):
    """SGD with PyTorch's momentum convention, coupled L2 and a cross-replica global clip.

    Args:
        learning_rate: a float or a Keras learning-rate schedule.
        momentum: PyTorch-style momentum (`buf = momentum * buf + g`).
        l2: coupled weight decay, added to the gradient after clipping.
        clip_global_norm: clip the summed gradient to this global norm (0: off).

    Example:
        >>> opt = ReferenceSGD(0.025, momentum=0.9, l2=3e-4, clip_global_norm=5.0)
        >>> model.compile(opt, loss=...)
    """

    def __init__(self, learning_rate=0.025, momentum=0.9, l2=0.0, clip_global_norm=0.0,
                 name="reference_sgd", **kwargs):
        for key in ("weight_decay", "clipnorm", "global_clipnorm", "clipvalue"):
            if kwargs.get(key):
                raise ValueError(f"ReferenceSGD does its own L2 and clipping; got {key}="
                                 f"{kwargs[key]!r} (use l2= / clip_global_norm=)")
            kwargs.pop(key, None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if momentum < 0 or l2 < 0 or clip_global_norm < 0:
            raise ValueError(f"momentum, l2 and clip_global_norm must be >= 0; got "
                             f"{momentum}, {l2}, {clip_global_norm}")
        self.momentum, self.l2 = float(momentum), float(l2)
        self.clip_global_norm = float(clip_global_norm)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.buffers = [self.add_variable_from_reference(v, name="momentum")
                        for v in variables]

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # TF backend: one all-reduce of the whole list (as Keras's own), then the global clip
        # and the coupled L2 on the summed gradient, then the per-variable update.
        variables = [v.value if isinstance(v, keras.Variable) else v
                     for v in trainable_variables]
        pairs = self._all_reduce_sum_gradients(list(zip(grads, variables)))
        grads = [g for g, _ in pairs]
        if self.clip_global_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, self.clip_global_norm)
        if self.l2 > 0:
            grads = [g + tf.cast(self.l2, g.dtype) * v for g, v in zip(grads, variables)]
        if tf.distribute.in_cross_replica_context():
            # tfnas's own retraining loop (tfnas/retrain.py): the gradients arrive summed
            # over replicas and are applied once to every copy of each variable
            self._distributed_tf_update_step(tf.distribute.get_strategy(),
                                             list(zip(grads, variables)), learning_rate)
            return
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._distributed_tf_update_step, self._distribution_strategy,
            list(zip(grads, variables)), learning_rate)

    def update_step(self, gradient, variable, learning_rate):
        lr = tf.cast(learning_rate, variable.dtype)
        buf = self.buffers[self._get_variable_index(variable)]
        if self.momentum:
            self.assign(buf, buf * tf.cast(self.momentum, variable.dtype) + gradient)
            self.assign_sub(variable, lr * buf)
        else:
            self.assign_sub(variable, lr * gradient)

    def get_config(self):
        config = super().get_config()
        for key in ("weight_decay", "clipnorm", "global_clipnorm", "clipvalue"):
            config.pop(key, None)
        config.update({"momentum": self.momentum, "l2": self.l2,
                       "clip_global_norm": self.clip_global_norm})
        return config


@keras.saving.register_keras_serializable(package="tfnas")
class EpochCosine(keras.optimizers.schedules.LearningRateSchedule):
    """PyTorch's CosineAnnealingLR(T_max=epochs, eta_min) stepped once per epoch: the rate
    is constant within an epoch, `eta_min + (lr - eta_min) * (1 + cos(pi * e / epochs)) / 2`
    during epoch e (the reference's retraining schedule, eta_min 0)."""

    def __init__(self, learning_rate, epochs, steps_per_epoch, eta_min=0.0):
        self.learning_rate, self.epochs = float(learning_rate), int(epochs)
        self.steps_per_epoch, self.eta_min = int(steps_per_epoch), float(eta_min)

    def __call__(self, step):
        epoch = tf.cast(tf.math.floordiv(tf.cast(step, tf.int64), self.steps_per_epoch),
                        tf.float32)
        cos = (1.0 + tf.cos(tf.constant(3.141592653589793) * epoch / self.epochs)) / 2.0
        return self.eta_min + (self.learning_rate - self.eta_min) * cos

    def get_config(self):
        return {"learning_rate": self.learning_rate, "epochs": self.epochs,
                "steps_per_epoch": self.steps_per_epoch, "eta_min": self.eta_min}
