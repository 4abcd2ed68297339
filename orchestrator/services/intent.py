"""Buying and releasing numbers at Salvy, so that money is spent once.

Salvy has no idempotency key. So the intent is committed first (a `provisioning` chip whose
unique name is derived from the Celery task id, stable across retries and redeliveries), the
name is sent to Salvy, and any retry looks the name up in Salvy before buying again.

The cycle records its intents under one lock (orchestrator.purchasing), so overlapping cycles
never buy more than the deficit. A run claims its intent with a lease before calling Salvy, so the same
task delivered twice at once buys once: the second run only looks the name up. A failed
purchase pauses purchases (orchestrator.backoff) and leaves no row behind unless a late
purchase could still land on it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from orchestrator.adapters.salvy import SalvyClient, SalvyNumber
from orchestrator.domain import messages
from orchestrator.errors import ConfigError, PurchaseInDoubt, Rejected, TransientError
from orchestrator.services import backoff
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction
from orchestrator.store.schema import chips, operations

log = logging.getLogger(__name__)

#: Prefix of the names we send to Salvy; numbers without it were not bought by us.
NAME_PREFIX = "chiporch-"
#: Salvy's cancel reasons (DELETE body).
BAN_REASON, DEFAULT_CANCEL_REASON = "whatsapp-ban", "unnecessary"
#: Chip statuses whose number may be released.
CANCELLABLE = ("degraded", "banned")
#: Salvy error codes meaning "this DDD has nothing to sell": the next DDD in stock is tried.
OUT_OF_STOCK_CODES = frozenset({"area_code_unavailable"})
#: Lease of a run on its intent: longer than provision_chip's hard time limit (90 s), so a live
#: run never loses it; a run killed mid-purchase frees it after this long.
LEASE_SECONDS = 120
#: After a purchase call whose outcome is unknown (timeout, 5xx), wait this long before the
#: name is looked up again: Salvy's list may take a while to show a number just bought.
SETTLE_SECONDS = 30


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


def _set_lease(engine: sa.Engine, intent_id: str, owner: str, seconds: float) -> None:
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


def candidate_ddds(salvy: SalvyClient, wanted: int, fallback: Sequence[int]) -> list[int]:
    """The wanted DDD, then the fallback list, keeping only those Salvy has in stock."""
    stock = set(salvy.area_codes())
    in_stock = [ddd for ddd in dict.fromkeys((wanted, *fallback)) if ddd in stock]
    if not in_stock:
        raise Rejected(
            f"nenhum DDD com estoque na Salvy entre {[wanted, *fallback]}", code="out_of_stock"
        )
    return in_stock


def choose_ddd(salvy: SalvyClient, wanted: int, fallback: Sequence[int]) -> int:
    """The wanted DDD if Salvy has it in stock, else the first in stock along the fallback list."""
    return candidate_ddds(salvy, wanted, fallback)[0]


def buy(salvy: SalvyClient, name: str, wanted: int, fallback: Sequence[int]) -> SalvyNumber:
    """One POST per DDD in stock, in order, until one sells; a DDD sold out meanwhile is skipped."""
    *first, last = candidate_ddds(salvy, wanted, fallback)
    for ddd in first:
        try:
            return salvy.create(ddd, name)
        except Rejected as error:
            if error.code not in OUT_OF_STOCK_CODES:
                raise
    return salvy.create(last, name)


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
            return _settled(conn, intent["id"])
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
            return _settled(conn, intent["id"])
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


def _settled(conn: sa.Connection, chip_id: str) -> dict:
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


def provision(
    engine: sa.Engine,
    salvy: SalvyClient | None,
    key: str,
    *,
    ddd: int | None = None,
    fallback: Sequence[int] = (),
    deadline_minutes: int = 15,
    owner: str | None = None,
    settle_seconds: float = SETTLE_SECONDS,
) -> dict:
    """Buy one number for the intent named by key; safe to call again, or twice at once.

    owner names this run (unique per execution, default a fresh uuid): only the run holding
    the intent's lease calls Salvy's POST; another run meanwhile only looks the name up.
    """
    if ddd is not None and (
        not isinstance(ddd, int) or isinstance(ddd, bool) or not 11 <= ddd <= 99
    ):
        raise Rejected(f"ddd must be a Brazilian area code (11..99), got {ddd!r}", code="malformed")
    if salvy is None:
        raise ConfigError("SALVY_API_URL is not set: cannot buy numbers")
    with engine.connect() as conn:
        wanted = ddd or repo.load_config(conn).default_ddd
    intent = ensure_intent(engine, intent_name(key), wanted, deadline_minutes)
    if intent is None:
        return {"status": "failed", "name": intent_name(key), "already": True}
    if intent["status"] != "provisioning":
        with engine.connect() as conn:
            return _settled(conn, intent["id"])
    owner = owner or uuid.uuid4().hex
    claimed = claim(engine, intent["id"], owner)
    if claimed is None:
        return _while_another_run_buys(engine, salvy, intent, settle_seconds)
    # The intent's DDD is what was asked (the cycle may have recorded it before this task ran).
    try:
        number = _find_or_buy(salvy, claimed, fallback)
    except Rejected as error:
        outcome = fail(engine, claimed, error.reason, code=error.code, owner=owner)
        if outcome.get("already"):
            return outcome
        return {**outcome, "status": "rejected", "code": error.code}
    except PurchaseInDoubt as error:
        # Keep everyone off the name until Salvy's list can show it, then retry (a lookup).
        _set_lease(engine, claimed["id"], owner, settle_seconds)
        error.retry_after = max(error.retry_after or 0, settle_seconds + 1)
        raise
    except TransientError:
        _set_lease(engine, claimed["id"], owner, 0)  # nothing was bought: retry at once
        raise
    except BaseException:
        _set_lease(engine, claimed["id"], owner, settle_seconds)  # maybe mid-POST: hold it
        raise
    return complete(engine, claimed, number, claimed["ddd"])


def _while_another_run_buys(
    engine: sa.Engine, salvy: SalvyClient, intent: Mapping, settle_seconds: float
) -> dict:
    """Another run holds the purchase: adopt what Salvy lists under the name, never buy."""
    name = intent["provisioning_name"]
    bought = salvy.find_by_name(name)
    if bought is not None and bought.status != "canceled":
        return complete(engine, intent, bought, intent["ddd"])
    raise TransientError(
        f"purchase {name} is being made by another run", retry_after=settle_seconds
    )


def _find_or_buy(salvy: SalvyClient, intent: Mapping, fallback: Sequence[int]) -> SalvyNumber:
    """What Salvy holds under the intent's name, else a new purchase (unless the deadline passed)."""
    name = intent["provisioning_name"]
    bought = salvy.find_by_name(name)
    if bought is not None and bought.status != "canceled":
        return bought
    if bought is not None:
        raise Rejected(f"o numero comprado como {name} foi cancelado na Salvy", code="canceled")
    if intent["expired"]:
        raise Rejected("compra nao iniciada dentro do prazo", code="expired")
    return buy(salvy, name, intent["ddd"], fallback)


