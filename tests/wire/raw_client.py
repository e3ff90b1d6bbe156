"""A blocking raw-socket MQTT client on our codec, for byte-exact and misbehaving clients."""

from __future__ import annotations

import socket

from mqttish.protocol.codec import NEED_DATA, PacketDecoder, encode
from mqttish.protocol.packets import MQTT_3_1_1, ConnAck, Connect, Packet

TIMEOUT = 5.0


class RawClient:
    def __init__(self, port: int, version: int = MQTT_3_1_1, source: str | None = None) -> None:
        """`source`: the loopback address to connect from (127.0.0.2, ...), for limits
        and throttles that count per address."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT,
                                             source_address=(source, 0) if source else None)
        self.version = version
        self.decoder = PacketDecoder(version=version)

    def send(self, *items: Packet | bytes) -> None:
        data = b"".join(i if isinstance(i, bytes) else encode(i, self.version) for i in items)
        self.sock.sendall(data)

    def receive(self, timeout: float = TIMEOUT) -> Packet | None:
        """The next packet, or None when the broker closed the connection."""
        self.sock.settimeout(timeout)
        while (packet := self.decoder.next()) is NEED_DATA:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.decoder.feed(data)
        return packet  # type: ignore[return-value]

    def connect(self, client_id: str, **fields: object) -> ConnAck:
        self.send(Connect(client_id, self.version, **fields))  # type: ignore[arg-type]
        connack = self.receive()
        assert isinstance(connack, ConnAck), connack
        return connack

    def closed_by_broker(self, timeout: float = TIMEOUT) -> bool:
        """Read until the broker closes; True if it did (packets before the close are skipped)."""
        try:
            while self.receive(timeout) is not None:
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
        return True

    def close(self) -> None:
        self.sock.close()
