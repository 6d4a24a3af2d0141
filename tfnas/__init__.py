"""tfnas: differentiable NAS with perturbation-based architecture selection, in TF/Keras 3."""

__version__ = "0.1.0"