def reconcile(engine: sa.Engine, salvy: SalvyClient) -> dict:
    """Settle intents past their deadline against Salvy; report numbers we have no chip for.

    An intent a live run still holds (its lease) is left to that run.
    """
    lease_free = sa.or_(
        chips.c.provisioning_lease_until.is_(None),
        chips.c.provisioning_lease_until < sa.func.now(),
    )
    with engine.connect() as conn:
        stuck = list(
            conn.execute(
                sa.select(chips).where(
                    chips.c.status == "provisioning",
                    chips.c.provisioning_deadline < sa.func.now(),
                    lease_free,
                )
            ).mappings()
        )
    numbers = salvy.list_numbers()
    by_name = {n.name: n for n in numbers if n.name and n.status != "canceled"}
    adopted = failed = 0
    for intent in stuck:
        number = by_name.get(intent["provisioning_name"])
        if number is not None:
            adopted += _settled_now(complete(engine, intent, number, intent["ddd"]))
        else:
            failed += _settled_now(
                fail(engine, intent, "compra nao concluida no prazo", code="expired")
            )
    late = _failed_intents_named(engine, list(by_name)) + _dropped_intents_named(engine, by_name)
    for intent in late:
        number = by_name[intent["provisioning_name"]]
        adopted += _settled_now(complete(engine, intent, number, intent["ddd"]))
    unknown = report_unknown(engine, numbers)
    return {"status": "reconciled", "adopted": adopted, "failed": failed, "unknown": unknown}


def _settled_now(outcome: dict) -> bool:
    """True when this call settled the intent (not a concurrent task before it)."""
    return not outcome.get("already")


def _failed_intents_named(engine: sa.Engine, names: Sequence[str]) -> list[Mapping]:
    """Failed intents (cancelled, never given a number) whose name Salvy does hold: late buys."""
    if not names:
        return []
    query = sa.select(chips).where(
        chips.c.status == "cancelled",
        chips.c.salvy_id.is_(None),
        chips.c.provisioning_name.in_(names),
    )
    with engine.connect() as conn:
        return list(conn.execute(query).mappings())


