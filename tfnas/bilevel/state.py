"""The search state of a supernet and its traced alternating step.

`SearchState` is everything a search or tuning step reads and writes: the supernet (weights,
alphas, selection state), the weight optimizer (`MomentumSGD`, PyTorch's rule), the alpha
optimizer (`TorchAdam`), the loss scale of float16 runs, the step's metrics and the
architecture update and perturbation it runs. It checkpoints as a whole (`variables()`).

One step (REFERENCE 3): the architecture update's alpha step on a validation batch, then the
weight step on a training batch: gradients computed per replica, summed across replicas and
applied in the cross-replica context, so global-norm clipping sees the global gradient and
alphas stay identical on every replica; coupled L2 added after the clip, as torch's
`SGD(weight_decay)` after `clip_grad_norm_`. The same step serves the search (`tfnas
search`), the tuning between PT decisions (`tfnas select`, `tfnas analyze`) and
`tfnas.derive.select`; only where the batches come from differs (`tfnas.bilevel.epochs`).
"""

import keras
import tensorflow as tf

from tfnas.bilevel.graphs import LoopGraphs
from tfnas.bilevel.optim import DynamicLossScale, MomentumSGD, TorchAdam
from tfnas.distribute import sum_over_replicas


class SearchState:
    """Args:
        model: a supernet (`tfnas.supernet.build_supernet`), built in `strategy`'s scope.
        config: the hyperparameters: a `tfnas.config.SearchConfig` (lr, momentum,
            weight_decay, grad_clip, arch_lr, arch_beta1/2, arch_weight_decay, seed,
            epochs, epsilon, jit_compile, mixed_precision and what the update reads).
        strategy: the `tf.distribute.Strategy` the model was built under.
        arch_update, perturbation: instances of registered `ARCH_UPDATES` and
            `PERTURBATIONS` entries (`tfnas.bilevel.updates`).
        global_batch_size: the loss is the sum over a global batch divided by this; None
            divides by the batch's own size (datasets whose last batch is smaller).
    """

    def __init__(self, model, config, strategy, arch_update, perturbation,
                 global_batch_size=None):
        self.model, self.config, self.strategy = model, config, strategy
        self.space = model.space
        self.arch_update, self.perturbation = arch_update, perturbation
        self.global_batch_size = global_batch_size
        with strategy.scope():
            self.alphas, self.weights = model.alphas, model.weight_variables
            self.w_opt = MomentumSGD(self.weights, config.lr, config.momentum)
            self.a_opt = TorchAdam(self.alphas, config.arch_lr, beta_1=config.arch_beta1,
                                   beta_2=config.arch_beta2)
            self.loss_scale = DynamicLossScale() if config.mixed_precision == \
                "mixed_float16" else None
            self.metrics = {k: keras.metrics.Mean(name=k) for k in
                            ("train_loss", "alpha_loss", "valid_loss")}
            self.metrics.update({k: keras.metrics.SparseCategoricalAccuracy(name=k) for k in
                                 ("train_acc", "alpha_acc", "valid_acc")})
            arch_update.setup(self)
            perturbation.setup(self)
        # _eval_fn, _step_fn, _steps_fn: traced functions, specialised to decided edges
        self.graphs = LoopGraphs(self)

    def variables(self):
        """Every variable a checkpoint must hold to resume exactly, {group: [variables]}
        (`named_variables` without the names)."""
        return {g: list(named.values()) for g, named in self.named_variables().items()}

    def named_variables(self):
        """Every variable a checkpoint must hold to resume exactly, with a stable name
        ({group: {name: variable}}): the model's by their path below the model, optimizer
        slots by the path of the variable they serve, method state by component; what
        checkpoints match on."""
        model = _model_names(self.model)
        key = {id(v): name for name, v in model.items()}
        w_opt = {"learning_rate": self.w_opt.learning_rate, "iterations": self.w_opt.iterations,
                 **{f"momentum/{key[id(w)]}": b for w, b in zip(self.weights,
                                                                 self.w_opt.buffers)}}
        a_opt = {"iterations": self.a_opt.iterations}
        for a, m, v in zip(self.alphas, self.a_opt.m, self.a_opt.v):
            a_opt[f"m/{key[id(a)]}"], a_opt[f"v/{key[id(a)]}"] = m, v
        methods = {f"{type(c).__name__}/{i}": v for c in (self.arch_update, self.perturbation)
                   for i, v in enumerate(c.variables)}
        state = {"model": model, "w_opt": w_opt, "a_opt": a_opt, "methods": methods}
        if self.loss_scale:
            state["loss_scale"] = {"scale": self.loss_scale.scale,
                                   "good_steps": self.loss_scale.good_steps}
        return state

    # --- pieces of the step (inside the traced function) ---------------------------------
    def _loss(self, x, y, training=True, probs=None, metrics=None):
        logits = self.model(x, training=training, probs=probs)
        per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        if metrics:
            self.metrics[metrics + "_loss"].update_state(per_example)
            self.metrics[metrics + "_acc"].update_state(y, logits)
        return tf.nn.compute_average_loss(per_example,
                                          global_batch_size=self.global_batch_size)

    def reduced_grads(self, batch, variables, metrics=None, probs=None, training=True):
        """Gradients of the batch loss w.r.t. `variables` (variables, or tensors such as
        mixing probabilities), summed over replicas."""
        def replica_fn(x, y):
            with tf.GradientTape() as tape:
                for v in variables:
                    if isinstance(v, tf.Tensor):
                        tape.watch(v)
                loss = self._loss(x, y, training=training, probs=probs, metrics=metrics)
                if self.loss_scale:
                    loss = self.loss_scale.scale_loss(loss)
            grads = tape.gradient(loss, variables)
            # e.g. the reduce alpha of a net too shallow to have a reduction cell
            return [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        grads = sum_over_replicas(self.strategy, self.strategy.run(replica_fn, args=batch))
        return self.loss_scale.unscale(grads) if self.loss_scale else grads

    def apply_updates(self, grads, apply):
        """`apply(grads)`; under loss scaling only when every gradient is finite (the scale
        adapts once per step, at the end of `step`)."""
        if self.loss_scale:
            self._finite.append(self.loss_scale.apply_if_finite(grads, apply, adapt=False))
        else:
            apply(grads)

    def reduced_loss(self, batch, probs=None, training=True):
        """The global mean loss of a batch (no gradients)."""
        per_replica = self.strategy.run(
            lambda x, y: self._loss(x, y, training=training, probs=probs), args=batch)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def apply_alpha_grads(self, grads):
        wd = self.config.arch_weight_decay
        self.apply_updates(grads, lambda gs: self.a_opt.apply_gradients(
            [(g + wd * a, a) for g, a in zip(gs, self.alphas)]))

    # --- the step --------------------------------------------------------------------------
    def step(self, bt, bv):
        """One alternating step on a training batch `bt` and a validation batch `bv`;
        returns the running training loss."""
        self._finite = []  # the step's updates (loss scaling: one adaptation per step)
        if self.arch_update.trains_alpha:
            self.arch_update.step(self, bt, bv)
        probs = self.perturbation.probs(self, bt)
        grads = self.reduced_grads(bt, self.weights, metrics="train", probs=probs)
        if self.config.grad_clip > 0:
            grads, _ = tf.clip_by_global_norm(grads, self.config.grad_clip)
        # coupled L2 after clipping; MomentumSGD applies torch's momentum convention
        wd = tf.constant(self.config.weight_decay, tf.float32)
        self.apply_updates(grads, lambda gs: self.w_opt.apply_gradients(
            [(g + wd * w, w) for g, w in zip(gs, self.weights)]))
        if self.loss_scale:
            self.loss_scale.adapt(tf.reduce_all(tf.stack(self._finite)))
        return self.metrics["train_loss"].result()

    def steps(self, it_t, it_v, n):
        """Up to `n` steps in one call, stopping after the first non-finite loss; returns the
        running training loss after each step run (one host read per call)."""
        losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        for i in tf.range(n):
            loss = self._step_fn(next(it_t), next(it_v))
            losses = losses.write(i, loss)
            if not tf.math.is_finite(loss):
                break
        return losses.stack()

    def eval_step(self, batch, training=False):
        def replica_fn(x, y):
            self._loss(x, y, training=training, metrics="valid")
        self.strategy.run(replica_fn, args=batch)

    def reset_weight_optimizer(self):
        """Zeroes the weight optimizer's momentum (a fresh SGD), as the reference does before
        projection tuning (REFERENCE 4.2: the weight optimizer is re-created)."""
        for buf in self.w_opt.buffers:
            buf.assign(tf.zeros_like(buf))
        self.w_opt.iterations.assign(0)


def _model_names(model):
    """{name: variable} of `model.variables`: the path without the model's own name (Keras
    numbers instances: "supernet_2"), unique (a repeated path gets "#k")."""
    out, prefix = {}, model.name + "/"
    for v in model.variables:
        name = v.path[len(prefix):] if v.path.startswith(prefix) else v.path
        k, base = 1, name
        while name in out:
            name, k = f"{base}#{k}", k + 1
        out[name] = v
    return out

