"""Return to service: a chip replaced for a passing cause that is fit again comes back to ready
in the cycle (one `rehabilitation` operation, a message in #operacoes) and counts in the
reserve, so the cycle buys one number less; offline, banned, flapping or too recent chips stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
import sqlalchemy as sa

from orchestrator.services import dispatch, replacement
from orchestrator.store.schema import chips, operations, outbox
from tests.factories import make_chip, set_config
from tests.services.test_cycle import Broker

pytestmark = pytest.mark.db


def status(engine: sa.Engine, chip_id: str) -> tuple[str, object]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(chips.c.status, chips.c.degraded_at).where(chips.c.id == chip_id)
        ).one()
    return row.status, row.degraded_at


def rehabilitations(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        stmt = sa.select(operations.c.chip_id).where(operations.c.operacao == "rehabilitation")
        return [str(c) for c in conn.execute(stmt).scalars()]


def replaced(engine: sa.Engine, reason: str | None, **chip: object) -> str:
    """An active chip swapped out for `reason` (a fit ready chip takes its place); one replaced
    for disconnection was offline for an hour."""
    make_chip(engine, "ready", trust=95)
    if reason == "disconnected":
        offline_since = datetime.now(UTC) - timedelta(hours=1)
        chip = {"evolution_connected": False, "evolution_disconnected_at": offline_since, **chip}
    chip_id = make_chip(engine, "active", **chip)
    result = replacement.replace_chip(engine, chip_id, reason)
    assert result["status"] == "replaced", result
    return chip_id


def plain_update(engine: sa.Engine, chip_id: str, sql: str) -> None:
    """What another service (the gateway's, the trust scorer) writes."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE chips SET {sql} WHERE id = :id"), {"id": chip_id})


def degraded_ago(engine: sa.Engine, chip_id: str, minutes: int) -> None:
    plain_update(engine, chip_id, f"degraded_at = now() - interval '{minutes} minutes'")


def cycle(engine: sa.Engine, client: redis.Redis) -> dict:
    return dispatch.run_cycle(engine, client, Broker(), period_seconds=60)


@pytest.fixture
def pool(clean_db: sa.Engine) -> sa.Engine:
    """rehab after 60 min; production full; the reserve's target 1 ready + 0 warming."""
    set_config(clean_db, producao_min=0, ready_min=1, warmup_buffer=0, rehab_after_minutes=60)
    for _ in range(4):  # healthy production: one disconnection is no storm
        make_chip(clean_db, "active")
    return clean_db


def test_a_reconnected_chip_returns_to_ready_and_the_cycle_buys_none_for_it(
    pool: sa.Engine, redis_client: redis.Redis
) -> None:
    # Given three chips replaced an hour ago: two for disconnection, one banned
    back = replaced(pool, "disconnected")
    offline = replaced(pool, "disconnected")
    banned = make_chip(pool, "active")
    plain_update(pool, banned, "status = 'banned'")
    make_chip(pool, "ready", trust=95)
    assert replacement.replace_chip(pool, banned, "banned")["chip_status"] == "banned"
    for chip in (back, offline, banned):
        degraded_ago(pool, chip, 61)
    # And the first reconnects (the gateway's plain UPDATE); the others stay as they are
    plain_update(pool, back, "evolution_connected = true")
    with pool.begin() as conn:  # every ready chip went to the swaps: the reserve is 0 of 1
        assert (
            conn.execute(sa.text("SELECT count(*) FROM chips WHERE status = 'ready'")).scalar() == 0
        )
    # When a cycle runs
    result = cycle(pool, redis_client)
    # Then only the reconnected chip is back in ready, fit to be taken, with one operation
    assert result["rehabilitated"] == 1
    assert status(pool, back) == ("ready", None)
    assert status(pool, offline)[0] == "degraded"
    assert status(pool, banned)[0] == "banned"
    assert rehabilitations(pool) == [back]
    # And it fills the reserve: nothing bought
    assert result["dispatched"]["provision_chip"] == 0
    with pool.connect() as conn:
        texts = conn.execute(sa.select(outbox.c.texto).where(outbox.c.canal == "operacoes"))
        assert sum("voltou para *READY*" in t for t in texts.scalars()) == 1
    # And the next cycle does not do it again
    assert cycle(pool, redis_client)["rehabilitated"] == 0
    assert rehabilitations(pool) == [back]


@pytest.mark.parametrize(
    "reason,minutes,drops,setting",
    [
        ("disconnected", 30, 0, 60),  # degraded too recently
        ("disconnected", 61, 6, 60),  # flapping: 6 drops in the last hour
        ("disconnected", 600, 0, None),  # rehab_after_minutes NULL: never
        ("salvy_blocked", 61, 0, 60),  # blocked at the provider: not a passing cause
        (None, 61, 0, 60),  # ops replaced it: their decision stands
    ],
)
def test_a_chip_that_may_not_return_stays_degraded(
    pool: sa.Engine,
    redis_client: redis.Redis,
    reason: str | None,
    minutes: int,
    drops: int,
    setting: int | None,
) -> None:
    set_config(pool, rehab_after_minutes=setting)
    chip = replaced(pool, reason, trust=95)
    plain_update(pool, chip, "evolution_connected = true")  # fit to serve again
    degraded_ago(pool, chip, minutes)
    for _ in range(drops):  # the gateway's flips, logged by the flapping trigger
        plain_update(pool, chip, "evolution_connected = false")
        plain_update(pool, chip, "evolution_connected = true")
    assert cycle(pool, redis_client)["rehabilitated"] == 0
    assert status(pool, chip)[0] == "degraded"
    assert rehabilitations(pool) == []


def test_a_low_trust_chip_returns_once_its_trust_is_back(
    pool: sa.Engine, redis_client: redis.Redis
) -> None:
    chip = replaced(pool, "low_trust", trust=40)
    degraded_ago(pool, chip, int(timedelta(hours=2).total_seconds() // 60))
    assert cycle(pool, redis_client)["rehabilitated"] == 0  # trust 40 < 85
    plain_update(pool, chip, "trust_score = 90")
    assert cycle(pool, redis_client)["rehabilitated"] == 1
    assert status(pool, chip) == ("ready", None)
