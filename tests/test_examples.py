"""The Python examples in examples/ run and give the right answers."""

import math
import re
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
