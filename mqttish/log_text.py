"""Client-supplied text, made safe for a log line.

A client id, a topic or a reason string can be 65,535 bytes long and hold
newlines or terminal escapes. Written into the log as it came, one connection
could fill the disk or forge log lines. Every log line (and every error
message that ends up in one) shows such text through `clip`: quoted and
escaped like `repr`, and cut after `limit` characters with an ellipsis and
the full length, so it stays bounded and greppable.
"""

from __future__ import annotations

ELLIPSIS = "…"
SENTENCE_LIMIT = 200  # for reason strings and error messages, longer than a name


def clip(text: str, limit: int = 64) -> str:
    """`text` quoted and escaped; past `limit` characters, `'abc…' (65000 chars)`."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit] + ELLIPSIS!r} ({len(text)} chars)"
