"""MPI for Python on oxmpi: the names and semantics of ``mpi4py.MPI``.

Importing this module initialises MPI (as importing ``mpi4py.MPI`` does);
``Finalize`` runs at interpreter exit.
"""

import atexit as _atexit
import builtins as _builtins

from . import _oxmpi
from ._oxmpi import Comm, Datatype, Intracomm, Op, Request, Status

# -- error classes (MPI-4.1 §9.4; numbered as MPICH numbers them) ---------
SUCCESS = 0
ERR_BUFFER = 1
ERR_COUNT = 2
ERR_TYPE = 3
ERR_TAG = 4
ERR_COMM = 5
ERR_RANK = 6
ERR_ROOT = 7
ERR_GROUP = 8
ERR_OP = 9
ERR_TOPOLOGY = 10
ERR_DIMS = 11
ERR_ARG = 12
ERR_UNKNOWN = 13
ERR_TRUNCATE = 14
ERR_OTHER = 15
ERR_INTERN = 16
ERR_IN_STATUS = 17
ERR_PENDING = 18
ERR_REQUEST = 19
ERR_PROC_FAILED = 101
ERR_LASTCODE = 0x3FFFFFFF

_ERROR_NAMES = {v: k for k, v in list(globals().items()) if k.startswith(("ERR_", "SUCCESS")) and k != "ERR_LASTCODE"}


class Exception(RuntimeError):  # noqa: A001 - the name mpi4py uses
    """An MPI error, carrying its error code (here equal to its class)."""

    def __init__(self, ierr=SUCCESS, msg=None):
        self.ob_mpi = int(ierr)
        self._msg = msg
        super().__init__(self.ob_mpi)

    @property
    def error_code(self):
        return self.ob_mpi

    @property
    def error_class(self):
        return self.ob_mpi

    @property
    def error_string(self):
        return self.Get_error_string()

    def Get_error_code(self):
        return self.ob_mpi

    def Get_error_class(self):
        return self.ob_mpi

    def Get_error_string(self):
        name = _ERROR_NAMES.get(self.ob_mpi, "MPI_ERR_UNKNOWN")
        if not name.startswith("MPI_"):
            name = "MPI_" + name
        return f"{name}: {self._msg}" if self._msg else name

    def __int__(self):
        return self.ob_mpi

    def __eq__(self, other):
        if isinstance(other, Exception):
            return self.ob_mpi == other.ob_mpi
        if isinstance(other, int):
            return self.ob_mpi == other
        return NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self):
        return hash(self.ob_mpi)

    def __bool__(self):
        return self.ob_mpi != SUCCESS

    def __str__(self):
        return self.Get_error_string()

    def __repr__(self):
        return f"MPI.Exception({self.ob_mpi})"


def Get_error_class(errorcode):
    return int(errorcode)


def Get_error_string(errorcode):
    return Exception(errorcode).Get_error_string()


# -- constants --------------------------------------------------------------
ANY_SOURCE = _oxmpi.ANY_SOURCE
ANY_TAG = _oxmpi.ANY_TAG
PROC_NULL = _oxmpi.PROC_NULL
ROOT = _oxmpi.ROOT
UNDEFINED = _oxmpi.UNDEFINED
TAG_UB = _oxmpi.TAG_UB
IN_PLACE = _oxmpi.IN_PLACE
BOTTOM = 0

THREAD_SINGLE = 0
THREAD_FUNNELED = 1
THREAD_SERIALIZED = 2
THREAD_MULTIPLE = 3

VERSION = 4
SUBVERSION = 1

IDENT = 0
CONGRUENT = 1
SIMILAR = 2
UNEQUAL = 3

globals().update(_oxmpi.datatypes)
globals().update({"2INT": _oxmpi.datatypes["TWOINT"]})
globals().update(_oxmpi.ops)

COMM_NULL = Comm()
REQUEST_NULL = Request()

# -- initialisation -----------------------------------------------------------
COMM_WORLD, COMM_SELF = _oxmpi.init()
TAG_UB = _oxmpi.tag_ub()  # the running engine's (a system MPI's may be lower)
_thread_level = THREAD_MULTIPLE


def Init():
    """MPI is initialised when this module is imported; kept for mpi4py's API."""


def Init_thread(required=THREAD_MULTIPLE):
    return THREAD_MULTIPLE


def Query_thread():
    return _thread_level


def Is_thread_main():
    import threading

    return threading.current_thread() is threading.main_thread()


def Finalize():
    """Finalises MPI (also done automatically at interpreter exit)."""
    _oxmpi.finalize()


def Is_initialized():
    return _oxmpi.is_initialized()


def Is_finalized():
    return _oxmpi.is_finalized()


def Wtime():
    return _oxmpi.wtime()


def Wtick():
    return _oxmpi.wtick()


def Get_processor_name():
    return _oxmpi.processor_name()


def Get_version():
    return (VERSION, SUBVERSION)


def Get_library_version():
    return _oxmpi.library_version()


def get_vendor():
    """The MPI implementation's name and version: ("oxmpi", (x, y, z))."""
    return ("oxmpi", tuple(int(p) for p in _oxmpi.__version__.split(".")[:3]))


def Abort(errorcode=0):
    COMM_WORLD.Abort(errorcode)


def Compute_dims(nnodes, dims):
    """MPI_Dims_create: a balanced factorisation of ``nnodes``."""
    if isinstance(dims, int):
        dims = [0] * dims
    dims = list(dims)
    fixed = 1
    for d in dims:
        if d < 0:
            raise ValueError("dims entries must be non-negative")
        if d > 0:
            fixed *= d
    if fixed == 0 or nnodes % fixed:
        raise Exception(ERR_DIMS, f"cannot split {nnodes} processes over {dims}")
    free = [i for i, d in enumerate(dims) if d == 0]
    rest = nnodes // fixed
    if not free:
        if rest != 1:
            raise Exception(ERR_DIMS, f"dims {dims} do not multiply to {nnodes}")
        return dims
    factors = []
    n, p = rest, 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    if n > 1:
        factors.append(n)
    sizes = [1] * len(free)
    for f in sorted(factors, reverse=True):
        sizes[sizes.index(min(sizes))] *= f
    for i, s in zip(free, sorted(sizes, reverse=True)):
        dims[i] = s
    return dims


class Pickle:
    """Pickle settings for the lowercase (object) methods."""

    def __init__(self):
        import pickle as _pickle

        self.dumps = _pickle.dumps
        self.loads = _pickle.loads
        self._protocol = 5

    @property
    def PROTOCOL(self):
        return self._protocol

    @PROTOCOL.setter
    def PROTOCOL(self, value):
        import pickle as _pickle

        value = _pickle.HIGHEST_PROTOCOL if value is None or value < 0 else int(value)
        self._protocol = value
        _oxmpi.set_pickle_protocol(value)


pickle = Pickle()


def _finalize_at_exit():
    try:
        Finalize()
    except _builtins.Exception:  # pragma: no cover - nothing useful to do at exit
        pass


_atexit.register(_finalize_at_exit)
