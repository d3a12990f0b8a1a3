"""Matching order and progress with receives of any size, and reductions
that no MPI library computes itself.

A receive of a pickled object of unknown size cannot be handed to an MPI
library before its message is known (the system-MPI backend matches it with
a probe); these checks hold it to MPI's rules all the same: a message goes
to the earliest posted receive that matches it, a probe never reports a
message that a posted receive takes, and a posted receive is matched even
while its process is blocked in a collective.

Run under any launcher at any world size; every rank prints
"OK test_matching.py rank r".
"""

import os
import pickle

import numpy as np

from oxmpi import MPI

NAME = os.path.basename(__file__)
world = MPI.COMM_WORLD
rank, size = world.Get_rank(), world.Get_size()
right, left = (rank + 1) % size, (rank - 1) % size
WHERE = f"[{NAME} rank {rank}/{size}]"


def test_object_then_buffer_receive(comm):
    """An object receive posted before a buffer receive gets the first
    message, whether the messages arrive before or after the posts."""
    first = pickle.dumps(("first", left))
    second = np.arange(6, dtype=np.int64) + 100 * left
    for arrive_first in (False, True):
        tag = 5 + arrive_first
        sends = []
        if arrive_first:
            sends = [
                comm.Isend(np.frombuffer(pickle.dumps(("first", rank)), dtype=np.uint8), dest=right, tag=tag),
                comm.Isend(np.arange(6, dtype=np.int64) + 100 * rank, dest=right, tag=tag),
            ]
            comm.Barrier()
        obj_req = comm.irecv(source=left, tag=tag)
        buf = np.zeros(6, dtype=np.int64)
        buf_req = comm.Irecv(buf, source=left, tag=tag)
        if not arrive_first:
            comm.Barrier()
            sends = [
                comm.Isend(np.frombuffer(pickle.dumps(("first", rank)), dtype=np.uint8), dest=right, tag=tag),
                comm.Isend(np.arange(6, dtype=np.int64) + 100 * rank, dest=right, tag=tag),
            ]
        buf_req.Wait()
        got = obj_req.wait()
        MPI.Request.Waitall(sends)
        assert got == pickle.loads(first), f"{WHERE} object receive got {got!r} (arrive_first={arrive_first})"
        assert np.array_equal(buf, second), f"{WHERE} buffer receive got {buf} (arrive_first={arrive_first})"
    comm.Barrier()


def test_any_source_object_receive_first(comm):
    """ANY_SOURCE object receive, then a buffer receive from a given rank:
    the message from that rank goes to the earlier (wildcard) receive."""
    tag = 8
    obj_req = comm.irecv(source=MPI.ANY_SOURCE, tag=tag)
    buf = np.zeros(1, dtype=np.int64)
    buf_req = comm.Irecv(buf, source=left, tag=tag)
    comm.Barrier()
    s1 = comm.isend(("wild", rank), dest=right, tag=tag)
    s2 = comm.Isend(np.array([rank], dtype=np.int64), dest=right, tag=tag)
    got = obj_req.wait()
    buf_req.Wait()
    s1.wait()
    s2.Wait()
    assert got == ("wild", left), f"{WHERE} wildcard object receive got {got!r}"
    assert buf[0] == left, f"{WHERE} buffer receive got {buf}"
    comm.Barrier()


def test_probe_does_not_report_claimed_message(comm):
    """A posted object receive takes its message: Iprobe never sees it."""
    tag = 9
    req = comm.irecv(source=left, tag=tag)
    comm.Barrier()
    sreq = comm.isend({"claimed": rank}, dest=right, tag=tag)
    for _ in range(200):
        assert not comm.Iprobe(source=left, tag=tag), f"{WHERE} Iprobe saw a message a posted receive takes"
    got = req.wait()
    sreq.wait()
    assert got == {"claimed": left}, f"{WHERE} got {got!r}"
    assert not comm.Iprobe(source=left, tag=tag), f"{WHERE} message seen twice"
    comm.Barrier()


def test_receive_progresses_during_collective(comm):
    """Rank 0 posts an object receive and enters a barrier; rank 1 reaches
    the barrier only once its (rendezvous-sized, blocking) send is matched."""
    if comm.size < 2:
        return
    tag = 10
    big = np.arange(1 << 20, dtype=np.float64)  # 8 MB: far past any eager limit
    if comm.rank == 0:
        req = comm.irecv(source=1, tag=tag)
        comm.Barrier()
        got = req.wait()
        assert np.array_equal(got, big), f"{WHERE} large object received wrong"
    elif comm.rank == 1:
        comm.send(big, dest=0, tag=tag)
        comm.Barrier()
    else:
        comm.Barrier()
    comm.Barrier()


def test_cancel_object_receive(comm):
    """A cancelled object receive takes no message: the next receive does."""
    tag = 11
    req = comm.irecv(source=left, tag=tag)
    req.Cancel()
    st = MPI.Status()
    req.Wait(st)
    assert st.Is_cancelled(), f"{WHERE} an unmatched receive was not cancelled"
    comm.Barrier()
    sreq = comm.isend("after cancel", dest=right, tag=tag)
    assert comm.recv(source=left, tag=tag) == "after cancel", WHERE
    sreq.wait()
    comm.Barrier()


