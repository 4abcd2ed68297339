"""The Salvy stand-in's HTTP side: routes, Salvy's error shape, the admin switches.

Each request is answered from the in-memory SalvyStandin (dev/salvy_standin.py) it serves.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from orchestrator.dev.salvy_standin import SalvyStandin

log = logging.getLogger("orchestrator.dev.salvy_standin")

#: Path of the virtual phone numbers resource, as in the real API.
ACCOUNTS = "/api/v2/virtual-phone-accounts"


class SalvyError(Exception):
    """An error answer in Salvy's shape: {"code", "message", "publicDetails"}."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Handler(BaseHTTPRequestHandler):
    """One request against the stand-in; subclassed per server with `standin` set."""

    standin: SalvyStandin
    server_version = "SalvyStandin/1"

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        # Read the body first: answering with it unread makes the client see a reset socket.
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        try:
            body = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise SalvyError(400, "invalid_request", "body must be a JSON object")
            if path.startswith("/_standin/"):
                status, payload = self._admin(method, path, body)
            else:
                status, payload = self._api(method, path.rstrip("/"), query, body)
        except json.JSONDecodeError:
            status, payload = 400, _error("invalid_request", "body is not valid JSON")
        except SalvyError as exc:
            status, payload = exc.status, _error(exc.code, exc.message)
        except Exception:
            log.exception("stand-in failed on %s %s", method, path)
            status, payload = 500, _error("internal_server_error", "stand-in bug")
        self._reply(status, payload)

    def _admin(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        standin = self.standin
        if (method, path) == ("GET", "/_standin/state"):
            return 200, standin.state()
        if (method, path) == ("POST", "/_standin/reset"):
            standin.reset()
            return 200, standin.state()
        if (method, path) == ("POST", "/_standin/faults"):
            try:
                return 200, dataclasses.asdict(standin.set_faults(**body))
            except (ValueError, TypeError) as exc:
                raise SalvyError(400, "invalid_request", str(exc)) from exc
        raise SalvyError(404, "not_found", f"no route {method} {path}")

    def _api(self, method: str, path: str, query: str, body: dict[str, Any]) -> tuple[int, Any]:
        standin = self.standin
        standin.count_request(method, path)
        standin.pause(standin.faults.latency)
        if standin.take_fault("rate_limit_next"):
            raise SalvyError(429, "too_many_requests", "rate limit exceeded, retry later")
        if standin.take_fault("fail_next"):
            raise SalvyError(500, "internal_server_error", "injected failure")
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or not auth[len("Bearer ") :].strip():
            raise SalvyError(401, "unauthorized", "missing or invalid bearer token")
        if standin.faults.refuse_token:
            raise SalvyError(401, "unauthorized", "invalid or revoked token")
        if (method, path) == ("GET", f"{ACCOUNTS}/area-codes"):
            available = parse_qs(query).get("available") == ["true"]
            return 200, standin.area_codes(only_available=available)
        if (method, path) == ("GET", ACCOUNTS):
            return 200, standin.list_numbers()
        if (method, path) == ("POST", ACCOUNTS):
            standin.hold()
            standin.pause(standin.faults.post_delay)
            number = standin.buy(body)
            if standin.take_fault("timeout_after_purchase"):
                standin.pause(standin.faults.hang_seconds)
            return 200, number
        if path.startswith(f"{ACCOUNTS}/") and path.count("/") == 4:
            number_id = path.rsplit("/", 1)[1]
            if method == "GET":
                return 200, standin.get(number_id)
            if method == "DELETE":
                return 200, standin.cancel(number_id, body)
        raise SalvyError(404, "not_found", f"no route {method} {path}")

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", self.standin.faults.retry_after)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            log.info("client left before the answer to %s", self.requestline)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line and status only: never headers (Authorization carries the token).
        log.info("%s %s", self.address_string(), format % args)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "publicDetails": {}}
