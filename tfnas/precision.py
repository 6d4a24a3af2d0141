"""Mixed precision: the Keras dtype policy a network is built under.

Under `mixed_bfloat16` every op computes in bfloat16 with float32 variables, while alphas and
their softmax (`ArchParameters`), BN scale/offset/statistics (`BatchNorm`, not autocast), the
classifier's logits and therefore the loss stay float32. float16 needs loss scaling in the
custom search loop, which is not built yet, so `mixed_float16` is not offered.
"""

import contextlib

POLICIES = ("float32", "mixed_bfloat16")


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
