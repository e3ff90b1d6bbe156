"""The scaling targets of `mqttish --workers 2` (issue #17, docs/scaling.md), judged from the
same runs as the main table: a second small table under it."""

from __future__ import annotations

from dataclasses import dataclass

from bench.report import DASH, LABELS, METRICS, Metric, Summary

WORKERS = "mqttish-w2"


@dataclass(frozen=True)
class ScalingTarget:
    scenario: str
    key: str
    against: str  # the broker it is compared with
    factor: float | None  # at least this ratio (None: reported, no target)


SCALING_TARGETS: tuple[ScalingTarget, ...] = (
    ScalingTarget("fan-out-qos0", "rate", "mqttish", 1.6),
    ScalingTarget("fan-in-qos0", "rate", "mqttish", 1.3),
    ScalingTarget("fan-in-qos0", "rate", "mosquitto", 1.0),
    ScalingTarget("fan-in-qos1", "rate", "mqttish", None),
    ScalingTarget("fan-in-qos1", "rate", "mosquitto", None),
    ScalingTarget("connections", "connect_s", "mqttish", None),
)


def _metric(scenario: str, key: str) -> Metric:
    return next(m for m in METRICS if m.scenario == scenario and m.key == key)


def render_scaling(summary: Summary) -> str | None:
    """`--workers 2` against one process and Mosquitto; None if it was not run."""
    if WORKERS not in summary.brokers:
        return None
    rows = [["`--workers 2`", "ratio", "Target", "Status"], ["---"] * 4]
    for target in SCALING_TARGETS:
        if target.against not in summary.brokers:
            continue
        metric = _metric(target.scenario, target.key)
        ratio = summary.ratio(metric, WORKERS, target.against)
        shown = DASH if ratio is None else f"{ratio:.2f}x"
        label = f"{metric.label.split(',')[0]}: {LABELS[WORKERS]} / {LABELS[target.against]}"
        if metric.key == "connect_s":
            label = f"connect time: {LABELS[WORKERS]} / {LABELS[target.against]}"
        if target.factor is None:
            rows.append([label, shown, "(reported)", ""])
            continue
        if ratio is None:
            status = DASH
        elif ratio >= target.factor:
            status = f"✅ met ({ratio:.2f}x)"
        else:
            status = f"❌ missed ({ratio:.2f}x, {target.factor / ratio:.2f}x short)"
        rows.append([label, shown, f">= {target.factor:g}x", status])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)
