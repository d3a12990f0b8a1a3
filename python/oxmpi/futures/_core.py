"""Workers and the client's scheduler for ``oxmpi.futures``.

One process (the *client*) hands tasks to the others (the *workers*) over a
private duplicate of the communicator they share, so user messages on the
original communicator never match the protocol's.  The protocol:

* client -> worker, tag ``_TAG_CMD``: ``(kind, data)`` with kind ``_SYNC``
  (set up sys.path, cwd, env, import the client's ``__main__``), ``_INIT``
  (run an executor's initializer) or ``_TASK`` (``(fn, args, kwargs)``);
  ``None`` tells the worker to stop.
* worker -> client, tag ``_TAG_REPLY``: ``(ok, value)`` for every command.

A worker holds at most one command at a time, so the source of a reply says
which job it answers.  Workers wait for commands in a blocking receive (the
runtime parks them on a futex: idle workers use no CPU); the client's one
receiver thread blocks in a matched probe only while some worker is busy.

A worker that dies (a crash, ``os._exit``, a signal) does not end the job:
workers ask the runtime to report their death as a process failure
(spawned processes are so reported anyway).  The receiver's probe then
fails with ERR_PROC_FAILED_PENDING; the client finds the dead workers with
``Comm.Get_failed``, acknowledges them, fails the futures they held with
``BrokenExecutor`` and goes on with the others.  With no worker left, the
queued futures fail too.
"""

import collections
import os
import sys
import threading
import traceback
import types
import weakref

from .. import MPI
from ._base import BrokenExecutor

_TAG_CMD = 1
_TAG_REPLY = 2

_SYNC = "sync"
_INIT = "init"
_TASK = "task"

MAIN_RUN_NAME = "__worker__"

_tls = threading.local()



def os_environ_get(name, default=None):
    """``MPI4PY_FUTURES_<name>`` (or the deprecated ``MPI4PY_<name>``)."""
    value = os.environ.get(f"MPI4PY_FUTURES_{name}")
    if value is None:
        value = os.environ.get(f"MPI4PY_{name}", default)
    return value


def getenv_bool(name):
    value = os_environ_get(name)
    if value is None:
        return None
    low = value.lower()
    if low in ("true", "yes", "on", "y", "1"):
        return True
    if low in ("false", "no", "off", "n", "0"):
        return False
    import warnings

    warnings.warn(f"environment variable MPI4PY_FUTURES_{name}: unexpected value {value!r}",
                  RuntimeWarning, stacklevel=2)
    return False


