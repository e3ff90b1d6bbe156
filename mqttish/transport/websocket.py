"""MQTT over WebSocket (RFC 6455, MQTT 5.0 section 6): the upgrade, and frames as a byte stream.

Theory of operation: `transport/http.py` reads the HTTP request with h11 and,
for an upgrade request, asks `negotiate()` (no I/O) whether to accept it: the
path, the WebSocket headers, the browser's Origin, the MQTT subprotocol and
permessage-deflate. An accepted upgrade becomes a `WebSocketStream` around
the socket, and the MQTT connection code reads and writes it exactly as it
would a TCP stream.

`WebSocketStream` hands the payload of binary messages to `receive_some` as
one continuous byte stream, so MQTT packets may be split across frames and
frames may hold several packets [MQTT-6.0.0-2]. It answers pings and the
peer's close itself, while reading, so it serialises sends with a lock (the
MQTT writer may be sending at the same moment). `send_eof` is the start of
the close handshake: it sends a Close frame, and the stream then reports end
of file once the peer's Close arrives. Text frames are a protocol error
[MQTT-6.0.0-1]: the stream closes with 1003 and reports the connection broken.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import server_extensions_handshake
from wsproto.utilities import LocalProtocolError as WebSocketLocalProtocolError
from wsproto.utilities import generate_accept_token, split_comma_header

from mqttish.config import ListenerConfig
from mqttish.log_text import clip

log = logging.getLogger("mqttish.websocket")

SUBPROTOCOLS = ("mqtt", "mqttv3.1")  # MQTT 3.1.1 and 5.0 use "mqtt"; 3.1 clients "mqttv3.1"
RECEIVE_SIZE = 65536
# With permessage-deflate, read compressed input in small pieces: each piece inflates to
# at most about a thousand times its size, which bounds what one read can buffer.
DEFLATE_RECEIVE_SIZE = 4096

_LOST = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError)


class HandshakeRefused(Exception):
    """An upgrade request we answer with an HTTP error, saying why."""

    def __init__(self, status: int, reason: str,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass(frozen=True, slots=True)
class Upgrade:
    """An accepted upgrade: the 101 response's headers and the agreed options."""

    headers: list[tuple[bytes, bytes]]
    subprotocol: str | None
    extensions: list[Extension] = field(default_factory=list)

    @property
    def compressed(self) -> bool:
        return any(ext.enabled() for ext in self.extensions)


def _headers(request: h11.Request) -> dict[bytes, list[bytes]]:
    found: dict[bytes, list[bytes]] = {}
    for name, value in request.headers:
        found.setdefault(name.lower(), []).append(value)
    return found


def is_upgrade(request: h11.Request) -> bool:
    """Does this request ask to switch to WebSocket?"""
    headers = _headers(request)
    return any(v.strip().lower() == b"websocket" for v in headers.get(b"upgrade", []))


