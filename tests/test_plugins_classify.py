"""The send-side plugins classify every Graph request with the proxy gateway's own classifier (proxy.classify).

Each request shape is sent twice: through a plugin (pywa's async client or a raw httpx client on BlocklistTransport,
an aiohttp client with graph_client_middleware, a botbuilder adapter with BlocklistMiddleware) to the fake Graph
API, and to the running proxy, whose upstream is the same fake Graph. A request the proxy refuses is refused by the
plugin with the same Graph error, before anything reaches the fake Graph; allow-listed calls pass unchanged.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
import test_gateway_grammar as grammar
from aiohttp.test_utils import TestClient
from botbuilder.core import BotAdapter, MessageFactory, TurnContext
from botbuilder.schema import (
    Activity,
    ActivityTypes,
    ConversationReference,
    ResourceResponse,
)
from hypothesis import event, given
from pywa_async import WhatsApp
from pywa_async.errors import WhatsAppError
from pywa_async.types.templates import TemplateLanguage

from wa_blocklist.plugins.aiohttp_client import GraphSendRefused, graph_client_middleware
from wa_blocklist.plugins.botframework import REFUSALS_KEY, REFUSED_KEY, BlocklistMiddleware
from wa_blocklist.plugins.client import BlocklistClient
from wa_blocklist.plugins.httpx_transport import blocklist_session
from wa_blocklist.proxy.blocklist.service import BlocklistService, InboundUser
from wa_blocklist.proxy.config import Config
from wa_blocklist.proxy.graph.errors import RECIPIENT_BLOCKED

from fakes import FakeGraph
from plugin_support import (  # noqa: F401  (blocklist fixture, both modes)
    ALLOWED,
    BLOCKED,
    block,
    blocklist_fixture,
    two_wrote_one_blocked,
    whatsapp_conversation,
)
from support import PNID, exhaustive, free_port

WABA = "102290129340398"
GROUP = "Y2FwaV9ncm91cDoxMjM0NTY3ODkw"
TEXT = {"messaging_product": "whatsapp", "type": "text", "text": {"body": "hi"}}


def j(data: Any) -> bytes:
    return json.dumps(data).encode()


JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

# (name, method, path and query, headers, body): each refused by the proxy before it reaches Meta.
REFUSED: list[tuple[str, str, str, dict[str, str], bytes]] = [
    ("batch on a node", "POST", f"/v21.0/{PNID}", FORM, f"batch={json.dumps([{'method': 'POST'}])}".encode()),
    ("batch at the root", "POST", "/v21.0/", FORM, b"batch=[]"),
    ("batch in the query", "POST", f"/v21.0/{PNID}/messages?batch=1", JSON, j({**TEXT, "to": ALLOWED})),
    ("method override (query)", "POST", f"/v21.0/{PNID}/messages?method=GET", JSON, j({**TEXT, "to": BLOCKED})),
    ("method override (body)", "POST", f"/v21.0/{PNID}/messages", JSON, j({**TEXT, "to": ALLOWED, "method": "x"})),
    (
        "method override (header)",
        "POST",
        f"/v21.0/{PNID}/messages",
        {**JSON, "X-HTTP-Method-Override": "DELETE"},
        j({**TEXT, "to": ALLOWED}),
    ),
    ("PUT on messages", "PUT", f"/v21.0/{PNID}/messages", JSON, j({**TEXT, "to": ALLOWED})),
    ("to twice (form)", "POST", f"/v21.0/{PNID}/messages", FORM, f"to={ALLOWED}&to={BLOCKED}&type=text".encode()),
    ("to twice (JSON)", "POST", f"/v21.0/{PNID}/messages", JSON, f'{{"to":"{ALLOWED}","to":"{BLOCKED}"}}'.encode()),
    ("to in query and body", "POST", f"/v21.0/{PNID}/messages?to={BLOCKED}", JSON, j({**TEXT, "to": ALLOWED})),
    ("path parameter", "POST", f"/v21.0/{PNID};x=1/messages", JSON, j({**TEXT, "to": BLOCKED})),
    ("percent-encoded edge", "POST", f"/v21.0/{PNID}/messages%20", JSON, j({**TEXT, "to": BLOCKED})),
    ("leading zero node", "POST", f"/v21.0/0{PNID}/messages", JSON, j({**TEXT, "to": BLOCKED})),
    ("second version", "POST", f"/v21.0/v21.0/{PNID}/messages", JSON, j({**TEXT, "to": BLOCKED})),
    ("after the edge", "POST", f"/v21.0/{PNID}/messages/x", JSON, j({**TEXT, "to": BLOCKED})),
    (
        "group send to a number",
        "POST",
        f"/v21.0/{PNID}/messages",
        JSON,
        j({**TEXT, "recipient_type": "group", "to": "+" + BLOCKED}),
    ),
    ("BOM", "POST", f"/v21.0/{PNID}/messages", JSON, b"\xef\xbb\xbf" + j({**TEXT, "to": BLOCKED})),
    ("UTF-16", "POST", f"/v21.0/{PNID}/messages", JSON, j({**TEXT, "to": BLOCKED}).decode().encode("utf-16-le")),
    ("not on the allow-list", "GET", f"/v21.0/{PNID}/unknown_edge", {}, b""),
    ("unknown encoding", "POST", f"/v21.0/{PNID}/messages", {**JSON, "Content-Encoding": "br"}, b"xx"),
    ("unreadable to", "POST", f"/v21.0/{PNID}/messages", JSON, j({**TEXT, "to": "call me"})),
    ("batch in a template body", "POST", f"/v21.0/{WABA}/message_templates", FORM, b"name=x&batch=[]"),
]


def envelope(data: Any) -> tuple[Any, ...]:
    error = data["error"]
    return error["code"], error["message"], error["error_data"]["details"]


async def via_proxy(
    client: TestClient[Any, Any], method: str, target: str, headers: dict[str, str], body: bytes
) -> tuple[int, Any]:
    async with client.request(method, target, headers=headers, data=body or None) as response:
        return response.status, await response.json()


async def refused_by_proxy(
    client: TestClient[Any, Any], service: BlocklistService, case: tuple[str, str, str, dict[str, str], bytes]
) -> tuple[int, Any]:
    """Block BLOCKED, then send a REFUSED case through the proxy: its status and body."""
    await block(service, BLOCKED)
    _, method, target, headers, body = case
    return await via_proxy(client, method, target, headers, body)


@pytest.fixture
async def graph_base(fake_graph: FakeGraph) -> str:
    assert fake_graph.server is not None
    return str(fake_graph.server.make_url("")).rstrip("/")


@pytest.fixture
async def session(blocklist: BlocklistClient, graph_base: str) -> AsyncIterator[httpx.AsyncClient]:
    async with blocklist_session(blocklist, upstream=graph_base) as found:
        yield found


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
async def test_httpx_transport_refuses_what_the_proxy_refuses(
    case: tuple[str, str, str, dict[str, str], bytes],
    session: httpx.AsyncClient,
    client: TestClient[Any, Any],
    service: BlocklistService,
    fake_graph: FakeGraph,
) -> None:
    _, method, target, headers, body = case
    proxy_status, proxy_body = await refused_by_proxy(client, service, case)
    assert fake_graph.requests == [] and proxy_status in (400, 403, 404, 405)
    # httpx would normalise some paths: the raw target is sent as it is written.
    request = session.build_request(method, "https://graph.facebook.com", headers=headers, content=body)
    request.url = request.url.copy_with(raw_path=target.encode())
    response = await session.send(request)
    assert (response.status_code, envelope(response.json())) == (proxy_status, envelope(proxy_body))
    assert fake_graph.requests == []


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
async def test_aiohttp_middleware_refuses_what_the_proxy_refuses(
    case: tuple[str, str, str, dict[str, str], bytes],
    blocklist: BlocklistClient,
    graph_base: str,
    client: TestClient[Any, Any],
    service: BlocklistService,
    fake_graph: FakeGraph,
) -> None:
    _, method, target, headers, body = case
    proxy_status, proxy_body = await refused_by_proxy(client, service, case)
    async with aiohttp.ClientSession(middlewares=(graph_client_middleware(blocklist),)) as graph:
        with pytest.raises(GraphSendRefused) as err:
            url = aiohttp.client.URL(graph_base + target, encoded=True)
            await graph.request(method, url, headers=headers, data=body or None)
    assert (err.value.status, envelope(err.value.graph_error)) == (proxy_status, envelope(proxy_body))
    assert fake_graph.requests == []


async def test_pywa_sends_reads_and_uploads_for_allowed_users_pass_and_blocked_ones_are_refused(
    session: httpx.AsyncClient, service: BlocklistService, fake_graph: FakeGraph
) -> None:
    await two_wrote_one_blocked(service)
    contacts = [{"input": ALLOWED, "wa_id": ALLOWED}]
    fake_graph.respond(
        "POST",
        "/messages$",
        200,
        {"messaging_product": "whatsapp", "success": True, "contacts": contacts, "messages": [{"id": "w"}]},
    )
    fake_graph.respond("POST", "/media$", 200, {"id": "4490709327384033"})
    summary = {
        "total_count": 0,
        "message_template_count": 0,
        "message_template_limit": 250,
        "are_translations_complete": True,
    }
    fake_graph.respond("GET", "/message_templates$", 200, {"data": [], "paging": {"cursors": {}}, "summary": summary})
    wa = WhatsApp(phone_id=PNID, token="bot-token", session=session, waba_id=WABA)

    for call in (
        lambda: wa.send_message(to=BLOCKED, text="hola"),
        lambda: wa.send_template(to="+57 300 123 4567", name="offer", language=TemplateLanguage.SPANISH),
        lambda: wa.mark_message_as_read(message_id="wamid.FROM_BLOCKED"),
        lambda: wa.indicate_typing(message_id="wamid.FROM_BLOCKED"),
    ):
        with pytest.raises(WhatsAppError) as raised:
            await call()
        assert raised.value.code == RECIPIENT_BLOCKED and raised.value.status_code == 400
    with pytest.raises(WhatsAppError) as unknown:
        await wa.mark_message_as_read(message_id="wamid.NEVER_SEEN")  # fail closed, as the proxy
    assert unknown.value.code == 10
    assert fake_graph.requests == []

    await wa.send_message(to=ALLOWED, text="hola")
    await wa.send_template(to=ALLOWED, name="offer", language=TemplateLanguage.SPANISH)
    assert (await wa.mark_message_as_read(message_id="wamid.FROM_ALLOWED")).success
    media = await wa.upload_media(media=b"\x89PNG fake image", mime_type="image/png", filename="a.png")
    await wa.get_templates()
    assert media.id == "4490709327384033"
    sent = [(r.method, r.path.rsplit("/", 1)[-1]) for r in fake_graph.requests]
    assert sent == [
        ("POST", "messages"),
        ("POST", "messages"),
        ("POST", "messages"),
        ("POST", "media"),
        ("GET", "message_templates"),
    ]
    text, template, read, upload, _ = fake_graph.requests
    assert text.json()["to"] == ALLOWED and text.json()["text"] == {"body": "hola", "preview_url": False}
    assert template.json()["template"]["name"] == "offer"
    assert read.json() == {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.FROM_ALLOWED"}
    assert b"\x89PNG fake image" in upload.body and upload.headers["Content-Type"].startswith("multipart/form-data")


async def test_an_upload_with_a_batch_part_never_completes(
    session: httpx.AsyncClient, blocklist: BlocklistClient, graph_base: str, fake_graph: FakeGraph
) -> None:
    files = {"file": ("a.png", b"\x89PNG" * 100, "image/png")}
    data = {"messaging_product": "whatsapp", "batch": json.dumps([{"method": "POST"}])}
    response = await session.post(f"https://graph.facebook.com/v21.0/{PNID}/media", files=files, data=data)
    assert response.status_code == 400 and "'batch' part" in response.json()["error"]["error_data"]["details"]

    form = aiohttp.FormData(data)
    form.add_field("file", b"\x89PNG" * 100, filename="a.png", content_type="image/png")
    async with aiohttp.ClientSession(middlewares=(graph_client_middleware(blocklist),)) as graph:
        with pytest.raises(GraphSendRefused) as err:
            await graph.post(f"{graph_base}/v21.0/{PNID}/media", data=form)
        assert err.value.status == 400
        form = aiohttp.FormData({"messaging_product": "whatsapp"})
        form.add_field("file", b"\x89PNG" * 100, filename="a.png", content_type="image/png")
        async with graph.post(f"{graph_base}/v21.0/{PNID}/media", data=form) as ok:
            assert ok.status == 200
    [upload] = fake_graph.requests  # only the plain upload reached the fake Graph, whole
    assert upload.body.count(b"\x89PNG") == 100


async def test_gzip_send_is_checked_and_forwarded_as_sent(
    session: httpx.AsyncClient, service: BlocklistService, fake_graph: FakeGraph
) -> None:
    await block(service, BLOCKED)
    headers = {**JSON, "Content-Encoding": "gzip"}
    url = f"https://graph.facebook.com/v21.0/{PNID}/messages"
    refused = await session.post(url, headers=headers, content=gzip.compress(j({**TEXT, "to": BLOCKED})))
    assert refused.json()["error"]["code"] == RECIPIENT_BLOCKED
    body = gzip.compress(j({**TEXT, "to": ALLOWED}))
    assert (await session.post(url, headers=headers, content=body)).status_code == 200
    [sent] = fake_graph.requests
    assert sent.body == body and sent.headers["Content-Encoding"] == "gzip"


async def test_refusals_of_the_classifier_do_not_depend_on_the_blocklist(
    graph_base: str, fake_graph: FakeGraph
) -> None:
    unreachable = BlocklistClient.http(f"http://127.0.0.1:{free_port()}", "any-token-000001")
    url = f"https://graph.facebook.com/v21.0/{PNID}/messages"
    async with unreachable, blocklist_session(unreachable, upstream=graph_base, on_error="allow") as session:
        overridden = await session.post(url, json={**TEXT, "to": BLOCKED, "method": "GET"})
        assert overridden.status_code == 400 and overridden.json()["error"]["code"] == 100
        group = await session.post(url, json={**TEXT, "recipient_type": "group", "to": BLOCKED})
        assert group.status_code == 400
        assert (await session.post(url, json={**TEXT, "to": ALLOWED})).status_code == 200  # on_error: allow
    assert [r.json()["to"] for r in fake_graph.requests] == [ALLOWED]


async def test_join_request_approvals_and_participants_are_checked_on_every_connector(
    session: httpx.AsyncClient, service: BlocklistService, fake_graph: FakeGraph
) -> None:
    await service.record_inbound(
        PNID, [InboundUser(wa_id=BLOCKED), InboundUser(wa_id=ALLOWED)], join_requests=[("JR1", 0), ("JR2", 1)]
    )
    await block(service, BLOCKED)
    url = f"https://graph.facebook.com/v21.0/{GROUP}"
    for edge, body in (
        ("join_requests", {"messaging_product": "whatsapp", "join_requests": ["JR1"]}),
        ("participants", {"messaging_product": "whatsapp", "participants": [{"user": "+" + BLOCKED}]}),
    ):
        response = await session.post(f"{url}/{edge}", json=body)
        assert response.json()["error"]["code"] == RECIPIENT_BLOCKED, edge
    unknown = await session.post(f"{url}/join_requests", json={"messaging_product": "whatsapp", "join_requests": ["X"]})
    assert unknown.status_code == 403 and unknown.json()["error"]["code"] == 10
    assert fake_graph.requests == []
    ok = await session.post(f"{url}/join_requests", json={"messaging_product": "whatsapp", "join_requests": ["JR2"]})
    assert ok.status_code == 200 and len(fake_graph.requests) == 1


class GraphAdapter(BotAdapter):  # type: ignore[misc]  # botbuilder ships no type information
    """A minimal WhatsApp channel adapter: each activity becomes a Graph send, its channel_data the body if given."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base

    async def send_activities(self, context: TurnContext, activities: list[Activity]) -> list[ResourceResponse]:
        out = []
        async with aiohttp.ClientSession() as graph:
            for activity in activities:
                body = activity.channel_data or {**TEXT, "to": activity.recipient.id, "text": {"body": activity.text}}
                async with graph.post(f"{self.base}/v21.0/{PNID}/messages", json=body) as response:
                    out.append(ResourceResponse(id=str(response.status)))
        return out

    async def update_activity(self, context: TurnContext, activity: Activity) -> None:
        raise NotImplementedError

    async def delete_activity(self, context: TurnContext, reference: ConversationReference) -> None:
        raise NotImplementedError


