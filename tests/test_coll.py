"""Collectives under mpiexec: reproducible reductions and asynchronous
progress, at world sizes 1 to 5.

The MPI programs live in tests/mpi; this driver runs them with oxmpi's
launcher (the one installed beside this interpreter), each job under a
timeout that kills its whole process group.

Reproducibility is checked three ways: within a run every rank gets the
same bits (the program checks it), and across runs the digest of every
result is the same, whether the communicators use the shared-memory
algorithms or the point-to-point ones (OXMPI_COLL_SHM=0).
"""

import os
import signal
import subprocess
import sys
import sysconfig

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = int(os.environ.get("OXMPI_TEST_TIMEOUT", "300"))
SIZES = [1, 2, 3, 4, 5]


def mpiexec():
    for d in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        exe = os.path.join(d, "mpiexec")
        if os.access(exe, os.X_OK):
            return exe
    pytest.skip("oxmpi's mpiexec is not installed beside this interpreter")


def run(program, n, **env):
    cmd = [mpiexec(), "-n", str(n), sys.executable, os.path.join(HERE, "mpi", program)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} timed out\n{out}\n{err}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{out}\n{err}", pytrace=False)
    oks = [line for line in out.splitlines() if line.startswith(f"OK {program} rank ")]
    assert len(oks) == n, out
    return out


def digest(out):
    (line,) = [x for x in out.splitlines() if x.startswith("DIGEST ")]
    return line.split()[1]


@pytest.mark.parametrize("n", SIZES)
def test_reductions_are_reproducible(n):
    first = digest(run("test_coll_determinism.py", n))
    again = digest(run("test_coll_determinism.py", n))
    assert first == again, "two runs of the same job gave different bits"
    p2p = digest(run("test_coll_determinism.py", n, OXMPI_COLL_SHM="0"))
    assert first == p2p, "shared-memory and point-to-point algorithms gave different bits"


@pytest.mark.parametrize("n", SIZES)
def test_nonblocking_collectives_progress(n):
    run("test_coll_nonblocking.py", n)
