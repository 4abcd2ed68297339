"""Servers that tests, benchmarks and the demo start take their port when they bind, and a Redis
is taken for ours only if it is the process we started: two runs side by side never share one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from orchestrator.dev import embedded
from orchestrator.dev.ports import ClosedPort, listening_port
from tests.support import servers


def serving_pid(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


@pytest.fixture
def foreign_redis() -> Iterator[str]:
    """Another checkout's embedded Redis (a data dir of its own), running beside this run."""
    with servers.scratch_dir("foreign") as data_dir:
        url = embedded.redis_url(data_dir)
        yield url
        embedded.stop_redis(data_dir)


def test_a_child_started_on_port_0_is_found_on_the_port_it_bound(tmp_path: Path) -> None:
    # Given an HTTP server started on port 0
    argv = [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"]
    proc = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # When its port is read from its listening socket
        port = listening_port(proc.pid)
        # Then that is where it answers
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_child_that_exits_before_listening_is_a_clear_error() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait(30)
    with pytest.raises(RuntimeError, match=f"process {proc.pid} exited before it listened"):
        listening_port(proc.pid)


def test_a_closed_port_refuses_connections_for_as_long_as_it_is_held() -> None:
    closed = ClosedPort()
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", closed.port), timeout=5)
        with socket.socket() as other, pytest.raises(OSError):  # nobody else can take it
            other.bind(("127.0.0.1", closed.port))
    finally:
        closed.close()


def test_the_embedded_redis_never_takes_another_runs_redis_for_its_own(
    foreign_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the port picked for our Redis was taken by another run's Redis before ours bound it
    taken = int(foreign_redis.rsplit(":", 1)[1].split("/")[0])
    picks = iter([taken])
    free = embedded._free_port
    monkeypatch.setattr(embedded, "_free_port", lambda: next(picks, None) or free())
    with servers.scratch_dir("ours") as data_dir:
        try:
            # When the embedded Redis starts
            url = embedded.redis_url(data_dir)
            # Then it runs on another port, and the Redis answering there is the one it started
            assert url != foreign_redis
            assert serving_pid(url) == embedded.redis_pid(data_dir)
            assert serving_pid(foreign_redis) != embedded.redis_pid(data_dir)
        finally:
            embedded.stop_redis(data_dir)


def test_a_port_file_pointing_at_another_runs_redis_is_not_our_running_redis(
    foreign_redis: str,
) -> None:
    # Given a data dir whose Redis is gone: its port now served by another run's Redis, its pid
    # file naming a live process that is not that Redis
    with servers.scratch_dir("stale") as data_dir:
        rdir = data_dir / "redis"
        rdir.mkdir()
        (rdir / "port").write_text(foreign_redis.rsplit(":", 1)[1].split("/")[0])
        (rdir / "redis.pid").write_text(str(os.getpid()))
        # Then no embedded Redis is running there
        assert embedded.running_redis_url(data_dir) is None
