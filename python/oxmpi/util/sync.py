"""Synchronisation between processes built on one-sided communication
(the counterpart of ``mpi4py.util.sync``): Sequential, Counter, Mutex,
Condition, Semaphore.

Every object is collective over its communicator when made and freed.
Waiting processes poll with a bounded exponential back-off (sleeping, so
they give their core away), reading their own window memory directly:
the native runtime's windows are unified, so a peer's accumulate is
visible there at once.

Designs:

* ``Counter``: one element on ``root``, advanced with ``Fetch_and_op``.
* ``Mutex``: a ticket lock, fair (first come, first served): two integers
  on rank 0, ``next`` (tickets handed out) and ``serving``. Acquiring
  takes a ticket with a fetch-and-add on ``next`` and waits until
  ``serving`` reaches it; a non-blocking attempt compare-and-swaps ``next``
  from ``serving`` to ``serving + 1``, which succeeds only when nobody
  holds or waits for the mutex. Releasing adds one to ``serving``.
  Ownership and the recursion count are the holder's own business and
  stay local.
* ``Condition``: a FIFO queue of waiting ranks on rank 0 (a ring of
  ``size`` slots with head and tail counts, changed under an exclusive
  window lock) and a wake-up flag per process. A waiter queues itself
  while still holding the mutex, so a notifier (who must hold it) never
  misses it.
* ``Semaphore``: a ``Counter`` guarded by a ``Condition``.
"""

import array as _array
import time as _time

from .. import MPI

__all__ = [
    "Sequential",
    "Counter",
    "Mutex",
    "Condition",
    "Semaphore",
]

_NAP_MIN = 1e-6
_NAP_MAX = 1e-3


def _naps():
    """Sleeps of growing length, up to a millisecond."""
    nap = 0.0
    while True:
        _time.sleep(nap)
        nap = min(_NAP_MAX, max(_NAP_MIN, 2 * nap))
        yield


def _int_window(count, comm, info):
    """A window of ``count`` C ints per process, zeroed, disp_unit 4."""
    unit = MPI.INT.Get_size()
    return MPI.Win.Allocate(count * unit, unit, info, comm)


def _fetch(window, rank, disp, value, op, typecode="i"):
    """Fetch_and_op of one element under a shared lock; the old value."""
    incr = _array.array(typecode, [value])
    old = _array.array(typecode, [0])
    window.Lock(rank, MPI.LOCK_SHARED)
    try:
        window.Fetch_and_op(incr, old, rank, disp, op)
    finally:
        window.Unlock(rank)
    return old[0]


class Sequential:
    """Runs a block of code one process at a time, in rank order."""

    def __init__(self, comm, tag=0):
        self.comm = comm
        self.tag = int(tag)

    def __enter__(self):
        self.begin()
        return self

    def __exit__(self, *exc):
        self.end()

    def begin(self):
        """Waits for the previous rank to finish its turn."""
        rank, size = self.comm.Get_rank(), self.comm.Get_size()
        if size > 1 and rank > 0:
            self.comm.Recv([bytearray(), 0, MPI.BYTE], rank - 1, self.tag)

    def end(self):
        """Hands the turn to the next rank."""
        rank, size = self.comm.Get_rank(), self.comm.Get_size()
        if size > 1 and rank < size - 1:
            self.comm.Send([bytearray(), 0, MPI.BYTE], rank + 1, self.tag)


class Counter:
    """A counter shared by the processes of ``comm``, held by ``root``."""

    def __init__(
        self,
        start=0,
        step=1,
        *,
        typecode="i",
        comm=MPI.COMM_SELF,
        info=MPI.INFO_NULL,
        root=0,
    ):
        datatype = MPI.Datatype.fromcode(typecode)
        self._typechar = datatype.typechar
        unit = datatype.Get_size()
        here = comm.Get_rank() == root
        self._window = MPI.Win.Allocate(unit if here else 0, unit, info, comm)
        self._start = start
        self._step = step
        self._root = root
        self._comm = comm
        if here:
            memoryview(self._window).cast("B").cast(self._typechar)[0] = start
        comm.Barrier()

    def __iter__(self):
        return self

    def __next__(self):
        return self.next()

    def next(self, incr=None):
        """Adds ``incr`` (default: the step) and returns the value before."""
        if not self._window:
            raise RuntimeError("counter already freed")
        incr = self._step if incr is None else incr
        op = MPI.SUM if incr != 0 else MPI.NO_OP
        return _fetch(self._window, self._root, 0, incr, op, self._typechar)

    def free(self):
        """Frees the counter (collective)."""
        window, self._window = self._window, MPI.WIN_NULL
        self._comm = MPI.COMM_NULL
        window.free()


