"""Extension-module guard for owngil contexts (see shim/sandbox.c, guard_extensions).

The sys.meta_path finder in bunpy._context refuses unsafe extensions found by `import`;
this puts the same check where every extension load passes, _imp.create_dynamic, so a
load by file path (spec_from_file_location, ExtensionFileLoader, load_module) is checked
too.
"""

import os
import sys


def _extension_dir():
    """The standard library's extension directory (lib-dynload), realpath'd, or None."""
    for entry in sys.path:
        if entry and os.path.basename(entry.rstrip(os.sep)) == "lib-dynload":
            return os.path.realpath(entry)
    return None


def install(refused, allowed):
    """refused: names never loaded; allowed: None, or the only names loaded (from lib-dynload)."""
    import _bunpy

    _bunpy.guard_extensions(
        frozenset(refused),
        None if allowed is None else frozenset(allowed),
        None if allowed is None else _extension_dir(),
    )
