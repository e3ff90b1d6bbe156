"""Broker behaviour through the sans-IO core: whole flows, no sockets, time as a number."""

import pytest

from mqttish.config import Config
from mqttish.core.broker import Broker
from mqttish.core.connection import PACKETS_PER_TURN
from mqttish.core.journal import Journal
from mqttish.core.message import Message
from mqttish.persistence.memory import MemoryStore
from mqttish.protocol.packets import (
    MQTT_5,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    UnsubAck,
    Unsubscribe,
    Will,
)
from mqttish.protocol.reason_codes import ReasonCode
from tests.unit.peer import Peer


@pytest.fixture
def broker() -> Broker:
    return Broker(Config())


def test_connect_then_ping(broker: Broker) -> None:
    peer = Peer(broker)
    assert peer.connect("c1") == ConnAck(False, 0)
    assert peer.send(PingReq()) == [PingResp()]


def test_first_packet_must_be_connect(broker: Broker) -> None:
    peer = Peer(broker)
    assert peer.send(PingReq()) == []
    assert peer.connection.closed


def test_second_connect_closes(broker: Broker) -> None:
    peer = Peer(broker)
    peer.connect("c1")
    peer.send(Connect("c1"))
    assert peer.connection.closed


def test_unsupported_protocol_level_gets_connack_1(broker: Broker) -> None:
    peer = Peer(broker)
    peer.connection.receive_data(b"\x10\x0d\x00\x04MQTT\x07\x02\x00\x3c\x00\x01c", 0)
    assert peer.connection.data_to_send(0) == b"\x20\x02\x00\x01"
    assert peer.connection.closed


def test_empty_client_id(broker: Broker) -> None:
    assert Peer(broker).connect("", clean_start=True).reason_code == 0
    refused = Peer(broker)
    refusal = refused.connect("", clean_start=False)
    assert refusal.reason_code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
    assert refused.connection.closed


def test_qos_flows_and_downgrade(broker: Broker) -> None:
    sub = Peer(broker)
    sub.connect("sub")
    assert sub.subscribe("t/#", 1) == [SubAck(1, (1,))]
    pub = Peer(broker)
    pub.connect("pub")
    assert pub.send(Publish("t/0", b"zero")) == []
    assert pub.send(Publish("t/1", b"one", 1, packet_id=10)) == [PubAck(10)]
    assert pub.send(Publish("t/2", b"two", 2, packet_id=11)) == [PubRec(11)]
    assert pub.send(PubRel(11)) == [PubComp(11)]
    received = sub.publishes()
    assert [(p.topic, p.qos) for p in received] == [("t/0", 0), ("t/1", 1), ("t/2", 1)]
    assert received[1].packet_id != received[2].packet_id


def test_qos2_duplicate_before_pubrel_is_delivered_once(broker: Broker) -> None:
    sub = Peer(broker)
    sub.connect("sub")
    sub.subscribe("t", 2)
    pub = Peer(broker)
    pub.connect("pub")
    first = Publish("t", b"once", 2, packet_id=5)
    assert pub.send(first) == [PubRec(5)]
    assert pub.send(Publish("t", b"once", 2, dup=True, packet_id=5)) == [PubRec(5)]
    assert pub.send(PubRel(5)) == [PubComp(5)]
    assert [p.payload for p in sub.publishes()] == [b"once"]


def test_outgoing_qos2_flow(broker: Broker) -> None:
    sub = Peer(broker)
    sub.connect("sub")
    sub.subscribe("t", 2)
    pub = Peer(broker)
    pub.connect("pub")
    pub.send(Publish("t", b"x", 2, packet_id=1), PubRel(1))
    [delivery] = sub.publishes()
    assert sub.send(PubRec(delivery.packet_id)) == [PubRel(delivery.packet_id)]  # type: ignore[arg-type]
    assert sub.send(PubComp(delivery.packet_id)) == []  # type: ignore[arg-type]
    assert broker.sessions["sub"].outgoing.flights == {}


