"""Seed 004's scaling table: the Monte Carlo pi program at 1, 2 and 4 ranks.

Runs ``mpiexec -n K python examples/compute_pi.py N`` for each K (the same N
points in total, split over the ranks: strong scaling) and prints one row
per run:

    python examples/pi_scaling.py                      # 20 million points; 1, 2, 4 ranks
    python examples/pi_scaling.py --points 1e8 --ranks 1,2,4,8

Columns: ``ranks``; ``job s``, the wall time of the whole job as seen from
here (launcher, interpreter start-up and imports included); ``compute s``,
the time rank 0 measured from the barrier before the throws to the end of
the reduction; ``speedup`` and ``efficiency``, from ``compute s`` relative
to the first row (speedup / ranks); the estimate of pi and its error.
Each rank draws from its own seeded generator, so the estimate changes a
little with the number of ranks.

Speedup needs a free core per rank: on a machine with fewer cores than
ranks, or one busy with other work, the extra ranks take turns and the
efficiency drops accordingly.
"""

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

PI_PROGRAM = Path(__file__).resolve().with_name("compute_pi.py")
PI_LINE = re.compile(r"^pi ~= (\d+\.\d+), error (\S+), (\d+) points on (\d+) ranks in (\d+\.\d+) s$", re.M)


def find_mpiexec():
    """The launcher installed beside this interpreter, else the first on PATH."""
    here = Path(sys.executable).with_name("mpiexec")
    if os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("mpiexec")
    if not found:
        sys.exit("pi_scaling.py: no mpiexec found (pip install oxmpi, or pass --mpiexec)")
    return found


def run_one(mpiexec, ranks, points, timeout):
    cmd = [mpiexec, "-n", str(ranks), sys.executable, str(PI_PROGRAM), str(points)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        # subprocess.run has killed the launcher; the launcher's ranks die
        # with it (oxmpi starts them with a parent-death signal).
        sys.exit(f"pi_scaling.py: {' '.join(cmd)} took more than {timeout} s")
    wall = time.perf_counter() - t0
    found = PI_LINE.findall(p.stdout)
    if p.returncode != 0 or len(found) != 1:
        sys.exit(
            f"pi_scaling.py: {' '.join(cmd)} failed (exit status {p.returncode})\n"
            f"--- stdout ---\n{p.stdout}--- stderr ---\n{p.stderr}"
        )
    est, err, npoints, nranks, compute = found[0]
    if int(npoints) != points or int(nranks) != ranks:
        sys.exit(f"pi_scaling.py: expected {points} points on {ranks} ranks, got: {found[0]}")
    return {"ranks": ranks, "wall": wall, "compute": float(compute), "pi": float(est), "error": float(err)}


def parse_ranks(text):
    try:
        ranks = [int(r) for r in text.split(",") if r.strip()]
    except ValueError:
        ranks = []
    if not ranks or min(ranks) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of rank counts >= 1")
    return ranks


def parse_points(text):
    try:
        n = int(float(text))
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of points >= 1")
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description="Strong-scaling table of examples/compute_pi.py.")
    ap.add_argument("--points", type=parse_points, default=20_000_000, help="points in total (default 2e7)")
    ap.add_argument("--ranks", type=parse_ranks, default=[1, 2, 4], help="rank counts (default 1,2,4)")
    ap.add_argument("--mpiexec", default=None, help="launcher (default: the one beside this python)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds allowed per run (default 300)")
    args = ap.parse_args(argv)
    mpiexec = args.mpiexec or find_mpiexec()

    rows = [run_one(mpiexec, k, args.points, args.timeout) for k in args.ranks]
    base = rows[0]
    print(f"compute_pi.py, {args.points} points, {os.cpu_count()} cores visible, launcher {mpiexec}")
    print(f"{'ranks':>5}  {'job s':>7}  {'compute s':>9}  {'speedup':>7}  {'efficiency':>10}  {'pi estimate':>11}  {'error':>8}")
    for r in rows:
        # Speedup against the first row, scaled by its rank count so that a
        # table starting at 2 ranks still reads as speedup over one.
        speedup = base["compute"] / r["compute"] * base["ranks"] if r["compute"] > 0 else math.inf
        efficiency = speedup / r["ranks"]
        print(
            f"{r['ranks']:>5}  {r['wall']:>7.3f}  {r['compute']:>9.3f}  {speedup:>7.2f}  "
            f"{efficiency:>10.0%}  {r['pi']:>11.6f}  {r['error']:>8.1e}"
        )


if __name__ == "__main__":
    main()
