"""``mpiexec -n N python -m oxmpi.futures script.py [args]``

Rank 0 of COMM_WORLD runs the program (a script, ``-m module``, ``-c code``
or ``-`` for stdin) as ``__main__``; ranks 1..N-1 serve the executors it
creates until it ends.  An exception escaping the program ends the job."""

import os
import sys


def _usage(prog, error=None):
    from oxmpi import MPI

    if MPI.COMM_WORLD.Get_rank() != 0:
        sys.exit(1 if error else 0)
    text = (f"usage: {prog} <pyfile> [arg] ...\n"
            f"   or: {prog} -m <module> [arg] ...\n"
            f"   or: {prog} -c <string> [arg] ...")
    if error:
        print(error, file=sys.stderr)
        print(text, file=sys.stderr)
        sys.exit(1)
    print(text)
    sys.exit(0)


def _check_command_line(prog):
    args = sys.argv[1:]
    if not args:
        _usage(prog, "No path specified for execution")
    first = args[0]
    if first in ("-h", "--help"):
        _usage(prog)
    if first in ("-m", "-c"):
        if len(args) < 2:
            _usage(prog, f"Argument expected for option: {first}")
    elif first != "-" and first.startswith("-"):
        _usage(prog, f"Unknown option: {first}")
    elif first != "-" and not os.path.exists(first):
        _usage(prog, f"Path does not exist: {first}")


def main(prog=None):
    if prog is None:
        prog = f"{os.path.basename(sys.executable)} -m oxmpi.futures"
    from oxmpi import MPI
    from oxmpi.futures import _core
    from oxmpi.run import main as run_main

    # Every rank checks (and only rank 0 prints), so that all leave together.
    _check_command_line(prog)
    pool = _core.SharedWorkers()
    _core.set_shared_pool(pool)
    try:
        if pool.client is None:
            pool.serve()
        else:
            try:
                run_main(prog=prog)
            finally:
                pool.close()
    finally:
        _core.set_shared_pool(None)


if __name__ == "__main__":
    main()
