"""Errors: each wrong call raises the exception mpi4py raises, and the job
carries on communicating correctly afterwards.

Run under mpiexec at any world size; every rank prints
"OK test_errors.py rank r".
"""

import os
import pickle
import threading
import time

import numpy as np

from oxmpi import MPI

NAME = os.path.basename(__file__)
world = MPI.COMM_WORLD
rank, size = world.Get_rank(), world.Get_size()
right, left = (rank + 1) % size, (rank - 1) % size
WHERE = f"[{NAME} rank {rank}/{size}]"


def expect_mpi_error(error_class, fn, *args, **kwargs):
    """Calls fn; it must raise MPI.Exception of `error_class`."""
    what = f"{getattr(fn, '__name__', fn)}{args}{kwargs if kwargs else ''}"
    try:
        fn(*args, **kwargs)
    except MPI.Exception as e:
        assert isinstance(e, RuntimeError), f"{WHERE} MPI.Exception is not a RuntimeError"
        got = e.Get_error_class()
        assert got == error_class, (
            f"{WHERE} {what} raised error class {got} ({MPI.Get_error_string(got)}), "
            f"want {error_class} ({MPI.Get_error_string(error_class)})"
        )
        assert e.Get_error_code() == e.error_code and isinstance(e.Get_error_string(), str), WHERE
        return e
    except BaseException as e:
        raise AssertionError(f"{WHERE} {what} raised {type(e).__name__}: {e}, want MPI.Exception") from e
    raise AssertionError(f"{WHERE} {what} did not raise (want MPI error class {error_class})")


def expect_raises(types, fn, *args, **kwargs):
    what = f"{getattr(fn, '__name__', fn)}{args}"
    try:
        fn(*args, **kwargs)
    except types:
        return
    except BaseException as e:
        raise AssertionError(f"{WHERE} {what} raised {type(e).__name__}: {e}, want {types}") from e
    raise AssertionError(f"{WHERE} {what} did not raise {types}")


def check_alive(comm, tag):
    """The communicator still works: a ring exchange and a collective."""
    r, n = comm.rank, comm.size
    out = np.zeros(5, dtype=np.int64)
    req = comm.Isend(np.arange(5, dtype=np.int64) + r, dest=(r + 1) % n, tag=tag)
    comm.Recv(out, source=(r - 1) % n, tag=tag)
    req.Wait()
    assert np.array_equal(out, np.arange(5) + (r - 1) % n), f"{WHERE} exchange after an error went wrong: {out}"
    got = comm.sendrecv(("alive", r), dest=(r + 1) % n, sendtag=tag, source=(r - 1) % n, recvtag=tag)
    assert got == ("alive", (r - 1) % n), f"{WHERE} object exchange after an error: {got!r}"
    assert comm.allreduce(1) == n, WHERE
    comm.Barrier()


def test_truncate():
    comm = world.Dup()
    src, dst = (0, 1) if size >= 2 else (0, 0)
    for k, nelems in enumerate([100, 1 << 20]):  # eager, then rendezvous sized
        tag = 10 + k
        data = np.arange(nelems, dtype=np.int32)
        sreq = comm.Isend(data, dest=dst, tag=tag) if rank == src else None
        if rank == dst:
            small = np.zeros(10, dtype=np.int32)
            expect_mpi_error(MPI.ERR_TRUNCATE, comm.Recv, small, source=src, tag=tag)
        if sreq is not None:
            sreq.Wait()  # the sender completes normally
        # The pair goes on: the same message into a buffer that fits.
        sreq = comm.Isend(data, dest=dst, tag=tag) if rank == src else None
        if rank == dst:
            full = np.zeros(nelems, dtype=np.int32)
            comm.Recv(full, source=src, tag=tag)
            assert np.array_equal(full, data), f"{WHERE} message after a truncation is wrong"
        if sreq is not None:
            sreq.Wait()
        comm.Barrier()
    if size >= 2:
        # Blocking standard send to a receiver whose buffer is too small:
        # the send still returns, the receive raises.
        for k, nelems in enumerate([50, 1 << 20]):
            tag = 20 + k
            if rank == src:
                comm.Send(np.ones(nelems, dtype=np.float64), dest=dst, tag=tag)
            elif rank == dst:
                expect_mpi_error(MPI.ERR_TRUNCATE, comm.Recv, bytearray(8), source=src, tag=tag)
            comm.Barrier()
    # Sendrecv whose receive truncates: the error, and its send still done.
    expect_mpi_error(
        MPI.ERR_TRUNCATE, comm.Sendrecv, np.ones(100, dtype=np.int32), dest=right, sendtag=25,
        recvbuf=np.zeros(10, dtype=np.int32), source=left, recvtag=25,
    )
    comm.Barrier()
    # Nonblocking receive: the error comes out of Wait.
    sreq = comm.Isend(np.ones(64, dtype=np.int32), dest=right, tag=30)
    rreq = comm.Irecv(np.zeros(4, dtype=np.int32), source=left, tag=30)
    expect_mpi_error(MPI.ERR_TRUNCATE, rreq.Wait)
    sreq.Wait()
    comm.Barrier()
    check_alive(comm, 31)
    comm.Free()


