"""Every answer of the receiver fits how its senders retry. Evolution API retries a 5xx or a
timeout (10 tries over about 20 minutes) and never a 400/401/403/404/422: a body the receiver can
never accept must not be answered 5xx, nor a fault that may pass 4xx. Real HTTP, real receiver."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import requests
import sqlalchemy as sa

from orchestrator.dev.receiver_process import ReceiverProcess
from tests.factories import chip_row, make_chip
from tests.support.webhooks import TOKEN, close, envelope, post_evolution

#: Codes Evolution gives up on at once (its webhook retry's non-retryable list).
EVOLUTION_FINAL = {400, 401, 403, 404, 422}


def _active(engine: sa.Engine) -> tuple[str, str]:
    name = f"ans-{datetime.now(UTC).timestamp():.6f}"
    return name, make_chip(engine, "active", instance_name=name)


def test_values_postgres_or_python_cannot_take_are_refused_for_good_not_retried(
    clean_db: sa.Engine, receiver: ReceiverProcess
) -> None:
    name, chip = _active(clean_db)
    nul = close(name, 403) | {"instance": name + "\x00"}
    infinite = json.dumps(close(name, 403)).replace('"statusReason": 403', '"statusReason": 1e999')
    deep = b"[" * 30_000 + b"]" * 30_000  # under the body limit
    for body, code, words in (
        (nul, 422, "NUL"),  # PostgreSQL text cannot hold it: was a 503, retried 10 times
        (infinite, 422, "not a number"),  # int(inf): was a 500
        (deep, 400, "nested too deeply"),  # json.loads' RecursionError: was a 500
    ):
        answer = post_evolution(receiver.url, body)
        assert (answer.status_code, answer.json()["status"]) == (code, "rejected"), words
        assert words in answer.json()["error"]
        assert answer.status_code in EVOLUTION_FINAL
    row = chip_row(clean_db, chip)
    assert (row.status, row.evolution_connected) == ("active", True)


def test_unknown_paths_and_methods_are_answered_in_json_and_never_retried(
    receiver: ReceiverProcess,
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    missing = requests.post(f"{receiver.url}/webhooks/nowhere", json={}, headers=headers, timeout=5)
    assert (missing.status_code, missing.json()) == (404, {"status": "not_found"})
    wrong = requests.get(f"{receiver.url}/webhooks/evolution", headers=headers, timeout=5)
    assert (wrong.status_code, wrong.json()) == (405, {"status": "method_not_allowed"})


def test_every_refusal_evolution_can_meet_is_one_it_does_not_retry(
    clean_db: sa.Engine, receiver: ReceiverProcess
) -> None:
    name, chip = _active(clean_db)
    refusals = [
        post_evolution(receiver.url, close(name, 403), token="wrong"),
        post_evolution(receiver.url, b"{not json"),
        post_evolution(receiver.url, envelope("connection.update", "", {})),
        post_evolution(receiver.url, close(name, 403) | {"padding": "x" * (70 * 1024)}),
        post_evolution(receiver.url, close(name, 403), path="-typo"),
    ]
    assert [r.status_code for r in refusals] == [401, 400, 422, 422, 404]
    assert {r.status_code for r in refusals} <= EVOLUTION_FINAL
    assert chip_row(clean_db, chip).status == "active"
