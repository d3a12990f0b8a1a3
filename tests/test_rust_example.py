"""The Rust example crates/oxmpi/examples/pi.rs builds and runs under mpiexec."""

import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mpirun import ROOT, assert_ok, describe, run_mpi

PI_LINE = re.compile(r"^pi ~= (\d+\.\d+), error (\S+), (\d+) points on (\d+) ranks in (\d+\.\d+) s$", re.M)


@pytest.fixture(scope="module")
def pi_binary():
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo is not installed")
    cmd = [cargo, "build", "--release", "--example", "pi", "-p", "oxmpi"]
    try:
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(cmd)} timed out\n{e.stdout}\n{e.stderr}")
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path(ROOT) / "target"))
    if not target.is_absolute():
        target = Path(ROOT) / target
    exe = target / "release" / "examples" / "pi"
    assert exe.is_file(), f"cargo built no {exe}"
    return exe


@pytest.mark.parametrize("n", [1, 3])
def test_rust_pi(pi_binary, n):
    res = run_mpi([pi_binary], n, timeout=60)
    assert_ok(res)
    found = PI_LINE.findall(res.stdout)
    assert len(found) == 1, f"expected one estimate line (from rank 0)\n{describe(res)}"
    est, err, points, ranks, _ = found[0]
    assert abs(float(est) - math.pi) < 0.01, f"estimate {est} is not within 0.01 of pi\n{describe(res)}"
    assert int(points) == 10_000_000 and int(ranks) == n, describe(res)
