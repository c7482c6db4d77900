"""Salesforce connector: external-id upserts, client-credentials auth, per-record results."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict
from pydantic import ValidationError

from destinations.base import Request, Response
from destinations.salesforce import CONNECTOR, Settings, authenticate, classify, encode
from router.delivery.http import HttpSender
from router.delivery.outcome import DELIVERED, Partial, Rejected, Retry, Split
from tests.destinations import golden
from tests.destinations.harness import send_once
from tests.destinations.samples import FULL, MINIMAL
from tests.fakes.salesforce import SalesforceFake

API = "https://acme.my.salesforce.com/services/data/v62.0"


def settings(**overrides: Any) -> Settings:
    values = {"instance_url": "https://acme.my.salesforce.com", "client_id": "cid",
              "client_secret": "csecret"}
    return Settings(**{**values, **overrides})


def identify(user: str | None, **traits: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "identify", "messageId": f"m-{user}",
                             "timestamp": "2026-11-20T10:00:00.000Z", "traits": traits}
    if user:
        event["userId"] = user
    return event


def lead(user: str, **traits: Any) -> dict[str, Any]:
    return identify(user, lastName="L", company={"name": "C"}, **traits)


def group(group_id: str, **traits: Any) -> dict[str, Any]:
    return {"type": "group", "userId": "u1", "groupId": group_id, "messageId": f"g-{group_id}",
            "timestamp": "2026-11-20T10:00:00.000Z", "traits": traits}


ACCOUNTS = {"account_external_id_field": "Segment_Group_Id__c"}


def body(request: Request) -> Any:
    return orjson.loads(request.body)


def response(status: int, payload: Any = b"") -> Response:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return Response(status, CIMultiDict(), raw)


# --- encode ------------------------------------------------------------------------------


def test_minimal_events() -> None:
    encoded = encode(MINIMAL, settings())
    [request] = encoded.requests
    assert (request.method, request.url) == ("PATCH",
                                             f"{API}/composite/sobjects/Lead/External_Id__c")
    assert request.headers == {"Content-Type": "application/json"}  # token added by the engine
    assert request.events == [1]
    assert body(request) == {"allOrNone": False, "records": [
        {"attributes": {"type": "Lead"}, "External_Id__c": "user-00001"}]}
    assert "track_object" in encoded.rejected[0] and "not page" in encoded.rejected[2]


def test_full_identify_maps_lead_fields() -> None:
    [request] = encode([FULL[2]], settings()).requests
    assert body(request)["records"] == [{
        "attributes": {"type": "Lead"}, "External_Id__c": "user-00042",
        "Email": "Ada.Lovelace@example.com", "FirstName": "Ada", "LastName": "Lovelace",
        "Phone": "+44 20 7946 0000", "Company": "Analytical Engines"}]


def test_contact_defaults_have_no_company_and_mailing_address() -> None:
    event = lead("u1", address={"city": "London"})
    [request] = encode([event], settings(sobject="Contact")).requests
    assert request.url.endswith("/composite/sobjects/Contact/External_Id__c")
    assert body(request)["records"] == [{"attributes": {"type": "Contact"},
                                         "External_Id__c": "u1", "LastName": "L",
                                         "MailingCity": "London"}]


def test_snake_case_traits_of_segment_actions_are_read_too() -> None:
    # Segment's Salesforce (Actions) Lead mapping reads traits.first_name, last_name and
    # address.postal_code (github.com/segmentio/action-destinations, salesforce/lead);
    # the spec's camelCase names win when an event carries both
    snake = identify("u1", first_name="Ann", last_name="Lee", company="Acme",
                     address={"postal_code": "75001"})
    both = identify("u2", last_name="snake", lastName="Camel", company="Acme")
    [request] = encode([snake, both], settings()).requests
    assert body(request)["records"] == [
        {"attributes": {"type": "Lead"}, "External_Id__c": "u1", "FirstName": "Ann",
         "LastName": "Lee", "Company": "Acme", "PostalCode": "75001"},
        {"attributes": {"type": "Lead"}, "External_Id__c": "u2", "LastName": "Camel",
         "Company": "Acme"}]
    [request] = encode([snake], settings(sobject="Contact")).requests
    assert body(request)["records"][0]["MailingPostalCode"] == "75001"


def test_example_config_maps_a_company_given_as_a_string() -> None:
    # Segment's Actions Lead mapping reads traits.company (a string); the spec allows an
    # object with a name: the example must not drop either
    example = golden.example_settings("salesforce")
    events = [identify("u1", lastName="L", company="Acme"), lead("u2", last_name="Roe")]
    [request] = encode(events, example).requests
    assert [(r["Company"], r["LastName"]) for r in body(request)["records"]] == [
        ("Acme", "L"), ("C", "L")]


def test_api_version_is_checked_and_normalised() -> None:
    # URI /services/data/vXX.X/composite/sobjects/...; upserts there exist from v46.0
    assert settings(api_version="62.0").api_version == "v62.0"
    [request] = encode([lead("u1")], settings(api_version=" 61.0")).requests
    assert request.url.startswith("https://acme.my.salesforce.com/services/data/v61.0/")
    for bad in ("v45.0", "latest", "v62"):
        with pytest.raises(ValidationError, match="REST API version"):
            settings(api_version=bad)


def test_a_trait_mapped_onto_the_upsert_key_does_not_replace_it() -> None:
    """The key decides which record is upserted (and groups a batch's identifies): a
    field_map that also fills the external id field must not point the upsert elsewhere."""
    mapped = settings(field_map={"lastName": "LastName", "crmId": "External_Id__c"})
    [request] = encode([identify("user-1", lastName="L", crmId="other")], mapped).requests
    [record] = body(request)["records"]
    assert record["External_Id__c"] == "user-1" and record["LastName"] == "L"


def test_missing_identifier_is_rejected_in_encode() -> None:
    encoded = encode([identify(None, email="a@x.io")], settings())
    assert encoded.rejected[0] == ("identify without a userId: Salesforce upserts Lead by "
                                   "External_Id__c")
    by_email = settings(external_id_from="email", external_id_field="Email__c")
    [request] = encode([identify(None, email=" A@X.io ")], by_email).requests
    assert body(request)["records"][0]["Email__c"] == "a@x.io"
    assert "without an email" in encode([identify("u1")], by_email).rejected[0]


def test_one_record_per_key_and_the_groups_header() -> None:
    events = [lead("u1", firstName="Old"), lead("u2"), identify("u1", firstName="New")]
    [request] = encode(events, settings()).requests
    assert request.events == [0, 2, 1]
    assert request.headers["X-Router-Record-Events"] == "2,1"
    records = body(request)["records"]
    assert [r["External_Id__c"] for r in records] == ["u1", "u2"]
    assert records[0]["FirstName"] == "New" and records[0]["LastName"] == "L"


def test_records_are_chunked_at_200() -> None:
    encoded = encode([lead(f"u{i}") for i in range(250)], settings())
    assert [len(r.events) for r in encoded.requests] == [200, 50]


def test_track_inserts_the_configured_object() -> None:
    custom = settings(track_object="Task", track_values={"Status": "Completed"},
                      track_field_map={"event": "Subject", "properties.order_id":
                                       "Description"}, track_relationship="Who")
    [request] = encode([FULL[0]], custom).requests
    assert (request.method, request.url) == ("POST", f"{API}/composite/sobjects")
    assert body(request) == {"allOrNone": False, "records": [{
        "attributes": {"type": "Task"}, "Subject": "Order Completed",
        "Description": "ord-1001", "Status": "Completed",
        "Who": {"attributes": {"type": "Lead"}, "External_Id__c": "user-00042"}}]}


def test_group_upserts_an_account_with_segments_default_mapping() -> None:
    # Segment's Salesforce (Actions) Account action, default subscription type = "group":
    # traits.name -> Name, groupId -> AccountNumber, traits.employees -> NumberOfEmployees,
    # traits.address.* -> Billing*, phone, description, website (github.com/segmentio/
    # action-destinations, salesforce/account and sf-object-to-shape.ts); no industry
    [request] = encode([FULL[-1]], settings(**ACCOUNTS)).requests
    assert (request.method, request.url) == (
        "PATCH", f"{API}/composite/sobjects/Account/Segment_Group_Id__c")
    assert request.headers == {"Content-Type": "application/json"}
    assert body(request) == {"allOrNone": False, "records": [{
        "attributes": {"type": "Account"}, "Segment_Group_Id__c": "co-9",
        "Name": "Analytical Engines", "AccountNumber": "co-9", "NumberOfEmployees": 12,
        "Website": "https://engines.example.com"}]}
    address = {"street": "1 Main St", "city": "Paris", "state": "IDF", "postal_code": "75001",
               "postalCode": "75002", "country": "FR"}
    event = group("g1", name="Acme", phone="+33 1", description="d", address=address)
    [request] = encode([event], settings(**ACCOUNTS)).requests
    assert body(request)["records"][0] == {
        "attributes": {"type": "Account"}, "Segment_Group_Id__c": "g1", "Name": "Acme",
        "AccountNumber": "g1", "Phone": "+33 1", "Description": "d",
        "BillingStreet": "1 Main St", "BillingCity": "Paris", "BillingState": "IDF",
        "BillingPostalCode": "75002", "BillingCountry": "FR"}  # the spec's camelCase wins


def test_group_is_rejected_naming_the_setting_when_accounts_are_off() -> None:
    encoded = encode([FULL[-1]], settings())
    assert encoded.requests == []
    assert "settings.account_external_id_field" in encoded.rejected[0]
    assert encoded.rejected[0].endswith("not group")


def test_groups_merge_per_group_id_beside_the_identify_upserts() -> None:
    events = [group("g1", name="Old", website="w"), lead("u1"), group("g2", name="B"),
              group("g1", name="New"), identify("u1", firstName="Ann")]
    leads, accounts = encode(events, settings(**ACCOUNTS)).requests
    assert leads.url.endswith("/Lead/External_Id__c") and leads.events == [1, 4]
    assert accounts.url.endswith("/Account/Segment_Group_Id__c")
    assert accounts.events == [0, 3, 2] and accounts.headers["X-Router-Record-Events"] == "2,1"
    records = body(accounts)["records"]
    assert [r["Segment_Group_Id__c"] for r in records] == ["g1", "g2"]
    assert records[0]["Name"] == "New" and records[0]["Website"] == "w"  # later traits win


def test_account_field_map_replaces_the_defaults_but_never_the_key() -> None:
    mapped = settings(**ACCOUNTS, account_field_map={
        "traits.name": "Name", "traits.industry": "Industry",
        "traits.crmId": "Segment_Group_Id__c"})
    event = group("g1", name="Acme", industry="Computing", crmId="other", employees=3)
    [request] = encode([event], mapped).requests
    assert body(request)["records"] == [{"attributes": {"type": "Account"},
                                         "Segment_Group_Id__c": "g1", "Name": "Acme",
                                         "Industry": "Computing"}]


def test_account_records_are_chunked_at_200() -> None:
    encoded = encode([group(f"g{i}", name="A") for i in range(201)], settings(**ACCOUNTS))
    assert [len(r.events) for r in encoded.requests] == [200, 1]


# --- classify ----------------------------------------------------------------------------


def test_classify_per_record_results() -> None:
    request = Request("u", b"", [0, 1, 2, 3], {"X-Router-Record-Events": "2,1,1"})
    ok = {"id": "1", "success": True, "errors": [], "created": True}
    missing = {"success": False, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING",
                                             "message": "Required fields are missing",
                                             "fields": ["LastName"]}]}
    locked = {"success": False, "errors": [{"statusCode": "UNABLE_TO_LOCK_ROW",
                                            "message": "unable to obtain exclusive access"}]}
    assert classify(response(200, [ok, ok, ok]), request) is DELIVERED
    outcome = classify(response(200, [missing, ok, locked]), request)
    assert isinstance(outcome, Partial)
    assert set(outcome.rejected) == {0, 1} and "REQUIRED_FIELD_MISSING" in outcome.rejected[0]
    assert "LastName" in outcome.rejected[0]
    assert set(outcome.retry) == {3}
    outcome = classify(response(200, [ok]), Request("u", b"", [0, 1]))
    assert isinstance(outcome, Partial) and set(outcome.retry) == {1}  # no result for it


def test_classify_retries_records_rolled_back_for_another() -> None:
    # with allOrNone, the valid records fail too, each with ALL_OR_NONE_OPERATION_ROLLED_BACK
    # (developer.salesforce.com, AllOrNoneHeader): not their fault, so they are retried
    rolled = {"success": False, "errors": [{"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                                            "message": "Record rolled back because not all "
                                            "records were valid", "fields": []}]}
    bad = {"success": False, "errors": [{"statusCode": "INVALID_EMAIL_ADDRESS",
                                         "message": "Email: invalid email address: x",
                                         "fields": ["Email"]}]}
    outcome = classify(response(200, [rolled, bad, rolled]), Request("u", b"", [0, 1, 2]))
    assert isinstance(outcome, Partial)
    assert set(outcome.retry) == {0, 2} and set(outcome.rejected) == {1}


def test_classify_maps_account_results_back_to_merged_group_calls() -> None:
    events = [group("g1"), group("g2", name="B"), group("g1", website="w")]
    [request] = encode(events, settings(**ACCOUNTS)).requests
    missing = {"success": False, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING",
                                             "message": "Required fields are missing: [Name]",
                                             "fields": ["Name"]}]}
    ok = {"id": "001000000000001", "success": True, "errors": [], "created": True}
    outcome = classify(response(200, [missing, ok]), request)
    assert isinstance(outcome, Partial) and not outcome.retry
    # request positions 0 and 1 carry g1's two events (0 and 2), position 2 carries g2
    assert request.events == [0, 2, 1] and set(outcome.rejected) == {0, 1}
    assert "Name" in outcome.rejected[0]


def test_classify_statuses() -> None:
    two, one = Request("u", b"", [0, 1]), Request("u", b"", [0])
    expired = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    outcome = classify(response(401, expired), two)
    assert isinstance(outcome, Retry) and outcome.reauth
    limit = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    outcome = classify(response(403, limit), two)
    assert isinstance(outcome, Retry) and outcome.after_s == 3600.0 and not outcome.reauth
    # the same code for the concurrent long-running request limit, which clears in seconds
    # (developer.salesforce.com, "API Request Limits and Allocations"): no hour-long wait
    concurrent = [{"message": "ConcurrentRequests (Concurrent API Requests) Limit exceeded.",
                   "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    outcome = classify(response(403, concurrent), two)
    assert isinstance(outcome, Retry) and outcome.after_s is None
    bad = [{"message": "No such column 'Foo'", "errorCode": "INVALID_FIELD"}]
    assert isinstance(classify(response(400, bad), two), Split)
    outcome = classify(response(400, bad), one)
    assert isinstance(outcome, Rejected) and "INVALID_FIELD" in outcome.reason
    assert isinstance(classify(response(403, [{"errorCode": "INSUFFICIENT_ACCESS"}]), two),
                      Rejected)
    assert isinstance(classify(response(404, [{"errorCode": "NOT_FOUND"}]), two), Rejected)
    assert isinstance(classify(response(503, b"down"), two), Retry)
    assert isinstance(classify(response(500, b""), two), Retry)


# --- auth and end to end against the fake ------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[SalesforceFake]:
    async with SalesforceFake() as server:
        yield server  # type: ignore[misc]


def fake_settings(fake: SalesforceFake, **overrides: Any) -> Settings:
    return settings(instance_url=fake.url, **overrides)


async def test_authenticate_issues_a_bearer_token(fake: SalesforceFake) -> None:
    async with aiohttp.ClientSession() as session:
        credentials = await authenticate(session, fake_settings(fake))
        assert credentials.headers["Authorization"].startswith("Bearer 00Dfake!")
        assert abs(credentials.expires_at - (time.time() + 3600)) < 5
        with pytest.raises(RuntimeError, match="invalid_client"):
            await authenticate(session, fake_settings(fake, client_secret="nope"))
        with pytest.raises(RuntimeError, match="set it to that URL"):
            await authenticate(session, settings(login_url=fake.url,
                                                 instance_url="https://other.example"))


async def test_authenticate_compares_the_token_host_case_insensitively(
        fake: SalesforceFake) -> None:
    # the token's instance_url names the same host in another case, with a trailing slash
    fake.token_instance_url = "https://ACME.my.salesforce.com/"
    async with aiohttp.ClientSession() as session:
        credentials = await authenticate(session, settings(login_url=fake.url))
        assert credentials.headers["Authorization"].startswith("Bearer ")
        fake.token_instance_url = "https://acme.my.salesforce.com:8443"
        with pytest.raises(RuntimeError, match="set it to that URL"):
            await authenticate(session, settings(login_url=fake.url))


async def send(fake: SalesforceFake, events: list[dict[str, Any]],
               sender: HttpSender | None = None, **overrides: Any) -> list[Any]:
    return await send_once(CONNECTOR, fake_settings(fake, **overrides), events, sender)


async def test_e2e_upserts_and_per_record_rejections(fake: SalesforceFake) -> None:
    events = [lead("u1", firstName="Ann"), identify("u2", firstName="NoName"),
              identify("u1", email="ann@x.io"), identify("u2", lastName="Still no company")]
    outcomes = await send(fake, events)
    assert outcomes[0] is DELIVERED and outcomes[2] is DELIVERED
    for i in (1, 3):  # one merged record: both of its events share its fate
        assert isinstance(outcomes[i], Rejected)
        assert "REQUIRED_FIELD_MISSING" in outcomes[i].reason and "Company" in outcomes[i].reason
    assert fake.records["Lead"] == {"u1": {"External_Id__c": "u1", "LastName": "L",
                                           "Company": "C", "FirstName": "Ann",
                                           "Email": "ann@x.io"}}
    # an update of an existing lead needs no LastName / Company
    assert await send(fake, [identify("u1", title="CTO")]) == [DELIVERED]
    assert fake.records["Lead"]["u1"]["Title"] == "CTO"


async def test_e2e_too_long_name_rejects_only_its_event(fake: SalesforceFake) -> None:
    # Lead LastName is a string(80): longer values fail that record (STRING_TOO_LONG)
    outcomes = await send(fake, [lead("u1"), identify("u2", lastName="x" * 81, company="C")])
    assert outcomes[0] is DELIVERED
    assert isinstance(outcomes[1], Rejected) and "STRING_TOO_LONG" in outcomes[1].reason
    assert set(fake.records["Lead"]) == {"u1"}


async def test_e2e_locked_row_is_retried_only_for_its_event(fake: SalesforceFake) -> None:
    fake.record_errors["u2"] = "UNABLE_TO_LOCK_ROW"
    outcomes = await send(fake, [lead("u1"), lead("u2")])
    assert outcomes[0] is DELIVERED and isinstance(outcomes[1], Retry)
    assert await send(fake, [lead("u2")]) == [DELIVERED]


async def test_e2e_expired_session_reauthenticates_once(fake: SalesforceFake) -> None:
    sender = HttpSender(CONNECTOR, fake_settings(fake))
    await sender.start()
    try:
        assert await send(fake, [lead("u1")], sender) == [DELIVERED]
        fake.expire_tokens()
        assert await send(fake, [lead("u2")], sender) == [DELIVERED]
    finally:
        await sender.close()
    assert fake.token_requests == 2
    assert set(fake.records["Lead"]) == {"u1", "u2"}


async def test_e2e_bad_credentials_are_retried_not_lost(fake: SalesforceFake) -> None:
    [outcome] = await send(fake, [lead("u1")], client_secret="wrong")
    assert isinstance(outcome, Retry) and "invalid_client" in outcome.reason
    assert fake.received == []


async def test_e2e_track_tasks_link_to_leads(fake: SalesforceFake) -> None:
    custom = {"track_object": "Task", "track_relationship": "Who",
              "track_values": {"Status": "Completed"}}
    assert await send(fake, [lead("user-00042")]) == [DELIVERED]
    stranger = {**FULL[1], "userId": "nobody"}
    outcomes = await send(fake, [FULL[0], stranger], **custom)
    assert outcomes[0] is DELIVERED  # an unknown lead may be upserted later: retried
    assert isinstance(outcomes[1], Retry) and "Foreign key external ID" in outcomes[1].reason
    [task] = [r for verb, _, r in fake.received if verb == "create"]
    assert task["Subject"] == "Order Completed" and task["Status"] == "Completed"


async def test_e2e_unknown_field_is_isolated_by_splitting(fake: SalesforceFake) -> None:
    events = [lead("u1"), lead("u2", plan="pro"), lead("u3")]
    field_map = {"lastName": "LastName", "company.name": "Company", "plan": "Plan__c"}
    outcomes = await send(fake, events, field_map=field_map)
    assert outcomes[0] is DELIVERED and outcomes[2] is DELIVERED
    assert isinstance(outcomes[1], Rejected) and "No such column 'Plan__c'" in outcomes[1].reason


async def test_e2e_server_errors_are_retried(fake: SalesforceFake) -> None:
    fake.fail_next(503, [{"errorCode": "SERVER_UNAVAILABLE", "message": "down"}],
                   path="/services/data/v62.0/composite/sobjects/Lead/External_Id__c")
    [outcome] = await send(fake, [lead("u1")])
    assert isinstance(outcome, Retry)
    assert fake.received == []


async def test_e2e_group_calls_upsert_accounts(fake: SalesforceFake) -> None:
    events = [FULL[-1], group("g2", website="https://x.example"), lead("u1")]
    outcomes = await send(fake, events, **ACCOUNTS)
    assert outcomes[0] is DELIVERED and outcomes[2] is DELIVERED
    # a new Account without a Name: Salesforce refuses that record only
    assert isinstance(outcomes[1], Rejected)
    assert "REQUIRED_FIELD_MISSING" in outcomes[1].reason and "Name" in outcomes[1].reason
    assert fake.records["Account"] == {"co-9": {
        "Segment_Group_Id__c": "co-9", "Name": "Analytical Engines", "AccountNumber": "co-9",
        "NumberOfEmployees": 12, "Website": "https://engines.example.com"}}
    assert set(fake.records["Lead"]) == {"u1"}
    # an update of an existing Account needs no Name; the merged calls share one result
    again = [group("co-9", employees=13), group("co-9", phone="+1 555")]
    assert await send(fake, again, **ACCOUNTS) == [DELIVERED, DELIVERED]
    assert fake.records["Account"]["co-9"]["NumberOfEmployees"] == 13
    assert fake.records["Account"]["co-9"]["Phone"] == "+1 555"


async def test_e2e_account_field_not_marked_external_id_is_rejected(
        fake: SalesforceFake) -> None:
    [outcome] = await send(fake, [FULL[-1]], account_external_id_field="AccountNumber")
    assert isinstance(outcome, Rejected) and "NOT_FOUND" in outcome.reason
    assert fake.records["Account"] == {}
