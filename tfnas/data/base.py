"""The dataset registry and the in-memory / streamed dataset record every loader returns."""

import dataclasses

import numpy as np

from tfnas.errors import DataError
from tfnas.registry import Registry

DATASETS = Registry("dataset")


@dataclasses.dataclass
class ArrayData:
    """A dataset: images in memory or streamed from disk, labels in memory.

    Attributes:
        x_train, y_train, x_test, y_test: uint8 NHWC images (a numpy array or a
            `tfnas.data.sources.LazyImages`) and int64 labels.
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


def num_classes_of(y_train, y_test, where):
    """Classes of a dataset that does not declare them: the labels must be 0..K-1 with every
    class in the training set (a stray huge label would otherwise size the classifier)."""
    k = len(np.unique(y_train))
    top = int(max(y_train.max(), y_test.max() if len(y_test) else 0))
    if top != k - 1:
        raise DataError(f"{where}: labels are not 0..K-1 (the training set has {k} distinct "
                        f"labels, the largest label is {top}); relabel them, or declare the "
                        f"classes (npz: a num_classes array)")
    return k


def hold_out(data, fraction, seed):
    """(`data` without a held-out validation split, (x_val, y_val) or None): a `fraction` of
    the training examples, drawn by `seed` (the same split on every run and resume); both
    parts keep the original order. The normalisation constants stay the dataset's.

    Raises:
        DataError: the split leaves no validation or no training example.
    """
    import dataclasses
    if not fraction:
        return data, None
    n = len(data.y_train)
    n_val = int(round(n * fraction))
    if n_val < 1 or n_val >= n:
        raise DataError(f"--validation_split={fraction:g} of {n} training examples leaves "
                        f"{n_val} for validation and {n - n_val} for training; both need one")
    perm = np.random.RandomState(seed).permutation(n)
    val, keep = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return (dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep]),
            (data.x_train[val], data.y_train[val]))