# --- exceptions travelling back from workers


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised in a worker."""

    def __str__(self):
        return self.args[0] if self.args else ""


def _attach_remote_traceback(exc, text):
    exc.__cause__ = RemoteTraceback(text)
    return exc


class _RemoteException(Exception):
    """Carries a worker's exception and its formatted traceback; unpickles
    as the original exception with the traceback as its ``__cause__``."""

    def __reduce__(self):
        return _attach_remote_traceback, self.args


def _describe_exception(exc, comm):
    body = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    where = f"### Worker {comm.Get_rank()} of {comm.Get_size()} on {MPI.Get_processor_name()}"
    return f'\n{where}\n"""\n{body}"""'


def _wrap_exception(exc, comm):
    text = _describe_exception(exc, comm)
    exc.__cause__ = None
    exc.__context__ = None
    exc.__traceback__ = None
    return _RemoteException(exc, text)


def _picklable_exception(exc, comm):
    """The exception to send back: the original, or a RuntimeError holding its
    description when the original does not survive pickling."""
    wrapped = _wrap_exception(exc, comm)
    try:
        MPI.pickle.loads(MPI.pickle.dumps(wrapped))
        return wrapped
    except BaseException:  # noqa: BLE001 - any pickling failure
        text = wrapped.args[1]
        return _RemoteException(RuntimeError(f"{type(exc).__name__}: {exc}"), text)


# --- the worker's side


def get_comm_server():
    try:
        return _tls.comm_server
    except AttributeError:
        raise RuntimeError("communicator is not accessible") from None


def set_comm_server(comm):
    _tls.comm_server = comm


def del_comm_server():
    try:
        del _tls.comm_server
    except AttributeError:
        pass


def import_main(mod_name, mod_path, init_globals):
    """Load the client's main script or module as ``__worker__`` and make it
    ``sys.modules['__main__']``, so functions pickled as ``__main__.f`` resolve
    while the script's ``if __name__ == '__main__':`` block does not run."""
    module = types.ModuleType(MAIN_RUN_NAME)
    if init_globals:
        module.__dict__.update(init_globals)
        module.__name__ = MAIN_RUN_NAME
    saved_main = sys.modules["__main__"]
    sys.modules["__main__"] = sys.modules[MAIN_RUN_NAME] = module
    try:
        if mod_name:
            import importlib.util

            spec = importlib.util.find_spec(mod_name)
            if spec is not None and spec.submodule_search_locations is not None:
                spec = importlib.util.find_spec(mod_name + ".__main__")
            if spec is None or spec.loader is None:
                raise ImportError(f"no module named {mod_name!r}")
            code = spec.loader.get_code(spec.name)
            module.__spec__ = spec
            module.__file__ = spec.origin
            module.__loader__ = spec.loader
            module.__package__ = spec.parent
            exec(code, module.__dict__)  # noqa: S102 - the user's own program
        elif mod_path:
            if not getattr(sys.flags, "safe_path", False):
                sys.path[0] = os.path.realpath(os.path.dirname(mod_path))
            if os.path.isfile(mod_path) and not mod_path.endswith((".zip", ".pyz")):
                with open(mod_path, "rb") as source:
                    code = compile(source.read(), mod_path, "exec")
                module.__file__ = mod_path
                exec(code, module.__dict__)  # noqa: S102 - the user's own program
            else:
                import runpy

                module.__dict__.update(runpy.run_path(mod_path, run_name=MAIN_RUN_NAME))
        sys.modules["__main__"] = sys.modules[MAIN_RUN_NAME] = module
    except BaseException:
        sys.modules["__main__"] = saved_main
        raise


def _apply_sync(data):
    if data.get("path"):
        sys.path.extend(data["path"])
    if data.get("wdir") is not None:
        os.chdir(data["wdir"])
    if data.get("env"):
        os.environ.update({str(k): str(v) for k, v in data["env"].items()})
    if data.get("main", True) and (data.get("mod_name") or data.get("mod_path")):
        import_main(data.get("mod_name"), data.get("mod_path"), data.get("globals"))
    elif data.get("globals"):
        sys.modules["__main__"].__dict__.update(data["globals"])


def _survive_failure():
    """Ask that this worker's death fail its futures, not end the job."""
    try:
        from .._oxmpi import set_failure_survivable
        set_failure_survivable()
    except (ImportError, NotImplementedError):
        pass  # the system-MPI backend: the library's launcher decides


def serve(comm, root):
    """Run commands from ``root`` until it says stop."""
    _survive_failure()
    while True:
        try:
            message = comm.recv(source=root, tag=_TAG_CMD)
        except BaseException as exc:  # noqa: BLE001 - e.g. a task that fails to unpickle
            reply = (False, _picklable_exception(exc, comm))
        else:
            if message is None:
                return
            kind, data = message
            del message
            try:
                if kind == _TASK:
                    fn, args, kwargs = data
                    del data
                    reply = (True, fn(*args, **kwargs))
                    del fn, args, kwargs
                elif kind == _INIT:
                    initializer, initargs, initkwargs = data
                    initializer(*initargs, **initkwargs)
                    reply = (True, None)
                elif kind == _SYNC:
                    _apply_sync(data)
                    reply = (True, None)
                else:
                    raise RuntimeError(f"oxmpi.futures: unknown command {kind!r}")
            except BaseException as exc:  # noqa: BLE001 - every failure goes back to the client
                reply = (False, _picklable_exception(exc, comm))
        try:
            comm.send(reply, dest=root, tag=_TAG_REPLY)
        except BaseException as exc:  # noqa: BLE001 - e.g. an unpicklable result
            comm.send((False, _picklable_exception(exc, comm)), dest=root, tag=_TAG_REPLY)
        del reply


# --- the client's side


