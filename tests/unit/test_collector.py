"""The collector is off while a store loads, and back as it was afterwards."""

from __future__ import annotations

import gc

import pytest

from mqttish import collector


def _load_that_fails() -> None:
    with collector.paused():
        assert not gc.isenabled()
        raise RuntimeError("the load failed")


def test_no_collection_while_paused_and_the_collector_back_afterwards() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        _load_that_fails()
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with collector.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
