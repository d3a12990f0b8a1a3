"""The seeds' ecosystem on oxmpi, unchanged: Dask-MPI (seed 004) and IPython
parallel's MPI engines with psum (seed 001).

These need dask-mpi, distributed and ipyparallel (scripts/test.sh installs
them); each case is skipped with a message when its package is missing.
Everything talks over the loopback interface.
"""

import os
import re
import subprocess
import sys
import textwrap
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