class _Job:
    __slots__ = ("kind", "data", "future", "on_reply", "request")

    def __init__(self, kind, data, future=None, on_reply=None):
        self.kind = kind
        self.data = data
        self.future = future
        self.on_reply = on_reply
        self.request = None


def _start(future):
    """Mark a queued future running; False when it was cancelled (the
    canceller may have notified its waiters already)."""
    if future.cancelled():
        return False
    try:
        return future.set_running_or_notify_cancel()
    except RuntimeError:
        return False


class Client:
    """Hands jobs to the workers of ``comm`` (all ranks but ``root``)."""

    def __init__(self, comm, root):
        self.comm = comm
        self.root = root
        self.workers = [rank for rank in range(comm.Get_size()) if rank != root]
        self.cond = threading.Condition()
        self.free = collections.deque(self.workers)
        self.jobs = collections.deque()
        self.pinned = {rank: collections.deque() for rank in self.workers}
        self.busy = {}
        # Ranks of workers that died (see the module doc).
        self.dead = set()
        # Why the receiver gave up, if it did: no job can complete then.
        self.broken = None
        self.synced = False
        self.closing = False
        self.receiver = None

    # dispatching: called with no lock held, from any thread

    def _take_sends(self):
        """Under the lock: pairs (worker, job) to send now."""
        sends = []
        for rank in list(self.free):
            if self.pinned[rank]:
                self.free.remove(rank)
                job = self.pinned[rank].popleft()
                self.busy[rank] = job
                sends.append((rank, job))
        while self.free and self.jobs:
            job = self.jobs.popleft()
            if job.future is not None and not _start(job.future):
                continue
            rank = self.free.popleft()
            self.busy[rank] = job
            sends.append((rank, job))
        if sends:
            self._start_receiver()
            self.cond.notify_all()
        return sends

    def _send(self, sends):
        while sends:
            rank, job = sends.pop(0)
            try:
                job.request = self.comm.isend((job.kind, job.data), dest=rank, tag=_TAG_CMD)
                job.data = None
            except MPI.Exception as exc:
                if not _is_failure(exc):
                    raise
                # The worker is known dead: the job never reached it, so it
                # goes back to the queue for another worker.
                with self.cond:
                    del self.busy[rank]
                    if job.kind == _TASK:
                        self.jobs.appendleft(job)
                    else:
                        self.pinned[rank].appendleft(job)
                self._workers_failed()
                with self.cond:
                    sends.extend(self._take_sends())
            except BaseException as exc:  # noqa: BLE001 - e.g. an unpicklable task
                with self.cond:
                    del self.busy[rank]
                    self.free.appendleft(rank)
                    sends.extend(self._take_sends())
                self._complete(job, False, exc)

    def dispatch(self):
        with self.cond:
            sends = self._take_sends()
        self._send(sends)

    def push(self, jobs):
        with self.cond:
            if self.closing:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            if self.broken is not None:
                raise BrokenExecutor(self.broken)
            if not self.workers:
                raise BrokenExecutor("every worker of the pool has died")
            self.jobs.extend(jobs)
            sends = self._take_sends()
        self._send(sends)

    @staticmethod
    def _complete(job, ok, value):
        if job.on_reply is not None:
            job.on_reply(ok, value)
        elif job.future is not None:
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    # receiving

    def _start_receiver(self):
        if self.receiver is None:
            self.receiver = threading.Thread(target=self._receive, name="oxmpi.futures.receiver",
                                             daemon=True)
            self.receiver.start()

    def _receive(self):
        try:
            self._receive_replies()
        except BaseException as exc:  # noqa: BLE001 - every future must learn of it
            self._abandon(exc)

    def _abandon(self, exc):
        """The receiver cannot go on (an error it cannot handle, e.g. a
        process failure on a backend that cannot tell which): fail every job
        in flight or queued, and refuse new ones."""
        lost = []
        with self.cond:
            self.broken = f"the pool's receiver failed: {type(exc).__name__}: {exc}"
            lost.extend(self.busy.values())
            self.busy.clear()
            for queue in self.pinned.values():
                lost.extend(queue)
                queue.clear()
            lost.extend(self.jobs)
            self.jobs.clear()
            self.cond.notify_all()
        for job in lost:
            if job.future is None or not job.future.done():
                try:
                    self._complete(job, False, BrokenExecutor(self.broken))
                except BaseException:  # noqa: BLE001
                    traceback.print_exc()

    def _receive_replies(self):
        status = MPI.Status()
        while True:
            with self.cond:
                while not self.busy and not self.closing:
                    self.cond.wait()
                if not self.busy:
                    return
            try:
                message = self.comm.mprobe(source=MPI.ANY_SOURCE, tag=_TAG_REPLY, status=status)
            except MPI.Exception as exc:
                if not _is_failure(exc):
                    raise
                self._workers_failed()
                continue
            rank = status.Get_source()
            try:
                ok, value = message.recv()
            except BaseException as exc:  # noqa: BLE001 - a result that fails to unpickle
                ok, value = False, exc
            del message
            with self.cond:
                job = self.busy.pop(rank, None)
                if job is None:
                    # The reply of a worker already retired as dead (its
                    # job was failed then): nothing waits for it.
                    continue
                self.free.append(rank)
                sends = self._take_sends()
                self.cond.notify_all()
            if job.request is not None:
                job.request.wait()
                job.request = None
            try:
                self._complete(job, ok, value)
            except BaseException:  # noqa: BLE001 - a failing callback must not stop the receiver
                traceback.print_exc()
            del job, value
            self._send(sends)

    def _workers_failed(self):
        """Some workers died: retire them and fail the jobs they held (and,
        with no worker left, every queued job)."""
        failed = self.comm.Get_failed()
        peers = self.comm.Get_remote_group() if self.comm.Is_inter() else self.comm.Get_group()
        ranks = MPI.Group.Translate_ranks(failed, None, peers)
        self.comm.Ack_failed()
        lost = []
        with self.cond:
            for rank in ranks:
                if rank == MPI.UNDEFINED or rank not in self.pinned or rank in self.dead:
                    continue
                self.dead.add(rank)
                self.workers.remove(rank)
                if rank in self.free:
                    self.free.remove(rank)
                why = f"worker {rank} of the pool died"
                job = self.busy.pop(rank, None)
                if job is not None:
                    lost.append((job, BrokenExecutor(f"{why} while it ran this task")))
                lost.extend((job, BrokenExecutor(why)) for job in self.pinned[rank])
                self.pinned[rank].clear()
            if not self.workers:
                lost.extend((job, BrokenExecutor("every worker of the pool has died"))
                            for job in self.jobs if job.future is None or _start(job.future))
                self.jobs.clear()
            self.cond.notify_all()
        for job, exc in lost:
            try:
                self._complete(job, False, exc)
            except BaseException:  # noqa: BLE001 - a failing callback must not stop the client
                traceback.print_exc()

    def close(self):
        """Run what is queued, then stop the workers and the receiver."""
        with self.cond:
            while self.jobs or self.busy or any(self.pinned.values()):
                self.cond.wait()
            self.closing = True
            self.cond.notify_all()
        requests = []
        for rank in list(self.workers):
            try:
                requests.append(self.comm.isend(None, dest=rank, tag=_TAG_CMD))
            except MPI.Exception as exc:
                if not _is_failure(exc):
                    raise
        for request in requests:
            try:
                request.wait()
            except MPI.Exception as exc:
                if not _is_failure(exc):
                    raise
        if self.receiver is not None:
            self.receiver.join()


