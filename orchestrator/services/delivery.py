"""Deliver the notification outbox: one deliverer at a time, no transaction open across Slack.

A run (deliver_pending):
1. Takes the advisory lock DELIVERY_LOCK_KEY on a connection of its own, outside any
   transaction; another deliverer at work means "busy" at once. The lock dies with the session.
2. Claims a batch in one short transaction: a lease (claimed_until) on the oldest due messages,
   FOR UPDATE SKIP LOCKED, committed. Due: next_attempt_at has passed and no older message of the
   same canal is waiting (back-off or lease), so each canal keeps its order.
3. Sends each outside any transaction and records the outcome in a short transaction of its own:
   - accepted: marked delivered (`via` slack, or log without a token);
   - transient (503, 429 past the SDK's retries, network): recorded, raised; the task retries;
   - Slack refusing our token (invalid_auth, token_revoked...) or a channel (channel_not_found,
     not_in_channel, codes we do not know): kept pending; the canal (token: every canal) waits
     RETRY_BASE, doubling per attempt up to RETRY_CAP; the cause is logged once per cool-down
     (an alert_state key, so across processes) and shown in the metrics; delivered once Slack
     accepts again, in order. Never marked delivered via the log;
   - refused for its own content (msg_too_long, no_text, invalid_blocks...): no retry can change
     that, and keeping it would hold its canal forever, so it is written whole to the log at
     ERROR and marked delivered via 'log' (the only case where a token does not mean Slack).
4. Releases unused leases and, at most once per PRUNE_EVERY, deletes messages delivered more
   than RETENTION ago.
Delivery is at least once: a crash (or a lost answer) between Slack accepting a message and the
commit that marks it sends it again after the lease; a message is never lost.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa

from orchestrator.adapters.slack import CONTENT, MAX_ERROR_LENGTH, TOKEN, Sender, classify
from orchestrator.errors import OrchestratorError, Rejected, TransientError
from orchestrator.lock_keys import AdvisoryLock
from orchestrator.store import outbox, outbox_delivery
from orchestrator.store.db import transaction

#: Notifications and their delivery log here, by this name (ops filter on it), as Slack's sender.
logger = logging.getLogger("orchestrator.notify")

#: pg advisory lock key of the deliverer (every key: orchestrator/lock_keys.py).
DELIVERY_LOCK_KEY = int(AdvisoryLock.DELIVERY)
#: How long a claim keeps other deliverers off a message: above the task's hard time limit.
LEASE = timedelta(seconds=120)
#: Messages claimed per short transaction.
BATCH = 10
#: Seconds after which a run claims nothing more (the task's soft limit is 60 s).
BUDGET_SECONDS = 40.0
#: First wait after a refusal; doubles per attempt of the refused message, up to RETRY_CAP.
RETRY_BASE = timedelta(seconds=10)
#: Longest wait between two attempts while Slack refuses us (bounds the delay once fixed).
RETRY_CAP = timedelta(seconds=60)
#: Delivered messages older than this are deleted.
RETENTION = timedelta(days=30)
#: Pruning runs at most this often (across processes: an alert_state key).
PRUNE_EVERY = timedelta(hours=1)
#: Rows deleted per pruning at most.
PRUNE_BATCH = 1000
#: Cool-down of the refusal log line when pool_config has none.
DEFAULT_COOLDOWN = timedelta(minutes=30)
#: alert_state keys: one per refusal cause and what it holds ("token" or the canal).
REFUSED_PREFIX = "slack_refused:"
PRUNE_KEY = "outbox:prune"


def retry_delay(attempts: int) -> timedelta:
    """Wait after a message's attempts-th refusal: RETRY_BASE doubling, capped at RETRY_CAP."""
    return min(RETRY_BASE * 2 ** min(max(attempts - 1, 0), 16), RETRY_CAP)


def deliver_pending(
    engine: sa.Engine,
    sender: Sender,
    *,
    limit: int = 100,
    batch: int = BATCH,
    budget: float = BUDGET_SECONDS,
) -> dict:
    """Deliver up to `limit` due messages, oldest first; "busy" if another deliverer is at work."""
    with _sole_deliverer(engine) as mine:
        if not mine:
            return {
                "status": "busy",
                "delivered": 0,
                "fallback": 0,
                "pending": outbox.pending_count(engine),
            }
        run = _Run(engine, sender)
        try:
            run.deliver(limit, batch, time.monotonic() + budget)
        finally:
            run.release()
        _prune_if_due(engine)
    return {**run.result(), "pending": outbox.pending_count(engine)}


@contextlib.contextmanager
def _sole_deliverer(engine: sa.Engine) -> Iterator[bool]:
    """Hold the deliverers' advisory lock on a session of its own, in autocommit (no transaction)."""
    lock, unlock = sa.func.pg_try_advisory_lock, sa.func.pg_advisory_unlock
    try:
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
        raise TransientError(f"database unavailable: {type(error.orig).__name__}") from None
    with conn:
        try:
            mine = bool(conn.execute(sa.select(lock(DELIVERY_LOCK_KEY))).scalar())
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
            raise TransientError(f"database unavailable: {type(error.orig).__name__}") from None
        try:
            yield mine
        finally:
            try:
                if mine:
                    conn.execute(sa.select(unlock(DELIVERY_LOCK_KEY)))
            except sa.exc.SQLAlchemyError:
                conn.invalidate()  # then closing the session is what frees the lock


