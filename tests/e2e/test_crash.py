"""Nothing acknowledged is lost when the broker is killed (issue #14).

A broker with persistence on is SIGKILLed at random moments, several times,
and started again on the same store, while publishers send QoS 1, QoS 2 and
retained messages and persistent subscribers (online, and one offline all
along) receive them. The clients reconnect by themselves. Afterwards:

- every QoS 1 message a publisher got a PUBACK for reached each subscriber at
  least once;
- every QoS 2 message a publisher saw completed reached each subscriber
  exactly once;
- every retained topic holds the last value whose publish was acknowledged.
"""

from __future__ import annotations

import os
import random
import signal
from collections import Counter
from pathlib import Path

import trio

from mqttish.client import MQTT_5, Backoff, Client, ClientOptions, Properties
from tests.e2e.broker_process import BrokerProcess, free_port

# `make test` kills the broker 4 times; `make crash` many more (CRASH_ROUNDS).
ROUNDS = int(os.environ.get("CRASH_ROUNDS", "4"))
FAST_RECONNECT = ClientOptions(backoff=Backoff(initial=0.05, maximum=0.3, jitter=0.2))
SESSION = Properties(session_expiry_interval=3600)


class Broker:
    """The broker process, killed and started again on the same store and port."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.config = tmp_path / "broker.yaml"
        self.config.write_text(
            f"listeners:\n  - port: {self.port}\n"
            f"persistence: true\npersistence_location: {tmp_path}\nsys_interval: 0\n"
            "max_queued_messages: 100000\n")  # the offline subscriber keeps all of it
        self.process: BrokerProcess | None = None

    async def start(self) -> None:
        self.process = BrokerProcess("-c", str(self.config))
        await trio.to_thread.run_sync(self.process.wait_for, "listening on")

    def kill(self) -> None:
        assert self.process is not None
        self.process.process.send_signal(signal.SIGKILL)
        self.process.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()


class Received:
    """What one subscriber got, by payload."""

    def __init__(self) -> None:
        self.counts: Counter[bytes] = Counter()
        self.marker = trio.Event()

    async def consume(self, client: Client) -> None:
        async for message in client.messages():
            if message.payload == b"marker":
                self.marker.set()
            else:
                self.counts[message.payload] += 1


def client(broker: Broker, client_id: str, *, v5: bool = False) -> Client:
    return Client("127.0.0.1", broker.port, client_id=client_id,
                  version=MQTT_5 if v5 else 4, clean_start=False,
                  properties=SESSION if v5 else Properties(), reconnect=True,
                  options=FAST_RECONNECT)


async def publish_for_ever(publisher: Client, qos: int, acked: list[bytes],
                           retained: dict[str, bytes]) -> None:
    for number in range(10**9):
        payload = f"q{qos}-{number}".encode()
        await publisher.publish(f"crash/q{qos}/x", payload, qos=qos)
        acked.append(payload)
        if qos == 1 and number % 7 == 0:
            topic = f"crash/ret/{number % 5}"
            await publisher.publish(topic, payload, qos=1, retain=True)
            retained[topic] = payload


async def test_nothing_acknowledged_is_lost_when_the_broker_is_killed(tmp_path: Path) -> None:
    rng = random.Random(14)
    broker = Broker(tmp_path)
    acked = {1: [], 2: []}  # type: dict[int, list[bytes]]
    retained: dict[str, bytes] = {}
    online = {"sub-q1": Received(), "sub-q2": Received()}
    offline = Received()
    try:
        await broker.start()
        async with client(broker, "offline", v5=True) as away:  # subscribes, then goes away
            await away.subscribe(["crash/q1/#", "crash/q2/#"], qos=2)
        async with trio.open_nursery() as nursery:
            subscribers = {}
            for (name, received), qos, v5 in zip(online.items(), (1, 2), (False, True),
                                                 strict=True):
                subscribers[name] = await nursery.start(_subscribe, broker, name, qos, v5,
                                                        received)
            publishers = [client(broker, f"pub-q{qos}") for qos in (1, 2)]
            async with publishers[0] as pub1, publishers[1] as pub2:
                async with trio.open_nursery() as load:
                    load.start_soon(publish_for_ever, pub1, 1, acked[1], retained)
                    load.start_soon(publish_for_ever, pub2, 2, acked[2], retained)
                    for _ in range(ROUNDS):
                        await trio.sleep(rng.uniform(0.3, 1.2))  # load runs: kill at random
                        broker.kill()
                        await broker.start()
                    load.cancel_scope.cancel()
                # A marker after everything, through the last broker: each subscriber's
                # session gets it after every message (and any copy) queued before it.
                await pub2.publish("crash/q2/x", b"marker", qos=2)
                await pub1.publish("crash/q1/x", b"marker", qos=1)
            with trio.fail_after(30):
                for received in online.values():
                    await received.marker.wait()
            nursery.cancel_scope.cancel()
        async with client(broker, "offline", v5=True) as back, trio.open_nursery() as nursery:
            nursery.start_soon(offline.consume, back)
            with trio.fail_after(30):
                await offline.marker.wait()
            nursery.cancel_scope.cancel()
        async with client(broker, "checker") as checker, trio.open_nursery() as nursery:
            values: dict[str, bytes] = {}
            done = trio.Event()

            async def collect() -> None:
                async for message in checker.messages():
                    values[message.topic] = message.payload
                    if len(values) == len(retained):
                        done.set()

            nursery.start_soon(collect)
            await checker.subscribe("crash/ret/#", qos=1)
            with trio.fail_after(10):
                await done.wait()
            nursery.cancel_scope.cancel()
    finally:
        broker.stop()

    assert len(acked[1]) > 50 and len(acked[2]) > 20  # the load ran through the kills
    q1, q2 = online["sub-q1"].counts, online["sub-q2"].counts
    assert [p for p in acked[1] if not q1[p]] == [], "QoS 1 messages lost (online)"
    assert [p for p in acked[2] if q2[p] != 1] == [], "QoS 2 not exactly once (online)"
    assert [p for p in acked[1] if not offline.counts[p]] == [], "QoS 1 lost (offline)"
    assert [p for p in acked[2] if offline.counts[p] != 1] == [], "QoS 2 not once (offline)"
    for topic, payload in retained.items():  # the last acknowledged, or a later one
        assert int(values[topic].split(b"-")[1]) >= int(payload.split(b"-")[1]), topic


async def _subscribe(broker: Broker, name: str, qos: int, v5: bool, received: Received, *,
                     task_status: trio.TaskStatus[Client] = trio.TASK_STATUS_IGNORED) -> None:
    async with client(broker, name, v5=v5) as subscriber, trio.open_nursery() as nursery:
        nursery.start_soon(received.consume, subscriber)
        await subscriber.subscribe(f"crash/q{qos}/#", qos=qos)
        task_status.started(subscriber)
        await trio.sleep_forever()
