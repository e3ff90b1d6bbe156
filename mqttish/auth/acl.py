"""Mosquitto's ACL file, and the cached decisions made from it.

The format, line by line (`#` starts a comment):

    topic [read|write|readwrite|deny] FILTER   (no access word: readwrite)
    user NAME                                  (the topic lines after it are NAME's)
    pattern [read|write|readwrite|deny] FILTER (for every client; %u user, %c client id)

Topic lines before the first `user` line apply to anonymous clients.

Theory of operation: a client's rules are its user's (or the anonymous)
topic lines plus every pattern with `%u` and `%c` filled in; they are put
together once per (user, client id). A `deny` rule that matches wins; else any
rule that grants the access allows; else the answer is no. For a SUBSCRIBE the
question is about a filter: it is allowed if a readable rule covers every
topic the filter can match (`sensors/#` covers `sensors/+/temp`), and denied if
a deny rule does. Deliveries are checked per message, so a wide subscription
still never receives a topic the client may not read. Each answer is cached per
client and topic, in bounded tables that a reload throws away.

A user name or client id containing `/`, `+` or `#` never fills a pattern: it
could otherwise reach another client's topics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from mqttish.errors import MQTTError
from mqttish.protocol.topics import covers, matches, validate_topic_filter

CLIENT_CACHE_SIZE = 10_000  # clients whose rules and answers are kept
TOPIC_CACHE_SIZE = 1024  # answers kept per client and kind of access


class AclFileError(ValueError):
    """An ACL file that cannot be used; the message names the file and line."""


class Want(Enum):
    """What a client asks to do with a topic (or, for SUBSCRIBE, a filter)."""

    READ = "read"  # receive a message published to the topic
    WRITE = "write"  # publish to the topic
    SUBSCRIBE = "subscribe"  # subscribe with the filter


@dataclass(frozen=True, slots=True)
class Rule:
    topic_filter: str
    read: bool
    write: bool

    @property
    def deny(self) -> bool:
        return not (self.read or self.write)

    def substituted(self, username: str | None, client_id: str) -> Rule | None:
        """This pattern for one client; None if it cannot apply to it."""
        text = self.topic_filter
        for marker, value in (("%u", username), ("%c", client_id)):
            if marker in text:
                if value is None or any(c in value for c in "/+#"):
                    return None
                text = text.replace(marker, value)
        return Rule(text, self.read, self.write)


_ACCESS = {"read": (True, False), "write": (False, True), "readwrite": (True, True),
           "deny": (False, False)}


@dataclass(frozen=True, slots=True)
class AclFile:
    anonymous: tuple[Rule, ...]
    users: dict[str, tuple[Rule, ...]]
    patterns: tuple[Rule, ...]
    path: str = ""

    def rules_for(self, username: str | None, client_id: str) -> tuple[Rule, ...]:
        own = self.anonymous if username is None else self.users.get(username, ())
        filled = (rule.substituted(username, client_id) for rule in self.patterns)
        return own + tuple(rule for rule in filled if rule is not None)


def parse_acl_lines(lines: Iterable[str], source: str) -> AclFile:
    anonymous: list[Rule] = []
    users: dict[str, list[Rule]] = {}
    patterns: list[Rule] = []
    current = anonymous
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        rest = rest.strip()
        where = f"{source}:{number}"
        if keyword == "user":
            if not rest:
                raise AclFileError(f"{where}: 'user' needs a user name")
            current = users.setdefault(rest, [])
        elif keyword in ("topic", "pattern"):
            rule = _parse_rule(rest, where, keyword)
            (current if keyword == "topic" else patterns).append(rule)
        else:
            raise AclFileError(f"{where}: expected 'user', 'topic' or 'pattern', "
                               f"got {keyword[:40]!r}")
    return AclFile(tuple(anonymous), {name: tuple(rules) for name, rules in users.items()},
                   tuple(patterns), source)


def _parse_rule(rest: str, where: str, keyword: str) -> Rule:
    first, _, remainder = rest.partition(" ")
    access = _ACCESS.get(first)
    if access is None:
        topic_filter = rest
        access = _ACCESS["readwrite"]
    else:
        topic_filter = remainder.strip()
    if not topic_filter:
        raise AclFileError(f"{where}: '{keyword}' needs a topic filter")
    try:
        validate_topic_filter(topic_filter)
    except MQTTError as exc:
        raise AclFileError(f"{where}: invalid topic filter {topic_filter[:100]!r}: {exc}"
                           ) from None
    return Rule(topic_filter, *access)


def load_acl_file(path: str) -> AclFile:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AclFileError(f"cannot read ACL file {path}: {exc}") from None
    return parse_acl_lines(text.splitlines(), path)


def decide(rules: tuple[Rule, ...], topic: str, want: Want) -> bool:
    """The answer of `rules`: a matching deny wins, then any grant, else no."""
    if want is Want.SUBSCRIBE:
        if any(rule.deny and covers(rule.topic_filter, topic) for rule in rules):
            return False
        return any(rule.read and covers(rule.topic_filter, topic) for rule in rules)
    if any(rule.deny and matches(rule.topic_filter, topic) for rule in rules):
        return False
    if want is Want.READ:
        return any(rule.read and matches(rule.topic_filter, topic) for rule in rules)
    return any(rule.write and matches(rule.topic_filter, topic) for rule in rules)


class _ClientAnswers:
    """One client's rules and the answers already worked out from them."""

    __slots__ = ("answers", "rules")

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.answers: dict[Want, dict[str, bool]] = {want: {} for want in Want}

    def allowed(self, topic: str, want: Want) -> bool:
        answers = self.answers[want]
        answer = answers.get(topic)
        if answer is None:
            if len(answers) >= TOPIC_CACHE_SIZE:
                answers.clear()
            answer = answers[topic] = decide(self.rules, topic, want)
        return answer


class AclChecker:
    """Answers from one ACL file, cached per client; a reload makes a new checker."""

    def __init__(self, acl: AclFile) -> None:
        self.acl = acl
        self._clients: dict[tuple[str | None, str], _ClientAnswers] = {}

    def allowed(self, username: str | None, client_id: str, topic: str, want: Want) -> bool:
        key = (username, client_id)
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) >= CLIENT_CACHE_SIZE:
                self._clients.clear()
            client = self._clients[key] = _ClientAnswers(self.acl.rules_for(username, client_id))
        return client.allowed(topic, want)
