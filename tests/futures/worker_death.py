"""A pool whose workers die: each death fails the future its worker held
(BrokenExecutor), the pool goes on with the others, and once none is left
queued and new futures fail too; no hang, whatever the mode (spawned
workers or the shared pool of ``-m oxmpi.futures``)."""

import os
import signal
import sys
import time

from oxmpi.futures import MPIPoolExecutor
from concurrent.futures import BrokenExecutor


def exit_now(code):
    os._exit(code)


def kill_me():
    os.kill(os.getpid(), signal.SIGKILL)


def square(x):
    return x * x


def pid_after(t):
    time.sleep(t)
    return os.getpid()


def expect_lost(future):
    try:
        future.result(timeout=60)
    except BrokenExecutor as exc:
        assert "died" in str(exc), exc
        return
    raise AssertionError("the future of a worker that died did not fail")


def main():
    with MPIPoolExecutor(max_workers=3) as ex:
        workers = ex.num_workers
        assert workers == 3, workers
        assert list(ex.map(square, range(10))) == [x * x for x in range(10)]
        expect_lost(ex.submit(exit_now, 3))
        print("OK first death", flush=True)
        assert list(ex.map(square, range(40))) == [x * x for x in range(40)]
        assert len(set(ex.map(pid_after, [0.3] * 4))) == 2
        print("OK two workers left", flush=True)
        expect_lost(ex.submit(kill_me))
        expect_lost(ex.submit(exit_now, 0))
        print("OK all dead", flush=True)
        try:
            ex.submit(square, 2).result(timeout=60)
        except BrokenExecutor:
            print("OK broken", flush=True)
    print("OK shutdown", flush=True)


if __name__ == "__main__":
    sys.exit(main())
