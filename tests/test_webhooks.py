"""The webhook receiver end to end: real proxy app, real Redis, a real fake contact center and fake Graph API."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.appkeys import METRICS, SERVICE, STORE, WEBHOOK_TASKS
from wa_blocklist.proxy.blocklist.service import Actor, InboundUser
from wa_blocklist.proxy.graph.signature import meta_dumps
from wa_blocklist.proxy.inbound.replay import ReplayGuard

import payloads as p
from fakes import sign
from support import (
    ADMIN_TOKEN,
    APP_SECRET,
    APP_SECRET_BR,
    PNID,
    PNID_BR,
    VERIFY_TOKEN,
    auth,
    free_port,
    wrote_recently,
)

URL = "/webhooks/whatsapp"
ALLOWED = "573001234567"
BLOCKED = "573007654321"
BR_ALLOWED = "5511987650000"
BR_BLOCKED_TYPED = "+55 11 91234-5678"
BR_BLOCKED_WA_ID = "551112345678"  # WhatsApp's form without the ninth digit
BSUID_ALLOWED = "CO.8812345678901234567"
BSUID_BLOCKED = "CO.9912345678901234567"


async def post(client: Any, payload: dict[str, Any] | bytes, secret: str | None = APP_SECRET, **headers: str) -> Any:
    body = payload if isinstance(payload, bytes) else p.encode(payload)
    sent = {"Content-Type": "application/json", **headers}
    if secret is not None:
        sent["X-Hub-Signature-256"] = sign(secret, body)
    return await client.post(URL, data=body, headers=sent)


async def block(service: Any, pnid: str, number: str, *, bsuid: str = "") -> None:
    """Make the user active (as an earlier webhook would) and block them."""
    if number.startswith("+") or number[:1].isdigit():
        digits = "".join(ch for ch in number if ch.isdigit())
        await wrote_recently(service, pnid, digits, bsuid=bsuid)
    else:
        await wrote_recently(service, pnid, bsuid=number)
    await service.block(pnid, number, actor=Actor("supervisor", "test"))


def forwarded(center: Any) -> list[dict[str, Any]]:
    return [r.json() for r in center.received]


def message_senders(payload: dict[str, Any]) -> list[str]:
    return [
        m.get("from") or m.get("from_user_id")
        for entry in payload["entry"]
        for change in entry["changes"]
        for m in change["value"].get("messages", [])
    ]


def values(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [change["value"] for entry in payload["entry"] for change in entry["changes"]]


# --- handshake ------------------------------------------------------------------------------------------------


async def test_handshake_echoes_the_challenge(client):
    resp = await client.get(
        URL, params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}
    )
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    assert await resp.text() == "1158201444"


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong-token", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
        {},
    ],
)
async def test_handshake_refused(client, params):
    resp = await client.get(URL, params=params)
    assert resp.status == 403
    body = await resp.json()
    assert body["error"]["code"] == "verification_failed"
    assert VERIFY_TOKEN not in json.dumps(body)


async def test_handshake_without_challenge_is_a_bad_request(client):
    resp = await client.get(URL, params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN})
    assert resp.status == 400


async def test_handshake_accepts_any_connectors_verify_token(make_config, clock, aiohttp_client):
    def tokens(data):
        data["connectors"][1]["verify_token"] = "brasil-verify-token"

    client = await aiohttp_client(create_app(make_config(tokens), clock=clock))
    for token in (VERIFY_TOKEN, "brasil-verify-token"):
        resp = await client.get(URL, params={"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "42"})
        assert (resp.status, await resp.text()) == (200, "42")


# --- every message type ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(p.MESSAGE_BUILDERS))
async def test_every_message_type_from_an_allowed_user_is_forwarded_untouched(client, contact_center, service, kind):
    await block(service, PNID, BLOCKED)  # someone else is blocked: the filter runs, but finds nothing of theirs
    body = p.encode(p.envelope(p.messages_change(PNID, [p.MESSAGE_BUILDERS[kind](ALLOWED)])))
    resp = await post(client, body)
    assert resp.status == 200
    [got] = contact_center.received
    assert got.body == body  # byte for byte: not a re-serialisation
    assert got.body != json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False).encode()
    assert got.headers["X-Hub-Signature-256"] == sign(APP_SECRET, body)
    assert await service.last_inbound_ms(PNID, ALLOWED) is not None


@pytest.mark.parametrize("kind", sorted(p.MESSAGE_BUILDERS))
async def test_every_message_type_from_a_blocked_user_is_not_forwarded(client, contact_center, service, kind):
    await block(service, PNID, BLOCKED)
    resp = await post(client, p.envelope(p.messages_change(PNID, [p.MESSAGE_BUILDERS[kind](BLOCKED)])))
    assert resp.status == 200
    assert contact_center.received == [] and contact_center.rejected == []


async def test_blocked_users_items_removed_from_a_mixed_batch_and_the_rest_re_signed(client, contact_center, service):
    await block(service, PNID, BLOCKED)
    original = p.envelope(
        p.messages_change(
            PNID,
            [p.text(ALLOWED), p.reaction(BLOCKED), p.button_reply(BLOCKED), p.image(ALLOWED), p.system(BLOCKED)],
        ),
        p.statuses_change(PNID, p.status(BLOCKED, "read"), p.status(ALLOWED)),
    )
    body = p.encode(original)
    resp = await post(client, body, **{"X-Hub-Signature": "sha1=00"})
    assert resp.status == 200
    [got] = contact_center.received
    assert got.body != body
    assert got.headers["X-Hub-Signature-256"] == sign(APP_SECRET, got.body)
    assert got.headers["X-Hub-Signature"] != "sha1=00"  # the legacy SHA-1 signature is recomputed too
    payload = got.json()
    assert got.body == meta_dumps(payload)  # compact, in Meta's form (ASCII, \uXXXX, "\/")
    messages_value, statuses_value = values(payload)
    assert message_senders(payload) == [ALLOWED, ALLOWED]
    assert [c["wa_id"] for c in messages_value["contacts"]] == [ALLOWED]
    assert statuses_value == original["entry"][0]["changes"][1]["value"]  # statuses are kept, blocked user or not
    assert payload["entry"][0]["id"] == p.WABA_ID


async def test_connectors_with_different_app_secrets_in_one_post_are_refused(client, contact_center):
    # One Meta app has one secret; one signature cannot be valid for two different secrets.
    payload = p.envelope(p.messages_change(PNID, [p.text(ALLOWED)]), p.messages_change(PNID_BR, [p.text(BR_ALLOWED)]))
    for secret in (APP_SECRET, APP_SECRET_BR):
        resp = await post(client, payload, secret=secret)
        assert resp.status == 403
    assert contact_center.received == []


@pytest.fixture
async def shared_secret_client(make_config, clock, aiohttp_client):
    """The proxy with both connectors in one Meta app (one app secret), as one callback URL implies, each with its
    own contact center URL (the same fake, told apart by the query string)."""

    def one_app(data):
        data["connectors"][1]["app_secret"] = APP_SECRET
        data["connectors"][1]["access_token"] = "EAAG-brasil-token"
        data["connectors"][1]["forward_webhooks_to"] += "?center=br"

    app = create_app(make_config(one_app), clock=clock)
    return await aiohttp_client(app)


async def test_two_connectors_of_one_app_split_filtered_and_re_signed(shared_secret_client, contact_center):
    client = shared_secret_client
    service = client.app[SERVICE]
    await block(service, PNID, BLOCKED)
    await block(service, PNID_BR, BR_BLOCKED_TYPED)
    payload = p.entries(
        [p.messages_change(PNID, [p.text(ALLOWED), p.text(BLOCKED)]), p.statuses_change(PNID, p.status(BLOCKED))],
        [
            p.messages_change(
                PNID_BR, [p.order(BR_BLOCKED_WA_ID), p.location(BR_ALLOWED), p.reaction(BR_BLOCKED_WA_ID)]
            ),
            p.user_preferences_change(PNID_BR, BR_ALLOWED),
        ],
    )
    resp = await post(client, payload)
    assert resp.status == 200
    assert len(contact_center.received) == 2 and contact_center.rejected == []
    by_pnid = {values(r.json())[0]["metadata"]["phone_number_id"]: r for r in contact_center.received}
    co, br = by_pnid[PNID], by_pnid[PNID_BR]
    assert co.headers["X-Hub-Signature-256"] == sign(APP_SECRET, co.body)
    assert br.headers["X-Hub-Signature-256"] == sign(APP_SECRET, br.body)
    assert message_senders(co.json()) == [ALLOWED]
    assert message_senders(br.json()) == [BR_ALLOWED]
    assert [v["metadata"]["phone_number_id"] for v in values(co.json())] == [PNID, PNID]
    assert [v["metadata"]["phone_number_id"] for v in values(br.json())] == [PNID_BR, PNID_BR]
    assert values(co.json())[1]["statuses"][0]["recipient_id"] == BLOCKED
    assert values(br.json())[1]["user_preferences"][0]["wa_id"] == BR_ALLOWED


async def test_split_without_blocked_users_still_re_signs_each_part(shared_secret_client, contact_center):
    payload = p.envelope(p.messages_change(PNID, [p.text(ALLOWED)]), p.messages_change(PNID_BR, [p.text(BR_ALLOWED)]))
    resp = await post(shared_secret_client, payload)
    assert resp.status == 200
    assert sorted(message_senders(r.json())[0] for r in contact_center.received) == sorted([ALLOWED, BR_ALLOWED])
    for got in contact_center.received:
        assert len(values(got.json())) == 1
        assert got.headers["X-Hub-Signature-256"] == sign(APP_SECRET, got.body)


async def test_connector_left_empty_is_not_forwarded_to(shared_secret_client, contact_center):
    await block(shared_secret_client.app[SERVICE], PNID_BR, BR_BLOCKED_TYPED)
    payload = p.envelope(
        p.messages_change(PNID, [p.text(ALLOWED)]), p.messages_change(PNID_BR, [p.text(BR_BLOCKED_WA_ID)])
    )
    resp = await post(shared_secret_client, payload)
    assert resp.status == 200
    [got] = contact_center.received
    assert message_senders(got.json()) == [ALLOWED]
    assert values(got.json())[0]["metadata"]["phone_number_id"] == PNID


# --- identities: usernames, links, number variants ------------------------------------------------------------


async def test_username_case_with_only_bsuids(client, contact_center, service):
    await block(service, PNID, BSUID_BLOCKED)
    change = p.messages_change(
        PNID,
        [p.text(None, user_id=BSUID_ALLOWED), p.text(None, user_id=BSUID_BLOCKED)],
        contacts=[
            p.contact(user_id=BSUID_ALLOWED, username="@ana.compra"),
            p.contact(user_id=BSUID_BLOCKED, username="@troll"),
        ],
    )
    resp = await post(client, p.envelope(change))
    assert resp.status == 200
    [got] = contact_center.received
    assert message_senders(got.json()) == [BSUID_ALLOWED]
    assert [c["user_id"] for c in values(got.json())[0]["contacts"]] == [BSUID_ALLOWED]
    assert await service.last_inbound_ms(PNID, BSUID_ALLOWED) is not None


async def test_username_message_from_an_allowed_user_forwarded_untouched(client, contact_center):
    body = p.encode(p.envelope(p.messages_change(PNID, [p.reaction(None, user_id=BSUID_ALLOWED)])))
    resp = await post(client, body)
    assert resp.status == 200
    assert [r.body for r in contact_center.received] == [body]


async def test_block_by_phone_catches_a_later_message_with_only_the_bsuid(client, contact_center, service):
    resp = await post(client, p.envelope(p.messages_change(PNID, [p.text(BLOCKED, user_id=BSUID_BLOCKED)])))
    assert resp.status == 200  # this message teaches the link wa_id ↔ BSUID
    resp = await client.post(
        f"/admin/api/connectors/{PNID}/blocks", json={"number": "+57 300 765 4321"}, headers=auth()
    )
    assert resp.status == 201
    contact_center.received.clear()
    later = p.messages_change(
        PNID, [p.text(None, user_id=BSUID_BLOCKED)], contacts=[p.contact(user_id=BSUID_BLOCKED, username="@x")]
    )
    resp = await post(client, p.envelope(later))
    assert resp.status == 200
    assert contact_center.received == []


async def test_block_by_bsuid_catches_a_later_message_with_only_the_phone(client, contact_center, service):
    resp = await post(client, p.envelope(p.messages_change(PNID, [p.video(BLOCKED, user_id=BSUID_BLOCKED)])))
    assert resp.status == 200
    resp = await client.post(f"/admin/api/connectors/{PNID}/blocks", json={"number": BSUID_BLOCKED}, headers=auth())
    assert resp.status == 201
    contact_center.received.clear()
    resp = await post(client, p.envelope(p.messages_change(PNID, [p.sticker(BLOCKED)], contacts=[p.contact(BLOCKED)])))
    assert resp.status == 200
    assert contact_center.received == []


async def test_link_in_the_same_post_catches_a_message_without_the_blocked_identity(client, contact_center, service):
    await block(service, PNID, BSUID_BLOCKED)
    # The message carries only the phone number; contacts[] of the same value pairs it with the blocked BSUID.
    change = p.messages_change(PNID, [p.text(BLOCKED)], contacts=[p.contact(BLOCKED, BSUID_BLOCKED)])
    resp = await post(client, p.envelope(change))
    assert resp.status == 200
    assert contact_center.received == []


async def test_brazilian_number_blocked_as_typed_matches_wa_id_without_ninth_digit(
    make_config, clock, aiohttp_client, contact_center
):
    client = await aiohttp_client(create_app(make_config(), clock=clock))
    await block(client.app[SERVICE], PNID_BR, BR_BLOCKED_TYPED)
    resp = await post(client, p.envelope(p.messages_change(PNID_BR, [p.audio(BR_BLOCKED_WA_ID)])), secret=APP_SECRET_BR)
    assert resp.status == 200
    assert contact_center.received == []


# --- the 24-hour activity ---------------------------------------------------------------------------------------


async def test_webhook_records_activity_that_allows_a_block(client, contact_center, clock):
    url = f"/admin/api/connectors/{PNID}/blocks"
    resp = await client.post(url, json={"number": "+57 300 123 4567"}, headers=auth(ADMIN_TOKEN))
    assert resp.status == 409
    resp = await post(client, p.envelope(p.messages_change(PNID, [p.text(ALLOWED)])))
    assert resp.status == 200
    resp = await client.post(url, json={"number": "+57 300 123 4567"}, headers=auth(ADMIN_TOKEN))
    assert resp.status == 201


async def test_blocked_users_activity_is_still_recorded(client, contact_center, service, clock):
    await block(service, PNID, BLOCKED)
    clock.advance(25 * 3600)
    assert await service.last_inbound_ms(PNID, BLOCKED) is None
    resp = await post(client, p.envelope(p.messages_change(PNID, [p.text(BLOCKED)])))
    assert resp.status == 200
    assert await service.last_inbound_ms(PNID, BLOCKED) is not None
    assert contact_center.received == []


async def test_statuses_are_not_activity(client, contact_center, service):
    body = p.encode(p.envelope(p.statuses_change(PNID, p.status(ALLOWED, "sent"), p.status(ALLOWED, "failed"))))
    resp = await post(client, body)
    assert resp.status == 200
    assert [r.body for r in contact_center.received] == [body]
    assert await service.last_inbound_ms(PNID, ALLOWED) is None


async def test_value_level_errors_are_forwarded(client, contact_center):
    body = p.encode(p.envelope(p.errors_change(PNID)))
    resp = await post(client, body)
    assert resp.status == 200
    assert [r.body for r in contact_center.received] == [body]


async def test_user_preferences_of_a_blocked_user_are_kept(client, contact_center, service):
    await block(service, PNID, BLOCKED)
    resp = await post(client, p.envelope(p.user_preferences_change(PNID, BLOCKED)))
    assert resp.status == 200
    [got] = contact_center.received
    [value] = values(got.json())
    assert value["user_preferences"][0]["value"] == "stop"  # an opt-out must reach the contact center
    assert value["contacts"][0]["wa_id"] == BLOCKED  # the preference's own contact entry stays with it
    assert got.body == p.encode(p.envelope(p.user_preferences_change(PNID, BLOCKED)))  # untouched


# --- calls ------------------------------------------------------------------------------------------------------


@pytest.fixture
async def calls_client(make_config, clock, aiohttp_client):
    def token(data):
        data["connectors"][0]["access_token"] = "EAAG-ventas-token"

    return await aiohttp_client(create_app(make_config(token), clock=clock))


async def test_call_from_a_blocked_user_is_not_forwarded_and_is_rejected_at_meta(
    calls_client, contact_center, fake_graph
):
    await block(calls_client.app[SERVICE], PNID, BLOCKED)
    connect = p.call("connect", BLOCKED)
    resp = await post(calls_client, p.envelope(p.calls_change(PNID, connect, p.call("connect", ALLOWED))))
    assert resp.status == 200
    [got] = contact_center.received
    [value] = values(got.json())
    assert [c["from"] for c in value["calls"]] == [ALLOWED]
    assert [c["wa_id"] for c in value["contacts"]] == [ALLOWED]
    await asyncio.gather(*calls_client.app[WEBHOOK_TASKS])
    [rejection] = fake_graph.requests
    assert (rejection.method, rejection.path) == ("POST", f"/v21.0/{PNID}/calls")
    assert rejection.headers["Authorization"] == "Bearer EAAG-ventas-token"
    assert rejection.json() == {"messaging_product": "whatsapp", "call_id": connect["id"], "action": "reject"}


async def test_terminate_from_a_blocked_user_is_dropped_without_rejection(calls_client, contact_center, fake_graph):
    await block(calls_client.app[SERVICE], PNID, BLOCKED)
    resp = await post(calls_client, p.envelope(p.calls_change(PNID, p.call("terminate", BLOCKED))))
    assert resp.status == 200
    assert contact_center.received == []
    await asyncio.gather(*calls_client.app[WEBHOOK_TASKS])
    assert fake_graph.requests == []


async def test_calls_of_allowed_users_and_business_initiated_calls_pass_untouched(
    calls_client, contact_center, fake_graph
):
    await block(calls_client.app[SERVICE], PNID, BLOCKED)
    body = p.encode(
        p.envelope(
            p.calls_change(PNID, p.call("connect", ALLOWED), p.call("terminate", ALLOWED)),
            p.calls_change(PNID, p.call("terminate", BLOCKED, direction="BUSINESS_INITIATED")),
        )
    )
    resp = await post(calls_client, body)
    assert resp.status == 200
    assert [r.body for r in contact_center.received] == [body]
    assert fake_graph.requests == []


async def test_call_rejection_without_access_token_logs_a_warning(client, contact_center, fake_graph, service, caplog):
    await block(service, PNID, BLOCKED)
    caplog.set_level(logging.WARNING, logger="wa_blocklist.proxy.inbound.receiver")
    resp = await post(client, p.envelope(p.calls_change(PNID, p.call("connect", BLOCKED))))
    assert resp.status == 200
    assert contact_center.received == []
    await asyncio.gather(*client.app[WEBHOOK_TASKS])
    assert fake_graph.requests == []
    warnings = [r.getMessage() for r in caplog.records if "not rejected" in r.getMessage()]
    assert len(warnings) == 1 and "access_token" in warnings[0]
    assert APP_SECRET not in caplog.text


async def test_meta_refusing_the_rejection_does_not_fail_the_webhook(calls_client, contact_center, fake_graph, caplog):
    fake_graph.respond("POST", r"/calls$", 400, {"error": {"message": "(#138006) call not found", "code": 138006}})
    await block(calls_client.app[SERVICE], PNID, BLOCKED)
    resp = await post(calls_client, p.envelope(p.calls_change(PNID, p.call("connect", BLOCKED))))
    assert resp.status == 200
    await asyncio.gather(*calls_client.app[WEBHOOK_TASKS])
    assert len(fake_graph.requests) == 1
    assert "EAAG-ventas-token" not in caplog.text


# --- signatures -------------------------------------------------------------------------------------------------


async def test_missing_signature_is_401(client, contact_center):
    resp = await post(client, p.envelope(p.messages_change(PNID, [p.text(ALLOWED)])), secret=None)
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"
    assert contact_center.received == [] and contact_center.rejected == []


@pytest.mark.parametrize("secret", ["not-the-app-secret", APP_SECRET_BR])
async def test_wrong_signature_is_403(client, contact_center, service, secret):
    resp = await post(client, p.envelope(p.messages_change(PNID, [p.text(ALLOWED)])), secret=secret)
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"
    assert contact_center.received == [] and contact_center.rejected == []
    assert await service.last_inbound_ms(PNID, ALLOWED) is None  # nothing recorded from an unverified payload


async def test_malformed_signature_header_is_403(client, contact_center):
    body = p.encode(p.envelope(p.messages_change(PNID, [p.text(ALLOWED)])))
    for header in ("sha256=", "sha1=abc", "sha256=" + "é" * 64, sign(APP_SECRET, body).upper()):
        resp = await client.post(URL, data=body, headers={"X-Hub-Signature-256": header})
        assert resp.status == 403, header
    assert contact_center.received == []


async def test_connector_without_required_signature_accepts_unsigned_and_signs_what_it_forwards(
    make_config, clock, aiohttp_client, contact_center
):
    def opt_out(data):
        data["connectors"][0]["require_signature"] = False

    client = await aiohttp_client(create_app(make_config(opt_out), clock=clock))
    body = p.encode(p.envelope(p.messages_change(PNID, [p.text(ALLOWED)])))
    resp = await client.post(URL, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 200
    [got] = contact_center.received
    assert got.body == body
    assert got.headers["X-Hub-Signature-256"] == sign(APP_SECRET, body)


# --- bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[" * 200_000 + b"]" * 200_000, "invalid_json"),
        (b"[]", "invalid_payload"),
        (p.encode({"object": "page", "entry": [{"id": "1", "changes": []}]}), "wrong_object"),
        (p.encode({"object": "whatsapp_business_account"}), "invalid_payload"),
        (p.encode({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": "x"}]}), "invalid_payload"),
        (p.encode({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": []}]}), "invalid_payload"),
        (p.encode(p.envelope({"field": "messages"})), "invalid_payload"),
    ],
)
async def test_bad_input_is_a_clean_4xx_and_nothing_is_forwarded(client, contact_center, body, code):
    resp = await post(client, body)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == code
    assert contact_center.received == [] and contact_center.rejected == []


async def test_unknown_connector_is_refused_loudly_and_the_rest_still_delivered(client, contact_center, caplog):
    payload = p.envelope(
        p.messages_change(PNID, [p.text(ALLOWED)]), p.messages_change("999999999999999", [p.text(ALLOWED)])
    )
    resp = await post(client, payload)
    assert resp.status == 503  # never 4xx for a valid payload: Meta retries until the connector is configured
    assert (await resp.json())["error"]["code"] == "unknown_connector"
    [got] = contact_center.received  # the known connector's change is not held back
    assert [v["metadata"]["phone_number_id"] for v in values(got.json())] == [PNID]
    assert any(r.levelno == logging.ERROR and "999999999999999" in r.getMessage() for r in caplog.records)
    resp = await post(client, payload, secret=None)
    assert resp.status == 401  # the signature of the known connector is checked first


async def test_unknown_connector_dropped_when_configured(make_config, clock, aiohttp_client, contact_center):
    def drop(data):
        data["webhooks"] = {"unknown_connectors": "drop"}

    client = await aiohttp_client(create_app(make_config(drop), clock=clock))
    payload = p.envelope(
        p.messages_change(PNID, [p.text(ALLOWED)]), p.messages_change("999999999999999", [p.text(BLOCKED)])
    )
    resp = await post(client, payload)
    assert resp.status == 200
    [got] = contact_center.received
    assert message_senders(got.json()) == [ALLOWED]
    assert got.headers["X-Hub-Signature-256"] == sign(APP_SECRET, got.body)


async def test_huge_body_is_413(make_config, clock, aiohttp_client, contact_center):
    def small(data):
        data["webhooks"] = {"max_body_bytes": 4096}

    client = await aiohttp_client(create_app(make_config(small), clock=clock))
    huge = p.envelope(p.messages_change(PNID, [p.text(ALLOWED, "x" * 5000)]))
    resp = await post(client, huge)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "body_too_large"

    async def chunked():  # no Content-Length: the limit holds while reading
        body = p.encode(huge)
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    resp = await client.post(URL, data=chunked(), headers={"X-Hub-Signature-256": sign(APP_SECRET, p.encode(huge))})
    assert resp.status == 413
    assert contact_center.received == []


async def test_body_over_the_default_client_max_size_is_accepted(client, contact_center):
    # aiohttp's default client_max_size is 1 MB; the webhook limit (3 MB by default) is the one that applies.
    body = p.encode(p.envelope(p.messages_change(PNID, [p.text(ALLOWED, "a" * 1_500_000)])))
    headers = {"X-Hub-Signature-256": sign(APP_SECRET, body), "Content-Length": str(len(body))}
    resp = await client.post(URL, data=io.BytesIO(body), headers=headers)
    assert resp.status == 200
    assert [r.body for r in contact_center.received] == [body]


# --- delivery semantics -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 404, 301])
async def test_contact_center_non_2xx_makes_meta_retry(client, contact_center, status):
    contact_center.status = status
    resp = await post(client, p.envelope(p.messages_change(PNID, [p.text(ALLOWED)])))
    assert resp.status == 502
    assert (await resp.json())["error"]["code"] == "forward_failed"


async def test_contact_center_accepting_with_204_is_success(client, contact_center):
    contact_center.status = 204
    resp = await post(client, p.envelope(p.messages_change(PNID, [p.text(ALLOWED)])))
    assert resp.status == 200


async def test_contact_center_down_makes_meta_retry(make_config, clock, aiohttp_client, contact_center):
    def down(data):
        data["connectors"][0]["forward_webhooks_to"] = f"http://127.0.0.1:{free_port()}/webhooks/whatsapp"

    client = await aiohttp_client(create_app(make_config(down), clock=clock))
    resp = await post(client, p.envelope(p.messages_change(PNID, [p.text(ALLOWED)])))
    assert resp.status == 502
    assert "Ventas Colombia" in (await resp.json())["error"]["message"]


async def test_slow_contact_center_makes_meta_retry(make_config, clock, aiohttp_client, contact_center):
    def impatient(data):
        data["webhooks"] = {"forward_timeout_seconds": 0.05}

    client = await aiohttp_client(create_app(make_config(impatient), clock=clock))
    contact_center.delay = 1.0
    resp = await post(client, p.envelope(p.messages_change(PNID, [p.text(ALLOWED)])))
    assert resp.status == 504
    assert (await resp.json())["error"]["code"] == "forward_timeout"


async def test_one_contact_center_down_fails_the_whole_post(make_config, clock, aiohttp_client, contact_center):
    def br_down(data):
        data["connectors"][1]["app_secret"] = APP_SECRET
        data["connectors"][1]["forward_webhooks_to"] = f"http://127.0.0.1:{free_port()}/webhooks/whatsapp"

    client = await aiohttp_client(create_app(make_config(br_down), clock=clock))
    payload = p.envelope(p.messages_change(PNID, [p.text(ALLOWED)]), p.messages_change(PNID_BR, [p.text(BR_ALLOWED)]))
    resp = await post(client, payload)
    assert resp.status == 502
    assert "Suporte Brasil" in (await resp.json())["error"]["message"]
    assert message_senders(contact_center.received[0].json()) == [ALLOWED]  # at least once: Meta will resend it


async def test_store_unavailable_is_503_and_nothing_is_forwarded(make_config, clock, aiohttp_client, contact_center):
    def no_redis(data):
        data["store"] = {"redis_url": f"redis://127.0.0.1:{free_port()}/0", "timeout_seconds": 0.5}

    client = await aiohttp_client(create_app(make_config(no_redis), clock=clock))
    resp = await post(client, p.envelope(p.messages_change(PNID, [p.text(ALLOWED)])))
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "store_unavailable"
    assert contact_center.received == []
    # Statuses need no lookup, so they still flow while the store is down.
    resp = await post(client, p.envelope(p.statuses_change(PNID, p.status(ALLOWED))))
    assert resp.status == 200


async def test_shutdown_waits_for_pending_call_rejections(calls_client, contact_center, fake_graph):
    await block(calls_client.app[SERVICE], PNID, BLOCKED)
    fake_graph.delay = 1.0  # Meta answers slowly: the rejection is still running when the webhook is answered
    resp = await post(calls_client, p.envelope(p.calls_change(PNID, p.call("connect", BLOCKED))))
    assert resp.status == 200
    pending = list(calls_client.app[WEBHOOK_TASKS])
    assert len(pending) == 1 and not pending[0].done()
    await calls_client.close()
    assert pending[0].done() and not pending[0].cancelled()
    assert [r.path for r in fake_graph.requests] == [f"/v21.0/{PNID}/calls"]


# --- account-level events, Meta's form, what is learned (issue 14) ------------------------------------------------


def account_change(field: str = "message_template_status_update") -> dict[str, Any]:
    return {
        "field": field,
        "value": {"event": "APPROVED", "message_template_id": 594425479261596, "message_template_name": "pedido/listo"},
    }


@pytest.fixture
async def waba_client(make_config, clock, aiohttp_client, contact_center):
    """Both connectors in WABA p.WABA_ID and one Meta app; Brasil's contact center is another URL."""

    def one_waba(data):
        for connector in data["connectors"]:
            connector["waba_id"] = p.WABA_ID
            connector["app_secret"] = APP_SECRET
        data["connectors"][1]["forward_webhooks_to"] += "?center=br"

    return await aiohttp_client(create_app(make_config(one_waba), clock=clock))


