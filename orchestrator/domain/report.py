"""The monthly report and a chip's history, assembled from plain data (no database here).

Billing rule (a cancelled number is billed its whole month): a number is billed one month for
every calendar month (UTC) in which it was held at any instant. It is held from its chip's
`created_at` (for a number we bought: when the purchase was recorded, moments before Salvy's
call) until it is cancelled (the chip's `cancel` operation, else its `updated_at` for a chip
another service marked cancelled); only chips that got a number (`telefone` set) count. So a
number bought on the 30th or cancelled on the 1st costs that whole month.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from orchestrator.errors import Rejected

#: `--month` format.
MONTH_PATTERN = re.compile(r"^(\d{4})-(\d{2})$")
#: Currency of pool_config.number_monthly_cost.
CURRENCY = "BRL"
#: Why the cost is unknown when pool_config.number_monthly_cost is NULL.
COST_UNKNOWN = "pool_config.number_monthly_cost is not set (NULL): cost unknown"
#: Replacement reason of an auto_replace that recorded none (the seed's, or another service's),
#: as `report` and `forecast` both name it.
NO_REASON = "sem_motivo"
#: Chip timestamps shown as state changes in a history: column -> what happened then.
STATE_COLUMNS = {
    "created_at": "registered",
    "warming_started_at": "warming",
    "ready_at": "ready",
    "promoted_to_active_at": "active",
    "degraded_at": "degraded",
    "evolution_disconnected_at": "disconnected",
    "updated_at": "last_update",
}


@dataclass(frozen=True)
class Month:
    """One calendar month in UTC: [start, end)."""

    year: int
    month: int

    @property
    def label(self) -> str:
        """YYYY-MM."""
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        """First instant of the month (UTC)."""
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """First instant of the next month (UTC), excluded."""
        if self.month == 12:
            return datetime(self.year + 1, 1, 1, tzinfo=UTC)
        return datetime(self.year, self.month + 1, 1, tzinfo=UTC)


def parse_month(text: str | None, now: datetime) -> Month:
    """`YYYY-MM` (None: the current month in UTC); Rejected if malformed or not started yet."""
    now = now.astimezone(UTC)
    if text is None:
        return Month(now.year, now.month)
    found = MONTH_PATTERN.match(text.strip())
    if found is None or not 1 <= int(found[2]) <= 12 or int(found[1]) < 1:
        raise Rejected(
            f"--month must be YYYY-MM (e.g. 2026-03), got {text[:32]!r}", code="malformed"
        )
    month = Month(int(found[1]), int(found[2]))
    if month.start > now:
        raise Rejected(f"month {month.label} has not started yet (UTC)", code="malformed")
    return month


@dataclass(frozen=True)
class MonthCounts:
    """What the database holds for one month (services/reports.py reads it)."""

    bought: int = 0
    purchase_failures: int = 0
    cancelled: int = 0
    replaced_by_reason: Mapping[str, int] = field(default_factory=dict)
    conversations_moved: int = 0
    numbers_billed: int = 0
    #: Of numbers_billed, those held banned at some instant of the month (dead numbers).
    banned_billed: int = 0


def cost(monthly_cost: float | None, numbers_billed: int) -> dict:
    """The month's cost: numbers billed x number_monthly_cost, or None with the reason."""
    out: dict = {
        "currency": CURRENCY,
        "monthly_cost": monthly_cost,
        "numbers_billed": numbers_billed,
        "total": None,
    }
    if monthly_cost is None:
        out["unknown_reason"] = COST_UNKNOWN
    else:
        out["total"] = round(monthly_cost * numbers_billed, 2)
    return out


def banned_held(monthly_cost: float | None, banned_billed: int) -> dict:
    """What the month's banned numbers cost: held while dead, billed like any other."""
    out: dict = {"count": banned_billed, "cost": None, "currency": CURRENCY}
    if monthly_cost is None:
        out["unknown_reason"] = COST_UNKNOWN
    else:
        out["cost"] = round(monthly_cost * banned_billed, 2)
    return out


def month_report(
    month: Month, counts: MonthCounts, monthly_cost: float | None, now: datetime
) -> dict:
    """The report's JSON shape (docs/reports.md)."""
    by_reason = dict(sorted(counts.replaced_by_reason.items(), key=lambda kv: (-kv[1], kv[0])))
    return {
        "month": month.label,
        "period": {
            "start": month.start.isoformat(),
            "end": month.end.isoformat(),
            "in_progress": month.start <= now < month.end,
        },
        "bought": counts.bought,
        "purchase_failures": counts.purchase_failures,
        "cancelled": counts.cancelled,
        "replaced": {"total": sum(by_reason.values()), "by_reason": by_reason},
        "conversations_moved": counts.conversations_moved,
        "cost": cost(monthly_cost, counts.numbers_billed),
        "banned_held": banned_held(monthly_cost, counts.banned_billed),
    }


def state_events(chip: Mapping) -> list[dict]:
    """The chip's timestamps as state changes (each column holds only the latest time)."""
    events = []
    for column, state in STATE_COLUMNS.items():
        at = chip.get(column)
        if at is None:
            continue
        event = {"at": at, "kind": "state", "state": state}
        if column == "updated_at":
            event["status"] = chip["status"]
        events.append(event)
    return events


def operation_event(op: Mapping, chip_id: str) -> dict:
    """One orchestrator_operations row as seen from chip_id (origin or destination)."""
    as_origin = str(op["chip_id"]) == chip_id if op["chip_id"] is not None else False
    other = op["telefone_destino"] if as_origin else op["telefone_origem"]
    other_id = op["chip_destino_id"] if as_origin else op["chip_id"]
    return {
        "at": op["created_at"],
        "kind": "operation",
        "operacao": op["operacao"],
        "role": "origin" if as_origin else "destination",
        "sucesso": op["sucesso"] is not False,
        "motivo": op["motivo"],
        "erro": op["erro"],
        "other_chip_id": str(other_id) if other_id is not None else None,
        "other_telefone": other,
        "metadata": _as_object(op["metadata"]),
    }


def _as_object(metadata: object) -> dict:
    """metadata as a dict; another service may have written a list or a scalar there."""
    if metadata is None:
        return {}
    return dict(metadata) if isinstance(metadata, Mapping) else {"valor": metadata}


#: Order of events at one instant, newest first: the operation explains the state beside it.
_KIND_ORDER = {"operation": 0, "state": 1}


def timeline(chip: Mapping, operations: Iterable[Mapping]) -> list[dict]:
    """Operations and state changes of one chip, newest first (ties: operations first)."""
    chip_id = str(chip["id"])
    events = state_events(chip) + [operation_event(op, chip_id) for op in operations]
    events.sort(key=lambda e: _KIND_ORDER[e["kind"]])
    events.sort(key=lambda e: e["at"], reverse=True)
    return events


def history(chip: Mapping, operations: Iterable[Mapping], *, truncated: bool = False) -> dict:
    """The history's JSON shape (docs/reports.md): the chip and its events, newest first."""
    events = [{**e, "at": e["at"].astimezone(UTC).isoformat()} for e in timeline(chip, operations)]
    return {
        "chip": {
            "id": str(chip["id"]),
            "telefone": chip["telefone"],
            "status": chip["status"],
            "trust_score": chip["trust_score"],
            "ddd": chip["ddd"],
            "instance_name": chip["instance_name"],
            "salvy_id": chip["salvy_id"],
        },
        "events": events,
        "older_operations_not_shown": truncated,
    }
