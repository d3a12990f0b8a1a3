"""examples/heat2d.py: the 2-D heat diffusion on a periodic Cartesian grid
(subarray halo exchange) matches its serial result on 1, 2, 3, 4 and 6
ranks."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "heat2d.py"


def mpiexec():
    """The project's launcher, next to the interpreter running the tests."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


@pytest.mark.parametrize("nprocs", [1, 2, 3, 4, 6])
def test_heat2d_matches_serial(nprocs):
    proc = subprocess.run(
        [mpiexec(), "-n", str(nprocs), sys.executable, str(EXAMPLE), "30", "22", "40"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "max difference from serial 0" in proc.stdout, proc.stdout