async def test_account_level_event_goes_to_each_contact_center_of_its_waba_once(waba_client, contact_center):
    body = p.encode(p.envelope(account_change()))
    resp = await post(waba_client, body)
    assert resp.status == 200
    assert sorted(r.query for r in contact_center.received) == ["", "center=br"]
    for got in contact_center.received:  # the whole POST to each: Meta's bytes and signature
        assert got.body == body and got.headers["X-Hub-Signature-256"] == sign(APP_SECRET, body)


async def test_account_level_event_and_message_in_one_post_are_both_delivered(
    make_config, clock, aiohttp_client, contact_center
):
    def waba(data):
        data["connectors"][0]["waba_id"] = p.WABA_ID

    client = await aiohttp_client(create_app(make_config(waba), clock=clock))
    body = p.encode(p.envelope(account_change(), p.messages_change(PNID, [p.text(ALLOWED, "Ol\u00e1 \U0001f600 a/b")])))
    resp = await post(client, body)
    assert resp.status == 200
    [got] = contact_center.received
    assert got.body == body  # one contact center gets the whole POST: forwarded byte for byte


async def test_account_level_event_to_the_configured_url(make_config, clock, aiohttp_client, contact_center):
    def elsewhere(data):
        data["webhooks"] = {"account_events_to": data["connectors"][0]["forward_webhooks_to"] + "?center=account"}

    client = await aiohttp_client(create_app(make_config(elsewhere), clock=clock))
    body = p.encode(p.envelope(account_change("account_update"), p.messages_change(PNID, [p.text(ALLOWED)])))
    resp = await post(client, body)
    assert resp.status == 200
    by_query = {r.query: r for r in contact_center.received}
    assert [c["field"] for c in by_query["center=account"].json()["entry"][0]["changes"]] == ["account_update"]
    assert message_senders(by_query[""].json()) == [ALLOWED]
    for got in contact_center.received:
        assert got.body == meta_dumps(got.json()) and got.headers["X-Hub-Signature-256"] == sign(APP_SECRET, got.body)


