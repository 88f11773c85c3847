"""pywa plugin with the real pywa package: sends refused locally, webhooks guarded before handlers and listeners."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import httpx
import pytest
from pywa_async import WhatsApp, types
from pywa_async.errors import WhatsAppError
from pywa_async.listeners import UserUpdateListenerIdentifier
from starlette.applications import Starlette

from wa_blocklist.plugins.client import BlocklistClient, DirectBlocklistClient
from wa_blocklist.plugins.pywa import (
    BlocklistTransport,
    ProxyRoutingTransport,
    blocklist_session,
    guard_webhooks,
    not_blocked,
)
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService, InboundUser
from wa_blocklist.proxy.graph.errors import RECIPIENT_BLOCKED, SERVICE_UNAVAILABLE

from fakes import FakeGraph, sign
from plugin_support import (
    ALLOWED,
    ALLOWED_BSUID,
    BLOCKED,
    BLOCKED_BSUID,
    answer_sends,
    block,
    blocklist_fixture,  # noqa: F401  (the blocklist fixture, both modes)
    dumps,
    messages_payload,
    statuses_payload,
)
from support import APP_SECRET, PNID, VERIFY_TOKEN, Closer, free_port, wrote_recently


def graph_url(fake_graph: FakeGraph) -> str:
    """The fake Graph's base URL, answering sends as Meta does (pywa reads ``contacts[0]``)."""
    return answer_sends(fake_graph, r"/messages$", ALLOWED, "wamid.SENT", success=True)


async def test_send_to_blocked_user_raises_pywa_error_and_never_leaves(
    blocklist: BlocklistClient, service: BlocklistService, fake_graph: FakeGraph, closing: Closer
) -> None:
    await block(service, BLOCKED)
    session = closing(blocklist_session(blocklist, upstream=graph_url(fake_graph)))
    wa = WhatsApp(phone_id=PNID, token="bot-token", session=session)
    with pytest.raises(WhatsAppError) as err:
        await wa.send_message(to=BLOCKED, text="hello")
    assert err.value.code == RECIPIENT_BLOCKED and err.value.status_code == 400
    assert "blocked" in (err.value.details or "")
    with pytest.raises(WhatsAppError):
        await wa.send_message(to="+57 300 123 4567", text="another form of the same number")
    assert fake_graph.requests == []

    sent = await wa.send_message(to=ALLOWED, text="hello")
    assert sent.id == "wamid.SENT"
    assert [r.json()["to"] for r in fake_graph.requests] == [ALLOWED]
    assert re.fullmatch(rf"/v[0-9.]+/{PNID}/messages", fake_graph.requests[0].path)
    assert fake_graph.requests[0].headers["Authorization"] == "Bearer bot-token"


async def test_national_numbers_are_read_with_the_connectors_region(
    blocklist: BlocklistClient, service: BlocklistService, fake_graph: FakeGraph, closing: Closer
) -> None:
    await block(service, BLOCKED)
    assert await blocklist.region(PNID) == "CO"
    session = closing(blocklist_session(blocklist, upstream=graph_url(fake_graph)))
    wa = WhatsApp(phone_id=PNID, token="bot-token", session=session)
    for national in ("300 123 4567", "(300) 123-4567"):  # +57 300 123 4567, as Meta reads it from a CO number
        with pytest.raises(WhatsAppError) as err:
            await wa.send_message(to=national, text="hello")
        assert err.value.code == RECIPIENT_BLOCKED
    await wa.send_message(to="300 765 4321", text="hello")  # someone else, written nationally, still goes
    assert [r.json()["to"] for r in fake_graph.requests] == ["300 765 4321"]


async def test_bsuid_recipient_and_other_calls_pass(
    blocklist: BlocklistClient, service: BlocklistService, fake_graph: FakeGraph, closing: Closer
) -> None:
    await wrote_recently(service, PNID, bsuid=BLOCKED_BSUID)
    await service.block(PNID, BLOCKED_BSUID, actor=Actor("supervisor", "test"))
    session = closing(blocklist_session(blocklist, upstream=graph_url(fake_graph)))
    wa = WhatsApp(phone_id=PNID, token="bot-token", session=session)
    with pytest.raises(WhatsAppError) as err:
        await wa.send_message(to=BLOCKED_BSUID, text="hello")  # pywa puts a BSUID in "recipient"
    assert err.value.code == RECIPIENT_BLOCKED
    # A read receipt is checked against the sender of the message it names (learned from verified webhooks).
    await service.record_inbound(PNID, [InboundUser(bsuid=ALLOWED_BSUID)], messages=[("wamid.IN1", 0)])
    await wa.mark_message_as_read(message_id="wamid.IN1")
    await wa.send_message(to=ALLOWED_BSUID, text="hi")
    assert [(r.json().get("to"), r.json().get("recipient")) for r in fake_graph.requests] == [
        (None, None),
        (None, ALLOWED_BSUID),
    ]


