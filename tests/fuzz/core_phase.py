"""Phase 1: mutated and malformed packets through the sans-IO core, no sockets.

Theory of operation: an *episode* is one Broker (with one of `CONFIGS`) and a
log of events: bytes fed to a connection, a drain of its output, a lost
socket, an expired keepalive, a housekeeping tick. The fuzzer chooses events
as it goes, up to four `FuzzClient`s talking at once, and the log replays
them exactly, so whatever fails can be reproduced and minimised.

A failure is any of:
- an exception other than `MQTTError` escaping the core (`adapter.CoreClient`);
- output a client cannot decode (the broker must never send malformed packets);
- a closed connection that reopens or still answers;
- inconsistent or unbounded session bookkeeping (`adapter.bookkeeping_problems`).
Failures are grouped by signature (exception type and where it was raised).
The first of each signature is minimised (events, then bytes) and saved as a
JSON reproducer that `python -m tests.fuzz replay FILE` runs again.
"""

from __future__ import annotations

import json
import random
import re
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from mqttish.config import Config
from mqttish.core.hooks import Access, ClientInfo, Decision, Hook
from mqttish.core.settings import RedirectConfig
from mqttish.errors import MQTTError
from mqttish.protocol.codec import NEED_DATA, PacketDecoder
from mqttish.protocol.packets import Connect, Packet
from tests.fuzz.adapter import (
    CoreClient,
    bookkeeping_problems,
    connection_errors,
    internal_errors,
    new_broker,
    tick,
)
from tests.fuzz.clients import Ending, FuzzClient
from tests.fuzz.minimise import ddmin
from tests.fuzz.mutations import packets_in
from tests.fuzz.seeds import Corpus, build_corpus


class DenyHook(Hook):
    """Authentication and ACL answers that are not always yes."""

    def authenticate(self, client: ClientInfo, connect: Connect) -> Decision:
        if connect.username == "user":
            return Decision.ALLOW
        return Decision.DENY if connect.username == "banned" else Decision.DEFER

    def check_acl(self, client: ClientInfo, topic: str, access: Access) -> Decision:
        return Decision.DENY if topic.startswith("deny") else Decision.DEFER


_BASE = Config(listeners=())
# Broker configurations an episode runs with, by name (a reproducer names its own).
CONFIGS: dict[str, tuple[Config, tuple[Hook, ...]]] = {
    "default": (_BASE, ()),
    "small": (replace(_BASE, max_packet_size=300, max_inflight_messages=2,
                      max_queued_messages=5, max_queued_bytes=2000, topic_alias_maximum=2,
                      queue_qos0_messages=True, shared_subscription_strategy="least_loaded",
                      persistent_client_expiration=5, max_keepalive=10), ()),
    "restricted": (replace(_BASE, max_qos=1, retain_available=False,
                           wildcard_subscriptions=False, subscription_identifiers=False,
                           shared_subscriptions=False, topic_alias_maximum=0,
                           allow_anonymous=False), (DenyHook(),)),
    "sticky": (replace(_BASE, shared_subscription_strategy="sticky", max_queued_messages=50,
                       queue_qos0_messages=True), (DenyHook(),)),
    "random-share": (replace(_BASE, shared_subscription_strategy="random",
                             max_inflight_messages=1), ()),
    "redirect": (replace(_BASE, redirect=RedirectConfig("elsewhere:1883")), ()),
}
CONFIG_WEIGHTS = {"default": 5, "small": 3, "restricted": 2, "sticky": 2, "random-share": 1,
                  "redirect": 1}
MAX_CLIENTS = 4  # connections open at once in an episode
CHECK_EVERY = 64  # events between bookkeeping checks


class MalformedOutput(Exception):
    """The broker sent bytes its client cannot decode."""


class BrokenInvariant(Exception):
    """The broker's bookkeeping, or a connection's state, is wrong."""


# ----------------------------------------------------------------------------- episodes

Event = tuple[str, int, float, bytes]  # (kind, connection number, now, data)


