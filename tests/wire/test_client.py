"""mqttish.client against the real broker, over real sockets, in the test's own trio run.

Nothing here sleeps to synchronise: tests wait for events (a message, a state
change) under `trio.fail_after`. The only bounded waits on something that must
NOT happen (`move_on_after`) are in the keepalive test, where time is the
property under test.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

from mqttish.client import (
    MQTT_3_1_1,
    MQTT_5,
    Backoff,
    Client,
    ClientOptions,
    ClientState,
    ConnectError,
    ConnectionLostError,
    LocalProtocolError,
    Message,
    Messages,
    Properties,
    PublishError,
    ReasonCode,
    SubscriptionRequest,
    Will,
)
from mqttish.config import ListenerConfig
from mqttish.server import Server
from tests.conftest import make_config

TIMEOUT = 5
VERSIONS = [pytest.param(MQTT_3_1_1, id="v311"), pytest.param(MQTT_5, id="v5")]
FAST = ClientOptions(backoff=Backoff(initial=0.05, maximum=0.2))


def connect(server: Server, client_id: str = "", **kwargs: Any) -> Client:
    return Client("127.0.0.1", server.ports[0], client_id=client_id, **kwargs)


async def receive(messages: Messages) -> Message:
    with trio.fail_after(TIMEOUT):
        return await messages.receive()


async def start_server(nursery: trio.Nursery, port: int = 0, **overrides: Any
                       ) -> tuple[Server, trio.Event]:
    """A broker in `nursery`, and an event set once it has completely stopped."""
    server = Server(make_config(listeners=(ListenerConfig(port=port),), **overrides))
    stopped = trio.Event()

    async def run(*, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await server.run(task_status=task_status)
        finally:
            stopped.set()

    await nursery.start(run)
    return server, stopped


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proxy:
    """A TCP relay in front of the broker that a test can cut, mute or close."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.mute = False  # drop what the broker sends: its acknowledgements never arrive
        self.open = True  # while False, new connections are closed at once
        self._scopes: set[trio.CancelScope] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._relay, listeners)

    def cut(self) -> None:
        """End every relayed connection abruptly (no DISCONNECT either way)."""
        for scope in self._scopes:
            scope.cancel()

    async def _relay(self, downstream: trio.SocketStream) -> None:
        if not self.open:
            await trio.aclose_forcefully(downstream)
            return
        upstream = await trio.open_tcp_stream("127.0.0.1", self.target)
        scope = trio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, downstream, upstream, False, scope)
                    nursery.start_soon(self._pump, upstream, downstream, True, scope)
        finally:
            self._scopes.discard(scope)
            await trio.aclose_forcefully(downstream)
            await trio.aclose_forcefully(upstream)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream, from_broker: bool,
                    scope: trio.CancelScope) -> None:
        try:
            while data := await source.receive_some(65536):
                if not (from_broker and self.mute):
                    await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A 'broker' that accepts CONNECT and then never answers anything: a dead server."""

    async def handle(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"\x20\x02\x00\x00")  # CONNACK, accepted
        while await stream.receive_some(65536):
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ publish / subscribe


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_publish_reaches_subscriber(trio_broker: Server, version: int, qos: int) -> None:
    async with (
        connect(trio_broker, "sub", version=version) as sub,
        connect(trio_broker, "pub", version=version) as pub,
        sub.subscription("sensors/+/temperature", qos=2) as messages,
    ):
        await pub.publish("sensors/kitchen/temperature", "21.5", qos=qos)
        message = await receive(messages)
    assert message == Message("sensors/kitchen/temperature", b"21.5", qos)


@pytest.mark.parametrize("version", VERSIONS)
async def test_subscribe_returns_granted_qos_and_messages_waits_in_inbox(
        nursery: trio.Nursery, version: int) -> None:
    server, _ = await start_server(nursery, max_qos=1)
    async with connect(server, "c", version=version) as client:
        await client.publish("inbox/retained", b"old", qos=1, retain=True)
        codes = await client.subscribe(
            [SubscriptionRequest("inbox/#", 2), SubscriptionRequest("other", 0)])
        assert codes == (1, 0)  # the broker grants at most its max_qos
        # Nobody iterated yet: the retained message waits in the inbox instead of being lost.
        message = await receive(client.messages())
    assert (message.topic, message.payload, message.retain) == ("inbox/retained", b"old", True)


async def test_subscription_blocks_get_their_own_messages(trio_broker: Server) -> None:
    async with connect(trio_broker, "c", version=MQTT_5) as client:
        await client.subscribe("plain/#", qos=1)
        async with client.subscription("a/#", qos=1) as a_messages, \
                client.subscription("+/1", qos=1) as one_messages:
            for topic in ("a/1", "b/1", "a/2", "plain/x"):
                await client.publish(topic, topic, qos=1)
            assert [(await receive(a_messages)).topic for _ in range(2)] == ["a/1", "a/2"]
            assert [(await receive(one_messages)).topic for _ in range(2)] == ["a/1", "b/1"]
            assert (await receive(client.messages())).topic == "plain/x"


async def test_invalid_subscription_fails_locally_and_the_client_stays_connected(
        trio_broker: Server) -> None:
    async with connect(trio_broker, "c") as client:
        with pytest.raises(LocalProtocolError, match="whole level"):
            async with client.subscription("bad/#/filter"):
                pytest.fail("subscribed")
        await client.publish("still/fine", qos=1)


async def test_subscription_unsubscribes_on_exit(trio_broker: Server) -> None:
    async with connect(trio_broker, "c") as client:
        async with client.subscription("temp/#") as messages:
            await client.publish("temp/1", "in")
            assert (await receive(messages)).payload == b"in"
        await client.subscribe("barrier")  # SUBACK: the UNSUBSCRIBE before it was processed
        await client.publish("temp/2", "out", qos=1)
        await client.publish("barrier", "done", qos=1)
        assert (await receive(client.messages())).topic == "barrier"


@pytest.mark.parametrize("version", VERSIONS)
async def test_unsubscribe_stops_delivery(trio_broker: Server, version: int) -> None:
    async with connect(trio_broker, "c", version=version) as client:
        await client.subscribe(["u/1", "u/2"], qos=1)
        codes = await client.unsubscribe("u/1")
        assert codes == ((ReasonCode.SUCCESS,) if version == MQTT_5 else ())
        await client.publish("u/1", "gone", qos=1)
        await client.publish("u/2", "kept", qos=1)
        assert (await receive(client.messages())).payload == b"kept"


async def test_topic_aliases_from_the_server_are_resolved(trio_broker: Server) -> None:
    options = ClientOptions(topic_alias_maximum=5)
    async with (
        connect(trio_broker, "sub", version=MQTT_5, options=options) as sub,
        connect(trio_broker, "pub", version=MQTT_5) as pub,
        sub.subscription("alias/#", qos=1) as messages,
    ):
        for n in range(3):
            await pub.publish("alias/a/rather/long/topic/name", str(n), qos=1)
        received = [await receive(messages) for _ in range(3)]
    assert [(m.topic, m.payload) for m in received] == [
        ("alias/a/rather/long/topic/name", str(n).encode()) for n in range(3)]
    assert all(m.properties.topic_alias is None for m in received)


async def test_v5_refusal_in_puback_and_pubrec_raises_publish_error(trio_broker: Server) -> None:
    not_utf8 = Properties(payload_format_indicator=1)
    async with connect(trio_broker, "c", version=MQTT_5) as client:
        for qos in (1, 2):
            with pytest.raises(PublishError) as caught:
                await client.publish("t", b"\xff\xfe", qos=qos, properties=not_utf8)
            assert caught.value.reason_code == ReasonCode.PAYLOAD_FORMAT_INVALID
        await client.publish("t", "still connected", qos=2)


async def test_receive_maximum_is_respected(nursery: trio.Nursery) -> None:
    # The broker disconnects a client with more QoS 2 messages in flight than its window.
    server, _ = await start_server(nursery, max_inflight_messages=2)
    async with connect(server, "c", version=MQTT_5) as client:
        assert client.server_properties.receive_maximum == 2
        async with trio.open_nursery() as publishers:
            for n in range(10):
                publishers.start_soon(client.publish, f"window/{n}", b"x", 2)
        assert client.is_connected


# ------------------------------------------------------------------ flow control, acknowledgements


async def test_slow_consumer_holds_the_servers_window_and_loses_nothing(
        trio_broker: Server) -> None:
    options = ClientOptions(message_buffer=1)  # QoS 0 only: the window bounds QoS 1
    async with (
        connect(trio_broker, "slow", options=options) as sub,
        connect(trio_broker, "fast") as pub,
        sub.subscription("bulk/#", qos=1) as messages,
    ):
        for n in range(50):  # the consumer reads none of these while they are published
            await pub.publish(f"bulk/{n}", b"x", qos=1)
        topics = [(await receive(messages)).topic for _ in range(50)]
    assert topics == [f"bulk/{n}" for n in range(50)]


@pytest.mark.parametrize("version", VERSIONS)
async def test_publishing_from_a_message_loop_does_not_wait_for_the_loop(
        trio_broker: Server, version: int) -> None:
    # The PUBACK of each result arrives behind jobs the loop has not taken yet.
    jobs = 70  # more than the broker's window (20) and the default message_buffer (64)
    options = ClientOptions(message_buffer=1)
    async with (
        connect(trio_broker, "worker", version=version, options=options) as worker,
        connect(trio_broker, "producer", version=version) as producer,
        worker.subscription("jobs/#", qos=1) as messages,
    ):
        for n in range(jobs):
            await producer.publish(f"jobs/{n}", b"x", qos=1)
        with trio.fail_after(TIMEOUT):
            handled = 0
            async for message in messages:
                await worker.publish(f"results/{message.topic}", b"done", qos=1)
                handled += 1
                if handled == jobs:
                    break


@pytest.mark.parametrize("version", VERSIONS)
async def test_subscription_on_a_resumed_session_with_many_queued_messages(
        trio_broker: Server, version: int) -> None:
    # The queued messages arrive right after CONNACK, before subscription() is even called.
    session: dict[str, Any] = (
        {"properties": Properties(session_expiry_interval=600)} if version == MQTT_5
        else {"clean_start": False})
    queued = 70
    async with connect(trio_broker, "sleeper", version=version, **session) as sleeper:
        await sleeper.subscribe("queued/#", qos=1)
    async with connect(trio_broker, "producer") as producer:
        for n in range(queued):
            await producer.publish(f"queued/{n}", b"x", qos=1)
    async with connect(trio_broker, "sleeper", version=version, clean_start=False,
                       **{k: v for k, v in session.items() if k != "clean_start"}) as sleeper:
        assert sleeper.session_present
        with trio.fail_after(TIMEOUT):
            async with sleeper.subscription("queued/#", qos=1) as messages:
                topics = [(await messages.receive()).topic for _ in range(queued)]
    assert topics == [f"queued/{n}" for n in range(queued)]


@pytest.mark.parametrize("keep", [False, True])
async def test_a_kept_subscription_outlives_the_program(trio_broker: Server, keep: bool) -> None:
    # A persistent device stopped gracefully (its block ends, then DISCONNECT) finds what
    # was published meanwhile only if it kept its subscription; by default it unsubscribes.
    expiry = Properties(session_expiry_interval=600)
    async with connect(trio_broker, "device", version=MQTT_5, properties=expiry) as device:
        await device.subscribe("marker", qos=1)  # stays: it ends what the next run receives
        async with device.subscription("commands/#", qos=1, keep=keep):
            pass
    async with connect(trio_broker, "controller") as controller:
        await controller.publish("commands/fan", b"on", qos=1)
        await controller.publish("marker", b"", qos=1)
    async with connect(trio_broker, "device", version=MQTT_5, clean_start=False,
                       properties=expiry) as device:
        assert device.session_present
        inbox = device.messages()
        topics = []
        with trio.fail_after(TIMEOUT):
            while not topics or topics[-1] != "marker":
                topics.append((await inbox.receive()).topic)
    assert topics == (["commands/fan", "marker"] if keep else ["marker"])


async def test_leaving_a_block_acknowledges_what_it_never_took(trio_broker: Server) -> None:
    async with (
        connect(trio_broker, "sub") as sub,
        connect(trio_broker, "pub") as pub,
    ):
        async with sub.subscription("flood/#", qos=1):
            for n in range(25):  # more than the broker's window of 20; none taken
                await pub.publish(f"flood/{n}", b"x", qos=1)
        await sub.subscribe("after", qos=1)
        await pub.publish("after", b"x", qos=1)
        with trio.fail_after(TIMEOUT):  # the window is free again: "after" comes
            async for message in sub.messages():  # behind what the block left, if any
                if message.topic == "after":
                    break


class Crash(Exception):
    """An application error that ends a client's `async with` (no DISCONNECT)."""


