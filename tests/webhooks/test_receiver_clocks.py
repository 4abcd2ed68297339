"""Gateway clocks as Evolution API really stamps them: `date_time` is its server's local wall clock
labelled Z (3 h behind UTC on a Sao Paulo server), or absent. The real receiver over HTTP; what
it records is read from the database, what it enqueues from the broker (no worker here).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from orchestrator.dev.receiver_process import ReceiverProcess, running_receiver
from orchestrator.services import cycle, replacement
from orchestrator.store.schema import operations
from tests.factories import add_conversations, chip_row, make_chip, set_config
from tests.support.private_stack import broker_url_for, queue_depths
from tests.support.webhooks import SECRET, TOKEN, close, opened, post_evolution
from tests.worker.conftest import worker_env

#: A Sao Paulo server's wall clock, labelled Z.
SAO_PAULO = timedelta(hours=3)


def _instance() -> str:
    return f"clk-{datetime.now(UTC).timestamp():.6f}"


def _undated(body: dict) -> dict:
    """The same envelope without date_time (some Evolution events carry none)."""
    return {k: v for k, v in body.items() if k != "date_time"}


def _replaces_queued(redis_url: str) -> int:
    return queue_depths(broker_url_for(redis_url), ["orchestrator"])["orchestrator"]


def test_an_undated_open_then_a_ban_from_a_clock_3h_behind_bans_and_sends_one_replace(
    clean_db: sa.Engine, receiver: ReceiverProcess, redis_url: str
) -> None:
    # Given an active chip whose `open` came without date_time (recorded as received now)
    name = _instance()
    chip = make_chip(clean_db, "active", instance_name=name)
    assert post_evolution(receiver.url, _undated(opened(name))).json()["status"] == "accepted"
    before = _replaces_queued(redis_url)
    # When Evolution on a Sao Paulo server reports the ban, dated 3 h "ago"
    answer = post_evolution(receiver.url, close(name, 403, at=datetime.now(UTC) - SAO_PAULO))
    # Then it is accepted (not `ignored`/`stale`), the chip is banned, one replace_chip is sent
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "accepted",
        "chip_id": chip,
        "signal": "banned",
        "replace": "banned",
    }
    assert chip_row(clean_db, chip).status == "banned"
    assert _replaces_queued(redis_url) == before + 1


def test_connect_and_disconnect_keep_their_order_with_a_clock_3h_behind(
    clean_db: sa.Engine, receiver: ReceiverProcess
) -> None:
    name, sent = _instance(), datetime.now(UTC) - SAO_PAULO
    chip = make_chip(clean_db, "active", instance_name=name)

    def connected() -> bool:
        return chip_row(clean_db, chip).evolution_connected

    # An undated open, then a real drop dated by the Sao Paulo clock: the drop is applied
    post_evolution(receiver.url, _undated(opened(name)))
    assert post_evolution(receiver.url, close(name, 428, at=sent)).json()["status"] == "accepted"
    assert not connected()
    # A reconnection 5 s later on the same clock is applied
    post_evolution(receiver.url, opened(name, at=sent + timedelta(seconds=5)))
    assert connected()
    # A close sent between the two, delivered late, is older than the open: ignored
    late = post_evolution(receiver.url, close(name, 428, at=sent + timedelta(seconds=2)))
    assert late.json() == {"status": "ignored", "reason": "stale", "chip_id": chip}
    assert connected()
    # And an undated close now is the newest event
    assert post_evolution(receiver.url, _undated(close(name, 428))).json()["status"] == "accepted"
    assert not connected()


def test_a_clock_hours_ahead_never_hides_a_later_undated_event(
    clean_db: sa.Engine, receiver: ReceiverProcess
) -> None:
    # Given a close dated by a server whose wall clock is 9 h ahead of UTC, labelled Z
    name = _instance()
    chip = make_chip(clean_db, "active", instance_name=name)
    ahead = datetime.now(UTC) + timedelta(hours=9)
    post_evolution(receiver.url, close(name, 428, at=ahead))
    assert chip_row(clean_db, chip).evolution_connected is False
    # When an undated open follows it
    answer = post_evolution(receiver.url, _undated(opened(name)))
    # Then it is applied: no date_time ever makes a later event look stale
    assert answer.json()["status"] == "accepted"
    assert chip_row(clean_db, chip).evolution_connected is True


@pytest.fixture(scope="module")
def no_broker(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReceiverProcess]:
    """A receiver on the test database whose broker is unreachable: every publish fails."""
    env = worker_env(
        database_url,
        redis_url,
        WEBHOOK_TOKEN=TOKEN,
        SALVY_WEBHOOK_SECRET=SECRET,
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
    )
    log = tmp_path_factory.mktemp("receiver") / "receiver.log"
    with running_receiver(env, log) as proc:
        yield proc


def test_a_ban_whose_replace_cannot_be_sent_is_kept_and_the_next_cycle_replaces_it(
    clean_db: sa.Engine, no_broker: ReceiverProcess
) -> None:
    # Given an active chip with open conversations and a fit ready chip
    set_config(clean_db, producao_min=1)
    name, sent = _instance(), datetime.now(UTC) - SAO_PAULO
    chip = make_chip(clean_db, "active", instance_name=name)
    add_conversations(clean_db, chip, 3)
    ready = make_chip(clean_db, "ready", trust=97)
    # When the ban arrives while the broker is unreachable
    ban = post_evolution(no_broker.url, close(name, 403, at=sent))
    # Then 503 (Evolution retries it), but the ban is already written
    assert (ban.status_code, ban.json()["status"]) == (503, "unavailable")
    assert chip_row(clean_db, chip).status == "banned"
    # And a newer event after it neither undoes nor loses the ban
    newer = post_evolution(no_broker.url, opened(name, at=sent + timedelta(seconds=30)))
    assert (newer.status_code, newer.json()["signal"]) == (200, "connected")
    assert chip_row(clean_db, chip).status == "banned"
    with clean_db.connect() as conn:
        kinds = conn.execute(sa.select(operations.c.operacao).where(operations.c.chip_id == chip))
        assert list(kinds.scalars()) == ["demotion"]
    # So the next cycle plans its replacement, and the replacement takes its conversations
    the_plan, _, _ = cycle.plan(clean_db, salvy_configured=False)
    assert [(r.chip_id, r.reason) for r in the_plan.replace] == [(chip, "banned")]
    done = replacement.replace_chip(clean_db, chip, "banned")
    assert (done["status"], done["replacement_id"], done["conversas_migradas"]) == (
        "replaced",
        ready,
        3,
    )