@pytest.mark.parametrize(("policy", "status"), [("refuse", 503), ("drop", 200)])
async def test_account_level_event_of_an_unknown_waba_never_4xx(
    make_config, clock, aiohttp_client, contact_center, policy, status
):
    def unknown(data):
        data["webhooks"] = {"unknown_connectors": policy}

    client = await aiohttp_client(create_app(make_config(unknown), clock=clock))
    resp = await post(client, p.envelope(account_change(), p.messages_change(PNID, [p.text(ALLOWED)])))
    assert resp.status == status
    [got] = contact_center.received  # the message is not held back by the event nobody takes
    assert message_senders(got.json()) == [ALLOWED]
    resp = await post(client, p.envelope(account_change()), secret="not-the-app-secret")
    assert resp.status == 403  # a POST naming no connector is still checked against the app secrets


async def test_rebuilt_body_is_in_metas_form_with_non_ascii_emoji_and_lone_surrogates(client, contact_center, service):
    await block(service, PNID, BLOCKED)
    raw = (
        b'{"object":"whatsapp_business_account","entry":[{"id":"' + p.WABA_ID.encode() + b'","changes":[{"value":'
        b'{"messaging_product":"whatsapp","metadata":{"display_phone_number":"576015550100","phone_number_id":"'
        + PNID.encode()
        + b'"},"messages":[{"from":"'
        + ALLOWED.encode()
        + b'","id":"wamid.A","timestamp":"1","type":"text",'
        b'"text":{"body":"caf\\u00e9 \\ud83d\\ude00 \\ud83d solo http:\\/\\/x.co\\/a"}},{"from":"'
        + BLOCKED.encode()
        + b'","id":"wamid.B","timestamp":"1","type":"text","text":{"body":"x"}}]},"field":"messages"}]}]}'
    )
    resp = await post(client, raw)
    assert resp.status == 200
    [got] = contact_center.received
    assert got.body == raw.replace(
        b',{"from":"' + BLOCKED.encode() + b'","id":"wamid.B","timestamp":"1","type":"text","text":{"body":"x"}}', b""
    )  # exactly Meta's bytes minus the blocked user's message
    assert got.headers["X-Hub-Signature-256"] == sign(APP_SECRET, got.body)


