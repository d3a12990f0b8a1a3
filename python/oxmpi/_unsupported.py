"""MPI objects oxmpi does not implement: files (MPI-4.1 ch. 14) and
sessions (ch. 11.3). Making one raises
NotImplementedError, as mpi4py does when its MPI library lacks a call; the
null handles exist and are false."""


def _unsupported(what):
    raise NotImplementedError(f"{what} is not supported by oxmpi")


class _Unsupported:
    """Any method of an instance (a null handle) raises NotImplementedError,
    but for what a null handle supports in MPI: copying, freeing (nothing
    to do) and integer handle conversions (0 is the null handle)."""

    _null_name = None  # the module constant that is this kind's null handle

    def __init__(self, obj=None):
        kind = next(c for c in type(self).__mro__ if _Unsupported in c.__bases__)
        if obj is not None and not isinstance(obj, kind):
            raise TypeError(f"expecting an MPI.{kind.__name__}, got {type(obj).__name__}")

    def __reduce__(self):
        if self is globals().get(self._null_name):
            return self._null_name
        return (type(self), ())

    def free(self):
        """Freeing a null handle does nothing."""

    @property
    def handle(self):
        return 0

    def toint(self):
        return 0

    def py2f(self):
        return 0

    @classmethod
    def fromhandle(cls, handle):
        if handle != 0:
            raise ValueError(f"no {cls.__name__} has handle {handle}: only the null one exists")
        return cls()

    fromint = fromhandle
    f2py = fromhandle

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)

        def method(*args, **kwargs):
            _unsupported(f"MPI.{type(self).__name__}.{name}")

        return method


class File(_Unsupported):
    """An MPI-IO file (not supported: opening one raises)."""

    def __bool__(self):
        return False

    def __eq__(self, other):
        return isinstance(other, File)

    _null_name = "FILE_NULL"

    def __hash__(self):
        return 0

    @classmethod
    def Open(cls, *args, **kwargs):
        _unsupported("MPI-IO (MPI.File)")

    @classmethod
    def Create_errhandler(cls, *args, **kwargs):
        _unsupported("MPI.File error handlers")


class Session(_Unsupported):
    """An MPI session (not supported: initialising one raises)."""

    def __bool__(self):
        return False

    def __eq__(self, other):
        return isinstance(other, Session)

    _null_name = "SESSION_NULL"

    def __hash__(self):
        return 0

    @classmethod
    def Init(cls, *args, **kwargs):
        _unsupported("MPI.Session")

    @classmethod
    def Create_errhandler(cls, *args, **kwargs):
        _unsupported("MPI.Session error handlers")


FILE_NULL = File()
SESSION_NULL = Session()

MODE_RDONLY = 2
MODE_RDWR = 8
MODE_WRONLY = 4
MODE_CREATE = 1
MODE_EXCL = 64
MODE_DELETE_ON_CLOSE = 16
MODE_UNIQUE_OPEN = 32
MODE_APPEND = 128
MODE_SEQUENTIAL = 256