@pytest.mark.parametrize("version", VERSIONS)
async def test_manual_ack_message_not_acked_by_a_crashed_consumer_comes_back_with_dup(
        trio_broker: Server, version: int) -> None:
    def worker() -> Client:
        session = (Properties(session_expiry_interval=600) if version == MQTT_5
                   else Properties())
        return connect(trio_broker, "worker", version=version, clean_start=False,
                       properties=session)

    async def take_one_and_crash(producer: Client) -> None:
        async with (
            worker() as client,
            client.subscription("jobs/#", qos=1, manual_ack=True) as jobs,
            client.subscription("jobs/+", qos=1) as watching,  # takes its copy at once
        ):
            await producer.publish("jobs/1", b"first", qos=1)
            await producer.publish("jobs/2", b"second", qos=1)
            assert (await receive(watching)).payload == b"first"
            message = await receive(jobs)
            assert (message.payload, message.dup) == (b"first", False)
            # A round trip: an acknowledgement queued before it has reached the broker.
            await client.publish("sync", qos=1)
            raise Crash  # before message.ack(); "second" was never even taken

    async with connect(trio_broker, "producer") as producer:
        with pytest.raises(Crash):
            await take_one_and_crash(producer)

        async with worker() as client, \
                client.subscription("jobs/#", qos=1, manual_ack=True) as jobs:
            assert client.session_present
            redelivered = [await receive(jobs) for _ in range(2)]
            assert [(m.payload, m.dup) for m in redelivered] == [(b"first", True),
                                                                 (b"second", True)]
            for message in redelivered:
                message.ack()

        await producer.publish("jobs/3", b"third", qos=1)
        async with worker() as client, \
                client.subscription("jobs/#", qos=1, manual_ack=True) as jobs:
            message = await receive(jobs)  # the acknowledged ones are not sent again
            assert (message.payload, message.dup) == (b"third", False)


