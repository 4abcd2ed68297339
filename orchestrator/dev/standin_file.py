"""The running demo's Salvy stand-in, published under the data dir for a shell beside the demo.

The demo finds its PostgreSQL and Redis for a second shell by the servers it leaves under .data/;
its Salvy stand-in is found the same way, through this file: written when the stand-in answers,
removed when the demo stops. A file whose stand-in process is gone (the demo was SIGKILLed) is
ignored, so a stale one never points a shell at a port nobody serves.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

#: File name under the data dir.
FILE_NAME = "salvy_standin.json"


def path(data_dir: Path) -> Path:
    """Where the demo publishes its stand-in under data_dir."""
    return data_dir / FILE_NAME


def publish(data_dir: Path, url: str, token: str | None, pid: int) -> None:
    """Write the stand-in's URL, token and process id (owner-readable only: it holds a token)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    target = path(data_dir)
    partial = target.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"url": url, "token": token, "pid": pid}, out)
    partial.replace(target)  # a reader never sees half a file


def withdraw(data_dir: Path, pid: int) -> None:
    """Remove the file if it still names this stand-in (another demo's is left alone)."""
    found = _load(data_dir)
    if found is not None and found.get("pid") == pid:
        path(data_dir).unlink(missing_ok=True)


@contextlib.contextmanager
def published(data_dir: Path, url: str, token: str | None, pid: int) -> Iterator[None]:
    """The stand-in is published for the duration of the block."""
    publish(data_dir, url, token, pid)
    try:
        yield
    finally:
        withdraw(data_dir, pid)


def read(data_dir: Path) -> tuple[str, str | None] | None:
    """(URL, token) of the stand-in a running demo published under data_dir, else None."""
    found = _load(data_dir)
    if found is None or not isinstance(found.get("url"), str):
        return None
    pid = found.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return None
    token = found.get("token")
    return found["url"], token if isinstance(token, str) else None


def _load(data_dir: Path) -> dict | None:
    try:
        found = json.loads(path(data_dir).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
