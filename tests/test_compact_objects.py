"""The compact object format can be turned off (OXMPI_COMPACT_OBJECTS=0):
tests/mpi/test_obj_compact.py then expects pickles on the wire, and every
object still arrives exactly. (tests/test_mpi_programs.py runs the same
program with the format on, at 1 to 5 ranks.)"""

import re
from pathlib import Path

import pytest

from mpirun import assert_ok, run_mpi

PROGRAM = Path(__file__).parent / "mpi" / "test_obj_compact.py"


@pytest.mark.parametrize("n", [1, 2, 3])
def test_compact_format_off(n):
    res = run_mpi(PROGRAM, n, timeout=120, env={"OXMPI_COMPACT_OBJECTS": "0"}, launcher_args=["-l"])
    assert_ok(res, f"test_obj_compact.py with OXMPI_COMPACT_OBJECTS=0 at -n {n}")
    ok = sorted(int(r) for r in re.findall(r"^\[\d+\] OK test_obj_compact\.py rank (\d+)$", res.stdout, re.M))
    assert ok == list(range(n)), res.stdout
