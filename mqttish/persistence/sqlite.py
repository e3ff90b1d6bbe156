"""SqliteStore: the journal kept in one SQLite file, in WAL mode.

Each `apply` is one transaction (a group commit): its journal is reduced to
net row changes and written with a few `executemany` calls (sqlite_batch).
With `sync: normal` a commit is in the WAL file, in the operating system's
hands, when `apply` returns: it survives a crash of the broker process. With
`sync: full` SQLite also waits for the disk (fsync): it survives a power
loss. Housekeeping, from the same worker thread, forgets what has expired,
gives free pages back to the file system and checkpoints the WAL, so the
file does not grow without bound.

Statistics are kept as counters updated after each commit, so `stats()` can
be called from the event loop without touching the database.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from mqttish.core.store import (
    Change,
    Store,
    StoredDelivery,
    StoredMessage,
    StoredSession,
    StoredState,
    StoredSubscription,
    StoreError,
    StoreStats,
)
from mqttish.errors import MQTTError
from mqttish.persistence.clock import SESSION_EXPIRY_GRACE, Clock, remaining
from mqttish.persistence.columns import ids_value, properties_value
from mqttish.persistence.lock import lock_store, unlock_store
from mqttish.persistence.schema import SyncMode, open_database
from mqttish.persistence.sqlite_batch import (
    Batch,
    delete_sessions,
    forget_unreferenced,
    track_references,
)
from mqttish.protocol.flow import FlightState
from mqttish.protocol.packets import RetainHandling, SubscriptionRequest, Will
from mqttish.protocol.properties import PUBLISH, WILL

log = logging.getLogger("mqttish.persistence")

T = TypeVar("T")
Row = tuple[Any, ...]

# Give free pages back once they are more than this share of the file (and 1 MiB).
_FREE_SHARE = 0.25
_FREE_MINIMUM_PAGES = 256
_BUSY_TIMEOUT_MS = 5000  # sqlite3.connect's default


class SqliteStore(Store):
    """A store in the SQLite file at `path`; opening it checks and migrates it (StoreError)."""

    def __init__(self, path: str | os.PathLike[str], sync: SyncMode = "normal",
                 clock: Clock = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = lock_store(self.path)
        try:
            self._db = open_database(self.path, sync)
        except BaseException:
            unlock_store(self._lock)
            raise
        track_references(self._db)
        self._messages: int = self._db.execute("SELECT count(*) FROM messages").fetchone()[0]
        # Which sessions exist is asked for every record; the answer is kept here.
        self._sessions = {client_id for (client_id,) in self._db.execute(
            "SELECT client_id FROM sessions")}

    # ------------------------------------------------------------ the Store interface

    def load(self) -> StoredState:
        now = self._clock()
        with self._transaction("load"):
            # Nobody is connected to a broker that is starting: the expiry of the
            # sessions whose clients were connected at the crash starts now.
            self._db.execute("UPDATE sessions SET connected = 0, expires_at = ? + lifetime, "
                             "lifetime = NULL WHERE connected", (now,))
            try:
                messages = self._load_messages(now)
                retained = tuple(messages[message_id] for (message_id,) in self._db.execute(
                    "SELECT message_id FROM retained ORDER BY topic"))
                sessions = self._load_sessions(now, messages)
            except (KeyError, ValueError, MQTTError) as exc:
                raise StoreError(f"{self.path}: the store is damaged ({exc!r}); restore it "
                                 "from a backup (docs/persistence.md)") from None
            next_message_id = self._db.execute(
                "SELECT value FROM meta WHERE key = 'next_message_id'").fetchone()[0]
        return StoredState(retained, sessions, max(next_message_id, max(messages, default=0) + 1))

    def apply(self, changes: Sequence[Change]) -> None:
        with self._transaction("write"):
            batch = Batch(self._db, self._clock(), self._sessions)
            batch.add(changes)
            added = batch.write()
        self._messages += added
        batch.update(self._sessions)

    def housekeeping(self) -> None:
        now = self._clock()
        with self._transaction("clean up"):
            expired = self._forget_expired(now)
            forgotten = forget_unreferenced(self._db)
        self._messages -= forgotten
        self._sessions.difference_update(expired)
        self._give_back_space()

    def stats(self) -> StoreStats:
        return StoreStats(self.size_bytes(), self._messages, len(self._sessions))

    def close(self) -> None:
        self._db.close()
        unlock_store(self._lock)

    def size_bytes(self) -> int:
        """The file's size on disk, with its WAL."""
        total = 0
        for name in (self.path, self.path.with_name(self.path.name + "-wal")):
            with suppress(FileNotFoundError):
                total += name.stat().st_size
        return total

    # ------------------------------------------------------------ internals

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[None]:
        """One transaction; a database failure becomes a StoreError naming the file."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{self.path}: cannot {doing} the store: {exc}") from exc
            raise

    def _load_messages(self, now: float) -> dict[int, StoredMessage]:
        return {
            message_id: StoredMessage(message_id, topic, payload, qos, bool(retain),
                                      properties_value(properties, PUBLISH),
                                      remaining(now, expires_at))
            for message_id, topic, payload, qos, retain, properties, expires_at
            in self._db.execute("SELECT id, topic, payload, qos, retain, properties, expires_at "
                                "FROM messages")
        }

    def _load_sessions(self, now: float,
                       messages: dict[int, StoredMessage]) -> tuple[StoredSession, ...]:
        db = self._db
        subscriptions = _grouped(db.execute(
            "SELECT client_id, topic_filter, qos, no_local, retain_as_published, retain_handling, "
            "identifier FROM subscriptions ORDER BY client_id, topic_filter"),
            lambda row: StoredSubscription(
                SubscriptionRequest(row[1], row[2], bool(row[3]), bool(row[4]),
                                    RetainHandling(row[5])), row[6]))
        deliveries = _grouped(db.execute(
            "SELECT client_id, sequence, message_id, qos, retain, subscription_ids, packet_id, "
            "state FROM deliveries ORDER BY client_id, sequence"),
            lambda row: StoredDelivery(row[1], messages[row[2]], row[3], bool(row[4]),
                                       ids_value(row[5]), row[6], FlightState(row[7])))
        incoming = _grouped(db.execute(
            "SELECT client_id, packet_id FROM incoming ORDER BY client_id, packet_id"),
            lambda row: row[1])
        wills = {
            client_id: (Will(topic, payload, qos, bool(retain), properties_value(properties, WILL)),
                        due_at - now)
            for client_id, topic, payload, qos, retain, properties, due_at
            in db.execute("SELECT client_id, topic, payload, qos, retain, properties, due_at "
                          "FROM wills")
        }
        sessions = []
        for client_id, expiry_interval, expires_at in db.execute(
                "SELECT client_id, expiry_interval, expires_at FROM sessions ORDER BY client_id"):
            session = StoredSession(
                client_id, expiry_interval, remaining(now, expires_at),
                tuple(subscriptions.get(client_id, ())), tuple(deliveries.get(client_id, ())),
                tuple(incoming.get(client_id, ())))
            if client_id in wills:
                will, will_in = wills[client_id]
                session = replace(session, will=will, will_in=will_in)
            sessions.append(session)
        return tuple(sessions)

    def _forget_expired(self, now: float) -> list[str]:
        """Delete sessions the core forgot to end, and retained or queued messages that expired.

        Returns the client ids of the sessions deleted.
        """
        db = self._db
        expired = [client_id for (client_id,) in db.execute(
            "SELECT client_id FROM sessions WHERE NOT connected AND expires_at < ?",
            (now - SESSION_EXPIRY_GRACE,))]
        delete_sessions(db, expired)
        if db.execute("SELECT 1 FROM messages WHERE expires_at <= ? LIMIT 1", (now,)).fetchone():
            past = "SELECT id FROM messages WHERE expires_at <= ?"
            db.execute(f"DELETE FROM retained WHERE message_id IN ({past})", (now,))
            # A message in flight is past its expiry too late to stop: it is kept.
            db.execute(f"DELETE FROM deliveries WHERE state = {FlightState.QUEUED.value} "
                       f"AND message_id IN ({past})", (now,))
        return expired

    def _give_back_space(self) -> None:
        db = self._db
        try:
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            if free > max(_FREE_MINIMUM_PAGES, pages * _FREE_SHARE):
                # executescript steps the pragma to its end (execute frees one page).
                db.executescript("PRAGMA incremental_vacuum")
            # A reader (a backup being made) keeps the WAL in use: then the WAL is
            # truncated next time, rather than the commits waiting for the reader.
            db.execute("PRAGMA busy_timeout = 0")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot compact the store: {exc}") from exc


def _grouped(rows: sqlite3.Cursor, make: Callable[[Row], T]) -> dict[str, list[T]]:
    """Rows ordered by their first column (a client id), as lists per client id."""
    groups: dict[str, list[T]] = {}
    for row in rows:
        groups.setdefault(row[0], []).append(make(row))
    return groups
