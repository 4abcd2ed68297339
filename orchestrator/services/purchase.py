"""Buying one number at Salvy, so that money is spent once (the intent: services/intent.py).

Only the run holding the intent's lease calls Salvy's POST; another run meanwhile only looks the
name up. A DDD out of stock falls back along ORCHESTRATOR_DDD_FALLBACK. The cycle records the
intents under one lock (services/cycle_purchases.py), so overlapping cycles never buy more than
the deficit.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from orchestrator.adapters.salvy import SalvyClient, SalvyNumber
from orchestrator.errors import ConfigError, PurchaseInDoubt, Rejected, TransientError
from orchestrator.services.intent import (
    claim,
    complete,
    ensure_intent,
    fail,
    intent_name,
    set_lease,
    settled,
)
from orchestrator.services.intent_expiry import expire_unclaimed, never_claimed
from orchestrator.store import repository as repo

#: Salvy error codes meaning "this DDD has nothing to sell": the next DDD in stock is tried.
OUT_OF_STOCK_CODES = frozenset({"area_code_unavailable"})
#: After a purchase call whose outcome is unknown (timeout, 5xx), wait this long before the
#: name is looked up again: Salvy's list may take a while to show a number just bought.
SETTLE_SECONDS = 30


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
            return settled(conn, intent["id"])
    if intent["expired"] and never_claimed(intent):
        # Its deadline passed before any run took it: the queue, not Salvy, was the problem.
        expired = expire_unclaimed(engine, intent)
        if expired is not None:
            return expired
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
        set_lease(engine, claimed["id"], owner, settle_seconds)
        error.retry_after = max(error.retry_after or 0, settle_seconds + 1)
        raise
    except TransientError:
        set_lease(engine, claimed["id"], owner, 0)  # nothing was bought: retry at once
        raise
    except BaseException:
        set_lease(engine, claimed["id"], owner, settle_seconds)  # maybe mid-POST: hold it
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
    if intent["expired"]:  # an earlier run claimed it and did not finish in time
        raise Rejected("compra nao concluida dentro do prazo", code="expired")
    return buy(salvy, name, intent["ddd"], fallback)
