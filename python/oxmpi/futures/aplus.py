"""Promises/A+-style chaining for futures (``mpi4py.futures.aplus``).

``then(on_success, on_failure)`` returns a new future settled by the
callback's outcome: a returned value resolves it, a returned exception
instance or a raised exception rejects it, a returned future (or anything
with ``then``) is followed until it settles. Cancelling the original
cancels every future chained from it; cancelling a chained future leaves
the original alone.
"""

from concurrent.futures import Future

__all__ = ["ThenableFuture", "then", "catch"]


class ThenableFuture(Future):
    """A future with ``then`` and ``catch``."""

    def then(self, on_success=None, on_failure=None):
        return then(self, on_success, on_failure)

    def catch(self, on_failure=None):
        return catch(self, on_failure)


def then(future, on_success=None, on_failure=None):
    """Chains callbacks to ``future``; returns the future of their outcome."""
    new = ThenableFuture()
    future.add_done_callback(lambda done: _settle_from(new, done, on_success, on_failure))
    return new


def catch(future, on_failure=None):
    """``then(future, None, on_failure)``; without a callback the failure is
    caught and the new future resolves to None."""
    return then(future, None, on_failure if on_failure is not None else _ignore)


def _ignore(_exc):
    return None


def _settle_from(new, done, on_success, on_failure):
    if done.cancelled():
        new.cancel()
        return
    if new.cancelled():
        return
    exc = done.exception()
    try:
        if exc is None:
            value = on_success(done.result()) if on_success is not None else done.result()
        elif on_failure is not None:
            value = on_failure(exc)
            if not isinstance(value, BaseException):
                _resolve(new, value)
                return
            exc = value
            raise exc
        else:
            raise exc
    except BaseException as err:  # noqa: BLE001 - a rejection, whatever it is
        if not new.cancelled() and not new.done():
            new.set_exception(err)
        return
    _resolve(new, value)


def _resolve(new, value, seen=None):
    """Resolves `new` with `value`, following futures and thenables; a chain
    that leads back to a future already on it is a RuntimeError."""
    seen = {id(new)} if seen is None else seen
    while isinstance(value, Future):
        if id(value) in seen:
            _reject(new, RuntimeError("chain cycle detected"))
            return
        seen.add(id(value))
        if not value.done():
            value.add_done_callback(lambda done: _follow(new, done, seen))
            return
        if value.cancelled():
            new.cancel()
            return
        exc = value.exception()
        if exc is not None:
            _reject(new, exc)
            return
        value = value.result()
    then_method = getattr(value, "then", None)
    if callable(then_method):
        try:
            then_method(lambda v: _resolve(new, v, seen), lambda e: _reject(new, e))
        except BaseException as err:  # noqa: BLE001
            _reject(new, err)
        return
    if not new.cancelled() and not new.done():
        new.set_result(value)


def _follow(new, done, seen):
    if done.cancelled():
        new.cancel()
    elif done.exception() is not None:
        _reject(new, done.exception())
    else:
        _resolve(new, done.result(), seen)


def _reject(new, err):
    if not new.cancelled() and not new.done():
        new.set_exception(err if isinstance(err, BaseException) else Exception(err))
