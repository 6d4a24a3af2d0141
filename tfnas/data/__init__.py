"""Datasets (a registry), the DARTS bilevel split, augmentation and tf.data pipelines.

Every loader returns an `ArrayData`: uint8 images (N, H, W, C) — numpy arrays, or images
that stay on disk (`sources.FileImages` for folders, `sources.MemmapImages` for large npz
files) — and integer labels, plus the normalisation and augmentation that suit the dataset.
Pipelines are built per epoch from a seed, so an interrupted search resumes on exactly the
same batches.
"""

import os

import numpy as np

from tfnas.errors import DataError
from tfnas.data.base import DATASETS, ArrayData, hold_out, num_classes_of

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))


def dataset_kind(spec):
    """"folder:/x" -> "folder"; "cifar10" -> "cifar10"."""
    return spec.split(":", 1)[0] if ":" in spec else spec


def _stats(x):
    """Per-channel mean and std of x/255 (a memory-mapped array: in chunks, float64)."""
    from tfnas.data.sources import MemmapImages
    if isinstance(x, MemmapImages):
        s = ss = 0.0
        for i in range(0, len(x.array), 4096):
            xf = np.asarray(x.array[i:i + 4096], np.float64) / 255.0
            s, ss = s + xf.sum(axis=(0, 1, 2)), ss + np.square(xf).sum(axis=(0, 1, 2))
        n = float(np.prod(x.array.shape[:3]))
        mean = s / n
        std = np.sqrt(np.maximum(ss / n - mean ** 2, 0.0))
        return tuple(mean.tolist()), tuple(np.maximum(std, 1e-3).tolist())
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
def load_digits(spec, data_dir="", download=False, **_):
    """scikit-learn's bundled 8x8 digits (1797 images, offline): the first 1437 train."""
    from sklearn.datasets import load_digits as sk_digits
    d = sk_digits()
    x = np.clip(d.images / 16.0 * 255.0, 0, 255).astype(np.uint8)[..., None]
    y = d.target.astype(np.int64)
    n = 1437
    mean, std = _stats(x[:n])
    return ArrayData("digits", x[:n], y[:n], x[n:], y[n:], 10, mean, std, crop_pad=1, flip=False)


def _tfds(name, stats, flip):
    def load(spec, data_dir="", download=False, **_):
        from tfnas.data.tfds_source import load_tfds
        return load_tfds(name, data_dir, download, stats=stats, flip=flip)
    return load


@DATASETS.register("tfds")
def load_any_tfds(spec, data_dir="", download=False, **_):
    """`tfds:NAME`: any tfds image-classification dataset with fixed-size uint8 images
    (normalised with its training split's own statistics)."""
    from tfnas.data.tfds_source import load_tfds
    name = spec.split(":", 1)[1] if ":" in spec else ""
    if not name:
        raise DataError("dataset 'tfds:NAME' needs a tfds dataset name, e.g. "
                        "tfds:imagenet_resized/32x32")
    return load_tfds(name, data_dir, download)


DATASETS.register("cifar10", _tfds("cifar10", CIFAR10_STATS, True))
DATASETS.register("cifar100", _tfds("cifar100", CIFAR100_STATS, True))
DATASETS.register("svhn", _tfds("svhn_cropped", SVHN_STATS, False))


