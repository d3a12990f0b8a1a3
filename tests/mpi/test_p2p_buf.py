"""Point-to-point with buffers (the uppercase calls).

Run under mpiexec at any world size (1 rank talks to itself); every rank
prints "OK test_p2p_buf.py rank r".  The 256 MiB message travels between
ranks 0 and 1 only (skipped at size 1), the others wait at a barrier.
"""

import os
import time

import numpy as np

from oxmpi import MPI

NAME = os.path.basename(__file__)
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
right, left = (rank + 1) % size, (rank - 1) % size
WHERE = f"[{NAME} rank {rank}/{size}]"

# numpy type code -> the MPI datatype mpi4py associates with it.
TYPES = {
    "b": MPI.SIGNED_CHAR,
    "h": MPI.SHORT,
    "i": MPI.INT,
    "l": MPI.LONG,
    "q": MPI.LONG_LONG,
    "B": MPI.UNSIGNED_CHAR,
    "H": MPI.UNSIGNED_SHORT,
    "I": MPI.UNSIGNED,
    "L": MPI.UNSIGNED_LONG,
    "Q": MPI.UNSIGNED_LONG_LONG,
    "f": MPI.FLOAT,
    "d": MPI.DOUBLE,
    "?": MPI.C_BOOL,
    "F": MPI.C_FLOAT_COMPLEX,
    "D": MPI.C_DOUBLE_COMPLEX,
}


def values(code, r, n=1000):
    """An array of n elements of type `code` that identifies rank r."""
    i = np.arange(n)
    if code == "?":
        return ((i + r) % 3 == 0).astype("?")
    if code in "FD":
        return (i + r + 1j * (i - r)).astype(code)
    if code in "fd":
        return ((i - 500) * 0.5 + r).astype(code)
    if code in "bB":
        return ((i + 7 * r) % 100).astype(code)
    return (i * (r + 1) + r).astype(code)


def ring_send_recv(sendspec, recvspec, tag=0, status=None):
    """Isend to the right, Recv from the left, Wait (works at size 1)."""
    req = comm.Isend(sendspec, dest=right, tag=tag)
    comm.Recv(recvspec, source=left, tag=tag, status=status)
    req.Wait()


def test_dtypes():
    for k, (code, mpitype) in enumerate(TYPES.items()):
        send = values(code, rank)
        recv = np.zeros_like(send)
        st = MPI.Status()
        ring_send_recv(send, recv, tag=k, status=st)
        want = values(code, left)
        assert recv.dtype == want.dtype and np.array_equal(recv, want), f"{WHERE} dtype {code!r}: wrong data from rank {left}"
        assert st.Get_source() == left and st.Get_tag() == k, f"{WHERE} dtype {code!r}: status {st!r}"
        assert st.Get_count(mpitype) == send.size, f"{WHERE} dtype {code!r}: Get_count({mpitype}) == {st.Get_count(mpitype)}"
        assert st.Get_count() == send.nbytes, f"{WHERE} dtype {code!r}: Get_count() == {st.Get_count()} bytes, want {send.nbytes}"
        assert st.Get_elements(mpitype) == send.size, f"{WHERE} dtype {code!r}: Get_elements"
        assert mpitype.Get_size() == send.itemsize, f"{WHERE} {mpitype} size {mpitype.Get_size()}, numpy {send.itemsize}"
        # The same with explicit [buf, type] on both sides.
        recv2 = np.zeros_like(send)
        ring_send_recv([send, mpitype], [recv2, mpitype], tag=100 + k)
        assert np.array_equal(recv2, want), f"{WHERE} dtype {code!r} as [buf, {mpitype}]: wrong data"
    comm.Barrier()


def test_python_buffers():
    # bytes (send only), bytearray, memoryview.
    msg = f"bytes from {rank}".encode()
    want = f"bytes from {left}".encode()
    got = bytearray(len(want))
    st = MPI.Status()
    ring_send_recv(msg, got, tag=1, status=st)
    assert bytes(got) == want, f"{WHERE} bytes -> bytearray got {bytes(got)!r}"
    assert st.Get_count(MPI.BYTE) == len(want) and st.Get_count(MPI.CHAR) == len(want), WHERE
    ba = bytearray(range(rank, rank + 200))
    got = bytearray(200)
    ring_send_recv(ba, got, tag=2)
    assert got == bytearray(range(left, left + 200)), f"{WHERE} bytearray got the wrong data"
    # memoryview over part of a bytearray, received into a memoryview slice.
    big = bytearray(b"." * 64)
    got = bytearray(b"#" * 64)
    big[10:20] = bytes([rank + 1]) * 10
    ring_send_recv(memoryview(big)[10:20], memoryview(got)[30:40], tag=3)
    assert got[30:40] == bytes([left + 1]) * 10, f"{WHERE} memoryview slice got {bytes(got[30:40])!r}"
    assert got[:30] == b"#" * 30 and got[40:] == b"#" * 24, f"{WHERE} memoryview receive wrote outside its slice"
    # A memoryview of a typed numpy array keeps its format.
    arr = np.arange(10, dtype=np.int32) + rank
    out = np.zeros(10, dtype=np.int32)
    ring_send_recv(memoryview(arr), memoryview(out), tag=4)
    assert np.array_equal(out, np.arange(10) + left), f"{WHERE} memoryview(int32) got {out}"
    comm.Barrier()


