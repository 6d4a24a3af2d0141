"""Mixed ops, search cells and the two supernet families."""

from tfnas.supernet.mixed import ArchParameters, MixedOp
from tfnas.supernet.networks import (DartsSupernet, NB201Supernet, ResidualReduction,
                                     SearchCell, StemConv, Supernet, build_supernet)

__all__ = ["ArchParameters", "MixedOp", "DartsSupernet", "NB201Supernet", "ResidualReduction",
           "SearchCell", "StemConv", "Supernet", "build_supernet"]
