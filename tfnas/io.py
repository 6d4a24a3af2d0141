"""Atomic file writes and small JSON helpers used by every command."""

import json
import os
import tempfile


def atomic_write_text(path, text):
    """Writes `text` to `path` through a temporary file in the same folder and a rename, so a
    crash never leaves a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def append_jsonl(path, obj):
    with open(path, "a") as f:
        f.write(json.dumps(obj, sort_keys=True) + "\n")


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def truncate_jsonl(path, key, start):
    """Keeps only the rows with row[key] < start (atomically), e.g. on resume."""
    rows = read_jsonl(path)
    if any(r[key] >= start for r in rows):
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n"
                                        for r in rows if r[key] < start))


def fmt_time(seconds):
    """'3m05s' or '2h07m': durations in progress lines."""
    s = int(round(max(seconds, 0)))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
