"""The Python examples in examples/ run and give the right answers."""

import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mpirun import assert_ok, describe, run_mpi

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PI_LINE = re.compile(
    r"^pi ~= (\d+\.\d+), error (\S+), (\d+) points on (\d+) ranks in (\d+\.\d+) s$", re.M
)


@pytest.mark.parametrize("n", [1, 4])
def test_compute_pi(n):
    res = run_mpi(EXAMPLES / "compute_pi.py", n, timeout=120)
    assert_ok(res)
    found = PI_LINE.findall(res.stdout)
    assert len(found) == 1, f"expected one estimate line (from rank 0)\n{describe(res)}"
    est, err, points, ranks, _ = found[0]
    assert abs(float(est) - math.pi) < 0.01, f"estimate {est} is not within 0.01 of pi\n{describe(res)}"
    assert abs(float(err) - abs(float(est) - math.pi)) < 1e-5, describe(res)
    assert int(points) == 10_000_000 and int(ranks) == n, describe(res)


def test_compute_pi_uneven_split():
    # 1001 points over 3 ranks: the remainder goes to the low ranks, and
    # every point is counted exactly once.
    res = run_mpi([sys.executable, EXAMPLES / "compute_pi.py", "1001"], 3, timeout=60)
    assert_ok(res)
    (est, _, points, ranks, _), = PI_LINE.findall(res.stdout)
    assert (int(points), int(ranks)) == (1001, 3), describe(res)
    hits = float(est) * 1001 / 4
    assert abs(hits - round(hits)) < 1e-3, f"{est} is not 4 * hits / 1001\n{describe(res)}"


def test_hello():
    res = run_mpi(EXAMPLES / "hello.py", 3, timeout=60)
    assert_ok(res)
    lines = [l for l in res.stdout.splitlines() if l.startswith("Hello from rank")]
    assert len(lines) == 3 and len(set(lines)) == 3, f"expected 3 distinct greetings\n{describe(res)}"
    ranks = sorted(int(re.match(r"Hello from rank (\d+) of 3 on \S+", l).group(1)) for l in lines)
    assert ranks == [0, 1, 2], describe(res)


@pytest.mark.parametrize("n", [3, 5])
def test_cheatsheet_seed_003(n):
    """Seed 003's cheat-sheet calls, unchanged mpi4py code (from mpi4py import MPI)."""
    res = run_mpi(EXAMPLES / "cheatsheet.py", n, timeout=120)
    assert_ok(res)
    for r in range(n):
        assert f"cheatsheet ok on rank {r} of {n}" in res.stdout, describe(res)


def test_psum_seed_001():
    res = run_mpi(EXAMPLES / "psum.py", 4, timeout=120)
    assert_ok(res)
    sums = re.findall(r"^\[(\d)\] psum = (\S+)$", res.stdout, re.M)
    assert sorted(int(r) for r, _ in sums) == [0, 1, 2, 3], describe(res)
    assert len({s for _, s in sums}) == 1, f"ranks disagree on the sum\n{describe(res)}"


SCALING_ROW = re.compile(
    r"^\s*(\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+)%\s+(\d+\.\d+)\s+(\S+)$", re.M
)


def test_pi_scaling_table_seed_004(mpiexec):
    """examples/pi_scaling.py prints one row per rank count (1, 2, 4) with
    self-consistent speedup and efficiency and a correct estimate on every
    row. Timings themselves are not asserted: the machine may be busy."""
    cmd = [sys.executable, str(EXAMPLES / "pi_scaling.py"), "--points", "2000000", "--mpiexec", mpiexec, "--timeout", "120"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"pi_scaling.py timed out\n{out}\n{err}", pytrace=False)
    assert p.returncode == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("compute_pi.py, 2000000 points"), out
    assert lines[1].split() == ["ranks", "job", "s", "compute", "s", "speedup", "efficiency", "pi", "estimate", "error"], out
    rows = SCALING_ROW.findall(out)
    assert len(rows) == 3 and len(lines) == 5, out
    assert [int(r[0]) for r in rows] == [1, 2, 4], out
    for ranks, wall, compute, speedup, efficiency, est, error in rows:
        assert float(wall) > 0 and float(compute) >= 0, out
        assert abs(float(est) - math.pi) < 0.01, f"estimate {est} is not within 0.01 of pi\n{out}"
        assert abs(float(error) - abs(float(est) - math.pi)) < 1e-5, out
        # efficiency is speedup / ranks, printed as a whole percentage
        assert abs(int(efficiency) - 100 * float(speedup) / int(ranks)) <= 1, out
    assert rows[0][3] == "1.00" and rows[0][4] == "100", out
