"""tf.data pipelines with stateless seeds.

Two augmentation styles (REFERENCE 3 and 5):
- "cifar": pad-and-random-crop, horizontal flip, normalisation, cutout.
- "imagenet": RandomResizedCrop (area 0.08-1, aspect 3/4-4/3), horizontal flip,
  ColorJitter(brightness 0.4, contrast 0.4, saturation 0.4, hue 0.2), normalisation; evaluation
  resizes to 256/224 of the input size and takes the central crop (Resize 256, CenterCrop 224).
"""

import numpy as np
import tensorflow as tf

from tfnas.data.sources import keys_and_decode


def without_model_thread(ds):
    """`ds` with tf.data's autotuning off. Its model thread sleeps for doubling periods (10 ms
    up to 60 s) and deleting an iterator that was not read to its end waits for the thread's
    next wake-up (TF 2.21): every epoch's training and alpha iterators (left before their
    end) cost up to one such period, measured 2-4 s on a 6 s tuning epoch. `AUTOTUNE`
    parallelism then means one call per core of tf.data's thread pool, and the prefetch
    buffers keep their sizes; the batches are the same."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def shuffled(ds, buffer_size, op_seed):
    """`ds.shuffle(buffer_size, seed=op_seed, reshuffle_each_iteration=True)` for an int64
    tensor `op_seed`, with the seeds `shuffle` derives from a Python int (the global seed,
    or TensorFlow's default graph seed, and `op_seed` mod 2**31-1; (0, 0) becomes
    (0, 2**31-1)). `Dataset.shuffle` itself fails on a tensor seed under a global seed of 0
    (TF 2.21 compares the seed pair to (0, 0) with a Python `==`), which
    `tfnas train --seed=0` sets."""
    seed = tf.constant(tf.compat.v1.random.get_seed(1)[0], tf.int64)
    seed2 = tf.math.floormod(op_seed, 2 ** 31 - 1)
    seed2 = tf.where((seed == 0) & (seed2 == 0), tf.constant(2 ** 31 - 1, tf.int64), seed2)
    variant = tf.raw_ops.ShuffleDatasetV3(
        input_dataset=tf.data.experimental.to_variant(ds),
        buffer_size=tf.constant(buffer_size, tf.int64), seed=seed, seed2=seed2,
        seed_generator=tf.raw_ops.DummySeedGenerator(), reshuffle_each_iteration=True,
        output_types=[s.dtype for s in tf.nest.flatten(ds.element_spec)],
        output_shapes=[s.shape for s in tf.nest.flatten(ds.element_spec)])
    return tf.data.experimental.from_variant(variant, ds.element_spec)


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

    STYLES = ("cifar", "imagenet")

    def __init__(self, data, batch_size, seed, cutout=False, cutout_length=16, style="cifar"):
        if style not in self.STYLES:
            raise ValueError(f"augmentation style {style!r} is unknown; expected one of "
                             f"{', '.join(self.STYLES)}")
        self.data, self.batch_size, self.seed = data, int(batch_size), int(seed)
        self.mean = tf.constant(data.mean, tf.float32)
        self.std = tf.constant(data.std, tf.float32)
        self.cutout, self.cutout_length = cutout, int(cutout_length)
        self.style = style

    def normalize(self, x):
        return (tf.cast(x, tf.float32) / 255.0 - self.mean) / self.std

    def _augment(self, seed, x, cutout_prob):
        if self.style == "imagenet":
            return self._augment_imagenet(seed, x)
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

    def _augment_imagenet(self, seed, x):
        h, w, c = self.data.input_shape
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(x), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
            min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
            max_attempts=10, use_image_if_no_bounding_boxes=True)
        x = tf.image.resize(tf.slice(x, begin, size), (h, w), method="bilinear")
        x = tf.image.stateless_random_flip_left_right(x, seed=seed + 1)
        x = color_jitter(x / 255.0, seed + 2) if c == 3 else x / 255.0
        return (x - self.mean) / self.std

    def _center(self, x):
        """Resize 256/224 of the input size, central crop (ImageNet evaluation)."""
        h, w = self.data.input_shape[:2]
        rh, rw = int(round(h * 256 / 224)), int(round(w * 256 / 224))
        x = tf.image.resize(tf.cast(x, tf.float32), (rh, rw), method="bilinear")
        x = x[(rh - h) // 2:(rh - h) // 2 + h, (rw - w) // 2:(rw - w) // 2 + w]
        return (x / 255.0 - self.mean) / self.std

    def train(self, indices, epoch, **kw):
        """Shuffled, augmented batches of the examples at `indices` for one epoch (keyword
        arguments: `_train_batches`), without tf.data's autotune thread."""
        return without_model_thread(self._train_batches(indices, epoch, **kw))

    def _train_batches(self, indices, epoch, augment=True, cutout_prob=0.0, repeat=False,
                       drop_remainder=True, shard=None, replica_batch=None, skip_batches=0):
        """Shuffled, augmented batches of the examples at `indices` for one epoch.

        Args:
            shard: (worker, workers): this worker's share of every global batch, taken
                before decoding and augmentation (a multi-worker input pipeline): worker w
                keeps the w-th of `workers` equal slices, so the replicas together see
                exactly the global batches (and augmentations) of a one-device run.
            replica_batch: batch size of the returned batches (default: the global batch);
                with `shard`, consecutive batches go to the worker's local replicas.
            skip_batches: start after this many global batches (a resume in the middle of
                an epoch): the examples are skipped before decoding, and the rest get the
                augmentation seeds they get in an uninterrupted epoch.
        """
        x, y = self.data.x_train[indices], self.data.y_train[indices]
        keys, decode = keys_and_decode(x)  # images, or file paths / rows read after shuffling
        ds = tf.data.Dataset.from_tensor_slices((keys, y))
        if isinstance(epoch, tf.Tensor):  # Pipeline.epochs: the same seeds as a Python int
            epoch = tf.cast(epoch, tf.int64)
            ds = shuffled(ds, len(keys), tf.constant(self.seed * 100003, tf.int64) + epoch)
        else:
            ds = ds.shuffle(len(keys), seed=int(self.seed * 100003 + epoch),
                            reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.enumerate()
        if skip_batches:
            ds = ds.skip(int(skip_batches) * self.batch_size)
        prob = float(cutout_prob)

        def aug(i, xy):
            img, label = xy
            img = decode(img)
            s = tf.stack([tf.constant(self.seed, tf.int64) * 7919
                          + tf.cast(epoch, tf.int64), i]) * 3
            img = self._augment(s, img, prob) if augment else self.normalize(img)
            return img, label

        if shard is not None:
            ds = self._shard(ds, *shard)
        ds = ds.map(aug, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(replica_batch or self.batch_size,
                        drop_remainder=drop_remainder).prefetch(2)

    def epochs(self, indices, first, last, **kw):
        """The batches of epochs first..last-1 in one dataset, each exactly `train(indices,
        epoch, **kw)` (what `model.fit` iterates; a resumed fit starts at its epoch); options
        are set on the outer dataset only (not inside the traced flat_map function)."""
        return without_model_thread(tf.data.Dataset.range(first, last).flat_map(
            lambda epoch: self._train_batches(indices, epoch, **kw)))

    def _shard(self, ds, worker, workers):
        """Every global batch of (position, (key, label)), cut to this worker's slice."""
        if self.batch_size % workers:
            raise ValueError(f"batch size {self.batch_size} is not divisible by {workers} "
                             f"input pipelines")
        part = self.batch_size // workers
        lo, hi = worker * part, (worker + 1) * part
        ds = ds.batch(self.batch_size, drop_remainder=True)
        ds = ds.map(lambda i, xy: (i[lo:hi], (xy[0][lo:hi], xy[1][lo:hi])))
        return ds.unbatch()

    def evaluation(self, x, y, batch_size=None, batches=0, shard=None, replica_batch=None):
        """Normalised, unaugmented batches in order (the last batch may be smaller).

        Args:
            batches: only the first N global batches (0: all).
            shard: (worker, workers): this worker's contiguous share of every global batch,
                cut before decoding (worker w keeps examples [w*B/W, (w+1)*B/W) of each; of
                a smaller last batch, what falls in that range).
            replica_batch: with `shard`, the worker's share is returned as share/replica_batch
                consecutive batches, one per local replica, for every global batch (some
                empty at a small last batch): every worker yields the same number of batches.
        """
        keys, decode = keys_and_decode(x)
        size = batch_size or self.batch_size
        prep = self._center if self.style == "imagenet" else self.normalize
        ds = tf.data.Dataset.from_tensor_slices((keys, y))
        if batches:
            ds = ds.take(batches * size)  # the first N global batches
        if shard is None:
            ds = ds.map(lambda a, b: (prep(decode(a)), b), num_parallel_calls=tf.data.AUTOTUNE)
            return without_model_thread(ds.batch(size).prefetch(2))
        worker, workers = shard
        if size % workers:
            raise ValueError(f"batch size {size} is not divisible by {workers} input pipelines")
        lo, hi = worker * size // workers, (worker + 1) * size // workers
        per = replica_batch or hi - lo
        spec = tf.TensorSpec(self.data.input_shape, tf.float32)

        def share(k, label):  # this worker's examples of one global batch, decoded
            k, label = k[lo:hi], label[lo:hi]
            return tf.map_fn(lambda a: prep(decode(a)), k, fn_output_signature=spec), label

        def per_replica(images, label):
            return tf.data.Dataset.range(0, hi - lo, per).map(
                lambda i: (images[i:i + per], label[i:i + per]))
        ds = ds.batch(size).map(share, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return without_model_thread(ds.flat_map(per_replica).prefetch(2))


def color_jitter(x, seed, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2):
    """torchvision's ColorJitter on an RGB image in [0, 1] (fixed order: brightness, contrast,
    saturation, hue; torchvision shuffles the order per image). Factors are uniform in
    [1 - s, 1 + s]; contrast blends with the mean grey level, saturation with the greyscale
    image; hue shifts by a uniform fraction of the colour circle in [-hue, hue]."""
    u = tf.random.stateless_uniform((4,), seed=seed) * 2.0 - 1.0
    x = tf.clip_by_value(x * (1.0 + brightness * u[0]), 0.0, 1.0)
    mean = tf.reduce_mean(tf.image.rgb_to_grayscale(x))
    x = tf.clip_by_value((x - mean) * (1.0 + contrast * u[1]) + mean, 0.0, 1.0)
    grey = tf.image.rgb_to_grayscale(x)
    x = tf.clip_by_value((x - grey) * (1.0 + saturation * u[2]) + grey, 0.0, 1.0)
    return tf.image.adjust_hue(x, hue * u[3])
