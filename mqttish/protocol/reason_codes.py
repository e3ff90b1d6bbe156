"""MQTT 5.0 reason codes, and how they map onto MQTT 3.1.1's return codes.

The broker thinks in v5 reason codes everywhere; only the codec narrows them
to what a 3.1.1 peer understands.
"""

from enum import IntEnum


class ReasonCode(IntEnum):
    """MQTT 5.0 section 2.4. Names that share a value are aliases."""

    SUCCESS = 0x00
    NORMAL_DISCONNECTION = 0x00
    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


class ConnAckCodeV3(IntEnum):
    """MQTT 3.1.1 section 3.2.2.3: CONNACK return codes."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USER_NAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


_CONNACK_V3 = {
    ReasonCode.SUCCESS: ConnAckCodeV3.ACCEPTED,
    ReasonCode.UNSUPPORTED_PROTOCOL_VERSION: ConnAckCodeV3.UNACCEPTABLE_PROTOCOL_VERSION,
    ReasonCode.CLIENT_IDENTIFIER_NOT_VALID: ConnAckCodeV3.IDENTIFIER_REJECTED,
    ReasonCode.BAD_USER_NAME_OR_PASSWORD: ConnAckCodeV3.BAD_USER_NAME_OR_PASSWORD,
    ReasonCode.NOT_AUTHORIZED: ConnAckCodeV3.NOT_AUTHORIZED,
    ReasonCode.BANNED: ConnAckCodeV3.NOT_AUTHORIZED,
    ReasonCode.BAD_AUTHENTICATION_METHOD: ConnAckCodeV3.NOT_AUTHORIZED,
}

_CONNACK_V5 = {v3: v5 for v5, v3 in reversed(list(_CONNACK_V3.items()))}

SUBACK_FAILURE_V3 = 0x80

# The reason codes each packet may carry (MQTT 5.0 sections 3.2.2.2 to 3.15.2.1), keyed by
# the packet kinds of protocol/properties.py: a peer that sends another one breaks its rule.
_PUBLISH_ACK = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
_RELEASE = frozenset({0x00, 0x92})
ALLOWED_REASON_CODES: dict[str, frozenset[int]] = {
    "CONNACK": frozenset({0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
                          0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}),
    "PUBACK": _PUBLISH_ACK,
    "PUBREC": _PUBLISH_ACK,
    "PUBREL": _RELEASE,
    "PUBCOMP": _RELEASE,
    "SUBACK": frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1,
                         0xA2}),
    "UNSUBACK": frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91}),
    "DISCONNECT": frozenset({0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E,
                             0x8F, 0x90, *range(0x93, 0xA3)}),
    "AUTH": frozenset({0x00, 0x18, 0x19}),
}

# The rule each packet's section states for its reason codes.
REASON_CODE_RULES: dict[str, str] = {
    "CONNACK": "MQTT-3.2.2-8", "PUBACK": "MQTT-3.4.2-1", "PUBREC": "MQTT-3.5.2-1",
    "PUBREL": "MQTT-3.6.2-1", "PUBCOMP": "MQTT-3.7.2-1", "SUBACK": "MQTT-3.9.3-2",
    "UNSUBACK": "MQTT-3.11.3-2", "DISCONNECT": "MQTT-3.14.2-1", "AUTH": "MQTT-3.15.2-1",
}


def connack_code_to_v3(code: int) -> int:
    """The 3.1.1 return code closest in meaning to a v5 CONNACK reason code."""
    return int(_CONNACK_V3.get(ReasonCode(code), ConnAckCodeV3.SERVER_UNAVAILABLE))


def connack_code_from_v3(code: int) -> int:
    return int(_CONNACK_V5.get(ConnAckCodeV3(code), ReasonCode.SERVER_UNAVAILABLE))


def suback_code_to_v3(code: int) -> int:
    """3.1.1 SUBACK knows only the granted QoS or 0x80 (failure)."""
    return code if code <= 2 else SUBACK_FAILURE_V3
