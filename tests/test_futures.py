"""oxmpi.futures: the pool of ``python -m oxmpi.futures`` (and
``-m mpi4py.futures``), MPICommExecutor, pools that spawn their workers
(from ranks of a job and from a program started without mpiexec), and the
replicas example (seed 000) in both modes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpirun import assert_ok, describe, run_mpi

HERE = Path(__file__).resolve().parent
API = HERE / "futures" / "api.py"
REPLICAS = HERE.parent / "examples" / "replicas.py"

POOL_CHECKS = ["num_workers", "submit", "map", "distinct workers", "exceptions", "collect compose",
               "map timeout", "get_comm_workers", "initializer", "broken initializer", "shutdown",
               "MPICommExecutor under -m"]


def compat_env():
    """The environment of a program started by hand that says
    ``from mpi4py import ...`` (oxmpi's compatibility package first)."""
    from oxmpi.compat import PATH

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PATH, env.get("PYTHONPATH")) if p)
    return env


def oks(out):
    return [line[3:] for line in out.splitlines() if line.startswith("OK ")]


@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("module", ["oxmpi.futures", "mpi4py.futures"])
def test_pool(n, module):
    res = run_mpi([sys.executable, "-m", module, API, "pool"], n, timeout=120)
    assert_ok(res)
    assert oks(res.stdout) == POOL_CHECKS, describe(res)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_comm_executor(n):
    res = run_mpi([sys.executable, API, "comm"], n, timeout=120)
    assert_ok(res)
    expected = [c for c in POOL_CHECKS[:7]] + ["MPICommExecutor", "after"]
    assert oks(res.stdout) == expected, describe(res)


@pytest.mark.parametrize("n", [1, 2])
def test_pool_spawns_its_workers(n):
    res = run_mpi([sys.executable, API, "spawn"], n, timeout=120)
    assert_ok(res)
    assert oks(res.stdout) == ["spawned"] * n, describe(res)


def test_pool_spawns_from_a_singleton():
    # `python script.py`, no launcher: the runtime starts one to spawn.
    res = subprocess.run([sys.executable, API, "spawn"], capture_output=True, text=True,
                         timeout=120, env=compat_env())
    assert res.returncode == 0, res.stderr
    assert oks(res.stdout) == ["spawned"], res.stdout + res.stderr


def test_replicas_spawned_from_a_singleton():
    # Seed 000's pattern in spawn mode: the client spawns three workers.
    env = compat_env()
    env["MPI4PY_FUTURES_MAX_WORKERS"] = "3"
    res = subprocess.run([sys.executable, REPLICAS, "6", "4000"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith("replica ")]
    assert len(lines) == 6, res.stdout + res.stderr
    for seed, line in enumerate(lines):
        assert line.startswith(f"replica {seed}: pi ~ 3."), line
        # Ranks of the spawned workers' own COMM_WORLD.
        assert int(line.rsplit(" ", 1)[1].rstrip(")")) in (0, 1, 2), line
    assert "6 replicas on 3 workers" in res.stdout, res.stdout


@pytest.mark.parametrize("module", ["oxmpi.futures", "mpi4py.futures"])
def test_replicas(module):
    res = run_mpi([sys.executable, "-m", module, REPLICAS, "6", "4000"], 4, timeout=120,
                  launcher_args=["--map-by", "slot:pe=4"])
    assert_ok(res)
    lines = [line for line in res.stdout.splitlines() if line.startswith("replica ")]
    assert len(lines) == 6, describe(res)
    for seed, line in enumerate(lines):
        assert line.startswith(f"replica {seed}: pi ~ 3.")
        rank = int(line.rsplit(" ", 1)[1].rstrip(")"))
        assert rank in (1, 2, 3), describe(res)
    assert "6 replicas on 3 workers" in res.stdout, describe(res)


def test_task_exception_reaches_client_and_job_ends():
    code = ("from mpi4py.futures import MPIPoolExecutor\n"
            "def f(x): raise ValueError('boom')\n"
            "if __name__ == '__main__':\n"
            "    with MPIPoolExecutor() as ex:\n"
            "        ex.submit(f, 1).result()\n")
    script = HERE / "futures" / "raises.py"
    script.write_text(code)
    try:
        res = run_mpi([sys.executable, "-m", "oxmpi.futures", script], 3, timeout=60)
    finally:
        script.unlink()
    assert res.returncode != 0, describe(res)
    assert "ValueError: boom" in res.stderr, describe(res)


WORKER_DEATH = HERE / "futures" / "worker_death.py"
DEATH_CHECKS = ["first death", "two workers left", "all dead", "broken", "shutdown"]


@pytest.mark.parametrize("mode", ["spawned", "singleton", "oxmpi.futures", "mpi4py.futures"])
def test_dead_workers_fail_their_futures(mode):
    if mode == "singleton":
        res = subprocess.run([sys.executable, WORKER_DEATH], capture_output=True, text=True,
                             timeout=120, env=compat_env())
    elif mode == "spawned":
        res = run_mpi([sys.executable, WORKER_DEATH], 1, timeout=120)
    else:
        res = run_mpi([sys.executable, "-m", mode, WORKER_DEATH], 4, timeout=120)
    assert oks(res.stdout) == DEATH_CHECKS, describe(res)
    # Workers of the first world are ranks of the job: their deaths are its
    # exit status (the first one's); spawned workers' are not.
    assert res.returncode == (3 if mode.endswith(".futures") else 0), describe(res)


SERVICE_CLIENT = HERE / "futures" / "service_client.py"


@pytest.mark.parametrize("form", ["name", "address"])
def test_server_job_serves_a_client_job(form):
    """mpi4py's service mode: ``mpiexec -n 3 python -m mpi4py.futures.server``
    as a job of its own; a client in another launch connects by name (or
    by host:port) with MPIPoolExecutor(service=...)."""
    import socket
    import time
    import uuid

    from mpirun import launcher

    if form == "name":
        service = f"oxmpi-test-{uuid.uuid4().hex[:8]}"
        server_args, client_arg = ["--service", service], service
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server_args, client_arg = ["--bind", "127.0.0.1", "--port", str(port)], f"127.0.0.1:{port}"
    server = subprocess.Popen([launcher(), "-n", "3", sys.executable, "-m", "mpi4py.futures.server",
                               *server_args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        for attempt in range(100):
            time.sleep(0.1)
            res = subprocess.run([sys.executable, SERVICE_CLIENT, client_arg], capture_output=True,
                                 text=True, timeout=90, env=compat_env())
            if res.returncode == 0 or "cannot connect" not in res.stderr + res.stdout:
                break
        assert res.returncode == 0, res.stdout + res.stderr
        assert "workers 3" in res.stdout and "pids 3 comm size 3" in res.stdout, res.stdout
        out, err = server.communicate(timeout=60)
        assert server.returncode == 0, out + err
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 9)


def test_idle_workers_use_no_cpu():
    res = run_mpi([sys.executable, HERE / "futures" / "idle_workers.py"], 1, timeout=120)
    assert_ok(res)
    assert "OK idle" in res.stdout, describe(res)