def test_free_communicator_with_pending_receive(comm):
    """A communicator freed while an object receive on it is pending: the
    receive still completes (MPI defers the free)."""
    import gc

    sub = comm.Dup()
    req = sub.irecv(source=left, tag=13)
    sreq = sub.isend(("freed", rank), dest=right, tag=13)
    sub.Free()
    del sub
    gc.collect()
    assert req.wait() == ("freed", left), f"{WHERE} receive on a freed communicator"
    sreq.wait()
    comm.Barrier()


def test_many_outstanding_object_receives(comm):
    """Object receives complete in posting order for one sender and tag."""
    tag = 12
    reqs = [comm.irecv(source=left, tag=tag) for _ in range(20)]
    comm.Barrier()
    sends = [comm.isend((i, "x" * (i * 5000)), dest=right, tag=tag) for i in range(20)]
    got = [r.wait() for r in reqs]
    for s in sends:
        s.wait()
    assert [g[0] for g in got] == list(range(20)), f"{WHERE} out of order: {[g[0] for g in got]}"
    comm.Barrier()


def test_reductions_without_library_ops(comm):
    """REPLACE and NO_OP in reductions (MPI defines them for accumulates
    only), logical and bitwise operations on bool arrays, and user
    operations on any world size."""
    r, n = comm.rank, comm.size
    mine = np.full(4, r + 1, dtype=np.int32)
    out = np.zeros(4, dtype=np.int32)
    comm.Allreduce(mine, out, op=MPI.REPLACE)
    assert (out == 1).all(), f"{WHERE} Allreduce REPLACE: {out}"  # rank 0's value
    comm.Allreduce(mine, out, op=MPI.NO_OP)
    assert (out == n).all(), f"{WHERE} Allreduce NO_OP: {out}"  # the last rank's value
    # Only the logical operations are defined on C_BOOL (MPI-4.1 §6.9.2).
    flags = np.array([r % 2 == 0, True, False, r == 0])
    for op, want in (
        (MPI.LAND, [n == 1, True, False, n == 1]),
        (MPI.LOR, [True, True, False, True]),
        (MPI.LXOR, [(n + 1) // 2 % 2 == 1, n % 2 == 1, False, True]),
    ):
        got = np.zeros(4, dtype=bool)
        comm.Allreduce(flags, got, op=op)
        assert list(got) == want, f"{WHERE} Allreduce {op} on bool: {list(got)} != {want}"

    def concat_digits(inbuf, inoutbuf, datatype):
        # (value, digits) pairs: concatenating decimal digits is associative
        # (as MPI requires) but not commutative, so rank order shows.
        a = np.frombuffer(inbuf, dtype=np.int64).reshape(-1, 2)
        b = np.frombuffer(inoutbuf, dtype=np.int64).reshape(-1, 2)
        b[:, 0] = a[:, 0] * 10 ** b[:, 1] + b[:, 0]
        b[:, 1] = a[:, 1] + b[:, 1]

    op = MPI.Op.Create(concat_digits, commute=False)
    try:
        mine = np.tile(np.array([r + 1, 1], dtype=np.int64), 3)
        want = [int("".join(str(k + 1) for k in range(n))), n] * 3
        out = np.zeros(6, dtype=np.int64)
        comm.Allreduce(mine, out, op=op)
        assert list(out) == want, f"{WHERE} non-commutative user op: {out} != {want}"
        for root in range(n):
            out = np.zeros(6, dtype=np.int64)
            comm.Reduce(mine, out if r == root else None, op=op, root=root)
            if r == root:
                assert list(out) == want, f"{WHERE} Reduce with user op to {root}: {out} != {want}"
    finally:
        op.Free()
    comm.Barrier()


def test_user_op_exception(comm):
    """An exception raised in a user operation comes out of the reduction
    unchanged, on the root at least (which applies the op)."""
    if not 2 <= comm.size <= 3:
        return  # which ranks apply the op beyond that depends on the algorithm

    class Boom(Exception):
        pass

    def bad(inbuf, inoutbuf, datatype):
        raise Boom("from a user op")

    op = MPI.Op.Create(bad, commute=True)
    sub = comm.Dup()  # its collective traffic stays out of `comm`
    raised = None
    try:
        out = np.zeros(3)
        sub.Reduce(np.ones(3), out if sub.rank == 0 else None, op=op, root=0)
    except Boom as e:
        raised = e
    except BaseException as e:  # noqa: BLE001
        raise AssertionError(f"{WHERE} a user op's exception came out as {type(e).__name__}: {e}") from e
    finally:
        op.Free()
    if comm.rank == 0:
        assert raised is not None, f"{WHERE} the user op's exception was lost"
    comm.Barrier()
    sub.Free()
    assert comm.allreduce(1) == comm.size, WHERE


def main():
    comm = world.Dup()
    test_object_then_buffer_receive(comm)
    test_any_source_object_receive_first(comm)
    test_probe_does_not_report_claimed_message(comm)
    test_receive_progresses_during_collective(comm)
    test_cancel_object_receive(comm)
    test_free_communicator_with_pending_receive(comm)
    test_many_outstanding_object_receives(comm)
    test_reductions_without_library_ops(comm)
    test_user_op_exception(comm)
    comm.Free()
    world.Barrier()
    print(f"OK {NAME} rank {rank}", flush=True)


if __name__ == "__main__":
    main()
