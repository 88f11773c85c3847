"""A real public client, pywa, driving the gateway: it only changes where its HTTP goes.

pywa always builds ``https://graph.facebook.com/v{version}/...`` URLs, so it is pointed at the proxy the way its
documentation suggests for custom networking: an ``httpx`` client whose transport sends every request to the
proxy (the Host header still says graph.facebook.com; the proxy never uses it).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from wa_blocklist.proxy.blocklist.service import Actor
from wa_blocklist.proxy.graph.errors import RECIPIENT_BLOCKED

from support import PNID, wrote_recently

pywa_async = pytest.importorskip("pywa_async", reason="pip install .[pywa]")
from pywa.errors import WhatsAppError  # noqa: E402 - after the importorskip above

BLOCKED = "573001234567"
ALLOWED = "573009876543"


class ToProxy(httpx.AsyncBaseTransport):
    """Send every request to the proxy, keeping path, query, headers and body."""

    def __init__(self, proxy_url: str) -> None:
        self.proxy = httpx.URL(proxy_url)
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme=self.proxy.scheme, host=self.proxy.host, port=self.proxy.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def wa(client: Any) -> Any:
    session = httpx.AsyncClient(transport=ToProxy(str(client.make_url("/"))))
    yield pywa_async.WhatsApp(phone_id=PNID, token="EAAG-pywa-token", session=session)
    await session.aclose()


async def test_pywa_raises_its_normal_error_for_a_blocked_user(wa, service, fake_graph):
    await wrote_recently(service, PNID, BLOCKED)
    await service.block(PNID, BLOCKED, actor=Actor("supervisor", "admin_api"))

    with pytest.raises(WhatsAppError) as raised:
        await wa.send_message(to="+57 300 123 4567", text="hola")
    assert raised.value.code == RECIPIENT_BLOCKED
    assert "blocked on connector" in (raised.value.details or "")
    assert raised.value.fbtrace_id
    assert fake_graph.requests == []

    contacts = [{"input": ALLOWED, "wa_id": ALLOWED}]
    fake_graph.respond(
        "POST",
        "/messages$",
        200,
        {"messaging_product": "whatsapp", "contacts": contacts, "messages": [{"id": "wamid.FAKE"}]},
    )
    sent = await wa.send_message(to=ALLOWED, text="hola")
    assert sent.id == "wamid.FAKE"
    [seen] = fake_graph.requests
    assert seen.path.endswith(f"/{PNID}/messages")
    assert seen.headers["Authorization"] == "Bearer EAAG-pywa-token"
    assert seen.json()["to"] == ALLOWED


async def test_pywa_block_users_goes_through_our_blocklist(wa, service, fake_graph):
    from pywa.errors import BulkBlockingFailed

    await wrote_recently(service, PNID, BLOCKED)
    fake_graph.respond(
        "POST", "/block_users$", 200,
        {"messaging_product": "whatsapp", "block_users": {"added_users": [{"input": BLOCKED, "wa_id": BLOCKED}]}},
    )  # fmt: skip
    result = await wa.block_users(users=[BLOCKED])
    assert [u.wa_id for u in result.added_users] == [BLOCKED]
    assert (await service.get(PNID, BLOCKED)).source == "block_users_api"

    with pytest.raises(BulkBlockingFailed):  # ALLOWED never wrote: our 24-hour rule, in Meta's shape
        await wa.block_users(users=[ALLOWED])
    assert len(fake_graph.requests) == 1


async def test_pywa_mark_as_read_and_typing_pass_for_allowed_users_and_are_refused_for_blocked_ones(
    wa, service, fake_graph
):
    from wa_blocklist.proxy.blocklist.service import InboundUser

    await service.record_inbound(
        PNID,
        [InboundUser(wa_id=BLOCKED), InboundUser(wa_id=ALLOWED)],
        messages=[("wamid.FROM_BLOCKED", 0), ("wamid.FROM_ALLOWED", 1)],
    )
    await service.block(PNID, BLOCKED, actor=Actor("supervisor", "admin_api"))
    fake_graph.respond("POST", "/messages$", 200, {"success": True})

    assert (await wa.mark_message_as_read(message_id="wamid.FROM_ALLOWED")).success
    assert (await wa.indicate_typing(message_id="wamid.FROM_ALLOWED")).success
    read, typing = fake_graph.requests
    assert read.json() == {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.FROM_ALLOWED"}
    assert typing.json()["typing_indicator"] == {"type": "text"}

    for call in (wa.mark_message_as_read, wa.indicate_typing):
        with pytest.raises(WhatsAppError) as raised:
            await call(message_id="wamid.FROM_BLOCKED")
        assert raised.value.code == RECIPIENT_BLOCKED
    assert len(fake_graph.requests) == 2
