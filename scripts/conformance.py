"""mpi4py's own test suite run on oxmpi, beside mpi4py on the mpich wheel.

    python scripts/conformance.py [--np 1 2 3 5] [--only oxmpi|mpich] [-i REGEX]
                                  [--out docs/conformance.md]

Downloads the mpi4py sdist of the API level oxmpi follows (4.1.x) with pip,
runs its test/main.py under each launcher at each world size through the
compatibility package (oxmpi) or the real mpi4py (reference), and writes a
table per test file: tests run, passed, failed, errored and skipped (counted
on rank 0). The tests are never edited. Files that test how mpi4py itself is
built are excluded. A run that hangs is stopped at its time limit, the file
that hung is reported as such, and the remaining files are run again.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("OXMPI_CONFORMANCE_DIR", ROOT / ".conformance"))
PEERS = Path(os.environ.get("OXMPI_PEERS", "/tmp/oxmpi-peers"))
MPI4PY_SPEC = "mpi4py>=4.1,<4.2"
EXCLUDED = ["test_package", "test_mpiapi", "test_mpiabi", "test_doc", "test_cffi", "test_ctypes"]
START = re.compile(r"^(?P<name>\w+) \((?P<id>(?P<mod>test_\w+)\.[\w.]+)\)")
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
    here = Path(sys.executable).parent
    ox = shutil.which("mpiexec", path=str(here)) or shutil.which("mpiexec")
    out = {"oxmpi": ([ox, "-l"], sys.executable, {})}
    mp = PEERS / "mpich" / "bin"
    if (mp / "mpiexec").exists():
        out["mpich"] = ([str(mp / "mpiexec"), "-prepend-rank"], str(mp / "python"), {})
    return out


def parse(text):
    """Per test: its outcome, from rank 0's verbose unittest output; and the
    module of a test that started without finishing (where a run hung)."""
    results = {}
    current = None
    for ln in text.splitlines():
        if not ln.startswith("[0] "):
            continue
        # hydra tags every write, not every line: drop the repeats.
        ln = ln[4:].replace("[0] ", "").replace("[0]", "")
        m = START.match(ln)
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


def run_suite(impl, launcher, python, env, n, testdir, include, timeout):
    """Runs the suite at size n; returns {module: counts} and hung modules."""
    counts = defaultdict(lambda: defaultdict(int))
    hung = []
    exclude = list(EXCLUDED)
    while True:
        cmd = launcher + ["-n", str(n), python, "main.py", "-v"]
        for x in exclude:
            cmd += ["-e", x]
        for i in include:
            cmd += ["-i", i]
        e = dict(os.environ, **env)
        e.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        t0 = time.time()
        try:
            p = subprocess.run(cmd, cwd=testdir, env=e, capture_output=True, text=True,
                               timeout=timeout, start_new_session=True)
            out, timed_out = p.stdout + p.stderr, False
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
            timed_out = True
        results, pending = parse(out)
        for tid, res in results.items():
            mod = tid.split(".")[0]
            c = counts[mod]
            c["run"] += 1
            key = {"ok": "passed", "FAIL": "failed", "ERROR": "errors", "skipped": "skipped",
                   "expected failure": "passed", "unexpected success": "failed"}[res]
            c[key] += 1
        print(f"  {impl} n={n}: {len(results)} results in {time.time() - t0:.0f}s"
              + (f", hung in {pending}" if timed_out else ""), file=sys.stderr, flush=True)
        if not timed_out:
            return counts, hung
        # Drop what finished and what hung; run the rest again.
        if pending is None or pending in hung:
            return counts, hung
        hung.append(pending)
        exclude += [pending] + sorted({tid.split(".")[0] for tid in results})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--np", type=int, nargs="+", default=[1, 2, 3, 5])
    ap.add_argument("--only", choices=["oxmpi", "mpich"])
    ap.add_argument("-i", dest="include", action="append", default=[], help="test module regex")
    ap.add_argument("--timeout", type=int, default=420, help="seconds per suite run")
    ap.add_argument("--out", default=str(ROOT / "docs" / "conformance.md"))
    ap.add_argument("--save", help="also save the raw counts as JSON here")
    ap.add_argument("--render-only", action="store_true",
                    help="run nothing: write the table from --load files")
    ap.add_argument("--load", action="append", default=[],
                    help="include raw counts saved by an earlier --save (e.g. the reference)")
    a = ap.parse_args()
    testdir = fetch_tests()
    table = {}  # (impl, n) -> {module: counts}
    hung = {}
    t0 = time.time()
    for impl, (launcher, python, env) in launchers().items():
        if a.render_only or (a.only and impl != a.only):
            continue
        for n in a.np:
            table[impl, n], hung[impl, n] = run_suite(impl, launcher, python, env, n, testdir, a.include, a.timeout)
    import json

    if a.save:
        Path(a.save).write_text(json.dumps(
            {f"{i}|{n}": {"counts": table[i, n], "hung": hung[i, n]} for (i, n) in table}, indent=1))
    for path in a.load:
        for key, v in json.loads(Path(path).read_text()).items():
            i, n = key.split("|")
            if (i, int(n)) not in table:
                table[i, int(n)] = v["counts"]
                hung[i, int(n)] = v["hung"]
    mods = sorted({m for v in table.values() for m in v} | {m for v in hung.values() for m in v})
    impls = sorted({k[0] for k in table}, key=lambda s: s != "oxmpi")
    nps = sorted({k[1] for k in table})

    def cell(impl, n, mod):
        if mod in hung.get((impl, n), []):
            return "hung"
        c = table.get((impl, n), {}).get(mod)
        if not c:
            return "-"
        return "/".join(str(c.get(k, 0)) for k in ("passed", "failed", "errors", "skipped"))

    lines = [
        "# Conformance: mpi4py's test suite on oxmpi",
        "",
        f"mpi4py test suite {testdir.parent.name}, run by `python scripts/conformance.py` "
        f"(this run: {time.time() - t0:.0f} s). Each cell: passed/failed/errors/skipped on rank 0; "
        "`hung`: the run was stopped at its time limit in that file. The reference is "
        "mpi4py on the `mpich` wheel, same machine, same run. Excluded (they test how "
        f"mpi4py is built): {', '.join(EXCLUDED)}.",
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
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
