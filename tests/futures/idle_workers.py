"""Idle workers sleep: while the client waits, a pool's workers use
(almost) no CPU (they block on a futex, they do not poll)."""

import os
import time

from oxmpi.futures import MPIPoolExecutor


def pid_after(t):
    time.sleep(t)
    return os.getpid()


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    with MPIPoolExecutor(max_workers=2) as ex:
        pids = set(ex.map(pid_after, [0.2] * 4))
        assert len(pids) == 2, pids
        before = {p: cpu_seconds(p) for p in pids}
        client_before = time.process_time()
        time.sleep(2.0)
        used = {p: cpu_seconds(p) - before[p] for p in pids}
        client_used = time.process_time() - client_before
        print("idle CPU seconds per worker over 2 s:", used, "client:", round(client_used, 3), flush=True)
        assert all(u < 0.2 for u in used.values()), used
        assert client_used < 0.2, client_used
    print("OK idle", flush=True)
