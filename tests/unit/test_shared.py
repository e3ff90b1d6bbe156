"""Shared subscriptions in the sans-IO core: strategies, stalled and departed members."""

from collections import Counter

import pytest

from mqttish.config import Config
from mqttish.core.broker import Broker
from mqttish.protocol.packets import PubAck, Publish
from tests.unit.peer import Peer

SHARE = "$share/workers/orders/#"


def setup(strategy: str = "round_robin", members: int = 3, **config: object
          ) -> tuple[Broker, list[Peer], Peer]:
    broker = Broker(Config(shared_subscription_strategy=strategy, **config))  # type: ignore[arg-type]
    workers = []
    for index in range(members):
        worker = Peer(broker)
        worker.connect(f"w{index}", clean_start=False)
        worker.subscribe(SHARE, 1)
        workers.append(worker)
    publisher = Peer(broker)
    publisher.connect("shop")
    return broker, workers, publisher


def publish(publisher: Peer, count: int, topic: str = "orders/{i}", start: int = 0) -> None:
    for i in range(start, start + count):
        publisher.send(Publish(topic.format(i=i), str(i).encode(), 1, packet_id=i % 65535 + 1))


def ack_all(worker: Peer, publishes: list[Publish]) -> None:
    """Acknowledge; what the broker sends in return stays pending for `publishes()`."""
    for message in publishes:
        worker.pending.extend(worker.send(PubAck(message.packet_id)))  # type: ignore[arg-type]


def test_each_message_goes_to_exactly_one_member_round_robin() -> None:
    _, workers, publisher = setup()
    received: Counter[bytes] = Counter()
    for round_ in range(10):
        publish(publisher, 3, start=round_ * 3)
        for worker in workers:
            got = worker.publishes()
            assert len(got) == 1  # the strict rotation
            received.update(m.payload for m in got)
            ack_all(worker, got)
    assert set(received.values()) == {1} and len(received) == 30


def test_ordinary_subscribers_still_get_everything() -> None:
    broker, _, publisher = setup()
    audit = Peer(broker)
    audit.connect("audit")
    audit.subscribe("orders/#", 0)
    publish(publisher, 20)
    assert len(audit.publishes()) == 20


def test_stalled_member_stops_receiving_at_its_window() -> None:
    _, workers, publisher = setup(max_inflight_messages=5)
    stalled, *healthy = workers
    publish(publisher, 60)
    assert len(stalled.publishes()) == 5
    for _ in range(20):
        for worker in healthy:
            ack_all(worker, worker.publishes())
    assert len(stalled.publishes()) == 0


@pytest.mark.parametrize("strategy", ["round_robin", "random", "least_loaded", "sticky"])
def test_departed_member_work_goes_to_the_others(strategy: str) -> None:
    broker, workers, publisher = setup(strategy)
    leaving, *staying = workers
    publish(publisher, 30, topic="orders/{i}")
    unacked = leaving.publishes()
    assert unacked, "the leaving member got some work"
    leaving.drop(now=1)
    redelivered = [m for w in staying for m in w.publishes()]
    payloads = Counter(m.payload for m in redelivered)
    assert set(m.payload for m in unacked) <= set(payloads)
    assert sum(payloads.values()) == 30
    assert all(m.dup for m in redelivered if m.payload in {u.payload for u in unacked})
    group = broker.subscriptions.groups()[0]
    assert group.redelivered == len(unacked)
    assert not broker.sessions["w0"].outgoing.flights


def test_messages_wait_for_an_offline_group_and_go_to_the_first_member_back() -> None:
    broker, workers, publisher = setup(members=2)
    for worker in workers:
        worker.drop()
    publish(publisher, 5)
    [group] = broker.subscriptions.groups()
    assert len(group.backlog) == 5
    back = Peer(broker)
    back.connect("w1", clean_start=False)
    assert sorted(m.payload for m in back.publishes()) == [b"0", b"1", b"2", b"3", b"4"]


def test_sticky_keeps_a_topic_on_one_member() -> None:
    _, workers, publisher = setup("sticky")
    for i in range(20):
        publish(publisher, 3, topic="orders/device-a", start=i * 3)
        publish(publisher, 3, topic="orders/device-b", start=100 + i * 3)
    owners = {}
    for worker in workers:
        for message in worker.publishes():
            owners.setdefault(message.topic, set()).add(worker.connection.client.client_id)  # type: ignore[union-attr]
    assert all(len(owner) == 1 for owner in owners.values())


def test_least_loaded_prefers_the_idle_member() -> None:
    _, workers, publisher = setup("least_loaded", members=2)
    busy, idle = workers
    publish(publisher, 1)
    assert len(busy.publishes()) == 1  # and never acknowledged
    for i in range(1, 6):
        publish(publisher, 1, start=i)
        ack_all(idle, idle.publishes())
    assert busy.publishes() == []


def test_retained_messages_are_not_sent_to_shared_subscriptions() -> None:
    broker = Broker(Config())
    publisher = Peer(broker)
    publisher.connect("p")
    publisher.send(Publish("orders/1", b"old", 1, retain=True, packet_id=1))
    worker = Peer(broker)
    worker.connect("w")
    assert len(worker.subscribe(SHARE, 1)) == 1  # only the SUBACK


def test_unsubscribing_member_hands_back_its_work() -> None:
    from mqttish.protocol.packets import Unsubscribe

    broker, workers, publisher = setup(members=2, max_inflight_messages=1)
    leaving, staying = workers
    publish(publisher, 6)
    [in_flight] = leaving.publishes()
    leaving.send(Unsubscribe(9, (SHARE,)))
    # [MQTT-3.10.4-3]: the message already sent is still the leaving member's to finish.
    assert broker.sessions["w0"].outgoing.flights[in_flight.packet_id].message.payload == b"0"
    received = []
    while got := staying.publishes():
        received.extend(m.payload for m in got)
        ack_all(staying, got)
    assert sorted(received) == [str(i).encode() for i in range(1, 6)]
