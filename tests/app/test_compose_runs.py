"""What compose starts, run here as compose would run it: the same command and environment
(tests/support/compose.py computes both), with the test's servers for postgres and redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from orchestrator.adapters.salvy import SalvyClient
from orchestrator.app.settings import ROOT, Settings
from orchestrator.dev.ports import listening_port
from orchestrator.dev.worker_process import LoggedProcess
from orchestrator.errors import Rejected
from tests.factories import set_config
from tests.support import compose
from tests.support.compose import COMPOSE, DEMO, PRODUCTION
from tests.support.private_stack import broker_url_for

#: The image puts its virtualenv first on PATH (`python`, `celery`); here, this one.
BIN = str(Path(sys.executable).parent)
#: The stand-in's address inside the compose network, as the demo file gives it.
STANDIN = "http://salvy-standin:8099"


def container_env(
    service: str, *files: Path, database_url: str = "", redis_url: str = "", **env: str
) -> dict[str, str]:
    """The service's environment as compose gives it, the test servers standing in for
    compose's postgres and redis (any Salvy or secret of this shell left out)."""
    project = compose.load(*(files or (COMPOSE,)), env={**PRODUCTION, **env})
    given = compose.environment(project, service)
    if database_url:
        given.update(DATABASE_URL=database_url, REDIS_URL=redis_url)
        given["CELERY_BROKER_URL"] = broker_url_for(redis_url)
    return {"PATH": f"{BIN}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/"), **given}


def container_command(service: str, **env: str) -> list[str]:
    """The service's command as compose runs it (interpolated; `$$` is `$` by then)."""
    command = compose.load(COMPOSE, env={**PRODUCTION, **env})["services"][service]["command"]
    return [str(part) for part in command]


@pytest.mark.db
def test_status_in_a_stack_without_salvy_says_nothing_is_bought(
    clean_db: sa.Engine, database_url: str, redis_url: str
) -> None:
    # Given auto_provision on and the worker's environment of a stack without SALVY_API_URL
    set_config(clean_db, auto_provision=True)
    env = container_env("worker", database_url=database_url, redis_url=redis_url)
    # When ops run `docker compose exec worker chip-orchestrator status --json`
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "status", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then status says purchases are off for want of Salvy
    assert done.returncode == 0, done.stderr
    assert '"estado": "sem_salvy"' in done.stdout
    assert "auto_provision on but SALVY_API_URL not set: nothing is bought" in done.stdout


def wait_http(proc: LoggedProcess, url: str, timeout: float = 60) -> requests.Response:
    """The first answer of url (any status); fails with the log if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise AssertionError(f"exited {proc.proc.returncode}: {proc.log()[-3000:]}")
        try:
            return requests.get(url, timeout=5)
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"{url} not answering: {proc.log()[-3000:]}")


@pytest.fixture
def demo_standin(tmp_path: Path) -> Iterator[str]:
    """The demo profile's stand-in, run by its compose command, on the loopback port it binds."""
    command = container_command("salvy-standin")
    assert command[:3] == ["python", "-m", "orchestrator.dev.salvy_standin"]
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = "0"
    proc = LoggedProcess(command, container_env("salvy-standin"), tmp_path / "standin.log")
    try:
        port = listening_port(proc.proc.pid)
        wait_http(proc, f"http://127.0.0.1:{port}/_standin/state")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def _client(env: dict[str, str], standin_url: str) -> SalvyClient:
    """The Salvy client a service builds from env, its stand-in's address mapped to this one."""
    settings = Settings.from_env(env)
    assert settings.salvy_api_url == STANDIN
    return SalvyClient(standin_url, settings.salvy_api_token)


def test_the_demo_stack_buys_a_number_from_the_standin_with_its_token(demo_standin: str) -> None:
    # Given worker-io's environment in the demo (both files) and the stand-in as compose runs it
    env = container_env("worker-io", COMPOSE, DEMO)
    client = _client(env, demo_standin)
    name = f"compose-demo-{uuid.uuid4().hex[:8]}"
    # When it buys a number
    number = client.create(11, name)
    # Then the stand-in sold it under that name, the token accepted
    assert number.phone_number.startswith("+5511")
    assert client.find_by_name(name) == number
    state = requests.get(f"{demo_standin}/_standin/state", timeout=5).json()
    assert state["purchases"] == 1


def test_the_standin_refuses_a_purchase_without_a_token(demo_standin: str) -> None:
    # The demo before docker-compose.demo.yml: the stand-in's URL with an empty SALVY_API_TOKEN
    env = container_env("worker-io", SALVY_API_URL=STANDIN)
    assert env["SALVY_API_TOKEN"] == ""
    with pytest.raises(Rejected, match="401"):
        _client(env, demo_standin).create(11, f"compose-no-token-{uuid.uuid4().hex[:8]}")


def test_the_receiver_as_compose_starts_it_refuses_to_run_without_its_token() -> None:
    # Given the receiver's environment from a stack whose WEBHOOK_TOKEN is unset
    env = container_env("webhooks", WEBHOOK_TOKEN="")
    assert env["WEBHOOK_TOKEN"] == ""
    command = container_command("webhooks")
    # When compose starts it
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", *command[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then it stops at once, in one line, before touching anything
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "chip-orchestrator: WEBHOOK_TOKEN is not set: the receiver refuses to run without one"
    ]


def test_flower_as_compose_starts_it_refuses_to_run_without_basic_auth() -> None:
    # Given flower's command and environment from a stack whose FLOWER_BASIC_AUTH is unset
    env = container_env("flower", FLOWER_BASIC_AUTH="")
    assert env["FLOWER_BASIC_AUTH"] == ""
    # When compose starts it
    done = subprocess.run(
        container_command("flower"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    # Then its shell stops before Flower starts, in one line naming the variable
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert "FLOWER_BASIC_AUTH: is not set: Flower never runs without basic auth" in line


@pytest.mark.db
def test_flower_as_compose_starts_it_asks_every_request_for_basic_auth(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    # Given flower's command as compose runs it, on the loopback port it binds, FLOWER_BASIC_AUTH set
    shell, flag, script = container_command("flower")
    assert script.endswith("--port=5555")
    script = script.replace("--port=5555", "--port=0 --address=127.0.0.1")
    env = container_env("flower", database_url=database_url, redis_url=redis_url)
    # When it starts (exec: the shell becomes Flower, so stopping it stops Flower)
    flower = LoggedProcess([shell, flag, script], env, tmp_path / "flower.log")
    try:
        url = f"http://127.0.0.1:{listening_port(flower.proc.pid)}/tasks"
        anonymous = wait_http(flower, url)
        # Then a request without the credentials, or with wrong ones, is refused; the right served
        assert anonymous.status_code == 401
        assert requests.get(url, auth=("ops", "wrong"), timeout=10).status_code == 401
        assert requests.get(url, auth=("ops", "pw"), timeout=10).status_code == 200
    finally:
        flower.stop()
