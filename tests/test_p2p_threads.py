"""Several Python threads per rank sending and receiving on one
communicator at once (tests/mpi/threads_p2p.py), with the GIL released
while each waits, at world sizes 1, 2, 3 and 5.
"""

import re
from pathlib import Path

import pytest

from mpirun import assert_ok, describe, run_mpi

PROGRAM = Path(__file__).parent / "mpi" / "threads_p2p.py"


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_threads_p2p(n):
    res = run_mpi(PROGRAM, n, timeout=120, launcher_args=["-l"])
    assert_ok(res, f"threads_p2p.py at -n {n}")
    ok = sorted(int(r) for r in re.findall(r"^\[\d+\] OK threads_p2p\.py rank (\d+)$", res.stdout, re.M))
    assert ok == list(range(n)), describe(res)