def _origin_key(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an origin or Host value; None if it cannot be parsed."""
    try:
        parts = urlsplit(url.strip().lower().rstrip("/"))
        port = parts.port
    except ValueError:  # "http://[" and the like: a client's garbage, never a match
        return None
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(parts.scheme)
    return parts.scheme, parts.hostname or "", port or default


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """An empty allow-list lets every origin in; otherwise the Origin must be listed or be
    the broker's own (same host and port as the request's Host: the dashboard's page).
    Clients that are not browsers send no Origin and are not restricted by it."""
    if not allowed or origin is None:
        return True
    key = _origin_key(origin)
    if key is None:
        return False
    if any(_origin_key(entry) == key for entry in allowed):
        return True
    if host is not None:
        scheme, hostname, port = key
        own = _origin_key(f"{scheme}://{host}")
        return own is not None and (hostname, port) == own[1:]
    return False


def negotiate(request: h11.Request, listener: ListenerConfig) -> Upgrade:
    """Accept a WebSocket upgrade request, or raise `HandshakeRefused` with the answer."""
    headers = _headers(request)

    def one(name: bytes) -> str | None:
        values = headers.get(name)
        return values[-1].decode("latin-1").strip() if values else None

    path = request.target.decode("ascii", "replace").split("?", 1)[0]
    if listener.path is not None and path != listener.path:
        raise HandshakeRefused(404, f"no MQTT WebSocket endpoint at {clip(path)}; "
                               f"this listener serves {listener.path}")
    if request.method != b"GET":
        raise HandshakeRefused(405, "a WebSocket upgrade must be a GET request",
                               (("Allow", "GET"),))
    tokens = [t.lower() for v in headers.get(b"connection", []) for t in split_comma_header(v)]
    if "upgrade" not in tokens:
        raise HandshakeRefused(400, "missing 'Connection: Upgrade'")
    if one(b"sec-websocket-version") != "13":
        raise HandshakeRefused(426, "unsupported WebSocket version: 13 is required",
                               (("Sec-WebSocket-Version", "13"),))
    key = one(b"sec-websocket-key")
    try:
        valid_key = key is not None and len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key or key is None:
        raise HandshakeRefused(400, "missing or invalid Sec-WebSocket-Key")
    origin = one(b"origin")
    if origin is not None and not origin_allowed(origin, one(b"host"), listener.allowed_origins):
        raise HandshakeRefused(403, f"origin {clip(origin)} is not allowed on this listener")
    offered = [p for v in headers.get(b"sec-websocket-protocol", [])
               for p in split_comma_header(v)]
    subprotocol = None
    if offered:
        subprotocol = next((p for p in offered if p in SUBPROTOCOLS), None)
        if subprotocol is None:
            raise HandshakeRefused(400, f"unsupported subprotocol {clip(', '.join(offered))}: "
                                   f"MQTT over WebSocket uses {' or '.join(SUBPROTOCOLS)}")
    response = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", generate_accept_token(key.encode("ascii"))),
    ]
    if subprotocol is not None:
        response.append((b"Sec-WebSocket-Protocol", subprotocol.encode("ascii")))
    extensions: list[Extension] = []
    offers = [e for v in headers.get(b"sec-websocket-extensions", [])
              for e in split_comma_header(v)]
    if offers:
        deflate = PerMessageDeflate()
        try:
            accepted = server_extensions_handshake(offers, [deflate])
        except ValueError:  # a malformed parameter: decline the extension [RFC 7692 5.1]
            accepted = None
        if accepted:
            response.append((b"Sec-WebSocket-Extensions", accepted))
            extensions.append(deflate)
    return Upgrade(response, subprotocol, extensions)


class WebSocketStream(trio.abc.HalfCloseableStream):
    """The binary messages of a server-side WebSocket connection, as a byte stream."""

    def __init__(self, transport_stream: trio.abc.Stream, upgrade: Upgrade,
                 trailing_data: bytes = b"") -> None:
        self.transport_stream = transport_stream  # the name peer_name() looks for
        self.subprotocol = upgrade.subprotocol
        self.compressed = upgrade.compressed
        self._ws = Connection(ConnectionType.SERVER, upgrade.extensions, trailing_data)
        self._received = bytearray()
        self._eof = False
        self._send_lock = trio.StrictFIFOLock()
        self._read_size = DEFLATE_RECEIVE_SIZE if self.compressed else RECEIVE_SIZE

    @property
    def state(self) -> ConnectionState:
        return self._ws.state

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while not self._received:
            if self._eof:
                return b""
            await self._handle_events()
            if self._received or self._eof:
                break
            data = await self.transport_stream.receive_some(self._read_size)
            if not data:  # TCP closed without a Close frame (code 1006)
                self._eof = True
                return b""
            self._ws.receive_data(bytes(data))
        size = len(self._received) if max_bytes is None else min(max_bytes, len(self._received))
        chunk = bytes(self._received[:size])
        del self._received[:size]
        return chunk

    async def _handle_events(self) -> None:
        for event in self._ws.events():
            if isinstance(event, BytesMessage):
                self._received += event.data
            elif isinstance(event, Ping):
                if self._ws.state is ConnectionState.OPEN:  # no Pong after our Close
                    await self._send(event.response())
            elif isinstance(event, CloseConnection):
                await self._closed_by_peer(event)
                return
            elif isinstance(event, TextMessage):
                if self._ws.state is ConnectionState.OPEN:  # after our Close, input is discarded
                    await self._fail(CloseReason.UNSUPPORTED_DATA,
                                     "text frame: MQTT over WebSocket uses binary frames "
                                     "[MQTT-6.0.0-1]")
            elif not isinstance(event, Pong):  # pragma: no cover - no other events exist
                log.debug("ignoring WebSocket event %r", event)

    async def _closed_by_peer(self, event: CloseConnection) -> None:
        state = self._ws.state
        if state is ConnectionState.OPEN:
            # wsproto reports a frame it cannot parse as a Close it wants us to send.
            await self._fail(event.code, f"WebSocket protocol error: {event.reason}")
        self._eof = True
        if state is ConnectionState.REMOTE_CLOSING:
            await self._send(event.response())

    async def _fail(self, code: int, reason: str) -> None:
        self._eof = True
        with contextlib.suppress(*_LOST):
            await self._send(CloseConnection(code, reason[:120]))
        raise trio.BrokenResourceError(reason)

    async def _send(self, event: Event) -> None:
        async with self._send_lock:
            # The state is checked here, under the lock: the reader may have handled the
            # peer's Close while this task waited for it.
            try:
                data = self._ws.send(event)
            except WebSocketLocalProtocolError:  # (its text holds the whole event: not logged)
                raise trio.ClosedResourceError(
                    f"the WebSocket is {self._ws.state.name.lower().replace('_', ' ')}") from None
            if data:
                await self.transport_stream.send_all(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._ws.state is not ConnectionState.OPEN:
            raise trio.ClosedResourceError("the WebSocket is closing")
        await self._send(BytesMessage(bytes(data)))

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Start the close handshake (1000, normal closure); reads end at the peer's reply."""
        if self._ws.state is ConnectionState.OPEN:
            await self._send(CloseConnection(CloseReason.NORMAL_CLOSURE))

    async def aclose(self) -> None:
        try:
            if self._ws.state is ConnectionState.OPEN:
                with trio.move_on_after(1):
                    await self._send(CloseConnection(CloseReason.GOING_AWAY))
        except _LOST:
            pass
        finally:
            await self.transport_stream.aclose()