@DATASETS.register("npz")
def load_npz(spec, data_dir="", download=False, **_):
    """`npz:PATH` with arrays x_train, y_train[, x_test, y_test] (ImageNet16-120 this way)."""
    path = spec.split(":", 1)[1]
    if not os.path.isfile(path):
        from tfnas.errors import UsageError
        what = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
        raise UsageError(f"dataset npz:{path}: {path} {what}")
    with open(path, "rb") as f:
        head = f.read(6)
    if not head.startswith((b"PK\x03\x04", b"\x93NUMPY")):  # a zip of .npy arrays, or one
        looks = " (it looks like text: a CSV?)" if head and all(
            32 <= b < 127 or b in (9, 10, 13) for b in head) else ""
        raise DataError(f"cannot read npz dataset {path}: not an .npz archive (numpy's "
                        f"np.savez format){looks}; convert it with np.savez(path, x_train=..., "
                        f"y_train=...)")
    try:
        with np.load(path) as f:
            images = {k: _npz_images(path, f, k) for k in ("x_train", "x_test") if k in f.files}
            arrays = {k: f[k] for k in f.files if k not in images}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read npz dataset {path}: {e}") from e
    arrays.update(images)
    missing = {"x_train", "y_train"} - set(arrays)
    if missing:
        raise DataError(f"npz dataset {path}: missing arrays {sorted(missing)}; it needs "
                        f"x_train, y_train[, x_test, y_test]")
    xtr, ytr = arrays["x_train"], _labels(arrays["y_train"], path)
    xte = arrays["x_test"] if "x_test" in arrays else xtr[:0]
    yte = _labels(arrays["y_test"], path) if "y_test" in arrays else ytr[:0]
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise DataError(f"npz dataset {path}: images and labels differ in length")
    h = xtr.shape[1]
    if "num_classes" in arrays:
        declared = np.asarray(arrays["num_classes"]).reshape(-1)
        if declared.size != 1 or not np.issubdtype(declared.dtype, np.integer):
            raise DataError(f"npz dataset {path}: num_classes must be one integer")
        num_classes = int(declared[0])
    else:
        num_classes = num_classes_of(ytr, yte, path)
    return ArrayData(os.path.basename(path), xtr, ytr, xte, yte, num_classes, *_stats(xtr),
                     crop_pad=max(1, h // 8), flip=True)


# an uncompressed uint8 image array of an npz larger than this is memory-mapped and read row
# by row by the pipelines (smaller ones are loaded: faster, and nothing to save)
MEMMAP_BYTES = 256 << 20


def _npz_images(path, f, name):
    from tfnas.data.sources import MemmapImages, memmap_npz_member
    mm = memmap_npz_member(path, name)
    if mm is not None and mm.nbytes > MEMMAP_BYTES and mm.dtype == np.uint8 and \
            mm.ndim == 4 and mm.shape[-1] in (1, 3):
        return MemmapImages(np.arange(len(mm)), mm.shape[1:], array=mm)
    return _as_images(f[name], path)


def validate_data(data, spec):
    """Checks once at load what every stage relies on.

    Raises:
        DataError: fewer than 2 classes or training examples, a label outside
            [0, num_classes), images and labels of different lengths.
    """
    for split in ("train", "test"):
        x, y = getattr(data, "x_" + split), getattr(data, "y_" + split)
        if len(x) != len(y):
            raise DataError(f"dataset {spec!r}: {len(x)} {split} images but {len(y)} labels")
        if len(y) and (y.min() < 0 or y.max() >= data.num_classes):
            raise DataError(f"dataset {spec!r}: a {split} label is {int(y.max())}, outside "
                            f"0..{data.num_classes - 1} ({data.num_classes} classes)")
    if data.num_classes < 2 or len(np.unique(data.y_train)) < 2:
        raise DataError(f"dataset {spec!r} has a single class in its training set: a "
                        f"classifier learns nothing from it (accuracy would be 1.0); it needs "
                        f"2 or more classes")
    if len(data.x_train) < 2:
        raise DataError(f"dataset {spec!r} has {len(data.x_train)} training examples; need 2+")


def load_dataset(spec, data_dir="", download=False, limit=0, skip_bad_images=False):
    """Loads and validates a dataset by spec ("digits", "cifar10", "folder:PATH",
    "npz:PATH")."""
    data = DATASETS.get(dataset_kind(spec))(spec, data_dir=data_dir, download=download,
                                            skip_bad_images=skip_bad_images)
    if limit:
        data.x_train, data.y_train = data.x_train[:limit], data.y_train[:limit]
    validate_data(data, spec)
    return data


from tfnas.data.pipeline import Pipeline, bilevel_split  # noqa: E402
from tfnas.data.folder import load_folder  # noqa: E402  (registers "folder")

__all__ = ["DATASETS", "ArrayData", "load_dataset", "load_folder", "dataset_kind", "Pipeline",
           "bilevel_split"]
