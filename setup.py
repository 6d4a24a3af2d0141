from setuptools import find_packages, setup

setup(
    name="tfnas",
    version="0.1.0",
    description="Differentiable NAS with perturbation-based architecture selection "
                "(DARTS-PT) in TensorFlow / Keras 3",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tfnas", "tfnas.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow-cpu>=2.21,<2.22; platform_machine=='x86_64' or platform_machine=='AMD64'",
        "tensorflow>=2.21,<2.22; platform_machine!='x86_64' and platform_machine!='AMD64'",
        "keras>=3.10",
        "tensorflow-datasets>=4.9",
        # tfds 4.9.x imports the backport but declares it only for Python < 3.9 (TF_NOTES 7).
        "importlib_resources",
        "keras-tuner>=1.4",
        # keras-tuner's fit-based tuners import tensorboard's hparams plugin (TF_NOTES 4);
        # tensorflow-cpu does not install it.
        "tensorboard",
        "tf2onnx>=1.16",
        "onnxruntime",
        "absl-py>=2.0",
        "scikit-learn",
        "numpy",
        "matplotlib",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={"console_scripts": ["tfnas=tfnas.cli:console_main"]},
)