class Episode:
    """One broker and the events it has been through; `apply` is the only way in."""

    def __init__(self, config_name: str) -> None:
        config, hooks = CONFIGS[config_name]
        self.config_name = config_name
        self.broker = new_broker(config, hooks)
        self.clients: dict[int, CoreClient] = {}
        self.decoders: dict[int, PacketDecoder] = {}
        self.flushed: set[int] = set()  # closed connections whose last bytes were taken
        self.events: list[Event] = []

    def apply(self, event: Event) -> list[Packet]:
        """Run one event; return the packets the connection was sent."""
        self.events.append(event)
        kind, number, now, data = event
        if kind == "tick":
            tick(self.broker, now)
            return []
        client = self.clients.get(number)
        if client is None:
            client = self.clients[number] = CoreClient(self.broker, now)
        was_closed = client.closed
        output = b""
        if kind == "feed":
            output = client.exchange(data, now)
        elif kind == "drain":
            output = client.drain(now)
        elif kind == "lose":
            client.lose(now)
        elif kind == "expire":
            client.expire(now)
        if was_closed:
            # Once closed, a connection flushes its last bytes and says nothing more.
            if not client.closed or (output and number in self.flushed):
                raise BrokenInvariant(
                    f"closed connection {number} reopened or sent {output[:40]!r}")
            self.flushed.add(number)
        return self._decode(number, client.version, output)

    def _decode(self, number: int, version: int, output: bytes) -> list[Packet]:
        if not output:
            return []
        decoder = self.decoders.get(number)
        if decoder is None:
            decoder = self.decoders[number] = PacketDecoder(version)
        decoder.version = version
        decoder.feed(output)
        packets = []
        try:
            while (packet := decoder.next()) is not NEED_DATA:
                packets.append(packet)
        except MQTTError as exc:
            raise MalformedOutput(f"connection {number} sent {output[:60]!r}: {exc}") from None
        return packets  # type: ignore[return-value]

    def check(self) -> None:
        problems = bookkeeping_problems(self.broker)
        if connection_errors(self.broker):
            problems.append(f"{connection_errors(self.broker)} connections ended in an "
                            "internal error")
        if problems:
            raise BrokenInvariant("; ".join(problems[:3]))


def replay(config_name: str, events: Sequence[Event], check_at_end: bool = False) -> None:
    """Run events on a fresh broker; raises what they raise (internal errors included)."""
    with internal_errors():
        episode = Episode(config_name)
        for event in events:
            episode.apply(event)
        if check_at_end:
            episode.check()


# ----------------------------------------------------------------------------- failures


def signature(exc: BaseException) -> str:
    """What makes two failures the same bug: the exception type and where it was raised."""
    if isinstance(exc, MalformedOutput | BrokenInvariant):
        text = str(exc).split(": ", 1)[-1] if isinstance(exc, MalformedOutput) else str(exc)
        text = re.sub(r"'[^']*'|\d+|b'[^']*'", "_", text)[:80]
        return f"{type(exc).__name__}: {text}"
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if "/mqttish/" in f.filename] or frames
    where = inside[-1] if inside else None
    place = f"{where.filename.rsplit('/mqttish/', 1)[-1]}:{where.name}" if where else "?"
    return f"{type(exc).__name__} in {place}"


def _failure(config_name: str, events: Sequence[Event], check_at_end: bool) -> str | None:
    """The signature with which these events fail, or None."""
    try:
        replay(config_name, events, check_at_end)
    except MQTTError:
        return None
    except Exception as exc:
        return signature(exc)
    return None


@dataclass
class Failure:
    signature: str
    count: int
    config: str
    events: list[Event]
    traceback: str
    check_at_end: bool
    path: str = ""

    def reproducer(self) -> dict[str, object]:
        return {
            "signature": self.signature,
            "config": self.config,
            "check_at_end": self.check_at_end,
            "events": [[kind, number, now, data.hex()] for kind, number, now, data in self.events],
            "traceback": self.traceback,
        }

    def input_bytes(self) -> bytes:
        """Everything fed, in order (the whole story when one connection is involved)."""
        return b"".join(data for kind, _, _, data in self.events if kind == "feed")


def minimise(failure: Failure, seconds: float) -> None:
    """Fewer events, then fewer bytes in each fed event, failing with the same signature."""
    deadline = time.monotonic() + seconds
    events = failure.events

    def same(candidate: list[Event]) -> bool:
        return _failure(failure.config, candidate, failure.check_at_end) == failure.signature

    if not same(events):
        return  # depends on more than the log (should not happen): keep it whole
    last = [] if failure.check_at_end else events[-1:]
    body = events[:len(events) - len(last)]
    events = ddmin(body, lambda kept: same(kept + last), deadline) + last
    merged = _merged_feeds(events)
    if merged != events and same(merged):
        events = merged
    for index in reversed(range(len(events))):
        kind, _, _, data = events[index]
        if kind == "feed" and len(data) > 1:
            events = _shrink_feed(events, index, same, deadline)
    failure.events = events


def _merged_feeds(events: list[Event]) -> list[Event]:
    """Consecutive reads of one connection as one read (at the time of the first)."""
    merged: list[Event] = []
    for event in events:
        kind, number, _, data = event
        if merged and kind == "feed" and merged[-1][0] == "feed" and merged[-1][1] == number:
            first = merged[-1]
            merged[-1] = (kind, number, first[2], first[3] + data)
        else:
            merged.append(event)
    return merged


def _shrink_feed(events: list[Event], index: int, same: Callable[[list[Event]], bool],
                 deadline: float) -> list[Event]:
    """`events` with feed `index` minimised: whole packets first, then bytes."""
    kind, number, now, data = events[index]

    def with_data(kept: bytes) -> list[Event]:
        return [*events[:index], (kind, number, now, kept), *events[index + 1:]]

    packets = ddmin(packets_in(data), lambda kept: same(with_data(b"".join(kept))), deadline)
    data = b"".join(packets)
    kept = ddmin(list(data), lambda kept: same(with_data(bytes(kept))), deadline)
    return with_data(bytes(kept))


