"""Architecture selection: magnitude (the DARTS baseline) and perturbation (PT).

`PerturbationOracle`, `PTTuner` and `GenotypeHyperModel` (KerasTuner, whose import takes
seconds) load on first use; so do the selector and `run_select` (they import the search).
"""

from tfnas.derive import magnitude_genotype

_ORACLE = ("PerturbationOracle", "PTTuner", "GenotypeHyperModel", "genotype_from_values",
           "declare_space")


def __getattr__(name):
    if name in _ORACLE:
        from tfnas.selection import oracle
        return getattr(oracle, name)
    if name in ("PerturbationSelector", "SelectConfig"):
        from tfnas.selection import pt
        return getattr(pt, name)
    if name in ("run_select", "load_search"):
        from tfnas.selection import run
        return getattr(run, name)
    raise AttributeError(f"module 'tfnas.selection' has no attribute {name!r}")


__all__ = ["magnitude_genotype", *_ORACLE, "PerturbationSelector", "SelectConfig",
           "run_select", "load_search"]
