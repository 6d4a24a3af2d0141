"""Mixed precision: the Keras dtype policy a network is built under.

Under `mixed_bfloat16` or `mixed_float16` every op computes in the 16-bit type with float32
variables, while alphas and their softmax (`ArchParameters`), BN scale/offset/statistics
(`BatchNorm`, not autocast), the classifier's logits and therefore the loss stay float32.
float16 also needs loss scaling: the search loop's `DynamicLossScale`
(tfnas/bilevel/optim.py), and Keras's `LossScaleOptimizer` in `tfnas train`, which `compile`
wraps around the optimizer of a mixed_float16 model.
"""

import contextlib

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


@contextlib.contextmanager
def policy(name):
    """Builds layers under the dtype policy `name` (a layer keeps the policy it was created
    with); the global policy is restored afterwards."""
    import keras
    if name not in POLICIES:
        raise ValueError(f"unknown precision {name!r}; expected one of {', '.join(POLICIES)}")
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(old)
