"""Images that stay on disk until the input pipeline reads them.

A `LazyImages` behaves like the uint8 (N, H, W, C) array the pipelines expect where that is
all they need (`len`, `shape`, slicing and fancy indexing return lazy subsets, `np.asarray`
reads them), and gives `tf.data` light keys (file paths or row numbers) plus a `decode`
function that turns one key into one image. The pipeline shuffles, repeats and shards the
keys and decodes after that, so no epoch holds the dataset in memory.
"""

import numpy as np


class LazyImages:
    """Base: `keys` (numpy, one per image) and `decode(key) -> uint8 image tensor`."""

    dtype = np.dtype(np.uint8)

    def __init__(self, keys, image_shape):
        self.keys = np.asarray(keys)
        self.image_shape = tuple(int(d) for d in image_shape)

    def __len__(self):
        return len(self.keys)

    @property
    def shape(self):
        return (len(self.keys),) + self.image_shape

    @property
    def ndim(self):
        return 1 + len(self.image_shape)

    def subset(self, keys):
        return type(self)(keys, self.image_shape, **self._extra())

    def _extra(self):
        return {}

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return np.asarray(self.subset(self.keys[[index]]))[0]
        return self.subset(self.keys[index])

    def __array__(self, dtype=None, copy=None):
        import tensorflow as tf
        if not len(self.keys):
            return np.zeros(self.shape, dtype or np.uint8)
        ds = tf.data.Dataset.from_tensor_slices(self.keys).map(
            self.decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        out = np.concatenate([b.numpy() for b in ds.batch(1024)])
        return out.astype(dtype) if dtype is not None else out

    def decode(self, key):
        raise NotImplementedError


class FileImages(LazyImages):
    """Image files (JPEG, PNG, BMP, GIF), decoded to 3 channels and resized to `image_shape`
    (an identity at the same size)."""

    def decode(self, path):
        import tensorflow as tf
        h, w, c = self.image_shape
        img = tf.io.decode_image(tf.io.read_file(path), channels=c, expand_animations=False)
        img = tf.image.resize(img, (h, w), method="bilinear")
        img = tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)
        img.set_shape(self.image_shape)
        return img


class MemmapImages(LazyImages):
    """Rows of a memory-mapped uint8 array (an uncompressed `.npz` member), read one row per
    key by the pipeline: the file's pages are loaded on demand and can be dropped again."""

    def __init__(self, keys, image_shape, array=None):
        super().__init__(keys, image_shape)
        self.array = array

    def _extra(self):
        return {"array": self.array}

    def decode(self, row):
        import tensorflow as tf
        img = tf.numpy_function(lambda i: np.asarray(self.array[int(i)]), [row], tf.uint8,
                                stateful=False)
        img.set_shape(self.image_shape)
        return img


def memmap_npz_member(path, name):
    """Memory-maps array `name` of an uncompressed `.npz` (numpy's `savez`); None when the
    member is compressed (`savez_compressed`), not a plain array or absent."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        try:
            info = z.getinfo(name + ".npy")
        except KeyError:
            return None
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            name_len = int.from_bytes(local[26:28], "little")
            extra_len = int.from_bytes(local[28:30], "little")
            start = info.header_offset + 30 + name_len + extra_len
            f.seek(start)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
    if fortran or dtype.hasobject:
        return None
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset)


def keys_and_decode(x):
    """(keys for tf.data, key -> image) of images `x`: an array is its own key (identity:
    no op is added to the pipeline)."""
    if isinstance(x, LazyImages):
        return x.keys, x.decode
    return x, lambda image: image
