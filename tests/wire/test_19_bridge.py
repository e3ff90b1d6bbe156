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
from mqttish.client import Client, ClientOptions, Message
from mqttish.server import Server
from tests.conftest import make_config, websocket_listeners
from tests.e2e.broker_process import free_port
from tests.mosquitto import Mosquitto
from tests.wire.test_15_sys_metrics import scrape
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
        async with (client(here, "local-app") as local,
                    client(remote.port, "cloud-app") as cloud,
                    cloud.subscription("factory-7/sensors/#", 1) as at_cloud,
                    cloud.subscription("chat/#", 1) as cloud_chat,
                    local.subscription("commands/#", 1) as commands,
                    local.subscription("chat/#", 1) as local_chat):
            await local.publish("site/sensors/line-1/temperature", "21.5", qos=1)
            [out] = await take(at_cloud, 1)
            assert (out.topic, out.payload) == ("factory-7/sensors/line-1/temperature", b"21.5")
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


async def test_every_qos1_message_arrives_after_the_remote_was_stopped_and_brought_back(
        nursery: trio.Nursery, start_mosquitto: StartMosquitto) -> None:
    """200 messages acknowledged here; the remote stops after 20 have arrived there (so
    some are in flight, some queued), stays away while the rest are acknowledged here,
    and comes back: every message arrives."""
    remote = start_mosquitto("persistence true\n")  # keeps the cloud app's session
    server = await start_mqttish(nursery, bridge(remote.port, BridgeTopic("data/#", "out", 1,
                                                                          "", "site/")),
                                 sys_interval=0.1)
    here = server.ports[0]
    total = 200
    seen: set[bytes] = set()
    with trio.fail_after(TIMEOUT * 2):
        await wait_for_state(here, "remote", b"1")
        async with (client(remote.port, "cloud-app", clean_start=False, reconnect=True) as cloud,
                    cloud.subscription("site/data/#", 1, keep=True) as at_cloud):
            async with client(here, "publisher") as publisher:
                for number in range(20):
                    await publisher.publish(f"data/{number}", str(number), qos=1)
                while len(seen) < 20:
                    seen.add((await at_cloud.receive()).payload)
                remote.stop()
                await wait_for_state(here, "remote", b"0")
                for number in range(20, total):  # each acknowledged by mqttish
                    await publisher.publish(f"data/{number}", str(number), qos=1)
            [figures] = [bridge.figures() for bridge in server.bridges]
            assert not figures.connected and figures.queued == total - 20
            remote.start()
            while len(seen) < total:
                seen.add((await at_cloud.receive()).payload)
        assert seen == {str(number).encode() for number in range(total)}
        # The remote's acknowledgements reach the bridge's session here, which empties.
        figure = "$SYS/broker/connection/remote/messages/queued"
        async with client(here, "watcher") as watcher, watcher.subscription(figure) as queued:
            while (await queued.receive()).payload != b"0":
                pass
    server.request_shutdown()