def test_overlapping_subscriptions_deliver_once_at_highest_qos(broker: Broker) -> None:
    sub = Peer(broker)
    sub.connect("sub")
    sub.subscribe("a/#", 0)
    sub.subscribe("a/+", 2, packet_id=2)
    pub = Peer(broker)
    pub.connect("pub")
    pub.send(Publish("a/b", b"x", 2, packet_id=1))
    [delivery] = sub.publishes()
    assert delivery.qos == 2


def test_retained_messages(broker: Broker) -> None:
    pub = Peer(broker)
    pub.connect("pub")
    pub.send(Publish("r/1", b"one", 1, retain=True, packet_id=1),
             Publish("r/2", b"two", 0, retain=True),
             Publish("r/2", b"two-b", 0, retain=True),
             Publish("r/3", b"three", 0, retain=True),
             Publish("r/3", b"", 0, retain=True))
    sub = Peer(broker)
    sub.connect("sub")
    answer = sub.subscribe("r/+", 1)
    assert answer[0] == SubAck(1, (1,))
    retained = {p.topic: (p.payload, p.retain, p.qos) for p in answer[1:]}
    assert retained == {"r/1": (b"one", True, 1), "r/2": (b"two-b", True, 0)}
    pub.send(Publish("r/1", b"live", 0, retain=True))
    [live] = sub.publishes()
    assert (live.payload, live.retain) == (b"live", False)


def test_will_on_abnormal_end_only(broker: Broker) -> None:
    watcher = Peer(broker)
    watcher.connect("watcher")
    watcher.subscribe("wills/#", 1)
    crashing = Peer(broker)
    crashing.connect("crash", will=Will("wills/crash", b"gone", 1, True))
    crashing.drop()
    polite = Peer(broker)
    polite.connect("polite", will=Will("wills/polite", b"gone", 1))
    polite.send(Disconnect())
    polite.drop()
    assert [p.topic for p in watcher.publishes()] == ["wills/crash"]
    assert broker.retained.get("wills/crash") is not None


def test_takeover_closes_old_connection_and_sends_its_will(broker: Broker) -> None:
    watcher = Peer(broker)
    watcher.connect("watcher")
    watcher.subscribe("w", 0)
    first = Peer(broker)
    first.connect("dev", will=Will("w", b"old gone"))
    second = Peer(broker)
    second.connect("dev", clean_start=False)
    assert first.connection.closed
    assert broker.sessions["dev"].connection is second.connection
    assert [p.payload for p in watcher.publishes()] == [b"old gone"]


def test_persistent_session_queues_and_resends_with_dup(broker: Broker) -> None:
    sub = Peer(broker)
    sub.connect("sub", clean_start=False)
    sub.subscribe("t", 1)
    pub = Peer(broker)
    pub.connect("pub")
    pub.send(Publish("t", b"unacked", 1, packet_id=1))
    [unacked] = sub.publishes()
    sub.drop(now=1)
    pub.send(Publish("t", b"queued", 1, packet_id=2), Publish("t", b"qos0", 0))
    again = Peer(broker)
    answer = again.connect("sub", clean_start=False, now=2)
    assert answer.session_present
    received = again.publishes(now=2)
    assert [(p.payload, p.dup) for p in received] == [(b"unacked", True), (b"queued", False)]
    assert received[0].packet_id == unacked.packet_id


def test_clean_session_discards_state(broker: Broker) -> None:
    sub = Peer(broker)
    sub.connect("sub", clean_start=False)
    sub.subscribe("t", 1)
    sub.drop()
    again = Peer(broker)
    assert not again.connect("sub", clean_start=True).session_present
    again.drop()
    assert "sub" not in broker.sessions
    assert broker.subscriptions.count == 0


