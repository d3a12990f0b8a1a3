"""Point-to-point with Python objects (the lowercase, pickle-based calls).

Run under mpiexec at any world size (1 rank talks to itself); every rank
prints "OK test_p2p_obj.py rank r".
"""

import dataclasses
import fractions
import os
import time

import numpy as np

from oxmpi import MPI

NAME = os.path.basename(__file__)
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
right, left = (rank + 1) % size, (rank - 1) % size
WHERE = f"[{NAME} rank {rank}/{size}]"


@dataclasses.dataclass
class Point:
    x: int
    y: float
    label: str = "p"


def same(a, b):
    """Deep equality that understands numpy arrays."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and np.array_equal(a, b)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def payloads(r):
    """Objects owned by rank r: every one distinguishable by r."""
    big = np.arange(1_000_000, dtype=np.float64) * (r + 1)  # 8 MB: pickle-5 out of band
    return [
        None,
        r,
        -(2**100) - r,
        3.5 + r,
        complex(r, -r),
        True,
        f"text from rank {r} \u00e9\u4e2d\U0001f600",
        b"\x00\xffbytes" * (r + 1),
        bytearray(b"ba" * (r + 1)),
        (),
        [],
        {},
        (r, "tuple", (None, 1.5)),
        list(range(r, r + 50)),
        {"rank": r, "nested": {"list": [1, 2, {"deep": r}], "none": None}, 7: "int key", (1, 2): "tuple key"},
        {r, r + 1, "set"},
        frozenset({r}),
        fractions.Fraction(r + 1, 3),
        Point(r, r / 2, label=f"pt{r}"),
        "x" * 100_000,  # over one eager cell
        {"array": big, "meta": {"rank": r, "shape": big.shape}},
        {"i32": np.arange(7, dtype=np.int32) + r, "c128": np.full(3, 1j * r), "empty": np.empty((0, 3))},
        {"fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4) + r), "strided": np.arange(40)[::3] + r},
        np.float32(r + 0.25),
        [np.int64(r), np.bool_(True)],
    ]


def exchange(obj, dest, source, tag=0):
    """Ring-safe exchange (works when dest == source == self)."""
    req = comm.isend(obj, dest=dest, tag=tag)
    got = comm.recv(source=source, tag=tag)
    assert req.wait() is None, f"{WHERE} isend request's wait() returned something"
    return got


def test_objects():
    mine, theirs = payloads(rank), payloads(left)
    for i, (obj, want) in enumerate(zip(mine, theirs)):
        got = exchange(obj, right, left, tag=i)
        assert same(got, want), f"{WHERE} object #{i} from rank {left}: got {got!r:.200}, want {want!r:.200}"
    # The same objects with blocking send/recv between pairs (0,1), (2,3), ...
    if size >= 2:
        peer = rank ^ 1
        if peer < size:
            expected = payloads(peer)
            for i, obj in enumerate(mine):
                if rank % 2 == 0:
                    comm.send(obj, dest=peer, tag=1000 + i)
                    got = comm.recv(source=peer, tag=1000 + i)
                else:
                    got = comm.recv(source=peer, tag=1000 + i)
                    comm.send(obj, dest=peer, tag=1000 + i)
                assert same(got, expected[i]), f"{WHERE} blocking object #{i} from {peer}: got {got!r:.200}"
    # Received arrays are usable (and writable, as unpickled arrays are).
    got = exchange({"a": np.arange(100_000, dtype=np.int64)}, right, left, tag=99)
    got["a"] += 1
    assert got["a"][0] == 1 and got["a"][-1] == 100_000, f"{WHERE} received array is not usable"
    comm.Barrier()


def test_tags():
    # Three messages to the right neighbour; received in the opposite order by tag.
    reqs = [comm.isend(("tag", t, rank), dest=right, tag=t) for t in (1, 2, 3)]
    for t in (3, 2, 1):
        got = comm.recv(source=left, tag=t)
        assert got == ("tag", t, left), f"{WHERE} recv(tag={t}) got {got!r}"
    MPI.Request.waitall(reqs)
    # Large tags up to TAG_UB are valid.
    for t in (0, 32767, comm.Get_attr(MPI.TAG_UB)):
        got = exchange(t, right, left, tag=t)
        assert got == t, f"{WHERE} tag {t}: got {got!r}"
    comm.Barrier()


def test_any_source_any_tag():
    if rank != 0:
        comm.send((rank, "hello"), dest=0, tag=100 + rank)
    else:
        seen = set()
        for _ in range(size - 1):
            st = MPI.Status()
            obj = comm.recv(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=st)
            assert isinstance(obj, tuple) and len(obj) == 2, f"{WHERE} unexpected message {obj!r:.100} (tag {st.Get_tag()})"
            src, word = obj
            assert word == "hello", WHERE
            assert st.Get_source() == src and st.source == src, f"{WHERE} status source {st.Get_source()} for a message from {src}"
            assert st.Get_tag() == 100 + src and st.tag == 100 + src, f"{WHERE} status tag {st.Get_tag()}, want {100 + src}"
            assert st.Get_error() == MPI.SUCCESS, WHERE
            seen.add(src)
        assert seen == set(range(1, size)), f"{WHERE} heard from {sorted(seen)}"
    comm.Barrier()  # nothing else may be in flight to rank 0 during the ANY_TAG receives
    # Large (rendezvous) messages from everyone at once, by wildcard.
    if rank != 0:
        comm.send({"src": rank, "blob": np.full(200_000, rank, dtype=np.int64)}, dest=0, tag=200 + rank)
    else:
        seen = set()
        for _ in range(size - 1):
            st = MPI.Status()
            obj = comm.recv(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=st)
            src = obj["src"]
            assert st.Get_source() == src and st.Get_tag() == 200 + src, f"{WHERE} large wildcard receive: status {st!r}"
            assert (obj["blob"] == src).all() and obj["blob"].size == 200_000, f"{WHERE} large message from {src} corrupted"
            seen.add(src)
        assert seen == set(range(1, size)), f"{WHERE} heard from {sorted(seen)}"
    comm.Barrier()
    # recv with ANY_SOURCE but a fixed tag, and a fixed source but ANY_TAG.
    req = comm.isend("fixed-tag", dest=right, tag=55)
    st = MPI.Status()
    got = comm.recv(source=MPI.ANY_SOURCE, tag=55, status=st)
    assert got == "fixed-tag" and st.Get_source() == left and st.Get_tag() == 55, f"{WHERE} {got!r} {st!r}"
    req.wait()
    req = comm.isend("any-tag", dest=right, tag=56)
    got = comm.recv(source=left, tag=MPI.ANY_TAG, status=st)
    assert got == "any-tag" and st.Get_source() == left and st.Get_tag() == 56, f"{WHERE} {got!r} {st!r}"
    req.wait()
    comm.Barrier()


def test_proc_null():
    assert comm.send("nothing", dest=MPI.PROC_NULL) is None, WHERE
    assert comm.ssend("nothing", dest=MPI.PROC_NULL) is None, WHERE
    st = MPI.Status()
    got = comm.recv(source=MPI.PROC_NULL, tag=7, status=st)
    assert got is None, f"{WHERE} recv from PROC_NULL gave {got!r}"
    assert st.Get_source() == MPI.PROC_NULL, f"{WHERE} PROC_NULL status source {st.Get_source()}"
    assert st.Get_tag() == MPI.ANY_TAG, f"{WHERE} PROC_NULL status tag {st.Get_tag()}"
    assert st.Get_count() == 0, f"{WHERE} PROC_NULL status count {st.Get_count()}"
    assert comm.isend("x", dest=MPI.PROC_NULL).wait() is None, WHERE
    assert comm.irecv(source=MPI.PROC_NULL).wait() is None, WHERE
    got = comm.sendrecv("x", dest=MPI.PROC_NULL, source=MPI.PROC_NULL)
    assert got is None, f"{WHERE} sendrecv with PROC_NULL gave {got!r}"
    comm.Barrier()


def test_non_overtaking():
    if size < 2:
        return
    n = 100

    def message(i):
        # Mix eager and rendezvous sizes: order must hold across protocols.
        pad = 200_000 if i % 7 == 3 else (i % 5) * 10
        return (i, "m" * pad)

    # Blocking sends, blocking receives.
    if rank == 0:
        for i in range(n):
            comm.send(message(i), dest=1, tag=5)
    elif rank == 1:
        for i in range(n):
            got = comm.recv(source=0, tag=5)
            assert got[0] == i, f"{WHERE} message {got[0]} arrived as number {i}"
            assert got == message(i), f"{WHERE} message {i} corrupted"
    comm.Barrier()
    # All outstanding at once (isend), received with ANY_SOURCE.
    if rank == 0:
        reqs = [comm.isend(message(i), dest=1, tag=6) for i in range(n)]
        MPI.Request.waitall(reqs)
    elif rank == 1:
        for i in range(n):
            got = comm.recv(source=MPI.ANY_SOURCE, tag=6)
            assert got[0] == i, f"{WHERE} message {got[0]} arrived as number {i} (isend)"
    comm.Barrier()


def test_ssend():
    # Synchronous send around the ring (issend to self works at size 1).
    req = comm.issend(("ss", rank), dest=right, tag=11)
    got = comm.recv(source=left, tag=11)
    req.wait()
    assert got == ("ss", left), f"{WHERE} issend ring got {got!r}"
    if size >= 2:
        # Blocking ssend between 0 and 1.
        if rank == 0:
            comm.ssend({"sync": True}, dest=1, tag=12)
        elif rank == 1:
            assert comm.recv(source=0, tag=12) == {"sync": True}, WHERE
        # An issend cannot complete before the receiver has posted its receive:
        # rank 1 only posts it after a "go" that rank 0 sends later.
        if rank == 0:
            req = comm.issend("sync payload", dest=1, tag=13)
            for _ in range(5):
                done, _ = req.test()
                assert not done, f"{WHERE} issend completed before the matching receive was posted"
                time.sleep(0.02)
            comm.send("go", dest=1, tag=14)
            req.wait()
        elif rank == 1:
            assert comm.recv(source=0, tag=14) == "go", WHERE
            assert comm.recv(source=0, tag=13) == "sync payload", WHERE
    comm.Barrier()


def test_isend_irecv_waitall():
    # Everyone sends to everyone (self included), receives posted first.
    rreqs = [comm.irecv(source=src, tag=20) for src in range(size)]
    sreqs = [comm.isend({"from": rank, "to": dst, "data": list(range(rank + dst))}, dest=dst, tag=20) for dst in range(size)]
    got = MPI.Request.waitall(rreqs)
    for src, obj in enumerate(got):
        want = {"from": src, "to": rank, "data": list(range(src + rank))}
        assert obj == want, f"{WHERE} irecv from {src}: got {obj!r}, want {want!r}"
    sent = MPI.Request.waitall(sreqs)
    assert sent == [None] * size, f"{WHERE} waitall over sends gave {sent!r}"
    # Mixed list, with statuses.
    reqs = [comm.isend(rank * 10, dest=right, tag=21), comm.irecv(source=left, tag=21)]
    statuses = [MPI.Status(), MPI.Status()]
    res = MPI.Request.waitall(reqs, statuses)
    assert res == [None, left * 10], f"{WHERE} waitall gave {res!r}"
    assert statuses[1].Get_source() == left and statuses[1].Get_tag() == 21, f"{WHERE} {statuses[1]!r}"
    # Request.test polling until done.
    req = comm.irecv(source=left, tag=22)
    sreq = comm.isend("polled", dest=right, tag=22)
    deadline = time.monotonic() + 30
    while True:
        done, obj = req.test()
        if done:
            break
        assert time.monotonic() < deadline, f"{WHERE} irecv never completed"
    assert obj == "polled", f"{WHERE} test() gave {obj!r}"
    sreq.wait()
    comm.Barrier()


def test_sendrecv_ring():
    st = MPI.Status()
    got = comm.sendrecv(("ring", rank), dest=right, sendtag=30, source=left, recvtag=30, status=st)
    assert got == ("ring", left), f"{WHERE} sendrecv got {got!r}"
    assert st.Get_source() == left and st.Get_tag() == 30, f"{WHERE} sendrecv status {st!r}"
    # Large (rendezvous) objects around the ring, and in the other direction.
    arr = np.full(300_000, rank, dtype=np.int32)
    got = comm.sendrecv(arr, dest=right, source=left)
    assert got.shape == arr.shape and (got == left).all(), f"{WHERE} large sendrecv got the wrong data"
    got = comm.sendrecv({"r": rank}, dest=left, source=right)
    assert got == {"r": right}, f"{WHERE} reverse sendrecv got {got!r}"
    comm.Barrier()


def test_irecv_posting_order():
    """A receive posted first matches the first message (MPI-4.1 §3.5), even
    when a later blocking receive is called before the first is waited for."""
    if size < 2:
        return
    if rank == 0:
        comm.send("first", dest=1, tag=8)
        comm.send("second", dest=1, tag=8)
    elif rank == 1:
        req = comm.irecv(source=0, tag=8)
        later = comm.recv(source=0, tag=8)
        earlier = req.wait()
        assert (earlier, later) == ("first", "second"), (
            f"{WHERE} irecv posted before recv got {earlier!r}, recv got {later!r}: "
            "the earlier-posted receive must match the earlier message"
        )
    comm.Barrier()


def test_stress_mixed_sources():
    """Many small exchanges where messages from two sources interleave at
    each receiver, each received by source (a lost or misrouted message
    hangs or fails here)."""
    steps = [k for k in (1, 2) if k < size] or [0]
    for i in range(5000):
        for k in steps:
            dest, source = (rank + k) % size, (rank - k) % size
            got = comm.sendrecv((i, k, rank), dest=dest, sendtag=40, source=source, recvtag=40)
            assert got == (i, k, source), f"{WHERE} step {i}/{k}: got {got!r}, want {(i, k, source)!r}"
    comm.Barrier()


def main():
    test_objects()
    test_tags()
    test_any_source_any_tag()
    test_proc_null()
    test_non_overtaking()
    test_ssend()
    test_isend_irecv_waitall()
    test_sendrecv_ring()
    test_stress_mixed_sources()
    test_irecv_posting_order()  # last, so that a failure here hides none of the checks above
    print(f"OK {NAME} rank {rank}", flush=True)


if __name__ == "__main__":
    main()
