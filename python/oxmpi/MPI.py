"""MPI for Python on oxmpi: the names and semantics of ``mpi4py.MPI``.

Importing this module initialises MPI (as importing ``mpi4py.MPI`` does);
``Finalize`` runs at interpreter exit.
"""

import atexit as _atexit
import builtins as _builtins

from . import _oxmpi
from ._oxmpi import (
    Cartcomm,
    Comm,
    Datatype,
    Distgraphcomm,
    Errhandler,
    Graphcomm,
    Group,
    Info,
    Intercomm,
    Intracomm,
    Op,
    Request,
    Status,
    Topocomm,
)
from ._oxmpi import Grequest, Message, Prequest, buffer

# The types of BOTTOM, IN_PLACE and BUFFER_AUTOMATIC, as mpi4py names them.
BottomType = type(_oxmpi.BOTTOM)
InPlaceType = type(_oxmpi.IN_PLACE)
BufferAutomaticType = type(_oxmpi.BUFFER_AUTOMATIC)

# -- error classes (MPI-4.1 §9.4; numbered as MPICH numbers them) ---------
globals().update(_oxmpi.error_classes)

# Error classes and codes added at run time (MPI_Add_error_class/code):
# class -> its codes, code -> its class, and the strings set for either.
_user_classes = {}
_user_codes = {}
_user_strings = {}
_last_code = [ERR_LASTCODE]


def _last_used_code():
    """The MPI_LASTUSEDCODE attribute: the largest code or class in use."""
    return _last_code[0]


def _error_string(code):
    if code in _oxmpi.error_strings:
        return _oxmpi.error_strings[code]
    if code in _user_classes or code in _user_codes:
        return _user_strings.get(code, "")
    if code > ERR_LASTCODE:
        return f"MPI_ERR_UNKNOWN: unknown error code {code}"
    return "MPI_ERR_UNKNOWN: unknown error"


class Exception(RuntimeError):  # noqa: A001 - the name mpi4py uses
    """An MPI error, carrying its error code."""

    def __init__(self, ierr=SUCCESS, msg=None, /):
        ierr = int(ierr)
        if ierr < SUCCESS:
            ierr = ERR_UNKNOWN
        self._msg = msg
        RuntimeError.__init__(self, ierr)

    @property
    def ob_mpi(self):
        return self.args[0]

    def __int__(self):
        return self.args[0]

    def __bool__(self):
        return self.args[0] != SUCCESS

    def __hash__(self):
        return hash(self.args[0])

    def __eq__(self, other):
        return int(self) == other

    def __ne__(self, other):
        return int(self) != other

    def __lt__(self, other):
        return int(self) < other

    def __le__(self, other):
        return int(self) <= other

    def __gt__(self, other):
        return int(self) > other

    def __ge__(self, other):
        return int(self) >= other

    def __repr__(self):
        return f"MPI.Exception({int(self)})"

    def __str__(self):
        text = self.Get_error_string()
        return f"{text}: {self._msg}" if self._msg else text

    def Get_error_code(self):
        return int(self)

    def Get_error_class(self):
        code = int(self)
        if code in _user_codes:
            return _user_codes[code]
        return code if code <= ERR_LASTCODE or code in _user_classes else ERR_UNKNOWN

    def Get_error_string(self):
        return _error_string(int(self))

    @property
    def error_code(self):
        return self.Get_error_code()

    @property
    def error_class(self):
        return self.Get_error_class()

    @property
    def error_string(self):
        return self.Get_error_string()


MPIException = Exception


def _check_code(code):
    code = int(code)
    known = code in _oxmpi.error_strings or code in _user_classes or code in _user_codes
    if not known:
        raise Exception(ERR_ARG, f"invalid error code {code}")
    return code


def Get_error_class(errorcode):
    """The error class of an error code."""
    code = _check_code(errorcode)
    return _user_codes.get(code, code)


def Get_error_string(errorcode):
    """The error string of an error class or code."""
    return _error_string(_check_code(errorcode))


def Add_error_class():
    """A new error class (process-local, as in MPI)."""
    _last_code[0] += 1
    cls = _last_code[0]
    _user_classes[cls] = set()
    return cls