async def test_statuses_with_contacts_are_never_activity(client, contact_center, service):
    change = p.statuses_change(PNID, p.status(ALLOWED, "read", recipient_user_id=BSUID_ALLOWED))
    change["value"]["contacts"] = [p.contact(ALLOWED, BSUID_ALLOWED)]
    assert (await post(client, p.envelope(change))).status == 200
    assert await service.last_inbound_ms(PNID, ALLOWED) is None  # a status never lets a supervisor block
    assert await service.store.linked(PNID, BSUID_ALLOWED) == ALLOWED  # but Meta's pairing is learned


async def test_message_and_join_request_owners_learned_from_verified_webhooks_only(
    make_config, clock, aiohttp_client, contact_center
):
    def opt_out(data):
        data["connectors"][0]["require_signature"] = False

    client = await aiohttp_client(create_app(make_config(opt_out), clock=clock))
    service = client.app[SERVICE]
    message = p.text(ALLOWED)
    join = {"timestamp": "1", "group_id": "G1", "type": "group_join_request_created", "join_request_id": "JR-1",
            "wa_id": BLOCKED}  # fmt: skip
    payload = p.envelope(p.messages_change(PNID, [message]), p.change(PNID, "group_participants_update", groups=[join]))
    assert (await post(client, payload, secret=None)).status == 200  # accepted unsigned, but learned from? no
    assert await service.message_sender(PNID, message["id"]) is None
    assert await service.join_request_user(PNID, "JR-1") is None
    assert await service.last_inbound_ms(PNID, ALLOWED) is None
    assert (await post(client, payload)).status == 200  # signed: verified
    sender = await service.message_sender(PNID, message["id"])
    asker = await service.join_request_user(PNID, "JR-1")
    assert sender is not None and sender.value == ALLOWED
    assert asker is not None and asker.value == BLOCKED
    assert await service.message_sender(PNID, "wamid.unknown") is None