def _dropped_intents_named(engine: sa.Engine, names: Sequence[str]) -> list[Mapping]:
    """Failed intents whose row was dropped but whose name Salvy holds after all: late buys.

    Rebuilt from their failed auto_provision operation (name, DDD, the intent's id).
    """
    ours = [n for n in names if n.startswith(NAME_PREFIX)]
    if not ours:
        return []
    with engine.connect() as conn:
        held = set(
            conn.execute(
                sa.select(chips.c.provisioning_name).where(chips.c.provisioning_name.in_(ours))
            ).scalars()
        )
        orphans = [n for n in ours if n not in held]
        if not orphans:
            return []
        metadata = conn.execute(
            sa.select(operations.c.metadata).where(
                operations.c.operacao == "auto_provision",
                operations.c.sucesso.is_(False),
                operations.c.metadata["name"].astext.in_(orphans),
            )
        ).scalars()
        found = {
            m["name"]: {
                "id": m.get("intencao"),
                "provisioning_name": m["name"],
                "ddd": m.get("ddd"),
            }
            for m in metadata
        }
    return list(found.values())


def report_unknown(engine: sa.Engine, numbers: Sequence[SalvyNumber]) -> int:
    """Alert ops (once per number) about live Salvy numbers that match no chip; never cancel them.

    A number is ours when a chip holds its salvy_id, or when it carries the name of a purchase
    still in flight (`provisioning`). Anything else is billed without serving: a second number
    under one name included.
    """
    live = [n for n in numbers if n.status in ("active", "pending", "blocked")]
    if not live:
        return 0
    with transaction(engine) as conn:
        known = set(
            conn.execute(
                sa.select(chips.c.salvy_id).where(chips.c.salvy_id.in_([n.id for n in live]))
            ).scalars()
        )
        in_flight = set(
            conn.execute(
                sa.select(chips.c.provisioning_name).where(
                    chips.c.status == "provisioning",
                    chips.c.provisioning_name.in_([n.name for n in live if n.name]),
                )
            ).scalars()
        )
        unknown = [n for n in live if n.id not in known and n.name not in in_flight]
        fresh = [n for n in unknown if outbox.claim(conn, f"salvy_unknown:{n.id}")]
        if fresh:
            outbox.enqueue(
                conn, "alertas", messages.unknown_salvy_numbers([n.phone_number for n in fresh])
            )
    return len(unknown)


def cancel(engine: sa.Engine, salvy: SalvyClient | None, chip_id: object) -> dict:
    """Release a degraded or banned number at Salvy, then mark the chip cancelled.

    Refused while the chip holds open conversations (they are moved first): checked before the
    call to Salvy, and again under the row lock, which also holds back routers' INSERTs.
    """
    chip_id = repo.parse_chip_id(chip_id)
    with engine.connect() as conn:
        chip = repo.get_chip(conn, chip_id)
        waiting = repo.active_conversations(conn, chip_id)
    if chip["status"] not in CANCELLABLE:
        raise Rejected(
            f"chip {chip_id} is {chip['status']}; only degraded or banned chips are cancelled",
            code="wrong_state",
        )
    _refuse_open_conversations(chip_id, waiting, released=False)
    salvy_reason = BAN_REASON if chip["status"] == "banned" else DEFAULT_CANCEL_REASON
    if chip["salvy_id"]:
        if salvy is None:
            raise ConfigError("SALVY_API_URL is not set: cannot cancel a Salvy number")
        salvy.cancel(chip["salvy_id"], salvy_reason)
    with transaction(engine) as conn:
        repo.get_chip(conn, chip_id, lock=True)
        _refuse_open_conversations(
            chip_id, repo.active_conversations(conn, chip_id), released=bool(chip["salvy_id"])
        )
        # Released at Salvy already: a chip turned banned meanwhile is still cancelled here.
        if repo.transition(conn, chip_id, CANCELLABLE, status="cancelled") is None:
            raise Rejected(f"chip {chip_id} changed state while cancelling", code="conflict")
        repo.record_operation(
            conn,
            "cancel",
            chip_id,
            f"Cancelado na Salvy ({salvy_reason})",
            metadata={"salvy_id": chip["salvy_id"], "salvy_reason": salvy_reason},
        )
        outbox.enqueue(conn, "operacoes", messages.cancelled(chip, salvy_reason))
    return {"status": "cancelled", "chip_id": chip_id, "salvy_reason": salvy_reason}


def _refuse_open_conversations(chip_id: str, waiting: int, *, released: bool) -> None:
    """Rejected (has_conversations) while the chip holds open conversations."""
    if not waiting:
        return
    # Salvy counts a second cancel as done, so sending cancel_chip again once the cycle has
    # moved them finishes the job.
    after = (
        "; its number is already released at Salvy: send cancel_chip again then" if released else ""
    )
    raise Rejected(
        f"chip {chip_id} holds {waiting} open conversation(s); they are moved first{after}",
        code="has_conversations",
    )
