"""`chip-orchestrator webhooks [--host H] [--port P]`: serve the receiver with uvicorn."""

from __future__ import annotations

import argparse
import logging

from orchestrator.errors import ConfigError

#: Where the receiver listens unless told otherwise (SPEC).
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080


def build(settings=None):
    """The receiver wired to this process's engine and Celery app (refuses without a token)."""
    from orchestrator.app import bootstrap
    from orchestrator.app.settings import get_settings
    from orchestrator.webhooks.app import create_app

    settings = settings or get_settings()
    if not settings.webhook_token:
        raise ConfigError("WEBHOOK_TOKEN is not set: the receiver refuses to run without one")
    bootstrap.broker_url(settings)  # DATABASE_URL and the broker named at once, in one line
    from tasks import app as celery_app

    def send(name: str, args: list, kwargs: dict) -> None:
        celery_app.send_task(name, args=args, kwargs=kwargs)

    engine = bootstrap.engine()
    bootstrap.warm_up()
    return create_app(settings, engine, send)


def warnings_at_start(settings) -> list[str]:
    """What ops should fix in the receiver's secrets, said without showing them."""
    from orchestrator.webhooks.evolution_jwt import key_hint
    from orchestrator.webhooks.guard import encoding_hint

    hints = (encoding_hint(settings.webhook_token), key_hint(settings.evolution_jwt_key))
    return [hint for hint in hints if hint]


def cmd_webhooks(args: argparse.Namespace) -> int:
    """Serve until interrupted; the access log is off (a ?token= would be in it)."""
    import uvicorn

    from orchestrator.app.settings import get_settings

    settings = get_settings()
    app = build(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    log = logging.getLogger("orchestrator.webhooks")
    for hint in warnings_at_start(settings):
        log.warning(hint)
    if settings.evolution_jwt_key:
        log.info("EVOLUTION_JWT_KEY set: Evolution's signed webhook JWT is accepted")
    uvicorn.run(
        app, host=args.host, port=args.port, access_log=False, log_level="warning", lifespan="off"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `webhooks` verb to the CLI's subparsers."""
    p = sub.add_parser(
        "webhooks",
        help="receive Evolution API and Salvy webhooks (needs WEBHOOK_TOKEN; Salvy: SALVY_WEBHOOK_SECRET)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port to listen on")
    p.set_defaults(fn=cmd_webhooks)
