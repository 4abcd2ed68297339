"""The receiver's Prometheus metrics (GET /metrics on the receiver itself)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

#: The receiver's own registry: nothing of another process's metrics mixes in.
REGISTRY = CollectorRegistry(auto_describe=True)

#: Events by source (evolution, salvy), type (the event's name, or "other") and outcome.
EVENTS = Counter(
    "chip_orchestrator_webhook_events",
    "Webhook deliveries received, by source, event type and outcome",
    ["source", "type", "outcome"],
    registry=REGISTRY,
)
#: Time from request to answer, by source.
SECONDS = Histogram(
    "chip_orchestrator_webhook_seconds",
    "Time to answer a webhook delivery, by source",
    ["source"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
#: Types kept as label values; anything else is "other" (callers must not grow the series).
KNOWN_TYPES = frozenset(
    {
        "connection.update",
        "logout.instance",
        "status.instance",
        "phone-account.blocked",
        "phone-account.canceled",
        "phone-account.unblocked",
        "phone-account.reactivated",
    }
)


def count(source: str, kind: str | None, outcome: str) -> None:
    """One delivery seen."""
    label = kind if kind in KNOWN_TYPES else ("none" if kind is None else "other")
    EVENTS.labels(source, label, outcome).inc()
