"""The WebSocket upgrade decision (no I/O) and the websocket listener's configuration keys."""

from __future__ import annotations

import h11
import pytest

from mqttish.config import ConfigError, ListenerConfig, parse_config
from mqttish.transport.websocket import HandshakeRefused, negotiate, origin_allowed

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
WS = ListenerConfig(port=8083, protocol="websocket")


def request(target: bytes = b"/mqtt", *extra: tuple[bytes, bytes],
            drop: tuple[bytes, ...] = ()) -> h11.Request:
    headers = [(b"Host", b"localhost:8083"), (b"Upgrade", b"websocket"),
               (b"Connection", b"keep-alive, Upgrade"), (b"Sec-WebSocket-Key", KEY),
               (b"Sec-WebSocket-Version", b"13"), *extra]
    return h11.Request(method=b"GET", target=target,
                       headers=[h for h in headers if h[0] not in drop])


def test_accepts_and_computes_the_rfc_6455_accept_token() -> None:
    upgrade = negotiate(request(), WS)
    headers = dict(upgrade.headers)
    assert headers[b"Sec-WebSocket-Accept"] == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 1.3
    assert upgrade.subprotocol is None
    assert not upgrade.compressed


@pytest.mark.parametrize(("offer", "chosen"), [
    (b"mqtt", "mqtt"), (b"mqttv3.1", "mqttv3.1"), (b"wamp, mqtt", "mqtt"),
])
def test_subprotocol_choice(offer: bytes, chosen: str) -> None:
    upgrade = negotiate(request(b"/mqtt", (b"Sec-WebSocket-Protocol", offer)), WS)
    assert upgrade.subprotocol == chosen
    assert dict(upgrade.headers)[b"Sec-WebSocket-Protocol"] == chosen.encode()


def test_permessage_deflate_when_offered() -> None:
    offer = (b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits")
    upgrade = negotiate(request(b"/mqtt", offer), WS)
    assert upgrade.compressed
    assert dict(upgrade.headers)[b"Sec-WebSocket-Extensions"].startswith(b"permessage-deflate")


@pytest.mark.parametrize(("req", "listener", "status"), [
    (request(b"/other"), ListenerConfig(port=1, protocol="websocket", path="/mqtt"), 404),
    (request(drop=(b"Sec-WebSocket-Key",)), WS, 400),
    (request(b"/mqtt", (b"Sec-WebSocket-Key", b"short")), WS, 400),
    (request(drop=(b"Sec-WebSocket-Version",)), WS, 426),
    (request(b"/mqtt", (b"Sec-WebSocket-Protocol", b"chat")), WS, 400),
    (request(b"/mqtt", (b"Origin", b"https://evil.example")),
     ListenerConfig(port=1, protocol="websocket", allowed_origins=("https://ok.example",)), 403),
])
def test_refusals_say_what_to_answer(req: h11.Request, listener: ListenerConfig,
                                     status: int) -> None:
    with pytest.raises(HandshakeRefused) as refused:
        negotiate(req, listener)
    assert refused.value.status == status


@pytest.mark.parametrize(("origin", "host", "allowed"), [
    (None, "x", True),  # not a browser
    ("https://ok.example", "broker:8083", True),
    ("https://OK.example:443", "broker:8083", True),  # default port, any case
    ("http://broker:8083", "broker:8083", True),  # the dashboard's own origin
    ("http://broker:9999", "broker:8083", False),
    ("https://evil.example", "broker:8083", False),
])
def test_origin_allow_list(origin: str | None, host: str, allowed: bool) -> None:
    assert origin_allowed(origin, host, ("https://ok.example",)) is allowed
    assert origin_allowed(origin, host, ()) is True  # no list: every origin


def test_default_config_has_a_websocket_listener_on_8083() -> None:
    config = parse_config("")
    assert [(lc.port, lc.protocol) for lc in config.listeners] == [
        (1883, "mqtt"), (8083, "websocket")]


@pytest.mark.parametrize(("yaml", "message"), [
    ("listeners:\n  - port: 1883\n    path: /mqtt\n",
     "listeners[0].path: only applies to 'protocol: websocket' listeners"),
    ("listeners:\n  - {port: 1, protocol: websocket, path: mqtt}\n",
     "listeners[0].path: must be an absolute URL path like '/mqtt', got 'mqtt'"),
    ("listeners:\n  - {port: 1, protocol: websocket, allowed_origins: [example.com]}\n",
     "listeners[0].allowed_origins[0]: expected an origin like"),
    ("listeners:\n  - {port: 1, protocol: websocket, allowed_origins: ['https://a.b/x']}\n",
     "listeners[0].allowed_origins[0]: an origin has no path"),
    ("listeners:\n  - {port: 1, protocol: websocket, allowed_origins: https://a.b}\n",
     "listeners[0].allowed_origins: expected a list"),
    ("listeners:\n  - {port: 1, protocol: websocket, handshake_timeout: 0}\n",
     "listeners[0].handshake_timeout: must be more than 0"),
    ("listeners:\n  - {port: 1, protocol: websocket, max_handshake_size: 10}\n",
     "listeners[0].max_handshake_size: must be between 1024 and 1048576"),
    ("listeners:\n  - {port: 1, protocol: websocket, dashboard: 'no'}\n",
     "listeners[0].dashboard: expected boolean, got 'no'"),
    ("listeners:\n  - {port: 1, protocol: ws}\n",
     "listeners[0].protocol: expected one of 'mqtt', 'websocket', got 'ws'"),
    ("sys_interval: -1\n", "sys_interval: must be 0"),
])
def test_websocket_keys_are_validated(yaml: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(yaml)
    assert message in str(error.value)


def test_websocket_keys_load() -> None:
    config = parse_config(
        "listeners:\n"
        "  - port: 8083\n"
        "    protocol: websocket\n"
        "    path: /mqtt\n"
        "    allowed_origins: [https://dash.example.com, 'http://localhost:3000']\n"
        "    handshake_timeout: 5\n"
        "    max_handshake_size: 8192\n"
        "    dashboard: false\n"
        "    metrics: false\n")
    listener = config.listeners[0]
    assert listener.path == "/mqtt"
    assert listener.allowed_origins == ("https://dash.example.com", "http://localhost:3000")
    assert listener.handshake_timeout == 5.0
    assert (listener.max_handshake_size, listener.dashboard, listener.metrics) == (
        8192, False, False)
