"""Applying a gateway (Evolution API) event to its chip: ONE transaction per event.

Level-triggered and idempotent. Connect/disconnect: the newest event per chip wins, placed on our
clock by domain/event_clock.py (the gateway's `date_time` may be hours off, or absent), so a late
`open` after a newer `close` changes nothing and repeats change nothing twice. A ban is never
stale: it is written (`banned`) in this transaction, whatever arrived before or after it, and
only then may the caller publish the replacement. If that publish fails, the banned chip is the
cycle's to replace (domain/pool.py: a banned chip not yet handled, `degraded_at` NULL).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import sqlalchemy as sa

from orchestrator.domain import messages
from orchestrator.domain.event_clock import place
from orchestrator.domain.pool import BANNED, FLAPPING
from orchestrator.domain.signals import ALERT, CONNECTED, GatewaySignal, is_flapping
from orchestrator.domain.signals import BANNED as BAN_SIGNAL
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction

#: Statuses a ban takes straight to `banned`, handled (`degraded_at` set): they serve nothing.
NOT_SERVING = ("provisioning", "warming", "ready", "degraded")
#: Statuses whose ban is a replacement: `banned` now, replace_chip moves the conversations.
SERVING = ("active",)


def alert_key(alert: str, chip_id: str) -> str:
    """One gateway alert per cause per chip per cool-down."""
    return f"gateway:{alert}:{chip_id}"


def apply_gateway_signal(engine: sa.Engine, signal: GatewaySignal) -> dict:
    """Record one Evolution event; the answer says what to enqueue (`replace`: a reason)."""
    with transaction(engine) as conn:
        found = repo.chip_for_event(conn, signal.instance)
        if found is None:
            return {"status": "ignored", "reason": "unknown instance"}
        chip, clock, now = found
        chip_id = str(chip["id"])
        placed = place(clock, signal.at, now)
        if not placed.fresh and signal.kind != BAN_SIGNAL:
            return {"status": "ignored", "reason": "stale", "chip_id": chip_id}
        if placed.fresh:
            repo.save_event_clock(conn, chip_id, placed.clock)
            repo.set_connected(conn, chip_id, signal.kind == CONNECTED)
        replace = None
        if signal.kind == BAN_SIGNAL:
            replace = _banned(conn, chip, signal)
        elif signal.kind == ALERT:
            _alert(conn, chip, signal)
        if replace is None and signal.kind != CONNECTED and chip["status"] in SERVING:
            threshold, drops = repo.flap_threshold_and_drops(conn, chip_id)
            replace = FLAPPING if is_flapping(drops, threshold) else None
    return {"status": "accepted", "chip_id": chip_id, "signal": signal.kind, "replace": replace}


def _alert(conn: sa.Connection, chip: Mapping, signal: GatewaySignal) -> None:
    """A logout or temporary ban: ops told once per cause per chip per cool-down."""
    cooldown = timedelta(minutes=repo.load_config(conn).alert_cooldown_minutes)
    text = messages.gateway_alert(chip, signal.alert or "", signal.code)
    outbox.alert_once(conn, alert_key(signal.alert or "", str(chip["id"])), text, cooldown=cooldown)


def _banned(conn: sa.Connection, chip: Mapping, signal: GatewaySignal) -> str | None:
    """Mark the chip banned now; BANNED when it still has to be replaced (conversations moved).

    An active chip stays `degraded_at` NULL (banned, not yet handled): replace_chip swaps it and
    moves its conversations, and until it does every cycle plans that replacement.
    """
    status, code = chip["status"], signal.code
    if status == "banned":
        return BANNED if chip["degraded_at"] is None else None
    if status in SERVING:
        repo.transition(conn, chip["id"], [status], status="banned")  # row locked: it holds
        # Not "Chip banido...": the forecast counts those as unmet demand (store/repository/
        # history.py); this chip's demand is its auto_replace, recorded when the swap happens.
        text = f"Banido pelo WhatsApp (Evolution, codigo {code}): troca enfileirada"
        repo.record_operation(conn, "demotion", chip["id"], text, metadata={"codigo": code})
        return BANNED
    if status in NOT_SERVING:
        handled = chip["degraded_at"] or sa.func.now()  # a degraded chip keeps its time
        repo.transition(conn, chip["id"], [status], status="banned", degraded_at=handled)
        text = f"Banido pelo WhatsApp (Evolution) em {status}"  # a loss, never demand
        repo.record_operation(conn, "demotion", chip["id"], text, metadata={"codigo": code})
    return None
