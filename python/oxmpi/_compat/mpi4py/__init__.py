"""mpi4py served by oxmpi.

oxmpi's launcher puts this package first on every rank's module path, so
unchanged programs that say ``from mpi4py import MPI`` run on oxmpi.
``oxmpi.compat.install()`` does the same inside a running interpreter.
"""

import os as _os

__version__ = "4.1.0"
__author__ = "oxmpi"
__credits__ = "API of mpi4py by Lisandro Dalcin; implementation: oxmpi"


class Rc:
    """Runtime configuration (``mpi4py.rc``); set before importing MPI."""

    initialize = True
    threads = True
    thread_level = "multiple"
    finalize = None
    fast_reduce = True
    recv_mprobe = True
    irecv_bufsz = 32768
    errors = "exception"

    def __init__(self, **kwargs):
        self(**kwargs)

    def __call__(self, **kwargs):
        for key, value in kwargs.items():
            setattr(self, key, value)

    def __setattr__(self, name, value):
        # As in mpi4py: a misspelt setting is an error, not a new attribute.
        if not hasattr(type(self), name):
            raise TypeError(f"object has no attribute '{name}'")
        super().__setattr__(name, value)

    def __repr__(self):
        return f"<{__name__}.rc>"


rc = Rc()
# `import mpi4py.rc` works in mpi4py: the settings object is also a module.
__import__("sys").modules[__name__ + ".rc"] = rc
for _key in ("initialize", "threads", "thread_level", "finalize", "fast_reduce",
             "recv_mprobe", "irecv_bufsz", "errors"):
    _val = _os.environ.get(f"MPI4PY_RC_{_key.upper()}")
    if _val is not None:
        _low = _val.lower()
        if _low in ("true", "yes", "on", "1"):
            _val = True
        elif _low in ("false", "no", "off", "0"):
            _val = False
        elif _val.isdigit():
            _val = int(_val)
        setattr(rc, _key, _val)


def get_config():
    """Build configuration: oxmpi needs no MPI compiler."""
    return {"vendor": "oxmpi"}


def get_include():
    raise RuntimeError("oxmpi provides no C headers: it needs no MPI compilation")


def profile(name, *, path=None):
    """Profiling libraries (MPE, VampirTrace) are not supported by oxmpi."""
    raise NotImplementedError("mpi4py.profile is not supported by oxmpi")