def _is_failure(exc):
    """Whether an MPI.Exception says that a process has failed."""
    return exc.Get_error_class() in (MPI.ERR_PROC_FAILED, MPI.ERR_PROC_FAILED_PENDING)


class ClientPool:
    """One executor's view of a Client: its boot (sync, initializer), the
    futures it still owes and its shutdown.

    The pool's thread boots it (jobs submitted meanwhile wait in ``held``),
    then waits for the executor to shut down or to be garbage-collected,
    and lets the submitted jobs finish. ``thread``, ``queue`` (jobs not
    handed out yet) and ``event`` (set once booted) are mpi4py's names,
    which programs and tests look at."""

    def __init__(self, executor, client):
        self.client = client
        self.options = dict(executor._options)
        self.cond = threading.Condition()
        self.ready = False
        self.broken = None
        self.held = []
        self.unfinished = set()
        self.waiting = 0
        self.size = len(client.workers) if client is not None else 0
        # Weak: an executor nobody holds shuts its pool down.
        self._executor_ref = weakref.ref(executor, lambda _ref: self._stop.set())
        self._stop = threading.Event()
        self.queue = collections.deque()
        self.event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="oxmpi.futures.pool", daemon=True)
        self.thread.start()

    @property
    def _executor(self):
        return self._executor_ref() or types.SimpleNamespace()

    def _run(self):
        try:
            started = self._start()
            self.event.set()
            if started:
                self._stop.wait()
                self._finish()
        finally:
            self.queue.clear()
            self.event.set()

    def _start(self):
        """Boots the pool; False if it broke before it had workers."""
        try:
            self._boot()
        except BaseException as exc:  # noqa: BLE001 - reported through the futures
            self._broken_by("cannot set up the workers", exc)
            return True
        with self.cond:
            # Booted with nothing to run first: let the held jobs go.
            release = []
            if self.ready and self.held:
                release, self.held = self.held, []
        self._release(release)
        return True

    def _release(self, jobs):
        """Hands the jobs held during boot to the workers, or fails them if
        the pool broke meanwhile."""
        if not jobs:
            return
        try:
            self.client.push(jobs)
        except (BrokenExecutor, RuntimeError) as exc:
            with self.cond:
                if self.broken is None:
                    self.broken = str(exc)
            self._fail(jobs)

    def _finish(self):
        with self.cond:
            while not self.ready or self.unfinished:
                self.cond.wait()

    def _broken_by(self, what, exc):
        with self.cond:
            self.broken = f"{what}: {type(exc).__name__}: {exc}"
            self.ready = True
            release, self.held = self.held, []
            self.cond.notify_all()
        self._fail(release)

    def _boot(self):
        client = self.client
        steps = []
        with client.cond:
            if not client.synced:
                steps.append((_SYNC, sync_data(self.options)))
        initializer = self.options.get("initializer")
        if initializer is not None:
            init = (initializer, tuple(self.options.get("initargs", ())),
                    dict(self.options.get("initkwargs", {})))
            steps.append((_INIT, init))
        if not steps:
            self.ready = True
            return
        # Every step pinned to every worker under one lock: another pool
        # made right after this one must not get its setup or tasks to a
        # worker before this pool's sync.
        with client.cond:
            if steps[0][0] == _SYNC and client.synced:
                steps.pop(0)  # another pool synced meanwhile (and pinned it first)
            if steps and steps[0][0] == _SYNC:
                client.synced = True
            if not steps:
                self.ready = True
                return
            self.waiting = len(steps) * len(client.workers)
            for kind, data in steps:
                for rank in client.workers:
                    client.pinned[rank].append(
                        _Job(kind, data, on_reply=self._boot_reply_for(kind)))
            sends = client._take_sends()
        client._send(sends)

    def _boot_reply_for(self, kind):
        def on_reply(ok, value):
            release = None
            with self.cond:
                self.waiting -= 1
                if not ok and self.broken is None:
                    what = "initializer failed" if kind == _INIT else "worker setup failed"
                    self.broken = f"{what}: {type(value).__name__}: {value}"
                if self.waiting == 0:
                    self.ready = True
                    release, self.held = self.held, []
                    self.cond.notify_all()
            if release is not None:
                if self.broken is not None:
                    self._fail(release)
                else:
                    self._release(release)
        return on_reply

    def _fail(self, jobs):
        executor = self._executor
        executor._broken = self.broken
        for job in jobs:
            if _start(job.future):
                job.future.set_exception(BrokenExecutor(self.broken))

    def wait(self):
        with self.cond:
            while not self.ready:
                self.cond.wait()
        if self.broken is not None:
            self._executor._broken = self.broken

    def push(self, future, task):
        job = _Job(_TASK, task, future)
        with self.cond:
            if self.broken is not None:
                raise BrokenExecutor(self.broken)
            self.unfinished.add(future)
            held = not self.ready
            if held:
                self.held.append(job)
        future.add_done_callback(self._finished)
        if not held:
            try:
                self.client.push([job])
            except BrokenExecutor as exc:
                with self.cond:
                    self.broken = str(exc)
                    self.unfinished.discard(future)
                    self.cond.notify_all()
                self._executor._broken = self.broken
                raise

    def _finished(self, future):
        with self.cond:
            self.unfinished.discard(future)
            if not self.unfinished:
                self.cond.notify_all()

    def done(self):
        # shutdown(wait=False): the pool ends once its jobs are done.
        self._stop.set()

    def cancel(self):
        with self.cond:
            futures = list(self.unfinished)
        for future in futures:
            if future.cancel():
                future.set_running_or_notify_cancel()

    def join(self):
        self._stop.set()
        self.thread.join()