def test_a_full_queue_holds_its_publisher_until_it_drains() -> None:
    broker = Broker(Config(max_queued_messages=4, max_inflight_messages=1))
    sub = Peer(broker)
    sub.connect("sub")
    sub.subscribe("t", 1)
    pub = Peer(broker)
    pub.connect("pub")
    replies = pub.send(*(Publish("t", str(i).encode(), 1, packet_id=i + 1) for i in range(10)))
    assert replies == [PubAck(1), PubAck(2), PubAck(3), PubAck(4)]  # the 5th waits for room
    assert pub.connection.held and broker.metrics.publish_dropped == 0
    received = sub.publishes()
    assert [p.payload for p in received] == [b"0"]  # one in flight, the rest wait their turn
    for expected in (b"1", b"2"):
        after_ack = sub.send(PubAck(received[0].packet_id))  # type: ignore[arg-type]
        received = [p for p in after_ack if isinstance(p, Publish)]
        assert [p.payload for p in received] == [expected]
    assert not pub.connection.held  # drained to half: the publisher goes on
    assert pub.send() == [PubAck(5), PubAck(6), PubAck(7)]
    assert pub.connection.held and broker.metrics.publish_dropped == 0


def _held_set_up(broker: Broker, subscribes_back: bool) -> tuple[Peer, Peer]:
    """A subscriber to t at QoS 1 and a publisher ("pub", subscribed to back if asked),
    before the publisher floods t (`_ten_to_t`)."""
    sub = Peer(broker)
    sub.connect("sub")
    sub.subscribe("t", 1)
    pub = Peer(broker)
    pub.connect("pub")
    if subscribes_back:
        pub.subscribe("back", 1)
    return sub, pub


def _ten_to_t() -> list[Publish]:
    return [Publish("t", str(i).encode(), 1, packet_id=i + 1) for i in range(10)]


def test_a_held_publisher_that_only_publishes_is_left_unread() -> None:
    """Nothing waits for its acknowledgements, so the transport stops reading it (TCP
    pushes back on the device) and what it sent behind the held PUBLISH is handled
    once, in order, when it goes on."""
    broker = Broker(Config(max_queued_messages=4, max_inflight_messages=1))
    sub, pub = _held_set_up(broker, subscribes_back=False)
    pub.send(*_ten_to_t())
    assert pub.connection.held and not pub.connection.wants_input
    received = sub.publishes()
    for _ in range(2):
        received = [p for p in sub.send(PubAck(received[0].packet_id))  # type: ignore[arg-type]
                    if isinstance(p, Publish)]
    assert not pub.connection.held  # drained to half: released
    assert pub.send() == [PubAck(5), PubAck(6), PubAck(7)]


def test_a_held_publisher_is_still_read_for_the_acknowledgements_others_wait_for() -> None:
    """A held publisher that has deliveries in flight itself is read on: its PUBACK is
    handled at once, so its own queue keeps moving while it waits for another's."""
    broker = Broker(Config(max_queued_messages=4, max_inflight_messages=1))
    _, both = _held_set_up(broker, subscribes_back=True)
    other = Peer(broker)
    other.connect("other")
    other.send(Publish("back", b"a", 1, packet_id=1), Publish("back", b"b", 1, packet_id=2))
    (first,) = both.publishes()  # "b" waits behind it: a window of one
    both.send(*_ten_to_t())
    assert both.connection.held and both.connection.wants_input
    answer = both.send(PubAck(first.packet_id))  # type: ignore[arg-type]
    assert [p.payload for p in answer if isinstance(p, Publish)] == [b"b"]
    assert both.connection.held


