"""A busy lock elsewhere never fails the cycle: a slow Slack never blocks a purchase, and a step
whose lock is held is deferred to the next cycle while the rest of the cycle runs.

Both interleavings are forced: the deliverer is parked inside its Slack call (FakeSlack.hold) and
the purchases' lock is held by an open transaction of the test's own, as an overlapping cycle's
purchase step holds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import sqlalchemy as sa

from orchestrator.app import bootstrap
from orchestrator.services import cycle_purchases, delivery, dispatch
from orchestrator.store import db
from orchestrator.store.schema import chips
from tests.factories import make_chip, set_config
from tests.services.test_cycle import Broker
from tests.support.fake_slack import FakeSlack
from tests.support.outbox_helpers import queue, settings_for

pytestmark = pytest.mark.db


def intents(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        stmt = sa.select(sa.func.count()).where(chips.c.status == "provisioning")
        return conn.execute(stmt).scalar_one()


def tally_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM chip_status_tally")).scalar_one()


@pytest.fixture
def short_waits(database_url: str) -> Iterator[sa.Engine]:
    """The same database with a 300 ms lock_timeout: a held lock ends the wait quickly."""
    engine = db.create_engine(database_url, lock_timeout_ms=300)
    yield engine
    engine.dispose()


def test_a_cycle_buys_the_deficit_while_the_deliverer_waits_on_slack(
    clean_db: sa.Engine, redis_client: redis.Redis, slack: FakeSlack
) -> None:
    # Given a warming deficit of 3 and a deliverer parked inside its Slack call (lock held)
    set_config(clean_db, producao_min=0, ready_min=0, warmup_buffer=3, max_provisions_per_cycle=5)
    queue(clean_db, ("alertas", "a slow message"))
    slack.hold()
    sender = bootstrap.build_sender(settings_for(slack.base_url))
    with ThreadPoolExecutor(max_workers=1) as pool:
        deliverer = pool.submit(delivery.deliver_pending, clean_db, sender)
        assert slack.waiting.wait(30)
        try:
            # When a cycle runs meanwhile
            result = dispatch.run_cycle(clean_db, redis_client, Broker(), period_seconds=60)
        finally:
            slack.release()
        assert deliverer.result(timeout=60)["delivered"] == 1
    # Then it bought exactly the deficit and deferred nothing
    assert result["status"] == "planned"
    assert result["deferred"] == []
    assert result["dispatched"]["provision_chip"] == 3
    assert intents(clean_db) == 3


def test_a_held_purchase_lock_defers_the_purchases_and_the_rest_of_the_cycle_runs(
    clean_db: sa.Engine, short_waits: sa.Engine, redis_client: redis.Redis, database_url: str
) -> None:
    # Given a deficit to buy, a low-trust chip to replace and tally deltas to fold
    set_config(clean_db, producao_min=1, ready_min=0, warmup_buffer=2, max_provisions_per_cycle=5)
    low = make_chip(clean_db, "active", trust=5)
    make_chip(clean_db, "ready", trust=95)
    make_chip(clean_db, "ready", trust=95)
    assert tally_rows(clean_db) > 2
    broker = Broker()
    # And another cycle's purchase step holding the purchases' lock
    holder = clean_db.connect()
    holder.begin()
    holder.execute(sa.select(sa.func.pg_advisory_xact_lock(cycle_purchases.PURCHASE_LOCK_KEY)))
    try:
        # When a cycle runs while it is held (for the whole cycle: its wait must time out)
        runner_result = dispatch.run_cycle(short_waits, redis_client, broker, period_seconds=60)
    finally:
        holder.rollback()
        holder.close()
    # Then the cycle planned and dispatched, the purchases are deferred and said so
    assert runner_result["status"] == "planned"
    assert runner_result["deferred"] == ["purchases"]
    assert ("orchestrator.replace_chip", [low, "low_trust"], None) in broker.sent
    assert runner_result["dispatched"]["provision_chip"] == 0
    assert intents(clean_db) == 0
    # And its tidy step ran (the tally's deltas folded to one row per status)
    assert tally_rows(clean_db) == 2
    # And the next cycle buys what was deferred: the reserve (2 fit ready chips, one of them
    # going to the swap, + nothing warming) is 1 short of warmup_buffer 2
    again = dispatch.run_cycle(clean_db, redis_client, Broker(), period_seconds=60)
    assert again["deferred"] == []
    assert intents(clean_db) == 1