@dataclass
class _Run:
    """One deliverer's pass: what it claimed, sent, and which canais Slack holds back."""

    engine: sa.Engine
    sender: Sender
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    delivered: int = 0
    fallback: int = 0
    refusal: Rejected | None = None
    held: set[str] = field(default_factory=set)  # canais refused in this run
    all_held: bool = False
    accepted: set[str] = field(default_factory=set)  # canais Slack took a message for

    def deliver(self, limit: int, batch: int, deadline: float) -> None:
        """Claim and send batches until nothing is due, the limit, a refusal of all, or deadline."""
        while self.delivered + self.fallback < limit and time.monotonic() < deadline:
            n = min(batch, limit - self.delivered - self.fallback)
            rows = outbox_delivery.claim_batch(self.engine, self.run_id, n, LEASE)
            if not rows:
                return
            for row in rows:
                if not self.all_held and row.canal not in self.held:
                    self._send(row)
            if self.all_held:
                return

    def _send(self, row: sa.Row) -> None:
        try:
            self.sender.send(row.canal, row.texto)
        except TransientError as error:
            with transaction(self.engine) as conn:
                code = getattr(error, "code", "transient")
                outbox_delivery.record_attempt(conn, row.id, _short(error.reason), code)
            logger.warning("outbox %s not delivered, will retry: %s", row.id, error.reason)
            raise
        except Rejected as error:
            self._refused(row, error)
        else:
            self._accepted(row)

    def _accepted(self, row: sa.Row) -> None:
        cleared: list[str] = []
        with transaction(self.engine) as conn:
            outbox_delivery.mark_delivered(conn, row.id, self.sender.via)
            if row.canal not in self.accepted:
                self.accepted.add(row.canal)
                prefixes = [f"{REFUSED_PREFIX}{TOKEN}:", f"{REFUSED_PREFIX}{row.canal}:"]
                cleared = outbox_delivery.forget_alerts(conn, prefixes)
        self.delivered += 1
        if cleared:
            logger.warning("Slack accepts messages again (it was refusing: %s)", ", ".join(cleared))

    def _refused(self, row: sa.Row, error: Rejected) -> None:
        scope = classify(error.code)
        if scope == CONTENT:
            logger.error(
                "outbox %s refused by %s for its content (%s); delivered to this log instead: [%s] %s",
                row.id, self.sender.via, error.reason, row.canal, row.texto,
            )  # fmt: skip
            with transaction(self.engine) as conn:
                refusal = (_short(error.reason), error.code)
                outbox_delivery.mark_delivered(conn, row.id, "log", refusal)
            self.fallback += 1
            return
        canal = None if scope == TOKEN else row.canal
        wait = retry_delay(row.attempts + 1)
        with transaction(self.engine) as conn:
            outbox_delivery.record_attempt(conn, row.id, _short(error.reason), error.code)
            outbox_delivery.hold(conn, canal, wait)
            key = f"{REFUSED_PREFIX}{canal or TOKEN}:{error.code}"
            cooldown = outbox_delivery.alert_cooldown(conn, DEFAULT_COOLDOWN)
            first = outbox.claim(conn, key, cooldown=cooldown)
            waiting = outbox_delivery.pending_in(conn, canal)
        _log_refusal(first, error, canal, waiting, wait)
        self.refusal = error
        self.all_held = self.all_held or canal is None
        self.held.add(row.canal)

    def release(self) -> None:
        """Give back the leases of messages this run claimed and did not settle."""
        try:
            with transaction(self.engine) as conn:
                outbox_delivery.release(conn, self.run_id)
        except OrchestratorError as error:  # the leases expire by themselves
            logger.warning("outbox leases not released (%s); they expire in %s", error, LEASE)

    def result(self) -> dict:
        """The task's answer: status, counts, and what Slack refused, if anything."""
        out = {"status": "delivered", "delivered": self.delivered, "fallback": self.fallback}
        if self.refusal is not None:
            out.update(status="refused", code=self.refusal.code, reason=self.refusal.reason)
        return out


def _log_refusal(
    first: bool, error: Rejected, canal: str | None, waiting: int, wait: timedelta
) -> None:
    """ERROR once per cool-down per cause; the repeats at INFO."""
    what = "the token" if canal is None else f"channel of canal {canal!r}"
    logger.log(
        logging.ERROR if first else logging.INFO,
        "Slack refuses %s (%s): %d pending message(s) kept, next attempt in %ds; fix "
        "SLACK_BOT_TOKEN / the channel and they go out in order (%s)",
        what, error.code, waiting, wait.total_seconds(), error.reason,
    )  # fmt: skip


def _prune_if_due(engine: sa.Engine) -> None:
    """Prune at most once per PRUNE_EVERY; a failure here never fails the delivery."""
    try:
        with transaction(engine) as conn:
            due = outbox.claim(conn, PRUNE_KEY, cooldown=PRUNE_EVERY)
        if due and (removed := prune_delivered(engine)):
            logger.info("outbox: pruned %d message(s) delivered over %s ago", removed, RETENTION)
    except (OrchestratorError, sa.exc.SQLAlchemyError) as error:
        logger.warning("outbox pruning failed (%s); next try in %s", error, PRUNE_EVERY)


def prune_delivered(
    engine: sa.Engine, *, older_than: timedelta = RETENTION, limit: int = PRUNE_BATCH
) -> int:
    """Delete up to `limit` messages delivered more than `older_than` ago; how many went."""
    return outbox_delivery.prune_delivered(engine, older_than=older_than, limit=limit)


def _short(text: str) -> str:
    """An error as the outbox keeps it."""
    return text[:MAX_ERROR_LENGTH]
