"""Every file of the webhook corpus (tests/data/webhooks, see its README) through the real receiver.

Nobody blocked: Meta gets 200 and the contact center gets the body byte for byte with Meta's signature; the user's
activity is recorded only when the file says its items count. User blocked: the documented outcome (kept / dropped /
items_removed, with the documented number of event items gone), the rest re-signed in Meta's form. No file is ever
answered 4xx or 5xx.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.appkeys import SERVICE
from wa_blocklist.proxy.blocklist.service import Actor, InboundUser
from wa_blocklist.proxy.graph.identity import recipient
from wa_blocklist.proxy.graph.signature import meta_dumps

from fakes import sign
from support import APP_SECRET

CORPUS = Path(__file__).parent / "data" / "webhooks"
FILES = sorted(CORPUS.glob("*.json"))
PNID = "106540352242922"
WABA = "102290129340398"
URL = "/webhooks/whatsapp"


def load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    raw = path.with_suffix(".raw")
    case["raw"] = raw.read_bytes() if raw.exists() else None
    return case


def event_units(payloads: list[dict[str, Any]]) -> int:
    """Event items as the corpus counts them: messages, calls, history threads, group events (the participant
    entries of an event listing several users)."""
    total = 0
    for payload in payloads:
        for entry in payload["entry"]:
            for change in entry["changes"]:
                value = change["value"]
                total += len(value.get("messages", [])) + len(value.get("calls", []))
                total += sum(len(chunk.get("threads", [])) for chunk in value.get("history", []))
                for group in value.get("groups", []):
                    listed = len(group.get("added_participants", [])) + len(group.get("removed_participants", []))
                    total += listed if listed > 1 else 1
    return total


def changes(payloads: list[dict[str, Any]]) -> int:
    return sum(len(entry["changes"]) for payload in payloads for entry in payload["entry"])


@pytest.fixture
async def corpus_client(make_config, clock, aiohttp_client):
    def corpus_connector(data):
        data["connectors"][0].update(
            phone_number_id=PNID, waba_id=WABA, display_number="+57 601 555 0100", access_token="EAAG-test"
        )

    return await aiohttp_client(create_app(make_config(corpus_connector), clock=clock))


def test_the_corpus_is_there():
    assert len(FILES) >= 60, "tests/data/webhooks holds the corpus (helper F's files)"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
async def test_nobody_blocked_forwarded_byte_identical(corpus_client, contact_center, path):
    case = load(path)
    # The .raw is Meta's wire form; otherwise an indented form, so a re-serialisation could not pass for the original.
    body = case["raw"] or json.dumps(case["payload"], indent=1).encode()
    signature = sign(APP_SECRET, body)
    resp = await corpus_client.post(URL, data=body, headers={"X-Hub-Signature-256": signature})
    assert resp.status == 200, await resp.text()
    [got] = contact_center.received
    assert got.body == body
    assert got.headers["X-Hub-Signature-256"] == signature
    service = corpus_client.app[SERVICE]
    user = case.get("user")
    if user:
        seen = await service.last_inbound_ms(PNID, user["wa_id"] or user["bsuid"])
        assert (seen is not None) == case["counts_as_activity"], "activity recorded exactly for user-sent items"
        await _ownership_learned(service, case)


async def _ownership_learned(service, case):
    user = case["user"]
    wanted = {i for i in (user["wa_id"], user["bsuid"]) if i}
    keys = {recipient(i).key for i in wanted}
    for entry in case["payload"]["entry"]:
        for change in entry["changes"]:
            value = change["value"]
            for message in value.get("messages", []):
                if wanted & {message.get("from"), message.get("from_user_id")}:
                    sender = await service.message_sender(PNID, message["id"])
                    assert sender is not None and await service.is_blocked(PNID, sender) is False
                    assert sender.key in keys
            for group in value.get("groups", []):
                if group.get("type") == "group_join_request_created":
                    asker = await service.join_request_user(PNID, group["join_request_id"])
                    assert asker is not None and asker.key in keys


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
async def test_user_blocked_documented_outcome(corpus_client, contact_center, path):
    case = load(path)
    service = corpus_client.app[SERVICE]
    user = case.get("user")
    if user:
        # The user is known as an earlier verified webhook would have taught (both identities linked), then blocked.
        await service.record_inbound(PNID, [InboundUser(user["wa_id"] or "", user["bsuid"] or "")])
        await service.block(PNID, user["wa_id"] or user["bsuid"], actor=Actor("supervisor", "corpus"))
    body = case["raw"] or meta_dumps(case["payload"])
    resp = await corpus_client.post(URL, data=body, headers={"X-Hub-Signature-256": sign(APP_SECRET, body)})
    assert resp.status == 200, await resp.text()
    forwarded = [got.json() for got in contact_center.received]
    for got in contact_center.received:
        assert got.headers["X-Hub-Signature-256"] == sign(APP_SECRET, got.body)
        assert got.body == body or got.body == meta_dumps(got.json())  # rebuilt bodies are in Meta's form
    outcome = case["when_user_blocked"]
    removed = event_units([case["payload"]]) - event_units(forwarded)
    if outcome == "kept":
        assert [got.body for got in contact_center.received] == [body]
    elif outcome == "dropped":
        assert changes(forwarded) < changes([case["payload"]])
        assert removed == case["removed_items"]
    else:  # items_removed: the rest of the value, or of the POST, still goes
        assert forwarded and removed == case["removed_items"]
    for key in ("new_wa_id", "new_bsuid"):
        if case.get(key):
            assert await service.check(PNID, case[key]) is not None, f"the block follows the user to their {key}"
            audit, _ = await service.audit(PNID)
            assert any(r["source"] == "number_change" and r["number"] == case[key] for r in audit)
            listed, _ = await service.list_blocks(PNID)
            assert {e.number for e in listed} >= {case[key], user["wa_id"] or user["bsuid"]}
