"""Helpers for the ops surface: free ports, subprocesses started as ops start them, HTTP polling."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from orchestrator.app.settings import ROOT


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ops_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of an ops process: the test database and Redis DB, no real secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SALVY_", "FLOWER_"))}
    env.pop("CELERY_BROKER_URL", None)
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, PYTHONUNBUFFERED="1", **extra)
    return env


class Service:
    """One long-running subprocess (metrics, Flower); its output goes to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_http(self, url: str, timeout: float = 30, **kwargs: object) -> requests.Response:
        """Poll url until it answers (any status); fail with the log if the process died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                return requests.get(url, timeout=2, **kwargs)
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"{url} not answering: {self.log()[-3000:]}")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then SIGKILL if it does not stop; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for(predicate: Callable[[], object], timeout: float = 20, every: float = 0.1) -> object:
    """The first truthy value of predicate(), or AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")
