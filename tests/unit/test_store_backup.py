"""Online backup: a store copied while it is being written is a whole store as of one commit."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mqttish.core.store import StoredState, StoreError
from mqttish.persistence.backup import backup_store, main
from mqttish.persistence.sqlite import SqliteStore
from tests.e2e.broker_process import ROOT
from tests.unit.store_journals import COUNTING_SESSIONS, counting_batch, last_counted


def copy_loads(path: Path) -> StoredState:
    store = SqliteStore(path)
    try:
        return store.load()
    finally:
        store.close()


class Writer(threading.Thread):
    """Applies batch after batch to a store until told to stop."""

    def __init__(self, store: SqliteStore) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.applied = 0
        self.progress = threading.Condition()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.store.apply(counting_batch(self.applied + 1))
            with self.progress:
                self.applied += 1
                self.progress.notify_all()

    def wait_for(self, count: int) -> None:
        with self.progress:
            assert self.progress.wait_for(lambda: self.applied >= count, timeout=30)


def test_a_store_being_written_is_copied_as_of_one_commit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "live.db")
    store.apply(COUNTING_SESSIONS)
    writer = Writer(store)
    writer.start()
    try:
        copies = []
        for round_ in range(1, 4):
            writer.wait_for(round_ * 50)
            backup_store(tmp_path / "live.db", tmp_path / "copy.db")
            copies.append(last_counted(copy_loads(tmp_path / "copy.db")))
            assert copies[-1] >= round_ * 50
        assert copies == sorted(copies)
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    backup_store(tmp_path / "live.db", tmp_path / "copy.db")
    assert last_counted(copy_loads(tmp_path / "copy.db")) == writer.applied
    store.close()


def test_the_command_copies_the_store_a_configuration_names(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    store = SqliteStore(tmp_path / "data" / "broker.db")
    store.apply([*COUNTING_SESSIONS, *counting_batch(1)])
    config = tmp_path / "mqttish.yaml"
    config.write_text(f"persistence: true\npersistence_location: {tmp_path / 'data'}\n"
                      "persistence_file: broker.db\n")
    (tmp_path / "backup.db").write_bytes(b"yesterday's backup")
    assert main(["-c", str(config), str(tmp_path / "backup.db")]) == 0
    assert "copied to" in capsys.readouterr().out
    assert last_counted(copy_loads(tmp_path / "backup.db")) == 1
    store.close()


def test_the_command_refuses_what_is_not_a_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.db"
    assert main(["--file", str(missing), str(tmp_path / "copy.db")]) == 1
    assert f"{missing}: there is no store file there" in capsys.readouterr().err
    text = tmp_path / "notes.txt"
    text.write_text("not a database " * 100)
    assert main(["--file", str(text), str(tmp_path / "copy.db")]) == 1
    assert str(text) in capsys.readouterr().err
    off = tmp_path / "off.yaml"
    off.write_text("persistence: false\n")
    assert main(["-c", str(off), str(tmp_path / "copy.db")]) == 1
    assert "'persistence: false'" in capsys.readouterr().err
    assert not (tmp_path / "copy.db").exists()
    assert list(tmp_path.glob(".*partial")) == []


def test_a_backup_never_replaces_its_own_store(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "live.db").close()
    with pytest.raises(StoreError, match="cannot replace the store it copies"):
        backup_store(tmp_path / "live.db", tmp_path / "." / "live.db")


def test_backup_is_a_subcommand() -> None:
    result = subprocess.run([sys.executable, "-m", "mqttish", "backup", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "usage: mqttish backup" in result.stdout
