"""`folder:PATH` datasets: class-per-subfolder image files, streamed.

The files are listed and scanned once at load (each decoded in a tf.data pipeline, never all
held at once): undecodable files are named (or skipped with `--skip_bad_images`) and the
per-channel mean and std are accumulated. The training and test images then stay on disk as
`FileImages`: the pipelines shuffle file paths and decode after that.
"""

import os
import sys

import numpy as np

from tfnas.data.base import DATASETS, ArrayData
from tfnas.data.sources import FileImages
from tfnas.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@DATASETS.register("folder")
def load_folder(spec, data_dir="", download=False, skip_bad_images=False, **_):
    """`folder:PATH`: class-per-subfolder images; PATH/train and PATH/test when present.

    Files are listed (sorted; subfolders of a class folder included), scanned (3 channels,
    resized to the first image's size) and streamed from disk while training.
    """
    path = spec.split(":", 1)[1]
    if not os.path.isdir(path):
        from tfnas.errors import UsageError  # a bad path: exit 2, as every bad path
        what = "is a file, not a folder" if os.path.exists(path) else "does not exist"
        raise UsageError(f"dataset folder:{path}: image folder {path} {what}")
    subsets = ("",)
    if os.path.isdir(os.path.join(path, "train")):  # PATH/test is optional
        subsets = ("train",) + (("test",) if os.path.isdir(os.path.join(path, "test")) else ())
    parts, class_names, size = {}, None, None
    for sub in subsets:
        root = os.path.join(path, sub) if sub else path
        names, files, labels = _list_images(root)
        if class_names is not None and names != class_names:
            raise DataError(f"image folder {root}: its classes {names} differ from the "
                            f"training classes {class_names}")
        class_names = names
        size = size or _first_image_size(files, root)
        parts[sub or "train"] = _scan(files, labels, size, root, skip_bad_images)
    (ftr, ytr, moments), shape = parts["train"], size + (3,)
    # Folders list images class by class: shuffle once (fixed seed) so the bilevel split and
    # --limit_examples see every class.
    order = np.random.RandomState(0).permutation(len(ftr))
    xtr, ytr = FileImages(ftr[order], shape), ytr[order]
    fte, yte, _ = parts.get("test", (ftr[:0], ytr[:0], None))
    mean = moments[0]
    std = np.maximum(np.sqrt(np.maximum(moments[1] - mean ** 2, 0.0)), 1e-3)
    return ArrayData(os.path.basename(os.path.normpath(path)), xtr, ytr,
                     FileImages(fte, shape), yte, len(class_names), tuple(mean.tolist()),
                     tuple(std.tolist()), crop_pad=max(1, size[0] // 8), flip=True)


def _list_images(root):
    classes = sorted(d for d in os.listdir(root)
                     if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    files, labels = [], []
    for label, name in enumerate(classes):
        for dirpath, dirs, names in os.walk(os.path.join(root, name)):
            dirs.sort()
            for f in sorted(names):
                if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                    files.append(os.path.join(dirpath, f))
                    labels.append(label)
    if not files:
        raise DataError(f"image folder {root} holds no images (expected one subfolder per "
                        f"class with {', '.join(IMAGE_EXTENSIONS)} files)")
    return classes, np.array(files), np.array(labels, np.int64)


def _first_image_size(files, root):
    from PIL import Image
    for f in files:
        try:
            with Image.open(f) as im:
                return im.size[1], im.size[0]
        except OSError:
            continue
    raise DataError(f"image folder {root} holds no readable images")


def _scan(files, labels, size, root, skip_bad):
    """Decodes every file once in a tf.data pipeline, batch by batch: the files that fail
    (missing from `ignore_errors`' output) are named, and either fail the load or are
    dropped. Returns (good files, their labels, [mean, mean of squares] per channel of x/255
    over the good images, float64)."""
    import tensorflow as tf
    images = FileImages(files, size + (3,))
    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(files)), files))
    ds = ds.map(lambda i, f: (i, images.decode(f)), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True).ignore_errors()
    good, s, ss, n = [], np.zeros(3), np.zeros(3), 0
    for i, x in ds.batch(512).as_numpy_iterator():
        good.append(i)
        xf = x.astype(np.float64) / 255.0
        s += xf.sum(axis=(0, 1, 2))
        ss += np.square(xf).sum(axis=(0, 1, 2))
        n += xf.shape[0] * xf.shape[1] * xf.shape[2]
    good = np.concatenate(good) if good else np.zeros(0, np.int64)
    bad = sorted(set(range(len(files))) - set(good.tolist()))
    if bad:
        if not skip_bad:
            raise DataError(f"image folder {root}: {len(bad)} file(s) cannot be decoded as "
                            f"images, first {files[bad[0]]}; fix or remove them, or pass "
                            f"--skip_bad_images")
        print(f"tfnas: warning: skipped {len(bad)} undecodable image(s) in {root}, first "
              f"{files[bad[0]]}", file=sys.stderr, flush=True)
    if not len(good):
        raise DataError(f"image folder {root} holds no decodable images")
    return files[good], labels[good], np.stack([s / max(n, 1), ss / max(n, 1)])
