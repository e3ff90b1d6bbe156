"""A trio MQTT 3.1.1 / 5.0 client on mqttish's own codec (see docs/client.md).

    async with Client("localhost", 1883, client_id="sensor-1") as client:
        await client.publish("sensors/1/temperature", "21.5", qos=1)
        async with client.subscription("commands/sensor-1/#", qos=1) as commands:
            async for message in commands:
                ...
"""

from mqttish.client.client import (
    DEFAULT_OPTIONS,
    Backoff,
    Client,
    ClientOptions,
    ClientState,
    Messages,
    Publishing,
)
from mqttish.client.errors import (
    ClientError,
    ConnectError,
    ConnectionLostError,
    PublishError,
    SubscribeError,
)
from mqttish.client.protocol import Message
from mqttish.errors import LocalProtocolError
from mqttish.protocol.packets import MQTT_3_1_1, MQTT_5, RetainHandling, SubscriptionRequest, Will
from mqttish.protocol.properties import Properties
from mqttish.protocol.reason_codes import ReasonCode

__all__ = [
    "DEFAULT_OPTIONS",
    "MQTT_3_1_1",
    "MQTT_5",
    "Backoff",
    "Client",
    "ClientError",
    "ClientOptions",
    "ClientState",
    "ConnectError",
    "ConnectionLostError",
    "LocalProtocolError",
    "Message",
    "Messages",
    "Properties",
    "PublishError",
    "Publishing",
    "ReasonCode",
    "RetainHandling",
    "SubscribeError",
    "SubscriptionRequest",
    "Will",
]
