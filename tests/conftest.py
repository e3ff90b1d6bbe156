"""Shared fixtures: a real broker on 127.0.0.1, in a background thread or in the test's trio run.

Synchronous tests (paho-mqtt, mosquitto_pub/sub) use `broker` / `start_broker`,
which run the server with its own trio loop in a thread. Trio tests use
`trio_broker`, which runs it in the test's own nursery.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from anyio.from_thread import start_blocking_portal

from mqttish.cluster.redis_server import RedisServer, RedisServerError
from mqttish.config import Config, ListenerConfig
from mqttish.core.broker import Broker
from mqttish.core.hooks import ClientInfo, Hook
from mqttish.core.store import Store
from mqttish.server import Server
from tests import mosquitto
from tests.unit.store_journals import RedisForStores

TEST_CONFIG = Config(listeners=(ListenerConfig(port=0),), connect_timeout=5.0)


def make_config(**overrides: Any) -> Config:
    return dataclasses.replace(TEST_CONFIG, **overrides)


def missing(reason: str) -> None:
    """A real part the test needs is not installed: skip, but fail in CI (which installs it)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


class DisconnectEvents(Hook):
    """Lets a test wait until the broker has seen a client go (instead of sleeping)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.condition = threading.Condition()

    def on_disconnect(self, client: ClientInfo, reason: str) -> None:
        with self.condition:
            self.counts[client.client_id] += 1
            self.condition.notify_all()

    def wait(self, client_id: str, count: int = 1, timeout: float = 10.0) -> None:
        with self.condition:
            if not self.condition.wait_for(lambda: self.counts[client_id] >= count, timeout):
                raise TimeoutError(f"broker did not see {client_id!r} disconnect")


class BrokerThread:
    """A broker serving from a background thread; `port` is its first listener's port."""

    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        self.store = store
        self.server: Server | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.disconnects = DisconnectEvents()
        # Real time that tests can move forward (expiry, will delay) instead of sleeping.
        self.clock = trio.testing.MockClock(rate=1.0)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.ports[0]

    @property
    def ports(self) -> list[int]:
        assert self.server is not None
        return self.server.ports

    @property
    def broker(self) -> Broker:
        assert self.server is not None and self.server.broker is not None
        return self.server.broker

    def start(self) -> BrokerThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("broker did not start")
        if self._error is not None:
            raise self._error
        return self

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run `function(*args)` on the broker's trio thread (the core is not thread-safe)."""
        return trio.from_thread.run_sync(function, *args, trio_token=self._token)

    def advance(self, seconds: float) -> None:
        """Move the broker's clock forward, and let housekeeping see the new time.

        Connections with a keepalive shorter than the jump time out, as they would.
        """
        self.call(self.clock.jump, seconds)
        self.call(lambda: self.broker.housekeeping(trio.current_time()))

    def stop(self) -> None:
        if self._thread.is_alive() and self.server is not None:
            self.call(self.server.request_shutdown)
            self._thread.join(15)

    def _main(self) -> None:
        try:
            trio.run(self._serve, clock=self.clock)
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self.server = Server(self.config, [self.disconnects], self.store)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.server.run)
            self._ready.set()


@pytest.fixture
def start_broker() -> Iterator[Callable[..., BrokerThread]]:
    """Start brokers with config overrides; all are stopped after the test."""
    started: list[BrokerThread] = []

    def start(store: Store | None = None, **overrides: Any) -> BrokerThread:
        broker = BrokerThread(make_config(**overrides), store).start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def broker(start_broker: Callable[..., BrokerThread]) -> BrokerThread:
    return start_broker()


@pytest.fixture
async def trio_broker(nursery: trio.Nursery) -> AsyncIterator[Server]:
    """A broker in the test's own trio run (for tests written with mqttish.client)."""
    server = Server(TEST_CONFIG)
    await nursery.start(server.run)
    yield server
    server.request_shutdown()


# --- WebSocket listeners (tests/wire/test_14_*, test_15_*, tests/e2e/test_dashboard.py) ---


def websocket_listeners(**websocket: Any) -> tuple[ListenerConfig, ListenerConfig]:
    """An MQTT listener (ports[0]) and a websocket listener (ports[1]), both on free ports."""
    return (ListenerConfig(port=0), ListenerConfig(port=0, protocol="websocket", **websocket))


@pytest.fixture
def ws_broker(start_broker: Callable[..., BrokerThread]) -> BrokerThread:
    """A broker with MQTT on `ports[0]` and MQTT over WebSocket (+ HTTP) on `ports[1]`."""
    return start_broker(listeners=websocket_listeners())


# --- a real Mosquitto broker (tests/mosquitto.py) ---


@pytest.fixture
def start_mosquitto(tmp_path: Path) -> Iterator[Callable[..., mosquitto.Mosquitto]]:
    """Start Mosquitto brokers: `start_mosquitto(extra_conf_lines, name=...)`; all are
    stopped after the test."""
    if not mosquitto.installed():
        missing("Mosquitto (apt-get install mosquitto mosquitto-clients) is not installed")
    started: list[mosquitto.Mosquitto] = []

    def start(extra: str = "", name: str = "mosquitto", **options: Any) -> mosquitto.Mosquitto:
        broker = mosquitto.Mosquitto(tmp_path / name, extra, **options)
        started.append(broker)
        return broker.start()

    yield start
    for broker in started:
        broker.stop()


# ------------------------------------------------------------------ Redis (the cluster)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session, on a Unix socket (tests use key prefixes or
    databases of their own)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except RedisServerError as exc:
        missing(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_for_stores(redis_server: RedisServer) -> Iterator[RedisForStores]:
    """The session's Redis, and an event loop in a thread for the synchronous Store API."""
    with start_blocking_portal("trio") as portal:
        yield RedisForStores(redis_server.url, portal)
