"""The point-to-point stress program (tests/mpi/stress_p2p.py) on 8 ranks:
100,000 messages of random sizes and tags, received with ANY_SOURCE and
ANY_TAG, checksummed, none lost, in order per sender. Ranks outnumber the
cores of small machines; that is part of the test (waiting ranks must
sleep, not spin).
"""

import re
from pathlib import Path

from mpirun import assert_ok, describe, run_mpi

PROGRAM = Path(__file__).parent / "mpi" / "stress_p2p.py"
RANKS = 8


def test_stress_p2p():
    res = run_mpi(PROGRAM, RANKS, timeout=300, launcher_args=["-l"])
    assert_ok(res, "stress_p2p.py")
    ok = sorted(int(r) for r in re.findall(r"^\[\d+\] OK stress_p2p\.py rank (\d+) ", res.stdout, re.M))
    assert ok == list(range(RANKS)), f"expected an OK line from every rank\n{describe(res)}"
    sent = sum(int(n) for n in re.findall(r"\((\d+) sent, ", res.stdout))
    received = sum(int(n) for n in re.findall(r", (\d+) received, ", res.stdout))
    assert sent == received == 100_000, describe(res)
