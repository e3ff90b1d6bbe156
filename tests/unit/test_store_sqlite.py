"""The SQLite store's file: what it refuses, how it migrates, that it does not grow forever."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from mqttish.core.store import (
    DeliverySaved,
    MessageSaved,
    RetainedSaved,
    SessionDeleted,
    SessionSaved,
    StoreError,
    SubscriptionSaved,
)
from mqttish.persistence.schema import MIGRATIONS, open_database
from mqttish.persistence.sqlite import SqliteStore
from mqttish.protocol.packets import SubscriptionRequest
from tests.unit.store_journals import Clock


def filled_store(path: Path, messages: int = 50, payload: bytes = b"x" * 100) -> None:
    """A store with a session, a subscription, queued messages and a retained one."""
    store = SqliteStore(path)
    store.apply([SessionSaved("s", 3600, False, 3600.0),
                 SubscriptionSaved("s", SubscriptionRequest("a/#", 1)),
                 MessageSaved(1, "r", b"retained", 0, True), RetainedSaved("r", 1)])
    store.apply([change for n in range(2, messages + 2)
                 for change in (MessageSaved(n, "a/b", payload, 1, False),
                                DeliverySaved("s", n, n, 1, False))])
    store.close()


def refused(path: Path) -> str:
    """The refusal to open `path`; the file is left exactly as it was."""
    before = path.read_bytes()
    with pytest.raises(StoreError) as error:
        SqliteStore(path)
    assert path.read_bytes() == before
    message = str(error.value)
    assert str(path) in message
    return message


def test_a_store_comes_back_after_a_restart(tmp_path: Path) -> None:
    filled_store(tmp_path / "mqttish.db", messages=20)
    store = SqliteStore(tmp_path / "mqttish.db")
    state = store.load()
    assert [m.payload for m in state.retained] == [b"retained"]
    assert [d.sequence for d in state.sessions[0].deliveries] == list(range(2, 22))
    assert (store.stats().messages, store.stats().sessions) == (21, 1)
    assert store.stats().size_bytes == store.size_bytes() > 0


@pytest.mark.parametrize("empty", [b"", None])
def test_an_empty_or_missing_file_is_a_new_store(tmp_path: Path, empty: bytes | None) -> None:
    path = tmp_path / "mqttish.db"
    if empty is not None:
        path.write_bytes(empty)
    assert SqliteStore(path).load().sessions == ()


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mqttish.db"
    path.write_bytes(b"retained messages, in my own format\n" * 200)
    assert "not a readable mqttish store" in refused(path)


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mqttish.db"
    with closing(sqlite3.connect(path)) as other:
        other.execute("CREATE TABLE accounts (name TEXT)")
    assert "not an mqttish store" in refused(path)


def test_a_damaged_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mqttish.db"
    filled_store(path, messages=200)
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 6 * page
    data[2 * page:len(data) - page] = b"\xa5" * (len(data) - 3 * page)  # all but the schema
    path.write_bytes(bytes(data))
    message = refused(path)
    assert "damaged" in message or "not a readable" in message
    assert "backup" in message


def test_a_store_written_by_a_newer_mqttish_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mqttish.db"
    filled_store(path)
    open_database(path, "normal", (*MIGRATIONS, _add_notes_to_sessions)).close()
    message = refused(path)
    assert f"store schema {len(MIGRATIONS) + 1}" in message
    assert "upgrade mqttish" in message


def test_a_store_in_use_by_another_broker_is_refused(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "mqttish.db")
    with pytest.raises(StoreError, match=f"{tmp_path / 'mqttish.db'}: the store is in use"):
        SqliteStore(tmp_path / "mqttish.db")
    first.apply([SessionSaved("s", 60, False, 60.0)])  # the first one is unharmed
    first.close()
    assert [s.client_id for s in SqliteStore(tmp_path / "mqttish.db").load().sessions] == ["s"]


def test_a_file_that_cannot_be_opened_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=str(tmp_path)):
        SqliteStore(tmp_path)  # a directory


def _add_notes_to_sessions(db: sqlite3.Connection) -> None:
    """A next schema version, as a future migration would write it."""
    db.execute("ALTER TABLE sessions ADD COLUMN note TEXT NOT NULL DEFAULT ''")
    db.execute("UPDATE sessions SET note = 'migrated ' || client_id")


def _broken_migration(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE half_done (x)")
    db.execute("UPDATE no_such_table SET x = 1")


def test_an_older_store_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "mqttish.db"
    filled_store(path, messages=10)  # written at the current version
    db = open_database(path, "normal", (*MIGRATIONS, _add_notes_to_sessions))
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
    assert db.execute("SELECT client_id, note FROM sessions").fetchall() == [("s", "migrated s")]
    assert db.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 10
    db.close()


def test_a_failed_migration_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "mqttish.db"
    filled_store(path, messages=10)
    with pytest.raises(StoreError, match=f"{path}.*left at schema {len(MIGRATIONS)}"):
        open_database(path, "normal", (*MIGRATIONS, _broken_migration))
    store = SqliteStore(path)  # still a good store of the current version
    assert len(store.load().sessions[0].deliveries) == 10
    store.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT 1 FROM sqlite_schema WHERE name = 'half_done'").fetchall() == []


def test_a_new_file_is_created_at_the_first_version_and_migrated_to_the_latest(
        tmp_path: Path) -> None:
    path = tmp_path / "mqttish.db"
    db = open_database(path, "normal", (*MIGRATIONS, _add_notes_to_sessions))
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
    assert "note" in [row[1] for row in db.execute("PRAGMA table_info(sessions)")]
    db.close()


def test_housekeeping_gives_space_back(tmp_path: Path) -> None:
    path = tmp_path / "mqttish.db"
    clock = Clock()
    store = SqliteStore(path, clock=clock)
    store.apply([SessionSaved("s", 3600, False, 3600.0)])
    for batch in range(10):
        first = 1 + batch * 500
        store.apply([change for n in range(first, first + 500)
                     for change in (MessageSaved(n, "a/b", b"x" * 2000, 1, False),
                                    DeliverySaved("s", n, n, 1, False))])
    full = store.size_bytes()
    assert full > 10_000_000
    store.apply([SessionDeleted("s")])
    assert store.stats().messages == 0
    store.housekeeping()
    assert store.size_bytes() < full / 10
    store.close()
    assert path.stat().st_size < full / 10
