"""orchestrator.salvy_event refuses what it does not handle before touching anything."""

from __future__ import annotations

import pytest

from orchestrator.app import webhook_handlers
from orchestrator.errors import Rejected


@pytest.mark.parametrize(
    ("kind", "account"),
    [("phone-account.created", "acc-1"), ("phone-account.blocked", ""), (None, "acc-1")],
)
def test_an_event_it_does_not_handle_is_rejected(kind: object, account: object) -> None:
    with pytest.raises(Rejected) as refused:
        webhook_handlers.salvy_event(kind, account, "msg_1")  # type: ignore[arg-type]
    assert refused.value.code == "malformed"