def test_message_specs():
    a = (np.arange(50, dtype=np.int32) + 1000 * rank)
    # [buf, MPI.INT] into a bytearray.
    raw = bytearray(a.nbytes)
    st = MPI.Status()
    ring_send_recv([a, MPI.INT], [raw, MPI.INT], tag=10, status=st)
    got = np.frombuffer(raw, dtype=np.int32)
    assert np.array_equal(got, np.arange(50) + 1000 * left), f"{WHERE} [buf, MPI.INT] into bytearray"
    assert st.Get_count(MPI.INT) == 50, f"{WHERE} Get_count(INT) == {st.Get_count(MPI.INT)}"
    # [buf, count, MPI.DOUBLE]: the first `count` elements only.
    d = np.arange(20, dtype=np.float64) + 0.5 + rank
    out = np.full(30, -1.0)
    ring_send_recv([d, 7, MPI.DOUBLE], [out, 30, MPI.DOUBLE], tag=11, status=st)
    assert np.array_equal(out[:7], np.arange(7) + 0.5 + left), f"{WHERE} [buf, count, DOUBLE]: {out[:7]}"
    assert (out[7:] == -1.0).all(), f"{WHERE} [buf, count, DOUBLE] wrote past the message"
    assert st.Get_count(MPI.DOUBLE) == 7, f"{WHERE} Get_count(DOUBLE) == {st.Get_count(MPI.DOUBLE)}"
    assert st.Get_count(MPI.FLOAT) == 14 and st.Get_count(MPI.BYTE) == 56, WHERE
    # [buf, (count, displ), type]: send a[5:12], receive into out[20:27].
    i = np.arange(40, dtype=np.int64) * 3 + rank
    out = np.full(40, -7, dtype=np.int64)
    ring_send_recv([i, (7, 5), MPI.LONG], [out, (7, 20), MPI.LONG], tag=12, status=st)
    want = np.arange(40, dtype=np.int64) * 3 + left
    assert np.array_equal(out[20:27], want[5:12]), f"{WHERE} [buf, (count, displ), type]: {out[20:27]} != {want[5:12]}"
    assert (out[:20] == -7).all() and (out[27:] == -7).all(), f"{WHERE} displaced receive wrote outside its window"
    assert st.Get_count(MPI.LONG) == 7, WHERE
    # A tuple works as well as a list.
    out = np.zeros(4, dtype=np.float32)
    ring_send_recv((np.full(4, rank, dtype=np.float32), MPI.FLOAT), (out, MPI.FLOAT), tag=13)
    assert (out == left).all(), WHERE
    # Get_count with a datatype that does not divide the byte count.
    ring_send_recv(bytearray(6), bytearray(6), tag=14, status=st)
    assert st.Get_count(MPI.BYTE) == 6 and st.Get_count(MPI.INT) == MPI.UNDEFINED, (
        f"{WHERE} 6 bytes: Get_count(INT) == {st.Get_count(MPI.INT)}, want UNDEFINED"
    )
    # A receive buffer larger than the message: count reflects the message.
    out = np.zeros(100, dtype=np.int16)
    ring_send_recv(np.ones(3, dtype=np.int16), out, tag=15, status=st)
    assert st.Get_count(MPI.SHORT) == 3 and out[:3].tolist() == [1, 1, 1] and not out[3:].any(), WHERE
    comm.Barrier()


