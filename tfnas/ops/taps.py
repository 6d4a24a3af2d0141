"""Taps: what zero-cost proxies read from inside a forward pass, without hooks.

PyTorch proxies hook modules (NASWOT reads every ReLU's input, Fisher every conv's output);
Keras layers have no hooks. tfnas's ops call `relu` and `tap` at those points instead: while
a `recording(...)` block is active (when a forward pass is traced or run eagerly), the
tensors are collected; otherwise the calls cost nothing (a Python check at trace time, no op
in the graph).

    with taps.recording("relu") as got:
        logits = model(x, training=True)
    codes = [tf.cast(t > 0, tf.float32) for t in got["relu"]]

Tensors recorded inside a nested `tf.function` (a supernet's shared edge traces) belong to
that function's graph: a caller turns the sharing off while it records
(`tfnas.derive.proxies`).
"""

import contextlib
import threading

import tensorflow as tf

_STATE = threading.local()


@contextlib.contextmanager
def recording(*kinds):
    """Collects the tensors tapped as any of `kinds` ("relu": ReLU inputs, "conv":
    convolution outputs) inside the block: yields {kind: [tensor, ...]}."""
    got = {k: [] for k in kinds}
    stack = getattr(_STATE, "stack", None)
    if stack is None:
        stack = _STATE.stack = []
    stack.append(got)
    try:
        yield got
    finally:
        stack.pop()


def tap(kind, tensor):
    """Records `tensor` as `kind` in the innermost active recording that asks for it;
    returns `tensor`."""
    stack = getattr(_STATE, "stack", None)
    if stack and kind in stack[-1]:
        stack[-1][kind].append(tensor)
    return tensor


def relu(x):
    """`tf.nn.relu(x)`, its input tapped as "relu"."""
    return tf.nn.relu(tap("relu", x))
