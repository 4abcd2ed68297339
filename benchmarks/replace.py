"""Replacements: moving a big chip's conversations, ban-to-replaced latency, 1,000 bans at once."""

from __future__ import annotations

import collections
import time
from datetime import datetime

import sqlalchemy as sa
from celery import Celery

from benchmarks.common import QueryClock, median, ms, percentile, print_table
from benchmarks.datagen import add_chip_with_conversations
from orchestrator.services import replacement


def moving_conversations(engine: sa.Engine, conversations: int, runs: int) -> dict:
    """replacement.replace_chip on an active chip holding `conversations` open conversations."""
    walls, updates = [], []
    clock = QueryClock().attach(engine)
    try:
        for _ in range(runs):
            add_chip_with_conversations(engine, "ready", 100, 0)  # the best ready chip
            # Below trust_degraded_threshold: the low_trust reason is re-checked under the lock.
            chip = add_chip_with_conversations(engine, "active", 40, conversations)
            clock.reset()
            start = time.perf_counter()
            result = replacement.replace_chip(engine, chip, "low_trust")
            walls.append(time.perf_counter() - start)
            assert result["conversas_migradas"] == conversations, result
            updates.append(max(t for s, _, t in clock.statements if "conversation_chips" in s))
    finally:
        clock.detach(engine)
    row = {"conversations": conversations, "wall": median(walls), "update": median(updates)}
    print_table(
        f"Moving {conversations:,} open conversations off one chip (medians of {runs} runs)",
        ["conversations", "replace_chip wall ms", "the UPDATE ms", "rows/s"],
        [
            [
                f"{conversations:,}",
                ms(row["wall"]),
                ms(row["update"]),
                f"{conversations / row['wall']:,.0f}",
            ]
        ],
    )
    return row


def _active_ids(engine: sa.Engine, n: int) -> list[str]:
    with engine.connect() as conn:
        ids = conn.execute(
            sa.text(
                "SELECT id::text FROM chips WHERE status = 'active' ORDER BY random() LIMIT :n"
            ),
            {"n": n},
        ).scalars()
        return list(ids)


def _ban(engine: sa.Engine, ids: list[str]) -> None:
    """What other services do: flip the chips to banned (one statement, one commit)."""
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE chips SET status = 'banned' WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": ids},
        )


def _replace_started(engine: sa.Engine, ids: list[str]) -> dict[str, datetime]:
    """Each chip's auto_replace created_at (its transaction's start, by the database clock)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT chip_id::text, created_at FROM orchestrator_operations"
                " WHERE operacao = 'auto_replace' AND chip_id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": ids},
        )
        return dict(rows.all())


def _ban_and_wait(engine: sa.Engine, app: Celery, chip: str) -> tuple[float, float, str]:
    """Ban one chip, send its replace_chip, wait for the result: (sent, done, status)."""
    _ban(engine, [chip])
    time.sleep(0.01)  # let the workers go idle again
    sent = time.time()
    result = app.send_task("orchestrator.replace_chip", args=[chip]).get(timeout=60)
    return sent, time.time(), result["status"]


def latency(engine: sa.Engine, app: Celery, bans: int, warmup: int = 8) -> dict:
    """One ban at a time, idle workers: send_task -> transaction start, and -> result (committed).

    The first `warmup` bans are not counted: the first task of a fresh worker process connects
    to PostgreSQL and Redis and fills SQLAlchemy's caches (reported apart as "cold").
    """
    ids = _active_ids(engine, bans + warmup)
    warm = [_ban_and_wait(engine, app, chip) for chip in ids[:warmup]]
    cold = warm[0][1] - warm[0][0]
    ids = ids[warmup:]
    sent, done, statuses = {}, {}, collections.Counter()
    for chip in ids:
        sent[chip], done[chip], status = _ban_and_wait(engine, app, chip)
        statuses[status] += 1
    started = _replace_started(engine, ids)
    to_commit = [done[c] - sent[c] for c in ids]
    to_start = [started[c].timestamp() - sent[c] for c in ids if c in started]
    row = {
        "bans": bans,
        "cold": cold,
        "p50": percentile(to_commit, 50),
        "p95": percentile(to_commit, 95),
        "p99": percentile(to_commit, 99),
        "max": max(to_commit),
        "start_p50": percentile(to_start, 50),
        "start_p95": percentile(to_start, 95),
        "start_p99": percentile(to_start, 99),
        "statuses": dict(statuses),
    }
    print_table(
        f"Ban-to-replaced latency, idle workers ({bans} bans one after another, ms)",
        ["measured to", "p50", "p95", "p99", "max"],
        [
            [
                "result received (committed)",
                ms(row["p50"]),
                ms(row["p95"]),
                ms(row["p99"]),
                ms(row["max"]),
            ],
            [
                "transaction start (created_at)",
                ms(row["start_p50"]),
                ms(row["start_p95"]),
                ms(row["start_p99"]),
                "",
            ],
        ],
    )
    print(f"results: {row['statuses']}; first task of a fresh worker (cold): {ms(cold)} ms")
    return row


def _progress(engine: sa.Engine, ids: list[str]) -> tuple[int, int]:
    """(chips handled, auto_replace operations) among ids."""
    with engine.connect() as conn:
        return tuple(
            conn.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM chips WHERE id = ANY(CAST(:ids AS uuid[]))"
                    "          AND degraded_at IS NOT NULL),"
                    "       (SELECT count(*) FROM orchestrator_operations"
                    "         WHERE operacao = 'auto_replace' AND chip_id = ANY(CAST(:ids AS uuid[])))"
                ),
                {"ids": ids},
            ).one()
        )


def throughput(engine: sa.Engine, broker_url: str, bans: int, timeout: float = 300) -> dict:
    """Ban `bans` active chips in one statement, send one task each, poll until all are handled.

    The tasks go out through a broker-only client (as the cycle's fan-out or another service
    sends them); completion is read from the database every 20 ms.
    """
    ids = _active_ids(engine, bans)
    _ban(engine, ids)
    sender = Celery("bench-sender", broker=broker_url)
    start = time.time()
    with sender.producer_or_acquire() as producer:
        for chip in ids:
            sender.send_task("orchestrator.replace_chip", args=[chip], producer=producer)
    sent = time.time() - start
    sender.close()
    handled = replaced = 0
    while handled < bans and time.time() - start < timeout:
        time.sleep(0.02)
        handled, replaced = _progress(engine, ids)
    elapsed = time.time() - start
    return {
        "bans": bans,
        "seconds": elapsed,
        "send_seconds": sent,
        "per_second": replaced / elapsed,
        "not_replaced": bans - replaced,
    }


def print_throughput(row: dict, violations: int, checker: str) -> None:
    """The throughput table."""
    print_table(
        f"{row['bans']:,} chips banned at once, one worker with 4 processes",
        [
            "bans",
            "all handled after s",
            "sending took s",
            "replacements/s",
            "not replaced",
            "violations",
        ],
        [
            [
                f"{row['bans']:,}",
                f"{row['seconds']:.2f}",
                f"{row['send_seconds']:.2f}",
                f"{row['per_second']:.0f}",
                row["not_replaced"],
                f"{violations} ({checker})",
            ]
        ],
    )
