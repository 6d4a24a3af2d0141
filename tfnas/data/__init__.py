"""Datasets (a registry), the DARTS bilevel split, augmentation and tf.data pipelines.

Every loader returns an `ArrayData`: uint8 images (N, H, W, C) and integer labels held in
memory, plus the normalisation and augmentation that suit the dataset. Pipelines are built
per epoch from a seed, so an interrupted search resumes on exactly the same batches.
"""

import dataclasses
import os

import numpy as np

from tfnas.errors import DataError
from tfnas.registry import Registry

DATASETS = Registry("dataset")

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))


@dataclasses.dataclass
class ArrayData:
    """A dataset in memory.

    Attributes:
        x_train, y_train, x_test, y_test: uint8 NHWC images and int64 labels.
        num_classes: number of classes.
        mean, std: per-channel normalisation of images scaled to [0, 1].
        crop_pad: pad-and-random-crop margin (0: no cropping).
        flip: random horizontal flips.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: tuple
    std: tuple
    crop_pad: int = 4
    flip: bool = True

    @property
    def input_shape(self):
        return tuple(int(d) for d in self.x_train.shape[1:])


def dataset_kind(spec):
    """"folder:/x" -> "folder"; "cifar10" -> "cifar10"."""
    return spec.split(":", 1)[0] if ":" in spec else spec


def _stats(x):
    xf = x.astype(np.float32) / 255.0
    return tuple(xf.mean(axis=(0, 1, 2)).tolist()), tuple(
        np.maximum(xf.std(axis=(0, 1, 2)), 1e-3).tolist())


def _as_images(x, where):
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"{where}: expected images shaped (N, H, W[, 1|3]), got {x.shape}")
    if x.dtype != np.uint8:
        if x.max() <= 1.0 + 1e-6:
            x = x * 255.0
        x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    return x


def _labels(y, where):
    y = np.asarray(y).reshape(-1)
    if y.size and (y.min() < 0 or not np.issubdtype(y.dtype, np.integer)):
        raise DataError(f"{where}: labels must be non-negative integers")
    return y.astype(np.int64)


@DATASETS.register("digits")
def load_digits(spec, data_dir="", download=False):
    """scikit-learn's bundled 8x8 digits (1797 images, offline): the first 1437 train."""
    from sklearn.datasets import load_digits as sk_digits
    d = sk_digits()
    x = np.clip(d.images / 16.0 * 255.0, 0, 255).astype(np.uint8)[..., None]
    y = d.target.astype(np.int64)
    n = 1437
    mean, std = _stats(x[:n])
    return ArrayData("digits", x[:n], y[:n], x[n:], y[n:], 10, mean, std, crop_pad=1, flip=False)


def _tfds(name, stats, flip):
    def load(spec, data_dir="", download=False):
        import importlib
        import importlib.resources
        import sys
        # tfds 4.9 imports the importlib_resources backport (declared only for Python < 3.9).
        try:
            importlib.import_module("importlib_resources")
        except ImportError:
            sys.modules.setdefault("importlib_resources", importlib.resources)
        import tensorflow_datasets as tfds
        try:
            splits = tfds.load(name, split=["train", "test"], data_dir=data_dir or None,
                               download=download, as_supervised=True)
        except Exception as e:  # tfds raises AssertionError/DatasetNotFoundError when absent
            where = data_dir or "tfds's default data_dir (~/tensorflow_datasets)"
            raise DataError(
                f"dataset {name!r} not found in {where} ({type(e).__name__}). Prepare it "
                f"with `tfds build {name} --data_dir=DIR` on a machine with internet and pass "
                f"--data_dir=DIR, or pass --download") from e
        # Iterated example by example: batch_size=-1 aborts the process under
        # tfds.testing.mock_data (std::length_error in the generator dataset).
        (xtr, ytr), (xte, yte) = [
            tuple(np.stack(a) for a in zip(*tfds.as_numpy(split))) for split in splits]
        return ArrayData(name, _as_images(xtr, name), _labels(ytr, name), _as_images(xte, name),
                         _labels(yte, name), int(max(ytr.max(), yte.max()) + 1), *stats,
                         crop_pad=4, flip=flip)
    return load


