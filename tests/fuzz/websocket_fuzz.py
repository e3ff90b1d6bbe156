"""WebSocket input for the wire phase: upgrade requests and frames, valid and not.

`upgrade_request` writes an HTTP upgrade request whose headers are, now and
then, replaced by odd variants: permessage-deflate offers with malformed or
out-of-range parameters, Origins that are not URLs, bad keys, versions and
subprotocols, duplicated and missing headers. `Framer` wraps MQTT bytes into
client frames (masked, sometimes compressed, sometimes fragmented) and slips
in frames a broker must survive: pings and pongs, text, reserved opcodes and
bits, control frames that are fragmented or too long, a Close followed by
more frames, lengths that lie. Frames are built by hand because a WebSocket
library would refuse to send most of them.
"""

from __future__ import annotations

import base64
import random
import zlib

from mqttish.protocol.wire import encode_varint

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

DEFLATE_OFFERS = (
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; client_max_window_bits=8",
    "permessage-deflate; client_max_window_bits=16",
    "permessage-deflate; client_max_window_bits=abc",
    "permessage-deflate; client_max_window_bits=",
    "permessage-deflate; client_max_window_bits=0x9",
    'permessage-deflate; client_max_window_bits="10"',
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; server_max_window_bits=15; server_no_context_takeover",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; client_no_context_takeover",
    "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; unknown=1",
    "permessage-deflate;;",
    "permessage-deflate; =",
    "permessage-deflate, permessage-deflate; client_max_window_bits=9",
    "x-webkit-deflate-frame",
    ", , ,",
    "permessage-deflate; " + "a=1; " * 200,
)
ORIGINS = (
    "http://[", "http://[::1", "http://[::1]:8083", "http://a:99999", "http://a:-1", "null", "",
    "https://example.com", "HTTPS://EXAMPLE.COM:443/", "http://%zz", "http://a b",
    "javascript:alert(1)", "file://", "https://example.com:443/path", "http://\u00e4.example",
    "ws://example.com", "http://" + "a" * 3000, "http://user@example.com", "http://[:::]:x",
)
KEYS = ("", "abc", "x" * 24, base64.b64encode(b"\0" * 15).decode(), "====", "a" * 5000,
        base64.b64encode(b"\0" * 17).decode(), "dGhlIHNhbXBsZSBub25jZQ==\x00")
VERSIONS = ("12", "14", "13, 8", "013", "", "13 ", "abc", "8, 13")
SUBPROTOCOLS = ("mqtt", "mqttv3.1", "MQTT", "mqtt, mqttv3.1", "foo", "", ",", "mqtt;q=1",
                ", ".join(f"p{i}" for i in range(300)), "mqtt\x7f")
CONNECTIONS = ("Upgrade", "keep-alive, Upgrade", "upgrade", "close", "Upgrade, Upgrade", "")
UPGRADES = ("websocket", "WebSocket", "websocket2", "h2c, websocket", "")
METHODS = ("GET", "POST", "HEAD", "G\x00T", "OPTIONS", "GET GET")
PATHS = ("/mqtt", "/", "/mqtt?x=1", "*", "/../../etc/passwd", "mqtt", "/mqtt#f", "/" + "m" * 20000,
         "/metrics", "/healthz")
HTTP_VERSIONS = ("HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", "")


def random_key(rng: random.Random) -> str:
    return base64.b64encode(rng.randbytes(16)).decode()