async def test_blocked_users_number_change_carries_the_block(client, contact_center, service):
    await block(service, PNID, BLOCKED)
    resp = await post(client, p.envelope(p.messages_change(PNID, [p.system(BLOCKED, new_wa_id="573009998877")])))
    assert resp.status == 200
    assert contact_center.received == []
    assert await service.check(PNID, "573009998877") == "573009998877"
    entries, _ = await service.list_blocks(PNID)
    assert {e.number for e in entries} == {BLOCKED, "573009998877"}  # the admin list shows both
    [moved] = [e for e in entries if e.number == "573009998877"]
    assert moved.source == "number_change" and BLOCKED in moved.reason
    records, _ = await service.audit(PNID)
    assert records[0]["action"] == "block" and records[0]["source"] == "number_change"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.characters() | st.integers(0xD800, 0xDFFF).map(chr), max_size=40).map("".join))
async def test_any_text_from_another_user_is_forwarded_in_metas_form_without_a_5xx(
    client, contact_center, service, text
):
    await block(service, PNID, BLOCKED)
    contact_center.received.clear()
    payload = p.envelope(p.messages_change(PNID, [p.text(ALLOWED, text), p.text(BLOCKED, "x")]))
    body = meta_dumps(payload)  # lone surrogates included: Meta writes them as \udXXX escapes
    resp = await post(client, body)
    assert resp.status == 200, await resp.text()
    [got] = contact_center.received
    assert got.body == meta_dumps(got.json()) and got.headers["X-Hub-Signature-256"] == sign(APP_SECRET, got.body)
    forwarded_text = got.json()["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"]
    assert meta_dumps(forwarded_text) == meta_dumps(text)  # the same escapes (two halves written apart read as a pair)


