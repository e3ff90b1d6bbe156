"""SQLite, Redis and memory stores load the same state for the same journal.

The memory store applies records one by one, as the rules say; the SQLite
store reduces each batch to net row changes; the Redis store (the cluster's)
applies it in a Lua script with reference counts. Random journals in a small world
(few clients, ids and topics, so records keep meeting the same rows), with
the clock moving, housekeeping and restarts in between, must leave both in
the same state.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from tests.unit.store_journals import Clock, RedisForStores, Step, StoreUnderTest, steps


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


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_redis_and_memory_stores_agree(redis_for_stores: RedisForStores, run: list[Step]
                                       ) -> None:
    clock = Clock()
    memory = StoreUnderTest("memory", Path("unused"), clock)
    redis = StoreUnderTest("redis", Path("unused"), clock, redis_for_stores)
    try:
        for action, changes, seconds in run:
            for store in (memory, redis):
                if action == "apply":
                    store.store.apply(changes)
                elif action == "housekeeping":
                    store.store.housekeeping()
            if action == "restart":
                assert redis.restart().load() == memory.restart().load()
            assert redis.store.stats().messages == memory.store.stats().messages
            assert redis.store.stats().sessions == memory.store.stats().sessions
            clock.advance(seconds)
        assert redis.restart().load() == memory.restart().load()
    finally:
        redis.store.close()

