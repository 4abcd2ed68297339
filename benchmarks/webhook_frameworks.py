"""Starlette or FastAPI for the receiver: the framework's cost per request, measured in-process.

`PYTHONPATH=<dir with fastapi> python -m benchmarks.webhook_frameworks` (FastAPI is not a
dependency: install it aside, e.g. `pip install --target /tmp/fa fastapi`). Each app parses an
Evolution envelope from the body and answers JSON; the ASGI app is called directly (no socket,
no client), so the figure is the framework's own work, which is what differs between them.
"""

# No `from __future__ import annotations`: FastAPI reads these endpoints' annotations.
import asyncio
import json
import time

from benchmarks.common import median, print_table

BODY = json.dumps(
    {
        "event": "connection.update",
        "instance": "inst-1",
        "data": {"instance": "inst-1", "state": "open", "statusReason": 200},
        "date_time": "2026-12-01T12:00:00.000Z",
    }
).encode()


def starlette_app():
    """The receiver's shape: a Route, an async endpoint, json.loads, JSONResponse."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def endpoint(request):
        body = json.loads(await request.body())
        return JSONResponse({"status": "ignored", "event": body["event"]})

    return Starlette(routes=[Route("/webhooks/evolution", endpoint, methods=["POST"])])


def fastapi_apps():
    """FastAPI with the same raw-Request endpoint, and with a pydantic model of the envelope."""
    from fastapi import FastAPI, Request
    from pydantic import BaseModel

    class Envelope(BaseModel):
        event: str
        instance: str
        data: dict
        date_time: str | None = None

    raw, typed = FastAPI(), FastAPI()

    @raw.post("/webhooks/evolution")
    async def raw_endpoint(request: Request) -> dict:
        body = json.loads(await request.body())
        return {"status": "ignored", "event": body["event"]}

    @typed.post("/webhooks/evolution")
    async def typed_endpoint(body: Envelope) -> dict:
        return {"status": "ignored", "event": body.event}

    return raw, typed


async def _call(app) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/evolution",
        "raw_path": b"/webhooks/evolution",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
    }
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    status = []

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    assert status == [200], status


async def _per_request(app, n: int) -> float:
    for _ in range(200):
        await _call(app)
    start = time.perf_counter()
    for _ in range(n):
        await _call(app)
    return (time.perf_counter() - start) / n


def main(n: int = 20_000, runs: int = 5) -> int:
    """Median microseconds per request of each app."""
    apps = {"Starlette (the receiver's choice)": starlette_app()}
    try:
        raw, typed = fastapi_apps()
        apps["FastAPI, same endpoint (Request)"] = raw
        apps["FastAPI, pydantic model of the envelope"] = typed
    except ImportError:
        print("FastAPI is not importable: only Starlette measured")
    rows = []
    for name, app in apps.items():
        took = [asyncio.run(_per_request(app, n)) for _ in range(runs)]
        rows.append([name, f"{median(took) * 1e6:.0f}", f"{1 / median(took):,.0f}"])
    print_table(
        f"Framework cost per webhook request, in-process ASGI call (median of {runs} x {n:,})",
        ["app", "µs per request", "requests/s on one core"],
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
