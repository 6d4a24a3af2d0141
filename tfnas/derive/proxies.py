"""Zero-cost proxies: a number for a network (a supernet under its current masks, or a
discrete network) from one batch, without training. Higher means a better network, as in
each proxy's paper; Zero-Cost-PT (`tfnas.derive.zero_cost`) keeps the op whose removal
lowers it most.

    @PROXIES.register("my_proxy")
    class MyProxy(Proxy):
        taps = ("relu",)          # tensors the forward pass records (tfnas.ops.taps)
        def value(self, model, x, y): ...   # a scalar tensor; traced

Each is what its paper defines, on the network as it is (no re-initialisation), with BN in
training mode (batch statistics; the running statistics are left alone) except `nwot`:

- `nwot` (Mellor et al., ICML 2021, "NAS without training"): the binary codes of every ReLU's
  input (the ReLUs of tfnas's ops, cell preprocessing and blocks; not the classifier head's),
  K = sum over ReLUs of c c^T + (1 - c)(1 - c)^T over the batch, score log|det K|. BN in
  inference mode (running statistics), as Zero-Cost-PT's code scores it (its `jacob`
  criterion); NASWOT's own code used batch statistics: `NWOT(training=True)`.
- `jacob_cov` (Mellor et al., 2020 v1): J = d sum(logits) / d input per image, the
  eigenvalues v of its correlation matrix, score -sum(log(v + 1e-5) + 1 / (v + 1e-5)).
- `snip` (Lee et al., ICLR 2019, as in Abdelfattah et al., ICLR 2021): sum |w * dL/dw| over
  every conv and dense kernel, L the cross-entropy on the batch.
- `grad_norm` (Abdelfattah et al.): the sum over those kernels of ||dL/dw||_2.
- `fisher` (Turner et al., ICLR 2020, as in Abdelfattah et al.): for every conv output a
  (and the logits), per channel 0.5 * mean over images of (sum over pixels of a * dL/da)^2,
  summed.
- `synflow` (Tanaka et al., NeurIPS 2020): the network without BN (identities), every
  kernel replaced by its absolute value, an all-ones image; R = sum of the logits, score
  sum |w| * dR/d|w| over the kernels. In float32 (the authors' code casts to float64; a
  value that overflows is reported as not finite).

Alphas are not kernels: the mixing weights enter every proxy as the supernet uses them.
"""

import contextlib

import tensorflow as tf

from tfnas.ops import taps
from tfnas.ops.norm import bypassed, running_stats_frozen
from tfnas.registry import Registry

PROXIES = Registry("proxy")


class Proxy:
    """Base of a zero-cost proxy: `value(model, x, y)` -> scalar tensor (higher: better)."""

    taps = ()  # "relu" and/or "conv": what the forward pass records (tfnas.ops.taps)
    bn_free = False  # BN layers are identities (SynFlow)
    training = True  # BN with batch statistics (False: running statistics)

    def value(self, model, x, y):
        raise NotImplementedError


def kernels(model):
    """The conv and dense kernels of `model` (trainable, 2 or more dimensions; not alphas)."""
    alpha_ids = {id(a) for a in getattr(model, "alphas", [])}
    return [v for v in model.trainable_variables
            if len(v.shape) >= 2 and id(v) not in alpha_ids]


def _logits(model, x, training=True):
    out = model(x, training=training)
    return out[0] if isinstance(out, (list, tuple)) else out


def _cross_entropy(y, logits):
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        tf.cast(y, tf.int32), tf.cast(logits, tf.float32)))


@PROXIES.register("nwot")
class NWOT(Proxy):
    taps = ("relu",)

    def __init__(self, training=False):
        self.training = training

    def value(self, model, x, y):
        with taps.recording("relu") as got:
            _logits(model, x, self.training)
        n = tf.shape(x)[0]
        k = tf.zeros([n, n], tf.float64)
        for t in got["relu"]:
            c = tf.cast(tf.reshape(t, [n, -1]) > 0, tf.float32)
            # c c^T + (1 - c)(1 - c)^T = 2 c c^T - s_i - s_j + D (s: each row's count of
            # ones, D: the width): one matmul instead of two; integer counts below 2**24,
            # exact in float32
            ones = tf.reduce_sum(c, axis=1)
            width = tf.cast(tf.shape(c)[1], tf.float32)
            same = 2.0 * tf.matmul(c, c, transpose_b=True) - ones[:, None] - ones[None, :] + width
            k += tf.cast(same, tf.float64)
        return tf.linalg.slogdet(k)[1]


