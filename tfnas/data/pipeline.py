"""tf.data pipelines: normalisation, pad-and-crop, flips and cutout with stateless seeds."""

import numpy as np
import tensorflow as tf


def bilevel_split(n, train_portion):
    """DARTS split: the first floor(portion*n) examples train weights, the rest alpha."""
    split = int(np.floor(train_portion * n))
    split = min(max(split, 1), n - 1)
    return np.arange(split), np.arange(split, n)


class Pipeline:
    """Builds batched datasets from in-memory arrays.

    Args:
        data: an ArrayData.
        batch_size: global batch size.
        seed: base seed; epoch e shuffles and augments with seeds derived from (seed, e).
    """

    def __init__(self, data, batch_size, seed, cutout=False, cutout_length=16):
        self.data, self.batch_size, self.seed = data, int(batch_size), int(seed)
        self.mean = tf.constant(data.mean, tf.float32)
        self.std = tf.constant(data.std, tf.float32)
        self.cutout, self.cutout_length = cutout, int(cutout_length)

    def normalize(self, x):
        return (tf.cast(x, tf.float32) / 255.0 - self.mean) / self.std

    def _augment(self, seed, x, cutout_prob):
        h, w = self.data.input_shape[:2]
        p = self.data.crop_pad
        if p:
            x = tf.pad(x, [[p, p], [p, p], [0, 0]])
            x = tf.image.stateless_random_crop(x, (h, w, x.shape[-1]), seed=seed)
        if self.data.flip:
            x = tf.image.stateless_random_flip_left_right(x, seed=seed + 1)
        x = self.normalize(x)
        if self.cutout and cutout_prob > 0:
            u = tf.random.stateless_uniform((3,), seed=seed + 2)
            cy = tf.cast(u[0] * h, tf.int32)
            cx = tf.cast(u[1] * w, tf.int32)
            half = self.cutout_length // 2
            ys, xs = tf.range(h)[:, None], tf.range(w)[None, :]
            hole = (ys >= cy - half) & (ys < cy + half) & (xs >= cx - half) & (xs < cx + half)
            keep = tf.logical_or(tf.logical_not(hole), u[2] >= cutout_prob)
            x = x * tf.cast(keep, x.dtype)[:, :, None]
        return x

    def train(self, indices, epoch, augment=True, cutout_prob=0.0, repeat=False,
              drop_remainder=True):
        """Shuffled, augmented batches of the examples at `indices` for one epoch."""
        x, y = self.data.x_train[indices], self.data.y_train[indices]
        seed = np.array([self.seed, epoch], np.int64)
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        ds = ds.shuffle(len(x), seed=int(self.seed * 100003 + epoch), reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.enumerate()
        prob = float(cutout_prob)

        def aug(i, xy):
            img, label = xy
            s = tf.stack([tf.constant(seed[0]) * 7919 + tf.constant(seed[1]), i]) * 3
            img = self._augment(s, img, prob) if augment else self.normalize(img)
            return img, label

        ds = ds.map(aug, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(self.batch_size, drop_remainder=drop_remainder).prefetch(2)

    def evaluation(self, x, y, batch_size=None):
        """Normalised, unaugmented batches in order (the last batch may be smaller)."""
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        ds = ds.map(lambda a, b: (self.normalize(a), b), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size or self.batch_size).prefetch(2)
