"""HTTP on a websocket listener: upgrades to MQTT over WebSocket, and a few plain routes.

Theory of operation: each socket gets an h11 server connection. Every request
head must arrive within the listener's `handshake_timeout` and fit in
`max_handshake_size` bytes; a slow one is answered 408 and a large one 431,
malformed HTTP 400, and the socket is closed. A WebSocket upgrade request is
checked by `websocket.negotiate()`; once accepted, the socket belongs to the
MQTT connection (`on_websocket`) and HTTP is over. Plain GET and HEAD requests
are answered from a fixed table of routes (`Site`): `/` and its files (the
dashboard), `/metrics`, `/healthz`; anything else is 404. Connections are
kept alive between plain requests, so a browser loads the dashboard through
one socket.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import h11
import trio

from mqttish import __version__
from mqttish.config import ListenerConfig
from mqttish.dashboard import MISSING_PAGE, DashboardAssets
from mqttish.log_text import clip
from mqttish.transport.listeners import ListenerStats, peer_name
from mqttish.transport.websocket import (
    HandshakeRefused,
    WebSocketStream,
    is_upgrade,
    negotiate,
)

log = logging.getLogger("mqttish.http")

RECEIVE_SIZE = 16384
MAX_BODY = 65536  # bytes of request body read (and ignored) before answering 413
SERVER_HEADER = f"mqttish/{__version__}"
# The dashboard talks only to the broker it came from.
# MQTT.js runs its keepalive timers in a worker made from a blob: URL.
DASHBOARD_CSP = ("default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                 "worker-src 'self' blob:; style-src 'self' 'unsafe-inline'; base-uri 'none'; "
                 "frame-ancestors 'none'")

_LOST = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def text(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, (message + "\n").encode(), headers=headers)


class Site:
    """The plain HTTP routes of websocket listeners (shared by all of them)."""

    def __init__(self, metrics: Callable[[], tuple[bytes, str]],
                 assets: DashboardAssets | None = None) -> None:
        self.metrics = metrics
        self.assets = assets if assets is not None else DashboardAssets.discover()
        if not self.assets.available:
            log.warning("dashboard libraries not found (run 'npm ci' in the repository, or set "
                        "MQTTISH_NODE_MODULES): '/' will say so")

    async def respond(self, path: str, listener: ListenerConfig) -> Response:
        if path == "/healthz":
            return text(200, "ok")
        if path == "/metrics" and listener.metrics:
            body, content_type = self.metrics()
            return Response(200, body, content_type)
        if listener.dashboard:
            if path == "/dashboard/config.json":
                settings = {"websocket_path": listener.path or "/mqtt", "version": __version__}
                return Response(200, json.dumps(settings).encode(), "application/json",
                                (("Cache-Control", "no-cache"),))
            return await self._dashboard(path)
        return text(404, f"not found: {path}")

    async def _dashboard(self, path: str) -> Response:
        asset = self.assets.lookup(path)
        if asset is None:
            return text(404, f"not found: {path}")
        if path == "/" and not self.assets.available:
            return Response(503, MISSING_PAGE.encode(), "text/html; charset=utf-8")
        try:
            body = await trio.Path(asset.path).read_bytes()
        except OSError as exc:
            log.warning("cannot read %s: %s", asset.path, exc.strerror)
            return text(404, f"not found: {path}")
        headers = [("Cache-Control", "no-cache")]
        if asset.content_type.startswith("text/html"):
            headers.append(("Content-Security-Policy", DASHBOARD_CSP))
        return Response(200, body, asset.content_type, tuple(headers))


class _RequestTooSlow(Exception):
    pass


async def serve_http(stream: trio.abc.Stream, listener: ListenerConfig, site: Site,
                     on_websocket: Callable[[trio.abc.Stream], Awaitable[None]],
                     stats: ListenerStats | None = None) -> None:
    """Serve one socket of a websocket listener until it closes or becomes MQTT."""
    peer = peer_name(stream)
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=listener.max_handshake_size)
    try:
        while True:
            try:
                with trio.move_on_after(listener.handshake_timeout) as timer:
                    request = await _read_request(stream, connection,
                                                  listener.max_handshake_size)
                if timer.cancelled_caught:
                    if _buffered(connection):
                        raise _RequestTooSlow
                    return  # an idle keep-alive connection: close it quietly
            except _RequestTooSlow:
                log.info("closing %s: HTTP request not received within %g s", peer,
                         listener.handshake_timeout)
                await _send_error(stream, connection, text(408, "request timeout"))
                return
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                log.info("closing %s: bad HTTP request (%d): %s", peer, status, clip(str(exc), 120))
                await _send_error(stream, connection, text(status, f"bad request: {exc}"))
                return
            if request is None:
                return
            if is_upgrade(request):
                await _upgrade(stream, connection, request, listener, on_websocket, peer)
                return
            if stats is not None:
                stats.http_requests += 1
            if not await _answer(stream, connection, request, listener, site):
                return
            connection.start_next_cycle()
    except _LOST:
        return


async def _read_request(stream: trio.abc.Stream, connection: h11.Connection,
                        max_head: int) -> h11.Request | None:
    """The next complete request head (its body read and discarded), or None at a clean EOF."""
    request: h11.Request | None = None
    body = 0
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(bytes(await stream.receive_some(RECEIVE_SIZE)))
        elif isinstance(event, h11.Request):
            # h11 limits only a head that arrives in pieces; one that came whole is measured.
            if _head_size(event) > max_head:
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
            request = event
        elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
            return request
        elif isinstance(event, h11.ConnectionClosed):
            return None
        elif isinstance(event, h11.Data):
            body += len(event.data)
            if body > MAX_BODY:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)


def _head_size(request: h11.Request) -> int:
    """The size of a request line and headers on the wire (give or take whitespace)."""
    line = len(request.method) + len(request.target) + 12
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers.raw_items())


def _buffered(connection: h11.Connection) -> bool:
    """Has part of a request arrived? (h11 keeps unparsed bytes in its receive buffer.)"""
    return bool(connection.trailing_data[0]) or connection.their_state is not h11.IDLE


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _response_headers(response: Response, length: int, close: bool) -> list[tuple[str, str]]:
    headers = [("Content-Type", response.content_type), ("Content-Length", str(length)),
               ("Server", SERVER_HEADER), ("X-Content-Type-Options", "nosniff")]
    headers.extend(response.headers)
    if close:
        headers.append(("Connection", "close"))
    return headers


async def _send(stream: trio.abc.Stream, connection: h11.Connection, response: Response,
                head_only: bool = False, close: bool = False) -> None:
    headers = _response_headers(response, len(response.body), close)
    data = connection.send(h11.Response(status_code=response.status, headers=headers,
                                        reason=_reason(response.status))) or b""
    if response.body and not head_only:
        data += connection.send(h11.Data(data=response.body)) or b""
    data += connection.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


async def _send_error(stream: trio.abc.Stream, connection: h11.Connection,
                      response: Response) -> None:
    """Answer an error and close, if h11 still allows a response at this point."""
    if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    try:
        with trio.move_on_after(1):
            await _send(stream, connection, response, close=True)
    except (h11.LocalProtocolError, *_LOST):
        pass


async def _answer(stream: trio.abc.Stream, connection: h11.Connection, request: h11.Request,
                  listener: ListenerConfig, site: Site) -> bool:
    """Answer a plain request; True if the connection may serve another."""
    method = request.method
    path = request.target.decode("ascii", "replace").split("?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        await _send(stream, connection, text(405, "method not allowed", (("Allow", "GET, HEAD"),)),
                    close=True)
        return False
    response = await site.respond(path, listener)
    await _send(stream, connection, response, head_only=method == b"HEAD")
    return connection.our_state is h11.DONE and connection.their_state is h11.DONE


async def _upgrade(stream: trio.abc.Stream, connection: h11.Connection, request: h11.Request,
                   listener: ListenerConfig,
                   on_websocket: Callable[[trio.abc.Stream], Awaitable[None]],
                   peer: str) -> None:
    try:
        upgrade = negotiate(request, listener)
    except HandshakeRefused as refusal:
        log.info("refused WebSocket upgrade from %s (%d): %s", peer, refusal.status,
                 refusal.reason)
        await _send_error(stream, connection, text(refusal.status, refusal.reason,
                                                   refusal.headers))
        return
    data = connection.send(h11.InformationalResponse(
        status_code=101, headers=upgrade.headers, reason=b"Switching Protocols")) or b""
    await stream.send_all(data)
    trailing, _ = connection.trailing_data
    log.debug("WebSocket upgrade from %s (subprotocol %s%s)", peer, upgrade.subprotocol,
              ", permessage-deflate" if upgrade.compressed else "")
    await on_websocket(WebSocketStream(stream, upgrade, bytes(trailing)))
