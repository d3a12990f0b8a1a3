"""Runs every MPI test program in tests/mpi at world sizes 1 to 5.

Each program prints one "OK <file> rank <r>" line per rank when all its
checks pass; a failed check ends its rank with a traceback and the job with
a non-zero status.  A job that runs past OXMPI_TEST_TIMEOUT seconds (default
120) is killed and fails its test.
"""

import os
import re
from pathlib import Path

import pytest

from mpirun import assert_ok, describe, run_mpi

MPI_DIR = Path(__file__).parent / "mpi"
PROGRAMS = sorted(p.name for p in MPI_DIR.glob("test_*.py"))
SIZES = [1, 2, 3, 4, 5]
TIMEOUT = float(os.environ.get("OXMPI_TEST_TIMEOUT", "120"))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("program", PROGRAMS)
def test_program(program, n):
    # -l: every output line starts with "[rank] ", so that interleaved
    # tracebacks can be told apart.
    res = run_mpi(
        MPI_DIR / program, n, timeout=TIMEOUT, env={"OXMPI_TEST_NPROCS": str(n)}, launcher_args=["-l"]
    )
    assert_ok(res, f"{program} at -n {n}")
    ok = re.findall(rf"^\[(\d+)\] OK {re.escape(program)} rank (\d+)$", res.stdout, re.M)
    assert all(a == b for a, b in ok), f"OK lines printed under another rank's prefix\n{describe(res)}"
    ranks = sorted(int(r) for _, r in ok)
    assert ranks == list(range(n)), (
        f"{program} at -n {n}: expected one OK line from each of ranks 0..{n - 1}, got ranks {ranks}\n"
        f"{describe(res)}"
    )


def test_programs_found():
    assert {"test_env.py", "test_p2p_obj.py", "test_p2p_buf.py", "test_coll.py", "test_errors.py"} <= set(PROGRAMS)
