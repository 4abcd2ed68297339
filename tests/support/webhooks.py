"""Speaking to the receiver as Evolution API and Salvy (via Svix) do: real HTTP requests."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import requests
from svix.webhooks import Webhook

#: The receiver's token and Salvy's signing secret in the tests.
TOKEN = "tok-" + uuid.uuid4().hex
SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


def envelope(event: str, instance: str, data: dict, at: datetime | None = None) -> dict:
    """Evolution API v2's webhook envelope."""
    return {
        "event": event,
        "instance": instance,
        "data": data,
        "destination": "http://receiver/webhooks/evolution",
        "date_time": (at or datetime.now(UTC)).isoformat(),
        "sender": "5511999999999@s.whatsapp.net",
        "server_url": "http://evolution:8080",
        "apikey": "instance-api-key",
    }


def close(instance: str, code: int, at: datetime | None = None) -> dict:
    """connection.update state close with Baileys' statusReason."""
    return envelope(
        "connection.update",
        instance,
        {"instance": instance, "state": "close", "statusReason": code},
        at,
    )


def opened(instance: str, at: datetime | None = None) -> dict:
    """connection.update state open."""
    return envelope(
        "connection.update",
        instance,
        {"instance": instance, "state": "open", "statusReason": 200},
        at,
    )


def post_evolution(
    base: str, body: object, *, token: str | None = TOKEN, path: str = ""
) -> requests.Response:
    """POST to /webhooks/evolution{path} with the token as a Bearer header."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    headers["Content-Type"] = "application/json"
    return requests.post(f"{base}/webhooks/evolution{path}", data=data, headers=headers, timeout=10)


def post_salvy(
    base: str,
    kind: str,
    account_id: str,
    *,
    secret: str = SECRET,
    age: timedelta = timedelta(0),
    msg_id: str | None = None,
) -> requests.Response:
    """A Svix-signed Salvy delivery, signed `age` ago."""
    body = json.dumps(
        {
            "type": kind,
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {"phoneAccountId": account_id},
        }
    )
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = datetime.now(UTC) - age
    signature = Webhook(secret).sign(msg_id, when, body)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": str(int(when.timestamp())),
        "svix-signature": signature,
        "Content-Type": "application/json",
    }
    return requests.post(f"{base}/webhooks/salvy", data=body, headers=headers, timeout=10)
