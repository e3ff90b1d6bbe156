"""One `apply` of the SQLite store: a journal reduced to its net row changes.

Writing a journal record by record would cost a statement per record. A
batch reads the records in order and keeps, for every row, only what the
last record about it leaves (a delivery queued, sent and acknowledged in one
batch is one delete); then each table gets one `executemany` per kind of
write. The result is the same as applying the records one by one, with the
rules every store follows (see mqttish.persistence): a record about a session
that does not exist at that point of the journal is ignored, so is a
reference to a message the store does not hold, and a message nothing refers
to when the batch ends is forgotten.

That last rule is kept without reference counts. A batch writes only the
messages its rows refer to (one queued and acknowledged within the batch is
never written); temporary triggers note every message that lost a reference
(`released`), and at the end of each transaction those that nothing refers
to any more are deleted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Sequence, Set
from typing import Any, NamedTuple

from mqttish.core.store import (
    Change,
    DeliveryDeleted,
    DeliverySaved,
    DeliveryUpdated,
    IncomingHeld,
    IncomingReleased,
    MessageSaved,
    RetainedDeleted,
    RetainedSaved,
    SessionDeleted,
    SessionSaved,
    SubscriptionDeleted,
    SubscriptionSaved,
    WillDeleted,
    WillSaved,
)
from mqttish.persistence.clock import deadline
from mqttish.persistence.columns import ids_column, properties_column
from mqttish.protocol.flow import FlightState
from mqttish.protocol.properties import PUBLISH, WILL

Row = tuple[Any, ...]
SESSION_TABLES = ("sessions", "subscriptions", "deliveries", "incoming", "wills")

_STATE_VALUES = {state: state.value for state in FlightState}  # (Enum.value is a property)
_QUEUED_FLIGHT = (0, FlightState.QUEUED.value)  # (packet id, state) of a delivery not sent


def _json(rows: list[Row]) -> str:
    """Rows for one statement over `json_each`: SQLite does the loop, without the GIL.

    A statement per row (executemany) gives the GIL back and takes it again for
    every row, and while the event loop runs, taking it back waits: the
    commits slow down threefold.
    """
    return json.dumps(rows, ensure_ascii=False, allow_nan=False)

_RELEASE_TRIGGERS = (
    "CREATE TEMP TABLE released (id INTEGER PRIMARY KEY)",
    *(f"""CREATE TEMP TRIGGER {table}_{event} AFTER {event} ON main.{table} BEGIN
          INSERT OR IGNORE INTO released VALUES ({row}.{column}); END"""
      for table, column, event, row in (
          ("deliveries", "message_id", "DELETE", "OLD"),
          ("deliveries", "message_id", "UPDATE", "OLD"),
          ("retained", "message_id", "DELETE", "OLD"),
          ("retained", "message_id", "UPDATE", "OLD"),
      )),
)


def track_references(db: sqlite3.Connection) -> None:
    """Set up, for this connection, the notes that `forget_unreferenced` reads."""
    for statement in _RELEASE_TRIGGERS:
        db.execute(statement)


def forget_unreferenced(db: sqlite3.Connection) -> int:
    """Delete the messages noted in this transaction that nothing refers to; return how many."""
    forgotten: int = db.execute(
        "DELETE FROM messages WHERE id IN (SELECT id FROM released) "
        "AND NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = messages.id) "
        "AND NOT EXISTS (SELECT 1 FROM retained WHERE message_id = messages.id)").rowcount
    db.execute("DELETE FROM released")
    return forgotten


def delete_sessions(db: sqlite3.Connection, client_ids: Collection[str]) -> None:
    if client_ids:
        rows = [(client_id,) for client_id in client_ids]
        for table in SESSION_TABLES:
            db.executemany(f"DELETE FROM {table} WHERE client_id = ?", rows)


class _Progress(NamedTuple):
    """A delivery this batch only sent (or saw the PUBREC of): its row is updated, not written."""

    packet_id: int
    state: int


_UNTOUCHED: Any = object()  # a will no record of this batch spoke about


class _Client:
    """What one batch does to one client's rows."""

    __slots__ = ("alive", "deliveries", "existed", "flights", "incoming", "session",
                 "subscriptions", "will", "wipe")

    def __init__(self, existed: bool) -> None:
        self.existed = existed  # its session was in the file when the batch began
        self.alive = existed  # its session exists at this point of the journal
        self.wipe = False  # delete its rows in the file before writing the new ones
        self.session: Row | None = None
        self.subscriptions: dict[str, Row | None] = {}
        # By sequence: saved in this batch, only sent in it (progress), or deleted (None).
        self.deliveries: dict[int, DeliverySaved | _Progress | None] = {}
        self.flights: dict[int, tuple[int, int]] = {}  # (packet id, state) of saved ones sent
        self.incoming: dict[int, bool] = {}
        self.will: Row | None = _UNTOUCHED

    def end(self) -> None:
        """Its session ended: nothing written before this point matters any more."""
        self.alive = False
        self.wipe = self.existed
        self.session = None
        self.subscriptions = {}
        self.deliveries = {}
        self.flights = {}
        self.incoming = {}
        self.will = _UNTOUCHED


