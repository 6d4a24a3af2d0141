import os
import shutil
import time

import numpy as np
import pytest

from tfnas.data import Pipeline, bilevel_split, load_dataset
from tfnas.errors import DataError, UsageError


def test_digits_offline_and_bilevel_split():
    d = load_dataset("digits")
    assert d.input_shape == (8, 8, 1) and d.num_classes == 10
    assert len(d.x_train) == 1437 and len(d.x_test) == 360 and d.x_train.dtype == np.uint8
    tr, va = bilevel_split(len(d.x_train), 0.5)
    assert len(tr) == 718 and len(va) == 719 and tr[-1] + 1 == va[0]


def test_pipeline_is_seeded_per_epoch():
    d = load_dataset("digits", limit=64)
    p = Pipeline(d, 16, seed=1, cutout=True, cutout_length=4)
    idx = np.arange(64)
    a = [x.numpy() for x, _ in p.train(idx, 0, cutout_prob=1.0)]
    b = [x.numpy() for x, _ in p.train(idx, 0, cutout_prob=1.0)]
    c = [x.numpy() for x, _ in p.train(idx, 1, cutout_prob=1.0)]
    assert len(a) == 4 and a[0].shape == (16, 8, 8, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def _tfds_examples(name, split):
    import tensorflow_datasets as tfds
    ds = tfds.builder(name).as_dataset(split=split, as_supervised=True, shuffle_files=False)
    x, y = zip(*tfds.as_numpy(ds))
    return np.stack(x), np.asarray(y)


def test_tfds_splits_stream_into_a_memory_mapped_cache(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds
    from tfnas.data import tfds_source
    from tfnas.data.sources import MemmapImages
    monkeypatch.setenv("TFNAS_CACHE_DIR", str(tmp_path / "cache"))
    with tfds.testing.mock_data(num_examples=20):
        d = load_dataset("cifar10")
        x, y = _tfds_examples("cifar10", "train")
    assert isinstance(d.x_train, MemmapImages) and isinstance(d.x_test, MemmapImages)
    assert d.x_train.shape == (20, 32, 32, 3) and d.num_classes == 10
    assert np.array_equal(np.asarray(d.x_train), x) and np.array_equal(d.y_train, y)
    assert d.mean[0] == pytest.approx(0.4914)  # cifar10 keeps the paper's constants
    folders = sorted(os.listdir(tmp_path / "cache" / "tfds" / "cifar10"))
    assert [f.split("-")[0] for f in folders] == ["test", "train"]
    # a second load reads the cache and streams nothing
    monkeypatch.setattr(tfds_source, "_stream_into", lambda *a: pytest.fail("streamed again"))
    with tfds.testing.mock_data(num_examples=20):
        again = load_dataset("cifar10")
    assert np.array_equal(np.asarray(again.x_train), x)
    # other data (here: another size) gets its own cache, never the old one
    monkeypatch.undo()
    monkeypatch.setenv("TFNAS_CACHE_DIR", str(tmp_path / "cache"))
    with tfds.testing.mock_data(num_examples=30):
        assert load_dataset("cifar10").x_train.shape[0] == 30
    assert len(os.listdir(tmp_path / "cache" / "tfds" / "cifar10")) == 4


def test_tfds_any_dataset_by_name_with_its_own_statistics(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds
    monkeypatch.setenv("TFNAS_CACHE_DIR", str(tmp_path))
    with tfds.testing.mock_data(num_examples=12):
        d = load_dataset("tfds:mnist")
        x, _ = _tfds_examples("mnist", "train")
    assert d.input_shape == (28, 28, 1) and d.num_classes == 10 and d.crop_pad == 3
    assert d.mean[0] == pytest.approx(float((x / 255.0).mean()), abs=1e-9)
    assert d.std[0] == pytest.approx(float((x / 255.0).std()), abs=1e-6)
    with pytest.raises(DataError, match="needs a tfds dataset name"):
        load_dataset("tfds:")
    with pytest.raises(DataError, match="tfds dataset 'no_such_set' cannot be opened"):
        load_dataset("tfds:no_such_set")


def test_tfds_cache_is_written_atomically(tmp_path, monkeypatch):
    """A failure (or a kill) while streaming leaves no cache that a later run would trust;
    temporary folders of dead processes are removed; an unwritable cache is one clear error."""
    import socket
    import tensorflow_datasets as tfds
    from tfnas.data import tfds_source
    monkeypatch.setenv("TFNAS_CACHE_DIR", str(tmp_path / "c"))
    real = tfds_source._stream_into

    def dies(folder, *a):
        open(os.path.join(folder, "images.u8"), "wb").write(b"half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(tfds_source, "_stream_into", dies)
    with tfds.testing.mock_data(num_examples=10):
        with pytest.raises(DataError, match=r"cannot write the dataset cache .*No space left"
                                            r".*TFNAS_CACHE_DIR"):
            load_dataset("cifar10")
    assert os.listdir(tmp_path / "c" / "tfds" / "cifar10") == []
    monkeypatch.setattr(tfds_source, "_stream_into", real)
    with tfds.testing.mock_data(num_examples=10):
        load_dataset("cifar10")
    parent = tmp_path / "c" / "tfds" / "cifar10"
    train = next(f for f in os.listdir(parent) if f.startswith("train"))
    shutil.rmtree(parent / train)
    stale = parent / f"{train}.tmp-{socket.gethostname()}-999999999"  # a dead writer's
    stale.mkdir()
    with tfds.testing.mock_data(num_examples=10):
        assert load_dataset("cifar10").x_train.shape[0] == 10
    assert sorted(os.listdir(parent))[1] == train and not stale.exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("TFNAS_CACHE_DIR", str(blocker))
    with tfds.testing.mock_data(num_examples=10):
        with pytest.raises(DataError, match="cannot write the dataset cache"):
            load_dataset("cifar10")


def test_missing_tfds_dataset_fails_fast(tmp_path):
    t = time.time()
    with pytest.raises(DataError, match=r"dataset .cifar10. not found in .*tfds build cifar10"):
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    assert time.time() - t < 30


def test_npz_and_folder(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 255, (10, 6, 6, 3), dtype=np.uint8),
             y_train=np.arange(10) % 3)
    d = load_dataset(f"npz:{path}")
    assert d.input_shape == (6, 6, 3) and d.num_classes == 3 and len(d.x_test) == 0
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match=r"missing arrays \['x_train', 'y_train'\]"):
        load_dataset(f"npz:{bad}")

    from PIL import Image
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            folder = tmp_path / "imgs" / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)).save(
                    folder / f"{i}.png")
    d = load_dataset(f"folder:{tmp_path / 'imgs'}")
    assert d.input_shape == (5, 7, 3) and d.num_classes == 2
    assert len(d.x_train) == 6 and len(d.x_test) == 6
    # folders list class by class; the loader shuffles, so the first half holds both classes
    assert sorted(d.y_train.tolist()) == [0, 0, 0, 1, 1, 1]
    assert set(d.y_train[:3].tolist()) == {0, 1}
    assert set(load_dataset(f"folder:{tmp_path / 'imgs'}", limit=3).y_train.tolist()) == {0, 1}
    with pytest.raises(UsageError, match="does not exist"):  # a bad path: exit 2
        load_dataset(f"folder:{tmp_path / 'nope'}")


