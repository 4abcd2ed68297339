"""A local stand-in for Salvy's virtual phone numbers API (v2): same paths, same JSON shapes.

A real HTTP server (stdlib, in memory, thread-safe) for tests and the demo. Any non-empty bearer
token is accepted. Faults can be switched on in-process (`set_faults`) or over HTTP, so a separate
process (a Celery worker, the demo) can be driven:

    POST /_standin/faults  {"fail_next": 1, ...}   change some switches (see `Faults`)
    GET  /_standin/state                           purchases, numbers, cancellations, faults
    POST /_standin/reset                           forget everything, switches off

Run alone with `python -m orchestrator.dev.salvy_standin --host 127.0.0.1 --port 8099`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import signal
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any

from orchestrator.dev.salvy_standin_http import ACCOUNTS, Handler, SalvyError

log = logging.getLogger("orchestrator.dev.salvy_standin")  # also when run as __main__

#: DDDs in stock unless told otherwise.
DEFAULT_STOCK = (11, 19, 21, 27, 31, 41, 47, 48, 51, 61, 62, 71, 81, 85, 91)
#: Reasons the real API accepts on DELETE.
CANCEL_REASONS = ("unnecessary", "whatsapp-ban", "technical-issues", "company-canceled")


@dataclass
class Faults:
    """Fault switches; the counters count down one per affected request."""

    latency: float = 0.0  #: seconds added to every API request
    fail_next: int = 0  #: next n API requests answer 500
    rate_limit_next: int = 0  #: next n API requests answer 429 with Retry-After: 1
    timeout_after_purchase: int = 0  #: next n purchases succeed, then hang hang_seconds
    hang_seconds: float = 30.0
    out_of_stock: list[int] = field(default_factory=list)  #: DDDs with nothing to sell
    hold_purchases: bool = False  #: POSTs wait, before buying, until switched off or stopped
    refuse_token: bool = False  #: every API request answers 401 (a revoked token)
    retry_after: str = "1"  #: Retry-After header of a 429 (delta-seconds or an HTTP date)
    post_delay: float = 0.0  #: seconds a purchase (POST) waits before the number exists


class SalvyStandin:
    """The in-memory Salvy; `start()` serves it on a daemon thread and returns the base URL."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, stock: tuple[int, ...] = DEFAULT_STOCK
    ) -> None:
        self.host, self.port, self.stock = host, port, tuple(stock)
        self.faults = Faults()
        self._lock = threading.Lock()
        self._switched = threading.Condition(self._lock)  # wakes held purchases
        self._held = 0
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._numbers: dict[str, dict[str, Any]] = {}
        self._cancellations: list[tuple[str, str]] = []
        self._purchases = 0
        self._posts = 0
        self._requests = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> str:
        """Serve in a daemon thread; returns the base URL (port 0 picks a free port)."""
        handler = type("Handler", (Handler,), {"standin": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._stopping.clear()
        threading.Thread(
            target=self._server.serve_forever, name="salvy-standin", daemon=True
        ).start()
        return self.url

    def stop(self) -> None:
        """Stop serving; requests hanging on purpose are released."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> SalvyStandin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        if self._server is None:
            raise RuntimeError("stand-in not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- switches and inspection -----------------------------------------------------------------
    def set_faults(self, **changes: Any) -> Faults:
        """Change some fault switches (names of `Faults`); returns the switches now on."""
        known = {f.name for f in dataclasses.fields(Faults)}
        if unknown := set(changes) - known:
            raise ValueError(f"unknown fault switches: {sorted(unknown)}")
        coerced = {name: _coerce(name, value) for name, value in changes.items()}
        with self._lock:
            self.faults = dataclasses.replace(self.faults, **coerced)
            self._switched.notify_all()
            return self.faults

    def reset(self) -> None:
        """Forget every number, purchase and cancellation; switch every fault off."""
        with self._lock:
            self.faults = Faults()
            self._switched.notify_all()
            self._numbers.clear()
            self._cancellations.clear()
            self._purchases = 0
            self._posts = 0
            self._requests = 0

    @property
    def purchases(self) -> int:
        """How many POSTs bought a number."""
        return self._purchases

    @property
    def held_purchases(self) -> int:
        """How many POSTs are waiting on hold_purchases right now."""
        return self._held

    @property
    def posts(self) -> int:
        """How many purchase requests (POST) arrived, whatever their answer."""
        return self._posts

    @property
    def requests(self) -> int:
        """How many API requests arrived (admin routes excluded)."""
        return self._requests

    def count_request(self, method: str, path: str) -> None:
        """Count one API request (and one purchase attempt if it is a POST)."""
        with self._lock:
            self._requests += 1
            if (method, path) == ("POST", ACCOUNTS):
                self._posts += 1

    @property
    def numbers(self) -> dict[str, dict[str, Any]]:
        """A copy of every number ever bought, by id."""
        with self._lock:
            return {k: dict(v) for k, v in self._numbers.items()}

    @property
    def cancellations(self) -> list[tuple[str, str]]:
        """(id, reason) of every cancel that changed a number."""
        with self._lock:
            return list(self._cancellations)

    def state(self) -> dict[str, Any]:
        """Everything above as JSON-ready data."""
        return {
            "purchases": self.purchases,
            "posts": self.posts,
            "requests": self.requests,
            "numbers": self.numbers,
            "cancellations": [list(c) for c in self.cancellations],
            "held_purchases": self.held_purchases,
            "faults": dataclasses.asdict(self.faults),
        }

    # -- faults ----------------------------------------------------------------------------------
    def take_fault(self, name: str) -> bool:
        """Consume one unit of a countdown switch; True when this request is affected."""
        with self._lock:
            left = getattr(self.faults, name)
            if left > 0:
                setattr(self.faults, name, left - 1)
            return left > 0

    def hold(self) -> None:
        """Keep a purchase waiting while hold_purchases is on (counted in held_purchases)."""
        with self._switched:
            if not self.faults.hold_purchases:
                return
            self._held += 1
            try:
                while self.faults.hold_purchases and not self._stopping.is_set():
                    self._switched.wait(0.5)  # stop() sets no condition: look again now and then
            finally:
                self._held -= 1

    def pause(self, seconds: float) -> None:
        """Sleep, but wake up when the server stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    # -- the API ---------------------------------------------------------------------------------
    def area_codes(self, only_available: bool) -> dict[str, Any]:
        """Stock by DDD, in the real API's shape."""
        out = set(self.faults.out_of_stock)
        codes = [{"areaCode": ddd, "available": ddd not in out} for ddd in sorted(self.stock)]
        return {"areaCodes": [c for c in codes if c["available"] or not only_available]}

    def buy(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a number in the asked DDD with a unique +55 DDD 9XXXXXXXX phone."""
        ddd, name = body.get("areaCode"), body.get("name")
        if not isinstance(ddd, int) or isinstance(ddd, bool) or not 11 <= ddd <= 99:
            raise SalvyError(400, "invalid_request", "areaCode must be a DDD between 11 and 99")
        if name is not None and not isinstance(name, str):
            raise SalvyError(400, "invalid_request", "name must be a string or null")
        if ddd not in self.stock or ddd in self.faults.out_of_stock:
            raise SalvyError(422, "area_code_unavailable", f"DDD {ddd} has no numbers available")
        with self._lock:
            taken = {n["phoneNumber"] for n in self._numbers.values()}
            phone = f"+55{ddd}9{random.randrange(10**8):08d}"
            while phone in taken:
                phone = f"+55{ddd}9{random.randrange(10**8):08d}"
            number = {
                "id": str(uuid.uuid4()),
                "name": name,
                "phoneNumber": phone,
                "status": "active",
                "createdAt": _now(),
                "canceledAt": None,
                "cancelReason": None,
            }
            self._numbers[number["id"]] = number
            self._purchases += 1
            return dict(number)

    def get(self, number_id: str) -> dict[str, Any]:
        """One number, or 404."""
        with self._lock:
            if number_id not in self._numbers:
                raise SalvyError(404, "not_found", "virtual phone account not found")
            return dict(self._numbers[number_id])

    def set_status(self, number_id: str, status: str) -> None:
        """What Salvy's side does on its own (blocked, active, canceled), for webhook tests."""
        with self._lock:
            self._numbers[number_id]["status"] = status

    def list_numbers(self) -> list[dict[str, Any]]:
        """Every number, oldest first (a plain array, as the real v2 list)."""
        with self._lock:
            return [dict(n) for n in self._numbers.values()]

    def cancel(self, number_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Cancel a number; a second cancel answers 409 already_canceled."""
        reason = body.get("reason")
        if reason not in CANCEL_REASONS:
            raise SalvyError(400, "invalid_request", f"reason must be one of {CANCEL_REASONS}")
        with self._lock:
            number = self._numbers.get(number_id)
            if number is None:
                raise SalvyError(404, "not_found", "virtual phone account not found")
            if number["status"] == "canceled":
                raise SalvyError(409, "already_canceled", "virtual phone account already canceled")
            number.update(status="canceled", canceledAt=_now(), cancelReason=reason)
            self._cancellations.append((number_id, reason))
            return dict(number)


def _coerce(name: str, value: Any) -> Any:
    """Give a switch set over HTTP the type of its default (counts int, seconds float)."""
    default = getattr(Faults(), name)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        return str(value).strip().lower() in ("1", "true", "yes", "on")
    return [int(v) for v in value] if isinstance(default, list) else type(default)(value)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str] | None = None) -> None:
    """Serve the stand-in until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(description="Local stand-in for the Salvy API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    standin = SalvyStandin(args.host, args.port)
    print(f"Salvy stand-in serving on {standin.start()}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()


if __name__ == "__main__":
    main()
