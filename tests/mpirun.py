"""Run MPI jobs under oxmpi's launcher from the test-suite.

``run_mpi(script_or_args, n)`` starts ``mpiexec -n n python script`` (or
``mpiexec -n n *args`` for a list) in a new session, waits at most
``timeout`` seconds and returns the ``subprocess.CompletedProcess``.  A job
that hangs is killed, process group and all, and the test fails at once
with everything the job printed so far.
"""

import functools
import os
import shutil
import signal
import subprocess
import sys
import sysconfig

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@functools.lru_cache(maxsize=None)
def launcher():
    """The path of oxmpi's ``mpiexec``.

    The one installed beside this interpreter comes first (so a virtual
    environment's launcher is used even when it is not activated), then
    ``shutil.which``; it must say "oxmpi" in its ``--version``.
    """
    candidates = [
        os.path.join(sysconfig.get_path("scripts"), "mpiexec"),
        os.path.join(os.path.dirname(sys.executable), "mpiexec"),
        shutil.which("mpiexec"),
    ]
    tried = []
    for exe in candidates:
        if not exe or not os.access(exe, os.X_OK) or exe in tried:
            continue
        tried.append(exe)
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
        if "oxmpi" in out.stdout + out.stderr:
            return exe
    if not tried:
        pytest.fail("no mpiexec found: is the oxmpi wheel installed?", pytrace=False)
    pytest.fail(f"no oxmpi launcher: {tried} are another MPI's mpiexec", pytrace=False)


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_mpi(script_or_args, n, timeout=60, env=None, launcher_args=(), check_timeout=True):
    """Runs a job of ``n`` ranks; returns the CompletedProcess (text mode).

    ``script_or_args``: a Python script (str or path-like, run with this
    interpreter), or a list of words for the launcher to start as-is.
    ``env``: extra environment variables for the job.
    ``launcher_args``: options for mpiexec itself (e.g. ``["-l"]``).
    ``check_timeout``: when false, a job that times out is returned (with
    returncode -9) instead of failing the test.
    """
    if isinstance(script_or_args, (list, tuple)):
        prog = [str(a) for a in script_or_args]
    else:
        prog = [sys.executable, str(script_or_args)]
    cmd = [launcher(), *launcher_args, "-n", str(n), *prog]
    job_env = dict(os.environ)
    if env:
        job_env.update(env)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=job_env,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        if check_timeout:
            pytest.fail(
                f"MPI job timed out after {timeout} s and was killed: {' '.join(cmd)}\n"
                f"--- stdout ---\n{out}\n--- stderr ---\n{err}",
                pytrace=False,
            )
        return subprocess.CompletedProcess(cmd, -signal.SIGKILL, out, err)
    finally:
        # Whatever happened, leave no rank behind (e.g. a rank that ignored
        # the launcher's SIGTERM, or a KeyboardInterrupt while waiting).
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
    # The launcher has exited; sweep its group in case a rank outlived it.
    _kill_group(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def describe(res):
    """A failure message showing the command, exit status and output."""
    return (
        f"command: {' '.join(res.args)}\nexit status: {res.returncode}\n"
        f"--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr}"
    )


def assert_ok(res, what=""):
    """Fails the test, showing the job's output, unless it exited with 0."""
    if res.returncode != 0:
        head = f"{what}: " if what else ""
        pytest.fail(f"{head}MPI job failed\n{describe(res)}", pytrace=False)
