"""``mpi4py.util.pkl5``'s API on oxmpi.

mpi4py's pkl5 splits large pickles over several messages to get past MPI's
``int`` count limit.  oxmpi's object path has no size limit (a pickle of any
size travels as one message, and out-of-band buffers of protocol 5 go with
it), so these classes keep pkl5's interface -- a communicator wrapper whose
nonblocking calls return `Request` / `Message` tuples -- over the ordinary
object calls.
"""

from .. import MPI

__all__ = ["pickle", "Request", "Message", "Comm", "Intracomm", "Intercomm"]

Pickle = MPI.Pickle
pickle = MPI.pickle


class _BigMPI:
    """Buffer specifications for buffers of any size, as in mpi4py.

    mpi4py's pkl5 sends each out-of-band buffer through this helper so that
    a count above MPI's ``int`` limit becomes one element of a contiguous
    datatype.  oxmpi's object calls have no count limit and do not need it,
    but programs and tests that build buffer specifications with it (or
    lower ``blocksize`` to exercise that path) get the same, working,
    behaviour: ``[buf, count, BYTE]`` up to ``blocksize`` bytes, else
    ``[buf, 1, contiguous type]``, the types freed on leaving a ``with``.
    """

    blocksize = (1 << 63) - 1

    def __init__(self):
        self.cache = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for dtype in self.cache.values():
            dtype.Free()
        self.cache.clear()

    def __call__(self, buf):
        buf = memoryview(buf)
        count = buf.nbytes
        if count <= self.blocksize:
            return (buf, count, MPI.BYTE)
        dtype = self.cache.get(count)
        if dtype is None:
            dtype = MPI.BYTE.Create_contiguous(count).Commit()
            self.cache[count] = dtype
        return (buf, 1, dtype)


_bigmpi = _BigMPI()


class Request(tuple):
    """A tuple of MPI requests standing for one object transfer."""

    def __new__(cls, request=None):
        if request is None:
            request = (MPI.REQUEST_NULL,)
        elif isinstance(request, MPI.Request):
            request = (request,)
        return super().__new__(cls, request)

    def __eq__(self, other):
        if isinstance(other, Request):
            return tuple(self) == tuple(other)
        if isinstance(other, MPI.Request):
            return self[0] == other
        return NotImplemented

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = tuple.__hash__

    def __bool__(self):
        return any(bool(req) for req in self)

    def Free(self):  # noqa: N802 - mpi4py's name
        for req in self:
            req.Free()

    def free(self):
        for req in self:
            req.free()

    def cancel(self):
        for req in self:
            req.cancel()

    def get_status(self, status=None):
        return self[0].get_status(status)

    def test(self, status=None):
        return self[0].test(status)

    def wait(self, status=None):
        return self[0].wait(status)

    @classmethod
    def get_status_all(cls, requests, statuses=None):
        return MPI.Request.get_status_all([req[0] for req in requests], statuses)

    @classmethod
    def testall(cls, requests, statuses=None):
        return MPI.Request.testall([req[0] for req in requests], statuses)

    @classmethod
    def waitall(cls, requests, statuses=None):
        return MPI.Request.waitall([req[0] for req in requests], statuses)


class Message(tuple):
    """A tuple of matched MPI messages standing for one object."""

    def __new__(cls, message=None):
        if message is None:
            message = (MPI.MESSAGE_NULL,)
        elif isinstance(message, MPI.Message):
            message = (message,)
        return super().__new__(cls, message)

    def __eq__(self, other):
        if isinstance(other, Message):
            return tuple(self) == tuple(other)
        if isinstance(other, MPI.Message):
            return self[0] == other
        return NotImplemented

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = tuple.__hash__

    def __bool__(self):
        return bool(self[0])

    def free(self):
        for msg in self:
            msg.free()

    def recv(self, status=None):
        return self[0].recv(status)

    def irecv(self):
        return Request(self[0].irecv())

    @classmethod
    def probe(cls, comm, source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=None):
        return cls(MPI.Comm.mprobe(comm, source, tag, status))

    @classmethod
    def iprobe(cls, comm, source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=None):
        message = MPI.Comm.improbe(comm, source, tag, status)
        return None if message is None else cls(message)


class Comm(MPI.Comm):
    """A communicator whose object calls return pkl5 requests and messages."""

    def __new__(cls, comm=None):
        if comm is None:
            comm = MPI.COMM_NULL
        # MPI.Comm's constructor, not the next class in the MRO: Python
        # refuses MPI.Intracomm.__new__ for a class whose layout base is
        # MPI.Comm (this one). The subclasses check the kind themselves.
        return MPI.Comm.__new__(cls, comm)

    def isend(self, obj, dest, tag=0):
        return Request(super().isend(obj, dest, tag))

    def ibsend(self, obj, dest, tag=0):
        return Request(super().ibsend(obj, dest, tag))

    def issend(self, obj, dest, tag=0):
        return Request(super().issend(obj, dest, tag))

    def irecv(self, buf=None, source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG):
        return Request(super().irecv(buf, source, tag))

    def mprobe(self, source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=None):
        return Message(super().mprobe(source, tag, status))

    def improbe(self, source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=None):
        message = super().improbe(source, tag, status)
        return None if message is None else Message(message)


class Intracomm(Comm, MPI.Intracomm):
    """pkl5 view of an intracommunicator."""

    def __new__(cls, comm=None):
        if comm is not None and comm != MPI.COMM_NULL and comm.Is_inter():
            raise TypeError("expecting an intracommunicator")
        return super().__new__(cls, comm)


class Intercomm(Comm, MPI.Intercomm):
    """pkl5 view of an intercommunicator."""

    def __new__(cls, comm=None):
        if comm is not None and comm != MPI.COMM_NULL and not comm.Is_inter():
            raise TypeError("expecting an intercommunicator")
        return super().__new__(cls, comm)
