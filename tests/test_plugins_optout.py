"""Opt-outs (issue 19) in the send-side plugins, with the real client packages, in both client modes: a template or
marketing send to a user who opted out is refused with the gateway's 139901 and never reaches the fake Graph; a
free-form send to them goes out; opting back in lifts it."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from botbuilder.core import TurnContext  # type: ignore[import-untyped]
from botbuilder.core.adapters import TestAdapter  # type: ignore[import-untyped]
from botbuilder.schema import (  # type: ignore[import-untyped]
    Activity,
    ActivityTypes,
)
from pywa_async import WhatsApp
from pywa_async.errors import WhatsAppError
from pywa_async.types.templates import TemplateLanguage

from wa_blocklist.plugins.aiohttp_client import GraphSendRefused, graph_client_middleware
from wa_blocklist.plugins.botframework import REFUSALS_KEY, BlocklistMiddleware
from wa_blocklist.plugins.client import BlocklistClient
from wa_blocklist.plugins.pywa import blocklist_session
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService, InboundUser
from wa_blocklist.proxy.graph.errors import RECIPIENT_OPTED_OUT, SERVICE_UNAVAILABLE

import payloads as p
from fakes import FakeContactCenter, FakeGraph, sign
from plugin_support import (  # noqa: F401  (the blocklist fixture)
    ALLOWED,
    BLOCKED_BSUID,
    answer_sends,
    blocklist_fixture,
    whatsapp_conversation,
)
from support import APP_SECRET, PNID, VIEWER_TOKEN, Closer, auth, free_port

USER = ALLOWED  # not blocked: only the opt-out stands in the way
SUPERVISOR = Actor("supervisor", "test")
TEMPLATE = {
    "messaging_product": "whatsapp", "to": "+57 300 765 4321", "type": "template",
    "template": {"name": "promo_noviembre", "language": {"code": "es"}},
}  # fmt: skip
TEXT = {"messaging_product": "whatsapp", "to": USER, "type": "text", "text": {"body": "Listo, no le escribimos más"}}


def graph_base(fake_graph: FakeGraph) -> str:
    """The fake Graph's base URL, answering sends (``messages`` and ``marketing_messages``) as Meta does."""
    return answer_sends(fake_graph, r"/(marketing_)?messages$", USER, "wamid.SENT")


async def webhook(client: TestClient[Any, Any], text: str) -> None:
    """The user writes ``text`` to the connector, through the proxy's webhook receiver (signed as Meta does)."""
    body = p.encode(p.envelope(p.change(PNID, contacts=[p.contact(USER)], messages=[p.text(USER, text)])))
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(APP_SECRET, body)}
    assert (await client.post("/webhooks/whatsapp", data=body, headers=headers)).status == 200


async def test_pywa_baja_refuses_templates_and_marketing_not_text_and_alta_lifts_it(
    blocklist: BlocklistClient,
    client: TestClient[Any, Any],
    contact_center: FakeContactCenter,
    fake_graph: FakeGraph,
    closing: Closer,
) -> None:
    session = closing(blocklist_session(blocklist, upstream=graph_base(fake_graph)))
    wa = WhatsApp(phone_id=PNID, token="bot-token", session=session)
    await wa.send_template(to=USER, name="promo_noviembre", language=TemplateLanguage.SPANISH)
    assert len(fake_graph.requests) == 1  # before BAJA a template goes out

    await webhook(client, "BAJA")
    for marketing in (False, True):  # messages with type template, then marketing_messages (MM Lite)
        with pytest.raises(WhatsAppError) as err:
            await wa.send_template(
                to="+57 300 765 4321", name="promo_noviembre", language=TemplateLanguage.SPANISH,
                use_mm_lite_api=marketing,
            )  # fmt: skip
        assert err.value.code == RECIPIENT_OPTED_OUT and err.value.status_code == 400
        assert "opted out" in (err.value.details or "") and not err.value.is_transient
    assert len(fake_graph.requests) == 1  # nothing reached Meta

    sent = await wa.send_message(to=USER, text="Listo, no le escribimos más")  # a free-form reply still goes out
    assert sent.id == "wamid.SENT" and fake_graph.requests[-1].json()["type"] == "text"

    await webhook(client, "ALTA")
    await wa.send_template(to=USER, name="promo_noviembre", language=TemplateLanguage.SPANISH)
    assert [r.json()["type"] for r in fake_graph.requests] == ["template", "text", "template"]


async def test_aiohttp_client_middleware_refuses_a_template_to_an_opted_out_user(
    blocklist: BlocklistClient, service: BlocklistService, fake_graph: FakeGraph
) -> None:
    await service.opt_out(PNID, USER, actor=SUPERVISOR)
    url = f"{graph_base(fake_graph)}/v21.0/{PNID}/messages"
    async with aiohttp.ClientSession(middlewares=(graph_client_middleware(blocklist),)) as graph:
        with pytest.raises(GraphSendRefused) as err:
            await graph.post(url, json=TEMPLATE)
        assert err.value.status == 400 and err.value.graph_code == RECIPIENT_OPTED_OUT
        assert err.value.graph_error["error"]["code"] == RECIPIENT_OPTED_OUT
        with pytest.raises(GraphSendRefused):
            await graph.post(f"{graph_base(fake_graph)}/v21.0/{PNID}/marketing_messages", json=TEMPLATE)
        async with graph.post(url, json=TEXT) as response:
            assert response.status == 200
        await service.opt_in(PNID, USER, actor=SUPERVISOR)
        async with graph.post(url, json=TEMPLATE) as response:
            assert response.status == 200
    assert [r.json()["type"] for r in fake_graph.requests] == ["text", "template"]


