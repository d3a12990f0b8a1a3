"""``python -m mpi4py.bench`` through the compatibility package: mpi4py's
benchmark commands run on oxmpi with mpi4py's options and output (the
numbers are not checked: benchmarks measure, tests check they run)."""

import re
import sys

import pytest

from mpirun import assert_ok, describe, run_mpi

BENCH = [sys.executable, "-m", "mpi4py.bench"]


@pytest.mark.parametrize("n", [1, 3])
def test_helloworld_in_rank_order(n):
    res = run_mpi([*BENCH, "helloworld"], n, timeout=60)
    assert_ok(res)
    lines = res.stdout.splitlines()
    assert [int(re.match(r"Hello, World! I am process +(\d+) of (\d+) on ", ln).group(1))
            for ln in lines] == list(range(n)), describe(res)


def test_ringtest():
    res = run_mpi([*BENCH, "ringtest", "-n", "1024", "-l", "20", "-s", "2"], 3, timeout=60)
    assert_ok(res)
    assert re.fullmatch(r"time for 20 loops = \S+ seconds \(3 processes, 1024 bytes\)\n",
                        res.stdout), describe(res)


SIZE_LINE = r" *(\d+) +\d+\.\d\d \| \S+ \u00b1 \S+ +(\d+)"


@pytest.mark.parametrize("n, extra", [(2, []), (2, ["--pickle"]), (2, ["--outband"]),
                                      (1, ["--pickle"])])
def test_pingpong(n, extra):
    res = run_mpi([*BENCH, "pingpong", "-n", "4096", "-l", "20", "-s", "2", *extra], n,
                  timeout=120)
    assert_ok(res)
    lines = res.stdout.splitlines()
    assert lines[:2] == ["# MPI PingPong Test",
                         "# Size [B]  Bandwidth [MB/s] | Time Mean [s] \u00b1 StdDev [s]  Samples"]
    sizes = [int(re.fullmatch(SIZE_LINE, ln).group(1)) for ln in lines[2:]]
    assert sizes == [1 << i for i in range(13)], describe(res)


@pytest.mark.parametrize("how", ["spawned", "mpi4py.futures"])
def test_futures(how):
    args = ["futures", "-n", "256", "-l", "2", "-t", "4", "--no-stats"]
    if how == "spawned":
        res = run_mpi([*BENCH, *args, "-w", "2"], 1, timeout=120)
    else:
        res = run_mpi([sys.executable, "-m", "mpi4py.futures", "-m", "mpi4py.bench", *args], 3,
                      timeout=120)
    assert_ok(res)
    lines = res.stdout.splitlines()
    assert lines[:2] == ["# MPIPoolExecutor - 2 workers, 4 tasks/worker", "# Size [B]  Tasks/s"], \
        describe(res)
    assert [int(ln.split()[0]) for ln in lines[2:]] == [1 << i for i in range(9)], describe(res)
