"""docs/mosquitto-migration.md lists every key mosquitto_conf/ knows, with its status."""

from __future__ import annotations

import re
from pathlib import Path

from mqttish.mosquitto_conf.keys import IGNORED, REFUSED, UNSUPPORTED
from mqttish.mosquitto_conf.translate import SUPPORTED

DOC = Path(__file__).resolve().parents[2] / "docs" / "mosquitto-migration.md"
# Handled by a handler, but accepted or refused depending on the value.
CONDITIONAL = {"check_retain_source", "tls_keyform", "upgrade_outgoing_qos", "user"}


def documented() -> dict[str, str]:
    """{key: status} from the tables' rows: | `key` | status | ... |"""
    rows: dict[str, str] = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            for key in re.findall(r"`([\w.*]+)`", cells[0]):
                rows[key.replace("*", "")] = cells[1]
    return rows


def test_every_key_is_documented_with_its_status() -> None:
    rows = documented()
    expected = {key: "supported" for key in SUPPORTED - CONDITIONAL}
    expected.update({key: "accepted, ignored" for key in IGNORED})
    expected.update({key: "warning" for key in UNSUPPORTED})
    expected.update({key: "refused" for key in REFUSED})
    for key in CONDITIONAL:
        expected.pop(key, None)
    for key, status in expected.items():
        assert rows.get(key) == status, f"{key}: documented as {rows.get(key)!r}"
    for key in CONDITIONAL:
        assert key in rows, key
    assert set(rows) == set(expected) | CONDITIONAL  # and nothing else
