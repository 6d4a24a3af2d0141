import numpy as np

from tfnas.selection import magnitude_genotype
from tfnas.spaces import get_space


def test_darts_by_hand():
    space = get_space("darts")  # ops: max, avg, skip, sep3, sep5, dil3, dil5
    w = np.full((14, 7), 0.1)
    # node 2 (edges 0, 1): both kept
    w[0, 3] = 0.5   # sep_conv_3x3 from 0
    w[1, 2] = 0.4   # skip_connect from 1
    # node 3 (edges 2, 3, 4): strongest edges 4 (0.9) and 2 (0.6)
    w[2, 6], w[3, 0], w[4, 1] = 0.6, 0.3, 0.9
    # node 4 (edges 5..8): edges 8 and 5, tie 0.7 vs 0.7 on 5/6 keeps the earlier (5)
    w[5, 4], w[6, 5], w[7, 0], w[8, 2] = 0.7, 0.7, 0.2, 0.8
    # node 5 (edges 9..13): edges 13 and 11
    w[9, 3], w[11, 5], w[13, 0] = 0.3, 0.55, 0.65
    g = magnitude_genotype(space, {"normal": w, "reduce": w})
    got = [(e.node, e.input, e.op) for e in g.cells["normal"]["edges"]]
    assert got == [(2, 0, "sep_conv_3x3"), (2, 1, "skip_connect"),
                   (3, 0, "dil_conv_5x5"), (3, 2, "avg_pool_3x3"),
                   (4, 0, "sep_conv_5x5"), (4, 3, "skip_connect"),
                   (5, 2, "dil_conv_3x3"), (5, 4, "max_pool_3x3")]
    assert g.meta["selector"] == "magnitude"


def test_s3_ignores_none():
    space = get_space("s3")  # ops: none, skip_connect, sep_conv_3x3
    w = np.tile([0.8, 0.1, 0.1], (14, 1))
    w[0] = [0.9, 0.02, 0.08]   # none dominates, sep wins among the rest
    w[1] = [0.1, 0.5, 0.4]
    w[2] = [0.9, 0.05, 0.05]
    w[3] = [0.2, 0.3, 0.5]
    w[4] = [0.0, 0.45, 0.55]
    g = magnitude_genotype(space, {"normal": w, "reduce": w})
    got = [(e.node, e.input, e.op) for e in g.cells["normal"]["edges"]][:4]
    # node 3: edge scores by best non-none op: e2 0.05, e3 0.5, e4 0.55 -> keep inputs 1, 2
    assert got == [(2, 0, "sep_conv_3x3"), (2, 1, "skip_connect"),
                   (3, 1, "sep_conv_3x3"), (3, 2, "sep_conv_3x3")]
    assert all(e.op != "none" for c in g.cells.values() for e in c["edges"])


def test_nb201_argmax_includes_none():
    space = get_space("nb201")  # none, skip, conv1x1, conv3x3, avg_pool
    w = np.zeros((6, 5))
    for e, k in enumerate([3, 0, 4, 1, 2, 3]):
        w[e, k] = 1.0
    g = magnitude_genotype(space, {"cell": w})
    assert g.to_nb201_string() == ("|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|"
                                   "nor_conv_1x1~1|nor_conv_3x3~2|")
