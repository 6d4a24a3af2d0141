"""TensorFlow Datasets, streamed once into a memory-mapped uint8 cache.

A tfds split is a sequential stream; the DARTS bilevel split, the seeded per-epoch shuffle
(which makes a resumed search see exactly the batches it would have seen) and per-worker
sharding need random access. So each split is read once, batch by batch, into
`<cache>/tfds/<name>/<split>-<fingerprint>/` (`images.u8`, raw rows; `labels.npy`;
`meta.json`, written last) and then memory-mapped through `MemmapImages`: no process holds
the dataset in memory, its pages are shared by every process on the machine and can be
dropped again.

The cache folder is built under a temporary name and renamed into place (a kill leaves no
half-written cache that a later run would trust). Its name holds a fingerprint of the
builder's version, the split's size and the first examples, so data that differs (another
version, `tfds.testing.mock_data`) never reuses it. The root is `$TFNAS_CACHE_DIR`, else
`$XDG_CACHE_HOME/tfnas`, else `~/.cache/tfnas`.
"""

import contextlib
import hashlib
import json
import os
import shutil
import socket

import numpy as np

from tfnas.data.base import ArrayData, num_classes_of
from tfnas.errors import DataError

FINGERPRINT_EXAMPLES = 8
CACHE_FORMAT = 1


def cache_root():
    """Where streamed datasets are cached ($TFNAS_CACHE_DIR, $XDG_CACHE_HOME/tfnas,
    ~/.cache/tfnas)."""
    if os.environ.get("TFNAS_CACHE_DIR"):
        return os.environ["TFNAS_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tfnas")


def import_tfds():
    import importlib
    import importlib.resources
    import sys
    # tfds 4.9 imports the importlib_resources backport (declared only for Python < 3.9).
    try:
        importlib.import_module("importlib_resources")
    except ImportError:
        sys.modules.setdefault("importlib_resources", importlib.resources)
    import tensorflow_datasets as tfds
    return tfds


@contextlib.contextmanager
def private_tempdir():
    """tfds (4.9) leaves a `tmp*tfds` folder in the system temp dir on every load
    (DatasetInfo.initialize_from_bucket): point tempfile at a folder of ours, removed after."""
    import tempfile
    own = tempfile.mkdtemp(prefix="tfnas-tfds-")
    saved, tempfile.tempdir = tempfile.tempdir, own
    try:
        yield own
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(own, ignore_errors=True)


