"""Buying and releasing numbers at Salvy, so that money is spent once.

Salvy has no idempotency key. So the intent is committed first (a `provisioning` chip whose
unique name is derived from the Celery task id, stable across retries and redeliveries), the
name is sent to Salvy, and any retry looks the name up in Salvy before buying again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from orchestrator import messages, outbox
from orchestrator import repository as repo
from orchestrator.db import transaction
from orchestrator.errors import ConfigError, Rejected
from orchestrator.salvy import SalvyClient, SalvyNumber
from orchestrator.schema import chips

#: Prefix of the names we send to Salvy; numbers without it were not bought by us.
NAME_PREFIX = "chiporch-"
#: Salvy's cancel reasons (DELETE body).
BAN_REASON, DEFAULT_CANCEL_REASON = "whatsapp-ban", "unnecessary"
#: Chip statuses whose number may be released.
CANCELLABLE = ("degraded", "banned")
#: Salvy error codes meaning "this DDD has nothing to sell": the next DDD in stock is tried.
OUT_OF_STOCK_CODES = frozenset({"area_code_unavailable"})


def intent_name(key: str) -> str:
    """The unique name of a purchase, from a stable key (the task id)."""
    cleaned = "".join(ch for ch in key if ch.isalnum() or ch == "-")[:48]
    if not cleaned:
        raise Rejected("a purchase needs a non-empty key", code="malformed")
    return NAME_PREFIX + cleaned


def ensure_intent(engine: sa.Engine, name: str, ddd: int, deadline_minutes: int) -> Mapping:
    """Record the purchase intent once (a provisioning chip); return it, new or existing.

    The row carries an extra `expired` key: True once its deadline has passed.
    """
    with transaction(engine) as conn:
        conn.execute(
            pg_insert(chips)
            .values(
                status="provisioning",
                ddd=ddd,
                provisioning_name=name,
                provisioning_deadline=sa.func.now() + timedelta(minutes=deadline_minutes),
                trust_score=0,
            )
            .on_conflict_do_nothing(index_elements=[chips.c.provisioning_name])
        )
        expired = sa.func.coalesce(chips.c.provisioning_deadline < sa.func.now(), False)
        query = sa.select(chips, expired.label("expired")).where(chips.c.provisioning_name == name)
        return conn.execute(query).mappings().one()


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
    all the same: the number is paid for, and a failed intent never holds another number.
    """
    ddd = number.area_code or intent["ddd"]
    values = {
        "status": "warming",
        "telefone": number.phone_number,
        "salvy_id": number.id,
        "ddd": ddd,
        "warming_started_at": sa.func.now(),
        "provisioning_deadline": None,
    }
    with transaction(engine) as conn:
        late = False
        row = repo.transition(conn, intent["id"], ["provisioning"], **values)
        if row is None:
            row, late = _adopt_failed(conn, intent["id"], values), True
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
            conn, "auto_provision", intent["id"], "Pool buffer baixo", metadata=metadata
        )
        outbox.enqueue(
            conn, "operacoes", messages.provisioned(number.phone_number, ddd, requested_ddd)
        )
    return {
        "status": "provisioned",
        "chip_id": intent["id"],
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


def fail(engine: sa.Engine, intent: Mapping, erro: str) -> dict:
    """provisioning -> cancelled: the purchase did not happen; ops are told."""
    with transaction(engine) as conn:
        row = repo.transition(
            conn, intent["id"], ["provisioning"], status="cancelled", provisioning_deadline=None
        )
        if row is None:
            return _settled(conn, intent["id"])
        repo.record_operation(
            conn,
            "auto_provision",
            intent["id"],
            "Compra falhou",
            metadata={"ddd": intent["ddd"], "name": intent["provisioning_name"]},
            sucesso=False,
            erro=erro[:500],
        )
        outbox.enqueue(
            conn, "alertas", messages.provision_failed(intent["provisioning_name"], erro)
        )
    return {"status": "failed", "chip_id": intent["id"], "reason": erro}


def _settled(conn: sa.Connection, chip_id: str) -> dict:
    row = repo.get_chip(conn, chip_id)
    if row["status"] == "cancelled":
        return {"status": "failed", "chip_id": chip_id, "already": True}
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
) -> dict:
    """Buy one number for the intent named by key; safe to call again after any failure."""
    if ddd is not None and (
        not isinstance(ddd, int) or isinstance(ddd, bool) or not 11 <= ddd <= 99
    ):
        raise Rejected(f"ddd must be a Brazilian area code (11..99), got {ddd!r}", code="malformed")
    if salvy is None:
        raise ConfigError("SALVY_API_URL is not set: cannot buy numbers")
    with engine.connect() as conn:
        wanted = ddd or repo.load_config(conn).default_ddd
    intent = ensure_intent(engine, intent_name(key), wanted, deadline_minutes)
    if intent["status"] != "provisioning":
        with engine.connect() as conn:
            return _settled(conn, intent["id"])
    # The intent's DDD is what was asked (the cycle may have recorded it before this task ran).
    try:
        number = _find_or_buy(salvy, intent, fallback)
    except Rejected as error:
        outcome = fail(engine, intent, error.reason)
        if outcome.get("already"):
            return outcome
        return {**outcome, "status": "rejected", "code": error.code}
    return complete(engine, intent, number, intent["ddd"])


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
    """Settle intents past their deadline against Salvy; report numbers we have no chip for."""
    with engine.connect() as conn:
        stuck = list(
            conn.execute(
                sa.select(chips).where(
                    chips.c.status == "provisioning", chips.c.provisioning_deadline < sa.func.now()
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
            failed += _settled_now(fail(engine, intent, "compra nao concluida no prazo"))
    for intent in _failed_intents_named(engine, list(by_name)):
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
