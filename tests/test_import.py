"""`tfnas import --from=darts-pt`: checkpoints written by the authors' own code
(tests/data/darts_pt_search_*, tools/make_darts_pt_checkpoint.py) become tfnas runs whose
supernet computes the reference's logits, and that `tfnas select` takes."""

import io
import json
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest

from tfnas.cli import main
from tfnas.interop.torch_file import read_torch_file

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
NB201 = os.path.join(DATA, "darts_pt_search_nb201_c2_n1.pth.tar")
DARTS = os.path.join(DATA, "darts_pt_search_darts_c2_l3.pth.tar")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """CIFAR-shaped random images (3 channels, 10 classes) to score on."""
    rng = np.random.default_rng(0)
    path = str(tmp_path_factory.mktemp("data") / "images.npz")
    x = rng.integers(0, 255, (96, 16, 16, 3)).astype(np.uint8)
    np.savez(path, x_train=x, y_train=np.arange(96) % 10, x_test=x[:20],
             y_test=np.arange(20) % 10)
    return f"npz:{path}"


def _import(ckpt, workdir, images, *flags):
    return main(["import", ckpt, f"--workdir={workdir}", f"--dataset={images}",
                 "--batch_size=16", *flags])


def _logits(workdir, ckpt):
    from tfnas.selection.run import load_search
    loop = load_search(workdir, log=lambda s: None)
    ref = np.load(ckpt.replace(".pth.tar", ".npz"))
    ours = loop.model(ref["x"].transpose(0, 2, 3, 1), training=False).numpy()
    return loop, ours, ref["logits"]


def test_nb201_import_computes_the_reference_logits_and_select_runs(tmp_path, images, capsys):
    wd = str(tmp_path / "run")
    assert _import(NB201, wd, images) == 0
    loop, ours, theirs = _logits(wd, NB201)
    assert loop.space.name == "nb201" and loop.config.channels == 2
    assert loop.config.layers == 1 and loop.config.epochs == 50
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    # optimizer state: the alphas' Adam moments and step, the SGD momentum of the stem conv
    ckpt = read_torch_file(NB201)
    adam = ckpt["arch_optimizer"]["state"][0]
    np.testing.assert_array_equal(loop.state.a_opt.m[0].numpy(), adam["exp_avg"])
    np.testing.assert_array_equal(loop.state.a_opt.v[0].numpy(), adam["exp_avg_sq"])
    assert int(loop.state.a_opt.iterations) == int(adam["step"]) == 3
    stem = [v for v in loop.model.variables if v.path.endswith("stem/conv")][0]
    mom = ckpt["optimizer"]["state"][0]["momentum_buffer"]  # parameter 0: stem.0.weight
    np.testing.assert_array_equal(loop.state.w_opt.buffer(stem).numpy(),
                                  mom.transpose(2, 3, 1, 0))
    record = json.load(open(os.path.join(wd, "import.json")))
    assert record["tensors"] == 141 and record["not_imported"] == ["scheduler"]
    assert record["optimizer_slots"] == 57 + 2
    # the selection of the paper on it (6 op decisions), no tuning: a genotype
    assert main(["select", f"--workdir={wd}", "--tune_epochs_per_decision=0",
                 "--score_batches=1"]) == 0
    genotype = json.load(open(os.path.join(wd, "genotype.json")))
    assert len(genotype["cells"]["cell"]["edges"]) == 6


def test_darts_import_finds_the_space_and_refuses_contradictions(tmp_path, images, capsys):
    wd = str(tmp_path / "run")
    assert _import(DARTS, wd, images, "--space=s2") == 2  # given explicitly: only s2
    assert "no space matches the checkpoint: s2" in capsys.readouterr().err
    assert _import(DARTS, wd, images, "--channels=8") == 2
    assert "--channels=8 contradicts the checkpoint (channels 2)" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(wd, "config.json"))  # nothing written
    assert _import(DARTS, wd, images) == 0
    err = capsys.readouterr()
    assert "no SGD state in the checkpoint" in err.out
    loop, ours, theirs = _logits(wd, DARTS)
    assert loop.space.name == "darts" and loop.config.layers == 3
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    # a second import into the run is refused unless --overwrite; the run is untouched
    before = open(os.path.join(wd, "metrics.jsonl")).read()
    assert _import(DARTS, wd, images) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert open(os.path.join(wd, "metrics.jsonl")).read() == before
    assert _import(DARTS, wd, images, "--overwrite") == 0
    assert open(os.path.join(wd, "metrics.jsonl")).read() == before  # replaced, one row


