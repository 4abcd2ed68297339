"""What every request passes before its body is read: the shared token, the body's size.

The token is compared in constant time (hmac.compare_digest) and never logged: the receiver's
access log prints the path without its query string.
"""

from __future__ import annotations

import hmac
import string
from urllib.parse import quote, unquote

from starlette.requests import Request

#: What a URL carries as it is (RFC 3986 "unreserved"); any other character of a ?token= value
#: must be percent-encoded (%2B for '+', %2F for '/', %3D for '=').
URL_SAFE = frozenset(string.ascii_letters + string.digits + "-._~")
#: How to encode the token for a URL without it ever being printed by us.
ENCODE_COMMAND = (
    "python3 -c 'import os, urllib.parse; "
    'print(urllib.parse.quote(os.environ["WEBHOOK_TOKEN"], safe=""))\''
)


class TooLarge(Exception):
    """Raised when a body exceeds the receiver's limit (answered 413, or 422 to Evolution)."""


def query_token(raw: bytes) -> tuple[str | None, str | None]:
    """?token= from the raw query string, percent-decoded, and Evolution's event suffix.

    Evolution builds "webhook by events" URLs by appending /<event> to the configured URL, so
    .../evolution?token=T arrives as ?token=T/connection-update: the first raw '/' starts the
    suffix. A '/' of the token itself therefore travels as %2F, and '+' as %2B: the query is
    decoded here, not as a form (where '+' is a space), and a raw '+' is kept as it is.
    """
    query, _, suffix = raw.decode("latin-1").partition("/")
    token = None
    for part in query.split("&"):
        name, sep, value = part.partition("=")
        if sep and unquote(name) == "token":
            token = unquote(value) or None
            break
    return token, (unquote(suffix) or None)


def presented_token(request: Request) -> tuple[str | None, str | None]:
    """The credential the caller presented (Bearer header, else ?token=) and a path suffix."""
    token, suffix = query_token(request.scope.get("query_string", b""))
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), suffix
    return token, suffix


def token_ok(presented: str | None, expected: str | None) -> bool:
    """True only for the configured token, compared in constant time (no token: refuse all)."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def encoding_hint(token: str | None) -> str | None:
    """Why and how the token must be percent-encoded in a ?token= URL, or None (never the token)."""
    unsafe = sorted({c for c in token or "" if c not in URL_SAFE})
    if not unsafe:
        return None
    shown = ", ".join(f"{c!r} as {quote(c, safe='')}" for c in unsafe)
    return (
        "WEBHOOK_TOKEN has characters that a ?token= URL must carry percent-encoded "
        f"({shown}); the Authorization: Bearer header needs no encoding. "
        f"The URL form of the token: {ENCODE_COMMAND}"
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (TooLarge) as soon as it exceeds limit bytes, declared or streamed."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"body of {declared} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
