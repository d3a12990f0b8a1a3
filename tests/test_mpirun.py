"""The test runner itself: hung jobs are killed quickly and completely, and
a failing rank fails the job."""

import os
import sys
import time
import uuid

from mpirun import launcher, run_mpi


def _processes_with(marker):
    """PIDs whose command line or environment mentions `marker`."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if marker.encode() in cmd:
            found.append(int(pid))
    return found


def test_launcher_is_oxmpi():
    assert os.access(launcher(), os.X_OK)


def test_hang_is_killed(tmp_path):
    marker = f"hang-{uuid.uuid4().hex}"
    script = tmp_path / f"{marker}.py"
    script.write_text("from oxmpi import MPI\nimport time\nMPI.COMM_WORLD.Barrier()\ntime.sleep(600)\n")
    t = time.monotonic()
    res = run_mpi(script, 3, timeout=5, check_timeout=False)
    elapsed = time.monotonic() - t
    assert res.returncode != 0
    assert elapsed < 20, f"killing a hung job took {elapsed:.1f} s"
    deadline = time.monotonic() + 5
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _processes_with(marker), "ranks of a killed job survived"


def test_failing_rank_fails_job(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(
        "from oxmpi import MPI\nimport sys, time\n"
        "if MPI.COMM_WORLD.rank == 1:\n    sys.exit(7)\n"
        "time.sleep(600)\n"
    )
    t = time.monotonic()
    res = run_mpi(script, 2, timeout=60)
    assert res.returncode == 7, f"exit status {res.returncode}\n{res.stderr}"
    assert time.monotonic() - t < 30, "the other rank was not ended when rank 1 failed"


def test_args_and_env(tmp_path):
    script = tmp_path / "echo.py"
    script.write_text(
        "import os, sys\nfrom oxmpi import MPI\n"
        "print(MPI.COMM_WORLD.rank, sys.argv[1:], os.environ.get('OXMPI_TEST_MARK'))\n"
    )
    res = run_mpi([sys.executable, script, "a b", "c"], 2, env={"OXMPI_TEST_MARK": "yes"})
    assert res.returncode == 0, res.stderr
    assert sorted(res.stdout.splitlines()) == ["0 ['a b', 'c'] yes", "1 ['a b', 'c'] yes"], res.stdout