def test_a_held_publisher_is_read_again_once_deliveries_to_it_need_acknowledging() -> None:
    """It was left unread; a message for it makes its acknowledgements due, and the
    transport is told to read it again (`on_resume`), or its queue could not drain."""
    broker = Broker(Config(max_queued_messages=4, max_inflight_messages=1))
    _, pub = _held_set_up(broker, subscribes_back=True)
    resumed: list[bool] = []
    pub.connection.on_resume = lambda: resumed.append(True)  # type: ignore[method-assign]
    pub.send(*_ten_to_t())
    assert pub.connection.held and not pub.connection.wants_input and not resumed
    other = Peer(broker)
    other.connect("other")
    other.send(Publish("back", b"for pub", 1, packet_id=1))
    assert resumed and pub.connection.wants_input
    assert [p.payload for p in pub.publishes()] == [b"for pub"]


def test_a_publisher_catching_up_after_a_hold_goes_in_turns() -> None:
    """What it read while held goes PACKETS_PER_TURN packets per call once it is
    released, and it asks for its next turn (`on_resume`), reading nothing more
    meanwhile: others' input, a subscriber's acknowledgements above all, gets in
    between (a 64 KiB read was 2.6 ms of routing in one go)."""
    broker = Broker(Config(max_queued_messages=100, backpressure_watermark=40,
                           max_inflight_messages=1))
    sub, pub = _held_set_up(broker, subscribes_back=False)
    resumed: list[bool] = []
    pub.connection.on_resume = lambda: resumed.append(True)  # type: ignore[method-assign]
    pub.send(*(Publish("t", str(i).encode(), 1, packet_id=i + 1) for i in range(100)))
    assert pub.connection.held
    received = sub.publishes()
    while pub.connection.held:  # the subscriber takes one at a time, down to half
        received = [p for p in sub.send(PubAck(received[0].packet_id))  # type: ignore[arg-type]
                    if isinstance(p, Publish)]
    assert resumed  # released
    asked = len(resumed)
    assert len(pub.send()) == 1 + PACKETS_PER_TURN  # the held one, then a turn's worth
    assert len(resumed) > asked and not pub.connection.wants_input  # the rest: next turn
    assert pub.send()  # which goes on where the first stopped


def test_a_stalled_subscriber_stops_holding_publishers_and_its_overflow_is_dropped() -> None:
    broker = Broker(Config(max_queued_messages=3, max_inflight_messages=1, stall_timeout=5))
    sub = Peer(broker)
    sub.connect("sub")
    sub.subscribe("t", 1)
    pub = Peer(broker)
    pub.connect("pub")
    pub.send(*(Publish("t", str(i).encode(), 1, packet_id=i + 1) for i in range(5)))
    assert pub.connection.held
    assert pub.connection.read_deadline(now=1.0) == 5.0  # the stall check of the queue
    pub.connection.read_deadline_expired(now=5.0)
    assert broker.metrics.consumers_stalled == 1
    assert pub.send(now=5.0) == [PubAck(4), PubAck(5)]  # no longer held: dropped for sub
    assert broker.metrics.publish_dropped == 2
    assert [p.payload for p in sub.publishes(now=5.0)] == [b"0"]


def test_keepalive_expiry_closes_with_will(broker: Broker) -> None:
    watcher = Peer(broker)
    watcher.connect("watcher")
    watcher.subscribe("w", 0)
    silent = Peer(broker)
    silent.connect("silent", now=100, keepalive=10, will=Will("w", b"timeout"))
    assert silent.connection.read_deadline(now=101) == 115  # 1.5 x keepalive after its input
    silent.connection.read_deadline_expired(now=114)  # not yet: nothing happens
    assert not silent.connection.closed
    silent.connection.read_deadline_expired(now=115)
    silent.drop()
    assert [p.payload for p in watcher.publishes()] == [b"timeout"]


def test_unsubscribe(broker: Broker) -> None:
    sub = Peer(broker)
    sub.connect("sub")
    sub.subscribe("t", 0)
    assert sub.send(Unsubscribe(2, ("t",))) == [UnsubAck(2)]
    pub = Peer(broker)
    pub.connect("pub")
    pub.send(Publish("t", b"x"))
    assert sub.publishes() == []


