"""The receiver's auth as Evolution API sends it, over real HTTP: a base64 WEBHOOK_TOKEN in the
query string (percent-encoded, also before Evolution's /<event> suffix), and Evolution's own
`Authorization: Bearer <HS256 JWT>` when EVOLUTION_JWT_KEY is set (its `jwt_key`)."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote

import jwt
import pytest
import requests
import sqlalchemy as sa

from orchestrator.dev.receiver_process import ReceiverProcess, running_receiver
from tests.factories import chip_row, make_chip
from tests.support.private_stack import broker_url_for, queue_depths
from tests.support.webhooks import SECRET, close, opened, post_evolution
from tests.worker.conftest import worker_env

#: A base64 token with '+', '/' and '=' in it (what `openssl rand -base64 33` may print).
B64_TOKEN = "r+/" + base64.b64encode(os.urandom(31)).decode()[:-1] + "="
#: Evolution's `jwt_key` for this module's receiver.
JWT_KEY = base64.b64encode(os.urandom(32)).decode()


def _jwt(key: str = JWT_KEY, *, age: int = 0, **claims: object) -> str:
    """What Evolution sends: {iat, exp: iat + 600, app: evolution, action: webhook}, HS256."""
    now = int(time.time()) - age
    payload = {"iat": now, "exp": now + 600, "app": "evolution", "action": "webhook"}
    payload.update(claims)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm="HS256")


@pytest.fixture(scope="module")
def b64_receiver(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReceiverProcess]:
    """A receiver whose WEBHOOK_TOKEN needs percent-encoding, with EVOLUTION_JWT_KEY set."""
    env = worker_env(
        database_url,
        redis_url,
        WEBHOOK_TOKEN=B64_TOKEN,
        SALVY_WEBHOOK_SECRET=SECRET,
        EVOLUTION_JWT_KEY=JWT_KEY,
    )
    log = tmp_path_factory.mktemp("receiver") / "receiver.log"
    with running_receiver(env, log) as proc:
        yield proc


def _active(engine: sa.Engine) -> tuple[str, str]:
    name = f"auth-{datetime.now(UTC).timestamp():.6f}"
    return name, make_chip(engine, "active", instance_name=name)


def test_a_base64_token_authenticates_percent_encoded_in_the_query(
    clean_db: sa.Engine, b64_receiver: ReceiverProcess
) -> None:
    name, chip = _active(clean_db)
    encoded = quote(B64_TOKEN, safe="")
    url = f"{b64_receiver.url}/webhooks/evolution"
    answer = requests.post(f"{url}?token={encoded}", json=close(name, 428), timeout=10)
    assert (answer.status_code, answer.json()["status"]) == (200, "accepted")
    assert chip_row(clean_db, chip).evolution_connected is False
    # Evolution's "webhook by events" appends /<event> after the query string
    body = opened(name)
    del body["event"]
    answer = requests.post(f"{url}?token={encoded}/connection-update", json=body, timeout=10)
    assert (answer.status_code, answer.json()["signal"]) == (200, "connected")
    assert chip_row(clean_db, chip).evolution_connected is True


def test_a_base64_token_sent_raw_in_the_query_is_refused_and_changes_nothing(
    clean_db: sa.Engine, b64_receiver: ReceiverProcess
) -> None:
    # Its '/' starts Evolution's suffix: only the encoded form can carry it
    name, chip = _active(clean_db)
    url = f"{b64_receiver.url}/webhooks/evolution?token={B64_TOKEN}"
    answer = requests.post(url, json=close(name, 403), timeout=10)
    assert (answer.status_code, answer.json()["status"]) == (401, "unauthorized")
    assert chip_row(clean_db, chip).status == "active"


def test_the_receiver_warns_at_start_how_to_encode_the_token_and_never_prints_it(
    b64_receiver: ReceiverProcess,
) -> None:
    log = b64_receiver.log()
    (line,) = [x for x in log.splitlines() if "percent-encoded" in x]
    assert "WEBHOOK_TOKEN" in line and "'+' as %2B" in line and "'/' as %2F" in line
    assert "urllib.parse.quote" in line
    assert B64_TOKEN not in log and quote(B64_TOKEN, safe="") not in log
    assert JWT_KEY not in log


def test_evolutions_signed_jwt_is_accepted_on_both_evolution_routes(
    clean_db: sa.Engine, b64_receiver: ReceiverProcess
) -> None:
    name, chip = _active(clean_db)
    answer = post_evolution(b64_receiver.url, close(name, 428), token=_jwt())
    assert (answer.status_code, answer.json()["status"]) == (200, "accepted")
    path = "/connection-update"
    answer = post_evolution(b64_receiver.url, opened(name), token=_jwt(), path=path)
    assert (answer.status_code, answer.json()["signal"]) == (200, "connected")
    assert chip_row(clean_db, chip).evolution_connected is True


@pytest.mark.parametrize(
    ("why", "token"),
    [
        ("expired (Evolution's retry 11 minutes later)", _jwt(age=660)),
        ("signed with another key", _jwt(base64.b64encode(os.urandom(32)).decode())),
        ("no exp", _jwt(exp=None)),
        ("no iat", _jwt(iat=None)),
        ("another app", _jwt(app="n8n")),
        ("another action", _jwt(action="login")),
        ("alg none", jwt.encode({"app": "evolution", "action": "webhook"}, None, algorithm="none")),
        ("HS512", jwt.encode({"iat": 1, "exp": 2**40}, JWT_KEY, algorithm="HS512")),
        ("not a JWT", "a.b.c"),
    ],
)
def test_a_jwt_that_is_expired_wrongly_signed_or_not_evolutions_is_refused(
    clean_db: sa.Engine, b64_receiver: ReceiverProcess, redis_url: str, why: str, token: str
) -> None:
    name, chip = _active(clean_db)
    broker = broker_url_for(redis_url)
    before = queue_depths(broker, ["orchestrator"])
    answer = post_evolution(b64_receiver.url, close(name, 403), token=token)
    assert (answer.status_code, answer.json()["status"]) == (401, "unauthorized"), why
    row = chip_row(clean_db, chip)
    assert (row.status, row.evolution_connected) == ("active", True)
    assert queue_depths(broker, ["orchestrator"]) == before


def test_a_jwt_opens_neither_salvy_nor_metrics(b64_receiver: ReceiverProcess) -> None:
    headers = {"Authorization": f"Bearer {_jwt()}"}
    salvy = requests.post(
        f"{b64_receiver.url}/webhooks/salvy", json={}, headers=headers, timeout=10
    )
    assert (salvy.status_code, salvy.json()["status"]) == (401, "unauthorized")
    metrics = requests.get(f"{b64_receiver.url}/metrics", headers=headers, timeout=10)
    assert metrics.status_code == 401


def test_without_evolution_jwt_key_no_jwt_is_accepted(
    clean_db: sa.Engine, receiver: ReceiverProcess
) -> None:
    # The default receiver has no EVOLUTION_JWT_KEY: a JWT signed with any key is refused
    name, chip = _active(clean_db)
    for key in (JWT_KEY, "x" * 32):
        answer = post_evolution(receiver.url, close(name, 403), token=_jwt(key))
        assert answer.status_code == 401
    assert chip_row(clean_db, chip).status == "active"
    assert "percent-encoded" not in receiver.log()  # its token is URL-safe: no warning
