"""mpi4py's own test suite run on oxmpi, beside mpi4py on the mpich wheel.

    python scripts/conformance.py [--np 1 2 3 5] [--only oxmpi|mpich] [-i REGEX]
                                  [--file-timeout S] [--parallel K]
                                  [--save F.json] [--load F.json] [--render-only]
                                  [--out docs/conformance.md]

Downloads the mpi4py sdist of the API level oxmpi follows (4.1.x) with pip,
runs its test/main.py under each launcher at each world size through the
compatibility package (oxmpi) or the real mpi4py (reference), and writes a
table per test file: tests passed, failed, errored and skipped (counted on
rank 0). The tests are never edited. Files that test how mpi4py itself is
built are excluded.

Each (implementation, size) is one job; `--parallel` jobs run at a time
(the counts do not depend on it, only the wall time). Rank 0's output is
watched as it is written: a file that runs longer than `--file-timeout`
seconds is stopped, recorded as `timeout`, and the files after it run in a
fresh job, so one stalled file costs at most that long. MPICH's ranks get
the CVARs that make a waiting rank sleep instead of spinning (see
MPICH_YIELD), without which they stall for minutes on a machine with fewer
cores than ranks.

The table goes below the marker line in `--out`; what is above it is kept.
"""

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("OXMPI_CONFORMANCE_DIR", ROOT / ".conformance"))
PEERS = Path(os.environ.get("OXMPI_PEERS", "/tmp/oxmpi-peers"))
MPI4PY_SPEC = "mpi4py>=4.1,<4.2"
EXCLUDED = ["test_package", "test_mpiapi", "test_mpiabi", "test_doc", "test_cffi", "test_ctypes"]
START = re.compile(r"^(?P<name>\w+) \((?P<id>(?P<mod>test_\w+)\.[\w.]+)\)")
# A file that cannot be imported is one test, unittest.loader._FailedTest.<file>.
FAILED_IMPORT = re.compile(r"^(?P<mod>test_\w+) \(unittest\.loader\._FailedTest\.(?P<id>(?P=mod))\)")
OUTCOMES = ("ok", "FAIL", "ERROR", "skipped", "expected failure", "unexpected success")


