"""What compose computes from docker-compose.yml (and docker-compose.demo.yml over it): the
variables every command needs, each service's environment, the demo's Salvy. Computed as compose
computes it (tests/support/compose.py): YAML merge keys, then interpolation, then the merge."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from orchestrator.app.settings import Settings
from tests.support import compose
from tests.support.compose import APP_SERVICES, COMPOSE, DEMO, PRODUCTION, MissingVariable

#: What an app service has on top of the shared environment (x-app-env), and only it.
OWN_VARIABLES = {
    "flower": {"FLOWER_BASIC_AUTH"},
    "webhooks": {"WEBHOOK_TOKEN", "SALVY_WEBHOOK_SECRET", "EVOLUTION_JWT_KEY"},
}
#: What a real Salvy key looks like (sandbox or live): never in a compose file.
SALVY_KEY = re.compile(r"salvy_(test|live)_[A-Za-z0-9]+")


def _shared(env: dict[str, str]) -> dict[str, str]:
    """x-app-env, the environment every app service shares, as compose interpolates it."""
    shared = compose.interpolate(yaml.safe_load(COMPOSE.read_text())["x-app-env"], env)
    return {key: str(value) for key, value in shared.items()}


def test_any_command_runs_with_only_postgres_password_set_not_the_receivers_or_flowers_secrets():
    # Given compose, which interpolates the whole file whatever services a command names
    # When `docker compose up worker` runs with nothing set, then with only POSTGRES_PASSWORD
    # Then only POSTGRES_PASSWORD (every app service's DATABASE_URL) stops it
    assert compose.required_variables(COMPOSE, env={}) == ["POSTGRES_PASSWORD"]
    assert compose.required_variables(COMPOSE, env={"POSTGRES_PASSWORD": "pw"}) == []
    assert compose.required_variables(COMPOSE, DEMO, env={"POSTGRES_PASSWORD": "pw"}) == []
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        compose.load(COMPOSE, env={"FLOWER_BASIC_AUTH": "a:b", "WEBHOOK_TOKEN": "t"})


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_app_service_has_the_whole_shared_environment_and_only_its_own_extras(name):
    # Given the stack as compose computes it for production
    project = compose.load(COMPOSE, env=PRODUCTION)
    env = compose.environment(project, name)
    shared = _shared(PRODUCTION)
    # Then the service has every shared variable, with the shared value, plus its own only
    assert set(env) == set(shared) | OWN_VARIABLES.get(name, set())
    assert {key: env[key] for key in shared} == shared


def test_the_receiver_gets_its_three_secrets_on_top_of_the_shared_environment():
    env = compose.environment(compose.load(COMPOSE, env=PRODUCTION), "webhooks")

    assert env["WEBHOOK_TOKEN"] == "tok"
    assert (env["SALVY_WEBHOOK_SECRET"], env["EVOLUTION_JWT_KEY"]) == ("", "")
    assert env["SLACK_CHANNEL_ALERTAS"] == "#alertas"  # the shared part, not replaced
    assert env["DATABASE_URL"] == _shared(PRODUCTION)["DATABASE_URL"]


def test_secrets_reach_only_the_service_that_needs_them_and_the_standin_none():
    project = compose.load(COMPOSE, env=PRODUCTION)
    holders = {
        key: sorted(
            name for name in project["services"] if key in compose.environment(project, name)
        )
        for key in (
            "FLOWER_BASIC_AUTH",
            "WEBHOOK_TOKEN",
            "SALVY_WEBHOOK_SECRET",
            "EVOLUTION_JWT_KEY",
        )
    }

    assert holders == {
        "FLOWER_BASIC_AUTH": ["flower"],
        "WEBHOOK_TOKEN": ["webhooks"],
        "SALVY_WEBHOOK_SECRET": ["webhooks"],
        "EVOLUTION_JWT_KEY": ["webhooks"],
    }
    assert compose.environment(project, "salvy-standin") == {}


@pytest.mark.parametrize("name", APP_SERVICES)
def test_without_salvy_api_url_no_app_service_has_a_salvy_to_buy_from(name):
    # Given a production stack whose operator set no SALVY_API_URL
    env = compose.environment(compose.load(COMPOSE, env=PRODUCTION), name)
    # Then the service has no Salvy: nothing is bought, and status says so (test_compose_runs)
    settings = Settings.from_env(env)
    assert env["SALVY_API_URL"] == "" and env["SALVY_API_TOKEN"] == ""
    assert settings.salvy_api_url is None and settings.salvy_api_token is None


@pytest.mark.parametrize("name", APP_SERVICES)
def test_a_configured_salvy_reaches_every_app_service(name):
    salvy = {"SALVY_API_URL": "https://api.salvy.test", "SALVY_API_TOKEN": "k"}
    env = compose.environment(compose.load(COMPOSE, env={**PRODUCTION, **salvy}), name)

    assert {key: env[key] for key in salvy} == salvy


def test_no_file_but_the_demo_names_the_standin_in_an_environment():
    project = compose.load(COMPOSE, env=PRODUCTION)
    names = [
        (name, key)
        for name in project["services"]
        for key, value in compose.environment(project, name).items()
        if "salvy-standin" in value
    ]

    assert names == []
    assert "salvy-standin" in DEMO.read_text()


def _standin_port(project: dict[str, Any]) -> str:
    command = project["services"]["salvy-standin"]["command"]
    return command[command.index("--port") + 1]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_the_demo_file_points_every_app_service_at_the_standin_with_a_token(name):
    # Given the demo: both files, as `docker compose -f ... -f ... --profile demo up` merges them
    project = compose.load(COMPOSE, DEMO, env=PRODUCTION)
    env = compose.environment(project, name)
    # Then the service buys from the stand-in, with a token, and keeps the rest of its environment
    assert env["SALVY_API_URL"] == f"http://salvy-standin:{_standin_port(project)}"
    assert env["SALVY_API_TOKEN"]
    assert set(env) == set(_shared(PRODUCTION)) | OWN_VARIABLES.get(name, set())


def test_the_demo_file_adds_no_service_and_needs_the_demo_profile():
    base, demo = compose.load(COMPOSE, env=PRODUCTION), yaml.safe_load(DEMO.read_text())
    project = compose.load(COMPOSE, DEMO, env=PRODUCTION)
    # Those that call Salvy wait for the stand-in: without --profile demo, compose refuses
    callers = sorted(
        n for n, s in project["services"].items() if "salvy-standin" in s.get("depends_on", {})
    )

    assert set(demo["services"]) <= set(base["services"])
    assert callers == ["webhooks", "worker", "worker-io"]
    assert project["services"]["salvy-standin"]["profiles"] == ["demo"]
    assert project["services"]["worker"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }


def test_one_token_for_the_whole_demo_and_not_a_salvy_key():
    project = compose.load(COMPOSE, DEMO, env=PRODUCTION)
    tokens = {compose.environment(project, name)["SALVY_API_TOKEN"] for name in APP_SERVICES}

    assert len(tokens) == 1
    assert not SALVY_KEY.search(DEMO.read_text())
