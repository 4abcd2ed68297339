"""The embedded default: with DATABASE_URL / REDIS_URL unset, real servers start under .data/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import embedded
from orchestrator.settings import ROOT

pytestmark = pytest.mark.embedded


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")
    }
    env["ORCHESTRATOR_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("embedded-data")
    yield path
    embedded.stop_redis(path)
    embedded.stop_postgres(path)


def test_migrate_and_status_run_on_embedded_servers_with_nothing_configured(data_dir: Path) -> None:
    first = run_cli(data_dir, "migrate")
    assert first.returncode == 0, first.stderr
    again = run_cli(data_dir, "migrate")
    assert "unchanged" in again.stdout
    status = run_cli(data_dir, "status", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["saude"] == "critico" and data["producao"]["count"] == 0
    assert (data_dir / "postgres" / "PG_VERSION").exists()


def test_embedded_redis_is_found_again_by_a_second_process(data_dir: Path) -> None:
    url = embedded.redis_url(data_dir)
    assert embedded.redis_url(data_dir) == url
    import redis

    client = redis.Redis.from_url(url)
    assert client.ping()
    client.close()
