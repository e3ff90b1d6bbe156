"""Record fields that SQLite has no type for, as column values and back."""

from __future__ import annotations

from mqttish.protocol.properties import (
    NO_PROPERTIES,
    Properties,
    decode_properties,
    encode_properties,
)


def properties_column(properties: Properties, packet: str) -> bytes | None:
    """The property section as the wire has it in `packet` (PUBLISH, WILL); None for none."""
    return encode_properties(properties, packet) if properties else None


def properties_value(column: bytes | None, packet: str) -> Properties:
    if column is None:
        return NO_PROPERTIES
    properties, _ = decode_properties(column, 0, len(column), packet)
    return properties


def ids_column(identifiers: tuple[int, ...]) -> str:
    return ",".join(map(str, identifiers))


def ids_value(column: str) -> tuple[int, ...]:
    return tuple(map(int, column.split(","))) if column else ()
