"""Bridges between mqttish and a real Mosquitto (started by the tests), and between two
mqttish brokers: topics out, in and both ways with prefixes, no loops, the remote away and
back, TLS, failover, and the figures in $SYS and /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from mqttish.bridge.config import BridgeConfig, BridgeTopic
from mqttish.client import MQTT_5, Client, Message
from mqttish.server import Server
from tests.conftest import make_config
from tests.e2e.broker_process import free_port
from tests.mosquitto import Mosquitto
from tests.wire.tls_certs import make_certificates

StartMosquitto = Callable[..., Mosquitto]
TIMEOUT = 15


def bridge(port: int, *topics: BridgeTopic, name: str = "remote", **options: Any) -> BridgeConfig:
    options.setdefault("restart_timeout", (0.2, 1.0))
    options.setdefault("remote_clientid", f"mqttish-{name}")
    return BridgeConfig(name=name, addresses=(f"127.0.0.1:{port}",), topics=topics, **options)


async def start_mqttish(nursery: trio.Nursery, *bridges: BridgeConfig, **overrides: Any
                        ) -> Server:
    server = Server(make_config(bridges=bridges, **overrides))
    await nursery.start(server.run)
    return server


@asynccontextmanager
async def client(port: int, client_id: str, **options: Any) -> AsyncIterator[Client]:
    async with Client("127.0.0.1", port, client_id=client_id, **options) as connected:
        yield connected


async def wait_for_state(port: int, name: str, state: bytes) -> None:
    """Until the bridge's retained $SYS state on the broker at `port` says `state`."""
    async with client(port, f"watch-{name}-{state!r}") as watcher, \
            watcher.subscription(f"$SYS/broker/connection/{name}/state") as states:
        async for message in states:
            if message.payload == state:
                return


async def take(messages: trio.abc.ReceiveChannel[Message], count: int) -> list[Message]:
    return [await messages.receive() for _ in range(count)]


@pytest.mark.parametrize("version", ["mqttv311", "mqttv50"])
async def test_out_in_and_both_with_prefixes_and_no_loop(
        nursery: trio.Nursery, start_mosquitto: StartMosquitto, version: str) -> None:
    remote = start_mosquitto()
    server = await start_mqttish(nursery, bridge(
        remote.port,
        BridgeTopic("sensors/#", "out", 1, "site/", "factory-7/"),
        BridgeTopic("commands/#", "in", 1, "", "factory-7/"),
        BridgeTopic("chat/#", "both", 1),
        protocol_version=version))
    here = server.ports[0]
    with trio.fail_after(TIMEOUT):
        await wait_for_state(here, "remote", b"1")
        async with client(here, "local-app") as local, client(remote.port, "cloud-app") as cloud:
            async with cloud.subscription("factory-7/sensors/#", 1) as at_cloud, \
                    cloud.subscription("chat/#", 1) as cloud_chat, \
                    local.subscription("commands/#", 1) as commands, \
                    local.subscription("chat/#", 1) as local_chat:
                await local.publish("site/sensors/line-1/temperature", "21.5", qos=1)
                [out] = await take(at_cloud, 1)
                assert (out.topic, out.payload) == ("factory-7/sensors/line-1/temperature",
                                                    b"21.5")
                await cloud.publish("factory-7/commands/line-1/stop", "now", qos=1)
                [incoming] = await take(commands, 1)
                assert (incoming.topic, incoming.payload) == ("commands/line-1/stop", b"now")
                # Both ways: each side gets the other's message once, and its own once.
                await local.publish("chat/from-here", "hello", qos=1)
                await cloud.publish("chat/from-there", "hi", qos=1)
                here_got = {m.topic for m in await take(local_chat, 2)}
                there_got = {m.topic for m in await take(cloud_chat, 2)}
                assert here_got == there_got == {"chat/from-here", "chat/from-there"}
                # No loop: after a marker, nothing came back a second time.
                await local.publish("chat/marker", "end", qos=1)
                assert (await local_chat.receive()).topic == "chat/marker"
                assert (await cloud_chat.receive()).topic == "chat/marker"
    server.request_shutdown()
