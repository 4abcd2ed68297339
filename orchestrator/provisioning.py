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


def intent_name(key: str) -> str:
    """The unique name of a purchase, from a stable key (the task id)."""
    cleaned = "".join(ch for ch in key if ch.isalnum() or ch == "-")[:48]
    if not cleaned:
        raise Rejected("a purchase needs a non-empty key", code="malformed")
    return NAME_PREFIX + cleaned


def ensure_intent(engine: sa.Engine, name: str, ddd: int, deadline_minutes: int) -> Mapping:
    """Record the purchase intent once (a provisioning chip); return it, new or existing."""
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
        return (
            conn.execute(sa.select(chips).where(chips.c.provisioning_name == name)).mappings().one()
        )


def choose_ddd(salvy: SalvyClient, wanted: int, fallback: Sequence[int]) -> int:
    """The wanted DDD if Salvy has it in stock, else the first in stock along the fallback list."""
    stock = set(salvy.area_codes())
    for ddd in (wanted, *fallback):
        if ddd in stock:
            return ddd
    raise Rejected(f"no DDD in stock at Salvy among {[wanted, *fallback]}", code="out_of_stock")


def complete(engine: sa.Engine, intent: Mapping, number: SalvyNumber, requested_ddd: int) -> dict:
    """provisioning -> warming with the number Salvy gave us, logged as auto_provision."""
    ddd = number.area_code or intent["ddd"]
    with transaction(engine) as conn:
        row = repo.transition(
            conn,
            intent["id"],
            ["provisioning"],
            status="warming",
            telefone=number.phone_number,
            salvy_id=number.id,
            ddd=ddd,
            warming_started_at=sa.func.now(),
            provisioning_deadline=None,
        )
        if row is None:
            return _settled(conn, intent["id"])
        repo.record_operation(
            conn,
            "auto_provision",
            intent["id"],
            "Pool buffer baixo",
            metadata={
                "ddd": ddd,
                "ddd_solicitado": requested_ddd,
                "salvy_id": number.id,
                "name": intent["provisioning_name"],
            },
        )
        outbox.enqueue(
            conn, "operacoes", messages.provisioned(number.phone_number, ddd, requested_ddd)
        )
    return {
        "status": "provisioned",
        "chip_id": intent["id"],
        "telefone": number.phone_number,
        "ddd": ddd,
    }


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
    bought = salvy.find_by_name(intent["provisioning_name"])
    if bought is not None and bought.status != "canceled":
        return complete(engine, intent, bought, wanted)
    try:
        chosen = choose_ddd(salvy, wanted, fallback)
        number = salvy.create(chosen, intent["provisioning_name"])
    except Rejected as error:
        return {**fail(engine, intent, error.reason), "status": "rejected"}
    return complete(engine, intent, number, wanted)


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
            adopted += complete(engine, intent, number, intent["ddd"])["status"] == "provisioned"
        else:
            failed += fail(engine, intent, "compra nao concluida no prazo")["status"] == "failed"
    unknown = report_unknown(engine, numbers)
    return {"status": "reconciled", "adopted": adopted, "failed": failed, "unknown": unknown}


def report_unknown(engine: sa.Engine, numbers: Sequence[SalvyNumber]) -> int:
    """Alert ops (once per number) about live Salvy numbers that match no chip; never cancel them."""
    live = [n for n in numbers if n.status in ("active", "pending", "blocked")]
    if not live:
        return 0
    with transaction(engine) as conn:
        known = set(
            conn.execute(
                sa.select(chips.c.salvy_id).where(chips.c.salvy_id.in_([n.id for n in live]))
            ).scalars()
        )
        names = set(
            conn.execute(
                sa.select(chips.c.provisioning_name).where(
                    chips.c.provisioning_name.in_([n.name for n in live if n.name])
                )
            ).scalars()
        )
        unknown = [n for n in live if n.id not in known and n.name not in names]
        fresh = [n for n in unknown if outbox.claim_once(conn, f"salvy_unknown:{n.id}")]
        if fresh:
            outbox.enqueue(
                conn, "alertas", messages.unknown_salvy_numbers([n.phone_number for n in fresh])
            )
    return len(unknown)


def cancel(engine: sa.Engine, salvy: SalvyClient | None, chip_id: object) -> dict:
    """Release a degraded or banned number at Salvy, then mark the chip cancelled."""
    chip_id = repo.parse_chip_id(chip_id)
    with engine.connect() as conn:
        chip = repo.get_chip(conn, chip_id)
    if chip["status"] not in ("degraded", "banned"):
        raise Rejected(
            f"chip {chip_id} is {chip['status']}; only degraded or banned chips are cancelled",
            code="wrong_state",
        )
    salvy_reason = BAN_REASON if chip["status"] == "banned" else DEFAULT_CANCEL_REASON
    if chip["salvy_id"]:
        if salvy is None:
            raise ConfigError("SALVY_API_URL is not set: cannot cancel a Salvy number")
        salvy.cancel(chip["salvy_id"], salvy_reason)
    with transaction(engine) as conn:
        if repo.transition(conn, chip_id, [chip["status"]], status="cancelled") is None:
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