async def test_forged_webhook_changes_no_link_and_a_genuine_one_repairs_a_poisoned_link(
    client, contact_center, service
):
    await block(service, PNID, BLOCKED, bsuid=BSUID_BLOCKED)
    assert await service.store.linked(PNID, BSUID_BLOCKED) == BLOCKED
    forged = p.envelope(p.messages_change(PNID, [p.text(ALLOWED, user_id=BSUID_BLOCKED)]))
    assert (await post(client, forged, secret="not-the-app-secret")).status == 403
    assert await service.store.linked(PNID, BSUID_BLOCKED) == BLOCKED  # nothing learned from a forgery
    # The state an unverified POST could leave before: the BSUID re-linked to another number.
    await service.record_inbound(PNID, [InboundUser(ALLOWED, BSUID_BLOCKED, active=False)])
    assert await service.check(PNID, BSUID_BLOCKED) is None  # poisoned: the blocked user's BSUID looks free
    genuine = p.envelope(p.messages_change(PNID, [p.text(BLOCKED, user_id=BSUID_BLOCKED)]))
    assert (await post(client, genuine)).status == 200
    assert await service.store.linked(PNID, BSUID_BLOCKED) == BLOCKED
    assert await service.store.linked(PNID, BLOCKED) == BSUID_BLOCKED
    assert await service.store.linked(PNID, ALLOWED) is None  # the stale reverse entry is gone
    assert await service.check(PNID, BSUID_BLOCKED) == BLOCKED
    assert contact_center.received == []  # and the blocked user's message was removed