class Mutex:
    """A mutual-exclusion lock over the processes of ``comm``."""

    _NEXT, _SERVING = 0, 1

    def __init__(self, *, recursive=False, comm=MPI.COMM_SELF, info=MPI.INFO_NULL):
        self._recursive = bool(recursive)
        self._window = _int_window(2 if comm.Get_rank() == 0 else 0, comm, info)
        self._comm = comm
        self._depth = 0  # how many times this process holds it
        comm.Barrier()

    def _check(self):
        if not self._window:
            raise RuntimeError("mutex already freed")

    def _take(self, blocking):
        window = self._window
        if not blocking:
            serving = _fetch(window, 0, self._SERVING, 0, MPI.NO_OP)
            want = _array.array("i", [serving])
            new = _array.array("i", [serving + 1])
            old = _array.array("i", [0])
            window.Lock(0, MPI.LOCK_SHARED)
            try:
                window.Compare_and_swap(new, want, old, 0, self._NEXT)
            finally:
                window.Unlock(0)
            return old[0] == serving
        ticket = _fetch(window, 0, self._NEXT, 1, MPI.SUM)
        for _ in _naps():
            if _fetch(window, 0, self._SERVING, 0, MPI.NO_OP) == ticket:
                return True

    def _give(self):
        _fetch(self._window, 0, self._SERVING, 1, MPI.SUM)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def acquire(self, blocking=True):
        """Takes the mutex; without ``blocking``, only if it is free.
        Returns whether this process holds it."""
        self._check()
        if self._depth:
            if not self._recursive:
                raise RuntimeError("cannot acquire already held mutex")
            self._depth += 1
            return True
        if self._take(blocking):
            self._depth = 1
            return True
        return False

    def release(self):
        """Gives the mutex back (once per acquire when recursive)."""
        self._check()
        if not self._depth:
            raise RuntimeError("cannot release unheld mutex")
        self._depth -= 1
        if not self._depth:
            self._give()

    def locked(self):
        """Whether this process holds the mutex."""
        self._check()
        return self._depth > 0

    def count(self):
        """How many times this process holds the mutex."""
        self._check()
        return self._depth

    def _release_all(self):
        depth, self._depth = self._depth, 0
        if depth:
            self._give()
        return depth

    def _reacquire(self, depth):
        self._take(True)
        self._depth = depth

    def free(self):
        """Frees the mutex (collective), releasing it if held."""
        if self._window:
            self._release_all()
        window, self._window = self._window, MPI.WIN_NULL
        self._comm = MPI.COMM_NULL
        window.free()


