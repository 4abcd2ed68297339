"""Outbox delivery on the real database, through a real slack-sdk WebClient to a local Slack."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa

from orchestrator import notify, outbox
from orchestrator.errors import TransientError
from orchestrator.schema import alert_state
from orchestrator.schema import outbox as outbox_table
from orchestrator.settings import Settings
from tests.support.fake_slack import FakeSlack

pytestmark = pytest.mark.db

TOKEN = "xoxb-1111-2222-NeverLogThisToken"
LogCapture = pytest.LogCaptureFixture
CHANNELS = {"alertas": "#alertas-test", "operacoes": "#operacoes-test"}


def settings_for(api_url: str | None, token: str | None = TOKEN) -> Settings:
    return Settings(
        database_url=None,
        redis_url=None,
        broker_url=None,
        slack_bot_token=token,
        slack_channel_alertas=CHANNELS["alertas"],
        slack_channel_operacoes=CHANNELS["operacoes"],
        slack_api_url=api_url,
    )


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    server = FakeSlack(token=TOKEN)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sender(slack: FakeSlack) -> notify.SlackSender:
    built = notify.build_sender(settings_for(slack.base_url))
    assert isinstance(built, notify.SlackSender)
    return built


def queue(engine: sa.Engine, *messages: tuple[str, str]) -> list[int]:
    """Each message in its own committed transaction, as separate state changes would."""
    ids = []
    for canal, texto in messages:
        with engine.begin() as conn:
            ids.append(outbox.enqueue(conn, canal, texto))
    return ids


def rows(engine: sa.Engine) -> list[sa.Row]:
    with engine.connect() as conn:
        return conn.execute(sa.select(outbox_table).order_by(outbox_table.c.id)).all()


def test_queued_messages_are_delivered_once_in_order_to_their_channels(
    clean_db: sa.Engine, slack: FakeSlack, sender: notify.SlackSender
) -> None:
    queue(clean_db, ("alertas", "*pool crítico*"), ("operacoes", "chip trocado"), ("alertas", "3"))

    result = notify.deliver_pending(clean_db, sender)

    assert result == {"delivered": 3, "fallback": 0, "pending": 0}
    assert slack.messages == [
        ("#alertas-test", "*pool crítico*"),
        ("#operacoes-test", "chip trocado"),
        ("#alertas-test", "3"),
    ]
    assert all(r.delivered_via == "slack" and r.attempts == 1 for r in rows(clean_db))
    assert notify.deliver_pending(clean_db, sender)["delivered"] == 0
    assert len(slack.messages) == 3


def test_slack_down_keeps_five_state_changes_pending_then_delivers_each_exactly_once(
    clean_db: sa.Engine, slack: FakeSlack, sender: notify.SlackSender
) -> None:
    slack.down = True
    queue(clean_db, *[("operacoes", f"mudança {n}") for n in range(5)])

    with pytest.raises(TransientError, match="503"):
        notify.deliver_pending(clean_db, sender)

    assert notify.pending_count(clean_db) == 5
    assert slack.messages == []
    first = rows(clean_db)[0]
    assert first.attempts == 1 and "503" in first.last_error and first.delivered_at is None

    slack.down = False
    assert notify.deliver_pending(clean_db, sender) == {"delivered": 5, "fallback": 0, "pending": 0}
    assert notify.deliver_pending(clean_db, sender) == {"delivered": 0, "fallback": 0, "pending": 0}
    assert slack.texts() == [f"mudança {n}" for n in range(5)]


def test_messages_wait_while_slack_refuses_connections_and_go_out_once_it_listens_again(
    clean_db: sa.Engine, slack: FakeSlack, sender: notify.SlackSender
) -> None:
    queue(clean_db, ("alertas", "a"), ("alertas", "b"))
    slack.stop()

    with pytest.raises(TransientError, match="unreachable"):
        notify.deliver_pending(clean_db, sender)
    assert notify.pending_count(clean_db) == 2

    slack.start()
    assert notify.deliver_pending(clean_db, sender)["delivered"] == 2
    assert slack.texts() == ["a", "b"]


def test_two_concurrent_deliverers_post_each_message_exactly_once(
    clean_db: sa.Engine, slack: FakeSlack
) -> None:
    texts = [f"msg {n}" for n in range(20)]
    queue(clean_db, *[("operacoes", t) for t in texts])
    slack.delay = 0.02  # both deliverers are mid-send at the same time
    senders = [notify.build_sender(settings_for(slack.base_url)) for _ in range(2)]

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda s: notify.deliver_pending(clean_db, s), senders))

    assert sorted(slack.texts()) == sorted(texts)
    assert sum(r["delivered"] for r in results) == 20
    assert all(r["delivered"] > 0 for r in results), "both deliverers took part"
    assert all(r.attempts == 1 for r in rows(clean_db))


def test_a_rate_limited_post_is_retried_after_retry_after_and_delivered_once(
    clean_db: sa.Engine, slack: FakeSlack, sender: notify.SlackSender
) -> None:
    queue(clean_db, ("alertas", "sem chip ready"))
    slack.rate_limit_next = 1

    assert notify.deliver_pending(clean_db, sender)["delivered"] == 1

    assert slack.calls == 2
    assert slack.texts() == ["sem chip ready"]


def test_a_rate_limit_longer_than_the_sdk_retries_is_a_transient_error_with_retry_after(
    clean_db: sa.Engine, slack: FakeSlack, sender: notify.SlackSender
) -> None:
    queue(clean_db, ("alertas", "x"))
    slack.rate_limit_next = 3

    with pytest.raises(TransientError) as raised:
        notify.deliver_pending(clean_db, sender)

    assert raised.value.retry_after == 1
    assert slack.calls == 3 and notify.pending_count(clean_db) == 1


def test_a_message_slack_refuses_is_logged_not_retried_and_does_not_block_the_queue(
    clean_db: sa.Engine,
    slack: FakeSlack,
    sender: notify.SlackSender,
    caplog: LogCapture,
) -> None:
    queue(clean_db, ("alertas", "chip banido 5511"), ("alertas", "depois"))
    slack.fail_next_with = "channel_not_found"

    result = notify.deliver_pending(clean_db, sender)

    assert result == {"delivered": 1, "fallback": 1, "pending": 0}
    assert slack.calls == 2, "the refused message was tried once, not retried"
    refused = [
        r for r in caplog.records if r.levelno == logging.ERROR and r.name == notify.__name__
    ]
    assert len(refused) == 1
    assert "channel_not_found" in refused[0].getMessage()
    assert "chip banido 5511" in refused[0].getMessage()
    first, second = rows(clean_db)
    assert (first.delivered_via, second.delivered_via) == ("log", "slack")
    assert "channel_not_found" in first.last_error
    assert slack.texts() == ["depois"]


def test_a_rolled_back_enqueue_delivers_nothing(
    clean_db: sa.Engine, slack: FakeSlack, sender: notify.SlackSender
) -> None:
    with clean_db.connect() as conn:
        transaction = conn.begin()
        outbox.enqueue(conn, "alertas", "troca que falhou")
        transaction.rollback()

    assert notify.deliver_pending(clean_db, sender) == {"delivered": 0, "fallback": 0, "pending": 0}
    assert slack.calls == 0


def test_without_a_token_messages_go_to_the_log_and_are_marked_delivered_via_log(
    clean_db: sa.Engine, caplog: LogCapture
) -> None:
    caplog.set_level(logging.INFO, logger=notify.__name__)
    sender = notify.build_sender(settings_for(None, token=None))
    assert isinstance(sender, notify.LogSender)
    queue(clean_db, ("alertas", "pool crítico"), ("operacoes", "chip promovido"))

    assert notify.deliver_pending(clean_db, sender) == {"delivered": 2, "fallback": 0, "pending": 0}

    logged = {r.getMessage(): r.levelno for r in caplog.records if r.name == notify.__name__}
    assert logged == {"[alertas] pool crítico": logging.WARNING, "[operacoes] chip promovido": 20}
    assert [r.delivered_via for r in rows(clean_db)] == ["log", "log"]


def test_the_token_never_appears_in_logs_exceptions_repr_or_the_outbox(
    clean_db: sa.Engine,
    slack: FakeSlack,
    sender: notify.SlackSender,
    caplog: LogCapture,
) -> None:
    caplog.set_level(logging.DEBUG)
    queue(clean_db, *[("alertas", f"m{n}") for n in range(3)])
    texts: list[str] = [repr(sender), repr(settings_for(slack.base_url))]

    slack.down = True
    with pytest.raises(TransientError) as down:
        notify.deliver_pending(clean_db, sender)
    slack.down, slack.fail_next_with = False, "invalid_auth"
    notify.deliver_pending(clean_db, sender)
    slack.stop()
    queue(clean_db, ("alertas", "m3"))
    with pytest.raises(TransientError) as unreachable:
        notify.deliver_pending(clean_db, sender)

    for error in (down.value, unreachable.value):
        texts += [str(error), repr(error), str(error.__cause__), str(error.__context__)]
    texts += [caplog.text, *(str(r.last_error) for r in rows(clean_db))]
    assert "invalid_auth" in caplog.text, "the checks above did run"
    assert not [t for t in texts if TOKEN in t or "NeverLogThisToken" in t]


def test_pending_count_and_oldest_age_follow_the_queue(
    clean_db: sa.Engine, slack: FakeSlack, sender: notify.SlackSender
) -> None:
    assert notify.pending_count(clean_db) == 0
    assert notify.oldest_pending_age_seconds(clean_db) is None
    (first,) = queue(clean_db, ("alertas", "velha"))
    with clean_db.begin() as conn:
        conn.execute(
            sa.update(outbox_table)
            .where(outbox_table.c.id == first)
            .values(created_at=sa.func.now() - timedelta(minutes=5))
        )
    queue(clean_db, ("alertas", "nova"))

    assert notify.pending_count(clean_db) == 2
    assert 299 < notify.oldest_pending_age_seconds(clean_db) < 360

    notify.deliver_pending(clean_db, sender, limit=1)
    assert notify.pending_count(clean_db) == 1
    assert notify.oldest_pending_age_seconds(clean_db) < 60


def alert(engine: sa.Engine, key: str, cooldown: timedelta | None) -> bool:
    with engine.begin() as conn:
        return outbox.alert_once(conn, key, f"alerta {key}", cooldown=cooldown)


def age_alert(engine: sa.Engine, key: str, by: timedelta) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(alert_state)
            .where(alert_state.c.key == key)
            .values(last_sent_at=alert_state.c.last_sent_at - by)
        )


def test_the_same_alert_twice_within_its_cooldown_queues_one_message(clean_db: sa.Engine) -> None:
    cooldown = timedelta(minutes=30)

    assert alert(clean_db, "pool:critico", cooldown) is True
    assert alert(clean_db, "pool:critico", cooldown) is False

    assert notify.pending_count(clean_db) == 1


def test_an_alert_older_than_its_cooldown_is_queued_again(clean_db: sa.Engine) -> None:
    cooldown = timedelta(minutes=30)
    alert(clean_db, "pool:sem_ready", cooldown)

    age_alert(clean_db, "pool:sem_ready", timedelta(minutes=31))

    assert alert(clean_db, "pool:sem_ready", cooldown) is True
    assert alert(clean_db, "pool:sem_ready", cooldown) is False
    assert notify.pending_count(clean_db) == 2


def test_an_alert_without_cooldown_is_only_ever_queued_once(clean_db: sa.Engine) -> None:
    assert alert(clean_db, "chip:42:low_trust", None) is True
    age_alert(clean_db, "chip:42:low_trust", timedelta(days=365))

    assert alert(clean_db, "chip:42:low_trust", None) is False
    assert notify.pending_count(clean_db) == 1