# --- replays ---------------------------------------------------------------------------------------------------


async def test_a_replayed_signed_body_is_acknowledged_and_not_forwarded_again(client, app, contact_center):
    body = p.encode(p.envelope(p.messages_change(PNID, [p.text(ALLOWED, "hola, una vez")])))
    first = await post(client, body)
    assert first.status == 200
    assert len(contact_center.received) == 1
    for _ in range(3):  # a captured webhook sent again, or Meta delivering twice
        again = await post(client, body)
        assert again.status == 200
    assert len(contact_center.received) == 1
    assert app[METRICS].webhook_replays._value.get() == 3
    # Another body (another message) is a new delivery.
    assert (await post(client, p.envelope(p.messages_change(PNID, [p.text(ALLOWED, "otra")])))).status == 200
    assert len(contact_center.received) == 2


async def test_a_replay_with_no_user_to_record_is_claimed_on_its_own(client, app, contact_center):
    # Statuses only: no recording script runs, so the replay guard claims the body with a round trip of its own.
    body = p.encode(p.envelope(p.statuses_change(PNID, p.status(ALLOWED, "read"))))
    assert (await post(client, body)).status == 200
    assert (await post(client, body)).status == 200
    assert len(contact_center.received) == 1
    assert app[METRICS].webhook_replays._value.get() == 1