async def test_manual_ack_message_of_a_crashed_member_goes_to_another_member(
        trio_broker: Server) -> None:
    share = "$share/workers/jobs/#"

    async def take_one_and_crash(producer: Client, other: Client) -> None:
        async with connect(trio_broker, "dying", version=MQTT_5) as dying, \
                dying.subscription(share, qos=1, manual_ack=True) as jobs:
            await producer.publish("jobs/1", b"job", qos=1)  # the only member gets it
            assert not (await receive(jobs)).dup
            await dying.publish("sync", qos=1)  # a queued acknowledgement would be out
            await other.subscribe(share, qos=1)
            raise Crash  # before message.ack()

    async with connect(trio_broker, "producer") as producer, \
            connect(trio_broker, "other", version=MQTT_5) as other:
        with pytest.raises(Crash):
            await take_one_and_crash(producer, other)
        message = await receive(other.messages())
    assert (message.topic, message.payload, message.dup) == ("jobs/1", b"job", True)


async def test_qos0_messages_a_consumer_has_no_room_for_are_dropped_and_counted(
        trio_broker: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "mqttish.client")
    options = ClientOptions(message_buffer=2)
    async with (
        connect(trio_broker, "sub", options=options) as sub,
        connect(trio_broker, "pub") as pub,
        sub.subscription("flood/#") as flood,
        sub.subscription("barrier", qos=1) as barrier,
    ):
        for burst in (1, 2):
            for n in range(10):
                await pub.publish(f"flood/{n}", b"x")
            await pub.publish("barrier", b"x", qos=1)
            await receive(barrier)  # behind the flood: the client has read all of it
            assert (flood.dropped, sub.dropped) == (8 * burst, 8 * burst)
            assert [flood.receive_nowait().topic for _ in range(2)] == ["flood/0", "flood/1"]
            with pytest.raises(trio.WouldBlock):
                flood.receive_nowait()
            assert sub.is_connected
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per burst, not one per message
    assert "the consumer of 'flood/#' is 2 QoS 0 messages behind" in warnings[0]
    assert any("caught up after 8 QoS 0 messages were dropped" in r.getMessage()
               for r in caplog.records)


