"""The fuzzer's only contact with the sans-IO core's API.

The core is being refactored; the transport-facing calls (`receive_data`,
`data_to_send`, and what the transport tells a connection about time and loss)
and the bookkeeping the invariants read are used here and nowhere else in
tests/fuzz, so a change of API is fixed in this one file.

The core turns an unexpected exception into an internal error: it logs it with
its traceback, counts it in `Metrics.connection_errors` and closes that
connection. For the fuzzer that is still a bug, so `internal_errors()`
collects those exceptions from the log records and `CoreClient` raises them
again, as if they had escaped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from mqttish.config import Config
from mqttish.core.broker import Broker
from mqttish.core.connection import Connection
from mqttish.core.hooks import Hook
from mqttish.protocol.flow import FlightState

PEER = "fuzz:1"


class InternalErrors(logging.Handler):
    """The exceptions the core logged as internal errors, waiting to be raised again."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.caught: list[BaseException] = []
        self.depth = 0  # `internal_errors()` blocks entered

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.caught.append(record.exc_info[1])

    def raise_first(self) -> None:
        if self.caught:
            error, self.caught = self.caught[0], []
            raise error


_errors = InternalErrors()


@contextmanager
def internal_errors() -> Iterator[None]:
    """While fuzzing: the core's internal errors are raised again by `CoreClient`, and its
    other log records (a warning per refused client) are dropped."""
    logger = logging.getLogger("mqttish")
    saved = logger.level, logger.propagate
    if not _errors.depth:
        logger.addHandler(_errors)
        logger.setLevel(logging.ERROR)
        logger.propagate = False
    _errors.depth += 1
    try:
        yield
    finally:
        _errors.depth -= 1
        if not _errors.depth:
            logger.removeHandler(_errors)
            logger.level, logger.propagate = saved
            _errors.caught.clear()


class CoreClient:
    """One network connection as a transport drives it: bytes in, bytes out.

    Inside `internal_errors()`, an internal error the core logged and swallowed is
    raised from the call that caused it.
    """

    __slots__ = ("_connection",)

    def __init__(self, broker: Broker, now: float) -> None:
        self._connection = Connection(broker, PEER, now)

    def exchange(self, data: bytes, now: float) -> bytes:
        """Hand the core what was read, and take everything it has to send."""
        self._connection.receive_data(data, now)
        _errors.raise_first()
        output = self._connection.data_to_send(now)
        _errors.raise_first()
        return output

    def drain(self, now: float) -> bytes:
        """What the writer would send now (deliveries routed from other connections)."""
        output = self._connection.data_to_send(now)
        _errors.raise_first()
        return output

    def lose(self, now: float) -> None:
        """The socket is gone (reset, or closed without DISCONNECT)."""
        self._connection.connection_lost(now)
        _errors.raise_first()

    def expire(self, now: float) -> None:
        """Tell the connection its read deadline passed, if it has."""
        connection = self._connection
        if connection.read_deadline(now) <= now:
            connection.read_deadline_expired(now)
        _errors.raise_first()

    @property
    def closed(self) -> bool:
        return self._connection.closed

    @property
    def version(self) -> int:
        """The protocol level the core encodes this connection's packets in."""
        return self._connection.version


def new_broker(config: Config, hooks: Sequence[Hook] = ()) -> Broker:
    return Broker(config.broker_settings(), hooks)


def tick(broker: Broker, now: float) -> None:
    """What the server's housekeeping task does once a second."""
    broker.housekeeping(now)
    _errors.raise_first()


def connection_errors(broker: Broker) -> int:
    """Connections the core closed for an internal error (a bug) since it started."""
    return broker.metrics.connection_errors


def bookkeeping_problems(broker: Broker) -> list[str]:
    """Where the broker's session and in-flight bookkeeping is inconsistent or unbounded."""
    config = broker.config
    problems = []
    online = 0
    subscriptions = 0
    for client_id, session in broker.sessions.items():
        name = f"session {client_id!r}"
        if session.client_id != client_id:
            problems.append(f"{name} is filed under another id ({session.client_id!r})")
        connection = session.connection
        if connection is not None:
            online += 1
            assert isinstance(connection, Connection)
            if connection.closed or connection.session is not session:
                problems.append(f"{name} is attached to {connection!r}, which is not its own")
        if len(session.queue) > config.max_queued_messages:
            problems.append(f"{name} queues {len(session.queue)} messages")
        if config.max_queued_bytes and session.queued_bytes > config.max_queued_bytes:
            problems.append(f"{name} queues {session.queued_bytes} bytes")
        if len(session.outgoing.flights) > config.max_inflight_messages:
            problems.append(f"{name} has {len(session.outgoing.flights)} messages in flight")
        for packet_id, delivery in session.outgoing.flights.items():
            if delivery.packet_id != packet_id or not 0 < packet_id <= 0xFFFF:
                problems.append(f"{name} files {delivery!r} under packet id {packet_id}")
            if delivery.state is FlightState.QUEUED or delivery.qos == 0:
                problems.append(f"{name} has {delivery!r} in flight")
        if len(session.incoming_qos2) > 0xFFFF:
            problems.append(f"{name} holds {len(session.incoming_qos2)} QoS 2 ids")
        subscriptions += len(session.subscriptions)
    if online != broker.metrics.clients_connected:
        problems.append(f"{online} sessions are online but clients_connected is "
                        f"{broker.metrics.clients_connected}")
    if subscriptions != broker.subscriptions.count:
        problems.append(f"sessions hold {subscriptions} subscriptions, the tree "
                        f"{broker.subscriptions.count}")
    return problems


def in_flight(broker: Broker) -> dict[str, int]:
    """QoS 1 and 2 deliveries awaiting acknowledgement, by client id."""
    return {client_id: len(session.outgoing.flights)
            for client_id, session in broker.sessions.items()}
