"""Console entry points: ``mpiexec``, ``mpirun`` and ``oxmpi``."""

import os
import sys

from . import _oxmpi


def _run(prog):
    # The launcher runs in Rust with the GIL released; Python's own SIGINT
    # handler would only set a flag nobody reads, so restore the defaults
    # and let the launcher install its handlers.
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    # Ranks find oxmpi's mpi4py compatibility package through this
    # (the launcher prepends it to PYTHONPATH unless --no-mpi4py-compat).
    from .compat import PATH

    os.environ.setdefault("OXMPI_COMPAT_PATH", PATH)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_oxmpi.launch(prog, sys.argv[1:]))


def mpiexec():
    _run(os.path.basename(sys.argv[0]) or "mpiexec")


def oxmpi_main():
    # Subcommands written in Python; the rest (run, info, --version) are
    # the launcher's.
    if sys.argv[1:2] == ["bench"]:
        from .bench import main

        main(sys.argv[2:])
        return
    _run("oxmpi")


if __name__ == "__main__":
    # `python -m oxmpi._launcher --singleton-server`: how the runtime of a
    # program started without mpiexec gets a process manager when it
    # spawns (see crates/oxmpi/src/native/dynproc.rs).
    _run("mpiexec")
