"""The token check and where a token may come from, without a server."""

from __future__ import annotations

from starlette.requests import Request

from orchestrator.webhooks.guard import encoding_hint, presented_token, query_token, token_ok


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


def test_the_query_token_is_percent_decoded_and_a_plus_stays_a_plus() -> None:
    assert query_token(b"token=a%2Bb%2Fc%3D%3D") == ("a+b/c==", None)
    assert query_token(b"token=a+b") == ("a+b", None)  # not form-decoded: '+' is no space
    assert query_token(b"other=1&token=a%2Fb") == ("a/b", None)
    assert query_token(b"token=") == (None, None)


def test_only_a_raw_slash_starts_evolutions_event_suffix() -> None:
    assert query_token(b"token=a%2Fb/connection-update") == ("a/b", "connection-update")
    assert query_token(b"token=a/b/connection-update") == ("a", "b/connection-update")
    assert presented_token(_request("token=a%2Fb/status-instance")) == ("a/b", "status-instance")


def test_a_token_that_needs_encoding_is_told_how_without_being_shown() -> None:
    assert encoding_hint("tok-0123_abc.XYZ~") is None and encoding_hint(None) is None
    token = "s3cr3t+base64/token=="
    hint = encoding_hint(token)
    assert hint is not None and token not in hint
    assert "'+' as %2B" in hint and "'/' as %2F" in hint and "'=' as %3D" in hint
    assert "urllib.parse.quote" in hint
