"""Online backup: `mqttish backup [-c CONFIG | --file DB] DEST`.

SQLite's backup API copies the store inside one read transaction. In WAL
mode a reader never blocks the writer, so a running broker keeps committing
while the copy is made, and the copy is the store exactly as of one commit.
It is written beside DEST, checked, flushed to disk and only then renamed
over DEST, so DEST is always a whole store (an old one or the new one).

To restore: stop the broker, replace its store file with the copy (removing
any `-wal` and `-shm` files beside it), start the broker.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

from mqttish.config import ConfigError, load_config
from mqttish.core.store import StoreError
from mqttish.persistence import store_path
from mqttish.persistence.schema import APPLICATION_ID


def backup_store(source: Path, destination: Path) -> None:
    """Copy the store at `source` (live or not) to `destination`, atomically (StoreError)."""
    if not source.is_file():
        raise StoreError(f"{source}: there is no store file there")
    if destination.exists() and destination.resolve() == source.resolve():
        raise StoreError(f"{destination}: a backup cannot replace the store it copies")
    partial = destination.with_name(f".{destination.name}.partial")
    try:
        # mode=rw: never create a store where there is none.
        with closing(sqlite3.connect(f"{source.absolute().as_uri()}?mode=rw", uri=True)) as live:
            if live.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                raise StoreError(f"{source}: not an mqttish store")
            partial.unlink(missing_ok=True)
            with closing(sqlite3.connect(partial)) as copy:
                live.backup(copy)  # all pages in one step: one consistent snapshot
                problems = [row[0] for row in copy.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise StoreError(f"{source}: the store is damaged ({'; '.join(problems)})")
        _flush(partial)
        os.replace(partial, destination)
        _flush(destination.parent)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot back up {source} to {destination}: {exc}") from None
    except OSError as exc:
        raise StoreError(f"cannot back up {source} to {destination}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)


def _flush(path: Path) -> None:
    """Make what was written to a file (or the names in a directory) survive a power loss."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqttish backup",
        description="Copy the store of a broker, running or not, to DEST (docs/persistence.md).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-c", "--config", metavar="FILE",
                        help="the broker's configuration: back up the store it names")
    source.add_argument("--file", metavar="DB", help="the store file to back up")
    parser.add_argument("destination", metavar="DEST", help="where the copy goes")
    return parser


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    try:
        if args.file is not None:
            source = Path(args.file)
        else:
            config = load_config(args.config)
            if not config.persistence:
                print(f"mqttish backup: {args.config} has 'persistence: false': the broker "
                      "keeps no store", file=sys.stderr)
                return 1
            source = store_path(config)
        destination = Path(args.destination)
        backup_store(source, destination)
    except ConfigError as exc:
        print(f"mqttish backup: configuration error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"mqttish backup: {exc}", file=sys.stderr)
        return 1
    print(f"mqttish backup: {source} copied to {destination} "
          f"({destination.stat().st_size} bytes)")
    return 0
