"""``mpi4py.futures`` served by ``oxmpi.futures``.

The submodules are the very same module objects as oxmpi's (so state such
as ``_core.SharedPool`` is shared, and programs that reach into them see it)."""
import sys as _sys

import oxmpi.futures as _impl
from oxmpi.futures import *  # noqa: F401,F403
from oxmpi.futures import __all__  # noqa: F401
from oxmpi.futures import _base, _core, aplus, pool, util  # noqa: F401

for _name in ("_base", "_core", "aplus", "pool", "util"):
    _sys.modules[f"{__name__}.{_name}"] = getattr(_impl, _name)
