"""SalvyClient against the real stand-in over HTTP: shapes, error mapping, faults, secrecy."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests

from orchestrator.adapters.salvy import SalvyClient, SalvyNumber
from orchestrator.dev.salvy_standin import SalvyStandin
from orchestrator.errors import OrchestratorError, PurchaseInDoubt, Rejected, TransientError

TOKEN = "salvy_test_NeverShowThisToken-123"


@pytest.fixture(scope="module")
def standin() -> Iterator[SalvyStandin]:
    with SalvyStandin() as server:
        yield server


@pytest.fixture
def salvy(standin: SalvyStandin) -> Iterator[SalvyStandin]:
    """The stand-in with no faults and no numbers."""
    standin.reset()
    yield standin
    standin.reset()


@pytest.fixture
def client(salvy: SalvyStandin) -> Iterator[SalvyClient]:
    c = SalvyClient(salvy.url, TOKEN, read_timeout=2.0)
    yield c
    c.close()


def unique_name() -> str:
    return f"chip-{uuid.uuid4().hex[:12]}"


def assert_secret_kept(error: BaseException) -> None:
    assert TOKEN not in str(error)
    assert TOKEN not in repr(error)


def test_a_bought_number_can_be_listed_found_by_name_fetched_and_cancelled(client, salvy):
    name = unique_name()

    bought = client.create(21, name)

    assert bought.name == name
    assert bought.phone_number.startswith("+55219") and len(bought.phone_number) == 14
    assert (bought.status, bought.area_code) == ("active", 21)
    assert bought.created_at
    assert bought in client.list_numbers()
    assert client.find_by_name(name) == bought
    assert client.get(bought.id) == bought

    client.cancel(bought.id, "whatsapp-ban")

    assert client.get(bought.id).status == "canceled"
    assert salvy.cancellations == [(bought.id, "whatsapp-ban")]
    assert salvy.purchases == 1


def test_find_by_name_returns_none_for_a_name_never_bought(client):
    client.create(11, unique_name())

    assert client.find_by_name(unique_name()) is None


def test_cancelling_twice_or_an_unknown_number_is_done_without_error(client, salvy):
    number = client.create(11, unique_name())
    client.cancel(number.id, "unnecessary")

    client.cancel(number.id, "unnecessary")
    client.cancel(str(uuid.uuid4()), "unnecessary")

    assert salvy.cancellations == [(number.id, "unnecessary")]


def test_a_cancel_reason_salvy_does_not_accept_is_rejected_before_any_call(client, salvy):
    number = client.create(11, unique_name())

    with pytest.raises(Rejected) as caught:
        client.cancel(number.id, "because")

    assert caught.value.code == "invalid_reason"
    assert salvy.cancellations == []


def test_area_codes_leave_out_ddds_out_of_stock_and_buying_one_is_rejected(client, salvy):
    salvy.set_faults(out_of_stock=[21])

    codes = client.area_codes()
    with pytest.raises(Rejected) as caught:
        client.create(21, unique_name())

    assert 11 in codes and 21 not in codes
    assert codes == sorted(codes)
    assert caught.value.code == "area_code_unavailable"
    assert "Salvy 422 area_code_unavailable" in str(caught.value)
    assert salvy.purchases == 0


def test_a_server_error_is_transient(client, salvy):
    salvy.set_faults(fail_next=1)

    with pytest.raises(TransientError) as caught:
        client.area_codes()

    assert "500" in str(caught.value)
    assert client.area_codes()  # the fault was used up


def test_rate_limiting_is_transient_and_carries_retry_after(client, salvy):
    salvy.set_faults(rate_limit_next=1)

    with pytest.raises(TransientError) as caught:
        client.list_numbers()

    assert caught.value.retry_after == 1


def test_a_purchase_that_times_out_was_still_made_and_is_found_by_name(salvy):
    client = SalvyClient(salvy.url, TOKEN, read_timeout=0.5)
    salvy.set_faults(timeout_after_purchase=1, hang_seconds=2)
    name = unique_name()

    with pytest.raises(TransientError) as caught:
        client.create(11, name)

    assert salvy.purchases == 1
    found = client.find_by_name(name)
    assert found is not None and found.area_code == 11
    assert_secret_kept(caught.value)


def test_an_unreachable_salvy_is_transient(salvy):
    with SalvyStandin() as gone:
        url = gone.url
    client = SalvyClient(url, TOKEN, connect_timeout=0.5)

    with pytest.raises(TransientError) as caught:
        client.area_codes()

    assert_secret_kept(caught.value)


def test_a_missing_token_is_rejected_as_a_refused_token(salvy):
    client = SalvyClient(salvy.url, None)

    with pytest.raises(Rejected) as caught:
        client.create(11, unique_name())

    assert caught.value.code == "refused_token"
    assert "401 unauthorized" in caught.value.reason
    assert salvy.purchases == 0


def test_a_revoked_token_is_a_refused_token_on_every_call(client, salvy):
    salvy.set_faults(refuse_token=True)

    with pytest.raises(Rejected) as caught:
        client.area_codes()

    assert caught.value.code == "refused_token"
    assert_secret_kept(caught.value)


def test_a_retry_after_given_as_an_http_date_is_parsed(client, salvy):
    when = datetime.now(UTC) + timedelta(seconds=120)
    salvy.set_faults(rate_limit_next=1, retry_after=format_datetime(when, usegmt=True))

    with pytest.raises(TransientError) as caught:
        client.list_numbers()

    assert 110 <= caught.value.retry_after <= 120


def test_a_purchase_whose_answer_is_lost_is_in_doubt_but_a_rate_limit_is_not(salvy):
    impatient = SalvyClient(salvy.url, TOKEN, read_timeout=0.3)
    salvy.set_faults(post_delay=1)

    with pytest.raises(PurchaseInDoubt):
        impatient.create(11, unique_name())

    salvy.set_faults(post_delay=0, rate_limit_next=1)
    with pytest.raises(TransientError) as caught:
        impatient.create(11, unique_name())
    assert not isinstance(caught.value, PurchaseInDoubt)
    impatient.close()


def test_an_unknown_number_is_rejected_as_not_found(client):
    with pytest.raises(Rejected) as caught:
        client.get(str(uuid.uuid4()))

    assert "404" in str(caught.value)


def test_find_reads_a_number_with_its_cancel_date_and_none_for_one_salvy_does_not_know(
    client, salvy
):
    number = client.create(11, unique_name())
    assert client.find(number.id) == number
    assert number.canceled_at is None
    # Cancelled, then reactivated by Salvy: active again, the cancel date still set
    client.cancel(number.id, "unnecessary")
    salvy.set_status(number.id, "active")
    again = client.find(number.id)
    assert again is not None and again.status == "active" and again.canceled_at
    assert client.find(str(uuid.uuid4())) is None


def test_the_token_never_shows_in_the_client_errors_or_logs(client, salvy, caplog):
    caplog.set_level(logging.DEBUG)
    errors: list[OrchestratorError] = []
    for faults in ({"fail_next": 1}, {"rate_limit_next": 1}, {"out_of_stock": [11]}):
        salvy.set_faults(**faults)
        with pytest.raises(OrchestratorError) as caught:
            client.create(11, unique_name())
        errors.append(caught.value)

    assert TOKEN not in repr(client) and TOKEN not in str(client)
    for error in errors:
        assert_secret_kept(error)
    assert TOKEN not in caplog.text
    assert "GET" in caplog.text or "POST" in caplog.text  # the stand-in did log its requests


def test_faults_can_be_switched_and_inspected_over_http_from_another_process(client, salvy):
    admin = f"{salvy.url}/_standin"
    number = client.create(31, unique_name())

    switched = requests.post(f"{admin}/faults", json={"fail_next": "1", "out_of_stock": [41]})
    state = requests.get(f"{admin}/state").json()

    assert switched.status_code == 200
    assert state["faults"]["fail_next"] == 1 and state["faults"]["out_of_stock"] == [41]
    assert state["purchases"] == 1 and number.id in state["numbers"]
    with pytest.raises(TransientError):
        client.get(number.id)
    assert 41 not in client.area_codes()

    requests.post(f"{admin}/reset")

    assert salvy.purchases == 0 and salvy.numbers == {} and salvy.faults.out_of_stock == []


def test_an_unknown_fault_switch_is_refused_over_http(salvy):
    answer = requests.post(f"{salvy.url}/_standin/faults", json={"explode": True})

    assert answer.status_code == 400
    assert set(answer.json()) == {"code", "message", "publicDetails"}


def test_a_number_parsed_from_json_takes_its_ddd_from_the_phone_number():
    number = SalvyNumber.from_json(
        {"id": "x", "name": None, "phoneNumber": "+5585912345678", "status": "pending"}
    )

    assert (number.area_code, number.name, number.created_at) == (85, None, None)