class Batch:
    """Reads a journal (`add`), then writes its net effect in the caller's transaction (`write`)."""

    def __init__(self, db: sqlite3.Connection, now: float, sessions: Set[str]) -> None:
        self._db = db
        self._now = now
        self._sessions = sessions  # the client ids of the sessions in the file
        self._clients: dict[str, _Client] = {}
        self._messages: dict[int, MessageSaved] = {}  # rows are made for those written only
        self._stored_messages: dict[int, bool] = {}  # message id -> in the file
        self._retained: dict[str, int | None] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {
            SessionSaved: self._session_saved,
            SessionDeleted: self._session_deleted,
            SubscriptionSaved: self._subscription_saved,
            SubscriptionDeleted: self._subscription_deleted,
            MessageSaved: self._message_saved,
            DeliverySaved: self._delivery_saved,
            DeliveryUpdated: self._delivery_updated,
            DeliveryDeleted: self._delivery_deleted,
            IncomingHeld: self._incoming_held,
            IncomingReleased: self._incoming_released,
            RetainedSaved: self._retained_saved,
            RetainedDeleted: self._retained_deleted,
            WillSaved: self._will_saved,
            WillDeleted: self._will_deleted,
        }

    def add(self, changes: Sequence[Change]) -> None:
        handlers = self._handlers
        for change in changes:
            handlers[type(change)](change)

    # ------------------------------------------------------------ reading the journal

    def _client(self, client_id: str) -> _Client:
        client = self._clients.get(client_id)
        if client is None:
            client = self._clients[client_id] = _Client(client_id in self._sessions)
        return client

    def _live_client(self, client_id: str) -> _Client | None:
        client = self._clients.get(client_id) or self._client(client_id)
        return client if client.alive else None

    def _holds_message(self, message_id: int) -> bool:
        if message_id in self._messages:
            return True
        stored = self._stored_messages.get(message_id)
        if stored is None:
            found = self._db.execute("SELECT 1 FROM messages WHERE id = ?", (message_id,))
            stored = self._stored_messages[message_id] = found.fetchone() is not None
        return stored

    def _session_saved(self, change: SessionSaved) -> None:
        client = self._client(change.client_id)
        client.alive = True
        if change.connected:
            lifetime, expires_at = change.expires_in, None
        else:
            lifetime, expires_at = None, deadline(self._now, change.expires_in)
        client.session = (change.client_id, change.expiry_interval, change.connected, lifetime,
                          expires_at)

    def _session_deleted(self, change: SessionDeleted) -> None:
        self._client(change.client_id).end()

    def _subscription_saved(self, change: SubscriptionSaved) -> None:
        client = self._live_client(change.client_id)
        if client is not None:
            request = change.request
            client.subscriptions[request.topic_filter] = (
                change.client_id, request.topic_filter, request.qos, request.no_local,
                request.retain_as_published, int(request.retain_handling), change.identifier)

    def _subscription_deleted(self, change: SubscriptionDeleted) -> None:
        client = self._live_client(change.client_id)
        if client is not None:
            client.subscriptions[change.topic_filter] = None

    def _message_saved(self, change: MessageSaved) -> None:
        self._messages.setdefault(change.message_id, change)  # the first save of an id wins

    def _delivery_saved(self, change: DeliverySaved) -> None:
        client = self._live_client(change.client_id)
        if client is not None and self._holds_message(change.message_id):
            client.deliveries[change.sequence] = change
            client.flights.pop(change.sequence, None)

    def _delivery_updated(self, change: DeliveryUpdated) -> None:
        client = self._live_client(change.client_id)
        if client is None:
            return
        sequence = change.sequence
        pending = client.deliveries.get(sequence, _UNTOUCHED)
        if pending is None:
            return  # deleted earlier in this batch: nothing to update
        if pending is _UNTOUCHED or type(pending) is _Progress:
            client.deliveries[sequence] = _Progress(change.packet_id, _STATE_VALUES[change.state])
        else:
            client.flights[sequence] = (change.packet_id, _STATE_VALUES[change.state])

    def _delivery_deleted(self, change: DeliveryDeleted) -> None:
        client = self._live_client(change.client_id)
        if client is not None:
            client.deliveries[change.sequence] = None

    def _incoming_held(self, change: IncomingHeld) -> None:
        client = self._live_client(change.client_id)
        if client is not None:
            client.incoming[change.packet_id] = True

    def _incoming_released(self, change: IncomingReleased) -> None:
        client = self._live_client(change.client_id)
        if client is not None:
            client.incoming[change.packet_id] = False

    def _retained_saved(self, change: RetainedSaved) -> None:
        if self._holds_message(change.message_id):
            self._retained[change.topic] = change.message_id

    def _retained_deleted(self, change: RetainedDeleted) -> None:
        self._retained[change.topic] = None

    def _will_saved(self, change: WillSaved) -> None:
        client = self._live_client(change.client_id)
        if client is not None:
            will = change.will
            client.will = (change.client_id, will.topic, will.payload, will.qos, will.retain,
                           properties_column(will.properties, WILL), self._now + change.delay)

    def _will_deleted(self, change: WillDeleted) -> None:
        client = self._live_client(change.client_id)
        if client is not None:
            client.will = None

    # ------------------------------------------------------------ writing the net effect

    def write(self) -> int:
        """Write every row this batch changed; return how many messages it added (or removed)."""
        db = self._db
        delete_sessions(db, [client_id for client_id, client in self._clients.items()
                             if client.wipe])
        sessions = [client.session for client in self._clients.values()
                    if client.session is not None]
        if sessions:
            db.executemany("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?)", sessions)
        referred = self._write_session_rows() | self._write_retained()
        return self._write_messages(referred) - forget_unreferenced(db)

    def update(self, sessions: set[str]) -> None:
        """After the commit: bring the caller's set of stored client ids up to date."""
        for client_id, client in self._clients.items():
            if client.alive:
                sessions.add(client_id)
            else:
                sessions.discard(client_id)

    def _write_messages(self, referred: set[int]) -> int:
        """Write the batch's messages that rows refer to; return how many were new."""
        if not self._messages:
            return 0
        now = self._now
        rows = [(message.message_id, message.topic, message.payload, message.qos,
                 1 if message.retain else 0, properties_column(message.properties, PUBLISH),
                 deadline(now, message.expires_in))
                for message in map(self._messages.get, sorted(referred)) if message is not None]
        # Most messages have neither properties nor an expiry: they go in one statement,
        # their payloads in one blob that SQL cuts up again.
        plain = [row for row in rows if row[5] is None and row[6] is None]
        other = [row for row in rows if row[5] is not None or row[6] is not None]
        added = 0
        if plain:
            listed = []
            start = 1
            for message_id, topic, payload, qos, retain, _, _ in plain:
                listed.append((message_id, topic, start, len(payload), qos, retain))
                start += len(payload)
            payloads = b"".join([*(row[2] for row in plain), b"."])  # substr of b"" is NULL
            added += self._db.execute(
                "INSERT OR IGNORE INTO messages (id, topic, payload, qos, retain) "
                "SELECT value->>0, value->>1, substr(?2, value->>2, value->>3), value->>4, "
                "value->>5 FROM json_each(?1)", (_json(listed), payloads)).rowcount
        if other:
            added += self._db.executemany(
                "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)", other).rowcount
        self._db.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'next_message_id'",
                         (max(self._messages) + 1,))
        return added

    def _write_session_rows(self) -> set[int]:
        """Write the rows sessions hold; return the ids of the messages written rows refer to."""
        subscriptions: list[Row] = []
        unsubscribed: list[Row] = []
        saved: list[Row] = []
        progressed: list[Row] = []
        deleted: list[Row] = []  # (client id, JSON list of sequences)
        held: list[Row] = []
        released: list[Row] = []
        wills: list[Row] = []
        no_wills: list[Row] = []
        for client_id, client in self._clients.items():
            if not client.alive:
                continue
            for topic_filter, row in client.subscriptions.items():
                if row is None:
                    unsubscribed.append((client_id, topic_filter))
                else:
                    subscriptions.append(row)
            gone = []
            flights = client.flights
            for sequence, delivery in client.deliveries.items():
                if delivery is None:
                    gone.append(sequence)
                elif isinstance(delivery, _Progress):
                    progressed.append((*delivery, client_id, sequence))
                else:
                    saved.append((
                        client_id, sequence, delivery.message_id, delivery.qos,
                        1 if delivery.retain else 0,
                        ids_column(delivery.subscription_ids) if delivery.subscription_ids
                        else "", *flights.get(sequence, _QUEUED_FLIGHT)))
            if gone:
                deleted.append((client_id, json.dumps(gone)))
            for packet_id, holds in client.incoming.items():
                (held if holds else released).append((client_id, packet_id))
            if client.will is None:
                no_wills.append((client_id,))
            elif client.will is not _UNTOUCHED:
                wills.append(client.will)
        db = self._db
        if subscriptions:
            db.executemany("INSERT OR REPLACE INTO subscriptions VALUES (?, ?, ?, ?, ?, ?, ?)",
                           subscriptions)
        if unsubscribed:
            db.executemany("DELETE FROM subscriptions WHERE client_id = ? AND topic_filter = ?",
                           unsubscribed)
        if saved:
            db.execute(
                "INSERT INTO deliveries SELECT value->>0, value->>1, value->>2, value->>3, "
                "value->>4, value->>5, value->>6, value->>7 FROM json_each(?) WHERE true "
                "ON CONFLICT (client_id, sequence) DO UPDATE SET message_id = excluded.message_id, "
                "qos = excluded.qos, retain = excluded.retain, "
                "subscription_ids = excluded.subscription_ids, packet_id = excluded.packet_id, "
                "state = excluded.state", (_json(saved),))
        if progressed:
            db.execute("UPDATE deliveries SET packet_id = row.value->>0, state = row.value->>1 "
                       "FROM json_each(?) AS row "
                       "WHERE client_id = row.value->>2 AND sequence = row.value->>3",
                       (_json(progressed),))
        if deleted:
            db.executemany("DELETE FROM deliveries WHERE client_id = ? "
                           "AND sequence IN (SELECT value FROM json_each(?))", deleted)
        if held:
            db.executemany("INSERT OR IGNORE INTO incoming VALUES (?, ?)", held)
        if released:
            db.executemany("DELETE FROM incoming WHERE client_id = ? AND packet_id = ?", released)
        if wills:
            db.executemany("INSERT OR REPLACE INTO wills VALUES (?, ?, ?, ?, ?, ?, ?)", wills)
        if no_wills:
            db.executemany("DELETE FROM wills WHERE client_id = ?", no_wills)
        return {row[2] for row in saved}

    def _write_retained(self) -> set[int]:
        """Write the retained topics; return the ids of the messages they refer to."""
        kept = [(topic, message_id) for topic, message_id in self._retained.items()
                if message_id is not None]
        cleared = [(topic,) for topic, message_id in self._retained.items() if message_id is None]
        if kept:
            self._db.executemany(
                "INSERT INTO retained VALUES (?, ?) ON CONFLICT (topic) "
                "DO UPDATE SET message_id = excluded.message_id", kept)
        if cleared:
            self._db.executemany("DELETE FROM retained WHERE topic = ?", cleared)
        return {message_id for _, message_id in kept}