@PROXIES.register("jacob_cov")
class JacobCov(Proxy):
    def value(self, model, x, y):
        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(_logits(model, x))
        jac = tf.cast(tf.reshape(tape.gradient(total, x), [tf.shape(x)[0], -1]), tf.float64)
        centred = jac - tf.reduce_mean(jac, axis=1, keepdims=True)
        cov = tf.matmul(centred, centred, transpose_b=True)
        d = tf.sqrt(tf.linalg.diag_part(cov))
        corr = cov / (d[:, None] * d[None, :])
        v = tf.linalg.eigvalsh(corr)
        return -tf.reduce_sum(tf.math.log(v + 1e-5) + 1.0 / (v + 1e-5))


def _kernel_grads(model, x, y):
    ws = kernels(model)
    with tf.GradientTape() as tape:
        loss = _cross_entropy(y, _logits(model, x))
    return ws, tape.gradient(loss, ws, unconnected_gradients=tf.UnconnectedGradients.ZERO)


@PROXIES.register("snip")
class Snip(Proxy):
    def value(self, model, x, y):
        ws, gs = _kernel_grads(model, x, y)
        return tf.add_n([tf.reduce_sum(tf.abs(tf.cast(w, tf.float32) * g))
                         for w, g in zip(ws, gs)])


@PROXIES.register("grad_norm")
class GradNorm(Proxy):
    def value(self, model, x, y):
        _, gs = _kernel_grads(model, x, y)
        return tf.add_n([tf.norm(tf.cast(g, tf.float32)) for g in gs])


@PROXIES.register("fisher")
class Fisher(Proxy):
    taps = ("conv",)

    def value(self, model, x, y):
        with tf.GradientTape() as tape:
            with taps.recording("conv") as got:
                logits = _logits(model, x)
            loss = _cross_entropy(y, logits)
        acts = got["conv"] + [logits]
        grads = tape.gradient(loss, acts, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        total = tf.constant(0.0)
        for a, g in zip(acts, grads):
            prod = tf.cast(a, tf.float32) * tf.cast(g, tf.float32)
            per_image = tf.reduce_sum(prod, axis=[1, 2]) if len(prod.shape) == 4 else prod
            total += tf.reduce_sum(0.5 * tf.reduce_mean(tf.square(per_image), axis=0))
        return total


@PROXIES.register("synflow")
class SynFlow(Proxy):
    bn_free = True

    def value(self, model, x, y):
        ws = kernels(model)
        absolute = [tf.abs(tf.convert_to_tensor(w)) for w in ws]
        ones = tf.ones_like(x[:1], dtype=tf.float32)
        from keras import StatelessScope  # pylint: disable=import-outside-toplevel
        with tf.GradientTape() as tape:
            tape.watch(absolute)
            with StatelessScope(state_mapping=list(zip(ws, absolute))):
                total = tf.reduce_sum(tf.cast(_logits(model, ones), tf.float32))
        grads = tape.gradient(total, absolute,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return tf.add_n([tf.reduce_sum(a * tf.cast(g, tf.float32))
                         for a, g in zip(absolute, grads)])


def get_proxy(name):
    """The registered proxy `name` (an instance); RegistryError lists the names."""
    return PROXIES.get(name)()


@contextlib.contextmanager
def _own_edge_traces(model):
    """A supernet's edges traced in the caller's graph (no shared edge functions), so that
    tapped tensors belong to it; restored after."""
    edges = [m for m in getattr(model, "_flatten_layers", lambda: [])()
             if getattr(m, "pool", None) is not None]
    saved = [m.pool for m in edges]
    for m in edges:
        m.pool = None
    try:
        yield
    finally:
        for m, pool in zip(edges, saved):
            m.pool = pool


class ProxyScorer:
    """One traced function of `proxy` on `model`, reused for every mask and decision (the
    selection state is variables, so nothing retraces); `scorer(x, y)` -> float."""

    def __init__(self, model, proxy):
        self.model = model
        self.proxy = get_proxy(proxy) if isinstance(proxy, str) else proxy
        self.name = proxy if isinstance(proxy, str) else type(proxy).__name__

        def run(x, y):
            with contextlib.ExitStack() as stack:
                stack.enter_context(running_stats_frozen())
                if self.proxy.taps or self.proxy.bn_free:
                    # taps must land in this graph; a BN-free edge must not be cached in
                    # the supernet's shared edge traces (keyed without the bypass), where
                    # training and scoring would reuse it
                    stack.enter_context(_own_edge_traces(model))
                if self.proxy.bn_free:
                    stack.enter_context(bypassed())
                return tf.cast(self.proxy.value(model, x, y), tf.float64)
        self._fn = tf.function(run)

    def __call__(self, x, y):
        return float(self._fn(tf.convert_to_tensor(x), tf.convert_to_tensor(y)))
