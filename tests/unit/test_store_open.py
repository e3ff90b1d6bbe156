"""The persistence keys: which store a configuration opens, and where."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqttish.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config, parse_config
from mqttish.core.store import SessionSaved
from mqttish.persistence import open_store, store_path
from mqttish.persistence.sqlite import SqliteStore


def test_without_persistence_nothing_is_stored() -> None:
    """As with Mosquitto: state lives in memory only, and the broker journals nothing."""
    assert open_store(Config()) is None


def test_the_store_file_is_where_the_keys_say_and_its_folder_is_made(tmp_path: Path) -> None:
    config = parse_config(f"persistence: true\npersistence_location: {tmp_path}/state/db\n"
                          "persistence_file: broker.db\npersistence_sync: full\n")
    store = open_store(config)
    assert isinstance(store, SqliteStore)
    store.apply([SessionSaved("s", 60, False, 60.0)])
    store.close()
    assert (tmp_path / "state" / "db" / "broker.db").is_file()


def test_with_no_location_the_store_is_in_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config(persistence=True)
    assert store_path(config) == Path("mqttish.db")
    open_store(config).close()
    assert (tmp_path / "mqttish.db").is_file()


@pytest.mark.parametrize(("yaml", "message"), [
    ("persistence_file: data/mqttish.db\n", "persistence_file: must be a file name"),
    ("persistence_file: ''\n", "persistence_file: must be a file name"),
    ("persistence_sync: off\n", "persistence_sync: expected one of 'normal', 'full'"),
    ("persistence: yes please\n", "persistence: expected boolean"),
])
def test_bad_persistence_keys_are_named(yaml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(yaml)


def test_the_shipped_configuration_is_durable() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    assert config.persistence
    assert config.persistence_location == "data"