def test_reader_refuses_what_is_not_a_tensor_checkpoint(tmp_path, images, capsys,
                                                        monkeypatch):
    import datetime
    assert _import(str(tmp_path / "missing.pth"), str(tmp_path / "a"), images) == 2
    assert "missing.pth: no such file" in capsys.readouterr().err
    assert _import(str(tmp_path), str(tmp_path / "a"), images) == 2
    assert "is not a file" in capsys.readouterr().err
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    monkeypatch.setitem(sys.modules, "torch", None)  # as where PyTorch is not installed
    assert _import(str(text), str(tmp_path / "a"), images) == 2
    assert "pip install 'tfnas[torch]'" in capsys.readouterr().err
    plain_zip = tmp_path / "x.zip"
    with zipfile.ZipFile(plain_zip, "w") as z:
        z.writestr("a.txt", "hello")
    assert _import(str(plain_zip), str(tmp_path / "a"), images) == 2
    assert "not a PyTorch checkpoint (no data.pkl)" in capsys.readouterr().err
    evil = tmp_path / "evil.pth"  # a pickle naming a class: refused, nothing is called
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"epoch": datetime.date(2020, 1, 1)}))
    assert _import(str(evil), str(tmp_path / "a"), images) == 2
    assert "holds a datetime.date object" in capsys.readouterr().err
    plain = tmp_path / "plain.pth"  # a valid file that is not a search checkpoint
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"model": 1}))
    assert _import(str(plain), str(tmp_path / "a"), images) == 2
    assert "is not a darts-pt search checkpoint" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "a")


def _fake_torch_pickle(tmp_path, monkeypatch, tensors, storages):
    """A zip in torch.save's layout written without torch: stand-in `torch` modules give
    the pickle the global names torch's own pickle uses (`torch._utils._rebuild_tensor_v2`,
    `torch.FloatStorage`, ...); `tensors` {name: (storage key, offset, size, stride)}."""
    import collections
    import types
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while pickling")
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = \
        "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "DoubleStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    class Storage:
        def __init__(self, key):
            self.key = key

    class Tensor:
        def __init__(self, key, offset, size, stride):
            self.args = (Storage(key), offset, size, stride, False, collections.OrderedDict())

        def __reduce__(self):
            return _rebuild_tensor_v2, self.args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                data = storages[obj.key]
                kind = {np.float32: torch.FloatStorage, np.float64: torch.DoubleStorage,
                        np.int64: torch.LongStorage}[data.dtype.type]
                return ("storage", kind, obj.key, "cpu", data.size)
            return None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({k: Tensor(*v) for k, v in tensors.items()})
    path = tmp_path / "fake.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("fake/data.pkl", buf.getvalue())
        for key, data in storages.items():
            z.writestr(f"fake/data/{key}", data.astype(data.dtype.newbyteorder("<")).tobytes())
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.delitem(sys.modules, "torch._utils")
    return str(path)


def test_reader_rebuilds_offsets_strides_scalars_and_dtypes(tmp_path, monkeypatch):
    """Several tensors on one storage (offsets, a transposed view), a scalar, float64 and
    int64 storages: what torch's pickle refers to, rebuilt as numpy arrays."""
    f = np.arange(12, dtype=np.float32)
    d = np.linspace(0.0, 1.0, 4)
    i = np.array([7, -3], np.int64)
    path = _fake_torch_pickle(tmp_path, monkeypatch, {
        "block": ("0", 2, (2, 3), (3, 1)), "transposed": ("0", 0, (3, 2), (1, 3)),
        "scalar": ("0", 5, (), ()), "double": ("1", 1, (3,), (1,)), "long": ("2", 0, (2,), (1,))},
        {"0": f, "1": d, "2": i})
    out = read_torch_file(path)
    np.testing.assert_array_equal(out["block"], f[2:8].reshape(2, 3))
    np.testing.assert_array_equal(out["transposed"], f[:6].reshape(2, 3).T)
    assert out["scalar"] == 5.0 and np.shape(out["scalar"]) == ()
    assert out["double"].dtype == np.float64 and np.array_equal(out["double"], d[1:])
    assert out["long"].dtype == np.int64 and list(out["long"]) == [7, -3]
    assert out["block"].flags.writeable  # copies, not views of the file