async def test_a_delivered_body_is_remembered_for_the_window(client, app, contact_center, config):
    first = p.encode(p.envelope(p.messages_change(PNID, [p.text(ALLOWED, "primera")])))
    second = p.encode(p.envelope(p.messages_change(PNID, [p.text(ALLOWED, "segunda")])))
    assert (await post(client, first)).status == 200
    store = app[STORE]
    key = ReplayGuard.key(PNID, first)
    assert 0 < await store.redis.ttl(key) <= config.webhooks.forward_timeout_seconds + 30  # claimed for the delivery
    # The confirmation rides on the next webhook's script for the connector (or a batch a moment later).
    assert (await post(client, second)).status == 200
    assert await store.redis.ttl(key) > config.webhooks.forward_timeout_seconds + 30
    for _ in range(100):  # the second one's confirmation is written by the batch, with nothing after it
        if await store.redis.ttl(ReplayGuard.key(PNID, second)) > config.webhooks.forward_timeout_seconds + 30:
            break
        await asyncio.sleep(0.02)
    assert await store.redis.ttl(ReplayGuard.key(PNID, second)) > config.webhooks.forward_timeout_seconds + 30


async def test_a_failed_delivery_is_not_remembered_so_metas_retry_goes_through(client, contact_center):
    body = p.encode(p.envelope(p.messages_change(PNID, [p.text(ALLOWED, "reintento")])))
    contact_center.status = 500
    assert (await post(client, body)).status == 502  # Meta will retry the same body
    contact_center.status = 200
    assert (await post(client, body)).status == 200
    assert len(contact_center.received) == 2  # the failed attempt and Meta's retry both reached the contact center
    assert (await post(client, body)).status == 200  # now it was delivered: a third copy is a replay
    assert len(contact_center.received) == 2


async def test_with_deduplication_off_a_replay_is_forwarded_again(make_config, clock, aiohttp_client, contact_center):
    def no_dedup(data):
        data.setdefault("webhooks", {})["deduplicate_replays"] = False

    client = await aiohttp_client(create_app(make_config(no_dedup), clock=clock))
    body = p.encode(p.envelope(p.messages_change(PNID, [p.text(ALLOWED, "dos veces")])))
    assert (await post(client, body)).status == 200
    assert (await post(client, body)).status == 200
    assert len(contact_center.received) == 2
