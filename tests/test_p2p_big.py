"""Messages of 3 GiB between two ranks (tests/mpi/big_p2p.py), as a buffer
and as a pickled object whose array travels out of band without a copy.

Needs about 7 GiB of memory and a minute, so it runs only when
OXMPI_BIG_TESTS=1. OXMPI_CMA=0 in the environment exercises the fallback
that streams through shared-memory cells instead of cross-memory attach.
"""

import os
import re
from pathlib import Path

import pytest

from mpirun import assert_ok, describe, run_mpi

PROGRAM = Path(__file__).parent / "mpi" / "big_p2p.py"


@pytest.mark.skipif(os.environ.get("OXMPI_BIG_TESTS") != "1", reason="set OXMPI_BIG_TESTS=1 (needs ~7 GiB)")
def test_three_gib_messages():
    res = run_mpi(PROGRAM, 2, timeout=600, env={"BIG_P2P_GIB": "3"}, launcher_args=["-l"])
    assert_ok(res, "big_p2p.py")
    ok = sorted(int(r) for r in re.findall(r"^\[\d+\] OK big_p2p\.py rank (\d+) ", res.stdout, re.M))
    assert ok == [0, 1], describe(res)
