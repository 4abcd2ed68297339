"""What a swap asks of the kernel: system calls per swap, by process, counted by `strace -c`.

On a VM a system call is cheap and a wake-up is not: each round trip to PostgreSQL or Redis,
and each message between a worker's main process and its children, puts one process to sleep
and wakes another (pipe_round_trip_cpu_us() measures what that costs the machine). Counting
the calls each process makes through a burst says how many of those a swap costs, and which
are nobody's work (a system call that fails, say, because its caller did not remember what it
had already done). strace slows the processes it watches: read counts here, never times.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence

#: A row of `strace -c`: % time, seconds, usecs/call, calls, [errors], syscall.
_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$")


def available() -> bool:
    """strace is installed and may attach to this user's processes (ptrace allowed)."""
    if shutil.which("strace") is None:
        return False
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = int(f.read().strip())
    except (OSError, ValueError):
        scope = 0
    return scope == 0 or (scope == 1 and os.geteuid() == 0)


def parse(report: str) -> dict[str, tuple[int, int]]:
    """`strace -c` output -> {syscall: (calls, failed calls)}."""
    counts: dict[str, tuple[int, int]] = {}
    for line in report.splitlines():
        match = _ROW.match(line)
        if match and match.group(3) != "total":
            counts[match.group(3)] = (int(match.group(1)), int(match.group(2) or 0))
    return counts


@contextlib.contextmanager
def counting(
    groups: Mapping[str, Sequence[int]],
) -> Iterator[dict[str, dict[str, tuple[int, int]]]]:
    """Count the system calls of each group of processes through the block.

    One `strace -c` per group, attached to its pids before the block runs (one second to
    attach) and detached after it; the dict yielded is filled on leaving: {group: {syscall:
    (calls, failed)}}. A group with no pid is left out.
    """
    tracers = {
        name: subprocess.Popen(
            ["strace", "-c", *(arg for pid in pids for arg in ("-p", str(pid)))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, pids in groups.items()
        if pids
    }
    counts: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        time.sleep(1.0)  # every tracer attached before the work starts
        yield counts
    finally:
        for tracer in tracers.values():
            tracer.send_signal(signal.SIGINT)
        for name, tracer in tracers.items():
            _, report = tracer.communicate(timeout=60)
            counts[name] = parse(report)


def per_swap(counts: Mapping[str, tuple[int, int]], swaps: int) -> dict[str, float]:
    """Calls per swap: 'all', 'failed', then each syscall, most frequent first."""
    swaps = max(swaps, 1)
    ordered = sorted(counts.items(), key=lambda kv: -kv[1][0])
    return {
        "all": sum(c for c, _ in counts.values()) / swaps,
        "failed": sum(f for _, f in counts.values()) / swaps,
        **{name: calls / swaps for name, (calls, _) in ordered},
    }


def pipe_round_trip_cpu_us(round_trips: int = 5000) -> float:
    """CPU time (both processes, µs) of one message and its answer between two processes.

    What a wake-up costs this machine now: a parent and a forked child, on two different CPUs
    (as a worker and its database mostly are), pass one byte back and forth over two pipes,
    each sleeping until the other writes. On bare metal a few µs; on a VM the sleep and the
    wake-up cost far more, and more when the host is busy: a reading to put beside each run's
    CPU per swap. (Left to the scheduler, the two sometimes share a CPU and the reading moves
    by half.)
    """
    cpus, saved = sorted(os.sched_getaffinity(0)), os.sched_getaffinity(0)
    child_reads, parent_writes = os.pipe()
    parent_reads, child_writes = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer every byte, then leave without Python's clean-up
        try:
            os.sched_setaffinity(0, {cpus[-1]})
            for _ in range(round_trips):
                os.read(child_reads, 1)
                os.write(child_writes, b"x")
        finally:
            os._exit(0)
    try:
        os.sched_setaffinity(0, {cpus[0]})
        start = time.process_time()
        for _ in range(round_trips):
            os.write(parent_writes, b"x")
            os.read(parent_reads, 1)
        parent = time.process_time() - start
        _, _, usage = os.wait4(pid, 0)
    finally:
        os.sched_setaffinity(0, saved)
        for fd in (child_reads, child_writes, parent_writes, parent_reads):
            os.close(fd)
    return (parent + usage.ru_utime + usage.ru_stime) * 1e6 / round_trips
