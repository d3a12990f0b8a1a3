"""The seeds' ecosystem on oxmpi, unchanged: Dask-MPI (seed 004) and IPython
parallel's MPI engines with psum (seed 001), and the two projects' own test
suites with oxmpi's launcher as their `mpirun`/`mpiexec`.

These need dask-mpi, distributed and ipyparallel (scripts/test.sh installs
them, with requests, bokeh and pytest-asyncio for the suites); each case is skipped
with a message when a package is missing. Our own programs talk over the
loopback interface; dask-mpi's suite has no interface option, so its
schedulers bind the host's default address.
"""

import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from mpirun import assert_ok, describe, launcher, run_mpi

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def need(module):
    return pytest.importorskip(module, reason=f"{module} is not installed")


@pytest.mark.parametrize("prog", ["mpiexec", "mpirun"])
def test_dask_mpi_timeseries_seed_004(prog):
    need("dask_mpi")
    need("distributed")
    exe = str(Path(launcher()).with_name(prog))
    res = run_mpi([sys.executable, EXAMPLES / "dask_timeseries.py"], 4, timeout=240, launcher_path=exe)
    assert_ok(res)
    m = re.search(r"timeseries: (\d+) rows, (\d+) names, (\d+) workers", res.stdout)
    assert m, describe(res)
    assert int(m.group(1)) == 2592000 and int(m.group(2)) == 26 and int(m.group(3)) == 2, describe(res)


def test_ipyparallel_mpi_engines_psum_seed_001(tmp_path):
    need("ipyparallel")
    script = tmp_path / "ipp_psum.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        import ipyparallel as ipp
        cluster = ipp.Cluster(n=4, engines="mpi", controller_ip="127.0.0.1", log_level=40)
        rc = cluster.start_and_connect_sync(activate=True)
        try:
            dv = rc[:]
            dv.execute("import sys; sys.path.insert(0, {str(EXAMPLES)!r})", block=True)
            dv.execute("import numpy as np; from psum import psum; from mpi4py import MPI", block=True)
            dv.execute("a = np.random.rand(100); s = psum(a); r = MPI.COMM_WORLD.rank", block=True)
            print("ranks", sorted(dv["r"]))
            print("distinct sums", len(set(dv["s"])))
        finally:
            cluster.stop_cluster_sync()
    """))
    # ipcluster finds oxmpi's mpiexec on PATH, beside this interpreter.
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(launcher()).parent), os.environ.get("PATH", "")]))
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ranks [0, 1, 2, 3]" in p.stdout, p.stdout + p.stderr
    assert "distinct sums 1" in p.stdout, p.stdout + p.stderr


def launcher_env(**extra):
    """This environment with oxmpi's launcher directory first on PATH (so
    the `mpirun`/`mpiexec` that subprocess and shutil.which find are
    oxmpi's; distributed's `popen`, used by dask-mpi's CLI tests, takes them
    from this interpreter's scripts directory, where oxmpi installs them),
    plus `extra`."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(launcher()).parent), os.environ.get("PATH", "")]))
    env.update(extra)
    return env


def run_pytest_suite(args, cwd, timeout, env):
    """Runs pytest in a child process (own session, killed as a group on
    timeout) and returns (returncode, output, counts by outcome)."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs", *args]
    if importlib.util.find_spec("pytest_timeout") is not None:
        cmd.append("--timeout=240")
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        pytest.fail(f"{' '.join(cmd)} timed out after {timeout} s\n{out[-20000:]}", pytrace=False)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # leave no rank or engine behind
        except (ProcessLookupError, PermissionError):
            pass
    summary = out.strip().splitlines()[-1] if out.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)", summary)}
    return p.returncode, out, counts


def test_dask_mpi_own_suite(tmp_path):
    """dask-mpi's own tests (dask_mpi/tests, shipped in its wheel), which
    start `mpirun -np N dask-mpi ...` and `mpirun -n N python script.py`,
    with oxmpi's mpirun. Their `pytest.importorskip("mpi4py")` finds oxmpi's
    mpi4py compatibility package, as the ranks do.

    Several of dask-mpi's cases give four freshly started Python processes
    5 to 20 s to import distributed and form a cluster; on a machine whose
    cores are busy with other work they can miss that deadline. A case that
    fails is run again on its own, up to twice; every case must pass in one
    of its runs (test_stale_sched only where there are 4 cores: see below),
    and the output names the reruns."""
    need("dask_mpi")
    need("distributed")
    need("requests")  # imported by dask_mpi/tests/test_cli.py
    need("bokeh")  # test_cli.py::test_dashboard fetches the dashboard
    import dask_mpi
    from oxmpi.compat import PATH as compat_path

    tests_dir = Path(dask_mpi.__file__).parent / "tests"
    env = launcher_env(PYTHONPATH=os.pathsep.join(filter(None, [compat_path, os.environ.get("PYTHONPATH")])))
    rc, out, counts = run_pytest_suite([f"--rootdir={tests_dir}", str(tests_dir)], tmp_path, 1500, env)
    assert counts.get("passed", 0) > 0, out[-20000:]
    # The one skip expected is the dask_cuda worker class without dask-cuda.
    skips = re.findall(r"^SKIPPED \[\d+\] .*$", out, re.M)
    assert all("dask_cuda" in line for line in skips), out[-20000:]
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
    assert rc == 0 or failed, out[-20000:]
    for attempt in range(2):
        still = []
        for nodeid in failed:
            # pytest names the file relative to the directory it ran in.
            path, _, name = nodeid.partition("::")
            target = f"{(tmp_path / path).resolve()}::{name}"
            rc1, out1, counts1 = run_pytest_suite([f"--rootdir={tests_dir}", target], tmp_path, 300, env)
            print(f"rerun {attempt + 1} of {nodeid}: {'passed' if rc1 == 0 else 'failed'}")
            if rc1 != 0 or counts1.get("passed") != 1:
                still.append(nodeid)
                out += f"\n--- rerun {attempt + 1} of {nodeid} ---\n" + out1[-5000:]
        failed = still
    # test_stale_sched kills mpirun 5 s after starting 4 ranks and expects
    # the scheduler to have rewritten its file by then: 4 processes that
    # each need 2-3 s of CPU to import distributed. On the project's 2-core
    # machine it passed with the load average between 6 and 12, but at 20
    # the file took 10 s under oxmpi's mpirun and 12 s under
    # Open MPI's. With fewer than 4 cores, and only then, its failing all
    # three runs is reported as a warning instead.
    if (os.cpu_count() or 1) < 4:
        slow = [n for n in failed if "::test_stale_sched[" in n]
        if slow:
            warnings.warn(f"dask-mpi's test_stale_sched needs 4 cores to start in 5 s; failed here: {slow}")
        failed = [n for n in failed if n not in slow]
    assert not failed, f"dask-mpi cases that failed three times: {failed}\n{out[-30000:]}"


def test_ipyparallel_own_mpi_suite(tmp_path):
    """IPython parallel's own MPI launcher tests (ipyparallel/tests/test_mpi.py:
    controller and engines under mpiexec, start/stop, restart, output, and
    signals sent to mpiexec reaching the engines) and its launcher tests,
    with oxmpi's mpiexec. Its controller listens on 127.0.0.1."""
    need("ipyparallel")
    need("pytest_asyncio")
    args = ["--pyargs", "ipyparallel.tests.test_mpi", "ipyparallel.tests.test_launcher",
            # ipyparallel's own pytest settings (its pyproject.toml)
            "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"]
    rc, out, counts = run_pytest_suite(["-rA", *args], tmp_path, 900, launcher_env())
    assert rc == 0 and not counts.get("failed"), out[-20000:]
    for name in ["test_start_stop_cluster", "test_signal_engines", "test_restart_engines",
                 "test_get_output", "test_to_from_dict"]:
        assert re.search(rf"^PASSED \S*::{name}$", out, re.M), f"{name} did not pass\n{out[-20000:]}"


