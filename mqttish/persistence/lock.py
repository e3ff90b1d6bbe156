"""One broker per store file: a second one is refused instead of writing over the first.

The lock is an flock on `FILE.lock` beside the store, held while the store is
open and dropped by the kernel when the process ends, however it ends. (Not
on the store file itself: closing any descriptor of a file drops the POSIX
locks SQLite holds on it.) `mqttish backup` only reads and needs no lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mqttish.core.store import StoreError


def lock_store(path: Path) -> int:
    """Take the store's lock (StoreError if another process holds it); return its descriptor."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"{lock_path}: cannot create the store's lock file: "
                         f"{exc.strerror}") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise StoreError(f"{path}: the store is in use by another broker; stop that one, or "
                         "give this one its own persistence_file") from None
    return descriptor


def unlock_store(descriptor: int) -> None:
    os.close(descriptor)
