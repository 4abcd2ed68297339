"""A purchase intent's row: recorded, claimed by one run, then completed or failed, once.

Salvy has no idempotency key. So the intent is committed first (a `provisioning` chip whose
unique name is derived from the Celery task id, stable across retries and redeliveries), the
name is sent to Salvy, and any retry looks the name up in Salvy before buying again. A run
claims its intent with a lease before calling Salvy, so the same task delivered twice at once
buys once. A failed purchase pauses purchases (services/backoff.py) and leaves no row behind
unless a late purchase could still land on it. Buying itself: services/purchase.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from orchestrator.adapters.salvy import SalvyNumber
from orchestrator.domain import messages
from orchestrator.errors import Rejected
from orchestrator.services import backoff
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction
from orchestrator.store.schema import chips, operations

log = logging.getLogger(__name__)

#: Prefix of the names we send to Salvy; numbers without it were not bought by us.
NAME_PREFIX = "chiporch-"
#: Lease of a run on its intent: longer than provision_chip's hard time limit (90 s), so a live
#: run never loses it; a run killed mid-purchase frees it after this long.
LEASE_SECONDS = 120


def intent_name(key: str) -> str:
    """The unique name of a purchase, from a stable key (the task id)."""
    cleaned = "".join(ch for ch in key if ch.isalnum() or ch == "-")[:48]
    if not cleaned:
        raise Rejected("a purchase needs a non-empty key", code="malformed")
    return NAME_PREFIX + cleaned


def ensure_intent(engine: sa.Engine, name: str, ddd: int, deadline_minutes: int) -> Mapping | None:
    """Record the purchase intent once (a provisioning chip); return it, new or existing.

    None when a purchase under this name already failed (its row is gone, its operation row
    remains): a late or repeated delivery of that task never buys again.
    The row carries an extra `expired` key: True once its deadline has passed.
    """
    with transaction(engine) as conn:
        inserted = conn.execute(
            pg_insert(chips)
            .values(
                status="provisioning",
                ddd=ddd,
                provisioning_name=name,
                provisioning_deadline=sa.func.now() + timedelta(minutes=deadline_minutes),
                trust_score=0,
            )
            .on_conflict_do_nothing(index_elements=[chips.c.provisioning_name])
            .returning(chips.c.id)
        ).first()
        # Checked after the insert: a failure committing meanwhile made the insert wait for it.
        if inserted is not None and _failed_before(conn, name):
            conn.execute(sa.delete(chips).where(chips.c.id == inserted.id))
            return None
        expired = sa.func.coalesce(chips.c.provisioning_deadline < sa.func.now(), False)
        query = sa.select(chips, expired.label("expired")).where(chips.c.provisioning_name == name)
        return conn.execute(query).mappings().one()


def _failed_before(conn: sa.Connection, name: str) -> bool:
    """A purchase under this name failed (and its intent was dropped)."""
    stmt = sa.select(operations.c.id).where(
        operations.c.operacao == "auto_provision",
        operations.c.sucesso.is_(False),
        operations.c.metadata["name"].astext == name,
    )
    return conn.execute(stmt.limit(1)).first() is not None


def claim(engine: sa.Engine, intent_id: str, owner: str) -> Mapping | None:
    """Take the intent's lease for this run (None if another run holds it); committed at once.

    The row returned carries `expired` (its deadline passed), like ensure_intent's.
    """
    free = sa.or_(
        chips.c.provisioning_lease_until.is_(None),
        chips.c.provisioning_lease_until < sa.func.now(),
    )
    expired = sa.func.coalesce(chips.c.provisioning_deadline < sa.func.now(), False)
    stmt = (
        sa.update(chips)
        .where(chips.c.id == intent_id, chips.c.status == "provisioning", free)
        .values(
            provisioning_lease_until=sa.func.now() + timedelta(seconds=LEASE_SECONDS),
            provisioning_lease_owner=owner,
        )
        .returning(chips, expired.label("expired"))
    )
    with transaction(engine) as conn:
        return conn.execute(stmt).mappings().first()


def set_lease(engine: sa.Engine, intent_id: str, owner: str, seconds: float) -> None:
    """Keep our lease for seconds more (0: release it); a failure is only logged."""
    until = sa.func.now() + timedelta(seconds=seconds) if seconds > 0 else None
    try:
        with transaction(engine) as conn:
            conn.execute(
                sa.update(chips)
                .where(chips.c.id == intent_id, chips.c.provisioning_lease_owner == owner)
                .values(provisioning_lease_until=until)
            )
    except Exception as error:  # the lease then simply runs out (LEASE_SECONDS)
        log.warning("lease of %s not updated: %s", intent_id, type(error).__name__)


def complete(engine: sa.Engine, intent: Mapping, number: SalvyNumber, requested_ddd: int) -> dict:
    """provisioning -> warming with the number Salvy gave us, logged as auto_provision.

    An intent already failed (reconciled while this purchase was still on its way) is adopted
    all the same: the number is paid for, and a failed intent never holds another number. So is
    one whose row is gone: the number gets a chip of its own rather than being left unused.
    """
    ddd = number.area_code or intent["ddd"]
    values = {
        "status": "warming",
        "telefone": number.phone_number,
        "salvy_id": number.id,
        "ddd": ddd,
        "warming_started_at": sa.func.now(),
        "provisioning_deadline": None,
        "provisioning_lease_until": None,
        "provisioning_lease_owner": None,
    }
    with transaction(engine) as conn:
        late = False
        row = repo.transition(conn, intent["id"], ["provisioning"], **values)
        if row is None:
            row, late = _adopt_failed(conn, intent["id"], values), True
        if row is None:
            row = _adopt_missing(conn, intent, values)
        if row is None:
            return settled(conn, intent["id"])
        metadata = {
            "ddd": ddd,
            "ddd_solicitado": requested_ddd,
            "salvy_id": number.id,
            "name": intent["provisioning_name"],
        }
        if late:
            metadata["adotado_apos_falha"] = True
        repo.record_operation(
            conn, "auto_provision", row["id"], "Pool buffer baixo", metadata=metadata
        )
        backoff.record_success(conn)
        outbox.enqueue(
            conn, "operacoes", messages.provisioned(number.phone_number, ddd, requested_ddd)
        )
    return {
        "status": "provisioned",
        "chip_id": row["id"],
        "telefone": number.phone_number,
        "ddd": ddd,
        "ddd_solicitado": requested_ddd,
    }


def _adopt_failed(conn: sa.Connection, chip_id: str, values: Mapping) -> Mapping | None:
    """cancelled -> warming, only for a failed intent that never got a number."""
    stmt = (
        sa.update(chips)
        .where(chips.c.id == chip_id, chips.c.status == "cancelled", chips.c.salvy_id.is_(None))
        .values(**values, updated_at=sa.func.now())
        .returning(chips)
    )
    return conn.execute(stmt).mappings().first()


def _adopt_missing(conn: sa.Connection, intent: Mapping, values: Mapping) -> Mapping | None:
    """A number bought for an intent whose row is gone: a new warming chip holds it."""
    if intent["id"] is None:
        identity = {}
    elif conn.execute(sa.select(chips.c.id).where(chips.c.id == intent["id"])).first():
        return None
    else:
        identity = {"id": intent["id"]}  # the dropped intent's id: its history stays linked
    stmt = (
        pg_insert(chips)
        .values(**values, **identity, provisioning_name=intent["provisioning_name"], trust_score=0)
        .on_conflict_do_nothing()
        .returning(chips)
    )
    return conn.execute(stmt).mappings().first()


def fail(
    engine: sa.Engine,
    intent: Mapping,
    erro: str,
    *,
    code: str | None = None,
    owner: str | None = None,
) -> dict:
    """The purchase did not happen: drop the intent, log it, pause purchases, alert once per cause.

    The intent's row goes (no pile of failed intents in `chips`); the auto_provision operation
    keeps its name, so a redelivered task does not buy again (ensure_intent) and a purchase that
    lands late is still adopted (reconcile). owner: the run holding the intent's lease (None:
    reconciliation, which only takes intents no run holds).
    """
    cause = backoff.cause_of(code)
    with transaction(engine) as conn:
        row = _lock_for_failure(conn, intent["id"], owner)
        if row is None:
            return settled(conn, intent["id"])
        conn.execute(sa.delete(chips).where(chips.c.id == row["id"]))
        repo.record_operation(
            conn,
            "auto_provision",
            None,
            "Compra falhou",
            metadata={
                "ddd": row["ddd"],
                "name": row["provisioning_name"],
                "causa": cause,
                "intencao": row["id"],
            },
            sucesso=False,
            erro=erro[:500],
        )
        gate = backoff.record_failure(conn, cause, erro)
    return {
        "status": "failed",
        "chip_id": row["id"],
        "reason": erro,
        "cause": cause,
        "paused_until": gate.paused_until.isoformat() if gate.paused_until else None,
    }


def _lock_for_failure(conn: sa.Connection, chip_id: str, owner: str | None) -> Mapping | None:
    """The provisioning intent, row-locked, if this caller may fail it (holds or needs no lease)."""
    if owner is None:
        held = sa.or_(
            chips.c.provisioning_lease_until.is_(None),
            chips.c.provisioning_lease_until < sa.func.now(),
        )
    else:
        held = chips.c.provisioning_lease_owner == owner
    stmt = (
        sa.select(chips)
        .where(chips.c.id == chip_id, chips.c.status == "provisioning", held)
        .with_for_update()
    )
    return conn.execute(stmt).mappings().first()


def settled(conn: sa.Connection, chip_id: str) -> dict:
    """What became of an intent another call settled (or still holds)."""
    row = conn.execute(sa.select(chips).where(chips.c.id == chip_id)).mappings().first()
    if row is None or row["status"] == "cancelled":
        return {"status": "failed", "chip_id": chip_id, "already": True}
    if row["status"] == "provisioning":
        reason = "the purchase is being made by another run"
        return {"status": "skipped", "chip_id": chip_id, "reason": reason, "already": True}
    return {
        "status": "provisioned",
        "chip_id": chip_id,
        "telefone": row["telefone"],
        "already": True,
    }