DATASETS.register("cifar10", _tfds("cifar10", CIFAR10_STATS, True))
DATASETS.register("cifar100", _tfds("cifar100", CIFAR100_STATS, True))
DATASETS.register("svhn", _tfds("svhn_cropped", SVHN_STATS, False))


@DATASETS.register("npz")
def load_npz(spec, data_dir="", download=False):
    """`npz:PATH` with arrays x_train, y_train[, x_test, y_test] (ImageNet16-120 this way)."""
    path = spec.split(":", 1)[1]
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read npz dataset {path}: {e}") from e
    missing = {"x_train", "y_train"} - set(arrays)
    if missing:
        raise DataError(f"npz dataset {path}: missing arrays {sorted(missing)}; it needs "
                        f"x_train, y_train[, x_test, y_test]")
    xtr, ytr = _as_images(arrays["x_train"], path), _labels(arrays["y_train"], path)
    xte = _as_images(arrays["x_test"], path) if "x_test" in arrays else xtr[:0]
    yte = _labels(arrays["y_test"], path) if "y_test" in arrays else ytr[:0]
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise DataError(f"npz dataset {path}: images and labels differ in length")
    h = xtr.shape[1]
    return ArrayData(os.path.basename(path), xtr, ytr, xte, yte,
                     int(max(ytr.max(), yte.max() if len(yte) else 0) + 1), *_stats(xtr),
                     crop_pad=max(1, h // 8), flip=True)


@DATASETS.register("folder")
def load_folder(spec, data_dir="", download=False):
    """`folder:PATH`: class-per-subfolder images; PATH/train and PATH/test when present."""
    path = spec.split(":", 1)[1]
    if not os.path.isdir(path):
        raise DataError(f"image folder {path} does not exist")
    import keras
    parts = {}
    subsets = ("train", "test") if os.path.isdir(os.path.join(path, "train")) else ("",)
    class_names = None
    for sub in subsets:
        root = os.path.join(path, sub) if sub else path
        try:
            ds = keras.utils.image_dataset_from_directory(
                root, labels="inferred", label_mode="int", batch_size=None, shuffle=False,
                image_size=_first_image_size(root), class_names=class_names, verbose=False)
        except Exception as e:
            raise DataError(f"cannot read image folder {root}: {e}") from e
        class_names = ds.class_names
        xs, ys = [], []
        for x, y in ds.as_numpy_iterator():
            xs.append(x)
            ys.append(y)
        if not xs:
            raise DataError(f"image folder {root} holds no images")
        parts[sub or "train"] = (_as_images(np.stack(xs), root), _labels(np.array(ys), root))
    xtr, ytr = parts["train"]
    # Folders list images class by class: shuffle once (fixed seed) so the bilevel split and
    # --limit_examples see every class.
    order = np.random.RandomState(0).permutation(len(xtr))
    xtr, ytr = xtr[order], ytr[order]
    xte, yte = parts.get("test", (xtr[:0], ytr[:0]))
    return ArrayData(os.path.basename(os.path.normpath(path)), xtr, ytr, xte, yte,
                     len(class_names), *_stats(xtr), crop_pad=max(1, xtr.shape[1] // 8),
                     flip=True)


def _first_image_size(root):
    from PIL import Image
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            try:
                with Image.open(os.path.join(dirpath, f)) as im:
                    return im.size[1], im.size[0]
            except OSError:
                continue
    raise DataError(f"image folder {root} holds no readable images")


def load_dataset(spec, data_dir="", download=False, limit=0):
    """Loads a dataset by spec ("digits", "cifar10", "folder:PATH", "npz:PATH")."""
    data = DATASETS.get(dataset_kind(spec))(spec, data_dir=data_dir, download=download)
    if limit:
        data.x_train, data.y_train = data.x_train[:limit], data.y_train[:limit]
    if len(data.x_train) < 2:
        raise DataError(f"dataset {spec!r} has {len(data.x_train)} training examples; need 2+")
    return data


from tfnas.data.pipeline import Pipeline, bilevel_split  # noqa: E402

__all__ = ["DATASETS", "ArrayData", "load_dataset", "dataset_kind", "Pipeline", "bilevel_split"]