def test_ipcluster_start_mpi_engines_and_sigint(tmp_path):
    """`ipcluster start -n 4 --engines=MPI` starts four engines as ranks 0..3
    of one world under oxmpi's mpiexec; SIGINT sent to that mpiexec reaches
    every engine (a running task is interrupted with KeyboardInterrupt), and
    then the engine set ends, as with hydra's and Open MPI's launchers."""
    need("ipyparallel")
    ipcluster = Path(sys.executable).with_name("ipcluster")
    if not os.access(ipcluster, os.X_OK):
        pytest.skip("no ipcluster beside this interpreter")
    cluster_id = "oxmpi-test"
    env = launcher_env(IPYTHONDIR=str(tmp_path / "ipython"))
    log = open(tmp_path / "ipcluster.log", "w+")
    start = [str(ipcluster), "start", "-n", "4", "--engines=MPI", "--ip=127.0.0.1",
             f"--cluster-id={cluster_id}", "--log-level=20"]
    cluster = subprocess.Popen(start, env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    client = tmp_path / "client.py"
    client.write_text(textwrap.dedent(f"""
        import os, time
        import ipyparallel as ipp
        conn = os.path.join(os.environ["IPYTHONDIR"], "profile_default", "security",
                            "ipcontroller-{cluster_id}-client.json")
        deadline = time.monotonic() + 120
        while not os.path.exists(conn):
            assert time.monotonic() < deadline, "the controller never wrote " + conn
            time.sleep(0.2)
        rc = ipp.Client(conn)
        rc.wait_for_engines(4, timeout=180)
        dv = rc[:]

        def where():
            import os
            from mpi4py import MPI
            w = MPI.COMM_WORLD
            return (w.rank, w.size, MPI.get_vendor()[0], os.getppid(), w.allreduce(w.rank))

        info = dv.apply_sync(where)
        print("ranks", sorted(i[0] for i in info), "sizes", {{i[1] for i in info}},
              "vendors", {{i[2] for i in info}}, "sums", {{i[4] for i in info}})
        launchers = {{i[3] for i in info}}
        assert len(launchers) == 1, launchers
        ar = dv.apply_async(time.sleep, 60)
        time.sleep(2)
        os.kill(launchers.pop(), 2)  # SIGINT to mpiexec
        try:
            ar.get(timeout=60)
        except ipp.error.CompositeError as e:
            print("interrupted", sorted(en for en, *_ in e.elist))
        except ipp.error.RemoteError as e:
            print("interrupted", [e.ename])
        else:
            print("not interrupted")
        rc.close()
    """))
    try:
        p = subprocess.run([sys.executable, str(client)], env=env, capture_output=True, text=True, timeout=400)
        out = p.stdout + p.stderr
        log.seek(0)
        out += "\n--- ipcluster ---\n" + log.read()
        assert p.returncode == 0, out
        assert "ranks [0, 1, 2, 3] sizes {4} vendors {'oxmpi'} sums {6}" in p.stdout, out
        assert "interrupted ['KeyboardInterrupt', 'KeyboardInterrupt', 'KeyboardInterrupt', 'KeyboardInterrupt']" in p.stdout, out
    finally:
        subprocess.run([str(ipcluster), "stop", f"--cluster-id={cluster_id}"], env=env,
                       capture_output=True, timeout=120)
        try:
            cluster.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(cluster.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        cluster.wait()
        log.close()
