"""MPIPoolExecutor, MPICommExecutor and friends."""

import collections
import functools
import itertools
import threading
import time

from .. import MPI
from . import _core
from ._base import BrokenExecutor, Executor, Future, as_completed

_SPAWN_ONLY = ("python_exe", "python_args", "mpi_info")


class MPIPoolExecutor(Executor):
    """An executor whose tasks run on MPI worker processes."""

    Future = Future

    def __init__(self, max_workers=None, initializer=None, initargs=(), **kwargs):
        """``max_workers``: at most this many workers (when they would be
        spawned; a shared pool of ``-m oxmpi.futures`` has all of its ranks).
        ``initializer(*initargs)`` runs on every worker before any task.

        Keyword arguments as mpi4py's: ``globals``, ``main``, ``path``,
        ``wdir``, ``env`` (set up the workers), ``use_pkl5`` and ``backoff``
        (accepted; oxmpi neither caps message sizes nor polls), and the
        spawn-only ``python_exe``, ``python_args``, ``mpi_info``."""
        if max_workers is None:
            env = _core.os_environ_get("MAX_WORKERS")
            if env is not None:
                max_workers = int(env)
        if max_workers is not None:
            max_workers = int(max_workers)
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
            kwargs["max_workers"] = max_workers
        if initializer is not None:
            if not callable(initializer):
                raise TypeError("initializer must be a callable")
            kwargs["initializer"] = initializer
            kwargs["initargs"] = tuple(initargs)
        if kwargs.get("use_pkl5") is None:
            use_pkl5 = _core.getenv_bool("USE_PKL5")
            if use_pkl5 is not None:
                kwargs["use_pkl5"] = use_pkl5
        self._options = kwargs
        self._shutdown = False
        self._broken = None
        self._lock = threading.Lock()
        self._pool = None

    def _make_pool(self):
        return _core.worker_pool(self)

    def _bootstrap(self):
        if self._pool is None:
            self._pool = self._make_pool()

    @property
    def _max_workers(self):
        return self.num_workers

    @property
    def num_workers(self):
        """The number of workers."""
        with self._lock:
            if self._broken or self._shutdown:
                return 0
            self._bootstrap()
            pool = self._pool
        pool.wait()
        return pool.size

    def bootup(self, wait=True):
        """Set up the workers now (``wait``: until they are ready)."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot bootup after shutdown")
            self._bootstrap()
            pool = self._pool
        if wait:
            pool.wait()
        return self

    def submit(self, fn, /, *args, **kwargs):
        """Schedule ``fn(*args, **kwargs)``; returns its `Future`."""
        with self._lock:
            if self._broken:
                raise BrokenExecutor(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            self._bootstrap()
            future = self.Future()
            self._pool.push(future, (fn, args, kwargs))
            return future

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None, unordered=False):
        """``map(fn, *iterables)`` on the workers; results in order (or as
        they complete with ``unordered``), ``chunksize`` calls per task, at
        most ``buffersize`` tasks submitted ahead of the consumer."""
        return self.starmap(fn, zip(*iterables), timeout, chunksize, buffersize, unordered)

    def starmap(self, fn, iterable, timeout=None, chunksize=1, buffersize=None, unordered=False):
        """``itertools.starmap(fn, iterable)`` on the workers (see `map`)."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None:
            if not isinstance(buffersize, int):
                raise TypeError("buffersize must be an integer or None")
            if buffersize < 1:
                raise ValueError("buffersize must be None or > 0")
            if unordered:
                raise ValueError("buffersize must be None if unordered")
        if chunksize == 1:
            return _results(self, fn, iter(iterable), timeout, buffersize, unordered)
        chunks = _chunks(iterable, chunksize)
        return _flatten(_results(self, functools.partial(_run_chunk, fn), chunks,
                                 timeout, buffersize, unordered))

    def shutdown(self, wait=True, *, cancel_futures=False):
        """No more submissions; ``cancel_futures``: cancel those not started;
        ``wait``: return once every future of this executor is done."""
        with self._lock:
            if not self._shutdown:
                self._shutdown = True
                if self._pool is not None:
                    self._pool.done()
            if cancel_futures and self._pool is not None:
                self._pool.cancel()
            pool = None
            if wait:
                pool, self._pool = self._pool, None
        if pool is not None:
            pool.join()


def _run_chunk(fn, chunk):
    return [fn(*args) for args in chunk]


