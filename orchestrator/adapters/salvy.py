"""Salvy (docs.salvy.com.br, API v2) virtual phone numbers over HTTP.

The boundary of the provider: every call has a connect and a read timeout, and `requests`
exceptions and HTTP errors are translated here into the project's tree (orchestrator.errors), so
services never see `requests`. Salvy has no idempotency key: a purchase that timed out may still
have happened, so callers send a unique `name` and look it up (`find_by_name`) before buying again.
The bearer token lives only in the request headers; it is kept out of reprs, messages and logs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import requests

from orchestrator.errors import ConfigError, PurchaseInDoubt, Rejected, TransientError

log = logging.getLogger(__name__)

#: The only reasons Salvy accepts when a number is cancelled.
CANCEL_REASONS = frozenset({"unnecessary", "whatsapp-ban", "technical-issues", "company-canceled"})
#: Path of the virtual phone numbers resource.
ACCOUNTS = "/api/v2/virtual-phone-accounts"
#: Rejected.code for 401/403: Salvy refuses our token (purchases back off under this cause).
REFUSED_TOKEN = "refused_token"


@dataclass(frozen=True)
class SalvyNumber:
    """One virtual phone number as Salvy reports it."""

    id: str
    name: str | None
    phone_number: str
    status: str
    area_code: int | None = None
    created_at: str | None = None
    #: When Salvy cancelled it; still set on a line Salvy reactivated since.
    canceled_at: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SalvyNumber:
        """Build from Salvy's JSON object; area_code comes from +55DD... when not given."""
        phone = str(data["phoneNumber"])
        area_code = data.get("areaCode")
        return cls(
            id=str(data["id"]),
            name=data.get("name"),
            phone_number=phone,
            status=str(data["status"]),
            area_code=int(area_code) if area_code is not None else area_code_of(phone),
            created_at=data.get("createdAt"),
            canceled_at=data.get("canceledAt"),
        )


def area_code_of(phone_number: str) -> int | None:
    """The DDD of a Brazilian E.164 number (+55 DD ...), or None for anything else."""
    ddd = phone_number[3:5]
    return int(ddd) if phone_number.startswith("+55") and ddd.isdigit() else None


class SalvyClient:
    """Client of Salvy's virtual phone numbers; build one per worker process."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        session: requests.Session | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 15.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self._session = session or requests.Session()
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"SalvyClient(base_url={self.base_url!r}, timeout={self.timeout!r})"

    def close(self) -> None:
        """Release the pooled connections."""
        self._session.close()

    def area_codes(self) -> list[int]:
        """DDDs with numbers in stock right now, ascending."""
        body = self._call("GET", f"{ACCOUNTS}/area-codes", params={"available": "true"})
        return self._parse(
            lambda b: sorted(int(e["areaCode"]) for e in b["areaCodes"] if e.get("available")),
            body,
        )

    def create(self, area_code: int, name: str) -> SalvyNumber:
        """Buy one number in area_code; name should be unique so a retry can find it.

        PurchaseInDoubt when the answer does not tell whether the number was bought (timeout,
        5xx, garbled body); a 429 or a 4xx means nothing was bought.
        """
        payload = {"areaCode": area_code, "name": name}
        try:
            resp = self._send("POST", ACCOUNTS, json=payload)
        except TransientError as error:
            raise PurchaseInDoubt(error.reason) from error
        if resp.status_code == 429 or (400 <= resp.status_code < 500 and resp.status_code != 408):
            raise _error_for(resp)
        if resp.status_code >= 400:
            raise PurchaseInDoubt(_error_for(resp).reason)
        try:
            return SalvyNumber.from_json(resp.json())
        except (ValueError, KeyError, TypeError) as exc:
            raise PurchaseInDoubt(f"unexpected Salvy response: {type(exc).__name__}") from exc

    def list_numbers(self) -> list[SalvyNumber]:
        """Every number of the account, cancelled ones included (the v2 list is not paginated)."""
        body = self._call("GET", ACCOUNTS)
        return self._parse(lambda items: [SalvyNumber.from_json(item) for item in items], body)

    def find_by_name(self, name: str) -> SalvyNumber | None:
        """The number bought under name (a live one before a cancelled one), or None."""
        matches = [n for n in self.list_numbers() if n.name == name]
        matches.sort(key=lambda n: (n.status != "canceled", n.created_at or ""), reverse=True)
        return matches[0] if matches else None

    def get(self, number_id: str) -> SalvyNumber:
        """One number by its Salvy id."""
        body = self._call("GET", f"{ACCOUNTS}/{quote(number_id, safe='')}")
        return self._parse(SalvyNumber.from_json, body)

    def find(self, number_id: str) -> SalvyNumber | None:
        """One number by its Salvy id, or None when Salvy does not know it (404)."""
        resp = self._send("GET", f"{ACCOUNTS}/{quote(number_id, safe='')}")
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise _error_for(resp)
        return self._parse(lambda r: SalvyNumber.from_json(r.json()), resp)

    def cancel(self, number_id: str, reason: str) -> None:
        """Cancel a number; one already cancelled, or unknown to Salvy, counts as done."""
        if reason not in CANCEL_REASONS:
            raise Rejected(f"invalid Salvy cancel reason {reason!r}", code="invalid_reason")
        path = f"{ACCOUNTS}/{quote(number_id, safe='')}"
        resp = self._send("DELETE", path, json={"reason": reason})
        if resp.status_code == 404:
            log.info("salvy number %s is unknown to Salvy; cancel counted as done", number_id)
        if resp.status_code < 400 or resp.status_code == 404:
            return
        error = _error_for(resp)
        # Salvy does not document how it answers a second cancel: ask it for the number's state.
        if resp.status_code in (400, 409, 422) and self.get(number_id).status == "canceled":
            return
        raise error

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._send(method, path, **kwargs)
        if resp.status_code >= 400:
            raise _error_for(resp)
        return self._parse(lambda r: r.json() if r.content else None, resp)

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            resp = self._session.request(
                method, self.base_url + path, headers=self._headers, timeout=self.timeout, **kwargs
            )
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
            raise ConfigError(f"SALVY_API_URL is not a usable URL: {self.base_url!r}") from exc
        except requests.RequestException as exc:
            raise TransientError(f"Salvy {method} {path}: {type(exc).__name__}") from exc
        log.debug("salvy %s %s -> %s", method, path, resp.status_code)
        return resp

    @staticmethod
    def _parse(build: Callable[[Any], Any], value: Any) -> Any:
        # A garbled success may hide a purchase that happened: retry, which looks the name up.
        try:
            return build(value)
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientError(f"unexpected Salvy response: {type(exc).__name__}") from exc


def _error_for(resp: requests.Response) -> TransientError | Rejected:
    """Translate an HTTP error answer into the project's exception tree."""
    try:
        body = resp.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    code = str(body.get("code") or f"http_{resp.status_code}")
    message = str(body.get("message") or resp.reason or "")[:300]
    reason = f"Salvy {resp.status_code} {code}: {message}"
    if resp.status_code == 429:
        return TransientError(reason, retry_after=_retry_after(resp.headers.get("Retry-After")))
    if resp.status_code >= 500 or resp.status_code == 408:
        return TransientError(reason)
    if resp.status_code in (401, 403):
        return Rejected(reason, code=REFUSED_TOKEN)
    return Rejected(reason, code=code)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), if any."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