def sync_data(options):
    """What workers need to load the client's program (sent once)."""
    data = {key: options[key] for key in ("path", "wdir", "env", "globals")
            if options.get(key) is not None}
    data["main"] = bool(options.get("main", True))
    # Workers load our main module as __worker__: what they send back
    # refers to it by that name.
    sys.modules.setdefault(MAIN_RUN_NAME, sys.modules["__main__"])
    if data["main"]:
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        name = getattr(spec, "name", None)
        path = getattr(main, "__file__", None)
        if name is not None:
            data["mod_name"] = name
        elif path is not None:
            data["mod_path"] = os.path.abspath(path)
    if "path" in data:
        data["path"] = list(data["path"])
    if "env" in data:
        data["env"] = dict(data["env"])
    if "globals" in data:
        data["globals"] = dict(data["globals"])
    return data


class ThreadPool:
    """Tasks run in threads of this process (one MPI process: no workers).

    ``get_comm_workers()`` in these threads is ``MPI.COMM_SELF``."""

    def __init__(self, executor, size=None):
        from concurrent.futures import ThreadPoolExecutor

        options = executor._options
        if size is None:
            size = options.get("max_workers", 1)
        initializer = options.get("initializer")
        initargs = tuple(options.get("initargs", ()))
        initkwargs = dict(options.get("initkwargs", {}))

        def init():
            set_comm_server(MPI.COMM_SELF)
            if initializer is not None:
                initializer(*initargs, **initkwargs)

        self.size = size
        self._executor = executor
        self._threads = ThreadPoolExecutor(max_workers=size, initializer=init,
                                           thread_name_prefix="oxmpi.futures")

    def wait(self):
        pass

    def push(self, future, task):
        fn, args, kwargs = task

        def run():
            # Our future is cancelled here, never the pool's: Python's
            # ThreadPoolExecutor fails (InvalidStateError, then a hang) when
            # its initializer breaks the pool after one of its futures was
            # cancelled.
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the future
                future.set_exception(exc)
            else:
                future.set_result(result)

        def forward(done):
            # Only when `run` did not run: the pool broke or was cancelled.
            if done.cancelled():
                if future.cancel():
                    future.set_running_or_notify_cancel()
                return
            exc = done.exception()
            if exc is not None and future.set_running_or_notify_cancel():
                if isinstance(exc, BrokenExecutor):
                    self._executor._broken = "initializer failed"
                future.set_exception(exc)

        self._threads.submit(run).add_done_callback(forward)

    def done(self):
        self._threads.shutdown(wait=False)

    def cancel(self):
        self._threads.shutdown(wait=False, cancel_futures=True)

    def join(self):
        self._threads.shutdown(wait=True)


