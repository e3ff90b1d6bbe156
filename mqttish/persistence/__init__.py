"""Where sessions and retained messages are kept between broker runs.

The core emits a journal of changes (mqttish.core.store); a store applies it
and gives the state back at start. Every store follows the same rules, so
that for the same journal all of them load the same state:

- `apply` takes the records in order, all or nothing.
- A record about a session that does not exist at that point (a
  subscription, delivery, QoS 2 id or will of a client whose session was
  never saved, or was deleted) is ignored; so is a delivery or retained
  topic naming a message the store does not hold, and an update of a
  delivery that is not there. Deletes of what is not there do nothing.
- `SessionSaved` for an existing session replaces its own fields (expiry,
  connected) and keeps what it holds: subscriptions, deliveries, QoS 2 ids,
  will. `SessionDeleted` removes the session and everything it holds.
- Saving a message id twice keeps the first; a message nothing refers to at
  the end of a transaction is forgotten.
- At load nobody is connected: a session whose client was connected when the
  broker stopped starts its expiry then, with its full lifetime.
"""

from __future__ import annotations

from pathlib import Path

from mqttish.config import Config
from mqttish.core.store import Store, StoreError
from mqttish.persistence.sqlite import SqliteStore


def store_path(config: Config) -> Path:
    """The store file: relative locations are relative to the current directory (as Mosquitto)."""
    return Path(config.persistence_location or ".") / config.persistence_file


def open_store(config: Config) -> Store | None:
    """The store `config` asks for: SQLite with `persistence: true`; None without (state
    lives in memory only, and nothing is journalled). Raises StoreError."""
    if not config.persistence:
        return None
    path = store_path(config)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{path.parent}: cannot create the store's directory: "
                         f"{exc.strerror}") from None
    return SqliteStore(path, config.persistence_sync)