def pattern(nbytes, r):
    """uint8 pattern (i + r) % 251, cheap to build with tile."""
    base = ((np.arange(251 * 2) + r) % 251).astype(np.uint8)[:251]
    reps = -(-nbytes // 251)
    return np.tile(base, reps)[:nbytes] if nbytes else np.empty(0, dtype=np.uint8)


def test_sizes():
    for k, nbytes in enumerate([0, 1, 8 * 1024, 1024 * 1024]):
        send = pattern(nbytes, rank)
        recv = np.full(nbytes, 255, dtype=np.uint8)
        st = MPI.Status()
        ring_send_recv(send, recv, tag=20 + k, status=st)
        assert np.array_equal(recv, pattern(nbytes, left)), f"{WHERE} {nbytes}-byte message from {left} corrupted"
        assert st.Get_count() == nbytes and st.Get_source() == left, f"{WHERE} {nbytes} B: status {st!r}"
        # Blocking Send/Recv between pairs (0,1), (2,3), ...
        peer = rank ^ 1
        if peer < size:
            recv[:] = 0
            if rank % 2 == 0:
                comm.Send(send, dest=peer, tag=30 + k)
                comm.Recv(recv, source=peer, tag=30 + k)
            else:
                comm.Recv(recv, source=peer, tag=30 + k)
                comm.Send(send, dest=peer, tag=30 + k)
            assert np.array_equal(recv, pattern(nbytes, peer)), f"{WHERE} blocking {nbytes}-byte message corrupted"
    # Empty messages as [None, type] and zero-length buffers.
    st = MPI.Status()
    ring_send_recv([None, MPI.INT], [None, MPI.INT], tag=40, status=st)
    assert st.Get_count(MPI.INT) == 0 and st.Get_source() == left, WHERE
    ring_send_recv(b"", bytearray(), tag=41, status=st)
    assert st.Get_count() == 0, WHERE
    comm.Barrier()


def test_huge():
    """256 MiB from rank 0 to rank 1; the other ranks wait."""
    nbytes = 256 * 1024 * 1024
    if size >= 2 and rank in (0, 1):
        if rank == 0:
            buf = np.empty(nbytes, dtype=np.uint8)
            block = pattern(251 * 4096, 3)  # whole periods, so tiling keeps the pattern
            for off in range(0, nbytes, block.size):
                n = min(block.size, nbytes - off)
                buf[off : off + n] = block[:n]
            t = MPI.Wtime()
            comm.Send(buf, dest=1, tag=50)
            comm.Ssend(np.array([MPI.Wtime() - t]), dest=1, tag=51)
        else:
            buf = np.zeros(nbytes, dtype=np.uint8)
            st = MPI.Status()
            comm.Recv(buf, source=0, tag=50, status=st)
            assert st.Get_count() == nbytes and st.Get_source() == 0, f"{WHERE} 256 MiB: status {st!r}"
            for off in (0, 1, 250, 251 * 1000 + 17, nbytes // 2 - 5, nbytes - 1000, nbytes - 251):
                n = min(1000, nbytes - off)
                want = ((np.arange(off, off + n) + 3) % 251).astype(np.uint8)
                assert np.array_equal(buf[off : off + n], want), f"{WHERE} 256 MiB message wrong at offset {off}"
            assert buf[-1] == (nbytes - 1 + 3) % 251, f"{WHERE} 256 MiB message: last byte {buf[-1]}"
            period = 251
            full, rest = divmod(nbytes, period)
            want_sum = full * sum(range(period)) + sum((i + 3) % period for i in range(full * period, nbytes))
            got_sum = int(buf.sum(dtype=np.uint64))
            assert got_sum == want_sum, f"{WHERE} 256 MiB message checksum {got_sum} != {want_sum}"
            dt = np.empty(1)
            comm.Recv(dt, source=0, tag=51)
        del buf
    comm.Barrier()


def test_sendrecv():
    send = np.arange(10, dtype=np.float64) + rank
    recv = np.zeros(10)
    st = MPI.Status()
    comm.Sendrecv(send, dest=right, sendtag=60, recvbuf=recv, source=left, recvtag=60, status=st)
    assert np.array_equal(recv, np.arange(10) + left), f"{WHERE} Sendrecv got {recv}"
    assert st.Get_source() == left and st.Get_tag() == 60 and st.Get_count(MPI.DOUBLE) == 10, f"{WHERE} Sendrecv status {st!r}"
    # Large, in the other direction.
    send = pattern(3 * 1024 * 1024 + 5, rank)
    recv = np.zeros_like(send)
    comm.Sendrecv([send, MPI.BYTE], dest=left, sendtag=61, recvbuf=[recv, MPI.BYTE], source=right, recvtag=61)
    assert np.array_equal(recv, pattern(send.size, right)), f"{WHERE} large Sendrecv corrupted"
    # Sendrecv with PROC_NULL on either side.
    recv[:10] = 9
    comm.Sendrecv(send, dest=MPI.PROC_NULL, recvbuf=recv, source=MPI.PROC_NULL, status=st)
    assert st.Get_source() == MPI.PROC_NULL and st.Get_count() == 0 and (recv[:10] == 9).all(), f"{WHERE} {st!r}"
    # Sendrecv_replace.
    buf = np.full(16, rank, dtype=np.int32)
    comm.Sendrecv_replace(buf, dest=right, sendtag=62, source=left, recvtag=62)
    assert (buf == left).all(), f"{WHERE} Sendrecv_replace got {buf}"
    comm.Barrier()


def test_nonblocking():
    # Everyone to everyone (self included): Irecv first, then Isend, Waitall.
    n = 1000 + 10 * rank  # receivers see different counts per source
    sends = [np.full(n, rank * 100 + dst, dtype=np.int32) for dst in range(size)]
    recvs = [np.zeros(1000 + 10 * src, dtype=np.int32) for src in range(size)]
    rreqs = [comm.Irecv(recvs[src], source=src, tag=70) for src in range(size)]
    sreqs = [comm.Isend(sends[dst], dest=dst, tag=70) for dst in range(size)]
    statuses = [MPI.Status() for _ in range(size)]
    assert MPI.Request.Waitall(rreqs, statuses) in (None, True), WHERE
    for src in range(size):
        assert (recvs[src] == src * 100 + rank).all(), f"{WHERE} Irecv from {src}: wrong data"
        st = statuses[src]
        assert st.Get_source() == src and st.Get_tag() == 70, f"{WHERE} Waitall status {src}: {st!r}"
        assert st.Get_count(MPI.INT) == 1000 + 10 * src, f"{WHERE} Waitall status {src}: count {st.Get_count(MPI.INT)}"
    MPI.Request.Waitall(sreqs)
    # Large Isend/Irecv with Wait and a status.
    big = pattern(2 * 1024 * 1024, rank)
    out = np.zeros_like(big)
    rreq = comm.Irecv(out, source=left, tag=71)
    sreq = comm.Isend(big, dest=right, tag=71)
    st = MPI.Status()
    rreq.Wait(st)
    sreq.Wait()
    assert np.array_equal(out, pattern(big.size, left)), f"{WHERE} 2 MiB Irecv corrupted"
    assert st.Get_source() == left and st.Get_count() == big.size, f"{WHERE} {st!r}"
    # Test until complete, bounded.
    out = np.zeros(4, dtype=np.int64)
    rreq = comm.Irecv(out, source=left, tag=72)
    sreq = comm.Isend(np.full(4, rank, dtype=np.int64), dest=right, tag=72)
    deadline = time.monotonic() + 30
    while not rreq.Test():
        assert time.monotonic() < deadline, f"{WHERE} Irecv never completed under Test"
    sreq.Wait()
    assert (out == left).all(), f"{WHERE} {out}"
    # Waitany over receives from every rank.
    outs = [np.zeros(1, dtype=np.int32) for _ in range(size)]
    rreqs = [comm.Irecv(outs[s], source=s, tag=73) for s in range(size)]
    sreqs = [comm.Isend(np.array([rank], dtype=np.int32), dest=d, tag=73) for d in range(size)]
    done = set()
    for _ in range(size):
        idx = MPI.Request.Waitany(rreqs)
        assert 0 <= idx < size and idx not in done, f"{WHERE} Waitany returned {idx}"
        done.add(idx)
    assert MPI.Request.Waitany(rreqs) == MPI.UNDEFINED, f"{WHERE} Waitany over finished requests"
    assert [o[0] for o in outs] == list(range(size)), f"{WHERE} {outs}"
    MPI.Request.Waitall(sreqs)
    # Nonblocking ops with PROC_NULL complete at once.
    req = comm.Irecv(out, source=MPI.PROC_NULL)
    req.Wait(st)
    assert st.Get_source() == MPI.PROC_NULL, WHERE
    comm.Isend(out, dest=MPI.PROC_NULL).Wait()
    comm.Barrier()


def test_probe():
    # Nothing ever carries tag 999.
    assert comm.Iprobe(source=MPI.ANY_SOURCE, tag=999) is False, f"{WHERE} Iprobe found a message that was never sent"
    n = 10 + rank
    sreq = comm.Isend(np.arange(n, dtype=np.int32), dest=right, tag=42)
    st = MPI.Status()
    assert comm.Probe(source=left, tag=MPI.ANY_TAG, status=st) is True, WHERE
    assert st.Get_source() == left and st.Get_tag() == 42, f"{WHERE} Probe status {st!r}"
    count = st.Get_count(MPI.INT)
    assert count == 10 + left, f"{WHERE} Probe count {count}, want {10 + left}"
    buf = np.zeros(count, dtype=np.int32)
    comm.Recv(buf, source=st.Get_source(), tag=st.Get_tag())
    assert np.array_equal(buf, np.arange(count)), WHERE
    sreq.Wait()
    # Iprobe with ANY_SOURCE, polled, then a larger (rendezvous) message.
    comm.Barrier()
    n = 100_000 + rank
    sreq = comm.Isend(np.full(n, 1.5, dtype=np.float64), dest=right, tag=43)
    deadline = time.monotonic() + 30
    while not comm.Iprobe(source=MPI.ANY_SOURCE, tag=43, status=st):
        assert time.monotonic() < deadline, f"{WHERE} Iprobe never saw the message"
    assert st.Get_source() == left and st.Get_tag() == 43, f"{WHERE} Iprobe status {st!r}"
    assert st.Get_count(MPI.DOUBLE) == 100_000 + left, f"{WHERE} Iprobe count {st.Get_count(MPI.DOUBLE)}"
    # Probing does not receive: the message is still there.
    assert comm.Iprobe(source=left, tag=43), WHERE
    buf = np.zeros(st.Get_count(MPI.DOUBLE))
    comm.Recv(buf, source=left, tag=43)
    assert (buf == 1.5).all(), WHERE
    sreq.Wait()
    comm.Barrier()
    # Probe from PROC_NULL returns at once.
    comm.Probe(source=MPI.PROC_NULL, status=st)
    assert st.Get_source() == MPI.PROC_NULL and st.Get_count() == 0, f"{WHERE} {st!r}"
    comm.Barrier()


def test_ordering_and_sync():
    """Receives match in posting order; Issend waits for its receive;
    completed requests become REQUEST_NULL."""
    if size >= 2 and rank in (0, 1):
        n = 1 << 18  # 1 MiB of float32: rendezvous-sized
        if rank == 0:
            for k in range(3):
                comm.Send(np.full(n, k, dtype=np.float32), dest=1, tag=80)
            comm.Send(np.full(4, 9, dtype=np.float32), dest=1, tag=80)
        else:
            bufs = [np.full(n, -1, dtype=np.float32) for _ in range(3)]
            first = comm.Irecv(bufs[0], source=0, tag=80)
            second = comm.Irecv(bufs[1], source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG)
            comm.Recv(bufs[2], source=0, tag=80)
            MPI.Request.Waitall([second, first])
            for k in range(3):
                assert (bufs[k] == k).all(), f"{WHERE} receive #{k} got message {bufs[k][0]}: posting order not kept"
            small = np.zeros(4, dtype=np.float32)
            comm.Recv(small, source=0, tag=80)
            assert (small == 9).all(), WHERE
        # Issend: not complete until rank 1 posts its receive after a "go".
        if rank == 0:
            req = comm.Issend(np.arange(10, dtype=np.int32), dest=1, tag=81)
            for _ in range(5):
                assert not req.Test(), f"{WHERE} Issend completed before the receive was posted"
                time.sleep(0.02)
            comm.Send(bytearray(1), dest=1, tag=82)
            req.Wait()
            assert not req, f"{WHERE} a completed request is still active"
            req.Wait()  # waiting on an inactive request returns at once
        else:
            comm.Recv(bytearray(1), source=0, tag=82)
            out = np.zeros(10, dtype=np.int32)
            comm.Recv(out, source=0, tag=81)
            assert np.array_equal(out, np.arange(10)), WHERE
    comm.Barrier()


def test_request_null():
    """As in mpi4py, requests compare by handle: a completed request and a
    new Request() equal REQUEST_NULL."""
    req = comm.Isend(bytearray(3), dest=right, tag=90)
    comm.Recv(bytearray(3), source=left, tag=90)
    req.Wait()
    assert not req and not MPI.REQUEST_NULL, WHERE
    assert MPI.REQUEST_NULL == MPI.REQUEST_NULL, WHERE
    assert MPI.Request() == MPI.REQUEST_NULL, f"{WHERE} MPI.Request() != MPI.REQUEST_NULL"
    assert req == MPI.REQUEST_NULL, f"{WHERE} a completed request != MPI.REQUEST_NULL"
    assert not (req != MPI.REQUEST_NULL), WHERE
    comm.Barrier()


def main():
    test_dtypes()
    test_python_buffers()
    test_message_specs()
    test_sizes()
    test_sendrecv()
    test_nonblocking()
    test_probe()
    test_ordering_and_sync()
    test_huge()
    test_request_null()  # last, so that a failure here hides none of the checks above
    print(f"OK {NAME} rank {rank}", flush=True)


if __name__ == "__main__":
    main()