def fetch_tests():
    """The mpi4py sdist's test/ directory (downloaded once)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    found = sorted(CACHE.glob("mpi4py-4.1.*/test/main.py"))
    if found:
        return found[-1].parent
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    MPI4PY_SPEC, "-d", str(CACHE)], check=True)
    sdist = sorted(CACHE.glob("mpi4py-4.1.*.tar.gz"))[-1]
    with tarfile.open(sdist) as tf:
        members = [m for m in tf.getmembers() if "/test/" in m.name or m.name.endswith("/test")]
        tf.extractall(CACHE, members=members, filter="data")
    return sorted(CACHE.glob("mpi4py-4.1.*/test/main.py"))[-1].parent


def launchers():
    """impl -> how to start it: launcher argv builder, python, extra environment.

    Rank 0's output is read on its own: oxmpi's launcher tags whole lines
    (`-l`), hydra tags each write, so for MPICH each rank writes to its own
    files instead (`-outfile-pattern`), which keeps rank 0's lines intact.
    """
    here = Path(sys.executable).parent
    ox = shutil.which("mpiexec", path=str(here)) or shutil.which("mpiexec")
    out = {"oxmpi": (lambda d: [ox, "-l"], sys.executable, {})}
    mp = PEERS / "mpich" / "bin"
    if (mp / "mpiexec").exists():
        out["mpich"] = (lambda d: [str(mp / "mpiexec"), "-outfile-pattern", str(d / "out.%r"),
                                   "-errfile-pattern", str(d / "err.%r")],
                        str(mp / "python"), MPICH_YIELD)
    return out


# MPICH's ranks poll for progress without pause; with more ranks than the
# machine's 2 cores, a waiting rank spends its time slice polling while the
# rank it waits for is not scheduled, and a file can stall for minutes.
# These documented CVARs make a rank that made no progress for a while
# call usleep(1), giving the core away.
MPICH_YIELD = {
    "MPIR_CVAR_CH4_PROGRESS_THROTTLE": "1",
    "MPIR_CVAR_CH4_PROGRESS_THROTTLE_NO_PROGRESS_COUNT": "64",
}


def rank0_text(impl, log, outdir):
    """What rank 0 wrote, one line per line."""
    if impl == "mpich":
        parts = []
        for name in ("out.0", "err.0"):
            f = outdir / name
            if f.exists():
                parts.append(f.read_text(errors="replace"))
        return "\n".join(parts)
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(ln[4:] for ln in text.splitlines() if ln.startswith("[0] "))


def parse(text):
    """Per test: its outcome, from rank 0's verbose unittest output (in the
    order they finished); and the module of a test that started without
    finishing (where a run stalled)."""
    results = {}
    current = None
    for ln in text.splitlines():
        m = START.match(ln) or FAILED_IMPORT.match(ln)
        if m:
            current = m.group("id")
        if current and " ... " in ln:
            outcome = ln.rsplit(" ... ", 1)[1]
            for o in OUTCOMES:
                if outcome.startswith(o):
                    results[current] = o
                    current = None
                    break
    pending = current.split(".")[0] if current else None
    return results, pending


def run_once(impl, spec, n, testdir, include, exclude, file_timeout, workdir):
    """One launch of main.py over the files not excluded. Watches rank 0's
    output; a file that runs longer than file_timeout is stopped. Returns
    (results, module that timed out or None, {module: seconds})."""
    launcher, python, env = spec
    workdir.mkdir(parents=True, exist_ok=True)
    for f in workdir.iterdir():
        f.unlink()
    log = workdir / "log"
    cmd = launcher(workdir) + ["-n", str(n), python, "main.py", "-v"]
    for x in exclude:
        cmd += ["-e", x]
    for i in include:
        cmd += ["-i", i]
    e = dict(os.environ, **env)
    seconds = {}
    module, since = None, time.time()
    with open(log, "w") as logf:
        p = subprocess.Popen(cmd, cwd=testdir, env=e, stdout=logf, stderr=subprocess.STDOUT,
                             start_new_session=True)
        timed_out = None
        while True:
            try:
                p.wait(timeout=1)
                done = True
            except subprocess.TimeoutExpired:
                done = False
            results, pending = parse(rank0_text(impl, log, workdir))
            # The module now running: the one of the test that started last.
            now_mod = pending or (next(reversed(results)).split(".")[0] if results else None)
            now = time.time()
            if now_mod != module:
                if module is not None:
                    seconds[module] = seconds.get(module, 0) + now - since
                module, since = now_mod, now
            if done:
                break
            if module is not None and now - since > file_timeout:
                timed_out = module
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                results, pending = parse(rank0_text(impl, log, workdir))
                break
    if module is not None and timed_out is None:
        seconds[module] = seconds.get(module, 0) + time.time() - since
    if timed_out:
        # Outcomes of the stopped file are not kept: it is reported as a whole.
        results = {t: r for t, r in results.items() if t.split(".")[0] != timed_out}
        seconds[timed_out] = file_timeout
    return results, timed_out, seconds


def run_suite(impl, spec, n, testdir, include, file_timeout, workdir):
    """Runs the suite at size n; returns {module: counts}, the modules that
    timed out, and {module: seconds}."""
    counts = defaultdict(lambda: defaultdict(int))
    timeouts, seconds = [], {}
    # main.py matches these against file names (test_x.py): anchored, so
    # that excluding test_cco_buf keeps test_cco_buf_inter.
    exclude = [rf"^{m}\.py$" for m in EXCLUDED]
    t0 = time.time()
    while True:
        results, timed_out, secs = run_once(impl, spec, n, testdir, include, exclude,
                                            file_timeout, workdir)
        seconds.update(secs)
        for tid, res in results.items():
            c = counts[tid.split(".")[0]]
            c["run"] += 1
            key = {"ok": "passed", "FAIL": "failed", "ERROR": "errors", "skipped": "skipped",
                   "expected failure": "passed", "unexpected success": "failed"}[res]
            c[key] += 1
        if not timed_out:
            break
        # Run the files not reached yet: drop what finished and what timed out.
        timeouts.append(timed_out)
        exclude += [rf"^{m}\.py$" for m in sorted({timed_out} | {t.split(".")[0] for t in results})]
    print(f"  {impl} n={n}: {sum(c['run'] for c in counts.values())} tests in "
          f"{time.time() - t0:.0f}s" + (f", timed out: {' '.join(timeouts)}" if timeouts else ""),
          file=sys.stderr, flush=True)
    return counts, timeouts, seconds


MARKER = "<!-- generated by scripts/conformance.py: everything below is rewritten -->"


# The reference counts, measured by `--reference run --save` and kept.
REFERENCE = ROOT / "docs" / "conformance-reference.json"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--np", type=int, nargs="+", default=[1, 2, 3, 5])
    ap.add_argument("--only", choices=["oxmpi", "mpich"])
    ap.add_argument("-i", dest="include", action="append", default=[], help="test module regex")
    ap.add_argument("--file-timeout", type=int, default=150,
                    help="seconds one test file may run before it is stopped and recorded as 'timeout'")
    ap.add_argument("--parallel", type=int, default=2,
                    help="suite runs (implementation, size) at a time; each is its own job")
    ap.add_argument("--out", default=str(ROOT / "docs" / "conformance.md"))
    ap.add_argument("--save", help="also save the raw counts as JSON here")
    ap.add_argument("--render-only", action="store_true",
                    help="run nothing: write the table from --load files")
    ap.add_argument("--load", action="append", default=[],
                    help="include raw counts saved by an earlier --save (e.g. the reference)")
    ap.add_argument("--reference", choices=["saved", "run"], default="saved",
                    help="'saved' (default): the mpich reference comes from "
                         "docs/conformance-reference.json (mpi4py on the mpich wheel does not "
                         "change with oxmpi, and re-measuring it costs most of the run: MPICH "
                         "busy-polls on oversubscribed cores); 'run': measure it again")
    a = ap.parse_args()
    if a.reference == "saved" and a.only is None and not a.render_only and REFERENCE.exists():
        a.only = "oxmpi"
        a.load.insert(0, str(REFERENCE))
    testdir = fetch_tests()
    table, timeouts, seconds = {}, {}, {}  # (impl, n) -> ...
    t0 = time.time()
    jobs = [(impl, spec, n) for impl, spec in launchers().items()
            if not a.render_only and not (a.only and impl != a.only) for n in a.np]
    # Biggest first, so that the last runs to finish are short ones.
    jobs.sort(key=lambda j: -j[2])
    scratch = Path(tempfile.mkdtemp(prefix="oxmpi-conformance-"))

    def job(j):
        impl, spec, n = j
        return (impl, n), run_suite(impl, spec, n, testdir, a.include, a.file_timeout,
                                    scratch / f"{impl}-{n}")

    with concurrent.futures.ThreadPoolExecutor(max(1, a.parallel)) as pool:
        for key, (counts, tos, secs) in pool.map(job, jobs):
            table[key], timeouts[key], seconds[key] = counts, tos, secs
    shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.time() - t0
    if jobs:
        print(f"all runs: {elapsed:.0f}s", file=sys.stderr)
        slow = defaultdict(float)
        for secs in seconds.values():
            for m, x in secs.items():
                slow[m] += x
        print("slowest files (seconds, all runs together): " + ", ".join(
            f"{m} {x:.0f}" for m, x in sorted(slow.items(), key=lambda kv: -kv[1])[:12]), file=sys.stderr)

    if a.save:
        Path(a.save).write_text(json.dumps(
            {f"{i}|{n}": {"counts": table[i, n], "timeout": timeouts[i, n], "seconds": seconds[i, n]}
             for (i, n) in table} | {"elapsed": elapsed}, indent=1))
    loaded_elapsed = []
    for path in a.load:
        for key, v in json.loads(Path(path).read_text()).items():
            if key == "elapsed" and not jobs:
                # Rendering saved runs: report the longest of them.
                loaded_elapsed.append(v)
            if "|" not in key:
                continue
            i, n = key.split("|")
            # Files this run did not cover come from the saved run.
            key = (i, int(n))
            ran = set(table.get(key, {})) | set(timeouts.get(key, []))
            table.setdefault(key, {})
            timeouts.setdefault(key, [])
            seconds.setdefault(key, {})
            for m, c in v["counts"].items():
                if m not in ran:
                    table[key][m] = c
            timeouts[key] += [m for m in v.get("timeout", v.get("hung", [])) if m not in ran]
            for m, x in v.get("seconds", {}).items():
                seconds[key].setdefault(m, x)
    if loaded_elapsed:
        elapsed = max(loaded_elapsed)
    mods = sorted({m for v in table.values() for m in v} | {m for v in timeouts.values() for m in v})
    impls = sorted({k[0] for k in table}, key=lambda s: s != "oxmpi")
    nps = sorted({k[1] for k in table})

    def cell(impl, n, mod):
        if mod in timeouts.get((impl, n), []):
            return "timeout"
        c = table.get((impl, n), {}).get(mod)
        if not c:
            return "-"
        return "/".join(str(c.get(k, 0)) for k in ("passed", "failed", "errors", "skipped"))

    lines = [
        MARKER,
        "",
        f"mpi4py test suite {testdir.parent.name}. Each cell: passed/failed/errors/skipped, "
        "counted on rank 0; `-`: the file has no tests there; `timeout`: the file ran past "
        f"the per-file limit ({a.file_timeout} s) and was stopped, and the files after it ran "
        "in a fresh job."
        + (f" The run took {elapsed:.0f} s end to end." if elapsed > 1 else ""),
        "",
        "| test file | " + " | ".join(f"{i} n={n}" for i in impls for n in nps) + " |",
        "|---|" + "---|" * (len(impls) * len(nps)),
    ]
    for mod in mods:
        lines.append(f"| {mod} | " + " | ".join(cell(i, n, mod) for i in impls for n in nps) + " |")
    totals = []
    for i in impls:
        for n in nps:
            c = defaultdict(int)
            for v in table.get((i, n), {}).values():
                for k, x in v.items():
                    c[k] += x
            totals.append("/".join(str(c.get(k, 0)) for k in ("passed", "failed", "errors", "skipped")))
    lines.append("| **total** | " + " | ".join(totals) + " |")
    for i in impls:
        per_file = defaultdict(float)
        for (j, n), secs in seconds.items():
            if j == i:
                for m, x in secs.items():
                    per_file[m] += x
        if per_file:
            top = sorted(per_file.items(), key=lambda kv: -kv[1])[:8]
            lines += ["", f"Slowest files on {i} (seconds, all sizes together, of "
                      f"{sum(per_file.values()):.0f}): " + ", ".join(f"{m} {x:.0f}" for m, x in top) + "."]
    out = Path(a.out)
    head = out.read_text().split(MARKER)[0] if out.exists() else "# Conformance\n\n"
    out.write_text(head + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
