"""Opt-outs (issue 19): keywords from verified webhooks, template and marketing sends refused, replies allowed."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from playwright.async_api import expect

from wa_blocklist.proxy.base.errors import ConfigError
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService
from wa_blocklist.proxy.config import parse_config
from wa_blocklist.proxy.graph.errors import RECIPIENT_OPTED_OUT
from wa_blocklist.proxy.graph.optout import DEFAULT_OPTIN_KEYWORDS, DEFAULT_OPTOUT_KEYWORDS, KeywordMatcher, normalise

import payloads as p
from fakes import FakeContactCenter, FakeGraph, sign
from support import APP_SECRET, PNID, PNID_BR, VIEWER_TOKEN, OpenAdmin, auth, base_config_data, blocks_dialog, sign_in

NUMBER = "573001234567"
MESSAGES = f"/v21.0/{PNID}/messages"
TEMPLATE = {
    "messaging_product": "whatsapp", "to": NUMBER, "type": "template",
    "template": {"name": "promo_noviembre", "language": {"code": "es"}},
}  # fmt: skip
REPLY = {"messaging_product": "whatsapp", "to": NUMBER, "type": "text", "text": {"body": "Listo, no le escribimos más"}}
MARKETING = {**TEMPLATE, "message_activity_sharing": True}
OPTOUTS = f"/admin/api/connectors/{PNID}/optouts"


async def _webhook(client: TestClient[Any, Any], *messages: dict[str, Any], signed: bool = True) -> int:
    body = p.encode(p.envelope(p.change(PNID, contacts=[p.contact(NUMBER)], messages=list(messages))))
    headers = {"Content-Type": "application/json"}
    if signed:
        headers["X-Hub-Signature-256"] = sign(APP_SECRET, body)
    resp = await client.post("/webhooks/whatsapp", data=body, headers=headers)
    return resp.status


async def _send(client: TestClient[Any, Any], body: dict[str, Any], path: str = MESSAGES) -> tuple[int, Any]:
    resp = await client.post(path, json=body)
    return resp.status, await resp.json()


# --- the keyword normaliser ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("BAJA", "optout"), ("  ¡baja! ", "optout"), ("Stop.", "optout"), ("sáir", "optout"), ("Dar  de BAJA", "optout"),
     ("PARAR 🛑", "optout"), ("cancelar", "optout"), ("Alta", "optin"), ("VOLTAR", "optin"), ("start", "optin"),
     ("no quiero que me den de baja", None), ("stopped", None), ("", None), ("bajas", None)],
)  # fmt: skip
def test_default_keywords(text: str, expected: str | None) -> None:
    assert KeywordMatcher(DEFAULT_OPTOUT_KEYWORDS, DEFAULT_OPTIN_KEYWORDS).match(text) == expected


_WORD = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "), min_size=1,
                max_size=16)  # fmt: skip
_PUNCT = st.text(st.sampled_from(" .,!?¡¿-_*🛑👍\t\n"), max_size=4)
_MARKS = st.lists(st.sampled_from(["", "\u0301", "\u0303", "\u0300", "\u0327", "\u0302"]), min_size=16, max_size=16)


@given(st.text(max_size=80))
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once
    assert once == once.strip() and "  " not in once
    assert not any(unicodedata.combining(ch) for ch in once)


@given(_WORD, _PUNCT, _PUNCT, _MARKS, st.lists(st.booleans(), min_size=16, max_size=16))
def test_a_keyword_matches_whatever_the_case_accents_spaces_and_punctuation_around(
    word: str, before: str, after: str, marks: list[str], upper: list[bool]
) -> None:
    if not normalise(word):
        return
    matcher = KeywordMatcher([word], [])
    written = "".join(
        (ch.upper() if up else ch.lower()) + (mark if ch.isalpha() else "")
        for ch, mark, up in zip(word, marks, upper, strict=False)
    )
    written = unicodedata.normalize("NFC", written.replace(" ", "  "))
    assert matcher.match(before + written + after) == "optout"
    assert matcher.match(f"{written} please") is None  # other words around it: not the keyword


@given(st.text(max_size=300))
def test_any_message_is_matched_without_error(text: str) -> None:
    result = KeywordMatcher(DEFAULT_OPTOUT_KEYWORDS, DEFAULT_OPTIN_KEYWORDS).match(text)
    assert result in (None, "optout", "optin")


def test_keyword_config(redis_url: str) -> None:
    data = base_config_data(redis_url)
    data["connectors"][0]["optout_keywords"] = ["Basta", "NO MÁS"]
    data["connectors"][0]["optin_keywords"] = []
    config = parse_config(data, env={})
    assert config.connectors[0].keywords.match("basta!") == "optout"
    assert config.connectors[0].keywords.match("BAJA") is None
    assert config.connectors[0].keywords.match("alta") is None
    assert config.connectors[1].optout_keywords == DEFAULT_OPTOUT_KEYWORDS
    data["connectors"][0]["optout_keywords"] = ["!!!"]
    with pytest.raises(ConfigError, match=r"connectors\[0\].optout_keywords"):
        parse_config(data, env={})
    data["connectors"][0]["optout_keywords"] = "STOP"
    with pytest.raises(ConfigError, match="must be a list"):
        parse_config(data, env={})


# --- end to end -------------------------------------------------------------------------------------------------------


async def test_baja_refuses_the_next_template_but_not_a_reply_and_alta_lifts_it(
    client: TestClient[Any, Any], fake_graph: FakeGraph, contact_center: FakeContactCenter, service: BlocklistService
) -> None:
    assert (await _send(client, TEMPLATE))[0] == 200

    # The user writes BAJA: the message itself reaches the contact center (so it can confirm).
    assert await _webhook(client, p.text(NUMBER, "Baja")) == 200
    assert len(contact_center.received) == 1 and b"Baja" in contact_center.received[0].body

    status, answer = await _send(client, TEMPLATE)
    assert status == 400 and answer["error"]["code"] == RECIPIENT_OPTED_OUT
    assert "opted out" in answer["error"]["error_data"]["details"]
    status, answer = await _send(client, MARKETING, f"/v21.0/{PNID}/marketing_messages")
    assert status == 400 and answer["error"]["code"] == RECIPIENT_OPTED_OUT
    sent = len(fake_graph.requests)
    assert (await _send(client, REPLY))[0] == 200  # a free-form reply in the service window still goes out
    assert len(fake_graph.requests) == sent + 1 and fake_graph.requests[-1].json()["type"] == "text"
    # Other connectors are not affected; a send on the Brazilian connector is its own business.
    assert await service.first_opted_out(PNID_BR, service.readings(PNID, NUMBER)) is None

    records, _ = await service.audit(PNID)
    assert records[0]["action"] == "optout" and records[0]["source"] == "keyword"
    assert records[0]["by"] == "user" and 'keyword "Baja"' in records[0]["reason"]
    listed = await (await client.get(OPTOUTS, headers=auth())).json()
    assert [o["number"] for o in listed["optouts"]] == [NUMBER] and listed["optouts"][0]["source"] == "keyword"

    # A quick-reply button with the opt-in keyword opts back in.
    assert await _webhook(client, p.message("button", NUMBER, button={"text": "ALTA", "payload": "RESUME"})) == 200
    assert (await _send(client, TEMPLATE))[0] == 200
    records, _ = await service.audit(PNID)
    assert records[0]["action"] == "optin" and records[0]["source"] == "keyword"
    assert len(contact_center.received) == 2


async def test_keywords_from_unverified_webhooks_change_nothing(
    make_config: Any, aiohttp_client: Any, clock: Any, contact_center: FakeContactCenter
) -> None:
    from wa_blocklist.proxy.app import create_app

    def unsigned(data: dict[str, Any]) -> None:
        data["connectors"][0]["require_signature"] = False

    client = await aiohttp_client(create_app(make_config(unsigned), clock=clock))
    assert await _webhook(client, p.text(NUMBER, "STOP"), signed=False) == 200
    assert len(contact_center.received) == 1  # forwarded
    assert (await _send(client, TEMPLATE))[0] == 200  # but not learned from


async def test_interactive_button_reply_title_and_only_whole_messages(
    client: TestClient[Any, Any], service: BlocklistService
) -> None:
    assert await _webhook(client, p.text(NUMBER, "por favor no paren de escribirme")) == 200
    assert (await _send(client, TEMPLATE))[0] == 200
    reply = p.message(
        "interactive", NUMBER, interactive={"type": "button_reply", "button_reply": {"id": "x", "title": "Parar"}}
    )
    assert await _webhook(client, reply) == 200
    assert (await _send(client, TEMPLATE))[0] == 400


async def test_admin_api_and_gateway_reading_of_template_types(
    client: TestClient[Any, Any], service: BlocklistService
) -> None:
    resp = await client.post(OPTOUTS, json={"number": "+57 300 123 4567", "reason": "asked by phone"}, headers=auth())
    assert resp.status == 201 and (await resp.json())["source"] == "admin_api"
    resp = await client.post(OPTOUTS, json={"number": NUMBER}, headers=auth())
    assert resp.status == 200
    for kind in ("template", " TEMPLATE "):
        assert (await _send(client, {**TEMPLATE, "type": kind}))[0] == 400
    resp = await client.post(OPTOUTS, json={"number": NUMBER}, headers=auth(VIEWER_TOKEN))
    assert resp.status == 403
    resp = await client.post(OPTOUTS, json={"number": NUMBER, "extra": 1}, headers=auth())
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_request"
    resp = await client.delete(f"{OPTOUTS}/{NUMBER}?reason=called+back", headers=auth())
    assert resp.status == 204
    resp = await client.delete(f"{OPTOUTS}/{NUMBER}", headers=auth())
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_opted_out"
    assert (await _send(client, TEMPLATE))[0] == 200
    records, _ = await service.audit(PNID)
    assert [r["action"] for r in records[:2]] == ["optin", "optout"]
    assert records[0]["reason"] == "called back" and records[0]["source"] == "admin_api"


async def test_opt_out_follows_the_bsuid_link(client: TestClient[Any, Any], service: BlocklistService) -> None:
    bsuid = "CO.9912345678901234567"
    body = p.encode(p.envelope(p.change(
        PNID, contacts=[p.contact(NUMBER, user_id=bsuid)], messages=[p.text(NUMBER, "stop", user_id=bsuid)]
    )))  # fmt: skip
    resp = await client.post(
        "/webhooks/whatsapp", data=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(APP_SECRET, body)},
    )  # fmt: skip
    assert resp.status == 200
    assert await service.first_opted_out(PNID, service.readings(PNID, NUMBER)) == NUMBER
    status, answer = await _send(client, {**TEMPLATE, "to": bsuid})  # the BSUID reaches the same user
    assert status == 400 and answer["error"]["code"] == RECIPIENT_OPTED_OUT
    await service.opt_in(PNID, bsuid, actor=Actor("supervisor", "test"))
    assert (await _send(client, TEMPLATE))[0] == 200


async def test_the_page_lists_adds_and_removes_opt_outs(
    client: TestClient[Any, Any], open_admin: OpenAdmin, service: BlocklistService
) -> None:
    assert await _webhook(client, p.text(NUMBER, "BAJA")) == 200
    page = await open_admin()
    await sign_in(page)
    await page.get_by_role("button", name="Block numbers of Ventas Colombia").click()
    dialog = blocks_dialog(page)
    await dialog.get_by_text("Opted out of templates and marketing").click()
    items = dialog.locator("#optout-list li")
    await expect(items).to_have_count(1)
    await expect(items.nth(0)).to_contain_text("+57 300 1234567since")
    await expect(items.nth(0)).to_contain_text('keyword "BAJA" · user')

    await dialog.get_by_label("Number to opt out").fill("+57 300 765 4321")
    await dialog.get_by_role("button", name="Opt out", exact=True).click()
    await expect(dialog.get_by_role("status")).to_have_text(
        "+57 300 7654321 no longer gets templates or marketing messages."
    )
    await expect(items).to_have_count(2)
    assert [e.number for e in await service.optouts(PNID)] == ["573007654321", NUMBER]

    await dialog.get_by_role("button", name="Opt +57 300 1234567 back in").click()
    await expect(dialog.get_by_role("status")).to_have_text(
        "+57 300 1234567 gets templates and marketing messages again."
    )
    await expect(items).to_have_count(1)
    assert (await _send(client, TEMPLATE))[0] == 200
    records, _ = await service.audit(PNID)
    assert (records[0]["action"], records[0]["source"]) == ("optin", "admin_api")