def test_dollar_topics_hidden_from_leading_wildcards(broker: Broker) -> None:
    sub = Peer(broker)
    sub.connect("sub")
    sub.subscribe("#", 0)
    sub.subscribe("$app/#", 0, packet_id=2)
    pub = Peer(broker)
    pub.connect("pub")
    pub.send(Publish("$app/x", b"app"), Publish("normal", b"n"))
    assert sorted(p.topic for p in sub.publishes()) == ["$app/x", "normal"]
    wildcard_only = Peer(broker)
    wildcard_only.connect("w")
    wildcard_only.subscribe("+/x", 0)
    pub.send(Publish("$app/x", b"app"))
    assert wildcard_only.publishes() == []


def test_clients_cannot_publish_to_dollar_topics(broker: Broker) -> None:
    sub = Peer(broker)
    sub.connect("sub")
    sub.subscribe("$SYS/#", 0)
    pub = Peer(broker, version=MQTT_5)
    pub.connect("pub")
    answer = pub.send(Publish("$SYS/broker/uptime", b"forged", qos=1, packet_id=1))
    assert answer == [PubAck(1, ReasonCode.NOT_AUTHORIZED)]
    assert sub.publishes() == []


def test_state_survives_restart_through_the_store() -> None:
    store = MemoryStore()
    journal = Journal()
    broker = Broker(Config(), journal=journal)
    pub = Peer(broker)
    pub.connect("pub")
    sub = Peer(broker)
    sub.connect("sub", clean_start=False)
    sub.subscribe("t/#", 1)
    sub.drop()
    pub.send(Publish("t/r", b"kept", 1, retain=True, packet_id=1))
    broker.shutdown(now=5)
    changes, position = journal.take()
    store.apply(changes)
    journal.committed_up_to(position)
    restarted = Broker(Config(), journal=Journal())
    restarted.restore(store.load(), now=5)
    assert restarted.retained.get("t/r") is not None
    again = Peer(restarted)
    assert again.connect("sub", clean_start=False).session_present
    assert [p.payload for p in again.publishes()] == [b"kept"]


def _restart(broker: Broker, journal: Journal, store: MemoryStore) -> Broker:
    """Commit what the journal holds, and start a broker on what the store kept."""
    changes, position = journal.take()
    store.apply(changes)
    journal.committed_up_to(position)
    restarted = Broker(Config(), journal=journal)
    restarted.restore(store.load(), now=5)
    return restarted


def test_a_shared_groups_backlog_survives_restart_through_the_store() -> None:
    """Jobs wait in the backlog while no durable worker is connected: they are stored,
    come back with the group after a restart, and leave the store once taken."""
    store, journal = MemoryStore(), Journal()
    broker = Broker(Config(), journal=journal)
    for worker in ("w1", "w2"):
        peer = Peer(broker)
        peer.connect(worker, clean_start=False)
        peer.subscribe("$share/workers/jobs/#", 1)
        peer.drop()
    pub = Peer(broker)
    pub.connect("pub")
    pub.send(*(Publish(f"jobs/{n}", str(n).encode(), 1, packet_id=n + 1) for n in range(3)))
    restarted = _restart(broker, journal, store)
    worker = Peer(restarted)
    assert worker.connect("w1", clean_start=False).session_present
    taken = worker.publishes()
    assert [(p.payload, p.dup) for p in taken] == [(b"0", True), (b"1", True), (b"2", True)]
    worker.send(*(PubAck(p.packet_id or 0) for p in taken))
    again = _restart(restarted, journal, store)
    assert [len(s.deliveries) for s in store.load().sessions] == [0, 0, 0]
    assert Peer(again).connect("w1", clean_start=False).session_present