class Condition:
    """A condition variable over the processes of ``comm`` (or of
    ``mutex``'s communicator)."""

    _FLAG, _HEAD, _TAIL, _QUEUE = 0, 1, 2, 3

    def __init__(self, mutex=None, *, recursive=True, comm=MPI.COMM_SELF, info=MPI.INFO_NULL):
        if mutex is None:
            self._mutex = Mutex(recursive=recursive, comm=comm, info=info)
            self._owns_mutex = True
        else:
            self._mutex = mutex
            self._owns_mutex = False
            comm = mutex._comm
        size = comm.Get_size()
        count = self._QUEUE + size if comm.Get_rank() == 0 else 1
        self._window = _int_window(count, comm, info)
        self._size = size
        self._comm = comm
        comm.Barrier()

    def _check(self):
        if not self._window:
            raise RuntimeError("condition already freed")

    def _enqueue(self, rank):
        window = self._window
        counts = _array.array("i", [0, 0])
        window.Lock(0, MPI.LOCK_EXCLUSIVE)
        try:
            window.Get(counts, 0, self._HEAD)
            head, tail = counts
            window.Put(_array.array("i", [rank]), 0, self._QUEUE + tail % self._size)
            window.Put(_array.array("i", [tail + 1]), 0, self._TAIL)
        finally:
            window.Unlock(0)

    def _dequeue(self, n):
        window = self._window
        counts = _array.array("i", [0, 0])
        woken = []
        window.Lock(0, MPI.LOCK_EXCLUSIVE)
        try:
            window.Get(counts, 0, self._HEAD)
            head, tail = counts
            take = max(0, min(n, tail - head))
            slot = _array.array("i", [0])
            for i in range(take):
                window.Get(slot, 0, self._QUEUE + (head + i) % self._size)
                woken.append(slot[0])
            window.Put(_array.array("i", [head + take]), 0, self._HEAD)
        finally:
            window.Unlock(0)
        return woken

    def _sleep(self):
        flag = memoryview(self._window).cast("B").cast("i")
        for _ in _naps():
            self._window.Sync()
            if flag[self._FLAG]:
                flag[self._FLAG] = 0
                return

    def _wake(self, ranks):
        one = _array.array("i", [1])
        for rank in ranks:
            self._window.Lock(rank, MPI.LOCK_SHARED)
            try:
                self._window.Accumulate(one, rank, self._FLAG, MPI.REPLACE)
            finally:
                self._window.Unlock(rank)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def acquire(self, blocking=True):
        """Takes the underlying mutex."""
        self._check()
        return self._mutex.acquire(blocking)

    def release(self):
        """Gives the underlying mutex back."""
        self._check()
        self._mutex.release()

    def locked(self):
        """Whether this process holds the underlying mutex."""
        return self._mutex.locked()

    def wait(self):
        """Releases the mutex, sleeps until notified, takes the mutex
        again (as many times as it was held). Returns True."""
        self._check()
        if not self.locked():
            raise RuntimeError("cannot wait on unheld mutex")
        self._enqueue(self._window.group_rank)
        depth = self._mutex._release_all()
        self._sleep()
        self._mutex._reacquire(depth)
        return True

    def wait_for(self, predicate):
        """Waits until ``predicate()`` is true; returns its value."""
        self._check()
        result = predicate()
        while not result:
            self.wait()
            result = predicate()
        return result

    def notify(self, n=1):
        """Wakes up to ``n`` waiting processes, first come first woken;
        returns how many were woken."""
        self._check()
        if not self.locked():
            raise RuntimeError("cannot notify on unheld mutex")
        woken = self._dequeue(n)
        self._wake(woken)
        return len(woken)

    def notify_all(self):
        """Wakes every waiting process; returns how many."""
        return self.notify(self._size)

    def free(self):
        """Frees the condition (collective), and its mutex if it made it.
        A mutex this process holds is released first (whoever made it), so
        that processes waiting for it can reach the collective free."""
        if self._mutex._window:
            self._mutex._release_all()
            if self._owns_mutex:
                self._mutex.free()
        window, self._window = self._window, MPI.WIN_NULL
        self._comm = MPI.COMM_NULL
        window.free()


class Semaphore:
    """A counting semaphore over the processes of ``comm``."""

    def __init__(self, value=1, *, bounded=True, comm=MPI.COMM_SELF, info=MPI.INFO_NULL):
        if value < 0:
            raise ValueError("initial value must be non-negative")
        self._bounded = bool(bounded)
        self._initial = value
        self._counter = Counter(value, comm=comm, info=info)
        self._condvar = Condition(recursive=False, comm=comm, info=info)
        self._comm = comm

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def acquire(self, blocking=True):
        """Decrements the count, waiting while it is zero (or, without
        ``blocking``, returning False). Returns True once decremented."""
        with self._condvar:
            while self._counter.next(0) == 0:
                if not blocking:
                    return False
                self._condvar.wait()
            self._counter.next(-1)
            return True

    def release(self, n=1):
        """Increments the count by ``n`` and wakes up to ``n`` waiters."""
        if n < 1:
            raise ValueError("increment must be one or more")
        with self._condvar:
            if self._bounded and self._counter.next(0) + n > self._initial:
                raise ValueError("semaphore released too many times")
            self._counter.next(n)
            self._condvar.notify(n)

    def free(self):
        """Frees the semaphore (collective)."""
        self._counter.free()
        self._condvar.free()
        self._comm = MPI.COMM_NULL