def _chunks(iterable, size):
    iterator = iter(iterable)
    while True:
        chunk = tuple(itertools.islice(iterator, size))
        if not chunk:
            return
        yield (chunk,)


def _flatten(lists):
    for items in lists:
        yield from items


def _results(executor, fn, args_iter, timeout, buffersize, unordered):
    """Submit now (all, or the first ``buffersize``); the generator yields results."""
    deadline = None if timeout is None else time.monotonic() + timeout
    if buffersize is not None:
        futures = collections.deque(executor.submit(fn, *args)
                                    for args in itertools.islice(args_iter, buffersize))
    else:
        futures = collections.deque(executor.submit(fn, *args) for args in args_iter)
    import weakref

    executor_ref = weakref.ref(executor)
    del executor

    def remaining():
        return None if deadline is None else deadline - time.monotonic()

    def generate():
        try:
            if unordered:
                pending = set(futures)
                futures.clear()
                try:
                    for future in as_completed(pending, timeout=remaining()):
                        pending.discard(future)
                        yield future.result()
                finally:
                    for future in pending:
                        future.cancel()
            else:
                while futures:
                    future = futures.popleft()
                    try:
                        result = future.result(remaining())
                    finally:
                        future.cancel()
                    del future
                    if buffersize is not None:
                        executor = executor_ref()
                        args = next(args_iter, None) if executor is not None else None
                        if args is not None:
                            futures.append(executor.submit(fn, *args))
                        del executor
                    yield result
        finally:
            while futures:
                futures.pop().cancel()

    return generate()


class MPICommExecutor:
    """``with MPICommExecutor(comm, root) as executor:`` -- at ``root`` the
    target is an `MPIPoolExecutor` whose workers are the other processes of
    ``comm``; they serve it during the block and get ``None``."""

    def __init__(self, comm=None, root=0, **kwargs):
        if comm is None:
            comm = MPI.COMM_WORLD
        if comm.Is_inter():
            raise ValueError("expecting an intracommunicator")
        if root < 0 or root >= comm.Get_size():
            raise ValueError("expecting root in range(comm.size)")
        shared = _core.shared_pool()
        if shared is not None:
            # Under ``-m oxmpi.futures`` only the client runs user code: its
            # executor uses the shared workers.
            comm = MPI.COMM_WORLD
            root = comm.Get_rank()
        self._comm = comm
        self._root = root
        self._options = kwargs
        self._executor = None
        self._client = None

    def __enter__(self):
        if self._executor is not None:
            raise RuntimeError("__enter__")
        comm, root = self._comm, self._root
        if _core.shared_pool() is not None:
            self._executor = executor = MPIPoolExecutor(**self._options)
            return executor
        if comm.Get_size() == 1:
            self._executor = executor = _PrivateExecutor(
                lambda ex: _core.ThreadPool(ex, size=1), **self._options)
            return executor
        private = comm.Dup()
        workers = private.Split(0 if private.Get_rank() == root else 1, 0)
        if private.Get_rank() == root:
            workers.Free()
            client = _core.Client(private, root)
            self._client = (client, private)
            self._executor = executor = _PrivateExecutor(
                lambda ex: _core.ClientPool(ex, client), **self._options)
            return executor
        _core.set_comm_server(workers)
        try:
            _core.serve(private, root)
        finally:
            _core.del_comm_server()
            workers.Free()
            private.Free()
        return None

    def __exit__(self, *exc_info):
        executor, self._executor = self._executor, None
        if executor is None:
            # A worker: swallow the exception-free exit of the block it skips.
            return True
        try:
            executor.shutdown(wait=True)
        finally:
            if self._client is not None:
                client, private = self._client
                self._client = None
                client.close()
                private.Free()
        return False


class _PrivateExecutor(MPIPoolExecutor):
    def __init__(self, make_pool, **kwargs):
        super().__init__(**kwargs)
        self._pool_factory = make_pool

    def _make_pool(self):
        return self._pool_factory(self)


class ThreadPoolExecutor(MPIPoolExecutor):
    """`MPIPoolExecutor` whose tasks run in threads of this process."""

    def _make_pool(self):
        return _core.ThreadPool(self)


class ProcessPoolExecutor(MPIPoolExecutor):
    """`MPIPoolExecutor` whose workers are always newly spawned processes
    (``MPI.Comm.Spawn``), even under ``-m oxmpi.futures``."""

    def _make_pool(self):
        return _core.SpawnPool(self)


def get_comm_workers():
    """In a task: the intracommunicator of all the workers."""
    return _core.get_comm_server()
