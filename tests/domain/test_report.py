"""The report's month, cost and billing shape, and a history's order: pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from orchestrator.domain.report import (
    COST_UNKNOWN,
    Month,
    MonthCounts,
    cost,
    history,
    month_report,
    parse_month,
    timeline,
)
from orchestrator.errors import Rejected

NOW = datetime(2026, 11, 26, 0, 30, tzinfo=UTC)


def test_no_month_means_the_current_month_in_utc() -> None:
    # Given 21:30 on 30 November in Sao Paulo, already 1 December in UTC
    late = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
    # When no month is given, Then the month is UTC's
    assert parse_month(None, late).label == "2026-12"


def test_a_month_spans_from_its_first_instant_to_the_next_months_first_instant() -> None:
    december = parse_month("2025-12", NOW)
    assert december.start == datetime(2025, 12, 1, tzinfo=UTC)
    assert december.end == datetime(2026, 1, 1, tzinfo=UTC)
    assert Month(2024, 2).end - Month(2024, 2).start == timedelta(days=29)


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "26-01", "2026/01", "2026-1", "", "x" * 90])
def test_a_malformed_month_is_rejected_with_the_expected_format(text: str) -> None:
    with pytest.raises(Rejected) as error:
        parse_month(text, NOW)
    assert "YYYY-MM" in error.value.reason
    assert "\n" not in error.value.reason
    assert len(error.value.reason) < 120


def test_a_month_that_has_not_started_is_rejected() -> None:
    with pytest.raises(Rejected, match="has not started"):
        parse_month("2026-12", NOW)


def test_the_cost_is_numbers_billed_times_the_monthly_cost() -> None:
    assert cost(49.9, 3) == {
        "currency": "BRL",
        "monthly_cost": 49.9,
        "numbers_billed": 3,
        "total": 149.7,
    }


def test_an_unknown_monthly_cost_gives_no_total_and_says_why() -> None:
    unknown = cost(None, 7)
    assert unknown["total"] is None
    assert unknown["numbers_billed"] == 7
    assert unknown["unknown_reason"] == COST_UNKNOWN


def test_the_report_totals_replacements_and_orders_reasons_by_count() -> None:
    counts = MonthCounts(
        bought=4, cancelled=2, replaced_by_reason={"low_trust": 1, "banned": 5, "flapping": 1}
    )
    data = month_report(Month(2026, 10), counts, None, NOW)
    assert data["replaced"] == {
        "total": 7,
        "by_reason": {"banned": 5, "flapping": 1, "low_trust": 1},
    }
    assert list(data["replaced"]["by_reason"]) == ["banned", "flapping", "low_trust"]
    assert data["period"]["in_progress"] is False
    assert month_report(Month(2026, 11), counts, None, NOW)["period"]["in_progress"] is True


def _chip(**values: object) -> dict:
    base = dict.fromkeys(
        (
            "warming_started_at",
            "ready_at",
            "promoted_to_active_at",
            "degraded_at",
            "evolution_disconnected_at",
        ),
    )
    return {
        "id": "c1",
        "telefone": "+5511912345678",
        "status": "degraded",
        "trust_score": 40.0,
        "ddd": 11,
        "instance_name": None,
        "salvy_id": None,
        "created_at": NOW - timedelta(days=30),
        "updated_at": NOW - timedelta(hours=1),
        **base,
        **values,
    }


def _op(at: datetime, operacao: str, origin: str | None, target: str | None = None) -> dict:
    return {
        "created_at": at,
        "operacao": operacao,
        "chip_id": origin,
        "chip_destino_id": target,
        "motivo": "m",
        "sucesso": True,
        "erro": None,
        "metadata": {},
        "telefone_origem": None,
        "telefone_destino": None,
    }


def test_a_timeline_is_newest_first_with_the_operation_before_the_state_it_caused() -> None:
    # Given a chip promoted and then replaced in one transaction (same instant for both)
    swap = NOW - timedelta(hours=2)
    chip = _chip(ready_at=NOW - timedelta(days=9), degraded_at=swap)
    ops = [_op(swap, "auto_replace", "c1", "c2"), _op(NOW - timedelta(days=9), "x", None, "c1")]
    # When its timeline is built
    events = timeline(chip, ops)
    # Then newest first, the operation ahead of the state change it caused
    assert [e["at"] for e in events] == sorted((e["at"] for e in events), reverse=True)
    assert [(e["kind"], e.get("operacao", e.get("state"))) for e in events[:3]] == [
        ("state", "last_update"),
        ("operation", "auto_replace"),
        ("state", "degraded"),
    ]
    assert events[1]["role"] == "origin"
    assert next(e for e in events if e.get("operacao") == "x")["role"] == "destination"


def test_a_history_names_the_chip_and_says_when_older_operations_were_left_out() -> None:
    data = history(_chip(), [], truncated=True)
    assert data["chip"]["status"] == "degraded"
    assert data["older_operations_not_shown"] is True
    assert data["events"][0]["at"] == (NOW - timedelta(hours=1)).isoformat()


def test_a_history_gives_every_time_in_utc_whatever_the_sessions_time_zone() -> None:
    sao_paulo = timezone(timedelta(hours=-3))
    data = history(_chip(updated_at=datetime(2026, 11, 25, 21, 30, tzinfo=sao_paulo)), [])
    assert data["events"][0]["at"] == "2026-11-26T00:30:00+00:00"
