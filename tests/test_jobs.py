"""Two separate launches on one machine connect: ports and names
(Open_port/Publish_name/Lookup_name/Accept/Connect) and Comm.Join, between
jobs of oxmpi's launcher and a program started without it; a job that
dies is a process failure for the other, not a hang."""

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from mpirun import launcher

JOBS = Path(__file__).resolve().parent / "jobs"


def start(n, *args):
    cmd = [launcher(), "-n", str(n), sys.executable, *map(str, args)] if n else [sys.executable, *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(*procs, timeout=90):
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                try:
                    os.killpg(q.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise AssertionError("a job did not finish: " + " ".join(map(str, p.args)))
        outs.append((p.returncode, out, err))
    return outs


def test_port_and_name_between_two_jobs():
    service = f"oxmpi-test-{uuid.uuid4().hex[:8]}"
    server = start(2, JOBS / "port_server.py", service)
    client = start(3, JOBS / "port_client.py", service)
    (src, sout, serr), (crc, cout, cerr) = finish(server, client)
    assert src == 0 and crc == 0, sout + serr + cout + cerr
    for r in range(2):
        assert f"server {r} merged {r} 5 10" in sout, sout
        assert f"server {r} done" in sout
    assert "client big ok" in cout and "client got {'hello': 'from server'}" in cout, cout
    for r in range(3):
        assert f"client {r} merged {r + 2} 5 10" in cout, cout


def test_join_between_a_job_and_a_singleton(tmp_path):
    port_file = tmp_path / "port"
    listener = start(1, JOBS / "join_peer.py", "listen", port_file)
    connector = start(0, JOBS / "join_peer.py", "connect", port_file)
    (lrc, lout, lerr), (crc, cout, cerr) = finish(listener, connector)
    assert lrc == 0 and crc == 0, lout + lerr + cout + cerr
    assert "listen joined; other says connect pid remote size 1" in lout, lout
    assert "connect joined; other says listen pid remote size 1" in cout, cout


DIES = """
import sys, time
from oxmpi import MPI
service = sys.argv[1]
if sys.argv[2] == "server":
    port = MPI.Open_port()
    MPI.Publish_name(service, port)
    inter = MPI.COMM_WORLD.Accept(port)
    try:
        inter.recv(source=0, tag=5)
    except MPI.Exception as exc:
        print("server sees", exc.Get_error_class() == MPI.ERR_PROC_FAILED, flush=True)
    MPI.Unpublish_name(service, port)
else:
    for _ in range(1200):
        try:
            port = MPI.Lookup_name(service)
            break
        except MPI.Exception:
            time.sleep(0.05)
    inter = MPI.COMM_WORLD.Connect(port)
    raise SystemExit(3)
"""


def test_a_job_that_dies_is_a_process_failure_for_the_other(tmp_path):
    script = tmp_path / "dies.py"
    script.write_text(DIES)
    service = f"oxmpi-test-{uuid.uuid4().hex[:8]}"
    server = start(1, script, service, "server")
    client = start(1, script, service, "client")
    (src, sout, serr), (crc, cout, cerr) = finish(server, client)
    assert crc == 3, cout + cerr
    assert src == 0 and "server sees True" in sout, sout + serr
