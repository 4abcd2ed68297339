"""The benchmarks still run against today's code (they print the figures docs/benchmarks.md
quotes): the scale benchmark at a tiny size, the quick capacity, reports and history-costs groups.

Figures are not asserted (speed is measured, never tested); what they measure is: every burst
replaced exactly its bans, each with a distinct ready chip, and producao_max held.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import syscalls
from orchestrator.app.settings import ROOT
from tests.support import servers


def _run(args: list[str], tmp_path: Path) -> dict:
    env = {
        **os.environ,
        "DATABASE_URL": servers.base_database_url(),
        "REDIS_URL": servers.base_redis_url(),
    }
    out_file = tmp_path / "out.json"
    done = subprocess.run(
        [sys.executable, "-m", *args, "--json", str(out_file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(out_file.read_text())


@pytest.mark.db
def test_the_scale_benchmark_runs_and_its_bursts_are_exact(tmp_path: Path) -> None:
    out = _run(
        [
            "benchmarks.scale",
            "--sizes",
            "2000",
            "--runs",
            "1",
            "--latency-bans",
            "3",
            "--burst",
            "20",
        ],
        tmp_path,
    )
    [size] = out["sizes"]
    assert size["chips"] == 2000
    for variant in ("now", "before", "watched"):
        [burst] = size["swap"][variant]["runs"]["bursts"]
        assert burst["statuses"] == {"replaced": 20, "not replaced": 0}
        assert burst["distinct_replacements"] == 20
    for variant in ("now", "before"):
        assert [r["replaced"] for r in size["db_burst"][variant]["runs"]] == [20]
    assert size["swap"]["active_above_max"] == 0
    assert size["cycle"]["now"] > 0


@pytest.mark.db
def test_the_swap_floor_benchmark_runs_and_counts_the_round_trips(tmp_path: Path) -> None:
    out = _run(
        [
            "benchmarks.swap_floor",
            "--sizes",
            "2000",
            "--runs",
            "1",
            "--swaps",
            "5",
            "--latency-bans",
            "3",
            "--burst",
            "20",
        ],
        tmp_path,
    )
    [size] = out
    assert size["chips"] == 2000
    # A pool this small is near producao_max: its swaps take the exact path (pool_config and
    # every slot locked, the count checked), a few round trips more on both sides (how many
    # the counts' check takes varies; tests/services/test_swap_round_trips.py pins the swap's).
    now, previous = (size["in_process"][v]["per_swap"] for v in ("now", "previous"))
    assert previous["round trips"] - now["round trips"] >= 10
    assert (now["pings"], previous["pings"]) == (0, 1)
    for variant in ("now", "watched", "previous"):
        assert size["workers"][variant]["replaced"] == [20]
        # how fast the VM ran Python just before the burst (a CPU time, so above zero)
        assert size["workers"][variant]["python_probe_ms"][0] > 0


@pytest.mark.db
@pytest.mark.skipif(not syscalls.available(), reason="needs strace allowed to attach")
def test_the_swap_floor_benchmark_counts_system_calls_per_swap(tmp_path: Path) -> None:
    out = _run(
        ["benchmarks.swap_floor", "--sizes", "2000", "--syscalls", "--burst", "20"], tmp_path
    )
    [size] = out
    counts = size["syscalls"]
    assert counts["swaps"] == 20
    per_swap = counts["per_swap"]
    assert set(per_swap) == {
        "worker main process",
        "worker children",
        "PostgreSQL backends",
        "Redis server",
    }
    # every swap reached PostgreSQL and Redis from the children, and both servers answered
    assert per_swap["worker children"].get("sendto", 0) >= 4
    assert per_swap["PostgreSQL backends"].get("sendto", 0) >= 1
    assert per_swap["Redis server"]["all"] >= 4
    assert counts["pipe_round_trip_us"] > 0


@pytest.mark.db
def test_the_pool_choice_benchmark_swaps_every_ban_with_either_pool(tmp_path: Path) -> None:
    out = _run(
        ["benchmarks.pool_choice", "--size", "2000", "--runs", "2", "--burst", "20", "--solo", "2"],
        tmp_path,
    )
    assert out["chips"] == 2000
    assert set(out["kinds"]) == {"prefork -c 4", "solo x 2"}
    for figures in out["kinds"].values():
        assert figures["replaced"] == [20, 20]
        assert all(x > 0 for x in figures["workers_cpu_ms"])


def test_strace_summaries_are_read_with_their_failed_calls() -> None:
    report = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 43.29    0.000400          13        30        13 openat
 19.81    0.000183           8        21           mmap
------ ----------- ----------- --------- --------- ----------------
100.00    0.000583          11        51        13 total
"""
    counts = syscalls.parse(report)
    assert counts == {"openat": (30, 13), "mmap": (21, 0)}
    assert syscalls.per_swap(counts, 3) == {
        "all": 17.0,
        "failed": 13 / 3,
        "openat": 10.0,
        "mmap": 7.0,
    }


@pytest.mark.db
@pytest.mark.parametrize("group", ["capacity", "reports"])
def test_the_quick_planning_benchmarks_run(tmp_path: Path, group: str) -> None:
    out = _run(["benchmarks.run_all", "--quick", "--only", group], tmp_path)
    assert out[group]


@pytest.mark.db
def test_the_counts_check_benchmark_runs_and_finds_no_drift_in_a_consistent_pool(
    tmp_path: Path,
) -> None:
    out = _run(["benchmarks.tally_check", "--chips", "3000", "--runs", "2"], tmp_path)
    assert out["chips"] == 3000
    assert out["corrections"] == 0
    assert out["with"] > 0 and out["without"] > 0 and out["everything"] > 0


@pytest.mark.db
def test_the_chip_list_benchmark_runs_every_page_with_and_without_its_index(
    tmp_path: Path,
) -> None:
    out = _run(["benchmarks.chip_list", "--chips", "3000", "--runs", "2"], tmp_path)
    assert out["chips"] == 3000
    assert len(out["pages"]) == 7
    assert all(f["with"] > 0 and f["without"] > 0 for f in out["pages"].values())


@pytest.mark.db
def test_the_history_costs_benchmark_runs_and_both_ways_export_the_same_counts(
    tmp_path: Path,
) -> None:
    out = _run(["benchmarks.history_costs", "--quick", "--runs", "2"], tmp_path)
    assert out["sizes"]["chips"] == 5_000
    assert out["sizes"]["operations"] == 5_000 * 10 + 3_000  # ten each, a cancel per cancelled
    assert out["same_operation_counts"] is True
    # one load count per chip of the sample, vs one per healthy active chip (~500) before
    assert out["pick_probes"]["now"] == 100 < out["pick_probes"]["before"]
    for variant in ("now", "before"):
        assert [m["status"] for m in out["moves"][variant]] == ["migrated", "migrated"]
        assert {m["destino_por"] for m in out["moves"][variant]} == {"menos_carregado"}
        assert {m["conversas_migradas"] for m in out["moves"][variant]} == {10}
