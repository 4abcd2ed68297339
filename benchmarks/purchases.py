"""Purchases under overlap and under failure: `python -m benchmarks.purchases`.

Figures (counts, not timings), for this code or, run from another checkout, for that one:
- 8 overlapping cycles with a slow Salvy: each cycle is stopped between its snapshot and its
  intent insert (a SHARE lock on `chips` held here), and its cycle guard, if any, is lost (its
  connection killed) so the next cycle is not skipped; then all go on and every dispatched
  purchase runs against the Salvy stand-in. Deficit 3.
- 10 failing cycles a minute apart (the clock is moved, not waited for), Salvy with every DDD out
  of stock, then Salvy refusing the token: purchase attempts (intents recorded, POSTs, API calls),
  rows left in `chips`, alerts queued.
"""

from __future__ import annotations

import argparse
import threading
import time
from datetime import timedelta

import redis
import sqlalchemy as sa

from benchmarks.common import base_urls, engine_for, free_redis_db, print_table, scratch_database
from orchestrator import task_names
from orchestrator.adapters import locks
from orchestrator.adapters.salvy import SalvyClient
from orchestrator.dev.salvy_standin import DEFAULT_STOCK, SalvyStandin
from orchestrator.errors import OrchestratorError
from orchestrator.services import dispatch
from orchestrator.services.purchase import provision
from tests.support.pg_waits import kill_cycle_guard_holder as lose_guard
from tests.support.pg_waits import waiting_backends as waiting

#: The cycle guard's advisory key (None in a checkout from before the guard).
GUARD_KEY = getattr(locks, "CYCLE_GUARD_KEY", None)
#: Seconds the stand-in adds to every Salvy request in the overlap scenario ("a slow Salvy").
SLOW_SALVY = 0.5

RESET = """
TRUNCATE alert_state, notification_outbox, orchestrator_operations, conversation_chips, chips;
UPDATE pool_config SET producao_min = 0, ready_min = 0, warmup_buffer = 3,
    max_provisions_per_cycle = 3, auto_provision = true, alert_cooldown_minutes = 30;
"""


class Collect:
    """The broker: remembers the purchase tasks a cycle sent."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def __call__(self, name: str, args: list, task_id: str | None) -> None:
        if name == task_names.PROVISION and task_id:
            self.keys.append(task_id)


def reset(engine: sa.Engine, client: redis.Redis, standin: SalvyStandin) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(RESET))
        if conn.execute(sa.text("SELECT to_regclass('purchase_backoff')")).scalar():
            conn.execute(sa.text("TRUNCATE purchase_backoff"))
    for key in client.scan_iter("chiporch:*"):
        client.delete(key)
    standin.reset()


def buy(engine: sa.Engine, standin: SalvyStandin, keys: list[str]) -> None:
    """Run the dispatched purchases as workers would, all at once."""

    def one(key: str) -> None:
        salvy = SalvyClient(standin.url, "salvy_test_bench", read_timeout=10)
        try:
            provision(engine, salvy, key)
        except OrchestratorError:
            pass
        finally:
            salvy.close()

    threads = [threading.Thread(target=one, args=(k,)) for k in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def overlapping_cycles(url: str, client: redis.Redis, standin: SalvyStandin, n: int) -> dict:
    """n cycles forced to overlap; then their purchases run against a slow Salvy."""
    engine = engine_for(url, pool_size=3 * n)
    reset(engine, client, standin)
    standin.set_faults(latency=SLOW_SALVY)
    brokers, threads = [Collect() for _ in range(n)], []
    with engine.connect() as holder:
        holder.execute(sa.text("LOCK TABLE chips IN SHARE MODE"))
        for broker in brokers:
            client.delete("chiporch:cycle:slot")  # the old code's period slot
            thread = threading.Thread(
                target=dispatch.run_cycle,
                args=(engine, client, broker),
                kwargs={"period_seconds": 60},
            )
            thread.start()
            threads.append(thread)
            started, deadline = len(threads), time.monotonic() + 20
            while waiting(engine) < started and time.monotonic() < deadline:
                time.sleep(0.02)
            lose_guard(engine)
        holder.commit()
    for thread in threads:
        thread.join(30)
    keys = [k for b in brokers for k in b.keys]
    buy(engine, standin, keys)
    engine.dispose()
    return {"intents": len(keys), "posts": standin.posts, "bought": standin.purchases}


def a_minute_passes(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        if conn.execute(sa.text("SELECT to_regclass('purchase_backoff')")).scalar():
            conn.execute(sa.text("UPDATE purchase_backoff SET paused_until = paused_until - :d"),
                         {"d": timedelta(minutes=1)})  # fmt: skip
        conn.execute(sa.text("UPDATE alert_state SET last_sent_at = last_sent_at - :d"),
                     {"d": timedelta(minutes=1)})  # fmt: skip


def failing_cycles(url: str, client: redis.Redis, standin: SalvyStandin, fault: dict) -> dict:
    """10 cycles a minute apart while every purchase fails the same way."""
    engine = engine_for(url)
    reset(engine, client, standin)
    standin.set_faults(**fault)
    for _ in range(10):
        client.delete("chiporch:cycle:slot")
        broker = Collect()
        dispatch.run_cycle(engine, client, broker, period_seconds=60)
        buy(engine, standin, broker.keys)
        a_minute_passes(engine)
    with engine.connect() as conn:

        def scalar(sql: str) -> int:
            return conn.execute(sa.text(sql)).scalar_one()

        figures = {
            "intents": scalar(
                "SELECT count(*) FROM orchestrator_operations WHERE operacao = 'auto_provision'"
            ),
            "posts": standin.posts,
            "api_calls": standin.requests,
            "chips_rows": scalar("SELECT count(*) FROM chips"),
            "alerts": scalar("SELECT count(*) FROM notification_outbox WHERE canal = 'alertas'"),
        }
    engine.dispose()
    return figures


def main(argv: list[str] | None = None) -> None:
    """Print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="this checkout", help="name of the code measured")
    args = parser.parse_args(argv)
    base_db, base_redis = base_urls()
    with (
        scratch_database(base_db) as url,
        free_redis_db(base_redis) as redis_url,
        SalvyStandin() as standin,
    ):
        client = redis.Redis.from_url(redis_url)
        overlap = overlapping_cycles(url, client, standin, 8)
        stock = failing_cycles(url, client, standin, {"out_of_stock": list(DEFAULT_STOCK)})
        token = failing_cycles(url, client, standin, {"refuse_token": True})
        client.close()
    print_table(
        f"8 overlapping cycles, slow Salvy, deficit 3 ({args.label})",
        ["intents", "POSTs", "numbers bought"],
        [[overlap["intents"], overlap["posts"], overlap["bought"]]],
    )
    print_table(
        f"10 failing cycles, a minute apart ({args.label})",
        ["Salvy", "intents", "POSTs", "API calls", "chips rows left", "alerts"],
        [
            [name, f["intents"], f["posts"], f["api_calls"], f["chips_rows"], f["alerts"]]
            for name, f in (("every DDD out of stock", stock), ("token refused", token))
        ],
    )


if __name__ == "__main__":
    main()
