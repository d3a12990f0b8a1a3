"""Instructions per MPI operation, counted by valgrind's callgrind.

Wall-clock micro-benchmarks mean little on a busy machine; instruction
counts do not depend on the load. Each operation runs N1 and then N2
times, every rank under callgrind, and the difference of the two runs'
totals divided by N2 - N1 is the count per operation, per rank, with
start-up, imports and finalisation cancelled out.

    python benches/icount.py [--impl oxmpi|mpich|openmpi] [--np 2] OP...
    python benches/icount.py --list

Waiting is counted too: for oxmpi, OXMPI_SPIN=0 (set here) makes a waiter
sleep on its doorbell instead of polling, so its count is work; MPICH and
Open MPI poll while they wait, so their counts for a rank that waits
include polling (compare them at --np 1, the self-send rows, or compare
the busier rank). Use --keep DIR to keep the callgrind files for
callgrind_annotate.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PEERS = Path(os.environ.get("OXMPI_PEERS", "/tmp/oxmpi-peers"))

# ------------------------------------------------------------ the worker


def _worker(op, n):
    import importlib

    MPI = importlib.import_module(os.environ.get("MPI_MODULE", "mpi4py") + ".MPI")
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    peer = 1 - rank if size >= 2 else 0

    def pingpong_buf(nbytes):
        import numpy as np

        buf = np.zeros(nbytes, dtype="u1")
        if size == 1:
            for _ in range(n):
                comm.Send(buf, 0, 7)
                comm.Recv(buf, 0, 7)
        elif rank == 0:
            for _ in range(n):
                comm.Send(buf, 1, 7)
                comm.Recv(buf, 1, 7)
        elif rank == 1:
            for _ in range(n):
                comm.Recv(buf, 0, 7)
                comm.Send(buf, 0, 7)

    def pingpong_obj(obj):
        if size == 1:
            for _ in range(n):
                comm.send(obj, 0, 7)
                comm.recv(source=0, tag=7)
        elif rank == 0:
            for _ in range(n):
                comm.send(obj, 1, 7)
                comm.recv(source=1, tag=7)
        elif rank == 1:
            for _ in range(n):
                o = comm.recv(source=0, tag=7)
                comm.send(o, 0, 7)

    def allreduce(nbytes):
        import numpy as np

        a = np.ones(nbytes // 8, dtype="f8")
        b = np.empty_like(a)
        for _ in range(n):
            comm.Allreduce(a, b, op=MPI.SUM)

    def bcast(nbytes):
        import numpy as np

        a = np.ones(nbytes, dtype="u1")
        for _ in range(n):
            comm.Bcast(a, root=0)

    def barrier():
        for _ in range(n):
            comm.Barrier()

    def obj_allreduce():
        for _ in range(n):
            comm.allreduce(rank, op=MPI.SUM)

    def dumps_loads(obj):
        # The serialisation alone (no communication): pickle.dumps/loads as
        # mpi4py's default MPI.pickle does them.
        p = MPI.pickle
        for _ in range(n):
            p.loads(p.dumps(obj))

    small = {"payload": bytes(8), "tag": "x"}
    kib = {"payload": bytes(1024), "tag": "x"}
    ops = {
        "latency8": lambda: pingpong_buf(8),
        "latency1k": lambda: pingpong_buf(1024),
        "pickle8": lambda: pingpong_obj(small),
        "pickle1k": lambda: pingpong_obj(kib),
        "pickle_int": lambda: pingpong_obj(12345),
        "pickle_list": lambda: pingpong_obj([1, 2.5, "three", (4, None), {"k": True}]),
        "allreduce8": lambda: allreduce(8),
        "allreduce8k": lambda: allreduce(8192),
        "obj_allreduce": obj_allreduce,
        "barrier": barrier,
        "bcast8": lambda: bcast(8),
        "bcast1m": lambda: bcast(1 << 20),
        "dumps_loads8": lambda: dumps_loads(small),
    }
    if op == "list":
        print(" ".join(ops))
        return
    comm.Barrier()
    ops[op]()
    comm.Barrier()


# ------------------------------------------------------------ the driver


def impls(site=None):
    me = Path(sys.executable).parent
    ox = shutil.which("mpiexec", path=str(me)) or shutil.which("mpiexec")
    out = {"oxmpi": ([ox], sys.executable, {"MPI_MODULE": "oxmpi", "OXMPI_SPIN": "0"})}
    if site:
        # Another build of oxmpi, installed with `pip install --target SITE`.
        start = f"import sys; sys.argv[0] = 'mpiexec'; from oxmpi._launcher import mpiexec; mpiexec()"
        out["oxmpi"] = ([sys.executable, "-c", start], sys.executable,
                        dict(out["oxmpi"][2], PYTHONPATH=site))
    out["mpich"] = ([str(PEERS / "mpich/bin/mpiexec")], str(PEERS / "mpich/bin/python"), {})
    out["openmpi"] = (
        [str(PEERS / "ompi/bin/mpiexec"), "--oversubscribe"],
        str(PEERS / "ompi/bin/python"),
        {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"},
    )
    return out


TOTALS = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.M)
FUNC_LINE = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+(?:\S*/)?([^/\s][^\[]*?)(?: \[.*\])?$")


def per_function(path, inclusive):
    """{function: instructions} of one callgrind file."""
    args = ["callgrind_annotate", "--auto=no", "--threshold=100"] + (["--inclusive=yes"] if inclusive else []) + [path]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    costs = {}
    for line in out.split("PROGRAM TOTALS", 1)[-1].splitlines():
        m = FUNC_LINE.match(line)
        if m:
            fn = m.group(2).strip()
            costs[fn] = costs.get(fn, 0) + int(m.group(1).replace(",", ""))
    return costs


def top_functions(lo_path, hi_path, ops, k, inclusive):
    lo, hi = per_function(lo_path, inclusive), per_function(hi_path, inclusive)
    diff = {f: (hi.get(f, 0) - lo.get(f, 0)) / ops for f in set(lo) | set(hi)}
    for f, c in sorted(diff.items(), key=lambda x: -x[1])[:k]:
        print(f"    {c:9,.0f}  {f[:150]}")


def count(impl, np_, op, n, outdir, timeout, site=None):
    launcher, python, env = impls(site)[impl]
    pattern = os.path.join(outdir, f"{op}.{n}.%q{{PMI_RANK}}.out")
    cmd = launcher + ["-n", str(np_), "valgrind", "--tool=callgrind", "--quiet",
                      f"--callgrind-out-file={pattern}", python, __file__,
                      "--worker", op, str(n)]
    # NumPy's BLAS threads spin for a while after import: keep them out
    # of the count.
    e = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **env)
    subprocess.run(cmd, env=e, check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL)
    per_rank = []
    for r in range(np_):
        data = Path(pattern.replace("%q{PMI_RANK}", str(r))).read_bytes()
        per_rank.append(int(TOTALS.search(data).group(1)))
    return per_rank


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", default="oxmpi", choices=["oxmpi", "mpich", "openmpi"])
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--n1", type=int, default=200)
    ap.add_argument("--n2", type=int, default=1200)
    ap.add_argument("--keep", help="keep the callgrind files in this directory")
    ap.add_argument("--site", help="oxmpi from this directory (pip install --target) instead")
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--worker", nargs=2, metavar=("OP", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--top", type=int, default=0, help="also list the K costliest functions per operation")
    ap.add_argument("--inclusive", action="store_true", help="--top by inclusive cost")
    ap.add_argument("ops", nargs="*")
    a = ap.parse_args(argv)
    if a.worker:
        _worker(a.worker[0], int(a.worker[1]))
        return
    if a.list:
        os.environ.setdefault("MPI_MODULE", "oxmpi")
        _worker("list", 0)
        return
    outdir = a.keep or tempfile.mkdtemp(prefix="icount-")
    os.makedirs(outdir, exist_ok=True)
    for op in a.ops:
        lo = count(a.impl, a.np, op, a.n1, outdir, a.timeout, a.site)
        hi = count(a.impl, a.np, op, a.n2, outdir, a.timeout, a.site)
        per = [(h - l) / (a.n2 - a.n1) for l, h in zip(lo, hi)]
        print(f"{a.impl} np={a.np} {op}: " +
              " ".join(f"rank{r}={p:,.0f}" for r, p in enumerate(per)) +
              " instructions per operation", flush=True)
        if a.top:
            for r in range(a.np):
                print(f"  rank {r}:")
                top_functions(os.path.join(outdir, f"{op}.{a.n1}.{r}.out"),
                              os.path.join(outdir, f"{op}.{a.n2}.{r}.out"),
                              a.n2 - a.n1, a.top, a.inclusive)
    if not a.keep:
        shutil.rmtree(outdir, ignore_errors=True)


if __name__ == "__main__":
    main()