def open_builder(name, data_dir, download):
    """The tfds builder of `name`, prepared (downloaded only when `download`).

    Raises:
        DataError: the dataset is not prepared in data_dir and download is off, or the name
            is unknown to tfds.
    """
    tfds = import_tfds()
    where = data_dir or "tfds's default data_dir (~/tensorflow_datasets)"
    try:
        builder = tfds.builder(name, data_dir=data_dir or None)
        if download:
            builder.download_and_prepare()
    except Exception as e:  # DatasetNotFoundError, download errors
        raise DataError(f"tfds dataset {name!r} cannot be opened from {where} "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    return builder


def split_stream(builder, name, split, data_dir):
    """(dataset of (image, label), number of examples) of one split, in file order."""
    try:
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    except Exception as e:  # AssertionError when the data was never prepared
        where = data_dir or "tfds's default data_dir (~/tensorflow_datasets)"
        raise DataError(
            f"dataset {name!r} not found in {where} ({type(e).__name__}). Prepare it "
            f"with `tfds build {name} --data_dir=DIR` on a machine with internet and pass "
            f"--data_dir=DIR, or pass --download") from e
    image, label = ds.element_spec
    if image.dtype.name != "uint8" or image.shape.rank != 3 or not image.shape.is_fully_defined():
        raise DataError(f"tfds dataset {name!r}: images are {image.dtype.name} "
                        f"{image.shape}; tfnas needs uint8 images of one fixed size (H, W, C) "
                        f"(pick a resized variant, e.g. imagenet_resized/32x32)")
    if not label.dtype.is_integer:
        raise DataError(f"tfds dataset {name!r}: labels are {label.dtype.name}, not integers")
    return ds, int(ds.cardinality())


def _fingerprint(builder, name, split, count, ds):
    h = hashlib.sha1(json.dumps([CACHE_FORMAT, name, str(builder.info.version), split,
                                 count]).encode())
    for x, y in ds.take(FINGERPRINT_EXAMPLES):
        h.update(x.numpy().tobytes())
        h.update(np.int64(y.numpy()).tobytes())
    return h.hexdigest()[:16]


def _read_cache(folder):
    """(MemmapImages, labels, meta) of a finished cache folder, or None."""
    from tfnas.data.sources import MemmapImages
    try:
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
        shape = tuple(meta["shape"])
        labels = np.load(os.path.join(folder, "labels.npy"))
        images = np.memmap(os.path.join(folder, "images.u8"), dtype=np.uint8, mode="r",
                           shape=shape) if shape[0] else np.zeros(shape, np.uint8)
    except (OSError, ValueError, KeyError):
        return None
    if len(labels) != shape[0]:
        return None
    return MemmapImages(np.arange(shape[0]), shape[1:], array=images), labels, meta


def _clean_stale(parent, stem):
    """Removes this host's temporary folders of `stem` left by processes that died."""
    host = socket.gethostname()
    for entry in os.listdir(parent):
        head, _, tail = entry.partition(".tmp-")
        if head != stem or not tail.startswith(host + "-"):
            continue
        try:
            os.kill(int(tail.rsplit("-", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
        except PermissionError:
            pass


def _stream_into(folder, ds, count, name):
    """Writes the split into `folder` batch by batch; returns its meta."""
    n, total, sq, labels, shape = 0, 0.0, 0.0, [], None
    with open(os.path.join(folder, "images.u8"), "wb") as f:
        for x, y in ds.batch(1024).as_numpy_iterator():
            f.write(np.ascontiguousarray(x).tobytes())
            labels.append(np.asarray(y, np.int64).reshape(-1))
            xf = x.astype(np.float64) / 255.0
            total, sq = total + xf.sum(axis=(0, 1, 2)), sq + np.square(xf).sum(axis=(0, 1, 2))
            n, shape = n + len(x), x.shape[1:]
        f.flush()
        os.fsync(f.fileno())
    if count >= 0 and n != count:
        raise DataError(f"tfds dataset {name!r}: the split declares {count} examples but "
                        f"{n} were read")
    shape = tuple(int(d) for d in (shape or ds.element_spec[0].shape))
    labels = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
    np.save(os.path.join(folder, "labels.npy"), labels)
    pixels = max(1, n * shape[0] * shape[1])
    mean = np.asarray(total, np.float64) / pixels
    std = np.sqrt(np.maximum(np.asarray(sq, np.float64) / pixels - mean ** 2, 0.0))
    meta = {"format": CACHE_FORMAT, "shape": [n, *shape],
            "mean": np.broadcast_to(mean, shape[-1:]).tolist(),
            "std": np.maximum(np.broadcast_to(std, shape[-1:]), 1e-3).tolist()}
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())
    return meta


def _say(line):
    import sys
    print(f"tfnas: {line}", file=sys.stderr, flush=True)


def cached_split(builder, name, split, data_dir="", log=_say):
    """One tfds split as (MemmapImages, int64 labels, meta with per-channel mean/std),
    streamed into the cache on first use.

    Raises:
        DataError: the split is missing, its images are not fixed-size uint8, or the cache
            cannot be written (the message names the folder and $TFNAS_CACHE_DIR).
    """
    ds, count = split_stream(builder, name, split, data_dir)
    key = f"{split}-{_fingerprint(builder, name, split, count, ds)}"
    parent = os.path.join(cache_root(), "tfds", name.replace("/", "__"))
    final = os.path.join(parent, key)
    found = _read_cache(final)
    if found is not None:
        return found
    tmp = f"{final}.tmp-{socket.gethostname()}-{os.getpid()}"
    try:
        os.makedirs(parent, exist_ok=True)
        _clean_stale(parent, key)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        if log:
            log(f"caching tfds {name} [{split}] ({count if count >= 0 else '?'} examples) in "
                f"{final} (once; later runs memory-map it)")
        _stream_into(tmp, ds, count, name)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same cache first: use theirs
            if _read_cache(final) is None:
                raise
    except OSError as e:
        raise DataError(f"cannot write the dataset cache {final} ({e}); free space there or "
                        f"point $TFNAS_CACHE_DIR at a writable folder") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    found = _read_cache(final)
    if found is None:
        raise DataError(f"the dataset cache {final} cannot be read back")
    return found


def load_tfds(name, data_dir="", download=False, stats=None, flip=True, log=_say):
    """An `ArrayData` of tfds dataset `name`: its train split and its test split (else its
    validation split), both memory-mapped from the cache.

    Args:
        stats: (mean, std) to normalise with (the paper's constants for CIFAR/SVHN); None
            takes the training split's own, computed while it is cached.
    """
    with private_tempdir():
        builder = open_builder(name, data_dir, download)
        xtr, ytr, meta = cached_split(builder, name, "train", data_dir, log)
        known = builder.info.splits
        test = next((s for s in ("test", "validation") if s in known), None if known else "test")
        if test is None:
            xte, yte = xtr[:0], ytr[:0]
        else:
            xte, yte, _ = cached_split(builder, name, test, data_dir, log)
        try:
            label_key = (builder.info.supervised_keys or (None, "label"))[1]
            declared = int(builder.info.features[label_key].num_classes)
        except (KeyError, AttributeError, TypeError):
            declared = None
    if declared is None:
        declared = num_classes_of(ytr, yte, name)
    mean, std = stats or (tuple(meta["mean"]), tuple(meta["std"]))
    h = xtr.shape[1]
    return ArrayData(name, xtr, ytr, xte, yte, declared, mean, std,
                     crop_pad=4 if h == 32 else max(1, h // 8), flip=flip)
