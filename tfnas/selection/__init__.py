"""Architecture selection: magnitude (the DARTS baseline) and perturbation (PT)."""

from tfnas.selection.magnitude import magnitude_genotype

__all__ = ["magnitude_genotype"]
