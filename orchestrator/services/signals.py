"""Applying a gateway (Evolution API) event to its chip: ONE transaction per event.

Level-triggered and idempotent: the newest event per chip wins (chip_webhook_state), so a late
`open` after a newer `close` changes nothing, and repeats of one event change nothing twice.
Returns what the caller must enqueue (a replacement now, for a ban or a flapping chip); the
replacement itself is replace_chip's compare-and-set, so six identical bans make one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import sqlalchemy as sa

from orchestrator.domain import messages
from orchestrator.domain.pool import BANNED, FLAPPING
from orchestrator.domain.signals import ALERT, CONNECTED, GatewaySignal, is_flapping
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction

#: Statuses a ban takes straight to `banned` (nothing to replace: they serve no conversations).
NOT_YET_SERVING = ("provisioning", "warming", "ready")
#: Statuses whose ban is a replacement (replace_chip moves the conversations, marks it banned).
SERVING = ("active",)


def alert_key(alert: str, chip_id: str) -> str:
    """One gateway alert per cause per chip per cool-down."""
    return f"gateway:{alert}:{chip_id}"


def apply_gateway_signal(engine: sa.Engine, signal: GatewaySignal) -> dict:
    """Record one Evolution event; the answer says what to enqueue (`replace`: a reason)."""
    with transaction(engine) as conn:
        found = repo.claim_instance_event(conn, signal.instance, signal.at)
        if found is None:
            return {"status": "ignored", "reason": "unknown instance"}
        chip, fresh = found
        chip_id = str(chip["id"])
        if not fresh:
            return {"status": "ignored", "reason": "stale", "chip_id": chip_id}
        connected = signal.kind == CONNECTED
        repo.set_connected(conn, chip_id, connected)
        replace = None
        if signal.kind == BANNED:
            replace = _banned(conn, chip)
        elif signal.kind == ALERT:
            _alert(conn, chip, signal)
        if replace is None and not connected and chip["status"] in SERVING:
            threshold, drops = repo.flap_threshold_and_drops(conn, chip_id)
            replace = FLAPPING if is_flapping(drops, threshold) else None
    return {"status": "accepted", "chip_id": chip_id, "signal": signal.kind, "replace": replace}


def _alert(conn: sa.Connection, chip: Mapping, signal: GatewaySignal) -> None:
    """A logout or temporary ban: ops told once per cause per chip per cool-down."""
    cooldown = timedelta(minutes=repo.load_config(conn).alert_cooldown_minutes)
    text = messages.gateway_alert(chip, signal.alert or "", signal.code)
    outbox.alert_once(conn, alert_key(signal.alert or "", str(chip["id"])), text, cooldown=cooldown)


def _banned(conn: sa.Connection, chip: Mapping) -> str | None:
    """A ban: BANNED for a chip to replace now; a chip not yet serving is marked banned here."""
    if chip["status"] in SERVING or (chip["status"] == "banned" and chip["degraded_at"] is None):
        return BANNED
    if chip["status"] in NOT_YET_SERVING:
        done = repo.transition(
            conn, chip["id"], [chip["status"]], status="banned", degraded_at=sa.func.now()
        )
        if done is not None:
            repo.record_operation(
                conn, "demotion", chip["id"], f"Chip banido (Evolution) em {chip['status']}"
            )
    return None
