"""Evolution API's own webhook auth: `Authorization: Bearer <JWT>`, accepted with EVOLUTION_JWT_KEY.

With `jwt_key` in an instance's webhook `headers`, Evolution signs, for each delivery,
{"iat": now, "exp": now + 600, "app": "evolution", "action": "webhook"} with HS256 and that key,
and sends it as a Bearer token instead of the key. Its `iat`/`exp` come from `Date.now()`, the real
epoch (unlike the envelope's `date_time`), so they are checked against our clock.
"""

from __future__ import annotations

import warnings

import jwt

#: Seconds of disagreement between Evolution's server clock and ours tolerated on exp and iat.
LEEWAY_SECONDS = 30
#: Claims every Evolution webhook token carries, with these values.
CLAIMS = {"app": "evolution", "action": "webhook"}
#: HS256's shortest key worth its name (RFC 7518 section 3.2), in bytes.
MIN_KEY_BYTES = 32

# PyJWT warns on every decode with a short key; the receiver says it once, at start (key_hint).
warnings.filterwarnings("ignore", message="The HMAC key is .* below the minimum recommended")


def key_hint(key: str | None) -> str | None:
    """A warning for a key shorter than HS256 wants, or None (never the key)."""
    size = len((key or "").encode())
    if not key or size >= MIN_KEY_BYTES:
        return None
    return (
        f"EVOLUTION_JWT_KEY is {size} bytes long; HS256 wants {MIN_KEY_BYTES} or more "
        "(a short key can be guessed offline from one token): set a longer jwt_key in Evolution too"
    )


def looks_like_jwt(token: str | None) -> bool:
    """Three dot-separated parts: worth verifying as a JWT (a shared token never has two dots)."""
    return bool(token) and token.count(".") == 2


def jwt_ok(token: str | None, key: str | None) -> bool:
    """True for an unexpired HS256 JWT signed with key that carries Evolution's webhook claims."""
    if not key or not looks_like_jwt(token):
        return False
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["HS256"],  # never the token's own choice (alg "none", RS/HS confusion)
            options={"require": ["exp", "iat"]},
            leeway=LEEWAY_SECONDS,
        )
    except jwt.PyJWTError:
        return False
    return all(claims.get(name) == value for name, value in CLAIMS.items())
