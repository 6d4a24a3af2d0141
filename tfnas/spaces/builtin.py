"""The built-in spaces: DARTS (7 and 8 ops), RobustDARTS S1-S4, NAS-Bench-201."""

from tfnas.spaces.base import SPACES, make_space

DARTS_OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
             "dil_conv_3x3", "dil_conv_5x5")
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

# S1 (Zela et al. 2020): the two ops with the highest alpha per edge of a DARTS run on CIFAR-10.
_S1_NORMAL = (
    ("skip_connect", "dil_conv_3x3"), ("skip_connect", "dil_conv_5x5"),
    ("skip_connect", "dil_conv_5x5"), ("skip_connect", "sep_conv_3x3"),
    ("skip_connect", "dil_conv_3x3"), ("max_pool_3x3", "skip_connect"),
    ("skip_connect", "sep_conv_3x3"), ("skip_connect", "sep_conv_3x3"),
    ("skip_connect", "dil_conv_3x3"), ("skip_connect", "sep_conv_3x3"),
    ("max_pool_3x3", "skip_connect"), ("skip_connect", "dil_conv_3x3"),
    ("dil_conv_3x3", "dil_conv_5x5"), ("dil_conv_3x3", "dil_conv_5x5"))
_S1_REDUCE = (
    ("max_pool_3x3", "avg_pool_3x3"), ("max_pool_3x3", "dil_conv_3x3"),
    ("max_pool_3x3", "avg_pool_3x3"), ("max_pool_3x3", "avg_pool_3x3"),
    ("skip_connect", "dil_conv_5x5"), ("max_pool_3x3", "avg_pool_3x3"),
    ("max_pool_3x3", "sep_conv_3x3"), ("skip_connect", "dil_conv_3x3"),
    ("skip_connect", "dil_conv_5x5"), ("max_pool_3x3", "avg_pool_3x3"),
    ("max_pool_3x3", "avg_pool_3x3"), ("skip_connect", "dil_conv_5x5"),
    ("skip_connect", "dil_conv_5x5"), ("skip_connect", "dil_conv_5x5"))

SPACES.register("darts", lambda: make_space("darts", "darts", ops=DARTS_OPS))
SPACES.register("darts_none", lambda: make_space("darts_none", "darts",
                                                 ops=("none",) + DARTS_OPS))
SPACES.register("s1", lambda: make_space("s1", "darts", normal=_S1_NORMAL, reduce=_S1_REDUCE))
SPACES.register("s2", lambda: make_space("s2", "darts", ops=("skip_connect", "sep_conv_3x3")))
SPACES.register("s3", lambda: make_space("s3", "darts",
                                         ops=("none", "skip_connect", "sep_conv_3x3")))
SPACES.register("s4", lambda: make_space("s4", "darts", ops=("noise", "sep_conv_3x3")))
SPACES.register("nb201", lambda: make_space("nb201", "nb201", ops=NB201_OPS))
