"""Files every command writes: atomic writes, strict JSON, stale temp files, path checks.

Guarantees (README "What is guaranteed"):
- a file tfnas writes is either the old one or the complete new one (temp file + rename);
- JSON and JSON-lines files are strict JSON: a non-finite number is written as `null`;
- a JSON-lines file whose last line was torn by a kill is read without that line;
- temp files that a killed write left behind are removed at the next start;
- a path that exists but is the wrong kind, or a folder that cannot be written, is refused
  with one sentence before any work starts.
"""

import contextlib
import errno
import glob
import json
import math
import os
import tempfile

from tfnas.errors import UsageError

TMP_PREFIX = ".tfnas-tmp-"   # every temp file / folder tfnas creates starts with this
MARKER = ".tfnas"            # a folder tfnas created and owns (export --out)


def finite_json(obj):
    """`obj` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy scalars
        return finite_json(obj.item())
    return obj


def dumps(obj, **kw):
    """Strict JSON text (non-finite numbers as null)."""
    return json.dumps(finite_json(obj), allow_nan=False, **kw)


def atomic_write_text(path, text, mode="w"):
    """Writes `text` to `path` through a temporary file in the same folder and a rename, so a
    crash never leaves a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` (same extension) for a writer that takes a file
    name (matplotlib, Keras); renames it onto `path` when the block succeeds, removes it
    when it fails."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ext = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX + os.path.basename(path) + ".",
                               suffix=ext)
    os.close(fd)
    try:
        yield tmp
        umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_UMASK = os.umask(0o022)  # read once at import (os.umask is process-wide), then restored
os.umask(_UMASK)


def umask_mode(path, mode=0o666):
    """mkstemp / mkdtemp make 0600 / 0700 entries; give `path` the mode a plain open()
    (0o666) or makedirs (0o777) would."""
    os.chmod(path, mode & ~_UMASK)


def atomic_write_json(path, obj):
    atomic_write_text(path, dumps(obj, indent=1, sort_keys=True) + "\n")


def append_jsonl(path, obj):
    """Appends one strict-JSON line (a kill mid-write tears at most this line; readers skip
    a torn last line)."""
    line = dumps(obj, sort_keys=True) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()


def read_jsonl(path):
    """The rows of a JSON-lines file; a torn last line (a kill during `append_jsonl`) is
    skipped, a malformed line elsewhere is an error naming the file and line."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.readlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1 and not line.endswith("\n"):
                break  # torn by a kill: the row was never complete
            from tfnas.errors import CheckpointError
            raise CheckpointError(f"{path} line {i + 1} is not JSON ({e.msg}); it was edited "
                                  f"or corrupted: fix or delete it") from None
    return rows


def truncate_jsonl(path, key, start):
    """Keeps only the rows with row[key] < start (atomically), e.g. on resume; also drops a
    torn last line."""
    if not os.path.exists(path):
        return
    rows = read_jsonl(path)
    with open(path) as f:
        torn = sum(1 for line in f if line.strip()) != len(rows)
    if torn or any(r[key] >= start for r in rows):
        atomic_write_text(path, "".join(dumps(r, sort_keys=True) + "\n"
                                        for r in rows if r[key] < start))


def remove_stale_temps(folder):
    """Removes the temp files and folders that interrupted tfnas writes left in `folder`;
    returns how many."""
    import shutil
    n = 0
    for p in glob.glob(os.path.join(glob.escape(folder), TMP_PREFIX + "*")):
        try:
            shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)
            n += 1
        except OSError:
            pass
    return n


def check_links(path, flag):
    """Refuses a path that goes through a symbolic link loop or a dangling link (e.g. onto a
    disk that is not mounted): no retry could ever make such a path work.

    Raises:
        UsageError: naming the link and where it points.
    """
    p = os.path.abspath(path)
    try:
        os.path.realpath(p, strict=True)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UsageError(f"{flag}={path} goes through a loop of symbolic links; fix the "
                             f"links or pass another path") from None
    prefix = os.sep
    for part in p.split(os.sep)[1:]:
        prefix = os.path.join(prefix, part)
        if not os.path.lexists(prefix):
            return
        if os.path.islink(prefix) and not os.path.exists(prefix):
            raise UsageError(f"{flag}={path}: {prefix} is a symbolic link to "
                             f"{os.readlink(prefix)}, which does not exist (a disk that is not "
                             f"mounted?); mount it, fix the link or pass another path")


def check_folder(path, flag="--workdir", must_exist=False):
    """Refuses, with one sentence, a folder argument that is a file, that cannot be created
    or written, or (with `must_exist`) that does not exist.

    Raises:
        UsageError: naming the flag, the path and what to do.
    """
    if not path:
        raise UsageError(f"{flag} is empty; pass a folder path")
    check_links(path, flag)
    p = os.path.abspath(path)
    if os.path.exists(p) and not os.path.isdir(p):
        raise UsageError(f"{flag}={path} is a file, not a folder; pass a folder path")
    if must_exist and not os.path.isdir(p):
        raise UsageError(f"{flag}={path} does not exist")
    probe = p
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UsageError(f"{flag}={path} cannot be created: {probe} is a file")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=TMP_PREFIX + "probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UsageError(f"{flag}={path} cannot be written: no write access to {probe} "
                         f"({e.strerror})") from None


def fmt_time(seconds):
    """'3m05s' or '2h07m': durations in progress lines."""
    s = int(round(max(seconds, 0)))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
