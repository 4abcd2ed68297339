"""A real local HTTP server speaking the part of Slack's Web API that adapters/slack.py uses.

Tests point a real slack-sdk WebClient at it (base_url = start()), so the SDK's own request
encoding, retry handlers and error parsing run exactly as against slack.com.

Switches (plain attributes, safe to flip from the test thread):
  down             answer every call with 503, as Slack does in an incident
  rate_limit_next  the next n calls get 429 with Retry-After: 1
  fail_next_with   the next call gets {"ok": false, "error": <this>} (e.g. "channel_not_found")
  refuse_with      every call gets {"ok": false, "error": <this>} until it is set back to None
                   (e.g. "token_revoked": the token was revoked, then ops issued a new one)
  delay            seconds to wait before answering (makes concurrent deliverers overlap)
hold() parks every request at the door until release(); `waiting` is set once one is parked,
so a test can look at the database while a deliverer is mid-call. stop() / start() close the
listening socket and listen again on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


class FakeSlack:
    """Slack's chat.postMessage and auth.test on 127.0.0.1, recording every accepted message."""

    def __init__(self, token: str = "xoxb-fake-slack-token") -> None:
        self.token = token
        self.messages: list[tuple[str, str]] = []
        self.calls = 0
        self.down = False
        self.rate_limit_next = 0
        self.fail_next_with: str | None = None
        self.refuse_with: str | None = None
        self.delay = 0.0
        self.waiting = threading.Event()
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The base URL slack-sdk expects (ends in /api/)."""
        return f"http://127.0.0.1:{self._port}/api/"

    def start(self) -> str:
        """Listen (on the previous port after a stop()); returns base_url."""
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler_for(self))
        server.daemon_threads = True
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Close the listening socket: clients now get 'connection refused'."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def hold(self) -> None:
        """Park every request until release() (a Slack call that takes as long as the test likes)."""
        self.waiting.clear()
        self._open.clear()

    def release(self) -> None:
        """Let parked and future requests through."""
        self._open.set()

    def wait_at_door(self, timeout: float = 30) -> None:
        """Block while held: called by the handler thread of each request."""
        if not self._open.is_set():
            self.waiting.set()
            if not self._open.wait(timeout):
                raise TimeoutError("FakeSlack held a request for longer than the test allowed")

    def texts(self) -> list[str]:
        """The texts of the accepted messages, in arrival order."""
        with self._lock:
            return [text for _, text in self.messages]

    def answer(self, method: str, auth: str, body: dict[str, str]) -> tuple[int, dict, dict]:
        """Decide (status, headers, json) for one API call; records accepted messages."""
        with self._lock:
            self.calls += 1
            if self.down:
                return 503, {}, {}
            if self.rate_limit_next > 0:
                self.rate_limit_next -= 1
                return 429, {"Retry-After": "1"}, {"ok": False, "error": "ratelimited"}
            if auth != f"Bearer {self.token}":
                return 200, {}, {"ok": False, "error": "invalid_auth" if auth else "not_authed"}
            if self.fail_next_with is not None:
                error, self.fail_next_with = self.fail_next_with, None
                return 200, {}, {"ok": False, "error": error}
            if self.refuse_with is not None:
                return 200, {}, {"ok": False, "error": self.refuse_with}
            if method == "auth.test":
                return 200, {}, {"ok": True, "team": "fake", "user_id": "U1"}
            if method != "chat.postMessage":
                return 404, {}, {"ok": False, "error": "unknown_method"}
            return 200, {}, self._post_message(body)

    def _post_message(self, body: dict[str, str]) -> dict:
        channel, text = body.get("channel"), body.get("text")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not text:
            return {"ok": False, "error": "no_text"}
        self.messages.append((channel, text))
        ts = f"{time.time():.6f}"
        return {"ok": True, "channel": channel, "ts": ts, "message": {"text": text, "ts": ts}}


def _handler_for(fake: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = _parse_body(self.headers.get("Content-Type", ""), self._read_body())
            fake.wait_at_door()
            if fake.delay:
                time.sleep(fake.delay)
            method = self.path.split("?")[0].rsplit("/", 1)[-1]
            status, headers, payload = fake.answer(
                method, self.headers.get("Authorization", ""), body
            )
            self._reply(status, headers, payload)

        def _read_body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _reply(self, status: int, headers: dict, payload: dict) -> None:
            data = json.dumps(payload).encode() if payload else b"Service Unavailable"
            self.send_response(status)
            kind = "application/json; charset=utf-8" if payload else "text/plain"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            """Keep the test output quiet."""

    return Handler


def _parse_body(content_type: str, raw: bytes) -> dict[str, str]:
    """JSON (what slack-sdk sends for chat.postMessage) or form-urlencoded."""
    if not raw:
        return {}
    if content_type.startswith("application/json"):
        return {k: str(v) for k, v in json.loads(raw).items()}
    return {k: v[0] for k, v in parse_qs(raw.decode()).items()}
