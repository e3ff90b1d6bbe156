"""The core's journal and the stores together: what the journal emits, a store keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqttish.core.journal import Journal
from mqttish.core.message import Message
from mqttish.core.store import DeliveryDeleted, DeliverySaved, SessionSaved
from tests.unit.store_journals import Clock, StoreUnderTest


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_message_queued_again_in_a_later_commit_is_kept(kind: str, tmp_path: Path) -> None:
    """A shared group's message given back to the group's backlog (nothing in the store
    refers to it any more) and queued for another member in a later commit."""
    under_test = StoreUnderTest(kind, tmp_path / "mqttish.db", Clock())
    journal = Journal()

    def commit() -> None:
        changes, position = journal.take()
        under_test.store.apply(changes)
        journal.committed_up_to(position)

    message = Message("jobs/1", b"job", qos=1)
    journal.emit(SessionSaved("a", 60, True, 60.0))
    journal.emit(SessionSaved("b", 60, True, 60.0))
    journal.emit(DeliverySaved("a", 1, journal.message_id(message, 0.0), 1, False))
    commit()
    journal.emit(DeliveryDeleted("a", 1))
    commit()
    journal.emit(DeliverySaved("b", 1, journal.message_id(message, 0.0), 1, False))
    commit()
    sessions = under_test.restart().load().sessions
    assert [[d.message.payload for d in s.deliveries] for s in sessions] == [[], [b"job"]]
