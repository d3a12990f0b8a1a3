"""``multiprocessing.Pool``'s API on ``oxmpi.futures`` executors (as
``mpi4py.util.pool``)."""

import functools
import itertools
import operator
import threading
import warnings

from .. import futures as _futures
from ..futures import pool as _fpool

__all__ = ["Pool", "ThreadPool", "AsyncResult", "ApplyResult", "MapResult"]


class Pool:
    """A pool of MPI workers (an `MPIPoolExecutor` underneath)."""

    Executor = _futures.MPIPoolExecutor

    def __init__(self, processes=None, initializer=None, initargs=(), **kwargs):
        """``processes``, ``initializer``, ``initargs`` as multiprocessing's;
        other keyword arguments go to the executor.  ``maxtasksperchild``
        and ``context`` are not supported (a warning when given)."""
        if processes is not None and processes < 1:
            raise ValueError("number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        for name in ("maxtasksperchild", "context"):
            if kwargs.pop(name, None) is not None:
                warnings.warn(f"argument {name!r} is not supported", stacklevel=2)
        self.executor = self.Executor(processes, initializer=initializer,
                                      initargs=initargs, **kwargs)

    def apply(self, func, args=(), kwds={}):  # noqa: B006 - multiprocessing's signature
        """``func(*args, **kwds)`` on a worker; waits for its result."""
        return self.executor.submit(func, *args, **kwds).result()

    def apply_async(self, func, args=(), kwds={}, callback=None, error_callback=None):  # noqa: B006
        """`ApplyResult` of ``func(*args, **kwds)``."""
        future = self.executor.submit(func, *args, **kwds)
        return ApplyResult(future, callback, error_callback)

    def map(self, func, iterable, chunksize=None):
        """``list(map(func, iterable))`` on the workers."""
        iterable, chunksize = _chunksize(self, iterable, chunksize)
        return list(self.imap(func, iterable, chunksize=chunksize))

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        """`MapResult` of ``map(func, iterable)``."""
        return self.starmap_async(func, zip(iterable), chunksize, callback, error_callback)

    def imap(self, func, iterable, chunksize=1):
        """Iterator over ``func(x)`` for x in ``iterable``, in order."""
        return self.executor.map(func, iterable, chunksize=chunksize)

    def imap_unordered(self, func, iterable, chunksize=1):
        """Iterator over ``func(x)`` as they complete."""
        return self.executor.map(func, iterable, chunksize=chunksize, unordered=True)

    def starmap(self, func, iterable, chunksize=None):
        """``list(itertools.starmap(func, iterable))`` on the workers."""
        iterable, chunksize = _chunksize(self, iterable, chunksize)
        return list(self.istarmap(func, iterable, chunksize=chunksize))

    def starmap_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        """`MapResult` of ``starmap(func, iterable)``."""
        iterable, chunksize = _chunksize(self, iterable, chunksize)
        iterator = iter(iterable)
        chunk_futures = []
        while True:
            chunk = tuple(itertools.islice(iterator, chunksize))
            if not chunk:
                break
            chunk_futures.append(self.executor.submit(_fpool._run_chunk, func, chunk))
        future = _futures.compose(_futures.collect(chunk_futures),
                                  lambda lists: list(itertools.chain.from_iterable(lists)))
        return MapResult(future, callback, error_callback)

    def istarmap(self, func, iterable, chunksize=1):
        """Iterator over ``func(*args)`` for args in ``iterable``, in order."""
        return self.executor.starmap(func, iterable, chunksize=chunksize)

    def istarmap_unordered(self, func, iterable, chunksize=1):
        """Iterator over ``func(*args)`` as they complete."""
        return self.executor.starmap(func, iterable, chunksize=chunksize, unordered=True)

    def close(self):
        """No more tasks."""
        self.executor.shutdown(wait=False)

    def terminate(self):
        """No more tasks; drop those not started."""
        self.executor.shutdown(wait=False, cancel_futures=True)

    def join(self):
        """Wait until the submitted tasks are done (after `close`)."""
        self.executor.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()


class ThreadPool(Pool):
    """A pool of threads of this process."""

    Executor = _futures.ThreadPoolExecutor


class AsyncResult:
    """The result of an ``*_async`` call."""

    def __init__(self, future, callback=None, error_callback=None):
        self.future = future
        self._event = threading.Event()
        future.add_done_callback(functools.partial(_on_done, event=self._event, callback=callback,
                                                   error_callback=error_callback))

    def get(self, timeout=None):
        """The result (or its exception raised); TimeoutError when not ready in time."""
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError
        try:
            return self.future.result()
        except _futures.CancelledError:
            raise TimeoutError from None

    def wait(self, timeout=None):
        """Wait at most ``timeout`` seconds for the result."""
        self._event.wait(timeout)

    def ready(self):
        """Whether the call has completed."""
        return self._event.is_set()

    def successful(self):
        """Whether it completed without raising (ValueError when not ready)."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        try:
            return self.future.exception() is None
        except _futures.CancelledError:
            return False


class ApplyResult(AsyncResult):
    """Result of `Pool.apply_async`."""


class MapResult(AsyncResult):
    """Result of `Pool.map_async` and `Pool.starmap_async`."""


def _on_done(future, event, callback, error_callback):
    try:
        exception = future.exception()
    except _futures.CancelledError:
        exception = TimeoutError()
    try:
        if exception is not None:
            if error_callback is not None:
                error_callback(exception)
        elif callback is not None:
            callback(future.result())
    finally:
        event.set()


def _chunksize(pool, iterable, chunksize):
    """multiprocessing's default: about four chunks per worker."""
    if chunksize is not None:
        return iterable, chunksize
    workers = getattr(pool.executor, "_max_workers", 0)
    chunksize = 1
    if workers > 0:
        tasks = operator.length_hint(iterable)
        if tasks == 0:
            iterable = list(iterable)
            tasks = len(iterable)
        if tasks > 0:
            chunksize = -(-tasks // (workers * 4))
    return iterable, chunksize
