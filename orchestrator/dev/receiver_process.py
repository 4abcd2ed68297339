"""The webhook receiver as a real subprocess (`python -m orchestrator webhooks`), for the tests
and the benchmarks: on a port it picks when it binds, ready once GET /healthz answers, stopped."""

from __future__ import annotations

import contextlib
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

from orchestrator.dev.ports import listening_port
from orchestrator.dev.worker_process import LoggedProcess


class ReceiverProcess(LoggedProcess):
    """`chip-orchestrator webhooks` on 127.0.0.1, on the port it was given when it bound port 0."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        argv = [sys.executable, "-m", "orchestrator", "webhooks", "--port", "0"]
        super().__init__(argv, env, log_path)
        try:
            self.port = listening_port(self.proc.pid)
        except RuntimeError as error:
            self.stop()
            raise RuntimeError(f"receiver: {error}: {self.log()[-3000:]}") from None
        self.url = f"http://127.0.0.1:{self.port}"

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
