"""Combinators over futures: ``collect`` and ``compose``."""

import threading

from ._base import Future

__all__ = ["collect", "compose"]


def collect(fs):
    """A new future whose result is the list of the results of ``fs``.

    It fails with the first exception among ``fs``, is cancelled when one of
    them is, and cancelling it cancels those of ``fs`` still pending."""
    fs = list(fs)
    if not fs:
        out = Future()
        out.set_result([])
        return out
    out = fs[0].__class__()
    lock = threading.Lock()
    results = [None] * len(fs)
    positions = {}
    for index, item in enumerate(fs):
        positions.setdefault(item, []).append(index)
    remaining = [len(positions)]

    def settle(outcome):
        # ``outcome``: ("cancel",), ("error", exc) or ("done", list)
        if outcome[0] == "cancel":
            out.cancel()
        elif out.set_running_or_notify_cancel():
            if outcome[0] == "error":
                out.set_exception(outcome[1])
            else:
                out.set_result(outcome[1])

    def on_item(item):
        with lock:
            if remaining[0] <= 0 or out.done():
                return
            if item.cancelled():
                remaining[0] = 0
                outcome = ("cancel",)
            elif item.exception() is not None:
                remaining[0] = 0
                outcome = ("error", item.exception())
            else:
                for index in positions[item]:
                    results[index] = item.result()
                remaining[0] -= 1
                if remaining[0]:
                    return
                outcome = ("done", results)
        settle(outcome)

    def on_out(_):
        for item in positions:
            item.cancel()
        if out.cancelled():
            out.set_running_or_notify_cancel()

    out.add_done_callback(on_out)
    for item in list(positions):
        item.add_done_callback(on_item)
    return out


def compose(future, resulthook=None, excepthook=None):
    """A new future completed from ``future`` through the hooks.

    On success its result is ``resulthook(result)`` (or the result itself);
    on failure, ``excepthook(exception)`` is its exception when that returns
    an exception and its result otherwise (no hook: the same exception).  An
    exception raised by a hook fails it.  Cancelling either cancels the other."""
    out = future.__class__()

    def on_out(done):
        if done.cancelled():
            done.set_running_or_notify_cancel()
            future.cancel()

    def on_in(done):
        try:
            if done.cancelled():
                out.cancel()
                return
            exc = done.exception()
            if exc is not None:
                value = excepthook(exc) if excepthook else exc
                if isinstance(value, BaseException):
                    out.set_exception(value)
                else:
                    out.set_result(value)
            else:
                value = done.result()
                out.set_result(resulthook(value) if resulthook else value)
        except BaseException as error:  # noqa: BLE001 - a hook's failure is the result
            if not out.done():
                out.set_exception(error)

    out.add_done_callback(on_out)
    future.add_done_callback(on_in)
    return out