def upgrade_request(rng: random.Random, host: str, path: str, weirdness: float) -> bytes:
    """An upgrade request; each part is replaced by an odd variant with `weirdness`."""

    def odd(valid: str, variants: tuple[str, ...]) -> str | None:
        if rng.random() >= weirdness:
            return valid
        return None if rng.random() < 0.2 else rng.choice(variants)  # None: header missing

    headers: list[tuple[str, str | None]] = [
        ("Host", odd(host, ("", "[::1]", host + ":1", "a" * 300))),
        ("Upgrade", odd("websocket", UPGRADES)),
        ("Connection", odd("Upgrade", CONNECTIONS)),
        ("Sec-WebSocket-Key", odd(random_key(rng), KEYS)),
        ("Sec-WebSocket-Version", odd("13", VERSIONS)),
    ]
    if rng.random() < 0.8:
        headers.append(("Sec-WebSocket-Protocol", odd("mqtt", SUBPROTOCOLS)))
    if rng.random() < 0.5:
        headers.append(("Sec-WebSocket-Extensions", rng.choice(DEFLATE_OFFERS)
                        if rng.random() < max(weirdness, 0.3) else DEFLATE_OFFERS[0]))
    if rng.random() < 0.4:
        headers.append(("Origin", rng.choice(ORIGINS) if rng.random() < 0.7
                        else f"http://{host}"))
    if rng.random() < weirdness:
        rng.shuffle(headers)
        extra = rng.choice((("X-Null", "\x00"), ("X-Fold", "a\r\n continued"),
                            ("No colon", None), ("X-Big", "b" * 20000),
                            (headers[0][0], headers[0][1] or "x")))
        headers.append(extra)
    method = odd("GET", METHODS) or "GET"
    target = odd(path, PATHS) or path
    version = odd("HTTP/1.1", HTTP_VERSIONS) or "HTTP/1.1"
    newline = "\r\n" if rng.random() >= weirdness / 4 else "\n"
    lines = [f"{method} {target} {version}"]
    lines += [f"{name}: {value}" if value is not None else name
              for name, value in headers if value is not None or name == "No colon"]
    return (newline.join(lines) + newline + newline).encode("utf-8", "surrogateescape")


