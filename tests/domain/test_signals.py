"""What an Evolution or Salvy event means, decided without any I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.domain.pool import FLAPPING, Counts, PoolConfig, Snapshot, plan_cycle
from orchestrator.domain.signals import (
    ALERT,
    BANNED,
    CONNECTED,
    DISCONNECTED,
    BadEnvelope,
    GatewaySignal,
    ProviderSignal,
    event_name,
    gateway_signal,
    is_flapping,
    provider_signal,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _conn(state: str, code: object = None, **extra: object) -> dict:
    return {
        "event": "connection.update",
        "instance": "i1",
        "data": {"state": state, "statusReason": code},
        **extra,
    }


@pytest.mark.parametrize(
    ("state", "code", "kind"),
    [
        ("open", 200, CONNECTED),
        ("close", 403, BANNED),
        ("close", 406, BANNED),
        ("refused", 403, BANNED),
        ("close", 401, ALERT),
        ("close", 402, ALERT),
        ("close", 428, DISCONNECTED),
        ("close", 515, DISCONNECTED),
        ("close", None, DISCONNECTED),
        ("refused", None, DISCONNECTED),
    ],
)
def test_connection_update_states_and_codes(state: str, code: int | None, kind: str) -> None:
    signal = gateway_signal(_conn(state, code), None, NOW)
    assert isinstance(signal, GatewaySignal)
    assert (signal.kind, signal.code, signal.instance) == (kind, code, "i1")


def test_alerts_name_their_cause() -> None:
    assert gateway_signal(_conn("close", 401), None, NOW).alert == "logged_out"
    assert gateway_signal(_conn("close", 402), None, NOW).alert == "temporary_ban"
    logout = {"event": "LOGOUT_INSTANCE", "instance": "i1", "data": {}}
    assert gateway_signal(logout, None, NOW).alert == "logged_out"


def test_status_instance_closed_reads_disconnection_reason_code() -> None:
    body = {
        "event": "status.instance",
        "instance": "i1",
        "data": {"status": "closed", "disconnectionReasonCode": 403},
    }
    assert gateway_signal(body, None, NOW).kind == BANNED
    body["data"] = {"status": "open"}
    assert isinstance(gateway_signal(body, None, NOW), str)


def test_the_path_suffix_names_the_event_only_when_the_body_does_not() -> None:
    body = _conn("close", 403)
    del body["event"]
    assert gateway_signal(body, "connection-update", NOW).event == "connection.update"
    assert isinstance(gateway_signal(_conn("close", 403), "messages-upsert", NOW), GatewaySignal)
    assert event_name("CONNECTION_UPDATE") == event_name("connection-update") == "connection.update"


def test_connecting_and_unknown_events_are_ignored_with_a_reason() -> None:
    assert (
        gateway_signal(_conn("connecting"), None, NOW) == "event connection.update with no action"
    )
    other = {"event": "messages.upsert", "instance": "i1", "data": {}}
    assert gateway_signal(other, None, NOW) == "event messages.upsert with no action"


def test_date_time_is_kept_on_the_senders_clock_even_hours_off_ours() -> None:
    # Evolution labels its server's local wall clock Z: a Sao Paulo server is 3 h behind
    at = gateway_signal(_conn("open", date_time="2026-12-01T09:00:00.000Z"), None, NOW).at
    assert at == NOW - timedelta(hours=3)
    ahead = gateway_signal(_conn("open", date_time="2026-12-01T23:00:00+00:00"), None, NOW).at
    assert ahead == NOW + timedelta(hours=11)  # never capped: only compared with its own clock
    assert gateway_signal(_conn("open"), None, NOW).at is None


def test_a_date_time_no_time_zone_explains_is_taken_as_absent() -> None:
    for far in ("2026-12-03T00:00:00Z", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00"):
        assert gateway_signal(_conn("open", date_time=far), None, NOW).at is None


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("instance", "i\x001", "NUL"),
        ("statusReason", float("inf"), "not a number"),
        ("statusReason", float("nan"), "not a number"),
    ],
)
def test_values_the_database_or_int_cannot_take_are_refused_not_crashed_on(
    field: str, value: object, words: str
) -> None:
    body = _conn("close", 403)
    if field == "instance":
        body["instance"] = value
    else:
        body["data"][field] = value
    with pytest.raises(BadEnvelope, match=words):
        gateway_signal(body, None, NOW)


def test_a_salvy_account_id_with_a_nul_is_refused() -> None:
    body = {"type": "phone-account.blocked", "data": {"phoneAccountId": "a\x00"}}
    with pytest.raises(BadEnvelope, match="NUL"):
        provider_signal(body, "m")


@pytest.mark.parametrize(
    "body",
    [
        [],
        "x",
        {"instance": "i1", "data": {}},
        {"event": "connection.update", "data": {}},
        {"event": "connection.update", "instance": "  ", "data": {}},
        {"event": "connection.update", "instance": "i1", "data": []},
        {
            "event": "connection.update",
            "instance": "i1",
            "data": {"state": "close", "statusReason": "x"},
        },
        {"event": "connection.update", "instance": "i1", "data": {}, "date_time": 5},
    ],
)
def test_a_body_that_is_not_an_envelope_is_refused(body: object) -> None:
    with pytest.raises(BadEnvelope):
        gateway_signal(body, None, NOW)


def test_salvy_events_need_a_type_and_a_phone_account() -> None:
    body = {"type": "phone-account.blocked", "timestamp": "t", "data": {"phoneAccountId": "a1"}}
    assert provider_signal(body, "msg_1") == ProviderSignal("phone-account.blocked", "a1", "msg_1")
    assert isinstance(provider_signal({**body, "type": "phone-account.created"}, "m"), str)
    for bad in ([], {"type": 1, "data": {}}, {**body, "data": {"phoneAccountId": ""}}):
        with pytest.raises(BadEnvelope):
            provider_signal(bad, "m")


def test_flapping_needs_the_threshold_and_zero_turns_it_off() -> None:
    assert is_flapping(6, 6) and not is_flapping(5, 6)
    assert not is_flapping(100, 0)


def _snap(flapping: tuple[str, ...], active: int = 10, **config: object) -> Snapshot:
    return Snapshot(
        config=PoolConfig(producao_min=active, producao_max=active + 5, **config),
        counts=Counts(active=active, ready=5, warming=10),
        now=NOW,
        flapping=flapping,
    )


def test_the_plan_replaces_flapping_chips() -> None:
    plan = plan_cycle(_snap(("a", "b")))
    assert [(r.chip_id, r.reason) for r in plan.replace] == [("a", FLAPPING), ("b", FLAPPING)]
    assert not plan.storm


def test_the_storm_brake_holds_flapping_when_most_active_chips_flap() -> None:
    plan = plan_cycle(_snap(tuple("abcdef"), active=10))
    assert plan.replace == ()
    assert plan.held_for_storm == tuple("abcdef")
    assert plan.storm