def _spec_for(kind, folder):
    """An offline spec for every registered dataset kind (tfds ones through mock_data)."""
    rng = np.random.default_rng(0)
    if kind == "npz":
        np.savez(folder / "d.npz", x_train=rng.integers(0, 255, (12, 5, 5, 3), dtype=np.uint8),
                 y_train=np.arange(12) % 3)
        return f"npz:{folder / 'd.npz'}"
    if kind == "tfds":
        return "tfds:mnist"
    if kind == "folder":
        from PIL import Image
        for i in range(6):
            path = folder / "imgs" / "train" / f"c{i % 2}"
            path.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(
                path / f"{i}.png")
        return f"folder:{folder / 'imgs'}"
    return kind


def test_every_registered_dataset_meets_the_contract(tmp_path):
    """uint8 NHWC images, int64 labels inside 0..num_classes-1, per-channel normalisation."""
    import tensorflow_datasets as tfds
    from tfnas.data import DATASETS, ArrayData
    for kind in DATASETS.names():
        spec = _spec_for(kind, tmp_path)
        with tfds.testing.mock_data(num_examples=20):
            d = load_dataset(spec)
        assert isinstance(d, ArrayData), kind
        assert d.x_train.dtype == np.uint8 and d.x_train.ndim == 4, kind
        assert d.y_train.dtype == np.int64 and 0 <= d.y_train.min(), kind
        assert d.y_train.max() < d.num_classes and d.num_classes >= 2, kind
        assert len(d.mean) == len(d.std) == d.input_shape[-1], kind
        assert len(d.x_train) == len(d.y_train) and len(d.x_test) == len(d.y_test), kind