# ------------------------------------------------------------------ connecting


async def test_server_assigns_client_id(trio_broker: Server) -> None:
    async with connect(trio_broker, "", version=MQTT_5) as client:
        assert client.client_id.startswith("mqttish-")
        inside = client.state
    assert (inside, client.state) == (ClientState.CONNECTED, ClientState.CLOSED)


@pytest.mark.parametrize("version", VERSIONS)
async def test_refused_connection_raises_connect_error(nursery: trio.Nursery,
                                                       version: int) -> None:
    server, _ = await start_server(nursery, allow_anonymous=False)
    with pytest.raises(ConnectError) as caught:
        async with connect(server, "c", version=version):
            pytest.fail("connected")
    assert caught.value.reason_code == ReasonCode.NOT_AUTHORIZED


async def test_nothing_listening_raises_oserror() -> None:
    with pytest.raises(ConnectionRefusedError):
        async with Client("127.0.0.1", free_port()):
            pytest.fail("connected")


async def test_body_errors_propagate_unwrapped_and_publish_the_will(trio_broker: Server) -> None:
    will = Will("wills/dying", b"gone", qos=1)
    async with (
        connect(trio_broker, "watcher") as watcher,
        watcher.subscription("wills/#", qos=1) as wills,
    ):
        with pytest.raises(Crash):
            async with connect(trio_broker, "dying", will=will):
                raise Crash  # leaving with an error closes without DISCONNECT
        message = await receive(wills)
        assert (message.topic, message.payload) == ("wills/dying", b"gone")

        async with connect(trio_broker, "polite", will=Will("wills/polite", b"gone")):
            pass
        async with connect(trio_broker, "barrier") as barrier:
            await barrier.publish("wills/barrier", "after", qos=1)
        assert (await receive(wills)).topic == "wills/barrier"


