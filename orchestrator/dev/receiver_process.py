"""The webhook receiver as a real subprocess (`python -m orchestrator webhooks`), for the tests
and the benchmarks: started on a free port, ready once GET /healthz answers, always stopped."""

from __future__ import annotations

import contextlib
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

from orchestrator.dev.worker_process import LoggedProcess


def free_port() -> int:
    """A TCP port nobody listens on right now (the receiver binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ReceiverProcess(LoggedProcess):
    """`chip-orchestrator webhooks` on 127.0.0.1:port."""

    def __init__(self, env: Mapping[str, str], log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "orchestrator", "webhooks", "--port", str(self.port)]
        super().__init__(argv, env, log_path)

    def wait_ready(self, timeout: float = 30) -> None:
        """Until /healthz answers 200; RuntimeError with its log if it exits or never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"receiver exited: {self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"receiver not ready: {self.log()[-3000:]}")


@contextlib.contextmanager
def running_receiver(env: Mapping[str, str], log_path: Path) -> Iterator[ReceiverProcess]:
    """Start a receiver, wait for /healthz, always stop it afterwards."""
    proc = ReceiverProcess(env, log_path)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