async def test_tls_bridge_with_a_client_certificate(
        nursery: trio.Nursery, start_mosquitto: StartMosquitto, tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    port = free_port()
    remote = start_mosquitto(listener=(
        f"listener {port} 127.0.0.1\nallow_anonymous true\ncafile {certs.ca}\n"
        f"certfile {certs.server_cert}\nkeyfile {certs.server_key}\n"
        "require_certificate true\n"), port=port)
    server = await start_mqttish(nursery, bridge(
        remote.port, BridgeTopic("secure/#", "both", 1), tls=True, cafile=certs.ca,
        certfile=certs.client_cert, keyfile=certs.client_key))
    here = server.ports[0]
    with trio.fail_after(TIMEOUT):
        await wait_for_state(here, "remote", b"1")
        tls = certs.client_context(with_certificate=True)
        async with client(remote.port, "cloud-app", options=ClientOptions(tls=tls)) as cloud, \
                cloud.subscription("secure/#", 1) as at_cloud, \
                client(here, "local-app") as local, local.subscription("secure/in", 1) as inbox:
            await local.publish("secure/out", "over TLS", qos=1)
            assert (await at_cloud.receive()).payload == b"over TLS"
            await cloud.publish("secure/in", "back", qos=1)
            assert (await inbox.receive()).payload == b"back"
    assert "Opening ipv4 listen socket" in remote.log()
    server.request_shutdown()


@pytest.mark.parametrize("version", ["mqttv311", "mqttv50"])
async def test_a_bridge_between_two_mqttish_brokers(nursery: trio.Nursery,
                                                    version: str) -> None:
    """The remote is mqttish too: with MQTT 3.1.1 it honours the bridge bit, with 5.0
    No Local; either way a topic shared both ways does not loop."""
    remote = await start_mqttish(nursery)
    server = await start_mqttish(nursery, bridge(
        remote.ports[0], BridgeTopic("shared/#", "both", 1), protocol_version=version))
    here, there = server.ports[0], remote.ports[0]
    with trio.fail_after(TIMEOUT):
        await wait_for_state(here, "remote", b"1")
        async with client(here, "a") as a, client(there, "b") as b, \
                a.subscription("shared/#", 1) as at_a, b.subscription("shared/#", 1) as at_b:
            await a.publish("shared/from-a", "1", qos=1)
            await b.publish("shared/from-b", "2", qos=1)
            assert {m.topic for m in await take(at_a, 2)} == {"shared/from-a", "shared/from-b"}
            assert {m.topic for m in await take(at_b, 2)} == {"shared/from-a", "shared/from-b"}
            await a.publish("shared/marker", "end", qos=1)
            assert (await at_a.receive()).topic == "shared/marker"
            assert (await at_b.receive()).topic == "shared/marker"
        bridged = remote.broker
        assert bridged is not None and bridged.sessions["mqttish-remote"].client is not None
        assert bridged.sessions["mqttish-remote"].client.bridge is (version == "mqttv311")
    server.request_shutdown()
    remote.request_shutdown()


async def test_a_mosquitto_bridge_into_mqttish(nursery: trio.Nursery,
                                               start_mosquitto: StartMosquitto) -> None:
    """Mosquitto's own bridge (try_private: protocol level 0x84) connects to mqttish; topics
    flow both ways without a loop, and its notification is accepted."""
    server = await start_mqttish(nursery)
    here = server.ports[0]
    remote = start_mosquitto(
        f"connection to-mqttish\naddress 127.0.0.1:{here}\ntopic shared/# both 1\n"
        "cleansession true\nremote_clientid edge-1\n")
    with trio.fail_after(TIMEOUT):
        async with (client(here, "watcher") as watcher,
                    watcher.subscription("$SYS/broker/connection/edge-1/state") as states):
            assert (await states.receive()).payload == b"1"
        async with client(here, "a") as a, client(remote.port, "b") as b, \
                a.subscription("shared/#", 1) as at_a, b.subscription("shared/#", 1) as at_b:
            await a.publish("shared/from-mqttish", "1", qos=1)
            await b.publish("shared/from-mosquitto", "2", qos=1)
            expected = {"shared/from-mqttish", "shared/from-mosquitto"}
            assert {m.topic for m in await take(at_a, 2)} == expected
            assert {m.topic for m in await take(at_b, 2)} == expected
            await b.publish("shared/marker", "end", qos=1)
            assert (await at_a.receive()).topic == "shared/marker"
            assert (await at_b.receive()).topic == "shared/marker"
    broker = server.broker
    assert broker is not None
    edge = broker.sessions["edge-1"].client
    assert edge is not None and edge.bridge
    server.request_shutdown()


async def test_failover_to_the_second_address_and_back_to_the_main_one(
        nursery: trio.Nursery, start_mosquitto: StartMosquitto) -> None:
    main_port = free_port()
    backup = start_mosquitto(name="backup")
    server = await start_mqttish(nursery, BridgeConfig(
        name="remote", addresses=(f"127.0.0.1:{main_port}", f"127.0.0.1:{backup.port}"),
        topics=(BridgeTopic("t/#", "out", 1),), restart_timeout=(0.2, 0.5),
        remote_clientid="mqttish-remote"))
    here = server.ports[0]
    with trio.fail_after(TIMEOUT):
        async with (client(here, "watcher") as watcher,
                    watcher.subscription("$SYS/broker/connection/remote/state") as states):
            while (await states.receive()).payload != b"1":
                pass
            [running] = server.bridges
            assert running.figures().address == f"127.0.0.1:{backup.port}"
            main = start_mosquitto(name="main", port=main_port)
            # The bridge finds the main broker back, leaves the backup, connects to it.
            assert [(await states.receive()).payload for _ in range(2)] == [b"0", b"1"]
            assert running.figures().address == f"127.0.0.1:{main.port}"
        async with client(main.port, "cloud") as cloud, cloud.subscription("t/#", 1) as got, \
                client(here, "local") as local:
            await local.publish("t/1", "to the main broker", qos=1)
            assert (await got.receive()).payload == b"to the main broker"
    server.request_shutdown()


async def test_bridge_figures_in_sys_and_metrics(nursery: trio.Nursery,
                                                 start_mosquitto: StartMosquitto) -> None:
    remote = start_mosquitto()
    server = await start_mqttish(
        nursery, bridge(remote.port, BridgeTopic("m/#", "both", 1)), sys_interval=0.2,
        listeners=websocket_listeners())
    here, http = server.ports
    with trio.fail_after(TIMEOUT):
        await wait_for_state(here, "remote", b"1")
        async with client(here, "local") as local, client(remote.port, "cloud") as cloud, \
                local.subscription("m/in", 1) as inbox, cloud.subscription("m/out", 1) as out:
            for _ in range(3):
                await local.publish("m/out", "x", qos=1)
                await out.receive()
            await cloud.publish("m/in", "y", qos=1)
            await inbox.receive()
            async with local.subscription("$SYS/broker/connection/remote/messages/sent") as sent:
                while (await sent.receive()).payload != b"3":
                    pass
        metrics = await trio.to_thread.run_sync(scrape, http)
    labels = (("bridge", "remote"),)
    assert metrics[("mqttish_bridge_up", labels)] == 1
    assert metrics[("mqttish_bridge_messages_sent_total", labels)] == 3
    assert metrics[("mqttish_bridge_messages_received_total", labels)] == 1
    assert metrics[("mqttish_bridge_connects_total", labels)] == 1
    assert ("mqttish_bridge_queued_messages", labels) in metrics  # (exact: the test above)
    server.request_shutdown()


async def test_bridge_logs_in_to_the_remote(nursery: trio.Nursery,
                                            start_mosquitto: StartMosquitto,
                                            tmp_path: Path) -> None:
    passwords = tmp_path / "passwd"
    await trio.run_process(["mosquitto_passwd", "-c", "-b", str(passwords), "site-1", "s3cret"])
    port = free_port()
    remote = start_mosquitto(port=port, listener=(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"))
    server = await start_mqttish(nursery, bridge(
        remote.port, BridgeTopic("t/#", "out", 1), remote_username="site-1",
        remote_password="s3cret"))
    with trio.fail_after(TIMEOUT):
        await wait_for_state(server.ports[0], "remote", b"1")
    assert "u'site-1'" in remote.wait_for_log("as mqttish-remote")
    server.request_shutdown()
