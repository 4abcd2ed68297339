"""Counts that decide stay true: the cached counts per status checked against `chips`, corrected.

The cycle checks `active` and a rotation of the other statuses every time (domain/tally.py
chooses which); a promotion, and a swap near producao_max, check `active` under their exact-count
locks before deciding (services/growth.py). A drift found is corrected in the same statement
(store/repository/tally_checks.py), recorded for the metrics, and told to ops once per cool-down.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa

from orchestrator.domain import messages
from orchestrator.domain.tally import statuses_to_check
from orchestrator.errors import ConfigError
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction

log = logging.getLogger(__name__)

#: Alert key of a corrected drift (one alert per cool-down, however often it recurs).
DRIFT_KEY = "pool:tally_drift"
#: Cool-down when pool_config cannot be read (the cycle alerts about that separately).
DEFAULT_COOLDOWN_MINUTES = 30

Drift = dict[str, tuple[int, int]]


def check_due(engine: sa.Engine) -> Drift:
    """The cycle's check: `active` and the statuses due; {status: (cached, true)} corrected."""
    with transaction(engine) as conn:
        due = statuses_to_check(repo.status_counts(conn), repo.tally_checked_at(conn))
        return correct(conn, due)


def correct(conn: sa.Connection, statuses: Sequence[str]) -> Drift:
    """Recount `statuses`, correct the cached counts that drifted, alert once per cool-down."""
    drift = repo.check_and_correct(conn, statuses)
    if drift:
        log.warning("chip counts corrected (cached -> true): %s", drift)
        cooldown = timedelta(minutes=_cooldown_minutes(conn))
        outbox.alert_once(conn, DRIFT_KEY, messages.tally_drift(drift), cooldown=cooldown)
    return drift


def _cooldown_minutes(conn: sa.Connection) -> int:
    try:
        return repo.load_config(conn).alert_cooldown_minutes
    except ConfigError:
        return DEFAULT_COOLDOWN_MINUTES