def _batches(data, indices, epoch=3):
    p = Pipeline(data, 4, seed=7, cutout=True, cutout_length=2)
    train = [(x.numpy(), y.numpy()) for x, y in p.train(indices, epoch, cutout_prob=0.5)]
    evaluation = [(x.numpy(), y.numpy()) for x, y in p.evaluation(data.x_train[indices],
                                                                  data.y_train[indices])]
    return train, evaluation


def _same_batches(a, b):
    assert len(a) == len(b) > 0
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)


def test_streamed_folder_gives_the_in_memory_batches(tmp_path):
    """A folder stays on disk (file paths, decoded in the pipeline after shuffling); its
    batches (order, augmentation, values) equal those of the same images held in memory,
    and its statistics equal numpy's over the decoded images."""
    import dataclasses
    from PIL import Image
    from tfnas.data.sources import FileImages
    rng = np.random.default_rng(2)
    for cls in ("a", "b", "c"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(7):
            Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(
                tmp_path / "imgs" / cls / f"{i}.png")
    d = load_dataset(f"folder:{tmp_path / 'imgs'}")
    assert isinstance(d.x_train, FileImages) and d.x_train.shape == (21, 6, 6, 3)
    in_memory = dataclasses.replace(d, x_train=np.asarray(d.x_train))
    assert in_memory.x_train.dtype == np.uint8 and in_memory.x_train.shape == (21, 6, 6, 3)
    xf = in_memory.x_train.astype(np.float64) / 255
    np.testing.assert_allclose(d.mean, xf.mean(axis=(0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(d.std, xf.std(axis=(0, 1, 2)), rtol=1e-9)
    idx = np.arange(3, 19)
    for a, b in zip(_batches(d, idx), _batches(in_memory, idx)):
        _same_batches(a, b)
    np.testing.assert_array_equal(d.x_train[5], in_memory.x_train[5])


def test_large_npz_is_memory_mapped_and_gives_the_in_memory_batches(tmp_path, monkeypatch):
    import dataclasses
    import tfnas.data as data_module
    from tfnas.data.sources import MemmapImages
    rng = np.random.default_rng(3)
    x = rng.integers(0, 255, (20, 5, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(20) % 4, x_test=x[:6],
             y_test=np.arange(6) % 4)
    monkeypatch.setattr(data_module, "MEMMAP_BYTES", 0)  # every array counts as large
    d = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert isinstance(d.x_train, MemmapImages) and isinstance(d.x_test, MemmapImages)
    in_memory = dataclasses.replace(d, x_train=x)
    xf = x.astype(np.float64) / 255
    np.testing.assert_allclose(d.mean, xf.mean(axis=(0, 1, 2)), rtol=1e-9)
    idx = np.arange(2, 18)
    for a, b in zip(_batches(d, idx), _batches(in_memory, idx)):
        _same_batches(a, b)
    np.savez_compressed(tmp_path / "c.npz", x_train=x, y_train=np.arange(20) % 4)
    assert isinstance(load_dataset(f"npz:{tmp_path / 'c.npz'}").x_train, np.ndarray)


def test_evaluation_shards_put_together_are_the_global_batches():
    """Multi-worker evaluation: each of 2 workers (2 local replicas each) decodes only its half
    of every global batch, the small last one included (one replica gets an empty batch
    there); every worker yields the same number of batches, and side by side they are the
    one-machine batches. `batches` keeps the first N global batches."""
    d = load_dataset("digits", limit=200)
    p = Pipeline(d, 8, seed=4)
    x, y = d.x_train[:37], d.y_train[:37]  # 4 full batches and one of 5
    whole = [(a.numpy(), b.numpy()) for a, b in p.evaluation(x, y)]
    parts = [[(a.numpy(), b.numpy()) for a, b in p.evaluation(x, y, shard=(w, 2),
                                                              replica_batch=2)]
             for w in range(2)]
    assert len(whole) == 5 and len(parts[0]) == len(parts[1]) == 10
    assert [len(b) for _, b in parts[1][-2:]] == [1, 0]  # examples 36 and none
    for k, (images, labels) in enumerate(whole):
        side = [parts[w][2 * k + r] for w in range(2) for r in range(2)]
        np.testing.assert_array_equal(images, np.concatenate([a for a, _ in side]))
        np.testing.assert_array_equal(labels, np.concatenate([b for _, b in side]))
    first = [b.numpy() for _, b in p.evaluation(x, y, batches=2)]
    assert [len(b) for b in first] == [8, 8]
    np.testing.assert_array_equal(np.concatenate(first), y[:16])
    one = [b.numpy() for _, b in p.evaluation(x, y, batches=2, shard=(1, 2), replica_batch=4)]
    np.testing.assert_array_equal(np.concatenate(one), np.concatenate([y[4:8], y[12:16]]))


def test_worker_shards_put_together_are_the_global_batches():
    """A multi-worker pipeline: each of 2 workers decodes and augments only its half of every
    global batch; side by side, the halves are the one-machine batches (values and order)."""
    d = load_dataset("digits", limit=200)
    p = Pipeline(d, 8, seed=4, cutout=True, cutout_length=4)
    idx = np.arange(10, 90)
    whole = [x.numpy() for x, _ in p.train(idx, 2, cutout_prob=0.5)]
    halves = [[x.numpy() for x, _ in p.train(idx, 2, cutout_prob=0.5, shard=(w, 2),
                                             replica_batch=4)] for w in range(2)]
    assert len(whole) == len(halves[0]) == len(halves[1]) == 10
    for k, batch in enumerate(whole):
        np.testing.assert_array_equal(batch, np.concatenate([halves[0][k], halves[1][k]]))
    with pytest.raises(ValueError, match="not divisible by 3"):
        p.train(idx, 2, shard=(0, 3))


def test_pipelines_run_without_the_autotune_thread_and_give_the_same_batches():
    """Every dataset a Pipeline returns has tf.data's autotuning off (deleting an iterator
    left before its end waits for the autotune thread's next wake-up, seconds per epoch);
    the batches are those of the same dataset with autotuning on."""
    import tensorflow as tf
    d = load_dataset("digits", limit=96)
    p = Pipeline(d, 16, seed=3, cutout=True, cutout_length=4)
    idx = np.arange(80)
    x, y = d.x_train[:40], d.y_train[:40]

    def made():  # fresh datasets (a shuffle reshuffles on its next iteration)
        return {"train": p.train(idx, 1, cutout_prob=0.5),
                "repeat": p.train(idx, 1, repeat=True).take(7),
                "shard": p.train(idx, 1, shard=(1, 2), replica_batch=8),
                "epochs": p.epochs(idx, 0, 2),
                "evaluation": p.evaluation(x, y),
                "evaluation shard": p.evaluation(x, y, shard=(0, 2))}
    on = tf.data.Options()
    on.autotune.enabled = True
    for (name, ds), again in zip(made().items(), made().values()):
        assert ds.options().autotune.enabled is False, name
        tuned = again.with_options(on)
        assert tuned.options().autotune.enabled is True
        a = [x.numpy() for x, _ in ds]
        b = [x.numpy() for x, _ in tuned]
        assert len(a) == len(b) > 0, name
        assert all(np.array_equal(u, v) for u, v in zip(a, b)), name
    assert len(list(made()["epochs"])) == 10


@pytest.mark.parametrize("global_seed", [0, 5, None])
def test_epochs_are_the_per_epoch_batches_under_any_global_seed(global_seed):
    """`Pipeline.epochs` (fit's input, epochs as tensors) gives exactly `train(epoch)`'s
    batches (the custom loop's, Python ints) one epoch after the other, whatever the global
    seed: 0 (`tfnas train --seed=0`) made `Dataset.shuffle` fail on the tensor seed."""
    import tensorflow as tf
    from tensorflow.python.framework import random_seed
    random_seed.set_seed(global_seed)
    try:
        d = load_dataset("digits", limit=64)
        p = Pipeline(d, 16, seed=0, cutout=True, cutout_length=4)
        idx = np.arange(64)
        joined = [(x.numpy(), y.numpy()) for x, y in p.epochs(idx, 0, 3, cutout_prob=0.5)]
        each = [(x.numpy(), y.numpy()) for e in range(3)
                for x, y in p.train(idx, e, cutout_prob=0.5)]
        assert len(joined) == len(each) == 12
        for (a, b), (u, v) in zip(joined, each):
            np.testing.assert_array_equal(a, u)
            np.testing.assert_array_equal(b, v)
        assert not np.array_equal(each[0][1], each[4][1])  # epochs shuffle differently
    finally:
        tf.random.set_seed(0)
