"""SQLite and memory stores load the same state for the same journal.

The memory store applies records one by one, as the rules say; the SQLite
store reduces each batch to net row changes. Random journals in a small world
(few clients, ids and topics, so records keep meeting the same rows), with
the clock moving, housekeeping and restarts in between, must leave both in
the same state.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings

from tests.unit.store_journals import Clock, Step, StoreUnderTest, steps


@settings(max_examples=300, deadline=None)
@given(steps)
def test_sqlite_and_memory_stores_agree(run: list[Step]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        clock = Clock()
        memory = StoreUnderTest("memory", Path(directory) / "unused", clock)
        sqlite = StoreUnderTest("sqlite", Path(directory) / "mqttish.db", clock)
        try:
            for action, changes, seconds in run:
                for store in (memory, sqlite):
                    if action == "apply":
                        store.store.apply(changes)
                    elif action == "housekeeping":
                        store.store.housekeeping()
                if action == "restart":
                    assert sqlite.restart().load() == memory.restart().load()
                assert sqlite.store.stats().messages == memory.store.stats().messages
                assert sqlite.store.stats().sessions == memory.store.stats().sessions
                clock.advance(seconds)
            assert sqlite.restart().load() == memory.restart().load()
        finally:
            sqlite.store.close()
