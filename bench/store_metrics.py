"""mqttish's group commits as its /metrics reports them: latency histogram, commits, records.

The persistent fan-in scenario reads /metrics when its measured window opens
and after the drain; the difference is what happened in between. The p99 is
estimated from the histogram's buckets the way Prometheus' `histogram_quantile`
does it (linearly within the bucket it falls in), and the bucket's upper bound
is kept too: the true p99 is at most that.
"""

from __future__ import annotations

import math
import re
import urllib.request
from dataclasses import dataclass

HISTOGRAM = "mqttish_store_commit_seconds"
SAMPLE = re.compile(r'^(?P<name>[a-z_]+)(?:\{le="(?P<le>[^"]+)"\})? (?P<value>\S+)$')


@dataclass(frozen=True, slots=True)
class CommitFigures:
    commits: float
    changes: float  # journal records committed
    latency_sum: float  # seconds
    buckets: tuple[tuple[float, float], ...]  # (upper bound in s, cumulative count), +Inf last

    def __sub__(self, earlier: CommitFigures) -> CommitFigures:
        return CommitFigures(
            self.commits - earlier.commits, self.changes - earlier.changes,
            self.latency_sum - earlier.latency_sum,
            tuple((bound, count - before) for (bound, count), (_, before)
                  in zip(self.buckets, earlier.buckets, strict=True)))

    def quantile(self, q: float) -> tuple[float, float]:
        """(estimate, upper bound of its bucket) in seconds; NaN without commits."""
        total = self.buckets[-1][1] if self.buckets else 0.0
        if not total:
            return math.nan, math.nan
        rank = q * total
        lower, below = 0.0, 0.0
        for bound, count in self.buckets:
            if count >= rank:
                if math.isinf(bound):  # past the last finite bucket: all we know
                    return lower, bound
                share = (rank - below) / (count - below) if count > below else 1.0
                return lower + (bound - lower) * share, bound
            lower, below = bound, count
        return lower, math.inf


def scrape(port: int, timeout: float = 10.0) -> CommitFigures:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as reply:
        return parse(reply.read().decode())


def parse(text: str) -> CommitFigures:
    values: dict[str, float] = {}
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match is None:
            continue
        name, value = match["name"], float(match["value"])
        if name == f"{HISTOGRAM}_bucket":
            buckets.append((float(match["le"]), value))
        else:
            values[name] = value
    if "mqttish_store_commits_total" not in values:
        raise ValueError("no mqttish_store_* metrics: is persistence on?")
    return CommitFigures(values["mqttish_store_commits_total"],
                         values.get("mqttish_store_changes_total", math.nan),
                         values.get(f"{HISTOGRAM}_sum", math.nan),
                         tuple(sorted(buckets)))
