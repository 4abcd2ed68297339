"""How fast this machine runs Python right now: a fixed piece of work and its CPU time.

On a VM the same code costs more CPU when the host's other tenants are busy (they share its
caches and memory bandwidth): the same swap took 4.6 ms of CPU per swap at 1M chips one morning
and 13 ms another afternoon, and this probe's median moved with it. Read beside a run's CPU
per swap, it tells a slow hour from slow code. The work is what a task does most: dicts keyed
by strings, small objects, function calls, JSON both ways. A CPU time, never a pass/fail.
"""

from __future__ import annotations

import json
import statistics
import time


def _work(n: int) -> int:
    index: dict[str, tuple[int, str]] = {}
    for i in range(n):
        index[f"chip-{i}"] = (i, str(i * 7))
    rows = [{"id": key, "n": value[0], "s": value[1]} for key, value in index.items()]
    decoded = json.loads(json.dumps(rows[: n // 4]))
    return sum(len(row["s"]) for row in decoded)


def python_work_cpu_ms(repeats: int = 5, n: int = 20_000) -> float:
    """Median CPU time (ms, this thread) of the fixed work over `repeats` runs."""
    _work(n // 10)  # the code and allocator warm
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        _work(n)
        times.append((time.thread_time() - start) * 1000)
    return statistics.median(times)


if __name__ == "__main__":
    print(f"{python_work_cpu_ms():.1f} ms of CPU for the fixed Python work")
