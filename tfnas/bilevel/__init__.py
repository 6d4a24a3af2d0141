"""The bilevel step of a supernet: its search state, the alternating step, epochs and tuning.

What lives here: `SearchState` (the supernet with its weight and alpha optimizers, loss
scale and metrics; it checkpoints as a whole and builds the traced step), the registered
architecture updates and alpha perturbations that run inside that step (`ARCH_UPDATES`,
`PERTURBATIONS`), the PyTorch-convention optimizers, the graphs specialised to decided
edges, and the epoch runners with the one tuning routine of PT (`tune_supernet`).

It may import the core modules, `ops`, `spaces` and `supernet`; it is imported by
`derive` (the library PT call tunes with it), `search` (the search run), `selection` and
`analyze`. It knows no run directory, flag or dataset loader.
"""

from tfnas.bilevel.optim import DynamicLossScale, MomentumSGD, TorchAdam
from tfnas.bilevel.updates import ARCH_UPDATES, PERTURBATIONS
from tfnas.bilevel.state import SearchState
from tfnas.bilevel.epochs import DatasetRunner, EpochRunner, tune_supernet

__all__ = ["ARCH_UPDATES", "PERTURBATIONS", "SearchState", "EpochRunner", "DatasetRunner",
           "tune_supernet", "MomentumSGD", "TorchAdam", "DynamicLossScale"]
