"""The SQLite store's file: its schema, its migrations, and the checks made on opening it.

A store file carries two numbers in its header: `application_id` says it is
an mqttish store (and not some other program's SQLite database) and
`user_version` says which schema it has. `MIGRATIONS[n]` brings a file from
version n to n + 1, each in its own transaction, so a file is always at one
version or the next, never in between. A file this version cannot read (not
a database, damaged, another program's, or written by a newer mqttish) raises
`StoreError` naming the file and what to do: the broker refuses to start
rather than start empty.

Messages are stored once and referred to by deliveries and retained topics;
both have an index on `message_id`, so a store can tell whether anything
still refers to a message.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from mqttish.core.store import StoreError

log = logging.getLogger("mqttish.persistence")

APPLICATION_ID = int.from_bytes(b"MQti", "big")  # in the file header: "an mqttish store"
SyncMode = Literal["normal", "full"]
MINIMUM_SQLITE = (3, 38, 0)  # the ->> operator; UPDATE ... FROM (3.33)

Migration = Callable[[sqlite3.Connection], None]

_SCHEMA_V1 = (
    """CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "INSERT INTO meta (key, value) VALUES ('next_message_id', 1)",
    # Wall-clock times are Unix seconds (REAL); NULL means never.
    """CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        properties BLOB,  -- the MQTT 5 property section of a PUBLISH; NULL: none
        expires_at REAL
    )""",
    "CREATE INDEX messages_expiring ON messages (expires_at) WHERE expires_at IS NOT NULL",
    """CREATE TABLE sessions (
        client_id TEXT PRIMARY KEY,
        expiry_interval INTEGER NOT NULL,
        connected INTEGER NOT NULL,
        lifetime REAL,  -- while connected: seconds it lives once offline; NULL: forever
        expires_at REAL  -- while offline: when it ends
    ) WITHOUT ROWID""",
    """CREATE TABLE subscriptions (
        client_id TEXT NOT NULL,
        topic_filter TEXT NOT NULL,
        qos INTEGER NOT NULL,
        no_local INTEGER NOT NULL,
        retain_as_published INTEGER NOT NULL,
        retain_handling INTEGER NOT NULL,
        identifier INTEGER,
        PRIMARY KEY (client_id, topic_filter)
    ) WITHOUT ROWID""",
    """CREATE TABLE deliveries (
        client_id TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        message_id INTEGER NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        subscription_ids TEXT NOT NULL,  -- comma-separated
        packet_id INTEGER NOT NULL,
        state INTEGER NOT NULL,  -- a FlightState value
        PRIMARY KEY (client_id, sequence)
    ) WITHOUT ROWID""",
    """CREATE TABLE incoming (
        client_id TEXT NOT NULL,
        packet_id INTEGER NOT NULL,
        PRIMARY KEY (client_id, packet_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE wills (
        client_id TEXT PRIMARY KEY,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        properties BLOB,  -- the will properties section of a CONNECT; NULL: none
        due_at REAL NOT NULL
    )""",
    """CREATE TABLE retained (
        topic TEXT PRIMARY KEY,
        message_id INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX deliveries_message ON deliveries (message_id)",
    "CREATE INDEX retained_message ON retained (message_id)",
)


def _create_v1(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1:
        db.execute(statement)


MIGRATIONS: tuple[Migration, ...] = (_create_v1,)
SCHEMA_VERSION = len(MIGRATIONS)

_WHAT_TO_DO = ("restore it from a backup (docs/persistence.md), or move it away to start "
               "with an empty store")


def open_database(path: Path, sync: SyncMode,
                  migrations: Sequence[Migration] = MIGRATIONS) -> sqlite3.Connection:
    """Open (or create) the store file at `path`, checked and migrated to the latest schema.

    The connection is in autocommit mode (callers open their own transactions)
    and may be used from any one thread at a time.
    """
    if sqlite3.sqlite_version_info < MINIMUM_SQLITE:
        raise StoreError(f"persistence needs SQLite {'.'.join(map(str, MINIMUM_SQLITE))} or "
                         f"later; this Python has {sqlite3.sqlite_version}")
    fresh = not path.exists() or path.stat().st_size == 0
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the store: {exc}") from None
    try:
        _check(db, path, len(migrations))
        _configure(db, sync)
        _migrate(db, path, migrations)
    except BaseException:
        db.close()
        raise
    if fresh:
        log.info("persistence: created a new store at %s", path.resolve())
    return db


def _check(db: sqlite3.Connection, path: Path, readable: int) -> None:
    """Refuse a file that is not ours, is newer than us, or is damaged."""
    try:
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        if application_id == 0 and tables == 0:
            return  # an empty database: a new store
        if application_id != APPLICATION_ID:
            raise StoreError(
                f"{path}: not an mqttish store (another program's SQLite database); check "
                "persistence_location and persistence_file, or move the file away")
        if version > readable:
            raise StoreError(
                f"{path}: written by a newer mqttish (store schema {version}, this version "
                f"reads up to {readable}); upgrade mqttish, or move the file away to "
                "start with an empty store")
        problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a readable mqttish store ({exc}); {_WHAT_TO_DO}") from None
    if problems != ["ok"]:
        raise StoreError(f"{path}: the store is damaged ({'; '.join(problems)}); {_WHAT_TO_DO}")


def _configure(db: sqlite3.Connection, sync: SyncMode) -> None:
    # auto_vacuum only takes effect before the first table is created (a new file).
    db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise StoreError(f"cannot put the store in WAL mode (journal_mode is {mode!r})")
    # WAL + NORMAL: a commit survives a crash of the process; FULL: of the machine too.
    db.execute(f"PRAGMA synchronous = {sync.upper()}")
    db.execute("PRAGMA journal_size_limit = 16777216")  # keep at most 16 MiB of WAL
    db.execute("PRAGMA cache_size = -16384")  # 16 MiB
    db.execute("PRAGMA temp_store = MEMORY")


def _migrate(db: sqlite3.Connection, path: Path, migrations: Sequence[Migration]) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for target in range(version + 1, len(migrations) + 1):
        try:
            db.execute("BEGIN IMMEDIATE")
            migrations[target - 1](db)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {target}")
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreError(f"{path}: cannot migrate the store to schema {target}: {exc}; "
                             f"it is left at schema {version}") from None
        if version:
            log.info("persistence: migrated %s from store schema %d to %d", path, version, target)
        version = target
