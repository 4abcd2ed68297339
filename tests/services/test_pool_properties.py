"""Whatever other services do between them, the use cases keep the pool's invariants (hypothesis).

A RuleBasedStateMachine on the real database. Rules play the other services' SQL: a router that
routes conversations from a stale read of the active chips, Evolution flipping
evolution_connected, warm-up changing trust, a gateway banning chips, bulk loads under
session_replication_role = replica (no trigger fires: the cached counts drift), plain DELETEs.
Other rules are the use cases: the cycle (it dispatches; its tasks queue), a worker running one
queued task later (its plan may be stale by then), and replace, promote and migrate called
directly. After every use case: it never took the true active count past producao_max, left no
conversation on a chip it migrated or swapped out, promoted or replaced no chip twice, recorded
an operation row for every status it changed, and the active count it decided on is true.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import pytest
import redis
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from orchestrator import task_names as names
from orchestrator.adapters import locks
from orchestrator.errors import Rejected, TransientError
from orchestrator.services import conversations, dispatch, promote, replacement
from tests.conftest import TABLES
from tests.support import pool_world as world

pytestmark = pytest.mark.db

SETTINGS = settings(
    max_examples=50,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,  # the same examples on every run (CI): no flakiness from the draw
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
#: What each use case and worker task ran, and how it ended (the report of what was explored).
RAN: collections.Counter[str] = collections.Counter()
PICK = st.integers(0, 10_000)
#: The services a queued task (by name) calls, as the worker's handlers do (locks aside).
SERVICES: dict[str, Callable[..., dict]] = {
    names.REPLACE: replacement.replace_chip,
    names.PROMOTE_READY: promote.promote_warming_to_ready,
    names.PROMOTE_ACTIVE: promote.promote_ready_to_active,
    names.MIGRATE: conversations.migrate_conversations,
}


class PoolMachine(RuleBasedStateMachine):
    engine: sa.Engine
    client: redis.Redis

    def __init__(self) -> None:
        super().__init__()
        self.routing: list[str] = []  # the router's last read of the active chips
        self.queue: list[tuple[str, list]] = []  # tasks the cycle sent, not yet run

    @initialize(size=st.sampled_from(sorted(world.CONFIGS)))
    def a_fresh_pool(self, size: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {TABLES} CASCADE"))
        for key in self.client.scan_iter("chiporch:*"):
            if key != b"chiporch:test-claim":
                self.client.delete(key)
        world.seed(self.engine, size)
        RAN[f"pool {size}"] += 1

    def _pick(self, pick: int, *statuses: str) -> str | None:
        found = world.ids(self.engine, *statuses)
        return found[pick % len(found)] if found else None

    # -- other services: plain SQL -----------------------------------------------------------

    @rule()
    def router_reads_the_active_chips(self) -> None:
        RAN["other services"] += 1
        self.routing = world.ids(self.engine, "active")

    @rule(pick=PICK)
    def router_routes_a_conversation_from_its_read(self, pick: int) -> None:
        RAN["other services"] += 1
        if self.routing:
            world.run(
                self.engine,
                "INSERT INTO conversation_chips (conversation_id, chip_id, active)"
                " SELECT 'svc-' || gen_random_uuid(), id, true FROM chips WHERE id = :id",
                id=self.routing[pick % len(self.routing)],
            )

    @rule(pick=PICK, connected=st.booleans())
    def evolution_flips_a_connection(self, pick: int, connected: bool) -> None:
        RAN["other services"] += 1
        if chip := self._pick(pick):
            sql = "UPDATE chips SET evolution_connected = :v WHERE id = :id"
            world.run(self.engine, sql, v=connected, id=chip)

    @rule(pick=PICK, trust=st.sampled_from([10, 59, 70, 85, 99]))
    def warmup_changes_trust(self, pick: int, trust: int) -> None:
        RAN["other services"] += 1
        if chip := self._pick(pick):
            world.run(
                self.engine, "UPDATE chips SET trust_score = :t WHERE id = :id", t=trust, id=chip
            )

    @rule(pick=PICK)
    def gateway_bans_an_active_chip(self, pick: int) -> None:
        RAN["other services"] += 1
        if chip := self._pick(pick, "active"):
            world.run(self.engine, "UPDATE chips SET status = 'banned' WHERE id = :id", id=chip)

    @rule(status=st.sampled_from(["active", "ready", "warming"]), n=st.sampled_from([1, 3, 38]))
    def bulk_load_fires_no_trigger(self, status: str, n: int) -> None:
        world.bulk_load_without_triggers(self.engine, [status] * n)
        RAN["other services"] += 1
        RAN[f"bulk load {n} {status}"] += 1

    @rule(pick=PICK)
    def a_plain_delete(self, pick: int) -> None:
        RAN["other services"] += 1
        if chip := self._pick(pick):
            world.delete_unreferenced(self.engine, chip)

    # -- use cases ----------------------------------------------------------------------------

    @rule()
    def the_cycle_dispatches(self) -> None:
        def send(name: str, args: list, _task_id: str | None) -> None:
            self.queue.append((name, args))

        result = self._use_case(
            "cycle",
            lambda: dispatch.run_cycle(
                self.engine, self.client, send, period_seconds=60, salvy_configured=False
            ),
        )
        assert result["status"] == "planned", result
        self._assert_active_count_is_true()

    @rule(pick=PICK)
    def a_worker_runs_a_queued_task(self, pick: int) -> None:
        if not self.queue:
            return
        name, args = self.queue.pop(pick % len(self.queue))
        locks.clear_queued(self.client, name, args[0])  # as the handler does when it starts
        self._use_case(name, lambda: SERVICES[name](self.engine, *args), chip=args[0])

    @rule(
        pick=PICK,
        status=st.sampled_from(["active", "banned"]),
        reason=st.sampled_from([None, "banned", "low_trust", "disconnected"]),
    )
    def ops_replace_a_chip(self, pick: int, status: str, reason: str | None) -> None:
        if chip := self._pick(pick, status):
            call = lambda: replacement.replace_chip(self.engine, chip, reason)  # noqa: E731
            self._use_case(names.REPLACE, call, chip=chip)

    @rule(pick=PICK)
    def promote_a_ready_chip(self, pick: int) -> None:
        if chip := self._pick(pick, "ready"):
            call = lambda: promote.promote_ready_to_active(self.engine, chip)  # noqa: E731
            self._use_case(names.PROMOTE_ACTIVE, call, chip=chip)

    @rule(pick=PICK)
    def promote_a_warming_chip(self, pick: int) -> None:
        if chip := self._pick(pick, "warming"):
            call = lambda: promote.promote_warming_to_ready(self.engine, chip)  # noqa: E731
            self._use_case(names.PROMOTE_READY, call, chip=chip)

    @rule(pick=PICK)
    def migrate_a_chips_conversations(self, pick: int) -> None:
        stranded = world.holding_conversations(
            self.engine, "ready", "warming", "degraded", "banned"
        )
        if chip := (stranded[pick % len(stranded)] if stranded else None):
            call = lambda: conversations.migrate_conversations(self.engine, chip)  # noqa: E731
            self._use_case(names.MIGRATE, call, chip=chip)

    # -- the invariants, after every use case --------------------------------------------------

    def _use_case(self, name: str, call: Callable[[], dict], chip: str | None = None) -> dict:
        before = world.look(self.engine)
        try:
            result = call()
        except Rejected as refused:  # a stale plan, a wrong state: refused, nothing changed
            result = {"status": f"rejected {refused.code}"}
        except TransientError:  # busy: the task would retry
            result = {"status": "retry"}
        RAN[f"{name.split('.')[-1]} {result['status']}"] += 1
        after = world.look(self.engine)
        if after.active > before.active:
            assert after.active <= world.producao_max(self.engine), (name, result, before.active)
        changed = {c for c, s in after.statuses.items() if before.statuses.get(c, s) != s}
        recorded = {c for _, *pair in world.new_operations(self.engine, before) for c in pair}
        assert changed <= recorded, (name, result, changed - recorded)
        if result["status"] in ("migrated", "nothing_to_move", "replaced"):
            assert world.open_conversations(self.engine, chip) == 0, (name, result)
        if name == names.PROMOTE_ACTIVE and not result["status"].startswith(("rejected", "retry")):
            self._assert_active_count_is_true()
        assert world.use_case_violations(self.engine) == [], (name, result)
        return result

    def _assert_active_count_is_true(self) -> None:
        seen = world.look(self.engine)
        assert seen.tallied_active == seen.active, "the active count decided on is not true"


def test_the_pool_invariants_hold_whatever_other_services_do(
    engine: sa.Engine, redis_client: redis.Redis
) -> None:
    PoolMachine.engine, PoolMachine.client = engine, redis_client
    RAN.clear()
    run_state_machine_as_test(PoolMachine, settings=SETTINGS)
    print(
        f"\npool machine: {sum(v for k, v in RAN.items() if k.startswith('pool'))} runs,", dict(RAN)
    )
    # Then it explored what matters: swaps, promotions, migrations and stale tasks refused
    for outcome in (
        "replace_chip replaced",
        "promote_ready_to_active promoted",
        "migrate_conversations migrated",
    ):
        assert RAN[outcome] > 0, dict(RAN)


@pytest.mark.xfail(
    strict=True,
    reason="known gap: a swap far below producao_max takes a growth slot on the cached active"
    " count, which only the exact path and the cycle correct (see services/growth.py)",
)
def test_a_banned_swap_far_below_the_cached_maximum_never_passes_the_true_one(
    clean_db: sa.Engine,
) -> None:
    # Given producao_max 40, 40 active chips of which 37 came in a bulk load that fired no
    # trigger (3 cached), a banned chip and a fit ready chip
    world.seed(clean_db, "roomy")
    world.bulk_load_without_triggers(clean_db, ["active"] * 37)
    [banned] = world.ids(clean_db, "banned")
    before = world.look(clean_db)
    assert (before.active, before.tallied_active, world.producao_max(clean_db)) == (40, 3, 40)
    # When the banned chip is replaced (its replacement adds an active chip)
    result = replacement.replace_chip(clean_db, banned, "banned")
    # Then it is not swapped in past producao_max
    assert result["status"] != "replaced" or world.look(clean_db).active <= 40
