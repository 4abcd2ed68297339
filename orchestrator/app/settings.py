"""Environment -> frozen settings, read once per process."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from orchestrator.app import dev_seam
from orchestrator.errors import ConfigError

#: The swap worker's queues: replacements, promotions, migrations and the cycle, and Celery's
#: default queue, where other services' send_task lands. Nothing slow runs here.
SWAP_QUEUES = ("orchestrator", "celery")
#: The I/O worker's queue: calls that wait on someone else (Salvy purchases and cancels,
#: reconciliation, Slack deliveries). Four hanging purchases fill this worker, never the other.
IO_QUEUES = ("provisioning",)
#: Every queue: one worker consuming them all (`make run`, the tests, the benchmarks).
WORKER_QUEUES = (*SWAP_QUEUES, *IO_QUEUES)
#: The same three, as `celery worker -Q` takes them.
SWAP_QUEUES_ARG = ",".join(SWAP_QUEUES)
IO_QUEUES_ARG = ",".join(IO_QUEUES)
WORKER_QUEUES_ARG = ",".join(WORKER_QUEUES)

#: Broker URL schemes by the kind of broker celeryconfig tunes for.
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
REDIS_SCHEMES = ("redis", "rediss")

#: Repository root (pyproject.toml lives here); .data/ and migrations/ hang off it.
ROOT = Path(__file__).resolve().parents[2]


def _csv_ints(raw: str) -> tuple[int, ...]:
    return tuple(int(part) for part in raw.replace(" ", "").split(",") if part)


def _flag(raw: str | None) -> bool:
    return (raw or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    """Everything the environment can tell us; secrets are kept out of repr()."""

    database_url: str | None
    redis_url: str | None
    broker_url: str | None
    slack_bot_token: str | None = field(repr=False, default=None)
    slack_channel_alertas: str = "#alertas"
    slack_channel_operacoes: str = "#operacoes"
    slack_api_url: str | None = None
    salvy_api_url: str | None = None
    salvy_api_token: str | None = field(repr=False, default=None)
    salvy_read_timeout: float = 15.0
    cycle_seconds: float = 60.0
    ddd_fallback: tuple[int, ...] = ()
    provisioning_deadline_minutes: int = 15
    purchase_settle_seconds: float = 30.0
    data_dir: Path = ROOT / ".data"
    #: The webhook receiver's shared secret (Evolution: Bearer or ?token=) and Salvy's Svix secret.
    webhook_token: str | None = field(repr=False, default=None)
    salvy_webhook_secret: str | None = field(repr=False, default=None)
    #: Evolution API's `jwt_key` (its webhook headers): a Bearer HS256 JWT signed with it passes.
    evolution_jwt_key: str | None = field(repr=False, default=None)
    #: Largest webhook body accepted (413 above it); Evolution's connection events are < 2 KiB.
    webhook_max_body: int = 64 * 1024
    #: ORCHESTRATOR_EMBEDDED=1: start the embedded servers under data_dir when a URL is unset.
    embedded: bool = False

    @classmethod
    def from_env(cls, env: os._Environ[str] | dict[str, str] | None = None) -> Settings:
        """Read the variables of SPEC's configuration table."""
        env = os.environ if env is None else env
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            broker_url=env.get("CELERY_BROKER_URL") or None,
            slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
            slack_channel_alertas=env.get("SLACK_CHANNEL_ALERTAS") or "#alertas",
            slack_channel_operacoes=env.get("SLACK_CHANNEL_OPERACOES") or "#operacoes",
            slack_api_url=env.get("SLACK_API_URL") or None,
            salvy_api_url=env.get("SALVY_API_URL") or None,
            salvy_api_token=env.get("SALVY_API_TOKEN") or None,
            salvy_read_timeout=float(env.get("SALVY_READ_TIMEOUT_SECONDS") or 15),
            cycle_seconds=float(env.get("ORCHESTRATOR_CYCLE_SECONDS") or 60),
            ddd_fallback=_csv_ints(env.get("ORCHESTRATOR_DDD_FALLBACK", "")),
            provisioning_deadline_minutes=int(
                env.get("ORCHESTRATOR_PROVISIONING_DEADLINE_MINUTES") or 15
            ),
            purchase_settle_seconds=float(env.get("ORCHESTRATOR_PURCHASE_SETTLE_SECONDS") or 30),
            data_dir=Path(env.get("ORCHESTRATOR_DATA_DIR") or ROOT / ".data"),
            webhook_token=env.get("WEBHOOK_TOKEN") or None,
            salvy_webhook_secret=env.get("SALVY_WEBHOOK_SECRET") or None,
            evolution_jwt_key=env.get("EVOLUTION_JWT_KEY") or None,
            webhook_max_body=int(env.get("WEBHOOK_MAX_BODY_BYTES") or 64 * 1024),
            embedded=_flag(env.get("ORCHESTRATOR_EMBEDDED")),
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a log line, an exception or a task result."""
        found = [
            self.slack_bot_token,
            self.salvy_api_token,
            self.webhook_token,
            self.salvy_webhook_secret,
            self.evolution_jwt_key,
        ]
        if (
            self.database_url
            and "@" in self.database_url
            and ":" in self.database_url.split("@")[0]
        ):
            found.append(self.database_url.split("@")[0].rsplit(":", 1)[1])
        return tuple(s for s in found if s)


def broker_kind(url: str) -> str:
    """ "amqp" or "redis" for a broker URL; ConfigError for any other scheme."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in AMQP_SCHEMES:
        return "amqp"
    if scheme in REDIS_SCHEMES:
        return "redis"
    known = ", ".join(f"{s}://" for s in (*REDIS_SCHEMES, *AMQP_SCHEMES))
    given = f"{scheme}://" if scheme else "a URL without a scheme"  # never the URL: a password
    raise ConfigError(f"CELERY_BROKER_URL must start with one of {known}, not {given}")


def with_demo_salvy(settings: Settings) -> Settings:
    """Beside a running demo, its Salvy stand-in when SALVY_API_URL is unset.

    Only a process on the demo's embedded servers looks (no DATABASE_URL: it reaches its database
    through the servers the demo left under the data dir, or fails at once). A process given
    DATABASE_URL, production's, never reads the file, however it got there.
    """
    if settings.salvy_api_url or settings.database_url:
        return settings
    found = dev_seam.demo_salvy(settings.data_dir)
    if found is None:
        return settings
    url, token = found
    return replace(settings, salvy_api_url=url, salvy_api_token=token)


@cache
def get_settings() -> Settings:
    """The process's settings (read once); beside a running demo, with its Salvy stand-in."""
    return with_demo_salvy(Settings.from_env())
