"""What a page of `chip-orchestrator chips` costs at 1M chips, with its index and without it.

`python -m benchmarks.chip_list [--chips N] [--runs R] [--url URL] [--json FILE]`: the `scale`
pool of benchmarks/datagen.py (10% active, 6% ready, 15% warming, 9% degraded, 60% cancelled,
DDDs 11..99 evenly), in a scratch database (or the already-built one at --url). For each page
(filters as ops type them), medians of the page's statements (the listed chips and their open
conversations, status by status) as they run, and with idx_chips_status_ddd_telefone dropped
inside a transaction that is rolled back (the baseline), interleaved run by run in the same
process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import sqlalchemy as sa

from benchmarks.common import (
    base_urls,
    engine_for,
    median,
    ms,
    print_table,
    scratch_database,
    timed,
)
from benchmarks.datagen import generate_pool
from orchestrator.domain.config import STATUSES
from orchestrator.services.chip_list import DEFAULT_LIMIT, MAX_LIMIT
from orchestrator.store.repository import chip_list

#: The index under test.
INDEX = "idx_chips_status_ddd_telefone"
#: Pages measured: (label, statuses, ddd, limit).
PAGES = (
    ("chips", list(STATUSES), None, DEFAULT_LIMIT),
    ("chips --status cancelled", ["cancelled"], None, DEFAULT_LIMIT),
    ("chips --status warming", ["warming"], None, DEFAULT_LIMIT),
    ("chips --ddd 55", list(STATUSES), 55, DEFAULT_LIMIT),
    ("chips --status cancelled --ddd 99", ["cancelled"], 99, DEFAULT_LIMIT),
    ("chips --status active --ddd 12", ["active"], 12, DEFAULT_LIMIT),
    (f"chips --limit {MAX_LIMIT}", list(STATUSES), None, MAX_LIMIT),
)


def page_once(conn: sa.Connection, statuses: list[str], ddd: int | None, limit: int) -> float:
    """Seconds of one page (limit + 1 rows, as the command asks)."""
    seconds, rows = timed(lambda: chip_list.list_chips(conn, statuses, ddd, limit + 1))
    assert rows, "the page is empty: is the pool generated?"
    return seconds


def run(engine: sa.Engine, runs: int) -> dict[str, dict[str, float]]:
    """Per page: median seconds with the index and without it, interleaved run by run."""
    figures: dict[str, dict[str, float]] = {}
    with engine.connect() as conn:
        for label, statuses, ddd, limit in PAGES:
            times: dict[str, list[float]] = {"with": [], "without": []}
            for run_no in range(runs + 1):
                now = page_once(conn, statuses, ddd, limit)
                conn.rollback()
                conn.execute(sa.text(f"DROP INDEX {INDEX}"))  # a catalog change, rolled back
                before = page_once(conn, statuses, ddd, limit)
                conn.rollback()
                if run_no:  # the first round warms caches
                    times["with"].append(now)
                    times["without"].append(before)
            figures[label] = {name: median(values) for name, values in times.items()}
    return figures


def report(chips: int, figures: dict[str, dict[str, float]]) -> None:
    print_table(
        f"`chips` pages at {chips:,} chips (medians, ms)",
        ["page", "with the index", "without it (baseline)", "ratio"],
        [
            (label, ms(f["with"]), ms(f["without"]), f"{f['without'] / f['with']:.1f}x")
            for label, f in figures.items()
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--url", help="an already-built pool (skips generation)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    database_url, _ = base_urls()
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(scratch_database(database_url))
        engine = engine_for(url, statement_timeout_ms=600_000)
        stack.callback(engine.dispose)
        if not args.url:
            generate_pool(engine, args.chips, per_chip=1, mix="scale")
        with engine.connect() as conn:
            chips = conn.execute(sa.text("SELECT count(*) FROM chips")).scalar_one()
        figures = run(engine, args.runs)
        report(chips, figures)
        if args.json:
            Path(args.json).write_text(json.dumps({"chips": chips, "pages": figures}, indent=2))


if __name__ == "__main__":
    main()
