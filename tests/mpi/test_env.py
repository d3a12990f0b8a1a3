"""Environment: communicators, ranks, timers, versions, initialisation state.

Run under mpiexec at any world size; every rank prints "OK test_env.py rank r".
If OXMPI_TEST_NPROCS is set, the world size must equal it.
"""

import os
import socket
import time

from oxmpi import MPI

NAME = os.path.basename(__file__)


def main():
    world = MPI.COMM_WORLD
    rank = world.Get_rank()
    size = world.Get_size()
    where = f"[{NAME} rank {rank}/{size}]"

    # -- COMM_WORLD ---------------------------------------------------------
    assert isinstance(world, MPI.Intracomm), f"{where} COMM_WORLD is a {type(world)!r}"
    assert isinstance(world, MPI.Comm), where
    assert world.rank == rank and world.size == size, f"{where} .rank/.size disagree with Get_rank/Get_size"
    assert 0 <= rank < size, f"{where} rank out of range"
    expected = os.environ.get("OXMPI_TEST_NPROCS")
    if expected is not None:
        assert size == int(expected), f"{where} world size {size}, launched with -n {expected}"
    assert bool(world), f"{where} COMM_WORLD is falsy"
    assert world == MPI.COMM_WORLD and not (world != MPI.COMM_WORLD), where
    assert world.Is_intra() and not world.Is_inter(), where
    assert world.Get_name() == "MPI_COMM_WORLD", f"{where} COMM_WORLD.Get_name() == {world.Get_name()!r}"
    ranks = world.allgather(rank)
    assert ranks == list(range(size)), f"{where} allgather of ranks gave {ranks}"

    # -- COMM_SELF ----------------------------------------------------------
    me = MPI.COMM_SELF
    assert isinstance(me, MPI.Intracomm), where
    assert me.Get_rank() == 0 and me.Get_size() == 1, f"{where} COMM_SELF is {me.Get_rank()}/{me.Get_size()}"
    assert me.rank == 0 and me.size == 1, where
    assert me.Get_name() == "MPI_COMM_SELF", f"{where} COMM_SELF.Get_name() == {me.Get_name()!r}"
    assert me != world, f"{where} COMM_SELF == COMM_WORLD"
    assert me.bcast("self", root=0) == "self", where
    assert me.allreduce(rank, op=MPI.SUM) == rank, where

    # -- COMM_NULL ----------------------------------------------------------
    assert isinstance(MPI.COMM_NULL, MPI.Comm), where
    assert not MPI.COMM_NULL, f"{where} COMM_NULL is truthy"
    assert MPI.COMM_NULL == MPI.COMM_NULL, where
    assert MPI.COMM_NULL != world and MPI.COMM_NULL != me, where
    assert MPI.Comm() == MPI.COMM_NULL, f"{where} MPI.Comm() is not COMM_NULL"

    # -- processor name ---------------------------------------------------------
    pname = MPI.Get_processor_name()
    assert isinstance(pname, str) and pname, f"{where} Get_processor_name() == {pname!r}"
    assert pname == socket.gethostname(), f"{where} processor name {pname!r} != hostname {socket.gethostname()!r}"
    names = world.allgather(pname)
    assert len(set(names)) == 1, f"{where} one machine, several processor names: {names}"

    # -- timers -------------------------------------------------------------------
    tick = MPI.Wtick()
    assert isinstance(tick, float) and 0 < tick < 1, f"{where} Wtick() == {tick!r}"
    t0 = MPI.Wtime()
    assert isinstance(t0, float), where
    prev = t0
    for _ in range(10000):
        t = MPI.Wtime()
        assert t >= prev, f"{where} Wtime went backwards: {prev!r} -> {t!r}"
        prev = t
    # Wtime counts seconds: compare with perf_counter over a 50 ms sleep (a
    # few attempts, as a rank may be preempted between the two clocks).
    for attempt in range(5):
        w0, p0 = MPI.Wtime(), time.perf_counter()
        time.sleep(0.05)
        w1, p1 = MPI.Wtime(), time.perf_counter()
        assert w1 - w0 >= 0.045, f"{where} slept 50 ms, Wtime advanced {w1 - w0:.4f} s"
        if abs((w1 - w0) - (p1 - p0)) < 0.01:
            break
    else:
        raise AssertionError(f"{where} Wtime ({w1 - w0:.4f} s) disagrees with perf_counter ({p1 - p0:.4f} s)")

    # -- versions -------------------------------------------------------------------
    assert MPI.Get_version() == (4, 1), f"{where} Get_version() == {MPI.Get_version()!r}"
    assert (MPI.VERSION, MPI.SUBVERSION) == (4, 1), where
    lib = MPI.Get_library_version()
    assert isinstance(lib, str) and "oxmpi" in lib, f"{where} Get_library_version() == {lib!r}"
    vendor = MPI.get_vendor()
    assert vendor[0] == "oxmpi", f"{where} get_vendor() == {vendor!r}"
    assert isinstance(vendor[1], tuple) and len(vendor[1]) == 3, f"{where} get_vendor() == {vendor!r}"
    assert all(isinstance(v, int) for v in vendor[1]), f"{where} get_vendor() == {vendor!r}"

    # -- initialisation state -----------------------------------------------------
    assert MPI.Is_initialized() is True, f"{where} Is_initialized() == {MPI.Is_initialized()!r}"
    assert MPI.Is_finalized() is False, f"{where} Is_finalized() == {MPI.Is_finalized()!r}"
    assert MPI.Query_thread() in (
        MPI.THREAD_SINGLE,
        MPI.THREAD_FUNNELED,
        MPI.THREAD_SERIALIZED,
        MPI.THREAD_MULTIPLE,
    ), where
    assert MPI.Is_thread_main(), where

    # -- constants ------------------------------------------------------------------
    assert MPI.PROC_NULL not in range(size) and MPI.ANY_SOURCE not in range(size), where
    # MPI.TAG_UB is the attribute key, as in mpi4py; the bound is its value.
    tag_ub = world.Get_attr(MPI.TAG_UB)
    assert MPI.ANY_TAG < 0 and tag_ub >= 32767, f"{where} TAG_UB attribute == {tag_ub}"
    assert MPI.INT.Get_size() == 4 and MPI.DOUBLE.Get_size() == 8 and MPI.BYTE.Get_size() == 1, where

    world.Barrier()
    print(f"OK {NAME} rank {rank}", flush=True)


if __name__ == "__main__":
    main()
