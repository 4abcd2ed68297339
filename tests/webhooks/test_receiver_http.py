"""The receiver as Evolution API and Salvy see it: a real process answering real HTTP requests.

No worker here: what the receiver records is read from the database, what it enqueues from the
broker. Bad input is answered with a clear error and changes nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import requests
import sqlalchemy as sa

from orchestrator.dev.receiver_process import ReceiverProcess
from orchestrator.store.schema import alert_state, chip_disconnect_events
from orchestrator.store.schema import outbox as notification_outbox
from tests.factories import chip_row, make_chip
from tests.support.private_stack import broker_url_for, queue_depths
from tests.support.webhooks import (
    SECRET,
    TOKEN,
    close,
    envelope,
    opened,
    post_evolution,
    post_salvy,
)


def _instance() -> str:
    return f"inst-{datetime.now(UTC).timestamp():.6f}"


def test_healthz_answers_without_a_token(receiver: ReceiverProcess) -> None:
    answer = requests.get(f"{receiver.url}/healthz", timeout=5)
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})


def test_a_wrong_or_missing_token_is_refused_and_changes_nothing(
    clean_db: sa.Engine, receiver: ReceiverProcess, redis_url: str
) -> None:
    name = _instance()
    chip = make_chip(clean_db, "active", instance_name=name)
    broker = broker_url_for(redis_url)
    before = queue_depths(broker, ["orchestrator"])
    for token in (None, "wrong", TOKEN + "x", TOKEN[:-1]):
        answer = post_evolution(receiver.url, close(name, 403), token=token)
        assert answer.status_code == 401
        assert answer.json()["status"] == "unauthorized"
    query = requests.post(
        f"{receiver.url}/webhooks/evolution?token=nope", json=close(name, 403), timeout=5
    )
    assert query.status_code == 401
    row = chip_row(clean_db, chip)
    assert (row.evolution_connected, row.status) == (True, "active")
    assert queue_depths(broker, ["orchestrator"]) == before  # no replace_chip sent


def test_a_plain_close_disconnects_and_a_newer_open_reconnects(
    clean_db: sa.Engine, receiver: ReceiverProcess
) -> None:
    name = _instance()
    chip = make_chip(clean_db, "active", instance_name=name)
    answer = post_evolution(receiver.url, close(name, 428))
    assert answer.status_code == 200
    assert answer.json() | {"chip_id": chip} == {
        "status": "accepted",
        "chip_id": chip,
        "signal": "disconnected",
        "replace": None,
    }
    row = chip_row(clean_db, chip)
    assert row.evolution_connected is False and row.evolution_disconnected_at is not None
    assert row.status == "active"  # the grace period applies: the cycle decides later
    assert post_evolution(receiver.url, opened(name)).json()["signal"] == "connected"
    assert chip_row(clean_db, chip).evolution_connected is True


def test_an_old_open_delivered_after_a_newer_close_changes_nothing(
    clean_db: sa.Engine, receiver: ReceiverProcess
) -> None:
    # Given a close at t0 applied
    name, t0 = _instance(), datetime.now(UTC)
    chip = make_chip(clean_db, "active", instance_name=name)
    post_evolution(receiver.url, close(name, 428, at=t0))
    # When an open from before it arrives late
    late = post_evolution(receiver.url, opened(name, at=t0 - timedelta(seconds=5)))
    # Then it is ignored as stale and the chip stays disconnected
    assert late.json() == {"status": "ignored", "reason": "stale", "chip_id": chip}
    assert chip_row(clean_db, chip).evolution_connected is False
    # And an open after the close reconnects it
    post_evolution(receiver.url, opened(name, at=t0 + timedelta(seconds=5)))
    assert chip_row(clean_db, chip).evolution_connected is True


def test_webhook_by_events_path_and_token_in_the_query_are_understood(
    clean_db: sa.Engine, receiver: ReceiverProcess
) -> None:
    name = _instance()
    chip = make_chip(clean_db, "active", instance_name=name)
    body = close(name, 500)
    del body["event"]  # the path names it
    # Evolution appends /<event> to the configured URL, query string included
    answer = requests.post(
        f"{receiver.url}/webhooks/evolution?token={TOKEN}/connection-update", json=body, timeout=5
    )
    assert answer.json()["status"] == "accepted"
    assert chip_row(clean_db, chip).evolution_connected is False
    answer = requests.post(
        f"{receiver.url}/webhooks/evolution/connection-update?token={TOKEN}",
        json=opened(name),
        timeout=5,
    )
    assert answer.json()["signal"] == "connected"


def test_malformed_json_is_400_and_a_wrong_shape_is_422_with_a_clear_error(
    clean_db: sa.Engine, receiver: ReceiverProcess
) -> None:
    name = _instance()
    chip = make_chip(clean_db, "active", instance_name=name)
    bad = post_evolution(receiver.url, b'{"event": "connection.update", "instance": ')
    assert bad.status_code == 400
    assert bad.json()["status"] == "rejected" and "malformed JSON" in bad.json()["error"]
    for body, words in (
        ([1, 2], "JSON object"),
        ({"event": "connection.update", "data": {}}, "instance"),
        ({"event": "connection.update", "instance": name, "data": "x"}, "data"),
        (envelope("connection.update", name, {"state": "close", "statusReason": "abc"}), "number"),
        ({**close(name, 403), "date_time": "yesterday"}, "ISO 8601"),
    ):
        answer = post_evolution(receiver.url, body)
        assert answer.status_code == 422, body
        assert words in answer.json()["error"]
    row = chip_row(clean_db, chip)
    assert (row.evolution_connected, row.status) == (True, "active")


def test_unknown_instance_and_unknown_events_are_ignored_with_2xx(
    clean_db: sa.Engine, receiver: ReceiverProcess
) -> None:
    name = _instance()
    chip = make_chip(clean_db, "active", instance_name=name)
    unknown = post_evolution(receiver.url, close("nobody-" + name, 403))
    assert (unknown.status_code, unknown.json()["status"]) == (200, "ignored")
    assert unknown.json()["reason"] == "unknown instance"
    for body in (
        envelope("messages.upsert", name, {"key": {}}),
        envelope("connection.update", name, {"state": "connecting"}),
        envelope("status.instance", name, {"status": "open"}),
    ):
        answer = post_evolution(receiver.url, body)
        assert (answer.status_code, answer.json()["status"]) == (200, "ignored")
    assert chip_row(clean_db, chip).evolution_connected is True


def test_an_oversized_body_is_refused_with_a_code_its_sender_does_not_retry(
    clean_db: sa.Engine, receiver: ReceiverProcess
) -> None:
    # Evolution retries a 413 ten times and never a 422; Svix retries any non-2xx alike.
    name = _instance()
    chip = make_chip(clean_db, "active", instance_name=name)
    huge = close(name, 403) | {"padding": "x" * (70 * 1024)}
    answer = post_evolution(receiver.url, huge)
    assert (answer.status_code, answer.json()["status"]) == (422, "too_large")

    def chunks():  # no Content-Length: refused while streaming
        yield json.dumps(close(name, 403))[:-1].encode()
        for _ in range(80):
            yield b' , "p": "' + b"x" * 1024 + b'"'

    streamed = requests.post(
        f"{receiver.url}/webhooks/evolution",
        data=chunks(),
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert (streamed.status_code, streamed.json()["status"]) == (422, "too_large")
    salvy = requests.post(f"{receiver.url}/webhooks/salvy", data=b"x" * (70 * 1024), timeout=10)
    assert (salvy.status_code, salvy.json()["status"]) == (413, "too_large")
    assert chip_row(clean_db, chip).evolution_connected is True


def test_logout_and_temporary_ban_disconnect_and_alert_ops_once(
    clean_db: sa.Engine, receiver: ReceiverProcess
) -> None:
    name = _instance()
    chip = make_chip(clean_db, "active", instance_name=name)
    for _ in range(3):
        assert post_evolution(receiver.url, close(name, 401)).json()["signal"] == "alert"
        logout = envelope("logout.instance", name, {"instance": name})
        assert post_evolution(receiver.url, logout).json()["signal"] == "alert"
    for _ in range(2):
        status = envelope(
            "status.instance", name, {"status": "closed", "disconnectionReasonCode": 402}
        )
        assert post_evolution(receiver.url, status).json()["signal"] == "alert"
    with clean_db.connect() as conn:
        keys = sorted(conn.execute(sa.select(alert_state.c.key)).scalars())
        texts = list(conn.execute(sa.select(notification_outbox.c.texto)).scalars())
    assert keys == [f"gateway:logged_out:{chip}", f"gateway:temporary_ban:{chip}"]
    assert len(texts) == 2 and any("logout" in t for t in texts)
    assert chip_row(clean_db, chip).evolution_connected is False


def test_other_services_plain_updates_are_counted_as_drops(
    clean_db: sa.Engine, receiver: ReceiverProcess
) -> None:
    chip = make_chip(clean_db, "active")
    with clean_db.begin() as conn:  # another service, flipping the flag with plain SQL
        for connected in (False, True, False, False, True, False):
            conn.execute(
                sa.text("UPDATE chips SET evolution_connected = :c WHERE id = :id"),
                {"c": connected, "id": chip},
            )
    with clean_db.connect() as conn:
        drops = conn.execute(
            sa.select(sa.func.count()).where(chip_disconnect_events.c.chip_id == chip)
        ).scalar_one()
    assert drops == 3


def test_salvy_deliveries_need_a_fresh_valid_svix_signature(
    receiver: ReceiverProcess, redis_url: str
) -> None:
    broker = broker_url_for(redis_url)

    def queued() -> int:
        return queue_depths(broker, ["provisioning"])["provisioning"]

    before = queued()
    ok = post_salvy(receiver.url, "phone-account.unblocked", "acc-1")
    assert (ok.status_code, ok.json()["status"]) == (200, "accepted")
    assert queued() == before + 1  # orchestrator.salvy_event, for the I/O worker
    stale = post_salvy(receiver.url, "phone-account.blocked", "acc-1", age=timedelta(minutes=10))
    assert stale.status_code == 401 and "Svix" in stale.json()["error"]
    forged = post_salvy(receiver.url, "phone-account.blocked", "acc-1", secret="whsec_" + "A" * 32)
    assert forged.status_code == 401
    unknown = post_salvy(receiver.url, "phone-account.created", "acc-1")
    assert (unknown.status_code, unknown.json()["status"]) == (200, "ignored")
    assert queued() == before + 1  # refused and ignored deliveries enqueue nothing
    assert SECRET not in receiver.log()


def test_metrics_count_events_by_source_type_and_outcome_and_no_token_is_logged(
    receiver: ReceiverProcess,
) -> None:
    post_evolution(receiver.url, close("nobody-at-all", 403))
    post_evolution(receiver.url, close("nobody-at-all", 403), token="wrong")
    requests.post(f"{receiver.url}/webhooks/evolution?token={TOKEN}", json=[1], timeout=5)
    assert requests.get(f"{receiver.url}/metrics", timeout=5).status_code == 401
    page = requests.get(
        f"{receiver.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    ).text
    assert (
        'chip_orchestrator_webhook_events_total{outcome="unknown_instance",source="evolution",'
        'type="connection.update"}'
    ) in page
    assert 'outcome="unauthorized",source="evolution",type="none"' in page
    assert 'outcome="rejected",source="evolution"' in page
    assert TOKEN not in receiver.log()
