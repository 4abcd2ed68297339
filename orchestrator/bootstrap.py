"""Wire real parts in one place: URLs (configured or embedded), engine, Redis."""

from __future__ import annotations

import logging
import os
from functools import cache

import redis
import sqlalchemy as sa

from orchestrator import db, embedded
from orchestrator.notify import LogSender, SlackSender, build_sender
from orchestrator.salvy import SalvyClient
from orchestrator.settings import Settings, get_settings

log = logging.getLogger(__name__)


def database_url(settings: Settings | None = None) -> str:
    """DATABASE_URL, or the embedded PostgreSQL under .data/ (started if needed)."""
    settings = settings or get_settings()
    return settings.database_url or embedded.postgres_url(settings.data_dir)


def redis_url(settings: Settings | None = None) -> str:
    """REDIS_URL, or the embedded Redis under .data/ (started if needed)."""
    settings = settings or get_settings()
    return settings.redis_url or embedded.redis_url(settings.data_dir)


def broker_url(settings: Settings | None = None) -> str:
    """CELERY_BROKER_URL, else the Redis of redis_url()."""
    settings = settings or get_settings()
    return settings.broker_url or redis_url(settings)


def export_urls(settings: Settings | None = None) -> dict[str, str]:
    """Resolve the URLs and put them in os.environ so child processes (worker, beat) share them."""
    settings = settings or get_settings()
    urls = {"DATABASE_URL": database_url(settings), "REDIS_URL": redis_url(settings)}
    os.environ.update(urls)
    return urls


@cache
def engine() -> sa.Engine:
    """The process's engine (after fork: tasks.worker_process_init clears this cache)."""
    return db.create_engine(database_url())


@cache
def redis_client() -> redis.Redis:
    """The process's Redis client for locks (timeouts on; retried by the caller's task)."""
    return redis.Redis.from_url(
        redis_url(), socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
    )


@cache
def salvy_client() -> SalvyClient | None:
    """The process's Salvy client (one requests.Session), or None without SALVY_API_URL."""
    settings = get_settings()
    if not settings.salvy_api_url:
        return None
    return SalvyClient(
        settings.salvy_api_url,
        settings.salvy_api_token,
        read_timeout=settings.salvy_read_timeout,
    )


@cache
def sender() -> SlackSender | LogSender:
    """Slack with a token, else the log: notifications are never silently dropped."""
    return build_sender(get_settings())


def reset_after_fork() -> None:
    """Forget connections inherited from a parent process; each child builds its own."""
    if engine.cache_info().currsize:
        engine().dispose(close=False)
    for factory in (engine, redis_client, salvy_client, sender):
        factory.cache_clear()


def warm_up() -> None:
    """Open one database and one Redis connection now; failures are left to the first task."""
    try:
        with engine().connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        redis_client().ping()
    except Exception as error:  # the first task retries properly
        log.warning("warm-up failed (%s); connecting on first use", type(error).__name__)
