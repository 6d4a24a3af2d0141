"""The dataset registry and the in-memory / streamed dataset record every loader returns."""

import dataclasses

import numpy as np

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
