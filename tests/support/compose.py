"""Docker Compose's model of our compose files, computed as compose computes it (Docker is absent).

What matters for the promises tested here, after the compose specification:
- YAML first: anchors and merge keys (`<<: *anchor`) are resolved by the YAML loader, and a
  service's own `environment:` replaces a merged one unless it merges the anchor itself;
- interpolation next, of every value of the whole file, whatever services a command names
  (`docker compose up worker` fails on a `${VAR:?}` of any service); `$$` is a literal `$`;
- then each further `-f` file is merged over the first: mappings (environment, depends_on) key
  by key, anything else replaced. Only the parts of merging our files use are modelled.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from orchestrator.app.settings import ROOT

COMPOSE = ROOT / "docker-compose.yml"
DEMO = ROOT / "docker-compose.demo.yml"
#: The services of our image that run the orchestrator (the demo's stand-in aside).
APP_SERVICES = ("migrate", "worker", "worker-io", "beat", "flower", "metrics", "webhooks")
#: A production operator's settings: the required secrets, nothing of Salvy's (never real values).
PRODUCTION = {"POSTGRES_PASSWORD": "pw", "FLOWER_BASIC_AUTH": "ops:pw", "WEBHOOK_TOKEN": "tok"}
#: Service keys whose mappings a later file merges key by key instead of replacing.
MERGED_KEYS = ("environment", "depends_on", "labels")

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
#: `$$`, `${NAME}`, `${NAME<op><word>}` (a word may hold one nested `${...}`), or `$NAME`.
_REFERENCE = re.compile(
    rf"\$(?:(?P<dollar>\$)|\{{(?P<braced>{_NAME})(?:(?P<op>:?[-?+])"
    rf"(?P<word>(?:[^{{}}]|\$\{{[^{{}}]*\}})*))?\}}|(?P<bare>{_NAME}))"
)


class MissingVariable(Exception):
    """Raised when a `${NAME:?message}` or `${NAME?message}` finds nothing, as compose does."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"required variable {name} is missing a value: {message}")
        self.name = name


def interpolate(value: Any, env: dict[str, str], missing: list[str] | None = None) -> Any:
    """value with every variable substituted from env; MissingVariable, or noted in `missing`."""
    if isinstance(value, dict):
        return {key: interpolate(item, env, missing) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env, missing) for item in value]
    if not isinstance(value, str):
        return value
    return _REFERENCE.sub(lambda match: _substitute(match, env, missing), value)


def _substitute(match: re.Match[str], env: dict[str, str], missing: list[str] | None) -> str:
    if match["dollar"]:
        return "$"
    name, op, word = match["braced"] or match["bare"], match["op"], match["word"] or ""
    is_set, value = name in env, env.get(name, "")
    filled = is_set if op in ("-", "?", "+") else bool(value)
    if op in ("?", ":?") and not filled:
        if missing is None:
            raise MissingVariable(name, word)
        missing.append(name)
        return ""
    if op in ("-", ":-"):
        return value if filled else interpolate(word, env, missing)
    if op in ("+", ":+"):
        return interpolate(word, env, missing) if filled else ""
    return value


def required_variables(*paths: Path, env: dict[str, str]) -> list[str]:
    """The variables whose absence stops every compose command on these files, in file order."""
    missing: list[str] = []
    for path in paths:
        interpolate(yaml.safe_load(path.read_text()), env, missing)
    return list(dict.fromkeys(missing))


def load(*paths: Path, env: dict[str, str]) -> dict[str, Any]:
    """The project compose runs from these files (`-f` order): interpolated, then merged."""
    project: dict[str, Any] = {}
    for path in paths:
        document = interpolate(yaml.safe_load(path.read_text()), env)
        for name, service in (document.get("services") or {}).items():
            services = project.setdefault("services", {})
            services[name] = _merge(services.get(name, {}), _normalised(service))
        for key, item in document.items():
            if key != "services":
                project[key] = item
    return project


def _normalised(service: dict[str, Any]) -> dict[str, Any]:
    """environment as a mapping of strings, depends_on as a mapping (compose's long forms)."""
    service = dict(service)
    if "environment" in service:
        env = service["environment"] or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        service["environment"] = {k: "" if v is None else str(v) for k, v in env.items()}
    if isinstance(service.get("depends_on"), list):
        needs = service["depends_on"]
        service["depends_on"] = {name: {"condition": "service_started"} for name in needs}
    return service


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if key in MERGED_KEYS and isinstance(base.get(key), dict) and isinstance(value, dict):
            merged[key] = {**base[key], **value}
        else:
            merged[key] = value
    return merged


def environment(project: dict[str, Any], service: str) -> dict[str, str]:
    """The environment compose gives that service's container (after interpolation and merge)."""
    return dict(project["services"][service].get("environment") or {})
