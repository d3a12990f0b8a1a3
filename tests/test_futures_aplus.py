"""oxmpi.futures.aplus: chaining, catching, cancelling and cycle detection."""

import pytest

from oxmpi.futures.aplus import ThenableFuture


def test_then_success_and_failure():
    f = ThenableFuture()
    g = f.then(lambda r: r + 1)
    f.set_result(1)
    assert g.result() == 2
    f = ThenableFuture()
    g = f.then(None, lambda e: ValueError(f"wrapped {e}"))
    f.set_exception(KeyError("k"))
    with pytest.raises(ValueError, match="wrapped"):
        g.result()


def test_catch_without_callback_swallows():
    f = ThenableFuture()
    g = f.catch()
    f.set_exception(Exception("sad"))
    assert g.exception() is None and g.result() is None


def test_cancel_propagates_forward_only():
    f = ThenableFuture()
    g = f.then()
    g.cancel()
    f.set_result(1)
    assert f.result() == 1 and g.cancelled()
    f = ThenableFuture()
    g = f.then()
    f.cancel()
    assert g.cancelled()


def test_follows_returned_future_and_detects_cycles():
    inner = ThenableFuture()
    f = ThenableFuture()
    g = f.then(lambda _: inner)
    f.set_result(0)
    assert not g.done()
    inner.set_result("late")
    assert g.result() == "late"
    f = ThenableFuture()
    g = f.then(lambda _: g)
    f.set_result(1)
    with pytest.raises(RuntimeError, match="chain cycle detected"):
        g.result()
