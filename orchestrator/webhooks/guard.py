"""What every request passes before its body is read: the shared token, the body's size.

The token is compared in constant time (hmac.compare_digest) and never logged: the receiver's
access log prints the path without its query string.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request


class TooLarge(Exception):
    """Raised when a body exceeds the receiver's limit (answered 413)."""


def presented_token(request: Request) -> tuple[str | None, str | None]:
    """The token the caller presented (Bearer header, else ?token=) and a path suffix in it.

    Evolution builds "webhook by events" URLs by appending /<event> to the configured URL, so
    a URL configured as .../evolution?token=T arrives as ?token=T/connection-update: the part
    after the first "/" is the event, never part of the token.
    """
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), None
    query = request.query_params.get("token")
    if not query:
        return None, None
    token, _, suffix = query.partition("/")
    return token, (suffix or None)


def token_ok(presented: str | None, expected: str | None) -> bool:
    """True only for the configured token, compared in constant time (no token: refuse all)."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


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
