"""mpi4py's benchmark commands, for ``python -m mpi4py.bench <command>``
through the compatibility package (``python -m oxmpi.benchmarks`` too).

The commands, their options and their output follow mpi4py's, so that the
same command line measures both implementations side by side:

* ``helloworld``: each process greets, in rank order;
* ``ringtest``: a message going round the ring of processes;
* ``pingpong``: ranks 0 and 1 bounce messages of growing size (buffers, or
  pickled objects with ``--pickle``, out-of-band with ``--outband``);
* ``futures``: an executor's throughput on trivial tasks carrying data of
  growing size (``MPIPoolExecutor`` by default).

oxmpi's own cross-implementation benchmark is ``python -m oxmpi.bench``.
"""

import statistics
import sys
from argparse import REMAINDER, ArgumentParser
from pathlib import Path

COMMANDS = {}


def command(fn):
    COMMANDS[fn.__name__] = fn
    return fn


def _parser(name=""):
    prog = f"{Path(sys.executable).name} -m mpi4py.bench {name}".strip()
    return ArgumentParser(prog=prog)


def _quiet_option(parser, verbose):
    parser.add_argument("-q", "--quiet", action="store_false", dest="verbose", default=verbose,
                        help="quiet output")


def _size_sweep_options(parser, *, min_size, max_size, skip, loop, skip_large, loop_large,
                        large_size, skip_huge, loop_huge, huge_size):
    """The options of a sweep over power-of-two sizes; fewer iterations
    above the 'large' and 'huge' sizes."""
    parser.add_argument("-m", "--min-size", type=int, dest="min_size", default=min_size)
    parser.add_argument("-n", "--max-size", type=int, dest="max_size", default=max_size)
    parser.add_argument("-s", "--skip", type=int, dest="skip", default=skip,
                        help="number of warm-up iterations")
    parser.add_argument("-l", "--loop", type=int, dest="loop", default=loop,
                        help="number of iterations")
    for name, value in (("skip-large", skip_large), ("loop-large", loop_large),
                        ("large-size", large_size), ("skip-huge", skip_huge),
                        ("loop-huge", loop_huge), ("huge-size", huge_size)):
        parser.add_argument(f"--{name}", type=int, dest=name.replace("-", "_"), default=value)
    parser.add_argument("--no-header", action="store_false", dest="print_header", default=True)
    parser.add_argument("--no-stats", action="store_false", dest="print_stats", default=True)


def _sweep(options):
    """(size, skip, loop) for each power of two in [min_size, max_size]."""
    skip, loop = options.skip, options.loop
    for nbytes in (1 << i for i in range(33)):
        if not options.min_size <= nbytes <= options.max_size:
            continue
        if nbytes > options.large_size:
            skip, loop = min(skip, options.skip_large), min(loop, options.loop_large)
        if nbytes > options.huge_size:
            skip, loop = min(skip, options.skip_huge), min(loop, options.loop_huge)
        yield nbytes, skip, loop


def _mean_stdev(samples):
    mean = statistics.mean(samples) if samples else float("nan")
    stdev = statistics.stdev(samples) if len(samples) > 1 else 0.0
    return mean, stdev


def _report(options, title, column, nbytes, value, mean, stdev, loop):
    if options.print_header:
        options.print_header = False
        print(title)
        header = f"# Size [B]  {column}"
        if options.print_stats:
            header += " | Time Mean [s] \u00b1 StdDev [s]  Samples"
        print(header, flush=True)
    line = f"{nbytes:10d}{value}"
    if options.print_stats:
        line += f" | {mean:.7e} \u00b1 {stdev:.4e} {loop:8d}"
    print(line, flush=True)


@command
def helloworld(comm, args=None, verbose=True):
    """Hello, World! from every process, in rank order."""
    parser = _parser("helloworld")
    _quiet_option(parser, verbose)
    options = parser.parse_args(args)
    from . import MPI

    size, rank = comm.Get_size(), comm.Get_rank()
    width = len(str(size - 1))
    message = f"Hello, World! I am process {rank:{width}d} of {size} on {MPI.Get_processor_name()}.\n"
    comm.Barrier()
    # A token passed along the ranks orders the lines.
    if rank > 0:
        comm.Recv([None, "B"], rank - 1)
    if options.verbose:
        sys.stdout.write(message)
        sys.stdout.flush()
    if rank < size - 1:
        comm.Send([None, "B"], rank + 1)
    comm.Barrier()
    return message


