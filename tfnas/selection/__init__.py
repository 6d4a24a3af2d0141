"""Architecture selection: magnitude (the DARTS baseline); PT comes in a later issue."""

from tfnas.selection.magnitude import magnitude_genotype

__all__ = ["magnitude_genotype"]
