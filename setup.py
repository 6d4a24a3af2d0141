import os

from setuptools import find_packages, setup

# The GPU-capable `tensorflow` by default (CUDA libraries: the `gpu` extra). A CPU-only machine
# may install the smaller CPU build instead: TFNAS_TF_PACKAGE=tensorflow-cpu pip install .
TF = os.environ.get("TFNAS_TF_PACKAGE", "tensorflow")
if TF not in ("tensorflow", "tensorflow-cpu"):
    raise SystemExit(f"TFNAS_TF_PACKAGE={TF!r}: expected tensorflow or tensorflow-cpu")

setup(
    name="tfnas",
    version="0.1.0",
    description="Differentiable NAS with perturbation-based architecture selection "
                "(DARTS-PT) in TensorFlow / Keras 3",
    long_description=open("README.md").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    # the genotype zoo (export/) and the flagfiles (configs/) ship inside the package, so
    # `--genotype=darts_v2` and `--flagfile=paper/table2_darts_pt` work from any folder
    packages=find_packages(include=["tfnas", "tfnas.*"]) + ["tfnas.zoo", "tfnas.configs"],
    package_dir={"tfnas.zoo": "export", "tfnas.configs": "configs"},
    package_data={"tfnas.zoo": ["*.json"], "tfnas.configs": ["*.cfg", "paper/*.cfg"]},
    python_requires=">=3.10",
    install_requires=[
        f"{TF}>=2.21,<2.22",
        "keras>=3.10",
        "tensorflow-datasets>=4.9",
        # tfds 4.9.x imports the backport but declares it only for Python < 3.9 (TF_NOTES 7).
        "importlib_resources",
        "keras-tuner>=1.4",
        # keras-tuner's fit-based tuners import tensorboard's hparams plugin (TF_NOTES 4);
        # tensorflow-cpu does not install it.
        "tensorboard",
        "scipy",
        "tf2onnx>=1.16",
        "onnxruntime",  # also its quantization tools (int8 export), which need onnx:
        "onnx",
        "absl-py>=2.0",
        "scikit-learn",
        "numpy",
        "matplotlib",
    ],
    # torch: only to read PyTorch checkpoints of the legacy (pre-1.6) format in `tfnas import`
    extras_require={"test": ["pytest>=7"], "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
                    "torch": ["torch"]},
    entry_points={"console_scripts": ["tfnas=tfnas.cli:console_main"]},
)