@command
def ringtest(comm, args=None, verbose=True):
    """Time a message going round the ring of processes."""
    parser = _parser("ringtest")
    _quiet_option(parser, verbose)
    parser.add_argument("-n", "--size", type=int, dest="size", default=1, help="message size")
    parser.add_argument("-s", "--skip", type=int, dest="skip", default=0,
                        help="number of warm-up iterations")
    parser.add_argument("-l", "--loop", type=int, dest="loop", default=1,
                        help="number of iterations")
    options = parser.parse_args(args)
    from . import MPI

    size, rank = comm.Get_size(), comm.Get_rank()
    left, right = (rank - 1) % size, (rank + 1) % size
    outgoing = bytearray(b"\x2a" * options.size)
    incoming = bytearray(options.size)
    comm.Barrier()
    start = MPI.Wtime()
    for i in range(options.skip + options.loop):
        if i == options.skip:
            start = MPI.Wtime()
        if size == 1:
            comm.Sendrecv(outgoing, right, 0, incoming, left, 0)
        elif rank == 0:
            comm.Send(outgoing, right, 0)
            comm.Recv(incoming, left, 0)
        else:
            comm.Recv(incoming, left, 0)
            comm.Send(incoming, right, 0)
    elapsed = MPI.Wtime() - start
    if rank == 0 and options.size and incoming != outgoing:
        print("ringtest: the message came back changed", file=sys.stderr, flush=True)
        comm.Abort(2)
    if options.verbose and rank == 0:
        print(f"time for {options.loop} loops = {elapsed:g} seconds "
              f"({size} processes, {options.size} bytes)", flush=True)
    return elapsed


@command
def pingpong(comm, args=None, verbose=True):
    """Time messages bounced between ranks 0 and 1 (to itself on one rank)."""
    parser = _parser("pingpong")
    _quiet_option(parser, verbose)
    _size_sweep_options(parser, min_size=1, max_size=1 << 30, skip=100, loop=10000,
                        skip_large=10, loop_large=1000, large_size=1 << 14,
                        skip_huge=1, loop_huge=10, huge_size=1 << 20)
    parser.add_argument("-a", "--array", dest="array", default="numpy",
                        choices=["numpy", "cupy", "numba", "none"])
    parser.add_argument("-p", "--pickle", action="store_true", dest="pickle", default=False,
                        help="use pickle-based send and receive")
    parser.add_argument("--protocol", type=int, dest="protocol", default=None)
    parser.add_argument("-o", "--outband", action="store_true", dest="outband", default=False,
                        help="use out-of-band pickle-based send and receive")
    parser.add_argument("--threshold", type=int, dest="threshold", default=None)
    options = parser.parse_args(args)
    from . import MPI
    from .util import pkl5

    if options.array in ("cupy", "numba"):
        raise SystemExit(f"pingpong: --array {options.array}: oxmpi does not send GPU memory")
    numpy = None
    if options.array == "numpy":
        try:
            import numpy
        except ImportError:
            pass

    def allocate(nbytes):
        return numpy.empty(nbytes, "B") if numpy is not None else bytearray(nbytes)

    use_pickle = options.pickle or options.outband
    if options.outband:
        comm = pkl5.Intracomm(comm)
        if options.threshold is not None:
            pkl5.pickle.THRESHOLD = options.threshold
    if use_pickle and options.protocol is not None:
        MPI.pickle.PROTOCOL = options.protocol
    send, recv, sendrecv = ((comm.send, comm.recv, comm.sendrecv) if use_pickle
                            else (comm.Send, comm.Recv, comm.Sendrecv))
    rank, size = comm.Get_rank(), comm.Get_size()

    def one_way_time(outgoing, incoming):
        start = MPI.Wtime()
        if size == 1:
            sendrecv(outgoing, 0, 0, incoming, 0, 0)
            sendrecv(outgoing, 0, 0, incoming, 0, 0)
        elif rank == 0:
            send(outgoing, 1, 0)
            recv(incoming, 1, 0)
        elif rank == 1:
            recv(incoming, 0, 0)
            send(outgoing, 0, 0)
        return (MPI.Wtime() - start) / 2

    results = []
    for nbytes, skip, loop in _sweep(options):
        if use_pickle:
            outgoing, incoming = allocate(nbytes), None
        else:
            outgoing = [allocate(nbytes), nbytes, MPI.BYTE]
            incoming = [allocate(nbytes), nbytes, MPI.BYTE]
        comm.Barrier()
        samples = [one_way_time(outgoing, incoming) for _ in range(skip + loop)][skip:]
        mean, stdev = _mean_stdev(samples)
        results.append((nbytes, mean, stdev))
        if options.verbose and rank == 0:
            _report(options, "# MPI PingPong Test", "Bandwidth [MB/s]", nbytes,
                    f"{nbytes / mean / 1e6:18.2f}", mean, stdev, loop)
    return results


def _identity(arg):
    return arg


