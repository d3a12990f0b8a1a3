"""oxmpi.futures: the pool of ``python -m oxmpi.futures`` (and
``-m mpi4py.futures``), MPICommExecutor, the replicas example, and the clear
error of an executor that would have to spawn its workers."""

import sys
from pathlib import Path

import pytest

from mpirun import assert_ok, describe, run_mpi

HERE = Path(__file__).resolve().parent
API = HERE / "futures" / "api.py"
REPLICAS = HERE.parent / "examples" / "replicas.py"

POOL_CHECKS = ["num_workers", "submit", "map", "distinct workers", "exceptions", "collect compose",
               "map timeout", "get_comm_workers", "initializer", "broken initializer", "shutdown",
               "MPICommExecutor under -m"]


def oks(out):
    return [line[3:] for line in out.splitlines() if line.startswith("OK ")]


@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("module", ["oxmpi.futures", "mpi4py.futures"])
def test_pool(n, module):
    res = run_mpi([sys.executable, "-m", module, API, "pool"], n, timeout=120)
    assert_ok(res)
    assert oks(res.stdout) == POOL_CHECKS, describe(res)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_comm_executor(n):
    res = run_mpi([sys.executable, API, "comm"], n, timeout=120)
    assert_ok(res)
    expected = [c for c in POOL_CHECKS[:7]] + ["MPICommExecutor", "after"]
    assert oks(res.stdout) == expected, describe(res)


@pytest.mark.parametrize("n", [1, 2])
def test_no_workers_gives_clear_error(n):
    res = run_mpi([sys.executable, API, "noworkers"], n, timeout=60)
    assert_ok(res)
    assert oks(res.stdout) == ["clear error"] * n, describe(res)


@pytest.mark.parametrize("module", ["oxmpi.futures", "mpi4py.futures"])
def test_replicas(module):
    res = run_mpi([sys.executable, "-m", module, REPLICAS, "6", "4000"], 4, timeout=120,
                  launcher_args=["--map-by", "slot:pe=4"])
    assert_ok(res)
    lines = [line for line in res.stdout.splitlines() if line.startswith("replica ")]
    assert len(lines) == 6, describe(res)
    for seed, line in enumerate(lines):
        assert line.startswith(f"replica {seed}: pi ~ 3.")
        rank = int(line.rsplit(" ", 1)[1].rstrip(")"))
        assert rank in (1, 2, 3), describe(res)
    assert "6 replicas on 3 workers" in res.stdout, describe(res)


def test_task_exception_reaches_client_and_job_ends():
    code = ("from mpi4py.futures import MPIPoolExecutor\n"
            "def f(x): raise ValueError('boom')\n"
            "if __name__ == '__main__':\n"
            "    with MPIPoolExecutor() as ex:\n"
            "        ex.submit(f, 1).result()\n")
    script = HERE / "futures" / "raises.py"
    script.write_text(code)
    try:
        res = run_mpi([sys.executable, "-m", "oxmpi.futures", script], 3, timeout=60)
    finally:
        script.unlink()
    assert res.returncode != 0, describe(res)
    assert "ValueError: boom" in res.stderr, describe(res)
