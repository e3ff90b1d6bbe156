"""paho-mqtt 2.x clients for wire tests, with blocking waits that time out instead of sleeping."""

from __future__ import annotations

import queue
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

TIMEOUT = 5.0
V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5


class PahoClient:
    """A connected paho client whose received messages land in a queue."""

    def __init__(self, port: int, client_id: str = "", *, protocol: int = V311,
                 clean_session: bool = True, keepalive: int = 60,
                 will: tuple[str, bytes, int, bool] | None = None,
                 connect: bool = True, properties: Properties | None = None,
                 clean_start: bool = True, transport: str = "tcp",
                 sink: queue.Queue[tuple[str, mqtt.MQTTMessage]] | None = None) -> None:
        kwargs: dict[str, Any] = {"client_id": client_id, "protocol": protocol,
                                  "transport": transport}
        if protocol != V5:
            kwargs["clean_session"] = clean_session
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)
        self.port = port
        self.protocol = protocol
        self.client_id = client_id
        # Where messages land: the client's own queue, or a queue shared with other clients.
        self.sink = sink
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connect_flags: dict[str, Any] = {}
        self.connect_reason: ReasonCode | None = None
        self.connack_properties: Properties | None = None
        self.disconnect_reason: ReasonCode | None = None
        self.subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.acked: queue.Queue[tuple[int, ReasonCode]] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.unsubacks: queue.Queue[Any] = queue.Queue()
        self.client.on_unsubscribe = lambda client, userdata, mid, codes, *rest: (
            self.unsubacks.put(codes))
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos, retain)
        if connect:
            self.connect(keepalive, properties, clean_start)

    def connect(self, keepalive: int = 60, properties: Properties | None = None,
                clean_start: bool = True) -> None:
        kwargs: dict[str, Any] = {"keepalive": keepalive}
        if self.protocol == V5:
            kwargs["clean_start"] = clean_start
            kwargs["properties"] = properties
        self.client.connect("127.0.0.1", self.port, **kwargs)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Properties | None) -> None:
        self.connect_flags = {"session_present": flags.session_present}
        self.connect_reason = reason
        self.connack_properties = properties
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Properties | None) -> None:
        self.disconnect_reason = reason
        self.disconnected.set()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self.sink is not None:
            self.sink.put((self.client_id, message))
        else:
            self.messages.put(message)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        self.subacks.put(codes)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Properties | None) -> None:
        self.acked.put((mid, reason))

    def subscribe(self, topic: str, qos: int = 0, properties: Properties | None = None,
                  **kwargs: Any) -> list[ReasonCode]:
        if self.protocol == V5:
            options = mqtt.SubscribeOptions(qos=qos, **kwargs)
            self.client.subscribe(topic, options=options, properties=properties)
        else:
            self.client.subscribe(topic, qos)
        return self.subacks.get(timeout=TIMEOUT)

    def unsubscribe(self, topic: str) -> Any:
        """Unsubscribe and return the UNSUBACK reason codes (MQTT 5)."""
        self.client.unsubscribe(topic)
        return self.unsubacks.get(timeout=TIMEOUT)

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False,
                properties: Properties | None = None, wait: bool = True) -> ReasonCode | None:
        """Publish; for QoS 1 and 2 (with wait) return the acknowledgement's reason code."""
        info = self.client.publish(topic, payload, qos, retain, properties)
        if not (wait and qos):
            return None
        while True:
            mid, reason = self.acked.get(timeout=TIMEOUT)
            if mid == info.mid:
                return reason

    def expect(self, count: int = 1, timeout: float = TIMEOUT) -> list[mqtt.MQTTMessage]:
        return [self.messages.get(timeout=timeout) for _ in range(count)]

    def disconnect(self) -> None:
        self.client.disconnect()
        self.disconnected.wait(TIMEOUT)
        self.client.loop_stop()

    def kill(self) -> None:
        """End the connection without DISCONNECT, as a crashed device would."""
        sock = self.client.socket()
        self.client.loop_stop()
        if sock is not None:
            sock.close()
