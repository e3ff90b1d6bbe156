"""Helpers for MQTT 5 wire tests: paho property objects in one line."""

from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.wire.paho_client import V5, PahoClient


def props(packet: str, **values: Any) -> Properties:
    """paho Properties for a packet type, e.g. props("PUBLISH", MessageExpiryInterval=5)."""
    properties = Properties(getattr(PacketTypes, packet))
    for name, value in values.items():
        setattr(properties, name, value)
    return properties


def v5(port: int, client_id: str = "", **kwargs: Any) -> PahoClient:
    return PahoClient(port, client_id, protocol=V5, **kwargs)
