"""Two real `celery -A tasks beat -S redbeat.RedBeatScheduler` processes: one sends, one waits.

RedBeat keeps a lock in Redis; the beat holding it sends the ticks and renews it every loop, the
other waits for it. The test counts the `task-sent` events each beat process publishes for
`orchestrator.run_cycle` (a 1 s cycle), on this module's broker, with no worker consuming.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery

from orchestrator.app.settings import ROOT
from tests.support.pg_waits import wait_until as wait_for
from tests.support.private_stack import base_redis_url, claim_redis_db, purge_queues
from tests.worker.conftest import QUEUES, worker_env

pytestmark = pytest.mark.worker

REDBEAT = ["-S", "redbeat.RedBeatScheduler"]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with claim_redis_db(base_redis_url()) as url:
        yield url


@pytest.fixture(scope="module")
def worker() -> None:
    """No worker here: the ticks stay in the queues, where nobody runs them."""


@pytest.fixture(autouse=True)
def _quiet_worker(broker_url: str) -> Iterator[None]:
    """Each test starts and ends with empty queues (the ticks of its beats dropped)."""
    purge_queues(broker_url, QUEUES.split(","))
    yield
    purge_queues(broker_url, QUEUES.split(","))


class Beat:
    """A `celery -A tasks beat` subprocess logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        cmd = [sys.executable, "-m", "celery", "-A", "tasks", "beat", "-l", "INFO", *args]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class SentEvents:
    """Every `task-sent` event published on the broker while it runs (a background consumer)."""

    def __init__(self, app: Celery) -> None:
        self.events: list[dict] = []
        self._ready = threading.Event()
        self._conn = app.connection_for_read()
        self._receiver = app.events.Receiver(self._conn, handlers={"task-sent": self.events.append})
        self._receiver.on_consume_ready = lambda *a, **k: self._ready.set()
        self._thread = threading.Thread(
            target=self._receiver.capture, kwargs={"wakeup": False}, daemon=True
        )

    def __enter__(self) -> SentEvents:
        self._thread.start()
        assert self._ready.wait(10), "event consumer not ready"
        return self

    def __exit__(self, *exc: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(10)
        self._conn.release()

    def cycles_by(self, pid: int) -> list[float]:
        """Times of the run_cycle messages this process published."""
        return [
            e["timestamp"]
            for e in list(self.events)
            if e["name"] == "orchestrator.run_cycle" and e["pid"] == pid
        ]


@pytest.fixture
def beats(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Callable[..., Beat]]:
    """Start beats on the module's broker and Redis (1 s cycle); all stopped afterwards."""
    env = worker_env(database_url, redis_url)
    started: list[Beat] = []

    def start(*args: str) -> Beat:
        beat = Beat(env, tmp_path / f"beat-{len(started)}.log", *args)
        started.append(beat)
        return beat

    yield start
    for beat in started:
        beat.stop()


def test_of_two_redbeat_beats_only_the_lock_holder_ticks_and_the_other_takes_over_when_it_dies(
    beats: Callable[..., Beat], celery_client: Celery
) -> None:
    with SentEvents(celery_client) as sent:
        # Given two beats with RedBeat's lock, both running
        first = beats(*REDBEAT)
        wait_for(lambda: "Acquired lock" in first.log())
        second = beats(*REDBEAT)
        wait_for(lambda: "beat: Starting..." in second.log())  # up, and waiting for the lock
        # When the first has sent five cycles
        wait_for(lambda: len(sent.cycles_by(first.pid)) >= 5)
        # Then the second, alive all along, sent none
        assert second.proc.poll() is None
        assert sent.cycles_by(second.pid) == []
        assert "Acquired lock" not in second.log()
        # When the first dies without releasing its lock (SIGKILL: a crashed host)
        first.stop(signal.SIGKILL)
        killed_at = time.time()
        last_of_first = max(sent.cycles_by(first.pid))
        # Then the second takes the lock once it expires, and ticks from then on
        wait_for(lambda: len(sent.cycles_by(second.pid)) >= 3, timeout=60)
        assert "Acquired lock" in second.log()
        assert min(sent.cycles_by(second.pid)) > max(last_of_first, killed_at)


def test_the_default_scheduler_still_ticks_with_redbeat_installed(
    beats: Callable[..., Beat], celery_client: Celery, tmp_path: Path
) -> None:
    with SentEvents(celery_client) as sent:
        # Given `celery -A tasks beat` as before, with its schedule file
        beat = beats("--schedule", str(tmp_path / "celerybeat-schedule"))
        # Then it sends cycles (no RedBeat lock involved)
        wait_for(lambda: len(sent.cycles_by(beat.pid)) >= 2)
        assert "celery.beat.PersistentScheduler" in beat.log()
        assert "Acquired lock" not in beat.log()
