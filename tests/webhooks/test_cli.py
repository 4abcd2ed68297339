"""`chip-orchestrator webhooks` refuses to start, in one line, without what it needs."""

from __future__ import annotations

import os
import subprocess
import sys

from orchestrator.app.settings import ROOT


def _run(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("WEBHOOK_TOKEN", "DATABASE_URL")}
    base.pop("ORCHESTRATOR_EMBEDDED", None)
    base["ORCHESTRATOR_DATA_DIR"] = str(ROOT / ".data-none-for-this-test")
    argv = [sys.executable, "-m", "orchestrator", "webhooks", "--port", "1"]
    return subprocess.run(
        argv, cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60
    )


def test_without_a_token_it_refuses_to_start_in_one_line() -> None:
    done = _run(DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "chip-orchestrator: WEBHOOK_TOKEN is not set: the receiver refuses to run without one"
    ]


def test_without_a_database_it_names_database_url_and_starts_nothing() -> None:
    done = _run(WEBHOOK_TOKEN="t")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "DATABASE_URL" in lines[0] and "nothing was started" in lines[0]


def test_the_start_warnings_name_what_to_fix_and_never_a_secret() -> None:
    from orchestrator.app.settings import Settings
    from orchestrator.webhooks.cli import warnings_at_start

    quiet = Settings.from_env({"WEBHOOK_TOKEN": "tok-0123abc", "EVOLUTION_JWT_KEY": "k" * 32})
    assert warnings_at_start(quiet) == []
    loud = Settings.from_env({"WEBHOOK_TOKEN": "a+b/c=", "EVOLUTION_JWT_KEY": "k3y-x"})
    first, second = warnings_at_start(loud)
    assert "percent-encoded" in first and "a+b/c=" not in first
    assert "EVOLUTION_JWT_KEY is 5 bytes long" in second and "k3y-x" not in second
    assert "k3y-x" not in repr(loud) and "k3y-x" in loud.secrets