async def test_keepalive_pings_keep_an_idle_connection_alive(trio_broker: Server) -> None:
    async with connect(trio_broker, "idle", keepalive=1) as client:
        # The broker closes a client silent for 1.5 x keepalive: outlive that, idle.
        with trio.move_on_after(2.5):
            await client.wait_disconnected()
            pytest.fail("the idle connection was closed")
        assert client.is_connected
        await client.publish("still/here", qos=1)


async def test_missing_pingresp_is_connection_loss() -> None:
    options = ClientOptions(ping_timeout=0.5)
    async with silent_server() as port:
        with trio.fail_after(TIMEOUT), pytest.raises(ConnectionLostError, match="PINGRESP"):
            async with Client("127.0.0.1", port, keepalive=1, options=options):
                await trio.sleep_forever()


@pytest.mark.parametrize("version", VERSIONS)
async def test_broker_shutdown_without_reconnect_raises(nursery: trio.Nursery,
                                                        version: int) -> None:
    server, _ = await start_server(nursery)

    async def stay_connected() -> None:
        async with connect(server, "c", version=version):
            server.request_shutdown()
            await trio.sleep_forever()

    with pytest.raises(ConnectionLostError) as caught:
        await stay_connected()
    if version == MQTT_5:
        assert "SERVER_SHUTTING_DOWN" in str(caught.value)


async def test_lost_connection_fails_a_waiting_publish_with_one_error(
        trio_broker: Server, nursery: trio.Nursery) -> None:
    proxy = Proxy(trio_broker.ports[0])
    await nursery.start(proxy.run)

    async def cut_once_published(watcher: Client) -> None:
        await receive(watcher.messages())
        proxy.cut()

    async def publish_through_proxy() -> None:
        async with Client("127.0.0.1", proxy.port) as client, trio.open_nursery() as tasks:
            proxy.mute = True  # the PUBACKs never come
            tasks.start_soon(client.publish, "lost/1", b"", 1)
            await client.publish("lost/2", b"", 1)

    async with connect(trio_broker, "watcher") as watcher:
        await watcher.subscribe("lost/#")
        nursery.start_soon(cut_once_published, watcher)
        with pytest.raises(ConnectionLostError, match="lost: the server closed"):
            await publish_through_proxy()  # two waiting tasks, one error


