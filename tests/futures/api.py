"""Exercises oxmpi.futures; run by test_futures.py under
``mpiexec -n N python -m oxmpi.futures`` (mode "pool") or as a plain MPI
program using MPICommExecutor (mode "comm").  Prints "OK <check>" lines."""

import concurrent.futures as cf
import sys
import time

from mpi4py import MPI
from mpi4py.futures import (BrokenExecutor, MPICommExecutor, MPIPoolExecutor, collect, compose,
                            get_comm_workers)

INIT_VALUE = None


def square(x):
    return x * x


def where(_):
    return MPI.COMM_WORLD.Get_rank()


def fail(x):
    raise KeyError(f"task {x} failed")


def slow(x):
    time.sleep(0.2)
    return x


def set_init(value):
    global INIT_VALUE
    INIT_VALUE = value


def get_init():
    return INIT_VALUE


def bad_init():
    raise RuntimeError("initializer says no")


def workers_size(_):
    return get_comm_workers().Get_size()


def check(executor, nworkers):
    assert executor.num_workers == nworkers, executor.num_workers
    print("OK num_workers")
    assert executor.submit(square, 7).result(timeout=30) == 49
    print("OK submit")
    assert list(executor.map(square, range(25))) == [x * x for x in range(25)]
    assert list(executor.map(square, range(25), chunksize=4)) == [x * x for x in range(25)]
    assert sorted(executor.map(square, range(9), unordered=True)) == [x * x for x in range(9)]
    assert list(executor.map(square, iter(range(9)), buffersize=2)) == [x * x for x in range(9)]
    assert list(executor.starmap(pow, [(2, 3), (3, 2)], timeout=30)) == [8, 9]
    print("OK map")
    ranks = set(executor.map(where, range(8 * nworkers)))
    me = MPI.COMM_WORLD.Get_rank()
    assert me not in ranks or nworkers == 1, ranks
    print("OK distinct workers")
    future = executor.submit(fail, 3)
    exc = future.exception(timeout=30)
    assert isinstance(exc, KeyError), exc
    if nworkers > 0 and MPI.COMM_WORLD.Get_size() > 1:
        assert "task 3 failed" in str(exc.__cause__) and "Traceback" in str(exc.__cause__)
    try:
        list(executor.map(fail, range(3)))
    except KeyError:
        pass
    else:
        raise AssertionError("map did not raise")
    print("OK exceptions")
    assert collect([executor.submit(square, i) for i in range(5)]).result(30) == [0, 1, 4, 9, 16]
    assert compose(executor.submit(square, 3), lambda r: r + 1).result(30) == 10
    print("OK collect compose")
    try:
        list(executor.map(slow, range(4), timeout=0.01))
    except cf.TimeoutError:
        print("OK map timeout")


def main():
    mode = sys.argv[1]
    if mode == "pool":
        nworkers = max(MPI.COMM_WORLD.Get_size() - 1, 1)
        with MPIPoolExecutor() as executor:
            check(executor, nworkers)
            assert executor.submit(workers_size, 0).result() == nworkers
        print("OK get_comm_workers")
        with MPIPoolExecutor(initializer=set_init, initargs=(42,)) as executor:
            assert set(executor.map(lambda_free_get_init, range(4))) == {42}
        print("OK initializer")
        executor = MPIPoolExecutor(initializer=bad_init)
        # The pool boots in the background: it may be broken already when
        # the first task is submitted (then submit raises), as in mpi4py.
        try:
            executor.submit(square, 2).result(timeout=30)
        except BrokenExecutor as exc:
            assert "initializer" in str(exc)
        try:
            executor.submit(square, 2)
        except BrokenExecutor:
            print("OK broken initializer")
        executor.shutdown()
        executor = MPIPoolExecutor()
        futures = [executor.submit(slow, i) for i in range(6 * nworkers)]
        executor.shutdown(wait=True, cancel_futures=True)
        assert all(f.done() for f in futures)
        assert any(f.cancelled() for f in futures)
        try:
            executor.submit(square, 1)
        except RuntimeError:
            print("OK shutdown")
        with MPICommExecutor() as executor:
            assert executor.submit(square, 5).result() == 25
        print("OK MPICommExecutor under -m")
    elif mode == "comm":
        comm = MPI.COMM_WORLD
        root = comm.Get_size() - 1
        with MPICommExecutor(comm, root=root) as executor:
            if executor is not None:
                check(executor, max(comm.Get_size() - 1, 1))
                print("OK MPICommExecutor")
        # The world communicator is still usable for the user's own messages.
        assert comm.allreduce(1) == comm.Get_size()
        if comm.Get_rank() == root:
            print("OK after")
    elif mode == "spawn":
        # Not under -m oxmpi.futures: every rank spawns workers of its own.
        with MPIPoolExecutor(max_workers=2) as executor:
            got = list(executor.map(square, range(10)))
            workers = executor.num_workers
        assert got == [x * x for x in range(10)], got
        assert workers == 2, workers
        print("OK spawned")


def lambda_free_get_init(_):
    return get_init()


if __name__ == "__main__":
    main()