async def test_botframework_channel_data_is_classified(
    blocklist: BlocklistClient, service: BlocklistService, graph_base: str, fake_graph: FakeGraph
) -> None:
    await two_wrote_one_blocked(service)
    adapter = GraphAdapter(graph_base)
    adapter.use(BlocklistMiddleware(blocklist, phone_number_id=PNID))
    reference = whatsapp_conversation(ALLOWED)
    seen: dict[str, Any] = {}

    async def callback(context: TurnContext) -> None:
        refused_payloads = (
            {**TEXT, "to": BLOCKED},  # the channel data names another, blocked, recipient
            {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.FROM_BLOCKED"},
            {**TEXT, "to": ALLOWED, "batch": "[]"},
            {**TEXT, "recipient_type": "group", "to": "+" + BLOCKED},
        )
        for payload in refused_payloads:
            await context.send_activity(Activity(type=ActivityTypes.message, channel_data=payload))
        read = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.FROM_ALLOWED"}
        await context.send_activity(Activity(type=ActivityTypes.message, channel_data=read))
        await context.send_activity(MessageFactory.text("plain reply"))
        seen["refused"] = len(context.turn_state.get(REFUSED_KEY, []))
        seen["codes"] = [body["error"]["code"] for _, body in context.turn_state.get(REFUSALS_KEY, [])]

    await adapter.continue_conversation(reference, callback, bot_id=PNID)
    assert seen == {"refused": 4, "codes": [RECIPIENT_BLOCKED, RECIPIENT_BLOCKED, 100, 100]}
    assert [r.json() for r in fake_graph.requests] == [
        {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.FROM_ALLOWED"},
        {**TEXT, "to": ALLOWED, "text": {"body": "plain reply"}},
    ]


# --- the gateway's request grammar (tests/test_gateway_grammar.py), through the proxy and through the transport ---

PARITY = exhaustive(600)


@pytest.fixture
async def grammar_transport(
    client: TestClient[Any, Any], config: Config, fake_graph: FakeGraph, graph_base: str
) -> AsyncIterator[tuple[TestClient[Any, Any], httpx.AsyncClient]]:
    await grammar._prepare(client)
    async with (
        BlocklistClient.direct(config) as direct,
        blocklist_session(direct, upstream=graph_base) as transport,
    ):
        yield client, transport


@PARITY
@given(built=grammar.requests())
async def test_the_transport_refuses_whatever_the_proxy_refuses(
    grammar_transport: tuple[TestClient[Any, Any], httpx.AsyncClient], fake_graph: FakeGraph, built: grammar.Built
) -> None:
    proxy, transport = grammar_transport
    before = len(fake_graph.requests)
    proxy_status = await grammar.exchange(proxy, built)
    event(f"proxy {proxy_status}, clean {built.clean}")
    through_proxy = len(fake_graph.requests) - before
    request = transport.build_request(
        built.method, "https://graph.facebook.com", headers=built.headers, content=built.body
    )
    request.url = request.url.copy_with(raw_path=built.target.encode("latin-1"))
    response = await transport.send(request)
    reached = fake_graph.requests[before + through_proxy :]
    for seen in reached:
        for world in grammar.WORLDS:
            why = grammar.reaches(world, seen.method, seen.raw_path, seen.headers, seen.body)
            assert not why, (why, built)
    if proxy_status != 200:  # refused by the proxy: refused by the transport, with the same status
        assert reached == [] and response.status_code == proxy_status, (proxy_status, response.text, built)
    if built.clean:
        assert response.status_code == 200, (response.text, built)
        [seen] = reached
        assert (seen.raw_path, seen.body) == (built.target, built.body)