def test_bad_rank():
    comm = world.Dup()
    buf = np.zeros(4, dtype=np.int32)
    for bad in (size, size + 3, -5):
        expect_mpi_error(MPI.ERR_RANK, comm.Send, buf, dest=bad)
        expect_mpi_error(MPI.ERR_RANK, comm.Isend, buf, dest=bad)
        expect_mpi_error(MPI.ERR_RANK, comm.send, "x", dest=bad)
        expect_mpi_error(MPI.ERR_RANK, comm.isend, "x", dest=bad)
        expect_mpi_error(MPI.ERR_RANK, comm.Recv, buf, source=bad)
        expect_mpi_error(MPI.ERR_RANK, comm.Irecv, buf, source=bad)
        expect_mpi_error(MPI.ERR_RANK, comm.recv, source=bad)
        expect_mpi_error(MPI.ERR_RANK, comm.Probe, source=bad)
        expect_mpi_error(MPI.ERR_RANK, comm.Iprobe, source=bad)
    check_alive(comm, 40)
    comm.Free()


def test_bad_rank_sendrecv():
    """A Sendrecv that fails on its destination must not leave its receive
    posted: the next message from `left` belongs to the next receive."""
    comm = world.Dup()
    junk = np.full(5, -1, dtype=np.int64)
    expect_mpi_error(MPI.ERR_RANK, comm.Sendrecv, junk, dest=size, recvbuf=junk, source=left)
    expect_mpi_error(MPI.ERR_RANK, comm.sendrecv, "x", dest=size, source=left)
    # Poll rather than block, so that a swallowed message fails fast.
    req = comm.Isend(np.arange(5, dtype=np.int64), dest=right, tag=44)
    deadline = time.monotonic() + 10
    while not comm.Iprobe(source=left, tag=44):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{WHERE} a message from rank {left} never arrived after a Sendrecv failed with "
                "ERR_RANK: the failed call left its receive posted and it took the message"
            )
        time.sleep(0.001)
    out = np.zeros(5, dtype=np.int64)
    comm.Recv(out, source=left, tag=44)
    req.Wait()
    assert np.array_equal(out, np.arange(5)), WHERE
    check_alive(comm, 45)
    assert (junk == -1).all(), f"{WHERE} a failed Sendrecv wrote into its receive buffer later: {junk}"
    comm.Free()


def test_bad_tag():
    comm = world.Dup()
    buf = np.zeros(4, dtype=np.int32)
    for bad in (-5, -1000):
        expect_mpi_error(MPI.ERR_TAG, comm.Send, buf, dest=right, tag=bad)
        expect_mpi_error(MPI.ERR_TAG, comm.Isend, buf, dest=right, tag=bad)
        expect_mpi_error(MPI.ERR_TAG, comm.Ssend, buf, dest=right, tag=bad)
        expect_mpi_error(MPI.ERR_TAG, comm.send, "x", dest=right, tag=bad)
        expect_mpi_error(MPI.ERR_TAG, comm.isend, "x", dest=right, tag=bad)
        expect_mpi_error(MPI.ERR_TAG, comm.Recv, buf, source=left, tag=bad)
        expect_mpi_error(MPI.ERR_TAG, comm.recv, source=left, tag=bad)
        expect_mpi_error(MPI.ERR_TAG, comm.Probe, source=left, tag=bad)
    # ANY_TAG is a receive-side wildcard only.
    expect_mpi_error(MPI.ERR_TAG, comm.Send, buf, dest=right, tag=MPI.ANY_TAG)
    # (Whether a bad tag to PROC_NULL is an error varies between MPI
    # libraries, so only real peers are used above.)
    check_alive(comm, 41)
    comm.Free()


def test_bad_root():
    comm = world.Dup()
    buf = np.zeros(3)
    for bad in (size, -7):
        expect_mpi_error(MPI.ERR_ROOT, comm.bcast, "x", root=bad)
        expect_mpi_error(MPI.ERR_ROOT, comm.Bcast, buf, root=bad)
        expect_mpi_error(MPI.ERR_ROOT, comm.reduce, 1, root=bad)
        expect_mpi_error(MPI.ERR_ROOT, comm.gather, 1, root=bad)
    check_alive(comm, 42)
    comm.Free()


