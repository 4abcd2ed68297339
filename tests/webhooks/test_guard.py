"""The token check and where a token may come from, without a server."""

from __future__ import annotations

from starlette.requests import Request

from orchestrator.webhooks.guard import presented_token, token_ok


def _request(query: str = "", headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "query_string": query.encode(), "headers": raw})


def test_only_the_configured_token_passes_and_no_token_configured_refuses_everything() -> None:
    assert token_ok("s3cret", "s3cret")
    assert not token_ok("s3cre", "s3cret") and not token_ok("", "s3cret")
    assert not token_ok(None, "s3cret")
    assert not token_ok("anything", None)


def test_a_bearer_header_wins_over_the_query() -> None:
    request = _request("token=fromquery", {"Authorization": "Bearer fromheader"})
    assert presented_token(request) == ("fromheader", None)


def test_evolutions_event_suffix_after_a_query_token_is_split_off() -> None:
    assert presented_token(_request("token=abc/connection-update")) == ("abc", "connection-update")
    assert presented_token(_request("token=abc")) == ("abc", None)
    assert presented_token(_request("")) == (None, None)