def test_a_shared_group_that_ends_takes_its_stored_backlog_with_it() -> None:
    store, journal = MemoryStore(), Journal()
    broker = Broker(Config(), journal=journal)
    worker = Peer(broker)
    worker.connect("w1", clean_start=False)
    worker.subscribe("$share/workers/jobs/#", 1)
    worker.drop()
    pub = Peer(broker)
    pub.connect("pub")
    pub.send(Publish("jobs/1", b"1", 1, packet_id=1))
    back = Peer(broker)
    back.connect("w1", clean_start=True)  # the only member ends its session
    _restart(broker, journal, store)
    assert store.load().sessions == ()  # neither w1 (clean now) nor the backlog


def test_client_ids_with_control_characters_are_refused(broker: Broker) -> None:
    """As Mosquitto refuses them (it closes the connection, as for malformed UTF-8)."""
    for client_id in ("a\x01b", "\x1bc", "d\x7f", "e\x85"):
        connack = Peer(broker).connect(client_id)
        assert connack.reason_code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID


def test_v5_session_expiry(broker: Broker) -> None:
    from mqttish.protocol.properties import Properties

    peer = Peer(broker, MQTT_5)
    peer.connect("c5", clean_start=False, properties=Properties(session_expiry_interval=10))
    peer.drop(now=100)
    broker.housekeeping(now=105)
    assert "c5" in broker.sessions
    broker.housekeeping(now=111)
    assert "c5" not in broker.sessions
    assert broker.metrics.clients_expired == 1


def test_sys_topics_are_retained_but_not_saved() -> None:
    from mqttish.core.journal import Journal
    from mqttish.core.store import RetainedSaved

    journal = Journal()
    broker = Broker(Config(), journal=journal)
    broker.publish(Message("$SYS/broker/uptime", b"5 seconds", retain=True), now=0)
    broker.publish(Message("app/state", b"on", retain=True), now=0)
    assert broker.retained.get("$SYS/broker/uptime") is not None
    saved = [change.topic for change in journal.changes if isinstance(change, RetainedSaved)]
    assert saved == ["app/state"]


def test_a_resumed_session_resends_within_a_lowered_receive_maximum(broker: Broker) -> None:
    """[MQTT-3.3.4-9]: a client that comes back with a smaller Receive Maximum gets no more
    unacknowledged PUBLISHes than it allows; the rest follow as it acknowledges."""
    from mqttish.protocol.properties import Properties

    sub = Peer(broker, MQTT_5)
    sub.connect("sub", clean_start=False, properties=Properties(session_expiry_interval=60))
    sub.subscribe("t", 1)
    pub = Peer(broker)
    pub.connect("pub")
    pub.send(*(Publish("t", str(i).encode(), 1, packet_id=i + 1) for i in range(5)))
    assert len(sub.publishes()) == 5
    sub.drop()
    back = Peer(broker, MQTT_5)
    back.connect("sub", clean_start=False,
                 properties=Properties(session_expiry_interval=60, receive_maximum=2))
    resent = back.publishes()
    assert [(p.payload, p.dup) for p in resent] == [(b"0", True), (b"1", True)]
    after_ack = [p for p in back.send(PubAck(resent[0].packet_id or 0))
                 if isinstance(p, Publish)]
    assert [(p.payload, p.dup) for p in after_ack] == [(b"2", True)]


def test_publishers_are_held_at_the_watermark_not_at_the_queue_bound() -> None:
    """A deep max_queued_messages is for offline and stalled clients: one that makes
    progress holds its publishers from backpressure_watermark on, and frees them at half."""
    broker = Broker(Config(max_queued_messages=100, backpressure_watermark=4,
                           max_inflight_messages=1))
    sub = Peer(broker)
    sub.connect("sub")
    sub.subscribe("t", 1)
    pub = Peer(broker)
    pub.connect("pub")
    replies = pub.send(*(Publish("t", str(i).encode(), 1, packet_id=i + 1) for i in range(10)))
    assert replies == [PubAck(1), PubAck(2), PubAck(3), PubAck(4)]
    assert pub.connection.held and len(broker.sessions["sub"].queue) == 4


