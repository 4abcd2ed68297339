"""The receiver's routes: Evolution API (token), Salvy (Svix signature), /healthz, /metrics.

Each delivery is verified, parsed into a plain signal (domain/signals.py), recorded in one
short transaction (services/signals.py) and turned into queued work; nothing waits on a worker.
Answers are JSON with a `status`: accepted, ignored, rejected, unauthorized, too_large,
unavailable, not_found, method_not_allowed. Evolution retries a 5xx or a timeout and never a
400/401/403/404/422, so a fault that may pass is 503 and every refusal one of those (a body too
large included: 422 to Evolution, 413 to Svix, which retries any non-2xx alike).
Synchronous work (SQL, publishing to the broker) runs in Starlette's threadpool.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from svix.webhooks import Webhook, WebhookVerificationError

from orchestrator import task_names
from orchestrator.app.settings import Settings
from orchestrator.domain.signals import BadEnvelope, gateway_signal, provider_signal
from orchestrator.services import signals as gateway
from orchestrator.webhooks import metrics
from orchestrator.webhooks.evolution_jwt import jwt_ok
from orchestrator.webhooks.guard import TooLarge, presented_token, read_body, token_ok

log = logging.getLogger("orchestrator.webhooks")

#: send(task name, args, kwargs): publish a task (tasks.app.send_task in production).
Send = Callable[[str, list, dict], object]


def _answer(source: str, kind: str | None, code: int, payload: dict, started: float) -> Response:
    outcome = payload["status"] if payload["status"] != "ignored" else payload.get("why", "ignored")
    metrics.count(source, kind, outcome)
    metrics.SECONDS.labels(source).observe(time.perf_counter() - started)
    # The path only: a ?token= in the query string never reaches the log.
    log.info("%s %s -> %d %s", source, kind or "-", code, outcome)
    return JSONResponse({k: v for k, v in payload.items() if k != "why"}, status_code=code)


class MalformedJson(BadEnvelope):
    """The body is not JSON at all (400), as opposed to JSON of the wrong shape (422)."""


def _parse_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedJson(f"malformed JSON: {error}") from None
    except RecursionError:  # [[[[...: a refusal, never a 500 that Evolution would retry
        raise MalformedJson("malformed JSON: nested too deeply") from None


def _refused(source: str, kind: str | None, error: BadEnvelope, started: float) -> Response:
    """400 for a body that is not JSON, 422 for JSON that is not the expected envelope."""
    code = 400 if isinstance(error, MalformedJson) else 422
    return _answer(source, kind, code, {"status": "rejected", "error": str(error)}, started)


def create_app(settings: Settings, engine: sa.Engine, send: Send) -> Starlette:
    """The ASGI app over this process's engine and task publisher."""
    verifier = Webhook(settings.salvy_webhook_secret) if settings.salvy_webhook_secret else None

    async def _guarded_body(request: Request, source: str, started: float) -> bytes | Response:
        try:
            return await read_body(request, settings.webhook_max_body)
        except TooLarge as error:
            payload = {"status": "too_large", "error": str(error)}
            # Evolution would retry a 413 ten times over 20 minutes; a 422 it drops at once.
            return _answer(source, None, 422 if source == "evolution" else 413, payload, started)

    def _evolution_caller(token: str | None) -> bool:
        """WEBHOOK_TOKEN, or (EVOLUTION_JWT_KEY set) Evolution's own signed Bearer JWT."""
        return token_ok(token, settings.webhook_token) or jwt_ok(token, settings.evolution_jwt_key)

    def _apply(signal) -> dict:
        result = gateway.apply_gateway_signal(engine, signal)
        if result.get("replace"):
            send(task_names.REPLACE, [result["chip_id"]], {"reason": result["replace"]})
        return result

    async def evolution(request: Request) -> Response:
        started = time.perf_counter()
        token, suffix = presented_token(request)
        if not _evolution_caller(token):
            payload = {
                "status": "unauthorized",
                "error": "a valid WEBHOOK_TOKEN (or Evolution's signed JWT) is required",
            }
            return _answer("evolution", None, 401, payload, started)
        body = await _guarded_body(request, "evolution", started)
        if isinstance(body, Response):
            return body
        path_event = request.path_params.get("event") or suffix
        try:
            signal = gateway_signal(_parse_json(body), path_event, datetime.now(UTC))
        except BadEnvelope as error:
            return _refused("evolution", path_event, error, started)
        if isinstance(signal, str):
            return _answer("evolution", None, 200, {"status": "ignored", "reason": signal}, started)
        try:
            result = await run_in_threadpool(_apply, signal)
        except Exception as error:  # database or broker down: the sender retries on 503
            log.warning("evolution %s: unavailable (%s)", signal.event, type(error).__name__)
            payload = {"status": "unavailable", "error": "try again later"}
            return _answer("evolution", signal.event, 503, payload, started)
        if result["status"] == "ignored":
            why = "stale" if result.get("reason") == "stale" else "unknown_instance"
            return _answer("evolution", signal.event, 200, {**result, "why": why}, started)
        return _answer("evolution", signal.event, 200, result, started)

    async def salvy(request: Request) -> Response:
        started = time.perf_counter()
        if verifier is None:
            payload = {"status": "unavailable", "error": "SALVY_WEBHOOK_SECRET is not set"}
            return _answer("salvy", None, 503, payload, started)
        body = await _guarded_body(request, "salvy", started)
        if isinstance(body, Response):
            return body
        try:
            verifier.verify(body, dict(request.headers))
        except WebhookVerificationError as error:
            payload = {"status": "unauthorized", "error": f"Svix signature refused: {error}"}
            return _answer("salvy", None, 401, payload, started)
        try:
            signal = provider_signal(_parse_json(body), request.headers.get("svix-id", ""))
        except BadEnvelope as error:
            return _refused("salvy", None, error, started)
        if isinstance(signal, str):
            return _answer("salvy", None, 200, {"status": "ignored", "reason": signal}, started)
        args = [signal.type, signal.account_id, signal.message_id]
        try:
            await run_in_threadpool(send, task_names.SALVY_EVENT, args, {})
        except Exception as error:  # the broker is down: Svix retries on 503
            log.warning("salvy %s: broker unavailable (%s)", signal.type, type(error).__name__)
            payload = {"status": "unavailable", "error": "try again later"}
            return _answer("salvy", signal.type, 503, payload, started)
        return _answer("salvy", signal.type, 200, {"status": "accepted"}, started)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_page(request: Request) -> Response:
        token, _ = presented_token(request)
        if not token_ok(token, settings.webhook_token):
            return JSONResponse({"status": "unauthorized"}, status_code=401)
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def not_routed(_: Request, error: HTTPException) -> Response:
        status = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "rejected")
        return JSONResponse({"status": status}, status_code=error.status_code)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
        Route("/webhooks/evolution", evolution, methods=["POST"]),
        Route("/webhooks/evolution/{event:path}", evolution, methods=["POST"]),
        Route("/webhooks/salvy", salvy, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_routed, 405: not_routed})