def get_max_workers():
    """Workers to spawn when the executor does not say: MPI4PY_FUTURES_MAX_WORKERS,
    else the universe's free room (UNIVERSE_SIZE minus COMM_WORLD's size), at least 1."""
    env = os_environ_get("MAX_WORKERS")
    if env is not None:
        return int(env)
    universe = MPI.COMM_WORLD.Get_attr(MPI.UNIVERSE_SIZE)
    if universe is not None:
        return max(universe - MPI.COMM_WORLD.Get_size(), 1)
    return 1


def get_spawn_module():
    return __spec__.parent + ".server"


def client_spawn(python_exe=None, python_args=None, max_workers=None, mpi_info=None):
    """Spawn the workers of one executor; returns the intercommunicator."""
    if python_exe is None:
        python_exe = sys.executable
    args = list(python_args or ()) + ["-m", get_spawn_module()]
    if max_workers is None:
        max_workers = get_max_workers()
    if mpi_info is None:
        mpi_info = {"soft": f"1:{max_workers}"}
    info = MPI.Info.Create()
    try:
        info.update(mpi_info)
        return MPI.COMM_SELF.Spawn(python_exe, args, max_workers, info)
    finally:
        info.Free()


class SpawnPool(ClientPool):
    """Workers spawned for one executor (``MPI.Comm.Spawn``) by the pool's
    thread; stopped and disconnected when the executor shuts down."""

    def __init__(self, executor):
        self._comms = None
        _live_spawn_pools.add(self)
        super().__init__(executor, None)

    def _run(self):
        try:
            super()._run()
        finally:
            _live_spawn_pools.discard(self)

    def _connect(self):
        """The intercommunicator to the workers; what went wrong, said."""
        options = self.options
        return "cannot spawn workers", lambda: client_spawn(
            options.get("python_exe"), options.get("python_args"),
            options.get("max_workers"), options.get("mpi_info"))

    def _start(self):
        what, connect = self._connect()
        try:
            intercomm = connect()
            merged = intercomm.Merge(False)
        except BaseException as exc:  # noqa: BLE001 - reported through the futures
            self._broken_by(what, exc)
            return False
        self._comms = (intercomm, merged)
        client = Client(merged, 0)
        with self.cond:
            self.client = client
            self.size = len(client.workers)
        return super()._start()

    def _finish(self):
        super()._finish()
        self.client.close()
        intercomm, merged = self._comms
        merged.Free()
        intercomm.Disconnect()


