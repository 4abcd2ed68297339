"""A shell beside a running demo buys from the demo's Salvy stand-in; production never does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orchestrator.app.settings import Settings, with_demo_salvy
from orchestrator.dev import standin_file

URL, TOKEN = "http://127.0.0.1:40123", "salvy_test_demo"


def settings_in(data_dir: Path, **env: str) -> Settings:
    return with_demo_salvy(Settings.from_env({"ORCHESTRATOR_DATA_DIR": str(data_dir), **env}))


def test_a_shell_on_the_demos_servers_gets_its_published_stand_in(tmp_path: Path) -> None:
    # Given a stand-in a running demo published under the data dir
    standin_file.publish(tmp_path, URL, TOKEN, os.getpid())
    # When a shell with no DATABASE_URL and no SALVY_API_URL reads its settings
    settings = settings_in(tmp_path)
    # Then it has the stand-in's URL and token; the file is readable by its owner only
    assert (settings.salvy_api_url, settings.salvy_api_token) == (URL, TOKEN)
    assert oct(standin_file.path(tmp_path).stat().st_mode & 0o777) == "0o600"


def test_a_process_given_database_url_never_picks_up_the_demos_stand_in(tmp_path: Path) -> None:
    # Given the same published stand-in
    standin_file.publish(tmp_path, URL, TOKEN, os.getpid())
    # When a process with DATABASE_URL (production's way) reads its settings
    settings = settings_in(tmp_path, DATABASE_URL="postgresql+psycopg://app@db:5432/pool")
    # Then it has no Salvy: nothing is bought, and status says so
    assert (settings.salvy_api_url, settings.salvy_api_token) == (None, None)


def test_salvy_api_url_when_set_wins_over_the_demos_stand_in(tmp_path: Path) -> None:
    standin_file.publish(tmp_path, URL, TOKEN, os.getpid())
    settings = settings_in(tmp_path, SALVY_API_URL="https://salvy.example", SALVY_API_TOKEN="t")
    assert (settings.salvy_api_url, settings.salvy_api_token) == ("https://salvy.example", "t")


def test_a_stand_in_whose_process_is_gone_is_ignored(tmp_path: Path) -> None:
    # Given a file left by a demo that was SIGKILLed: its stand-in process no longer exists
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    standin_file.publish(tmp_path, URL, TOKEN, gone.pid)
    # When a shell reads its settings
    # Then no Salvy is configured (never a port nobody serves)
    assert settings_in(tmp_path).salvy_api_url is None


def test_a_demo_removes_only_the_file_that_names_its_own_stand_in(tmp_path: Path) -> None:
    # Given the file of another demo's stand-in
    standin_file.publish(tmp_path, URL, TOKEN, os.getpid())
    # When a demo whose stand-in had another pid withdraws, then the owner withdraws
    standin_file.withdraw(tmp_path, os.getpid() + 1_000_000)
    kept = standin_file.path(tmp_path).exists()
    standin_file.withdraw(tmp_path, os.getpid())
    # Then the first left it, the second removed it
    assert kept and not standin_file.path(tmp_path).exists()
