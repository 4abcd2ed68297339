"""Replacements: moving a big chip's conversations, ban-to-replaced latency, 1,000 bans at once."""

from __future__ import annotations

import collections
import time
from datetime import datetime

import sqlalchemy as sa
from celery import Celery

from benchmarks.common import QueryClock, median, ms, percentile, print_table
from benchmarks.datagen import add_chip_with_conversations
from orchestrator import lifecycle


def moving_conversations(engine: sa.Engine, conversations: int, runs: int) -> dict:
    """lifecycle.replace_chip on an active chip holding `conversations` open conversations."""
    walls, updates = [], []
    clock = QueryClock().attach(engine)
    try:
        for _ in range(runs):
            add_chip_with_conversations(engine, "ready", 100, 0)  # the best ready chip
            chip = add_chip_with_conversations(engine, "active", 90, conversations)
            clock.reset()
            start = time.perf_counter()
            result = lifecycle.replace_chip(engine, chip, "low_trust")
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


def latency(engine: sa.Engine, app: Celery, bans: int) -> dict:
    """One ban at a time, idle workers: send_task -> transaction start, and -> result (committed)."""
    ids = _active_ids(engine, bans)
    sent, done, statuses = {}, {}, collections.Counter()
    for chip in ids:
        _ban(engine, [chip])
        time.sleep(0.01)  # let the workers go idle again
        sent[chip] = time.time()
        result = app.send_task("orchestrator.replace_chip", args=[chip]).get(timeout=60)
        done[chip] = time.time()
        statuses[result["status"]] += 1
    started = _replace_started(engine, ids)
    to_commit = [done[c] - sent[c] for c in ids]
    to_start = [started[c].timestamp() - sent[c] for c in ids if c in started]
    row = {
        "bans": bans,
        "p50": percentile(to_commit, 50),
        "p95": percentile(to_commit, 95),
        "p99": percentile(to_commit, 99),
        "max": max(to_commit),
        "start_p50": percentile(to_start, 50),
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
            ["transaction start (created_at)", ms(row["start_p50"]), "", ms(row["start_p99"]), ""],
        ],
    )
    print(f"results: {row['statuses']}")
    return row


def throughput(engine: sa.Engine, app: Celery, bans: int) -> dict:
    """Ban `bans` active chips in one statement, send one task each, wait until all are done."""
    ids = _active_ids(engine, bans)
    _ban(engine, ids)
    start = time.time()
    pending = [app.send_task("orchestrator.replace_chip", args=[chip]) for chip in ids]
    sent = time.time() - start
    statuses = collections.Counter(r.get(timeout=300)["status"] for r in pending)
    elapsed = time.time() - start
    with engine.connect() as conn:
        left = conn.execute(
            sa.text(
                "SELECT count(*) FROM chips WHERE status = 'banned' AND degraded_at IS NULL"
                " AND id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": ids},
        ).scalar_one()
    row = {
        "bans": bans,
        "seconds": elapsed,
        "send_seconds": sent,
        "per_second": statuses["replaced"] / elapsed,
        "not_replaced": left,
        "statuses": dict(statuses),
    }
    return row


def print_throughput(row: dict, violations: int, checker: str) -> None:
    """The throughput table."""
    print_table(
        f"{row['bans']:,} chips banned at once, one worker with 4 processes",
        [
            "bans",
            "all replaced after s",
            "sending took s",
            "replacements/s",
            "left unreplaced",
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
    print(f"results: {row['statuses']}")