class ServicePool(SpawnPool):
    """The workers of a server job (``mpiexec -n N python -m
    oxmpi.futures.server``, another launch), reached through its service
    name or its (host, port) address: ``MPIPoolExecutor(service=...)``."""

    def _connect(self):
        options = self.options
        return "cannot connect to the workers' service", lambda: client_connect(
            options.get("service"), options.get("mpi_info"))


_live_spawn_pools = set()


# --- server jobs (``python -m oxmpi.futures.server`` started by hand)

SERVICE = __spec__.parent.replace("oxmpi.", "mpi4py.", 1)
SERVER_HOST = "localhost"
SERVER_BIND = ""
SERVER_PORT = 31415


def get_service():
    return os_environ_get("SERVICE", SERVICE)


def get_server_host():
    return os_environ_get("SERVER_HOST", SERVER_HOST)


def get_server_bind():
    return os_environ_get("SERVER_BIND", SERVER_BIND)


def get_server_port():
    return int(os_environ_get("SERVER_PORT", SERVER_PORT))


def _info_of(mpi_info):
    if not mpi_info:
        return MPI.INFO_NULL
    info = MPI.Info.Create()
    info.update(mpi_info)
    return info


def client_lookup(address):
    """The MPI port a server hands out at a TCP address (over Comm.Join)."""
    import socket

    host, port = address
    sock = socket.create_connection((host or get_server_host(), int(port or get_server_port())))
    try:
        peer = MPI.Comm.Join(sock.fileno())
    finally:
        sock.close()
    try:
        return peer.recv(source=0)
    finally:
        peer.Disconnect()


def server_publish(address, mpi_port):
    """Hands ``mpi_port`` to the first client that connects to a TCP address."""
    import socket

    host, port = address
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host or get_server_bind(), int(port or get_server_port())))
    listener.listen(0)
    try:
        sock = listener.accept()[0]
    finally:
        listener.close()
    try:
        peer = MPI.Comm.Join(sock.fileno())
    finally:
        sock.close()
    peer.send(mpi_port, dest=0)
    peer.Disconnect()


def client_connect(service, mpi_info=None):
    """The intercommunicator to a server job: ``service`` is its published
    name (None: MPI4PY_FUTURES_SERVICE, else 'mpi4py.futures') or its
    (host, port) address."""
    info = _info_of(mpi_info)
    try:
        if isinstance(service, (list, tuple)):
            port = client_lookup(service)
        else:
            port = MPI.Lookup_name(service or get_service(), info)
        return MPI.COMM_SELF.Connect(port, info, root=0)
    finally:
        if info != MPI.INFO_NULL:
            info.Free()