def accepted_extensions(response: bytes) -> str | None:
    """The Sec-WebSocket-Extensions value of a 101 response, if any."""
    for line in response.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-extensions":
            return value.strip().decode("latin-1")
    return None


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload or key == b"\0\0\0\0":
        return payload
    repeated = (key * (len(payload) // 4 + 1))[:len(payload)]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(len(payload), "big")


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
          masked: bool = True, length: int | None = None, key: bytes | None = None) -> bytes:
    """One client frame; `length` lies about the payload's size if given. The masking key
    defaults to zeros (legal, and the payload stays readable in a reproducer)."""
    size = len(payload) if length is None else length
    head = bytes(((0x80 if fin else 0) | (rsv & 7) << 4 | opcode & 0x0F,))
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes((mask_bit | size,))
    elif size < 1 << 16:
        head += bytes((mask_bit | 126,)) + size.to_bytes(2, "big")
    else:
        head += bytes((mask_bit | 127,)) + (size & (1 << 64) - 1).to_bytes(8, "big")
    if not masked:
        return head + payload
    key = key if key is not None else b"\0\0\0\0"
    return head + key + _mask(payload, key)


def close_payload(rng: random.Random) -> bytes:
    choice = rng.randrange(6)
    if choice == 0:
        return b""
    if choice == 1:
        return b"\x03"  # one byte: invalid
    code = rng.choice((1000, 1001, 1002, 1003, 1005, 1006, 1015, 999, 2999, 3000, 4999, 5000,
                       0, 0xFFFF))
    reason = rng.choice((b"", b"bye", b"\xff\xfe", b"x" * 123))
    return code.to_bytes(2, "big") + reason


class Framer:
    """Turns MQTT bytes into the frames of one connection, with odd frames mixed in."""

    def __init__(self, rng: random.Random, extensions: str | None, weirdness: float) -> None:
        self.rng = rng
        self.weirdness = weirdness
        self.compress = extensions is not None and extensions.startswith("permessage-deflate")
        self.reset_context = extensions is not None and "client_no_context_takeover" in extensions
        self.deflater = zlib.compressobj(wbits=-9)
        self.closed = False  # a Close frame was sent

    def frame(self, opcode: int, payload: bytes, **options: object) -> bytes:
        options.setdefault("key", self.rng.randbytes(4))
        return frame(opcode, payload, **options)  # type: ignore[arg-type]

    def _deflated(self, payload: bytes) -> bytes:
        if self.reset_context:
            self.deflater = zlib.compressobj(wbits=-9)
        data = self.deflater.compress(payload) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
        return data[:-4] if data.endswith(b"\x00\x00\xff\xff") else data

    def message(self, data: bytes) -> bytes:
        """MQTT bytes as one binary message (perhaps fragmented, compressed), maybe with
        odd frames before it."""
        rng = self.rng
        out = b""
        if rng.random() < self.weirdness:
            out += self.odd_frame()
        rsv = 0
        if self.compress and rng.random() < 0.8:
            data = self._deflated(data)
            rsv = 4
        if len(data) > 1 and rng.random() < 0.25:
            cut = rng.randrange(1, len(data))
            first, rest = data[:cut], data[cut:]
            out += self.frame(BINARY, first, fin=False, rsv=rsv)
            if rng.random() < 0.3:
                out += self.frame(PING, b"mid")  # control frames may come between fragments
            out += self.frame(CONTINUATION, rest)
        else:
            out += self.frame(BINARY, data, rsv=rsv)
        return out

    def odd_frame(self) -> bytes:
        rng = self.rng
        choice = rng.randrange(14)
        if choice == 0:
            return self.frame(PING, rng.randbytes(rng.randint(0, 125)))
        if choice == 1:
            return self.frame(PONG, b"unsolicited")
        if choice == 2:
            return self.frame(TEXT, rng.choice((b"hello", b"\xff\xfe", b"")))
        if choice == 3:
            return self.frame(rng.choice((3, 4, 5, 6, 7, 0xB, 0xF)), b"reserved opcode")
        if choice == 4:
            return self.frame(BINARY, b"\x10", rsv=rng.choice((1, 2, 3, 4, 7)))
        if choice == 5:
            return self.frame(PING, b"p" * rng.choice((126, 200, 70000)))  # control frame too long
        if choice == 6:
            return self.frame(PING, b"fragmented", fin=False)
        if choice == 7:
            return self.frame(CONTINUATION, b"no start")
        if choice == 8:
            return self.frame(BINARY, b"\xc0\x00", masked=False)
        if choice == 9:
            # a new message while the last one is unfinished
            return self.frame(BINARY, b"\xc0", fin=False) + self.frame(BINARY, b"\x00")
        if choice == 10:
            return self.frame(BINARY, b"", rsv=4 if self.compress else 0)
        if choice == 11:
            return self.frame(CLOSE, close_payload(rng)) + self.after_close()
        if choice == 12:
            return self.frame(BINARY, b"\xc0\x00", length=rng.choice((1 << 63, 1 << 40, 200_000)))
        return self.frame(BINARY, b"\x00" * 4, rsv=4, key=b"\0\0\0\0")  # a deflate stream that lies

    def after_close(self) -> bytes:
        """Whatever a client sends after its Close: nothing good."""
        self.closed = True
        rng = self.rng
        frames = [self.frame(PING, b"after close"), self.frame(TEXT, b"after close"),
                  self.frame(BINARY, b"\xc0\x00"), self.frame(CLOSE, close_payload(rng)),
                  self.frame(PONG, b"")]
        return b"".join(rng.sample(frames, rng.randint(0, len(frames))))

    def oversized(self) -> bytes:
        """A frame of megabytes: a PUBLISH just under the broker's default maximum packet
        size, or more than any packet may be; compressed, a deflate bomb."""
        rng = self.rng
        if rng.random() < 0.5:
            data = b"\x30" + encode_varint(1_000_000) + b"\x00\x01a" + bytes(1_000_000 - 3)
        else:
            data = bytes(rng.choice((1 << 20, 3 << 20)))  # packet type 0, and then some
        if self.compress and rng.random() < 0.5:
            return self.frame(BINARY, self._deflated(data), rsv=4)  # kilobytes on the wire
        return self.frame(BINARY, data)