def Remove_error_class(errorclass):
    """Removes an error class that has no codes and no string left."""
    cls = int(errorclass)
    if cls not in _user_classes:
        raise Exception(ERR_ARG, f"{cls} is not a user error class")
    if _user_classes[cls] or cls in _user_strings:
        raise Exception(ERR_ARG, f"error class {cls} still has codes or a string")
    del _user_classes[cls]


def Add_error_code(errorclass):
    """A new error code of an error class."""
    cls = int(errorclass)
    if cls not in _user_classes and cls not in _oxmpi.error_strings:
        raise Exception(ERR_ARG, f"invalid error class {cls}")
    _last_code[0] += 1
    code = _last_code[0]
    _user_codes[code] = cls
    if cls in _user_classes:
        _user_classes[cls].add(code)
    return code


def Remove_error_code(errorcode):
    """Removes an error code that has no string left."""
    code = int(errorcode)
    if code not in _user_codes:
        raise Exception(ERR_ARG, f"{code} is not a user error code")
    if code in _user_strings:
        raise Exception(ERR_ARG, f"error code {code} still has a string")
    cls = _user_codes.pop(code)
    _user_classes.get(cls, set()).discard(code)


def Add_error_string(errorcode, string):
    """Sets the string of a user error class or code."""
    code = int(errorcode)
    if code not in _user_classes and code not in _user_codes:
        raise Exception(ERR_ARG, f"{code} is not a user error class or code")
    _user_strings[code] = str(string)


def Remove_error_string(errorcode):
    """Removes the string of a user error class or code."""
    code = int(errorcode)
    if code not in _user_classes and code not in _user_codes:
        raise Exception(ERR_ARG, f"{code} is not a user error class or code")
    _user_strings.pop(code, None)


# -- constants --------------------------------------------------------------
ANY_SOURCE = _oxmpi.ANY_SOURCE
ANY_TAG = _oxmpi.ANY_TAG
PROC_NULL = _oxmpi.PROC_NULL
ROOT = _oxmpi.ROOT
UNDEFINED = _oxmpi.UNDEFINED
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
globals().update(_oxmpi.comm_constants)
GROUP_NULL = _oxmpi.GROUP_NULL
GROUP_EMPTY = _oxmpi.GROUP_EMPTY
INFO_NULL = _oxmpi.INFO_NULL
INFO_ENV = _oxmpi.INFO_ENV
ERRHANDLER_NULL = _oxmpi.ERRHANDLER_NULL
ERRORS_RETURN = _oxmpi.ERRORS_RETURN
ERRORS_ARE_FATAL = _oxmpi.ERRORS_ARE_FATAL
ERRORS_ABORT = _oxmpi.ERRORS_ABORT
_typecode = _oxmpi._typecode
_typealign = _oxmpi._typealign
globals().update(_oxmpi.ops)

COMM_NULL = Comm()

# Files and sessions are not implemented: their classes exist so that
# programs (and mpi4py's tests) see NotImplementedError, not AttributeError.
from ._unsupported import (  # noqa: E402
    File,
    MODE_APPEND,
    MODE_CREATE,
    MODE_DELETE_ON_CLOSE,
    MODE_EXCL,
    MODE_RDONLY,
    MODE_RDWR,
    MODE_SEQUENTIAL,
    MODE_UNIQUE_OPEN,
    MODE_WRONLY,
    Session,
    FILE_NULL,
    SESSION_NULL,
)

# One-sided communication (MPI-4.1 chapter 12).
Win = _oxmpi.Win
WIN_NULL = Win()
globals().update(_oxmpi.win_constants)

# -- initialisation -----------------------------------------------------------
# A program started without mpiexec gets a process manager on its first
# Comm.Spawn: oxmpi's launcher, run by this interpreter.
import os as _os  # noqa: E402
import sys as _sys  # noqa: E402

if _sys.executable:
    _os.environ.setdefault("OXMPI_SERVER_PYTHON", _sys.executable)
COMM_WORLD, COMM_SELF = _oxmpi.init()