def test_bad_buffers():
    comm = world.Dup()
    # Receiving into read-only memory.
    expect_raises((BufferError, TypeError), comm.Recv, b"read-only", source=left)
    expect_raises((BufferError, TypeError), comm.Irecv, b"read-only", source=left)
    ro = np.zeros(4)
    ro.flags.writeable = False
    expect_raises((BufferError, TypeError, ValueError), comm.Recv, ro, source=left)
    # Buffer length not a multiple of the datatype size.
    expect_raises(ValueError, comm.Send, [bytearray(7), MPI.INT], dest=right)
    expect_raises(ValueError, comm.Recv, [bytearray(7), MPI.INT], source=left)
    expect_raises(ValueError, comm.Isend, [bytearray(10), MPI.DOUBLE], dest=right)
    # Non-contiguous memory is not a buffer MPI can send.
    expect_raises((BufferError, ValueError), comm.Send, np.arange(10)[::2], dest=right)
    # Objects that cannot be pickled: the pickling error, and nothing sent.
    expect_raises((pickle.PicklingError, AttributeError, TypeError), comm.send, lambda: 0, dest=right)
    expect_raises((pickle.PicklingError, AttributeError, TypeError), comm.isend, threading.Lock(), dest=right)
    expect_raises((pickle.PicklingError, AttributeError, TypeError), MPI.COMM_SELF.bcast, threading.Lock(), root=0)
    # Not a buffer at all.
    expect_raises(TypeError, comm.Send, 12345, dest=right)
    expect_raises(TypeError, comm.Send, "a str is not a buffer", dest=right)
    # Wrong number of items for scatter / alltoall (on COMM_SELF: nothing waits).
    expect_raises(ValueError, MPI.COMM_SELF.scatter, [1, 2], root=0)
    expect_raises(ValueError, MPI.COMM_SELF.alltoall, [1, 2])
    check_alive(comm, 43)
    comm.Free()


def test_comm_null():
    null = MPI.COMM_NULL
    buf = np.zeros(2)
    calls = [
        (null.Get_rank, ()),
        (null.Get_size, ()),
        (null.Send, (buf, 0)),
        (null.Recv, (buf, 0)),
        (null.send, ("x", 0)),
        (null.recv, ()),
        (null.isend, ("x", 0)),
        (null.Barrier, ()),
        (null.barrier, ()),
        (null.bcast, ("x",)),
        (null.Bcast, (buf,)),
        (null.allreduce, (1,)),
        (null.Allreduce, (buf, np.zeros(2))),
        (null.gather, (1,)),
        (null.allgather, (1,)),
        (null.Dup, ()),
        (null.Split, (0, 0)),
        (null.Iprobe, ()),
    ]
    for fn, args in calls:
        expect_mpi_error(MPI.ERR_COMM, fn, *args)
    # A freed communicator and an UNDEFINED split are COMM_NULL too.
    c = world.Dup()
    c.Free()
    assert c == MPI.COMM_NULL and not c, f"{WHERE} a freed communicator is not COMM_NULL"
    expect_mpi_error(MPI.ERR_COMM, c.Get_size)
    expect_mpi_error(MPI.ERR_COMM, c.Free)
    s = world.Split(MPI.UNDEFINED, 0)
    assert s == MPI.COMM_NULL, f"{WHERE} Split(UNDEFINED) gave {s!r}"
    expect_mpi_error(MPI.ERR_COMM, s.Barrier)
    world.Barrier()


def test_exception_object():
    e = MPI.Exception(MPI.ERR_TRUNCATE)
    assert isinstance(e, RuntimeError), WHERE
    assert e.Get_error_class() == MPI.ERR_TRUNCATE and e.Get_error_code() == MPI.ERR_TRUNCATE, WHERE
    assert e.error_class == MPI.ERR_TRUNCATE and int(e) == MPI.ERR_TRUNCATE, WHERE
    assert e == MPI.ERR_TRUNCATE and e != MPI.ERR_RANK, WHERE
    assert "TRUNCATE" in e.Get_error_string().upper(), f"{WHERE} error string {e.Get_error_string()!r}"
    assert MPI.Get_error_class(MPI.ERR_RANK) == MPI.ERR_RANK, WHERE
    assert isinstance(MPI.Get_error_string(MPI.ERR_TAG), str), WHERE
    assert len({MPI.SUCCESS, MPI.ERR_TRUNCATE, MPI.ERR_RANK, MPI.ERR_TAG, MPI.ERR_COMM, MPI.ERR_ROOT}) == 6, WHERE


def main():
    test_exception_object()
    test_truncate()
    test_bad_rank()
    test_bad_tag()
    test_bad_buffers()
    test_comm_null()
    test_bad_root()
    test_bad_rank_sendrecv()  # last, so that a failure here hides none of the checks above
    check_alive(world, 99)
    print(f"OK {NAME} rank {rank}", flush=True)


if __name__ == "__main__":
    main()
