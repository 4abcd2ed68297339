"""Adopting a big seed-era database while other services write: `python -m benchmarks.adoption`.

Builds the seed's tables (tests/support/seed_era.py) with --chips chips (default 1M) and
conversations on a third of them, then runs `orchestrator.store.migrate.upgrade` (adoption, then
0002..0004) while --writers threads send the other services' plain autocommit statements
(insert a chip, flip evolution_connected, update trust, insert a conversation, update
pool_config) and time each one. Prints the time of every adoption step, the phases, and the
writers' latencies before and during adoption: the longest a writer was blocked.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa

from benchmarks.common import base_urls, describe_machine, median, ms, percentile, print_table
from orchestrator.dev import scratch
from orchestrator.store import migrate
from orchestrator.store.adoption.run import Event, Options
from tests.support import seed_era

STATEMENTS = {
    "insert chip": (
        "INSERT INTO chips (telefone, instance_name, status, trust_score, trust_level, fase_warmup,"
        " warming_started_at, evolution_connected, msgs_enviadas_hoje) VALUES (:tel, 'svc',"
        " 'warming', :trust, 'baixo', 'primeiros_contatos', now(), true, 0)"
    ),
    "flip evolution_connected": "UPDATE chips SET evolution_connected = :flag WHERE id = :id",
    "update trust": (
        "UPDATE chips SET trust_score = :trust, msgs_enviadas_hoje = msgs_enviadas_hoje + 1"
        " WHERE id = :id"
    ),
    "insert conversation": (
        "INSERT INTO conversation_chips (conversation_id, chip_id) VALUES (:conv, :id)"
    ),
    "update pool_config": "UPDATE pool_config SET warmup_buffer = :n",
}


def empty_database(base_url: str) -> contextlib.AbstractContextManager[str]:
    """A scratch database with nothing in it (not migrated), dropped afterwards."""
    return scratch.scratch_database(base_url, prefix="chiporch_bench", migrated=False)


@dataclass
class Writers:
    """Threads sending the other services' statements; each latency with its start time."""

    url: str
    ids: list[str]
    threads: int
    samples: list[tuple[float, float, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> list[threading.Thread]:
        engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT", pool_size=self.threads)
        workers = [
            threading.Thread(target=self._loop, args=(engine, n), daemon=True)
            for n in range(self.threads)
        ]
        for w in workers:
            w.start()
        return workers

    def _loop(self, engine: sa.Engine, n: int) -> None:
        rng = random.Random(n)
        kinds = list(STATEMENTS)
        with engine.connect() as conn:
            while not self.stop.is_set():
                kind = kinds[rng.randrange(len(kinds))]
                params = {
                    "tel": f"+5511{uuid.uuid4().int % 10**9:09d}",
                    "trust": rng.randint(0, 100),
                    "flag": rng.random() < 0.5,
                    "id": rng.choice(self.ids),
                    "conv": f"bench-{uuid.uuid4().hex}",
                    "n": rng.randint(5, 15),
                }
                start = time.perf_counter()
                try:
                    conn.execute(sa.text(STATEMENTS[kind]), params)
                except Exception as error:  # counted and printed: there should be none
                    self.errors.append(f"{kind}: {type(error).__name__}: {error}"[:200])
                self.samples.append((start, time.perf_counter() - start, kind))
                time.sleep(0.002)  # a busy service, not a load test


def build(url: str, chips: int, per_chip: int) -> None:
    """The seed-era tables with rows, vacuumed and analysed like a live table."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        seed_era.create_seed_schema(conn, operations=True)
        conn.exec_driver_sql(
            "ALTER TABLE chips ADD COLUMN created_at timestamptz DEFAULT now()"
        )  # a typical extra column of theirs
        seed_era.fill(conn, chips, conversations_per_chip=per_chip)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()


def stats(values: list[float]) -> tuple[str, str, str, str]:
    return (
        str(len(values)),
        ms(median(values)),
        ms(percentile(values, 99)),
        ms(max(values or [0])),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=1_000_000)
    parser.add_argument("--conversations-per-chip", type=int, default=3)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--baseline-seconds", type=float, default=5.0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    base_url, _ = base_urls()
    with empty_database(base_url) as url:
        engine = sa.create_engine(url)
        print("machine:", json.dumps(describe_machine(engine), indent=1))
        started = time.perf_counter()
        build(url, args.chips, args.conversations_per_chip)
        with engine.connect() as conn:
            sizes = conn.exec_driver_sql(
                "SELECT relname, reltuples::bigint, pg_size_pretty(pg_total_relation_size(oid))"
                " FROM pg_class WHERE relname IN ('chips', 'conversation_chips') ORDER BY 1"
            ).all()
            ids = [
                str(i) for i in conn.exec_driver_sql("SELECT id FROM chips LIMIT 5000").scalars()
            ]
        print(f"built in {time.perf_counter() - started:.1f} s: {sizes}", flush=True)

        writers = Writers(url, ids, args.writers)
        threads = writers.run()
        time.sleep(args.baseline_seconds)
        events: list[tuple[float, Event]] = []
        adoption_start = time.perf_counter()
        options = Options(progress=lambda e: events.append((time.perf_counter(), e)))
        before, after = migrate.upgrade(url, options)
        finished = time.perf_counter()
        time.sleep(1.0)
        writers.stop.set()
        for t in threads:
            t.join(30)
        engine.dispose()

    steps = [(e.what, e.seconds) for _, e in events if e.kind in ("preflight", "after")]
    adoption_end = max(t for t, e in events if e.kind == "after")
    locked = [(t, e) for t, e in events if e.kind == "after" and "transaction" in e.what]
    online = [s for w, s in steps if not w.endswith("statements)") and "row checks" not in w]
    phases = [
        ("preflight (reads)", steps[0][1]),
        ("short locked transactions (held)", sum(e.seconds for _, e in locked)),
        ("online steps (CONCURRENTLY, VALIDATE, backfill)", sum(online)),
        ("adoption in all", adoption_end - adoption_start),
        ("revisions 0002..0004 after the stamp", finished - adoption_end),
        ("migrate in all", finished - adoption_start),
    ]
    print_table(
        f"Adoption of {args.chips:,} chips: phases ({before} -> {after})",
        ("phase", "seconds"),
        [(name, f"{s:.2f}") for name, s in phases],
    )
    print_table(
        "Adoption steps, slowest first (the 15 slowest)",
        ("step", "ms"),
        [(w, ms(s)) for w, s in sorted(steps, key=lambda x: -x[1])[:15]],
    )
    base = [lat for t, lat, _ in writers.samples if t < adoption_start]
    during = [lat for t, lat, _ in writers.samples if adoption_start <= t <= finished]
    rows = [("before migrate", *stats(base)), ("during migrate", *stats(during))]
    for kind in STATEMENTS:
        rows.append(
            (
                f"  during: {kind}",
                *stats(
                    [
                        lat
                        for t, lat, k in writers.samples
                        if adoption_start <= t <= finished and k == kind
                    ]
                ),
            )
        )
    print_table(
        f"Other services' statements ({args.writers} writers), latency in ms",
        ("when", "statements", "median", "p99", "max"),
        rows,
    )
    worst = max(writers.samples, key=lambda s: s[1] if adoption_start <= s[0] <= finished else 0)
    print(
        f"longest a writer was blocked: {ms(worst[1])} ms ({worst[2]}, started"
        f" {worst[0] - adoption_start:.2f} s into migrate); statement errors: {len(writers.errors)}"
    )
    for error in writers.errors[:5]:
        print("  ", error)
    print("when the locks were held (seconds into migrate):")
    for t, e in locked:
        print(f"  {t - e.seconds - adoption_start:6.2f} .. {t - adoption_start:6.2f}  {e.what}")
    print(f"  {adoption_end - adoption_start:6.2f} .. {finished - adoption_start:6.2f}  revisions")
    print("the five slowest writer statements during migrate (seconds into migrate, ms):")
    slow = sorted(
        (s for s in writers.samples if adoption_start <= s[0] <= finished), key=lambda s: -s[1]
    )
    for start, latency, kind in slow[:5]:
        print(f"  {start - adoption_start:6.2f}  {ms(latency):>6}  {kind}")
    print(
        "in one transaction, writers would have waited for every step:"
        f" {sum(s for _, s in steps):.2f} s"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "chips": args.chips,
                    "phases": dict(phases),
                    "steps": steps,
                    "writer_max_ms": worst[1] * 1000,
                    "writer_errors": len(writers.errors),
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