async def test_store_down_refuses_with_transient_error(fake_graph: FakeGraph, closing: Closer) -> None:
    unreachable = BlocklistClient.http(f"http://127.0.0.1:{free_port()}", "some-token-000001")
    async with unreachable:
        for on_error, expect_sent in (("deny", False), ("allow", True)):
            session = closing(blocklist_session(unreachable, upstream=graph_url(fake_graph), on_error=on_error))  # type: ignore[arg-type]
            wa = WhatsApp(phone_id=PNID, token="bot-token", session=session)
            if expect_sent:
                await wa.send_message(to=ALLOWED, text="hi")
            else:
                with pytest.raises(WhatsAppError) as err:
                    await wa.send_message(to=ALLOWED, text="hi")
                assert err.value.code == SERVICE_UNAVAILABLE and err.value.is_transient
    assert len(fake_graph.requests) == 1


def signed_post(body: bytes) -> dict[str, Any]:
    return {
        "content": body,
        "headers": {"X-Hub-Signature-256": sign(APP_SECRET, body), "Content-Type": "application/json"},
    }


def guarded_bot(blocklist: BlocklistClient, closing: Closer) -> tuple[Starlette, WhatsApp]:
    """A pywa bot serving Meta's webhooks on a Starlette app (validator on), guarded by ``blocklist``."""
    app = Starlette()
    wa = WhatsApp(
        phone_id=PNID, token="bot-token", server=app, verify_token=VERIFY_TOKEN, app_secret=APP_SECRET,
        webhook_endpoint="/webhooks/whatsapp", session=closing(httpx.AsyncClient()),
    )  # fmt: skip
    guard_webhooks(wa, blocklist)
    return app, wa


async def test_blocked_users_updates_never_reach_handlers(
    blocklist: BlocklistClient, service: BlocklistService, closing: Closer
) -> None:
    await block(service, BLOCKED)
    app, wa = guarded_bot(blocklist, closing)
    seen: list[str] = []
    statuses: list[str] = []
    raw: list[int] = []

    @wa.on_message()
    async def on_message(_: WhatsApp, msg: types.Message) -> None:
        seen.append(f"{msg.from_user.wa_id}:{msg.text}")

    @wa.on_message_status()
    async def on_status(_: WhatsApp, status: types.MessageStatus) -> None:
        statuses.append(status.from_user.wa_id or "")

    @wa.on_raw_update()
    async def on_raw(_: WhatsApp, update: types.RawUpdate) -> None:
        raw.append(1)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot") as http:
        both = dumps(messages_payload(PNID, (BLOCKED, BLOCKED_BSUID, "insult"), (ALLOWED, ALLOWED_BSUID, "hello")))
        only_blocked = dumps(messages_payload(PNID, (BLOCKED, "", "again")))
        bodies = [both, only_blocked, dumps(statuses_payload(PNID, BLOCKED, ALLOWED))]
        if isinstance(blocklist, DirectBlocklistClient):
            # Only direct mode follows the wa_id-BSUID link that the first update taught the store; the admin
            # API's GET looks up the identity it is given.
            bodies.append(dumps(messages_payload(PNID, ("", BLOCKED_BSUID, "username user"))))
        for body in bodies:
            response = await http.post("/webhooks/whatsapp", **signed_post(body))
            assert response.status_code == 200
        forged = await http.post(
            "/webhooks/whatsapp", content=only_blocked, headers={"X-Hub-Signature-256": "sha256=00"}
        )
        assert forged.status_code == 403  # pywa's own signature check still runs first

    assert seen == [f"{ALLOWED}:hello"]
    # statuses report the business's own messages: kept, as the proxy keeps them (docs/webhooks.md policy table);
    # pywa builds its status update from the first status of a change
    assert statuses == [BLOCKED]
    assert len(raw) == 2  # the all-blocked updates never reached pywa at all


