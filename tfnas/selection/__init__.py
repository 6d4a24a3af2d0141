"""Architecture selection: magnitude (the DARTS baseline) and perturbation (PT).

`PerturbationOracle`, `PTTuner` and `GenotypeHyperModel` (KerasTuner) load on first use.
"""

from tfnas.selection.magnitude import magnitude_genotype

_ORACLE = ("PerturbationOracle", "PTTuner", "GenotypeHyperModel", "genotype_from_values",
           "declare_space")


def __getattr__(name):
    if name in _ORACLE:
        from tfnas.selection import oracle
        return getattr(oracle, name)
    if name in ("PerturbationSelector", "SelectConfig", "run_select"):
        from tfnas.selection import pt
        return getattr(pt, name)
    raise AttributeError(f"module 'tfnas.selection' has no attribute {name!r}")


__all__ = ["magnitude_genotype", *_ORACLE, "PerturbationSelector", "SelectConfig", "run_select"]