def _rc_options():
    """(thread level provided, error handler of COMM_SELF/COMM_WORLD or None)
    from ``mpi4py.rc`` when the compatibility package is in use, as mpi4py
    decides them at import: ``threads=False`` initialises with MPI_Init
    (THREAD_SINGLE), else the level asked for by ``thread_level`` is the one
    provided (as MPICH does; oxmpi itself is always thread-safe);
    ``errors`` is 'exception' (ERRORS_RETURN, failing calls raise),
    'default' (MPI's own default, ERRORS_ARE_FATAL), 'abort' or 'fatal'."""
    import sys
    import warnings

    rc = getattr(sys.modules.get("mpi4py"), "rc", None)
    threads = getattr(rc, "threads", True)
    level = getattr(rc, "thread_level", "multiple")
    errors = getattr(rc, "errors", "exception")
    levels = {"single": THREAD_SINGLE, "funneled": THREAD_FUNNELED,
              "serialized": THREAD_SERIALIZED, "multiple": THREAD_MULTIPLE}
    if level not in levels:
        warnings.warn(f"mpi4py.rc.thread_level: unexpected value {level!r}", RuntimeWarning, 2)
        level = "multiple"
    provided = levels[level] if threads not in (False, "no") else THREAD_SINGLE
    handlers = {"exception": ERRORS_RETURN, "default": None, "abort": ERRORS_ABORT,
                "fatal": ERRORS_ARE_FATAL}
    if errors not in handlers:
        warnings.warn(f"mpi4py.rc.errors: unexpected value {errors!r}", RuntimeWarning, 2)
        errors = "exception"
    return provided, handlers[errors]


_thread_level, _rc_errhandler = _rc_options()
if _rc_errhandler is not None:
    COMM_SELF.Set_errhandler(_rc_errhandler)
    COMM_WORLD.Set_errhandler(_rc_errhandler)
else:
    # MPI's default handler on the predefined communicators.
    COMM_SELF.Set_errhandler(ERRORS_ARE_FATAL)
    COMM_WORLD.Set_errhandler(ERRORS_ARE_FATAL)


def Init():
    """MPI is initialised when this module is imported; kept for mpi4py's API."""


def Init_thread(required=THREAD_MULTIPLE):
    """MPI is initialised when this module is imported; returns the level
    provided then (see ``mpi4py.rc``)."""
    return _thread_level


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


# -- process management (MPI-4.1 chapter 11) ---------------------------------


def Open_port(info=None):
    """A port name for ``Intracomm.Accept`` (connectable within one launch)."""
    return _oxmpi.open_port(info)


def Close_port(port_name):
    """Releases a port name returned by ``Open_port``."""
    _oxmpi.close_port(port_name)


def Publish_name(service_name, port_name, info=None):
    """Publishes ``port_name`` under ``service_name`` (one launch's names)."""
    _oxmpi.publish_name(service_name, port_name, info)


def Unpublish_name(service_name, port_name, info=None):
    """Withdraws a name published with ``Publish_name``."""
    _oxmpi.unpublish_name(service_name, port_name, info)


def Lookup_name(service_name, info=None):
    """The port name published under ``service_name``."""
    return _oxmpi.lookup_name(service_name, info)


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
    return _oxmpi.topo_compute_dims(nnodes, list(dims))


def Aint_add(base, disp):
    return int(base) + int(disp)


def Aint_diff(addr1, addr2):
    return int(addr1) - int(addr2)


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
    # A script that ends on an uncaught exception (the interpreter printed
    # it and set sys.last_value; not sys.exit, not an interactive session)
    # aborts the job where finalising waits for every process (a system MPI
    # library's MPI_Finalize): the peers may be waiting for this process,
    # and it would wait for them in MPI_Finalize forever. (mpi4py's
    # `python -m mpi4py` aborts the same way.) oxmpi's own launcher ends
    # the job when a rank exits with an error.
    ended_on_error = getattr(_sys, "last_value", None) is not None and not hasattr(_sys, "ps1")
    if ended_on_error and not Is_finalized() and _oxmpi.finalize_waits_for_peers():
        COMM_WORLD.Abort(1)
    try:
        Finalize()
    except _builtins.Exception:  # pragma: no cover - nothing useful to do at exit
        pass


_atexit.register(_finalize_at_exit)


def Pcontrol(level):
    """Profiling control (MPI-4.1 §15.2.1). oxmpi has no profiling layer to
    control; MPI lets a library do nothing here, as MPICH does."""
    level = int(level)


def Get_hw_resource_info():
    """MPI_Get_hw_resource_info (MPI-4.1 §11.4.1): a new info object
    describing the hardware this process may run on. Its keys are the
    implementation's choice; oxmpi, like MPICH, reports none."""
    return Info.Create()
