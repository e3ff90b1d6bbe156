"""`clip`: client-supplied text in log lines is quoted, escaped and bounded."""

from __future__ import annotations

from mqttish.log_text import clip


def test_short_text_is_quoted_whole() -> None:
    assert clip("sensor-1") == "'sensor-1'"
    assert clip("x" * 64) == repr("x" * 64)


def test_long_text_is_cut_with_an_ellipsis_and_its_length() -> None:
    assert clip("a" * 65_000) == f"'{'a' * 64}…' (65000 chars)"
    assert clip("abcdef", limit=3) == "'abc…' (6 chars)"


def test_line_breaks_and_escapes_cannot_forge_a_log_line() -> None:
    clipped = clip("id\n2026-01-01 INFO forged line\x1b[2J")
    assert "\n" not in clipped and "\x1b" not in clipped
    assert clipped.startswith("'id\\n")
