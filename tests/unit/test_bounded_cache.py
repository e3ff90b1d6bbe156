"""Topic caches are bounded by bytes and keep long and one-off topics out (issue #10, finding 9)."""

from __future__ import annotations

import gc
import tracemalloc

from mqttish.core import message as message_module
from mqttish.core.broker import Broker
from mqttish.protocol import codec
from mqttish.protocol.bounded_cache import ENTRY_OVERHEAD, BoundedCache
from mqttish.protocol.packets import Publish
from tests.unit.peer import Peer


def test_a_key_is_admitted_on_its_second_sighting() -> None:
    cache: BoundedCache[str, int] = BoundedCache(10_000)
    cache.put("once", 1, 4)
    assert cache.get("once") is None
    cache.put("once", 1, 4)
    assert cache.get("once") == 1


def test_entries_too_large_are_never_cached() -> None:
    cache: BoundedCache[str, int] = BoundedCache(100_000, max_entry=1000)
    for _ in range(3):
        cache.put("long", 1, 5000)
    assert cache.get("long") is None
    assert cache.bytes == 0


def test_bytes_stay_under_the_bound() -> None:
    cache: BoundedCache[int, int] = BoundedCache(10_000, max_entry=1000)
    for key in range(1000):
        cache.put(key, key, 50)
        cache.put(key, key, 50)
        assert cache.bytes <= 2 * 10_000
    assert len(cache) <= 10_000 // (50 + ENTRY_OVERHEAD)
    assert cache.get(999) == 999  # the newest survive a reset


def test_huge_distinct_topics_leave_nothing_behind() -> None:
    """6,000 topics of 60 KB with no subscribers added 744 MB that stayed (Mosquitto: 0.3 MB)."""
    broker = Broker()
    publisher = Peer(broker)
    publisher.connect("publisher")
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for index in range(300):
        topic = f"{index:05}/" + "x" * 60_000
        publisher.send(Publish(topic, b"p"), Publish(topic, b"p"))  # seen twice: not one-off
    publisher.drop()
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert kept < 2_000_000, f"{kept} bytes kept for topics nobody wanted"
    assert codec._known_topics.bytes <= codec.KNOWN_TOPICS_BYTES * 2
    assert message_module._encoded_topics.bytes <= codec.KNOWN_TOPICS_BYTES * 2


def test_repeated_short_topics_are_cached() -> None:
    broker = Broker()
    publisher = Peer(broker)
    publisher.connect("sensor")
    topic = "sensors/kitchen/temperature"
    publisher.send(Publish(topic, b"21"), Publish(topic, b"22"))
    assert codec._known_topics.get(topic.encode()) == topic