def test_a_publisher_waits_at_most_the_stall_timeout_even_for_a_client_making_progress(
        ) -> None:
    """A slow client that keeps taking a little never stalls, but no PUBLISH waits for it
    (or for any client) longer than stall_timeout; those read behind it neither."""
    broker = Broker(Config(max_queued_messages=5, backpressure_watermark=3,
                           max_inflight_messages=1, stall_timeout=5))
    slow = Peer(broker)
    slow.connect("slow")
    slow.subscribe("t", 1)
    pub = Peer(broker)
    pub.connect("pub")
    replies = pub.send(*(Publish("t", str(i).encode(), 1, packet_id=i + 1) for i in range(5)),
                       now=0)
    assert replies == [PubAck(1), PubAck(2), PubAck(3)]  # the 4th is held, the 5th behind
    first, *_ = slow.publishes(now=4.0)  # progress: it took one, and stays over half
    pub.connection.read_deadline_expired(now=4.0)
    assert pub.connection.held and pub.connection.read_deadline(now=4.0) == 5.0
    slow.send(PubAck(first.packet_id or 0), now=4.5)  # more progress
    pub.connection.read_deadline_expired(now=5.0)
    assert pub.send(now=5.0) == [PubAck(4), PubAck(5)]
    assert broker.metrics.consumers_stalled == 0


def _flooded(broker: Broker, publishers: int, each: int) -> tuple[Peer, list[Peer]]:
    """A subscriber to t/# at QoS 0, and publishers that each sent `each` messages to
    t/<their number> at once; returns the subscriber and the list the publishers join,
    in order, when their connection is released (as the multiplexer's)."""
    sub = Peer(broker)
    sub.connect("sub")
    sub.subscribe("t/#", 0)
    resumed: list[Peer] = []
    for index in range(publishers):
        pub = Peer(broker)
        pub.connect(f"p{index}")
        pub.connection.on_resume = lambda pub=pub: resumed.append(pub)  # type: ignore[misc]
        pub.send(*(Publish(f"t/{index}", b"x") for _ in range(each)))
    return sub, resumed


def test_publishers_held_by_one_queue_take_turns() -> None:
    """Three publishers flood one subscriber at QoS 0, and go on in the order the queue
    releases them, as the multiplexer does: each release lets a different one go first,
    so none starves (the slowest got 1% of the fastest's share before)."""
    broker = Broker(Config(max_queued_messages=100, backpressure_watermark=4))
    sub, resumed = _flooded(broker, publishers=3, each=1000)
    got = {"t/0": 0, "t/1": 0, "t/2": 0}
    for _ in range(30):  # the subscriber takes what is queued; released publishers go on
        for message in sub.publishes():
            got[message.topic] += 1
        while resumed:
            resumed.pop(0).send()
    assert min(got.values()) >= max(got.values()) // 2, got


def test_a_flooding_publisher_is_held_after_stall_timeout_too() -> None:
    """Two publishers flood a subscriber that keeps reading, for longer than the stall
    timeout. A release by the drained queue ends a publisher's wait: before, the first
    publisher held "waited" from its first hold for as long as it had packets read
    behind it, went past the full queue after stall_timeout, and had 33 times the
    other's share in the bench (and a healthy reader lost messages)."""
    broker = Broker(Config(max_queued_messages=50, backpressure_watermark=4,
                           stall_timeout=1.0))
    sub, resumed = _flooded(broker, publishers=2, each=2000)
    got = {"t/0": 0, "t/1": 0}
    now = 0.0
    for _ in range(40):  # 4 s of a subscriber reading 50 messages every 0.1 s
        now += 0.1
        for message in sub.publishes(now):
            got[message.topic] += 1
        while resumed:
            resumed.pop(0).send(now=now)
    assert broker.metrics.publish_dropped == 0
    assert min(got.values()) >= max(got.values()) // 2, got
