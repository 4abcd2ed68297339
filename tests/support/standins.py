"""Local stand-ins of Slack and Salvy for the tests that talk to them over HTTP (a pytest plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.adapters.salvy import SalvyClient
from orchestrator.adapters.slack import SlackSender
from orchestrator.app import bootstrap
from orchestrator.dev.salvy_standin import SalvyStandin
from tests.support.fake_slack import FakeSlack
from tests.support.outbox_helpers import TOKEN, settings_for


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    """A fake Slack Web API accepting TOKEN."""
    server = FakeSlack(token=TOKEN)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sender(slack: FakeSlack) -> SlackSender:
    """The real Slack sender, pointed at the fake."""
    built = bootstrap.build_sender(settings_for(slack.base_url))
    assert isinstance(built, SlackSender)
    return built


@pytest.fixture(scope="module")
def standin() -> Iterator[SalvyStandin]:
    """One Salvy stand-in per module."""
    with SalvyStandin() as server:
        yield server


@pytest.fixture
def salvy_read_timeout() -> float:
    """The Salvy client's read timeout; a module may override it."""
    return 1.0


@pytest.fixture
def salvy(standin: SalvyStandin, salvy_read_timeout: float) -> Iterator[SalvyClient]:
    """A client of a fresh stand-in (no numbers, switches off)."""
    standin.reset()
    client = SalvyClient(standin.url, "salvy_test_key", read_timeout=salvy_read_timeout)
    yield client
    client.close()