@command
def futures(comm, args=None, verbose=True):
    """Throughput of an executor on tasks that return their data."""
    parser = _parser("futures")
    _quiet_option(parser, verbose)
    parser.add_argument("-e", "--executor", dest="executor", default="mpi",
                        choices=["mpi", "process", "thread", "interpreter"])
    parser.add_argument("-w", "--num-workers", type=int, dest="workers", default=None)
    parser.add_argument("-t", "--num-tasks", type=int, dest="tasks", default=50,
                        help="number of tasks per worker")
    parser.add_argument("-a", "--allocator", dest="allocator", default="numpy",
                        choices=["numpy", "array", "bytes"])
    parser.add_argument("-c", "--chunksize", type=int, dest="chunksize", default=1)
    parser.add_argument("-b", "--backoff", type=float, dest="backoff", default=0.0)
    parser.add_argument("-o", "--outband", action="store_true", dest="outband", default=False,
                        help="use out-of-band pickle")
    # -m/-n/-s/-l come with the sweep; mpi4py's defaults for this command.
    _size_sweep_options(parser, min_size=0, max_size=1 << 20, skip=1, loop=10,
                        skip_large=1, loop_large=5, large_size=1 << 16,
                        skip_huge=1, loop_huge=3, huge_size=1 << 18)
    options = parser.parse_args(args)
    import concurrent.futures
    import time

    from .futures import MPIPoolExecutor

    def allocate(nbytes):
        if options.allocator == "numpy":
            try:
                import numpy
                return numpy.zeros(nbytes, "B")
            except ImportError:
                pass
        if options.allocator == "array":
            import array
            return array.array("B", bytes(nbytes))
        return bytes(nbytes)

    kind = options.executor
    if kind == "mpi":
        executor = MPIPoolExecutor(max_workers=options.workers, backoff=options.backoff,
                                   use_pkl5=options.outband)
        workers = executor.num_workers
    else:
        if kind == "interpreter" and not hasattr(concurrent.futures, "InterpreterPoolExecutor"):
            raise SystemExit("futures: this Python has no InterpreterPoolExecutor")
        cls = {"process": concurrent.futures.ProcessPoolExecutor,
               "thread": concurrent.futures.ThreadPoolExecutor,
               "interpreter": getattr(concurrent.futures, "InterpreterPoolExecutor", None)}[kind]
        executor = cls(max_workers=options.workers)
        workers = executor._max_workers
    tasks = workers * options.tasks

    def run_all(data):
        start = time.perf_counter()
        for _ in executor.map(_identity, data, chunksize=options.chunksize):
            pass
        return time.perf_counter() - start

    results = []
    with executor:
        # Every worker up and running before the clock starts.
        for _ in executor.map(time.sleep, [0.001] * workers, chunksize=options.chunksize):
            pass
        for nbytes, skip, loop in _sweep(options):
            data = [allocate(nbytes) for _ in range(tasks)]
            samples = [run_all(data) for _ in range(skip + loop)][skip:]
            del data
            mean, stdev = _mean_stdev(samples)
            results.append((nbytes, mean, stdev))
            if options.verbose and comm.rank == 0:
                title = (f"# {type(executor).__name__} - {workers} workers, "
                         f"{options.tasks} tasks/worker")
                _report(options, title, "Tasks/s", nbytes, f"{tasks / mean:9.0f}", mean, stdev,
                        loop)
    return results


def main(args=None):
    """``python -m mpi4py.bench [--threads|--no-threads|--thread-level L] <command> [args]``."""
    parser = ArgumentParser(prog=f"{Path(sys.executable).name} -m mpi4py.bench",
                            usage="%(prog)s [options] <command> [args]")
    parser.add_argument("--threads", action="store_true", dest="threads", default=None,
                        help="initialize MPI with thread support")
    parser.add_argument("--no-threads", action="store_false", dest="threads", default=None,
                        help="initialize MPI without thread support")
    parser.add_argument("--thread-level", dest="thread_level", default=None, metavar="LEVEL",
                        choices="single funneled serialized multiple".split(),
                        help="initialize MPI with required thread level")
    parser.add_argument("command", metavar="<command>", help="benchmark command to run")
    parser.add_argument("args", nargs=REMAINDER, metavar="[args]",
                        help="arguments for benchmark command")
    options = parser.parse_args(args)
    # The thread options are mpi4py.rc settings (read when MPI is imported).
    rc = getattr(sys.modules.get("mpi4py"), "rc", None)
    if rc is not None and options.threads is not None:
        rc.threads = options.threads
    if rc is not None and options.thread_level is not None:
        rc.thread_level = options.thread_level
    from . import MPI

    comm = MPI.COMM_WORLD
    run = COMMANDS.get(options.command)
    if run is None:
        if comm.rank == 0:
            parser.error(f"unknown command {options.command!r}")
        parser.exit(2)
    run(comm, options.args)
    parser.exit()


if __name__ == "__main__":
    main()
