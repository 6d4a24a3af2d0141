"""Loading user extensions: modules that register ops, spaces, datasets, search components,
mixed ops or selectors before the command runs.

    TFNAS_EXTENSIONS=my_pkg.my_ops,examples/extensions/partial_channels.py tfnas search ...

Each entry of the comma list is a module name (imported) or a `.py` path (loaded as a
module); installed packages can also declare an entry point in the `tfnas.extensions` group.
"""

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys

from tfnas.errors import UsageError

ENV = "TFNAS_EXTENSIONS"
GROUP = "tfnas.extensions"


def _load_path(path):
    path = os.path.abspath(path)
    name = "tfnas_extension_" + hashlib.sha1(path.encode()).hexdigest()[:12]
    if name in sys.modules:  # loaded already: registering twice would be an error
        return sys.modules[name]
    if not os.path.isfile(path):
        raise UsageError(f"{ENV}: no such file {path}")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_extension(entry):
    """Imports one extension (module name or .py path); returns the module.

    Raises:
        UsageError: it cannot be found or fails while importing (one line, with the cause).
    """
    entry = entry.strip()
    try:
        if entry.endswith(".py") or os.sep in entry:
            return _load_path(entry)
        return importlib.import_module(entry)
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 (a user's module: report, do not dump)
        raise UsageError(f"extension {entry!r} failed to load: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from e


def load_extensions(spec=None):
    """Loads `spec` (default: $TFNAS_EXTENSIONS) and every `tfnas.extensions` entry point."""
    spec = os.environ.get(ENV, "") if spec is None else spec
    loaded = [load_extension(e) for e in spec.split(",") if e.strip()]
    for ep in importlib.metadata.entry_points(group=GROUP):
        try:
            loaded.append(ep.load())
        except Exception as e:  # noqa: BLE001
            raise UsageError(f"extension entry point {ep.name!r} ({ep.value}) failed to "
                             f"load: {type(e).__name__}: {e}") from e
    return loaded
