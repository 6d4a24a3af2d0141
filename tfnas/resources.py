"""Files that ship with tfnas: the genotype zoo and the flagfiles, found by name.

In an installed package they live in `tfnas/zoo/` and `tfnas/configs/` (setup.py maps the
repository's `export/` and `configs/` there); in a source checkout or an editable install they
are read from those repository folders.
"""

import os

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_PACKAGE)
_KINDS = {"zoo": ("zoo", "export", ".json"), "configs": ("configs", "configs", ".cfg")}


def resource_dirs(kind):
    """The existing folders of `kind` ("zoo" or "configs"), installed copy first."""
    in_package, in_repo, _ = _KINDS[kind]
    dirs = [os.path.join(_PACKAGE, in_package), os.path.join(_REPO, in_repo)]
    return [d for d in dirs if os.path.isdir(d)]


def find_resource(kind, name):
    """The path of a shipped file by name ("darts_v2", "paper/table2_darts_pt"), or None."""
    ext = _KINDS[kind][2]
    name = name[:-len(ext)] if name.endswith(ext) else name
    if os.path.isabs(name) or ".." in name.split("/"):
        return None
    for d in resource_dirs(kind):
        path = os.path.join(d, name + ext)
        if os.path.isfile(path):
            return path
    return None


def list_resources(kind):
    """Sorted names of every shipped file of `kind` ("paper/..." for subfolders)."""
    ext = _KINDS[kind][2]
    names = set()
    for d in resource_dirs(kind):
        for root, _, files in os.walk(d):
            for f in files:
                if f.endswith(ext):
                    rel = os.path.relpath(os.path.join(root, f), d)
                    names.add(rel[:-len(ext)].replace(os.sep, "/"))
    return sorted(names)