async def test_an_opt_out_follows_the_bsuid_link(
    blocklist: BlocklistClient, service: BlocklistService, fake_graph: FakeGraph
) -> None:
    await service.record_inbound(PNID, [InboundUser(wa_id=USER, bsuid=BLOCKED_BSUID)])
    await service.opt_out(PNID, BLOCKED_BSUID, actor=SUPERVISOR)
    async with aiohttp.ClientSession(middlewares=(graph_client_middleware(blocklist),)) as graph:
        with pytest.raises(GraphSendRefused) as err:
            await graph.post(f"{graph_base(fake_graph)}/v21.0/{PNID}/messages", json=TEMPLATE)  # sent to the wa_id
    assert err.value.graph_code == RECIPIENT_OPTED_OUT
    assert fake_graph.requests == []


async def test_botframework_channel_data_template_to_an_opted_out_user_is_removed(
    blocklist: BlocklistClient, service: BlocklistService
) -> None:
    await service.opt_out(PNID, USER, actor=SUPERVISOR)
    adapter = TestAdapter(lambda context: None)
    adapter.use(BlocklistMiddleware(blocklist, phone_number_id=PNID))
    reference = whatsapp_conversation(USER)
    results: dict[str, Any] = {}

    # The second template names no recipient: the channel connector sends it to the activity's recipient.
    unaddressed = {"type": "template", "template": TEMPLATE["template"]}

    async def callback(context: TurnContext) -> None:
        offer = Activity(type=ActivityTypes.message, text="offer", channel_data=dict(TEMPLATE))
        results["template"] = await context.send_activity(offer)
        other = Activity(type=ActivityTypes.message, text="other offer", channel_data=dict(unaddressed))
        results["unaddressed"] = await context.send_activity(other)
        results["text"] = await context.send_activity("Listo, no le escribimos más")
        results["refusals"] = context.turn_state.get(REFUSALS_KEY, [])

    await adapter.continue_conversation(reference, callback)
    assert results["template"] is None and results["unaddressed"] is None and results["text"] is not None
    assert [(a.text, envelope["error"]["code"]) for a, envelope in results["refusals"]] == [
        ("offer", RECIPIENT_OPTED_OUT),
        ("other offer", RECIPIENT_OPTED_OUT),
    ]
    assert results["refusals"][1][0].channel_data == unaddressed  # the bot's activity is left as it wrote it
    assert [a.text for a in adapter.activity_buffer] == ["Listo, no le escribimos más"]

    await service.opt_in(PNID, USER, actor=SUPERVISOR)
    sent: dict[str, Any] = {}

    async def again(context: TurnContext) -> None:
        other = Activity(type=ActivityTypes.message, text="other offer", channel_data=dict(unaddressed))
        sent["unaddressed"] = await context.send_activity(other)

    await adapter.continue_conversation(reference, again)
    assert sent["unaddressed"] is not None and adapter.activity_buffer[-1].channel_data == unaddressed


async def test_store_failure_follows_on_error(fake_graph: FakeGraph) -> None:
    unreachable = BlocklistClient.http(f"http://127.0.0.1:{free_port()}", "some-token-000001")
    url = f"{graph_base(fake_graph)}/v21.0/{PNID}/messages"
    async with unreachable:
        for on_error, sent in (("deny", False), ("allow", True)):
            middleware = graph_client_middleware(unreachable, on_error=on_error)  # type: ignore[arg-type]
            async with aiohttp.ClientSession(middlewares=(middleware,)) as graph:
                if sent:
                    async with graph.post(url, json=TEMPLATE) as response:
                        assert response.status == 200
                else:
                    with pytest.raises(GraphSendRefused) as err:
                        await graph.post(url, json=TEMPLATE)
                    assert err.value.status == 503 and err.value.graph_code == SERVICE_UNAVAILABLE
    assert len(fake_graph.requests) == 1


async def test_admin_api_reads_one_numbers_opt_out(client: TestClient[Any, Any], service: BlocklistService) -> None:
    one = f"/admin/api/connectors/{PNID}/optouts"
    resp = await client.get(f"{one}/{USER}", headers=auth(VIEWER_TOKEN))
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_opted_out"
    await service.opt_out(PNID, USER, actor=SUPERVISOR, reason="asked by phone")
    for form in (USER, "%2B57%20300%20765%204321", "3007654321"):  # any written form, national ones too
        resp = await client.get(f"{one}/{form}", headers=auth(VIEWER_TOKEN))  # a viewer token is enough
        assert resp.status == 200, form
        entry = await resp.json()
        assert entry["number"] == USER and entry["reason"] == "asked by phone" and entry["source"] == "test"
    resp = await client.get(f"{one}/garbage", headers=auth(VIEWER_TOKEN))
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_number"
    resp = await client.get(f"/admin/api/connectors/999/optouts/{USER}", headers=auth(VIEWER_TOKEN))
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "unknown_connector"
    assert (await client.get(f"{one}/{USER}")).status == 401