def load_reproducer(path: Path) -> tuple[str, list[Event], bool]:
    record = json.loads(path.read_text())
    events = [(kind, number, now, bytes.fromhex(data))
              for kind, number, now, data in record["events"]]
    return record["config"], events, bool(record.get("check_at_end"))


# ----------------------------------------------------------------------------- the run


@dataclass
class CoreReport:
    packets: int = 0
    connections: int = 0
    episodes: int = 0
    events: int = 0
    seconds: float = 0.0
    mutations: Counter[str] = field(default_factory=Counter)
    failures: dict[str, Failure] = field(default_factory=dict)

    def merge(self, other: CoreReport) -> None:
        self.packets += other.packets
        self.connections += other.connections
        self.episodes += other.episodes
        self.events += other.events
        self.seconds = max(self.seconds, other.seconds)
        self.mutations.update(other.mutations)
        for sig, failure in other.failures.items():
            mine = self.failures.get(sig)
            if mine is None:
                self.failures[sig] = failure
            else:
                mine.count += failure.count


class _EpisodeFailed(Exception):
    def __init__(self, exc: Exception, check_at_end: bool) -> None:
        self.exc = exc
        self.check_at_end = check_at_end


def run_core(seed: int, packets: int, out_dir: Path | None = None,
             minimise_seconds: float = 60.0,
             progress: Callable[[CoreReport], None] | None = None) -> CoreReport:
    """Fuzz the core with at least `packets` packets; the same seed makes the same run."""
    rng = random.Random(seed)
    corpus = build_corpus(seed)
    report = CoreReport()
    started = time.monotonic()
    names = list(CONFIG_WEIGHTS)
    weights = list(CONFIG_WEIGHTS.values())
    with internal_errors():
        while report.packets < packets:
            config_name = rng.choices(names, weights)[0]
            episode = Episode(config_name)
            report.episodes += 1
            try:
                _run_episode(rng, corpus, episode, report, packets)
            except _EpisodeFailed as failed:
                _record(report, episode, failed, out_dir, minimise_seconds)
            report.events += len(episode.events)
            report.seconds = time.monotonic() - started
            if progress is not None:
                progress(report)
    return report


def _run_episode(rng: random.Random, corpus: Corpus, episode: Episode, report: CoreReport,
                 budget: int) -> None:
    now = 1.0
    live: dict[int, FuzzClient] = {}
    to_open = rng.randint(5, 60)
    number = 0

    def apply(event: Event) -> list[Packet]:
        try:
            return episode.apply(event)
        except MQTTError:
            return []  # a protocol error may leave the core: the transport closes
        except Exception as exc:
            raise _EpisodeFailed(exc, False) from None

    while (live or to_open) and report.packets < budget:
        if to_open and len(live) < MAX_CLIENTS and (not live or rng.random() < 0.3):
            to_open -= 1
            number += 1
            live[number] = FuzzClient(rng, corpus, report.mutations,
                                      number + report.connections * 1000)
        conn = rng.choice(list(live))
        client = live[conn]
        before = client.packets
        reads = client.next_reads()
        if reads is None:
            del live[conn]
            report.connections += 1
            if client.ending is Ending.LOSE:
                apply(("lose", conn, now, b""))
            elif client.ending is Ending.SILENCE:
                now += rng.choice((1.0, 20.0, 100_000.0))
                apply(("expire", conn, now, b""))
            continue
        for data in reads:
            client.observe(apply(("feed", conn, now, data)))
        report.packets += client.packets - before
        if rng.random() < 0.3:
            other = rng.choice(list(live))
            live[other].observe(apply(("drain", other, now, b"")))
        if rng.random() < 0.05:
            now += rng.choice((0.001, 0.5, 2.0, 30.0, 5000.0))
            apply(("tick", 0, now, b""))
        now += 0.001
        if len(episode.events) % CHECK_EVERY == 0:
            _check(episode)
    for conn in live:
        apply(("lose", conn, now, b""))
    report.connections += len(live)
    apply(("tick", 0, now + 100_000.0, b""))
    _check(episode)


def _check(episode: Episode) -> None:
    try:
        episode.check()
    except BrokenInvariant as exc:
        raise _EpisodeFailed(exc, True) from None


def _record(report: CoreReport, episode: Episode, failed: _EpisodeFailed,
            out_dir: Path | None, minimise_seconds: float) -> None:
    sig = signature(failed.exc)
    known = report.failures.get(sig)
    if known is not None:
        known.count += 1
        return
    text = "".join(traceback.format_exception(failed.exc))
    failure = Failure(sig, 1, episode.config_name, list(episode.events), text, failed.check_at_end)
    minimise(failure, minimise_seconds)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", sig.lower()).strip("-")[:60]
        path = out_dir / f"core-{slug}.json"
        path.write_text(json.dumps(failure.reproducer(), indent=1) + "\n")
        failure.path = str(path)
    report.failures[sig] = failure
