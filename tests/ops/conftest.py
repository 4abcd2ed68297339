"""Helpers for the ops surface: subprocesses started as ops start them (on ports they pick), HTTP polling."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import requests

from orchestrator.dev.ports import listening_port
from orchestrator.dev.worker_process import LoggedProcess


def ops_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of an ops process: the test database and Redis DB, no real secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SALVY_", "FLOWER_"))}
    env.pop("CELERY_BROKER_URL", None)
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, PYTHONUNBUFFERED="1", **extra)
    return env


class Service(LoggedProcess):
    """One long-running `python ARGS` subprocess (metrics, Flower); its output goes to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        super().__init__([sys.executable, *args], env, log_path)

    def bound_port(self) -> int:
        """The port it listens on, picked when it bound port 0; RuntimeError with its log if none."""
        try:
            return listening_port(self.proc.pid)
        except RuntimeError as error:
            raise RuntimeError(f"{error}: {self.log()[-3000:]}") from None

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
