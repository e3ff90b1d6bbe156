"""The rules every store follows (mqttish.persistence), run against memory and SQLite alike.

Each test applies a journal, restarts the store (a SQLite store is closed and
opened again) and checks what `load` gives back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mqttish.core.store import (
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
    StoredDelivery,
    StoredMessage,
    StoredSession,
    StoredState,
    StoredSubscription,
    StoreStats,
    SubscriptionDeleted,
    SubscriptionSaved,
    WillDeleted,
    WillSaved,
)
from mqttish.persistence.clock import SESSION_EXPIRY_GRACE
from mqttish.protocol.flow import FlightState
from mqttish.protocol.packets import RetainHandling, SubscriptionRequest, Will
from mqttish.protocol.properties import Properties
from tests.unit.store_journals import Clock, StoreUnderTest


@pytest.fixture(params=["memory", "sqlite", "redis"])
def under_test(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUnderTest]:
    redis = request.getfixturevalue("redis_for_stores") if request.param == "redis" else None
    store = StoreUnderTest(request.param, tmp_path / "mqttish.db", Clock(), redis)
    yield store
    store.store.close()


def session(client_id: str = "s", expiry: int = 3600, connected: bool = False,
            expires_in: float | None = 3600.0) -> SessionSaved:
    return SessionSaved(client_id, expiry, connected, expires_in)


def message(message_id: int, topic: str = "t", payload: bytes = b"p", qos: int = 1,
            expires_in: float | None = None) -> MessageSaved:
    return MessageSaved(message_id, topic, payload, qos, False, expires_in=expires_in)


def stored(change: MessageSaved, expires_in: float | None = None) -> StoredMessage:
    return StoredMessage(change.message_id, change.topic, change.payload, change.qos,
                         change.retain, change.properties, expires_in)


def loaded(under_test: StoreUnderTest) -> StoredState:
    return under_test.restart().load()


def only_session(state: StoredState) -> StoredSession:
    (found,) = state.sessions
    return found


def test_a_new_store_loads_nothing(under_test: StoreUnderTest) -> None:
    assert loaded(under_test) == StoredState()


def test_every_kind_of_record_comes_back(under_test: StoreUnderTest) -> None:
    properties = Properties(content_type="text/plain", user_properties=(("k", "v"),))
    queued = MessageSaved(1, "a/b", b"queued", 1, False, properties, expires_in=60.0)
    sent = MessageSaved(2, "a/c", b"sent", 2, False)
    kept = MessageSaved(3, "r", b"retained", 0, True)
    request = SubscriptionRequest("a/#", 2, no_local=True, retain_as_published=True,
                                  retain_handling=RetainHandling.DO_NOT_SEND)
    will = Will("w", b"bye", 1, True, Properties(will_delay_interval=30))
    under_test.store.apply([
        session("s", 600, False, 600.0),
        SubscriptionSaved("s", request, 7),
        queued, DeliverySaved("s", 1, 1, 1, False, (7,)),
        sent, DeliverySaved("s", 2, 2, 2, True), DeliveryUpdated("s", 2, 12,
                                                                 FlightState.AWAITING_PUBREC),
        IncomingHeld("s", 5), IncomingHeld("s", 3),
        kept, RetainedSaved("r", 3),
        WillSaved("s", will, 30.0),
    ])
    assert loaded(under_test) == StoredState(
        retained=(stored(kept),),
        sessions=(StoredSession(
            "s", 600, 600.0,
            subscriptions=(StoredSubscription(request, 7),),
            deliveries=(StoredDelivery(1, stored(queued, 60.0), 1, False, (7,)),
                        StoredDelivery(2, stored(sent), 2, True, (), 12,
                                       FlightState.AWAITING_PUBREC)),
            incoming_qos2=(3, 5),
            will=will, will_in=30.0),),
        next_message_id=4,
    )


def test_each_record_has_its_opposite(under_test: StoreUnderTest) -> None:
    under_test.store.apply([
        session(), SubscriptionSaved("s", SubscriptionRequest("a")),
        message(1), DeliverySaved("s", 1, 1, 1, False), IncomingHeld("s", 9),
        message(2), RetainedSaved("r", 2), WillSaved("s", Will("w", b""), 5.0),
    ])
    under_test.store.apply([
        SubscriptionDeleted("s", "a"), DeliveryDeleted("s", 1), IncomingReleased("s", 9),
        RetainedDeleted("r"), WillDeleted("s"),
    ])
    assert loaded(under_test) == StoredState(sessions=(StoredSession("s", 3600, 3600.0),),
                                             next_message_id=3)
    assert under_test.store.stats() == StoreStats(under_test.store.stats().size_bytes, 0, 1)


def test_saving_a_session_again_keeps_what_it_holds(under_test: StoreUnderTest) -> None:
    under_test.store.apply([
        session("s", 60, True, 60.0), SubscriptionSaved("s", SubscriptionRequest("a")),
        message(1), DeliverySaved("s", 1, 1, 1, False), IncomingHeld("s", 4),
        WillSaved("s", Will("w", b""), 5.0),
    ])
    under_test.store.apply([session("s", 120, False, 100.0)])
    found = only_session(loaded(under_test))
    assert (found.expiry_interval, found.expires_in) == (120, 100.0)
    assert [s.request.topic_filter for s in found.subscriptions] == ["a"]
    assert [d.sequence for d in found.deliveries] == [1]
    assert (found.incoming_qos2, found.will) == ((4,), Will("w", b""))


def test_deleting_a_session_deletes_all_it_holds(under_test: StoreUnderTest) -> None:
    under_test.store.apply([
        session(), SubscriptionSaved("s", SubscriptionRequest("a")),
        message(1), DeliverySaved("s", 1, 1, 1, False), IncomingHeld("s", 4),
        WillSaved("s", Will("w", b""), 5.0),
    ])
    under_test.store.apply([SessionDeleted("s"), session()])  # a clean start
    assert loaded(under_test).sessions == (StoredSession("s", 3600, 3600.0),)
    assert under_test.store.stats().messages == 0


def test_records_about_sessions_that_do_not_exist_are_ignored(
        under_test: StoreUnderTest) -> None:
    under_test.store.apply([
        SubscriptionSaved("ghost", SubscriptionRequest("a")), message(1),
        DeliverySaved("ghost", 1, 1, 1, False), IncomingHeld("ghost", 1),
        WillSaved("ghost", Will("w", b""), 1.0),
        session("ghost"),  # created after its records: they stay ignored
        session("gone"), SessionDeleted("gone"),
        SubscriptionSaved("gone", SubscriptionRequest("a")),
    ])
    assert loaded(under_test).sessions == (StoredSession("ghost", 3600, 3600.0),)
    assert under_test.store.stats().messages == 0


def test_deleting_what_is_not_there_does_nothing(under_test: StoreUnderTest) -> None:
    deletes = [SessionDeleted("x"), SubscriptionDeleted("s", "nope"), DeliveryDeleted("s", 9),
               DeliveryUpdated("s", 9, 1, FlightState.AWAITING_PUBACK),
               IncomingReleased("s", 9), RetainedDeleted("nope"), WillDeleted("s")]
    under_test.store.apply([session(), message(1), RetainedSaved("r", 1)])
    under_test.store.apply(deletes)
    under_test.store.apply(deletes)
    state = loaded(under_test)
    assert state.sessions == (StoredSession("s", 3600, 3600.0),)
    assert [m.topic for m in state.retained] == ["t"]


def test_records_applied_twice_give_the_same_state(under_test: StoreUnderTest) -> None:
    journal = [session(), SubscriptionSaved("s", SubscriptionRequest("a", 1)),
               message(1), DeliverySaved("s", 1, 1, 1, False), IncomingHeld("s", 2),
               message(2, "r"), RetainedSaved("r", 2)]
    under_test.store.apply(journal)
    once = loaded(under_test)
    under_test.store.apply(journal)
    assert loaded(under_test) == once


def test_a_message_is_kept_while_something_refers_to_it(under_test: StoreUnderTest) -> None:
    under_test.store.apply([
        session("a"), session("b"), message(1), message(2), message(3, "r"),
        DeliverySaved("a", 1, 1, 1, False), DeliverySaved("b", 1, 1, 1, False),
        RetainedSaved("r", 3),
    ])  # message 2: saved, never referred to
    assert under_test.store.stats().messages == 2
    # Taken back from one session and queued for another in one batch: kept.
    under_test.store.apply([DeliveryDeleted("a", 1), DeliveryDeleted("b", 1),
                            DeliverySaved("b", 2, 1, 1, False)])
    assert under_test.store.stats().messages == 2
    under_test.store.apply([DeliveryDeleted("b", 2), RetainedSaved("r", 1)])
    assert under_test.store.stats().messages == 1  # 3 was replaced as the retained message
    under_test.store.apply([RetainedDeleted("r")])
    assert under_test.store.stats().messages == 0
    # A forgotten message cannot be referred to until it is saved again.
    under_test.store.apply([DeliverySaved("a", 3, 1, 1, False)])
    assert loaded(under_test).sessions[0].deliveries == ()  # session "a"
    under_test.store.apply([message(1), DeliverySaved("a", 3, 1, 1, False)])
    assert [d.message.message_id for d in loaded(under_test).sessions[0].deliveries] == [1]


def test_the_first_save_of_a_message_id_wins(under_test: StoreUnderTest) -> None:
    under_test.store.apply([message(1, payload=b"first"), RetainedSaved("t", 1)])
    under_test.store.apply([message(1, payload=b"second"), RetainedSaved("t", 1)])
    assert [m.payload for m in loaded(under_test).retained] == [b"first"]


def test_records_apply_in_order(under_test: StoreUnderTest) -> None:
    under_test.store.apply([
        session(), message(1),
        DeliverySaved("s", 1, 1, 1, False), DeliveryDeleted("s", 1),  # gone
        DeliveryDeleted("s", 2), DeliverySaved("s", 2, 1, 1, False),  # there
        DeliveryUpdated("s", 3, 1, FlightState.AWAITING_PUBACK),  # nothing to update yet
        DeliverySaved("s", 3, 1, 1, False),
        DeliverySaved("s", 4, 1, 1, False), DeliveryUpdated("s", 4, 8, FlightState.AWAITING_PUBACK),
        DeliverySaved("s", 5, 1, 1, False), DeliveryUpdated("s", 5, 9, FlightState.AWAITING_PUBACK),
        DeliverySaved("s", 5, 1, 2, False),  # saved again: queued again
        DeliverySaved("s", 6, 1, 1, False), DeliveryDeleted("s", 6),
        DeliveryUpdated("s", 6, 9, FlightState.AWAITING_PUBACK),  # gone: nothing to update
    ])
    deliveries = only_session(loaded(under_test)).deliveries
    assert [(d.sequence, d.qos, d.packet_id, d.state) for d in deliveries] == [
        (2, 1, 0, FlightState.QUEUED), (3, 1, 0, FlightState.QUEUED),
        (4, 1, 8, FlightState.AWAITING_PUBACK), (5, 2, 0, FlightState.QUEUED)]


def test_deliveries_load_in_sequence_order(under_test: StoreUnderTest) -> None:
    under_test.store.apply([session(), message(1),
                            *(DeliverySaved("s", n, 1, 1, False) for n in (10, 2, 300, 7))])
    under_test.store.apply([DeliveryUpdated("s", 300, 1, FlightState.AWAITING_PUBACK)])
    assert [d.sequence for d in only_session(loaded(under_test)).deliveries] == [2, 7, 10, 300]


def test_time_spent_down_counts(under_test: StoreUnderTest) -> None:
    under_test.store.apply([
        session("s", 100, False, 100.0), message(1, expires_in=50.0),
        DeliverySaved("s", 1, 1, 1, False), WillSaved("s", Will("w", b""), 10.0),
    ])
    under_test.clock.advance(30)
    found = only_session(loaded(under_test))
    assert (found.expires_in, found.deliveries[0].message.expires_in, found.will_in) == (
        70.0, 20.0, -20.0)


def test_a_session_connected_when_the_broker_stopped_gets_its_full_lifetime(
        under_test: StoreUnderTest) -> None:
    under_test.store.apply([session("on", 100, True, 100.0), session("forever", 0, True, None)])
    under_test.clock.advance(1000)
    assert [(s.client_id, s.expires_in) for s in loaded(under_test).sessions] == [
        ("forever", None), ("on", 100.0)]
    under_test.clock.advance(40)  # its expiry has been running since that load
    assert [s.expires_in for s in loaded(under_test).sessions] == [None, 60.0]


def test_message_ids_continue_above_every_id_ever_saved(under_test: StoreUnderTest) -> None:
    under_test.store.apply([message(41), message(7, "r"), RetainedSaved("r", 7)])
    assert loaded(under_test).next_message_id == 42  # 41 was forgotten, its id is not reused


def test_housekeeping_forgets_what_has_expired(under_test: StoreUnderTest) -> None:
    under_test.store.apply([
        session("old", 10, False, 10.0), message(1), DeliverySaved("old", 1, 1, 1, False),
        session("live", 3600, False, 3600.0),
        message(2, expires_in=5.0), DeliverySaved("live", 1, 2, 1, False),
        DeliverySaved("live", 2, 2, 1, False),
        DeliveryUpdated("live", 2, 1, FlightState.AWAITING_PUBACK),  # in flight: kept
        message(3, "r/short", expires_in=5.0), RetainedSaved("r/short", 3),
        message(4, "r/long"), RetainedSaved("r/long", 4),
    ])
    under_test.clock.advance(10 + SESSION_EXPIRY_GRACE / 2)
    under_test.store.housekeeping()  # the core may still be ending "old": kept
    assert [s.client_id for s in under_test.store.load().sessions] == ["live", "old"]
    under_test.clock.advance(SESSION_EXPIRY_GRACE)
    under_test.store.housekeeping()
    assert under_test.store.stats() == StoreStats(under_test.store.stats().size_bytes, 2, 1)
    state = loaded(under_test)
    assert [m.topic for m in state.retained] == ["r/long"]
    assert [(d.sequence, d.message.message_id) for d in only_session(state).deliveries] == [
        (2, 2)]


def test_a_batch_applies_all_or_nothing(under_test: StoreUnderTest) -> None:
    under_test.store.apply([session("s")])
    with pytest.raises(KeyError):
        under_test.store.apply([session("t"), SessionDeleted("s"), "not a record"])  # type: ignore[list-item]
    assert [s.client_id for s in loaded(under_test).sessions] == ["s"]
