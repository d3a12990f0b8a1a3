"""Run a Python program so that an unhandled exception on any rank ends
the whole job with its traceback, instead of leaving the others waiting.

    mpiexec -n 4 python -m oxmpi script.py [args]
    mpiexec -n 4 python -m oxmpi -m package.module [args]
    mpiexec -n 4 python -m oxmpi -c "code" [args]
    mpiexec -n 4 python -m oxmpi - [args]          (program from stdin)
"""

import runpy
import sys


def usage(prog):
    print(f"usage: {prog} [-h] <pyfile> [arg] ... | -m <module> [arg] ... | -c <string> [arg] ... | - [arg] ...",
          file=sys.stderr)


def _abort(exc):
    import traceback

    # Show the user's frames, not this runner's or runpy's.
    tb = exc.__traceback__
    while tb is not None and (tb.tb_frame.f_code.co_filename in (__file__, "<frozen runpy>")
                              or tb.tb_frame.f_code.co_filename.endswith("runpy.py")):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)
    sys.stderr.flush()
    sys.stdout.flush()
    from oxmpi import MPI

    MPI.COMM_WORLD.Abort(1)


def main(prog="python -m oxmpi"):
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        usage(prog)
        sys.exit(0 if args else 1)
    if args[0] == "--version" or args[0] == "-V":
        from . import __version__

        print(f"oxmpi {__version__}")
        return
    first = args[0]
    try:
        if first == "-m":
            if len(args) < 2:
                usage(prog)
                sys.exit(1)
            sys.argv = args[1:]
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        elif first == "-c":
            if len(args) < 2:
                usage(prog)
                sys.exit(1)
            sys.argv = ["-c"] + args[2:]
            code = compile(args[1], "<string>", "exec")
            exec(code, {"__name__": "__main__"})
        elif first == "-":
            sys.argv = args
            code = compile(sys.stdin.read(), "<stdin>", "exec")
            exec(code, {"__name__": "__main__"})
        else:
            sys.argv = args
            runpy.run_path(first, run_name="__main__")
    except SystemExit as e:
        # sys.exit(n) with n != 0 on one rank is a failure of the job too;
        # the launcher takes the job down on that rank's exit status.
        raise e
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - any error must end the job
        _abort(exc)
