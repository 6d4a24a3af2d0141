"""tfnas: differentiable NAS with perturbation-based architecture selection, in TF/Keras 3."""

__version__ = "0.1.0"

# before TensorFlow loads: oneDNN on AVX2 CPUs where TensorFlow leaves it off (tfnas.cpuinfo)
from tfnas import cpuinfo as _cpuinfo  # noqa: E402

_cpuinfo.configure()


def __getattr__(name):  # lazy, so `import tfnas` does not import TensorFlow
    if name == "build_model":
        from tfnas.models import build_model
        return build_model
    raise AttributeError(f"module 'tfnas' has no attribute {name!r}")
