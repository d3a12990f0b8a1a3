"""MPI for Python on oxmpi: the names and semantics of ``mpi4py.MPI``.

Importing this module initialises MPI (as importing ``mpi4py.MPI`` does);
``Finalize`` runs at interpreter exit.
"""

import atexit as _atexit
import builtins as _builtins

from . import _oxmpi
from ._oxmpi import Comm, Datatype, Intracomm, Op, Request, Status
from ._oxmpi import Grequest, Message, Prequest, buffer

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
BOTTOM = _oxmpi.BOTTOM

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
UNSIGNED_INT = UNSIGNED
globals().update({"2INT": _oxmpi.datatypes["TWOINT"]})
globals().update(_oxmpi.ops)

COMM_NULL = Comm()

# -- initialisation -----------------------------------------------------------
COMM_WORLD, COMM_SELF = _oxmpi.init()
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
    """Serialisation of the objects that the lowercase methods send
    (mpi4py's ``MPI.Pickle``). ``MPI.pickle`` is the one in use; give it
    other functions with ``MPI.pickle.__init__(dill.dumps, dill.loads)``.
    """

    def __init__(self, dumps=None, loads=None, protocol=None, threshold=None):
        import pickle as _pickle

        if dumps is None:
            dumps = _pickle.dumps
        if loads is None:
            loads = _pickle.loads
        if protocol is None and dumps is _pickle.dumps:
            protocol = _PICKLE_PROTOCOL
        if threshold is None:
            threshold = _PICKLE_THRESHOLD
        self._dumps = dumps
        self._loads = loads
        self._protocol = protocol
        self._threshold = int(threshold)
        self._publish()

    def _publish(self):
        # Only the module's instance decides how messages are serialised.
        if self is globals().get("pickle"):
            _oxmpi.set_pickle(self._dumps, self._loads, self._protocol, self._threshold)

    def dumps(self, obj):
        """Serialises ``obj`` to a pickle data stream."""
        if self._protocol is not None:
            return self._dumps(obj, self._protocol)
        return self._dumps(obj)

    def loads(self, data):
        """Deserialises an object from a pickle data stream."""
        return self._loads(data)

    def dumps_oob(self, obj):
        """Serialises ``obj`` with protocol 5 or more: (data, buffers), the
        buffers of at least ``THRESHOLD`` bytes out of band."""
        protocol = self._protocol if self._protocol is not None else _PICKLE_PROTOCOL
        protocol = max(protocol, 5)
        buffers = []

        def buffer_callback(ob):
            buf = buffer.frombuffer(ob, readonly=True)
            if buf.nbytes >= self._threshold:
                buffers.append(buf)
                return False
            return True

        data = self._dumps(obj, protocol, buffer_callback=buffer_callback)
        return data, buffers

    def loads_oob(self, data, buffers):
        """Deserialises an object from a data stream and its buffers."""
        return self._loads(data, buffers=buffers)

    @property
    def PROTOCOL(self):
        return self._protocol

    @PROTOCOL.setter
    def PROTOCOL(self, protocol):
        import pickle as _pickle

        if protocol is None and self._dumps is _pickle.dumps:
            protocol = _PICKLE_PROTOCOL
        self._protocol = protocol
        self._publish()

    @property
    def THRESHOLD(self):
        return self._threshold

    @THRESHOLD.setter
    def THRESHOLD(self, threshold):
        self._threshold = _PICKLE_THRESHOLD if threshold is None else int(threshold)
        self._publish()


def _pickle_defaults():
    import os
    import pickle as _pickle

    protocol = os.environ.get("MPI4PY_PICKLE_PROTOCOL")
    threshold = os.environ.get("MPI4PY_PICKLE_THRESHOLD")
    return (
        _pickle.HIGHEST_PROTOCOL if protocol is None else int(protocol),
        256 * 1024 if threshold is None else int(threshold),
    )


_PICKLE_PROTOCOL, _PICKLE_THRESHOLD = _pickle_defaults()
pickle = Pickle()
pickle._publish()

# -- point-to-point: requests, messages, memory, buffered mode --------------
REQUEST_NULL = _oxmpi.REQUEST_NULL
MESSAGE_NULL = _oxmpi.MESSAGE_NULL
MESSAGE_NO_PROC = _oxmpi.MESSAGE_NO_PROC
BUFFER_AUTOMATIC = _oxmpi.BUFFER_AUTOMATIC
BSEND_OVERHEAD = _oxmpi.BSEND_OVERHEAD
F_SOURCE, F_TAG, F_ERROR = 0, 1, 2
F_STATUS_SIZE = _oxmpi.F_STATUS_SIZE
UNSIGNED_INT = UNSIGNED
memory = buffer  # mpi4py's older name
from ._oxmpi import (  # noqa: E402
    Alloc_mem,
    Attach_buffer,
    Detach_buffer,
    Flush_buffer,
    Free_mem,
    Get_address,
    Iflush_buffer,
    _comm_lock,
    _comm_lock_table,
)


def _finalize_at_exit():
    try:
        Finalize()
    except _builtins.Exception:  # pragma: no cover - nothing useful to do at exit
        pass


_atexit.register(_finalize_at_exit)
