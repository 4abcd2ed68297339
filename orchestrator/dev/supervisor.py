"""Start child processes in their own process groups and stop every one of them, grandchildren too.

Each child leads a new session (start_new_session), so Ctrl-C in the terminal reaches only us and
we decide the order; stopping signals the whole group, so a Celery worker's prefork children go
with it even if the parent died first.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: prctl option: signal sent to this process when its parent dies.
PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    """One supervised process; its output goes to log_path."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    log: IO[bytes]

    @property
    def exit_code(self) -> int | None:
        """None while running."""
        return self.proc.poll()


class Supervisor:
    """Children started with `start`, all stopped by `stop_all` (or on leaving the with block)."""

    def __init__(self, log_dir: Path, env: dict[str, str], cwd: Path) -> None:
        self.log_dir, self.env, self.cwd = log_dir, env, cwd
        self.children: list[Child] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: Sequence[str], **extra_env: str) -> Child:
        """Start argv as the leader of a new process group, output appended to <log_dir>/<name>.log."""
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        proc = subprocess.Popen(
            list(argv),
            cwd=self.cwd,
            env={**self.env, **extra_env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        child = Child(name, proc, log_path, log)
        self.children.append(child)
        return child

    def dead(self) -> Child | None:
        """The first child that has exited, if any."""
        return next((c for c in self.children if c.exit_code is not None), None)

    def stop_all(self, timeout: float = 10.0) -> None:
        """SIGTERM every group, wait up to timeout, then SIGKILL whatever is left."""
        for child in reversed(self.children):
            _signal_group(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(max(0.0, deadline - time.monotonic()))
        for child in self.children:
            # Also when the leader is gone: orphaned pool processes keep the group alive.
            _signal_group(child.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(5)
            child.log.close()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        # A second Ctrl-C must not cut the shutdown short and leave children behind.
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
        try:
            self.stop_all()
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if we die without cleaning up (SIGKILL, a crash)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