async def test_listeners_never_see_a_blocked_user(
    blocklist: BlocklistClient, service: BlocklistService, closing: Closer
) -> None:
    await block(service, BLOCKED)
    wa = WhatsApp(phone_id=PNID, token="bot-token", session=closing(httpx.AsyncClient()), verify_token=VERIFY_TOKEN,
                  app_secret=APP_SECRET, server=None)  # fmt: skip
    guard_webhooks(wa, blocklist)
    blocked_key = UserUpdateListenerIdentifier(sender=BLOCKED, recipient=PNID)
    allowed_key = UserUpdateListenerIdentifier(sender=ALLOWED, recipient=PNID)
    from_blocked = asyncio.ensure_future(wa.listen(to=blocked_key, timeout=30))
    from_allowed = asyncio.ensure_future(wa.listen(to=allowed_key, timeout=30))
    await asyncio.sleep(0)  # one loop turn: both tasks start and register (asserted below), no timing involved
    assert blocked_key in wa._listeners and allowed_key in wa._listeners

    for sender in (BLOCKED, ALLOWED):
        assert await wa.webhook_update_handler(dumps(messages_payload(PNID, (sender, "", f"answer of {sender}")))) == (
            "ok",
            200,
        )
    assert (await from_allowed).text == f"answer of {ALLOWED}"
    assert not from_blocked.done()
    from_blocked.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await from_blocked


async def test_not_blocked_filter(blocklist: BlocklistClient, service: BlocklistService, closing: Closer) -> None:
    await block(service, BLOCKED)
    wa = WhatsApp(phone_id=PNID, token="bot-token", session=closing(httpx.AsyncClient()), verify_token=VERIFY_TOKEN,
                  app_secret=APP_SECRET, server=None)  # fmt: skip
    seen: list[str] = []

    @wa.on_message(not_blocked(blocklist))
    async def on_message(_: WhatsApp, msg: types.Message) -> None:
        seen.append(msg.from_user.wa_id or "")

    for sender in (BLOCKED, ALLOWED):  # pywa builds one Message per update, from the first message
        await wa.webhook_update_handler(dumps(messages_payload(PNID, (sender, "", "hi"))))
    assert seen == [ALLOWED]


async def test_transport_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="blocklist"):
        BlocklistTransport()
    with pytest.raises(ValueError, match="http"):
        ProxyRoutingTransport("ftp://proxy")


async def test_only_updates_verified_by_the_validator_are_recorded(service: BlocklistService, closing: Closer) -> None:
    async with BlocklistClient.direct(service.config, actor="test-bot") as blocklist:
        app, wa = guarded_bot(blocklist, closing)
        body = dumps(messages_payload(PNID, (ALLOWED, ALLOWED_BSUID, "hello")))
        # A custom server that hands a body to the handler without pywa's validator: handled, never recorded.
        assert await wa.webhook_update_handler(body) == ("ok", 200)
        assert await service.last_inbound_ms(PNID, ALLOWED) is None
        assert await service.store.linked(PNID, ALLOWED_BSUID) is None
        # Through pywa's own route, which validates the signature first: recorded, link learned.
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot") as http:
            assert (await http.post("/webhooks/whatsapp", **signed_post(body))).status_code == 200
        assert await service.last_inbound_ms(PNID, ALLOWED) is not None
        assert await service.store.linked(PNID, ALLOWED_BSUID) == ALLOWED


def test_the_sync_client_given_the_async_session_gets_a_clear_error() -> None:
    import pywa

    session = blocklist_session(upstream="http://127.0.0.1:9")
    wa = pywa.WhatsApp(phone_id=PNID, token="bot-token", session=session)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"pywa_async\.WhatsApp.*ProxyRoutingTransport"):
        wa.send_message(to=ALLOWED, text="hi")


def test_the_sync_client_given_the_async_transport_gets_a_clear_error() -> None:
    import pywa

    session = httpx.Client(transport=BlocklistTransport(upstream="http://127.0.0.1:9"))  # type: ignore[arg-type]  # the mistake
    wa = pywa.WhatsApp(phone_id=PNID, token="bot-token", session=session)
    with pytest.raises(TypeError, match=r"async httpx transport.*ProxyRoutingTransport"):
        wa.send_message(to=ALLOWED, text="hi")
    session.close()
