"""A rude router keeps opening conversations on chips while they are swapped out (real worker).

Other services route from a read of `chips` that may be a moment old and insert with plain
autocommit INSERTs (no FOR SHARE courtesy): rows land on chips after they stopped serving. The
cycle must find every one of them and move it, and none may be lost on the way.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid

import pytest
import sqlalchemy as sa
from celery import Celery

from orchestrator.ops import checker
from orchestrator.store import db
from orchestrator.store.schema import chips, conversation_chips, operations
from tests.factories import add_conversations, make_chip, set_config
from tests.worker.conftest import WorkerProcess

pytestmark = pytest.mark.worker

#: Active chips in the pool; two of them are swapped out under the router.
ACTIVE = 8
#: Rows the router inserts before the swaps are sent, and after both have committed.
BEFORE_SWAPS, AFTER_SWAPS = 50, 400


class Router(threading.Thread):
    """Another service: one stale read of the active chips, then one autocommit INSERT per new
    conversation, round-robin over what it read, until stopped."""

    def __init__(self, database_url: str) -> None:
        super().__init__(name="rude-router", daemon=True)
        self.engine = db.create_engine(database_url).execution_options(isolation_level="AUTOCOMMIT")
        with self.engine.connect() as conn:
            self.targets = list(
                conn.execute(sa.select(chips.c.id).where(chips.c.status == "active")).scalars()
            )
        self.prefix = f"router-{uuid.uuid4().hex[:8]}-"
        self.inserted = 0
        self.error: BaseException | None = None
        self._stop_at: int | None = None
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            with self.engine.connect() as conn:
                for n, chip in enumerate(itertools.cycle(self.targets)):
                    with self._lock:
                        if self._stop_at is not None and self.inserted >= self._stop_at:
                            return
                    conn.execute(
                        sa.insert(conversation_chips).values(
                            conversation_id=f"{self.prefix}{n}", chip_id=chip, active=True
                        )
                    )
                    with self._lock:
                        self.inserted += 1
        except BaseException as error:  # reported by the test, never swallowed
            self.error = error
        finally:
            self.engine.dispose()

    def count(self) -> int:
        with self._lock:
            return self.inserted

    def stop_after(self, more: int) -> None:
        """Insert `more` rows from now on, then stop."""
        with self._lock:
            self._stop_at = self.inserted + more


def stranded(engine: sa.Engine) -> int:
    """Open conversations on chips that are not active."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count())
            .select_from(conversation_chips.join(chips, chips.c.id == conversation_chips.c.chip_id))
            .where(conversation_chips.c.active, chips.c.status != "active")
        ).scalar_one()


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def run_cycles_until_clean(engine: sa.Engine, client: Celery, cycles: int) -> list[dict]:
    """Send orchestrator.run_cycle as beat would; after each planned one, let its tasks run."""
    results: list[dict] = []
    while len(results) < cycles and stranded(engine):
        result = client.send_task("orchestrator.run_cycle").get(timeout=60)
        if result["status"] != "planned":  # another cycle ran in this period: try the next one
            time.sleep(0.2)
            continue
        results.append(result)
        wait_until(lambda: stranded(engine) == 0, timeout=10)
    return results


def test_conversations_routed_onto_swapped_out_chips_are_all_moved_and_none_lost(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery, database_url: str
) -> None:
    # Given eight active chips serving five conversations each, two ready chips, and a router
    # that read the active chips once and keeps routing onto them with plain INSERTs
    set_config(
        clean_db,
        producao_min=ACTIVE,
        producao_max=ACTIVE + 2,
        ready_min=0,
        warmup_buffer=0,
        auto_provision=False,
    )
    active = [make_chip(clean_db, "active") for _ in range(ACTIVE)]
    for chip in active:
        add_conversations(clean_db, chip, 5)
    ready = [make_chip(clean_db, "ready", trust=95 - i) for i in range(2)]
    router = Router(database_url)
    router.start()
    assert wait_until(lambda: router.count() >= BEFORE_SWAPS or router.error, timeout=30)
    # When two chips are swapped out under it (one degraded, one banned) by a plain client
    degraded, banned = active[0], active[1]
    swaps = [
        celery_client.send_task("orchestrator.replace_chip", args=[degraded]),
        celery_client.send_task("orchestrator.replace_chip", args=[banned, "banned"]),
    ]
    results = [swap.get(timeout=60) for swap in swaps]
    # ... and the router goes on routing from its stale read after both swaps committed
    router.stop_after(AFTER_SWAPS)
    router.join(timeout=120)
    assert router.error is None and not router.is_alive()
    assert [r["status"] for r in results] == ["replaced", "replaced"]
    left_behind = stranded(clean_db)
    # ... and the cycle runs until nothing is left
    cycles = run_cycles_until_clean(clean_db, celery_client, cycles=10)
    # Then no open conversation is left on a chip that is not active
    after = stranded(clean_db)
    assert left_behind > 0, "the router stranded nothing: the scenario proves nothing"
    assert after == 0, f"{after} of {left_behind} stranded conversations never moved"
    # ... every row the router inserted still exists and is open, beside the 40 seeded ones
    with clean_db.connect() as conn:
        routed = conn.execute(
            sa.select(sa.func.count(), sa.func.count().filter(conversation_chips.c.active)).where(
                conversation_chips.c.conversation_id.startswith(router.prefix)
            )
        ).one()
        open_total = conn.execute(
            sa.select(sa.func.count()).where(conversation_chips.c.active)
        ).scalar_one()
        moved_by = list(
            conn.execute(
                sa.select(operations.c.chip_id, operations.c.chip_destino_id).where(
                    operations.c.operacao == "migration"
                )
            )
        )
    assert tuple(routed) == (router.inserted, router.inserted)
    assert open_total == ACTIVE * 5 + router.inserted
    # ... the late rows went to each chip's replacement, and the checker is clean
    replacement = {r["chip_id"]: r["replacement_id"] for r in results}
    assert moved_by and all(replacement[src] == dst for src, dst in moved_by)
    assert set(replacement.values()) == set(ready)
    assert sum(c["dispatched"]["migrate_conversations"] for c in cycles) >= 1
    assert checker.find_violations(clean_db) == []
    print(
        f"\nrouter: {router.inserted} rows; stranded after it stopped: {left_behind}; after:"
        f" {after} ({len(cycles)} cycle(s))"
    )


def test_migrate_conversations_sent_by_name_moves_them_and_a_bad_id_is_rejected(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery
) -> None:
    # Given a cancelled chip still holding three open conversations, and one active chip
    chip, target = make_chip(clean_db, "cancelled"), make_chip(clean_db, "active")
    add_conversations(clean_db, chip, 3)
    # When another service sends the task by name, and then one with a malformed id
    sent = celery_client.send_task("orchestrator.migrate_conversations", args=[chip])
    bad = celery_client.send_task("orchestrator.migrate_conversations", args=["nope"])
    # Then the first moves them, the second is answered rejected
    result, refused = sent.get(timeout=30), bad.get(timeout=30)
    assert (result["status"], result["target_id"], result["conversas_migradas"]) == (
        "migrated",
        target,
        3,
    )
    assert (refused["status"], refused["code"]) == ("rejected", "malformed")
    assert stranded(clean_db) == 0
