"""Reads a PyTorch checkpoint (`torch.save`) into numpy arrays without PyTorch.

`torch.save` (PyTorch >= 1.6) writes a zip archive: `<name>/data.pkl`, a pickle whose
tensors refer to storages by key, and `<name>/data/<key>`, each storage's raw bytes
(little-endian unless `<name>/byteorder` says otherwise). The unpickler here allows only
what a state dict or optimizer state holds (tensors, parameters, `OrderedDict`, plain
Python values) and turns every tensor into a `numpy.ndarray`; anything else (code objects,
arbitrary classes) is refused, as `torch.load(weights_only=True)` does. A checkpoint in the
legacy format (before PyTorch 1.6) is read with PyTorch itself when it is installed
(`pip install tfnas[torch]`).
"""

import collections
import io
import os
import pickle
import zipfile

import numpy as np

from tfnas.errors import UsageError

_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64,
           "HalfStorage": np.float16, "BFloat16Storage": "bfloat16",
           "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
           "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class _StorageType:
    def __init__(self, name):
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *_):
    """A tensor as an ndarray (a copy, C-ordered) from its storage, offset and strides."""
    if not size:
        return storage[offset].copy()
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride))
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, *_):
    return data


def _rebuild_parameter_with_state(data, *_):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice, ("builtins", "complex"): complex,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix, big_endian, where):
        super().__init__(file)
        self.archive, self.prefix, self.big_endian, self.where = \
            archive, prefix, big_endian, where
        self.storages = {}

    def find_class(self, module, name):
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise UsageError(f"{self.where}: the checkpoint holds a {module}.{name} object; only "
                         f"tensors and plain values are read (no code is run from a file)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise UsageError(f"{self.where}: an unknown reference in the checkpoint ({pid!r:.60})")
        kind, key = pid[1], str(pid[2])
        if key not in self.storages:
            dtype = _DTYPES[kind.name] if isinstance(kind, _StorageType) else None
            if dtype is None:
                raise UsageError(f"{self.where}: unknown storage type {kind!r}")
            raw = self.archive.read(f"{self.prefix}data/{key}")
            if dtype == "bfloat16":  # the upper half of a float32
                half = np.frombuffer(raw, ">u2" if self.big_endian else "<u2")
                data = (half.astype(np.uint32) << 16).view(np.float32)
            else:
                data = np.frombuffer(raw, np.dtype(dtype).newbyteorder(
                    ">" if self.big_endian else "<")).astype(dtype)
            self.storages[key] = data
        return self.storages[key]


def read_torch_file(path):
    """The object `torch.save` wrote to `path`, tensors as numpy arrays.

    Raises:
        UsageError: not a PyTorch checkpoint, a legacy-format one without PyTorch
            installed, or one holding objects other than tensors and plain values.
    """
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file" if not os.path.exists(path) else
                         f"{path} is not a file")
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as e:
        raise UsageError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not is_zip:
        return _read_legacy(path)
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pkl) != 1:
            raise UsageError(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl)")
        prefix = pkl[0][:-len("data.pkl")]
        order = f"{prefix}byteorder"
        big = order in archive.namelist() and archive.read(order).strip() == b"big"
        try:
            return _Unpickler(io.BytesIO(archive.read(pkl[0])), archive, prefix, big,
                              path).load()
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
            raise UsageError(f"{path}: the PyTorch checkpoint is damaged ({e})") from None


def _read_legacy(path):
    """A checkpoint in PyTorch's pre-1.6 format, through PyTorch (tensors as ndarrays)."""
    try:
        import torch
    except ImportError:
        raise UsageError(f"{path} is not a zip-format PyTorch checkpoint; if it was saved by "
                         f"PyTorch < 1.6, install PyTorch to read it: pip install "
                         f"'tfnas[torch]'") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch raises many types for a bad file)
        raise UsageError(f"{path}: PyTorch cannot read it as a checkpoint "
                         f"({type(e).__name__}: {str(e)[:120]})") from None
    return _to_numpy(obj, torch)


def _to_numpy(obj, torch):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, dict):
        return type(obj)((k, _to_numpy(v, torch)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy(v, torch) for v in obj)
    return obj
