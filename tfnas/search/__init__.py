"""Supernet search: the alternating loop and its components."""

from tfnas.search.components import ARCH_UPDATES, PERTURBATIONS
from tfnas.search.loop import SearchLoop, cosine_lr, prepare_workdir, run_search

__all__ = ["ARCH_UPDATES", "PERTURBATIONS", "SearchLoop", "cosine_lr", "prepare_workdir",
           "run_search"]
