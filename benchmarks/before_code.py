"""The swap as it was before, for side-by-side figures (benchmarks/scale.py, benchmarks/swap_floor.py).

Two "befores", layered:

- before issue 23 (`apply_previous`, `previous()`): the swap's transaction in 12 statements (two
  reads of the chip, the config and the count apart, each compare-and-set, the move, the
  operation, the message and the alert reset one statement each, each statement built per call),
  a pre-ping on every checkout, redis-py locks (the queued marker, each lock and each release a
  round trip of its own), the task's signature rebuilt on every call, two round trips to count a
  delivery; a worker
  started from `benchmarks.before_app` also sends task events and the STARTED state again.
- before issue 13 (`apply`, `patched()`), on top of that: a swap that adds an active chip took
  the pool_config row exclusively (no growth slots) and counted the active chips with `count(*)`
  over the chips table under that lock, as issue 13 measured.

Everything else, including the triggers the database now runs on every write, is today's.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping

import sqlalchemy as sa
from celery.app.backends import BACKEND_ALIASES
from kombu import transport as kombu_transport
from kombu.transport import TRANSPORT_ALIASES

from orchestrator.adapters import locks
from orchestrator.domain.pool import BANNED, PoolConfig, is_fit_to_serve
from orchestrator.errors import Rejected
from orchestrator.services import growth, replacement
from orchestrator.store import db, outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction
from orchestrator.store.schema import chips, pool_growth_slots

# -- before issue 23: the swap's statements one by one ----------------------------------------


def get_chip_previous(conn: sa.Connection, chip_id: str, *, lock: bool = False) -> Mapping:
    """One chip row, its statement built on every call."""
    stmt = sa.select(chips).where(chips.c.id == chip_id)
    if lock:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    if row is None:
        raise Rejected(f"unknown chip {chip_id}", code="unknown_chip")
    return row


def take_growth_slot_previous(conn: sa.Connection) -> bool:
    """One free growth slot, its statement built on every call."""
    stmt = (
        sa.select(pool_growth_slots.c.slot)
        .order_by(pool_growth_slots.c.slot)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return conn.execute(stmt).first() is not None


def growth_locks_previous(conn: sa.Connection) -> tuple[str, PoolConfig]:
    """The config and count read apart from the chip; a slot, else the exact path."""
    config, active = repo.load_config_and_active(conn)
    if active <= config.producao_max - 2 * growth.GROWTH_SLOTS and take_growth_slot_previous(conn):
        return growth.SLOT, config
    return growth.EXACT, growth.lock_for_exact_count(conn)


def has_room_previous(conn: sa.Connection, config: PoolConfig, how: str | None) -> bool:
    """The active count read by a statement of its own."""
    if how is None:
        return True
    active = repo.count_active(conn)
    if how == growth.EXACT:
        return active < config.producao_max
    if active > config.producao_max - growth.GROWTH_SLOTS:
        raise growth.busy("active count rose near producao_max; retry counting exactly")
    return True


#: What the previous swap calls to lock for growth (issue 13's before replaces it).
GROWTH_LOCKS: list[Callable[[sa.Connection], tuple[str, PoolConfig]]] = [growth_locks_previous]


def _take_ready_previous(
    conn: sa.Connection, config: PoolConfig, chip_id: str, claim: Callable[[str], bool] | None
) -> Mapping | None:
    unfit, vetoed = [chip_id], []
    for _ in range(replacement.MAX_READY_TRIES):
        candidate = repo.best_ready(conn, config, exclude=unfit + vetoed)
        if candidate is None:
            break
        if not is_fit_to_serve(growth.view(candidate), config):
            unfit.append(candidate["id"])
        elif claim is None or claim(candidate["id"]):
            return candidate
        else:
            vetoed.append(candidate["id"])
    if repo.fit_ready_exists(conn, config, exclude=unfit):
        raise growth.busy("every fit ready chip is held by another task")
    return None


def replace_chip_previous(
    engine: sa.Engine,
    chip_id: object,
    reason: object = None,
    *,
    claim: Callable[[str], bool] | None = None,
    task_id: str | None = None,
) -> dict:
    """replacement.replace_chip before issue 23 (a banned or low-trust chip; no planned recheck).

    task_id: accepted and ignored (the previous swap did not record it).
    """
    chip_id, reason = repo.parse_chip_id(chip_id), replacement.clean_reason(reason)
    now = sa.func.now()
    with transaction(engine) as conn:
        grows = get_chip_previous(conn, chip_id)["status"] == "banned"
        how, config = GROWTH_LOCKS[0](conn) if grows else (None, repo.load_config(conn))
        old = get_chip_previous(conn, chip_id, lock=True)
        if old["status"] == "banned" and not grows:
            raise growth.busy(f"chip {chip_id} was banned while we read it")
        replacement._check_replaceable(conn, old)
        banned = how is not None or reason == BANNED
        new = (
            _take_ready_previous(conn, config, chip_id, claim)
            if has_room_previous(conn, config, how)
            else None
        )
        if new is None:
            return replacement._without_ready(conn, config, old, banned, reason, now)
        final = "banned" if banned else "degraded"
        growth.cas(conn, new["id"], ["ready"], status="active", promoted_to_active_at=now)
        moved = repo.move_conversations(conn, chip_id, new["id"], now)
        growth.cas(conn, chip_id, [old["status"]], status=final, degraded_at=now)
        operation = repo.record_operation(
            conn,
            "auto_replace",
            chip_id,
            replacement._motivo(old, reason, config),
            destino=new["id"],
            metadata={
                "conversas_migradas": moved,
                "trust_degradado": old["trust_score"],
                "trust_novo": new["trust_score"],
                "reason": reason,
            },
        )
        outbox.enqueue(conn, "operacoes", replacement.messages.replaced(old, new, moved, reason))
        outbox.forget_alert(conn, f"no_ready:{chip_id}")
        return {
            "status": "replaced",
            "chip_id": chip_id,
            "replacement_id": new["id"],
            "chip_status": final,
            "conversas_migradas": moved,
            "operation_id": operation,
        }


class LockSetPrevious(locks.LockSet):
    """redis-py Lock objects: SET NX (and GET + reacquire to adopt), one release each."""

    def __init__(self, client, ttl: int = locks.CHIP_LOCK_TTL, owner: str | None = None) -> None:
        self._client, self._ttl, self._owner = client, ttl, owner
        self._held: list = []
        self.deliveries: int | None = None

    def acquire(
        self, chip_id: str, *, clear: str | None = None, delivery: tuple[str, int] | None = None
    ) -> bool:
        if delivery is not None:  # counted by the task base, two round trips of its own
            self.deliveries = count_delivery_previous(self._client, *delivery)
        if clear is not None:  # the marker was its own round trip
            self._client.delete(clear)
        lock = self._client.lock(locks.chip_lock_key(chip_id), timeout=self._ttl)
        if lock.acquire(blocking=False, token=self._owner) or self._adopt(lock):
            self._held.append(lock)
            return True
        return False

    def _adopt(self, lock) -> bool:
        if self._owner is None or self._client.get(lock.name) != self._owner.encode():
            return False
        lock.local.token = self._owner.encode()
        return bool(lock.reacquire())

    def release_all(self) -> None:
        while self._held:
            lock = self._held.pop()
            with contextlib.suppress(Exception):
                lock.release()


def count_delivery_previous(client, task_id: str, retries: int) -> int | None:
    """Two round trips: INCR, then EXPIRE."""
    key = f"{locks.PREFIX}:deliveries:{task_id}:{retries}"
    try:
        count = client.incr(key)
        client.expire(key, locks.DELIVERY_COUNT_TTL)
    except Exception:
        return None
    return int(count)


def _signature_every_call(self) -> inspect.Signature:
    return inspect.signature(self.run)


_create_engine_now = db.create_engine


def create_engine_pinging(url: str, **kwargs: object) -> sa.Engine:
    """An engine that pings on every checkout (pool_pre_ping)."""
    return _create_engine_now(url, pool_pre_ping=True, **kwargs)


def _previous_bindings() -> list[tuple[object, str, object]]:
    from tasks.base import OrchestratorTask

    return [
        (replacement, "replace_chip", replace_chip_previous),
        (locks, "count_delivery", count_delivery_previous),
        (locks, "LockSet", LockSetPrevious),
        (db, "create_engine", create_engine_pinging),
        (OrchestratorTask, "_signature", _signature_every_call),
    ]


def apply_previous() -> None:
    """From now on, in this process, swaps run as before issue 23 (engines made from now on),
    kombu connections made from now on use kombu's own Redis transport, and Celery apps that
    have not yet touched their result backend Celery's own (two round trips per result)."""
    for owner, name, value in _previous_bindings():
        setattr(owner, name, value)
    TRANSPORT_ALIASES["redis"] = "kombu.transport.redis:Transport"
    getattr(kombu_transport, "_transport_cache", {}).pop("redis", None)
    BACKEND_ALIASES["redis"] = "celery.backends.redis:RedisBackend"


@contextlib.contextmanager
def previous() -> Iterator[None]:
    """Swaps run as before issue 23 inside the block (engines created inside it ping)."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in _previous_bindings()]
    apply_previous()
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


# -- before issue 13: on top of that, the pool_config row and count(*) -------------------------


def count_active_by_counting(conn: sa.Connection) -> int:
    """The previous repository.count_active: every active chip counted."""
    stmt = sa.select(sa.func.count()).where(chips.c.status == "active")
    return conn.execute(stmt).scalar_one()


def exclusive_growth(conn: sa.Connection) -> tuple[str, PoolConfig]:
    """The previous lock for a growing swap: the pool_config row, always."""
    return growth.EXACT, repo.load_config(conn, lock=True)


def apply() -> None:
    """From now on, in this process, swaps run as before issue 13."""
    apply_previous()
    repo.count_active = count_active_by_counting
    GROWTH_LOCKS[0] = exclusive_growth


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """Swaps run as before issue 13 inside the block."""
    saved = repo.count_active, GROWTH_LOCKS[0]
    with previous():
        repo.count_active = count_active_by_counting
        GROWTH_LOCKS[0] = exclusive_growth
        try:
            yield
        finally:
            repo.count_active, GROWTH_LOCKS[0] = saved