# ------------------------------------------------------------------ reconnecting


@pytest.mark.parametrize("version", VERSIONS)
async def test_reconnect_to_restarted_broker_resubscribes_and_completes_publish(
        nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, version: int) -> None:
    caplog.set_level(logging.INFO, "mqttish.client")
    first, first_stopped = await start_server(nursery)
    port = first.ports[0]
    async with connect(first, "roamer", version=version, reconnect=True, options=FAST) as client:
        await client.subscribe("restart/#", qos=1)
        first.request_shutdown()
        with trio.fail_after(TIMEOUT):
            await client.wait_disconnected()
            await first_stopped.wait()
        assert client.state is ClientState.RECONNECTING
        published = trio.Event()

        async def publish_while_down() -> None:
            await client.publish("restart/1", "after", qos=1)
            published.set()

        nursery.start_soon(publish_while_down)
        await start_server(nursery, port)  # a new broker, without our session
        with trio.fail_after(TIMEOUT):
            await published.wait()
        assert client.is_connected and not client.session_present
        # Our own message came back: the subscription was restored on the new broker.
        message = await receive(client.messages())
        assert (message.topic, message.payload) == ("restart/1", b"after")
    lost = [r for r in caplog.records if "reconnecting in" in r.getMessage()]
    assert lost and all(r.levelno == logging.INFO and r.exc_info is None for r in lost)
    assert "lost" in lost[0].getMessage()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [1, 2])
async def test_unacknowledged_publish_is_resent_after_reconnect(
        trio_broker: Server, nursery: trio.Nursery, version: int, qos: int) -> None:
    proxy = Proxy(trio_broker.ports[0])
    await nursery.start(proxy.run)
    session = Properties(session_expiry_interval=60) if version == MQTT_5 else Properties()
    async with connect(trio_broker, "watcher") as watcher, \
            Client("127.0.0.1", proxy.port, client_id="resender", version=version,
                   clean_start=False, properties=session, reconnect=True,
                   options=FAST) as client:
        await watcher.subscribe("resend/#", qos=2)
        proxy.mute = True  # the broker's PUBACK / PUBREC will not reach the client
        done = trio.Event()

        async def publish() -> None:
            await client.publish("resend/1", "once", qos=qos)
            done.set()

        nursery.start_soon(publish)
        assert (await receive(watcher.messages())).payload == b"once"  # the broker has it
        assert not done.is_set()
        proxy.mute = False
        proxy.cut()
        with trio.fail_after(TIMEOUT):
            await done.wait()  # re-sent with DUP on the next connection, then acknowledged
        assert client.session_present
        await client.publish("resend/barrier", "", qos=1)
        followers = [(await receive(watcher.messages())).topic]
        if qos == 1 and followers[0] == "resend/1":  # at least once: a duplicate is allowed
            followers.append((await receive(watcher.messages())).topic)
        assert followers[-1] == "resend/barrier"  # QoS 2: exactly once, no duplicate


async def test_persistent_session_resumes_with_queued_messages(
        trio_broker: Server, nursery: trio.Nursery) -> None:
    proxy = Proxy(trio_broker.ports[0])
    await nursery.start(proxy.run)
    async with Client("127.0.0.1", proxy.port, client_id="sleeper", clean_start=False,
                      reconnect=True, options=FAST) as client, \
            connect(trio_broker, "pub") as pub:
        await client.subscribe("persist/#", qos=1)
        proxy.open = False
        proxy.cut()
        with trio.fail_after(TIMEOUT):
            await client.wait_disconnected()
        await pub.publish("persist/1", "while away", qos=1)
        proxy.open = True
        message = await receive(client.messages())
        assert (message.topic, message.payload) == ("persist/1", b"while away")
        assert client.session_present


async def test_reconnecting_client_waits_for_the_broker_to_start(nursery: trio.Nursery) -> None:
    port = free_port()
    connected = trio.Event()

    async def use_client() -> None:
        async with Client("127.0.0.1", port, reconnect=True, options=FAST):
            connected.set()

    nursery.start_soon(use_client)
    await start_server(nursery, port)
    with trio.fail_after(TIMEOUT):
        await connected.wait()
