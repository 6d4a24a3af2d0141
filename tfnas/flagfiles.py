"""Flagfiles: absl-format files of flags, expanded before parsing.

One flag per line (`--name=value` or `--name`), `#` / `//` comments, nested `--flagfile=`
lines. A name that is not a path is looked up among the flagfiles shipped with the package
(`tfnas list configs`). For `search` and `select`, flags of the other stage that come from a
file are dropped, so one experiment file serves both commands.
"""

import dataclasses
import os
import re

from tfnas.errors import UsageError

FLAG_LINE = re.compile(r"--[A-Za-z_][A-Za-z0-9_-]*(=.*)?", re.DOTALL)


def _read_flagfile(path, seen=()):
    """The flags of a flagfile (absl format: one flag per line, '#' / '//' comments, nested
    --flagfile lines expanded)."""
    if path in seen:
        raise UsageError(f"--flagfile={path} includes itself")
    if not os.path.exists(path):  # a shipped flagfile by name: paper/table2_darts_pt
        from tfnas.resources import find_resource
        path = find_resource("configs", path) or path
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UsageError(f"--flagfile={path}: {e.strerror} (`tfnas list configs` shows the "
                         f"shipped flagfiles)") from None
    lines = []
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            lines.append(line.decode("utf-8").strip())
        except UnicodeDecodeError as e:
            raise UsageError(f"--flagfile={path} line {number} is not UTF-8 text (byte "
                             f"0x{line[e.start]:02x} at column {e.start + 1}); save the file "
                             f"as UTF-8") from None
    out = []
    for number, ln in enumerate(lines, 1):
        ln = ln.lstrip("\ufeff") if number == 1 else ln  # a byte-order mark
        if not ln or ln.startswith("#") or ln.startswith("//"):
            continue
        if not FLAG_LINE.fullmatch(ln):
            shown = ln if len(ln) <= 60 else ln[:57] + "..."
            raise UsageError(f"--flagfile={path} line {number}: {shown!r} is not a flag "
                             f"(expected --name=value, --name, or a # comment)")
        if ln.startswith("--flagfile="):
            out += _read_flagfile(ln.split("=", 1)[1], (*seen, path))
        else:
            out.append(ln)
    return out


# Flags that belong to the other stage of an experiment flagfile (one file serves both
# `tfnas search` and `tfnas select`): dropped when they come from a flagfile.
def _foreign_flags(command):
    from tfnas.config import SearchConfig
    from tfnas.selection.pt import SelectConfig
    search = {f.name for f in dataclasses.fields(SearchConfig)}
    select = {f.name for f in dataclasses.fields(SelectConfig)}
    if command == "search":
        return select - search
    if command == "select":
        return search  # incl. --seed: in an experiment file it is the search's seed
    return set()


def expand_flagfiles(argv):
    """Expands --flagfile arguments in place; for `search` and `select`, flags from a file
    that belong to the other stage are dropped (explicit command-line flags never are)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    foreign = _foreign_flags(command) if command in ("search", "select") else set()
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        path = None
        if arg.startswith("--flagfile="):
            path = arg.split("=", 1)[1]
        elif arg == "--flagfile" and i + 1 < len(argv):
            path, i = argv[i + 1], i + 1
        if path is None:
            out.append(arg)
        else:
            for flag in _read_flagfile(path):
                name = flag[2:].split("=", 1)[0]
                if name.startswith("no") and name[2:] in foreign:
                    name = name[2:]
                if name not in foreign:
                    out.append(flag)
        i += 1
    return out