def server_accept(service, mpi_info=None, comm=None, root=0):
    """Waits for one client: publishes a port under ``service`` (a name, or
    a (bind, port) address), accepts, and withdraws the name."""
    comm = MPI.COMM_WORLD if comm is None else comm
    port = None
    info = MPI.INFO_NULL
    if comm.Get_rank() == root:
        info = _info_of(mpi_info)
        port = MPI.Open_port(info)
        if isinstance(service, (list, tuple)):
            server_publish(service, port)
            service = None
        else:
            service = service or get_service()
            MPI.Publish_name(service, port, info)
    intercomm = comm.Accept(port, info, root)
    if port is not None:
        if service is not None:
            MPI.Unpublish_name(service, port, info)
        MPI.Close_port(port)
    if info != MPI.INFO_NULL:
        info.Free()
    return intercomm


def server_main_service(argv=None):
    """``python -m oxmpi.futures.server [--service NAME | --bind HOST --port
    PORT] [--info k=v,...]``: the job serves the first client that connects,
    then ends."""
    from getopt import getopt

    optlist, _ = getopt(sys.argv[1:] if argv is None else argv, "",
                        ["bind=", "port=", "service=", "info="])
    options = {opt[2:]: val for opt, val in optlist}
    if "bind" in options or "port" in options:
        service = (options.get("bind") or get_server_bind(),
                   int(options.get("port") or get_server_port()))
    else:
        service = options.get("service") or get_service()
    info = dict(kv.split("=", 1) for kv in options.get("info", "").split(",") if kv)
    intercomm = server_accept(service, info)
    merged = intercomm.Merge(True)
    set_comm_server(MPI.COMM_WORLD)
    try:
        serve(merged, 0)
    finally:
        del_comm_server()
        merged.Free()
        intercomm.Disconnect()


def _join_spawn_pools():
    """At exit: finish the executors nobody shut down, so their workers
    leave before MPI is finalized."""
    for pool in list(_live_spawn_pools):
        pool.join()


import atexit as _atexit  # noqa: E402

_atexit.register(_join_spawn_pools)


# --- the shared pool of ``python -m oxmpi.futures``


class SharedWorkers:
    """The workers of ``mpiexec -n N python -m oxmpi.futures``: rank 0 of
    COMM_WORLD is the client, ranks 1..N-1 serve every executor it makes."""

    def __init__(self):
        world = MPI.COMM_WORLD
        self.comm = world.Dup()
        self.rank = self.comm.Get_rank()
        self.root = 0
        # The workers' own communicator (get_comm_workers); collective over all.
        self.workers_comm = self.comm.Split(0 if self.rank == self.root else 1, 0)
        self.client = Client(self.comm, self.root) if self.rank == self.root else None

    def pool_for(self, executor):
        if self.client is None or not self.client.workers:
            return ThreadPool(executor, size=1)
        return ClientPool(executor, self.client)

    def serve(self):
        set_comm_server(self.workers_comm)
        try:
            serve(self.comm, self.root)
        finally:
            del_comm_server()

    def close(self):
        if self.client is not None:
            self.client.close()


_shared_pool = None
# mpi4py's name for it, which programs test (``_core.SharedPool is not None``).
SharedPool = None


def shared_pool():
    return _shared_pool


def set_shared_pool(pool):
    global _shared_pool, SharedPool
    _shared_pool = SharedPool = pool


def setup_mpi_threads():
    """oxmpi always provides MPI_THREAD_MULTIPLE: calls need no serializing."""


def serialized(function):
    """mpi4py serializes MPI calls below THREAD_MULTIPLE; oxmpi needs not."""
    if serialized.lock is None:
        return function

    def wrapper(*args, **kwargs):
        with serialized.lock:
            return function(*args, **kwargs)

    return wrapper


serialized.lock = None


def worker_pool(executor):
    """The pool an MPIPoolExecutor gets: the shared workers when there are
    any, else it would have to spawn them."""
    if _shared_pool is not None:
        return _shared_pool.pool_for(executor)
    if "service" in executor._options:
        return ServicePool(executor)
    return SpawnPool(executor)
