"""Slack refusing our token, then accepting it again: `python -m benchmarks.slack_refusal`.

One real `celery -A tasks worker -c 2` on a scratch database, with SLACK_BOT_TOKEN and
SLACK_API_URL pointing at FakeSlack (a local HTTP server speaking chat.postMessage). The script
plays beat: `orchestrator.deliver_notifications` every 10 s (expires 10 s), as celeryconfig
schedules it. While FakeSlack answers `token_revoked` it queues N alerts; then the token is valid
again, and it measures how long until the last one is delivered (database clock).
"""

from __future__ import annotations

import argparse
import json
import time

import sqlalchemy as sa
from celery import Celery

from benchmarks import workers
from benchmarks.common import base_urls, engine_for, free_redis_db, print_table, scratch_database
from orchestrator.services import delivery
from orchestrator.store import outbox
from tests.support.fake_slack import FakeSlack

#: Beat's period for deliver_notifications (celeryconfig.beat_schedule).
TICK_SECONDS = 10.0
#: Defaults: alerts queued while refused, and for how long Slack refuses.
ALERTS, REFUSED_SECONDS = 50, 180.0

COUNTS = """
SELECT count(*) FILTER (WHERE delivered_at IS NULL) AS pending,
       count(*) FILTER (WHERE delivered_via = 'log') AS via_log,
       count(*) FILTER (WHERE delivered_via = 'slack') AS via_slack,
       max(attempts) AS max_attempts
  FROM notification_outbox
"""


class Beat:
    """Sends deliver_notifications every TICK_SECONDS, like celery beat."""

    def __init__(self, client: Celery) -> None:
        self.client, self.next_at, self.ticks = client, 0.0, 0

    def maybe_tick(self) -> None:
        if time.monotonic() >= self.next_at:
            name = "orchestrator.deliver_notifications"
            self.client.send_task(name, expires=TICK_SECONDS)
            self.next_at, self.ticks = time.monotonic() + TICK_SECONDS, self.ticks + 1


def counts(engine: sa.Engine) -> sa.Row:
    with engine.connect() as conn:
        return conn.execute(sa.text(COUNTS)).one()


def run(alerts: int, refused_seconds: float) -> dict:
    """The whole scenario; returns the figures."""
    database_url, redis_base = base_urls()
    slack = FakeSlack()
    slack.start()
    with scratch_database(database_url) as url, free_redis_db(redis_base) as redis_url:
        engine = engine_for(url)
        client = Celery("bench-slack", broker=redis_url)
        env = workers.worker_env(url, redis_url)
        env.update(SLACK_BOT_TOKEN=slack.token, SLACK_API_URL=slack.base_url)
        worker = workers.Worker(env, 2)
        try:
            worker.wait_ready(client)
            return scenario(engine, slack, Beat(client), worker, alerts, refused_seconds)
        finally:
            worker.stop()
            client.close()
            engine.dispose()
            slack.stop()


def scenario(
    engine: sa.Engine,
    slack: FakeSlack,
    beat: Beat,
    worker: workers.Worker,
    alerts: int,
    refused_seconds: float,
) -> dict:
    """Refuse for refused_seconds while queueing the alerts, then accept; measure the drain."""
    slack.refuse_with = "token_revoked"
    texts = [f":rotating_light: alerta de teste {n}" for n in range(alerts)]
    start = time.monotonic()
    queued = 0
    while time.monotonic() - start < refused_seconds:
        due = min(alerts, int(alerts * (time.monotonic() - start) / (refused_seconds / 2)) + 1)
        for texto in texts[queued:due]:
            with engine.begin() as conn:
                outbox.enqueue(conn, "alertas", texto)
        queued = due
        beat.maybe_tick()
        time.sleep(0.2)
    during = counts(engine)
    calls_refused = slack.calls
    with engine.connect() as conn:
        fixed_at = conn.execute(sa.text("SELECT now()")).scalar_one()
    slack.refuse_with = None
    deadline = time.monotonic() + delivery.RETRY_CAP.total_seconds() + 4 * TICK_SECONDS
    while counts(engine).pending and time.monotonic() < deadline:
        beat.maybe_tick()
        time.sleep(0.2)
    after = counts(engine)
    with engine.connect() as conn:
        last = conn.execute(sa.text("SELECT max(delivered_at) FROM notification_outbox")).scalar()
    log = worker.log_path.read_text()
    return {
        "alerts": alerts,
        "refused_seconds": refused_seconds,
        "ticks": beat.ticks,
        "slack_calls_while_refused": calls_refused,
        "pending_while_refused": during.pending,
        "via_log_while_refused": during.via_log,
        "max_attempts_while_refused": during.max_attempts,
        "refusal_error_lines_in_log": sum(
            "Slack refuses" in line and "ERROR" in line for line in log.splitlines()
        ),
        "delivered_after": after.via_slack,
        "pending_after": after.pending,
        "delivered_once_in_order": slack.texts() == texts,
        "seconds_to_drain_after_fix": (last - fixed_at).total_seconds() if last else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=ALERTS)
    parser.add_argument("--refused-seconds", type=float, default=REFUSED_SECONDS)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    figures = run(args.alerts, args.refused_seconds)
    print_table(
        "Slack refusing the token, then accepting it", ["figure", "value"], list(figures.items())
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
