"""The simulators against a real broker in the test's trio run, over real sockets.

Nothing waits for randomness or sleeps to synchronise: sensors are told what
to read (`hold`), and the test waits, under `fail_after`, for the messages
that must follow.
"""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import trio

from mqttish.client import MQTT_5, Backoff, Client, ClientOptions, Message
from mqttish.config import ListenerConfig
from mqttish.server import Server
from simulators.common import BrokerSettings
from simulators.fleet import Fleet, FleetConfig, raise_fd_limit
from simulators.jobs import JobsConfig, JobsExample
from simulators.scenario import Scenario, ScenarioRun, load_scenario, scenario_path
from simulators.sensor import Climate, SensorConfig, TemperatureSensor
from tests.conftest import make_config

TIMEOUT = 10
FAST = ClientOptions(backoff=Backoff(initial=0.05, maximum=0.2))


def settings(server: Server) -> BrokerSettings:
    return BrokerSettings("127.0.0.1", server.ports[0], options=FAST)


class Recorder:
    """Collects a client's messages; tests wait for a condition on them, not for time."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._changed = trio.Event()

    async def run(self, inbox: trio.MemoryReceiveChannel[Message]) -> None:
        async for message in inbox:
            self.messages.append(message)
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        with trio.fail_after(TIMEOUT):
            while True:
                changed = self._changed
                if condition():
                    return
                await changed.wait()

    def payloads(self, topic: str) -> list[Any]:
        return [_decode(m.payload) for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> Any:
        found = self.payloads(topic)
        return found[-1] if found else None


def _decode(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode()


async def observe(nursery: trio.Nursery, server: Server, *filters: str) -> Recorder:
    client = Client("127.0.0.1", server.ports[0], client_id="observer", version=MQTT_5,
                    reconnect=True, options=FAST)
    await nursery.start(_observer, client, filters)
    recorder = Recorder()
    nursery.start_soon(recorder.run, client.messages())
    return recorder


async def _observer(client: Client, filters: tuple[str, ...], *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    async with client:
        await client.subscribe(list(filters), qos=1)
        task_status.started()
        await trio.sleep_forever()


def fast_building() -> Scenario:
    """The bundled building, reading every 50 ms, with no random or scripted spikes."""
    scenario = load_scenario(scenario_path("building"))
    sensors = tuple(replace(sensor, interval=0.05, script=(),
                            climate=replace(sensor.climate, spikes_per_hour=0.0))
                    for sensor in scenario.sensors)
    return replace(scenario, sensors=sensors)


async def test_building_spike_switches_the_fan_once_and_a_dead_sensor_goes_offline(
        trio_broker: Server, nursery: trio.Nursery) -> None:
    events = "events/temperature/{}/hq/kitchen"
    fan = "actuators/hq/kitchen/fan"
    recorder = await observe(nursery, trio_broker, "events/temperature/+/hq/+", "actuators/#",
                             "sensors/hq/kitchen/temperature", "sensors/hq/+/temperature/status")
    run = ScenarioRun(fast_building(), settings(trio_broker), seed=1)
    await nursery.start(run.run)

    def kitchen_events() -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in recorder.messages
                if m.topic in {events.format(level) for level in ("low", "normal", "high")}]

    def fan_state() -> str | None:
        state = recorder.last(fan)
        return None if state is None else str(state["state"])

    # The monitor announces each room's level when it first hears from it.
    await recorder.wait_for(lambda: [e["event"] for e in kitchen_events()] == ["normal"])
    assert fan_state() == "off"
    kitchen = run.sensor("kitchen")

    kitchen.hold(30.0)  # the oven
    await recorder.wait_for(lambda: fan_state() == "on")
    # Cooling to just under the threshold, within the hysteresis: still high, no event.
    kitchen.hold(25.8)
    await recorder.wait_for(lambda: recorder.payloads("sensors/hq/kitchen/temperature")[-3:]
                            and all(r["value"] == 25.8 for r in
                                    recorder.payloads("sensors/hq/kitchen/temperature")[-3:]))
    kitchen.hold(21.0)
    await recorder.wait_for(lambda: fan_state() == "off")

    assert [(e["event"], e["value"]) for e in kitchen_events()] == [
        ("normal", kitchen_events()[0]["value"]), ("high", 30.0), ("normal", 21.0)]
    high = kitchen_events()[1]
    assert (high["site"], high["room"], high["threshold"], high["previous"]) == (
        "hq", "kitchen", 26.0, "normal")
    assert recorder.payloads(fan)[-2:] == [
        {"state": "on", "value": 1, "event": "high", "temperature": 30.0,
         "timestamp": recorder.payloads(fan)[-2]["timestamp"]},
        {"state": "off", "value": 0, "event": "normal", "temperature": 21.0,
         "timestamp": recorder.payloads(fan)[-1]["timestamp"]},
    ]

    # The heater is the fan's mirror image.
    run.sensor("basement").hold(15.0)
    await recorder.wait_for(lambda: (recorder.last("actuators/hq/basement/heater") or {})
                            .get("state") == "on")

    # A sensor that dies without DISCONNECT: its will says offline.
    status = "sensors/hq/office/temperature/status"
    assert recorder.last(status) == "online"
    run.sensor("office").kill()
    await recorder.wait_for(lambda: recorder.last(status) == "offline")

    run.stop()  # the others say offline themselves
    await recorder.wait_for(lambda: recorder.last("sensors/hq/kitchen/temperature/status")
                            == "offline")


async def test_fleet_of_1000_every_reading_arrives_and_the_summary_agrees(
        nursery: trio.Nursery) -> None:
    sensors = 1000
    raise_fd_limit(2 * sensors)  # both ends of every connection live in this process
    # The subscriber shares this process with 1000 sensors and the broker: let it fall behind.
    server = Server(make_config(max_queued_messages=100_000))
    await nursery.start(server.run)
    received: list[tuple[str, int]] = []
    got_more = trio.Event()

    async with Client("127.0.0.1", server.ports[0], client_id="collector", version=MQTT_5
                      ) as collector, \
            collector.subscription("sensors/load/+/temperature", qos=1) as readings, \
            trio.open_nursery() as collecting:

        async def collect() -> None:
            nonlocal got_more
            async for message in readings:
                reading = json.loads(message.payload)
                received.append((reading["sensor"], reading["seq"]))
                got_more.set()
                got_more = trio.Event()

        collecting.start_soon(collect)
        config = FleetConfig(sensors=sensors, rate=1000.0, duration=2.0, site="load", qos=1)
        fleet = Fleet(config, settings(server), seed=5)
        with trio.fail_after(60):
            report = await fleet.run()
        with trio.fail_after(30):
            while len(received) < report.published:
                await got_more.wait()
        collecting.cancel_scope.cancel()

    assert report.sensors == report.connected == sensors
    assert report.errors == 0
    assert report.published == sum(sensor.published for sensor in fleet.sensors)
    assert len(received) == report.published  # nothing more arrived than was acknowledged...
    assert len(set(received)) == len(received)  # ...nothing twice...
    by_sensor: dict[str, list[int]] = {}
    for sensor, seq in received:
        by_sensor.setdefault(sensor, []).append(seq)
    for seqs in by_sensor.values():  # ...and no gaps: each sensor's readings 0, 1, 2...
        assert sorted(seqs) == list(range(len(seqs)))
    assert report.published >= 0.8 * config.rate * config.duration
    assert f"published    {report.published} readings at QoS 1" in "\n".join(report.lines())
    server.request_shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_server(nursery: trio.Nursery, port: int) -> tuple[Server, trio.Event]:
    """A broker on `port`, and an event set once it has completely stopped."""
    server = Server(make_config(listeners=(ListenerConfig(port=port),)))
    stopped = trio.Event()

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await server.run(task_status=task_status)
        finally:
            stopped.set()

    await nursery.start(run)
    return server, stopped


async def test_a_sensor_rides_out_a_broker_restart(nursery: trio.Nursery) -> None:
    port = free_port()
    server, stopped = await start_server(nursery, port)
    status = "sensors/lab/bench/temperature/status"
    recorder = await observe(nursery, server, "sensors/lab/#")
    config = SensorConfig(site="lab", room="bench", interval=0.05, climate=Climate())
    sensor = TemperatureSensor(config, settings(server), random.Random(1))
    await nursery.start(sensor.run)
    await recorder.wait_for(lambda: len(recorder.payloads(config.reading_topic())) >= 2)

    server.request_shutdown()
    with trio.fail_after(TIMEOUT):
        await stopped.wait()
    before = recorder.payloads(config.reading_topic())[-1]["seq"]
    seen = len(recorder.messages)
    await start_server(nursery, port)  # forgets everything, the retained status too

    # The sensor reconnects, says it is online again, and goes on counting.
    await recorder.wait_for(lambda: any(m.topic == status and m.payload == b"online"
                                        for m in recorder.messages[seen:]))
    await recorder.wait_for(lambda: recorder.payloads(config.reading_topic())[-1]["seq"]
                            > before + 1)
    assert sensor.errors == 0
    sensor.stop()


async def test_jobs_go_to_every_worker_and_every_result_comes_back(
        trio_broker: Server) -> None:
    config = JobsConfig(jobs=30, workers=3, rate=300.0, work_time=0.01)
    example = JobsExample(config, settings(trio_broker), seed=2)
    with trio.fail_after(TIMEOUT):
        report = await example.run()
    assert report is not None
    assert report.submitted == report.completed == 30
    assert sorted(report.by_worker) == ["images-worker-1", "images-worker-2", "images-worker-3"]
    assert sum(report.by_worker.values()) == 30
    assert sum(worker.done for worker in example.workers) == 30
