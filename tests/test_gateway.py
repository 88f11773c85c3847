"""The outbound gateway: pass-through, enforcement, streaming, upstream failures, request-target safety."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import resource
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from wa_blocklist.proxy.app import create_app, server_options
from wa_blocklist.proxy.appkeys import METRICS, SERVICE
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService, InboundUser
from wa_blocklist.proxy.config import Config
from wa_blocklist.proxy.graph.errors import RECIPIENT_BLOCKED

from fakes import FakeGraph
from support import PNID, PNID_BR, RedisServer, auth, free_port, stand_in_graph, wrote_recently

TOKEN = {"Authorization": "Bearer EAAG-contact-center-token"}
BLOCKED = "573001234567"
ALLOWED = "573009876543"
CLI = Actor("test", "cli")


def text_message(to: str, **extra: Any) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": "hola"}, **extra}


async def block(service: BlocklistService, pnid: str, number: str, *, bsuid: str = "") -> None:
    await wrote_recently(service, pnid, number, bsuid=bsuid)
    await service.block(pnid, number, actor=CLI, reason="abuse")


def assert_blocked(body: dict[str, Any]) -> None:
    error = body["error"]
    assert error["code"] == RECIPIENT_BLOCKED
    assert error["type"] == "OAuthException"
    assert error["message"] == "(#139900) Recipient is blocked on this connector"
    assert "is blocked on connector" in error["error_data"]["details"]
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert error["fbtrace_id"]


# --- pass-through ---------------------------------------------------------------------------------------------


async def test_pass_through_keeps_method_path_query_headers_and_answer(client, fake_graph: FakeGraph):
    fake_graph.respond("GET", r"/v21.0/1234567890/message_templates$", 403, {"error": {"code": 200, "message": "no"}})
    resp = await client.get(
        "/v21.0/1234567890/message_templates?fields=name,status&limit=5&access_token=x%2By",
        headers={**TOKEN, "X-Custom": "kept", "Connection": "keep-alive, X-Hop", "X-Hop": "dropped"},
    )
    assert resp.status == 403
    assert await resp.json() == {"error": {"code": 200, "message": "no"}}
    [seen] = fake_graph.requests
    assert (seen.method, seen.path) == ("GET", "/v21.0/1234567890/message_templates")
    assert seen.query == "fields=name,status&limit=5&access_token=x%2By"
    assert seen.headers["Authorization"] == TOKEN["Authorization"]
    assert seen.headers["X-Custom"] == "kept"
    assert "X-Hop" not in seen.headers
    assert seen.headers["Host"] == f"127.0.0.1:{fake_graph.server.port}"


@pytest.mark.parametrize(("method", "path"), [("POST", "register"), ("DELETE", "subscribed_apps")])
async def test_allowed_surfaces_pass_through_unversioned_too(client, fake_graph: FakeGraph, method: str, path: str):
    body = b'{"pin":"123456"}'
    resp = await client.request(method, f"/{PNID}/{path}", data=body, headers=TOKEN)
    assert resp.status == 200
    [seen] = fake_graph.requests
    assert (seen.method, seen.path, seen.body) == (method, f"/{PNID}/{path}", body)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "OPTIONS"])
async def test_methods_meta_does_not_serve_are_refused(client, fake_graph: FakeGraph, method: str):
    resp = await client.request(method, f"/{PNID}/register", data=b'{"pin":"123456"}', headers=TOKEN)
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == 100
    assert fake_graph.requests == []


async def test_host_header_does_not_choose_the_upstream(client, fake_graph: FakeGraph):
    resp = await client.get("/v21.0/me", headers={**TOKEN, "Host": "evil.example"})
    assert resp.status == 200
    assert fake_graph.paths() == ["/v21.0/me"]
    assert fake_graph.requests[0].headers["Host"] != "evil.example"


@pytest.mark.parametrize(
    "path",
    ["/v21.0/../admin/api/connectors", "/v21.0/%2e%2e/x", "/v21.0/%2E/me", "//evil.example/v21.0/me", "/a\\b"],
)
async def test_path_tricks_are_refused(client, fake_graph: FakeGraph, path: str):
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert json.loads(body)["error"]["code"] == 100
    assert fake_graph.requests == []


async def test_absolute_form_target_is_refused(client, fake_graph: FakeGraph):
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"GET http://evil.example/v21.0/me HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
    await writer.drain()
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert raw.startswith(b"HTTP/1.1 400"), raw[:200]
    assert fake_graph.requests == []


@pytest.mark.parametrize(
    ("method", "path"), [("PUT", "/webhooks/whatsapp"), ("GET", "/webhooks/whatsapp/x"), ("POST", "/webhooks")]
)
async def test_our_own_paths_never_go_to_meta(client, fake_graph: FakeGraph, method: str, path: str):
    resp = await client.request(method, f"{path}?hub.verify_token=secret")
    assert resp.status in (404, 405)
    assert fake_graph.requests == []


# --- enforcement ----------------------------------------------------------------------------------------------


async def test_allowed_send_arrives_byte_identical(client, service, fake_graph: FakeGraph):
    await block(service, PNID, BLOCKED)
    body = json.dumps(text_message("+57 300 987 6543"), indent=1).encode()
    resp = await client.post(
        f"/v21.0/{PNID}/messages", data=body, headers={**TOKEN, "Content-Type": "application/json"}
    )
    assert resp.status == 200
    assert (await resp.json())["messages"] == [{"id": "wamid.FAKE"}]
    [seen] = fake_graph.requests
    assert seen.body == body
    assert seen.headers["Authorization"] == TOKEN["Authorization"]
    assert seen.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    "to", [BLOCKED, "+57 300 123 4567", "+57 (300) 123-4567", "57-300-123-4567", "+573001234567", 573001234567]
)
@pytest.mark.parametrize("versioned", [True, False])
async def test_every_written_form_of_a_blocked_number_is_refused(client, service, fake_graph, to, versioned):
    await block(service, PNID, "+57 300 123 4567")
    path = f"/v21.0/{PNID}/messages" if versioned else f"/{PNID}/messages"
    resp = await client.post(path, json=text_message(to), headers=TOKEN)
    assert resp.status == 400
    assert_blocked(await resp.json())
    assert fake_graph.requests == []


@pytest.mark.parametrize(
    ("blocked", "sent"),
    [
        ("+55 11 98765-4321", "551187654321"),  # Brazil: wa_id without the ninth digit
        ("5511987654321", "+55 11 98765 4321"),
        ("+52 55 1234 5678", "5215512345678"),  # Mexico: 521... vs 52...
        ("+54 9 11 2345-6789", "541123456789"),  # Argentina: 549... vs 54...
        ("+54 11 2345-6789", "5491123456789"),
    ],
)
async def test_country_variants_of_a_blocked_number_are_refused(client, service, fake_graph, blocked, sent):
    await wrote_recently(service, PNID_BR, "".join(c for c in blocked if c.isdigit()))
    await service.block(PNID_BR, blocked, actor=CLI)
    resp = await client.post(f"/v21.0/{PNID_BR}/messages", json=text_message(sent), headers=TOKEN)
    assert resp.status == 400
    assert_blocked(await resp.json())
    assert fake_graph.requests == []


async def test_bsuid_of_a_blocked_number_is_refused_and_the_reverse(client, service, fake_graph):
    await service.record_inbound(PNID, [InboundUser(wa_id=BLOCKED, bsuid="CO.0123456789ABCDEF")])
    await service.block(PNID, BLOCKED, actor=CLI)
    resp = await client.post(
        f"/{PNID}/messages", json={"messaging_product": "whatsapp", "recipient": "CO.0123456789ABCDEF"}, headers=TOKEN
    )
    assert resp.status == 400
    assert_blocked(await resp.json())

    await service.record_inbound(PNID, [InboundUser(wa_id=ALLOWED, bsuid="CO.FEDCBA9876543210")])
    await service.block(PNID, "CO.FEDCBA9876543210", actor=CLI)
    resp = await client.post(f"/{PNID}/messages", json=text_message("+57 300 987 6543"), headers=TOKEN)
    assert resp.status == 400
    # Both fields present: ``to`` wins at Meta, but a blocked ``recipient`` is refused all the same.
    resp = await client.post(f"/{PNID}/messages", json=text_message("573005550000", recipient="CO.0123456789ABCDEF"))
    assert resp.status == 400
    assert fake_graph.requests == []


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        (f"/v21.0/{PNID}/marketing_messages", text_message(BLOCKED)),
        (f"/v21.0/{PNID}/calls", {"messaging_product": "whatsapp", "to": BLOCKED, "action": "connect"}),
        (f"/v21.0/{PNID}/MESSAGES/", text_message(BLOCKED)),
    ],
)
async def test_marketing_messages_calls_and_odd_spellings_are_enforced(client, service, fake_graph, path, payload):
    await block(service, PNID, BLOCKED)
    resp = await client.post(path, json=payload, headers=TOKEN)
    assert resp.status == 400
    assert_blocked(await resp.json())
    assert fake_graph.requests == []


async def test_recipient_in_query_form_or_multipart_is_enforced(client, service, fake_graph):
    await block(service, PNID, BLOCKED)
    path = f"/v21.0/{PNID}/messages"
    resp = await client.post(f"{path}?to=%2B{BLOCKED}&type=text", data=b"", headers=TOKEN)
    assert resp.status == 400
    resp = await client.post(path, data={"messaging_product": "whatsapp", "to": BLOCKED, "type": "text"})
    assert resp.status == 400
    resp = await client.post(  # curl -d '{json}' sends JSON labelled as a form
        path, data=json.dumps(text_message(BLOCKED)), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status == 400
    form = __import__("aiohttp").FormData()
    form.add_field("messaging_product", "whatsapp")
    form.add_field("to", f"+{BLOCKED}")
    form._is_multipart = True
    resp = await client.post(path, data=form)
    assert resp.status == 400
    assert_blocked(await resp.json())
    assert fake_graph.requests == []


async def test_method_override_odd_versions_and_batches_cannot_bypass(client, service, fake_graph):
    await block(service, PNID, BLOCKED)
    resp = await client.get(f"/v21.0/{PNID}/messages?method=post&to={BLOCKED}&type=text", headers=TOKEN)
    assert resp.status == 400
    assert "method overrides" in (await resp.json())["error"]["error_data"]["details"]
    resp = await client.post(f"/V21.0/{PNID}/messages", json=text_message(BLOCKED), headers=TOKEN)
    assert resp.status == 400
    assert_blocked(await resp.json())
    batch = [{"method": "POST", "relative_url": f"v21.0/{PNID}/messages", "body": f"to={BLOCKED}&type=text"}]
    for path in ("/", "/v21.0", "/v21.0/"):
        resp = await client.post(path, data={"batch": json.dumps(batch)}, headers=TOKEN)
        assert resp.status == 400
        assert "batch" in (await resp.json())["error"]["error_data"]["details"]
    assert fake_graph.requests == []


async def test_sends_that_reach_nobody_blocked_pass(client, service, fake_graph):
    await block(service, PNID, BLOCKED)
    await service.record_inbound(PNID, [InboundUser(wa_id=ALLOWED)], messages=[("wamid.X", 0)])
    receipts = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X"}
    reject = {"messaging_product": "whatsapp", "call_id": "wacid.X", "action": "reject"}
    group = {"messaging_product": "whatsapp", "recipient_type": "group", "to": "Y2FwaV9ncm91cDox", "type": "text"}
    for path, payload in [
        ("messages", receipts),
        ("calls", reject),
        ("messages", group),
        ("messages", text_message(ALLOWED)),
    ]:
        resp = await client.post(f"/v21.0/{PNID}/{path}", json=payload, headers=TOKEN)
        assert resp.status == 200, payload
    assert len(fake_graph.requests) == 4


async def test_group_participant_additions_naming_a_blocked_user_are_refused(client, service, fake_graph):
    await block(service, PNID, BLOCKED)
    path = "/v21.0/Y2FwaV9ncm91cDoxMjM0NTY/participants"
    payload = {"messaging_product": "whatsapp", "participants": [{"user": ALLOWED}, {"user": "+57 300 123 4567"}]}
    resp = await client.post(path, json=payload, headers=TOKEN)
    assert resp.status == 400
    assert_blocked(await resp.json())
    assert fake_graph.requests == []
    payload["participants"] = [{"user": ALLOWED}]
    assert (await client.post(path, json=payload, headers=TOKEN)).status == 200
    assert (await client.delete(path, json={"participants": [{"user": BLOCKED}]}, headers=TOKEN)).status == 200
    assert len(fake_graph.requests) == 2


async def test_encrypted_messages_are_refused_unless_allowed(aiohttp_client, make_config, clock, fake_graph):
    client = await aiohttp_client(create_app(make_config(), clock=clock))
    resp = await client.post(f"/v21.0/{PNID}/messages_encrypted", data=b"\x00opaque", headers=TOKEN)
    assert resp.status == 403
    body = await resp.json()
    assert body["error"]["code"] == 10
    assert "allow_encrypted_messages" in body["error"]["error_data"]["details"]
    assert fake_graph.requests == []

    def allow(data: dict[str, Any]) -> None:
        data["connectors"][0]["allow_encrypted_messages"] = True

    client = await aiohttp_client(create_app(make_config(allow), clock=clock))
    resp = await client.post(f"/v21.0/{PNID}/messages_encrypted", data=b"\x00opaque", headers=TOKEN)
    assert resp.status == 200
    assert fake_graph.requests[0].body == b"\x00opaque"
    # A body that can carry parameters is still read: no batch or override, and a readable to is checked.
    await block(app_service(client), PNID, BLOCKED)
    resp = await client.post(f"/v21.0/{PNID}/messages_encrypted", json={"batch": "[]"}, headers=TOKEN)
    assert resp.status == 400
    resp = await client.post(f"/v21.0/{PNID}/messages_encrypted", json={"to": BLOCKED, "payload": "x"}, headers=TOKEN)
    assert_blocked(await resp.json())
    assert len(fake_graph.requests) == 1


def app_service(client: TestClient[Any, Any]) -> BlocklistService:
    return client.app[SERVICE]


async def test_unknown_connectors_are_refused_unless_passed(aiohttp_client, make_config, clock, fake_graph):
    # The default is refuse (issue 13): an unknown phone number ID is never sent to unchecked.
    client = await aiohttp_client(create_app(make_config(), clock=clock))
    resp = await client.post("/v21.0/999999999/messages", json=text_message(ALLOWED))
    assert resp.status == 403
    assert "not a connector" in (await resp.json())["error"]["error_data"]["details"]
    # Other objects with numeric IDs (media, templates) still pass.
    assert (await client.get("/v21.0/999999999", headers=TOKEN)).status == 200
    assert len(fake_graph.requests) == 1

    def passes(data: dict[str, Any]) -> None:
        data["gateway"] = {"unknown_connectors": "pass"}

    client = await aiohttp_client(create_app(make_config(passes), clock=clock))
    assert (await client.post("/v21.0/999999999/messages", json=text_message(BLOCKED))).status == 200
    assert len(fake_graph.requests) == 2


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (b'{"to": "5730', "application/json", "not valid JSON"),
        (b'["573001234567"]', "application/json", "JSON object"),
        (b'{"to": "573001234567", "to": "573009876543"}', "application/json", "twice"),
        (b'{"to": "call me maybe"}', "application/json", "to:"),
        (b'{"to": ["573001234567"]}', "application/json", "to must be"),
        (b"\xff\xfe\x00garbage", "application/octet-stream", "byte order mark"),
        (b"\x01\x02garbage", "application/octet-stream", "parameter name"),
    ],
)
async def test_unreadable_bodies_are_refused_not_forwarded(client, fake_graph, body, content_type, says):
    resp = await client.post(f"/v21.0/{PNID}/messages", data=body, headers={"Content-Type": content_type})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == 100
    assert says in error["error_data"]["details"]
    assert fake_graph.requests == []


async def test_oversized_inspected_body_is_413(client, fake_graph):
    payload = json.dumps(text_message(ALLOWED, padding="x" * (1024 * 1024))).encode()
    resp = await client.post(f"/v21.0/{PNID}/messages", data=io.BytesIO(payload))
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == 100
    assert fake_graph.requests == []


# --- store failures -------------------------------------------------------------------------------------------


@pytest.fixture
async def stopped_store_client(tmp_path, aiohttp_client, make_config, clock):
    """A proxy whose own Redis is stopped after start-up; ``on_store_error`` of connector 0 set per test."""

    async def start(policy: str) -> TestClient[Any, Any]:
        server = RedisServer(tmp_path / policy)
        server.start()
        servers.append(server)

        def changes(data: dict[str, Any]) -> None:
            data["store"]["redis_url"] = server.url
            data["store"]["timeout_seconds"] = 0.5
            data["connectors"][0]["on_store_error"] = policy

        client = await aiohttp_client(create_app(make_config(changes), clock=clock))
        server.stop()
        return client

    servers: list[RedisServer] = []
    yield start
    for server in servers:
        server.stop()


async def test_store_down_denies_by_default(stopped_store_client, fake_graph):
    client = await stopped_store_client("deny")
    resp = await client.post(f"/v21.0/{PNID}/messages", json=text_message(ALLOWED))
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert (error["code"], error["is_transient"]) == (131016, True)
    assert fake_graph.requests == []


async def test_store_down_passes_when_allowed(stopped_store_client, fake_graph):
    client = await stopped_store_client("allow")
    resp = await client.post(f"/v21.0/{PNID}/messages", json=text_message(ALLOWED))
    assert resp.status == 200
    assert len(fake_graph.requests) == 1


# --- upstream failures ----------------------------------------------------------------------------------------


async def test_upstream_down_is_502(aiohttp_client, make_config, clock):
    def down(data: dict[str, Any]) -> None:
        data["graph"]["base_url"] = f"http://127.0.0.1:{free_port()}"

    client = await aiohttp_client(create_app(make_config(down), clock=clock))
    for resp in [
        await client.get("/v21.0/me"),
        await client.post(f"/v21.0/{PNID}/messages", json=text_message(ALLOWED)),
    ]:
        assert resp.status == 502
        error = (await resp.json())["error"]
        assert (error["code"], error["is_transient"]) == (131016, True)


async def test_slow_upstream_is_504(aiohttp_client, make_config, clock, fake_graph):
    def quick(data: dict[str, Any]) -> None:
        data["graph"]["timeout_seconds"] = 0.2

    fake_graph.delay = 3
    client = await aiohttp_client(create_app(make_config(quick), clock=clock))
    resp = await client.post(f"/v21.0/{PNID}/messages", json=text_message(ALLOWED))
    assert resp.status == 504
    error = (await resp.json())["error"]
    assert (error["code"], error["is_transient"]) == (131016, True)


# --- streaming ------------------------------------------------------------------------------------------------

UPLOAD_BYTES = 20 * 1024 * 1024
PIECE = 256 * 1024


class StreamingUpstream:
    """An upstream that reads uploads piece by piece, so a test can see bytes arrive before the client is done."""

    def __init__(self) -> None:
        self.first_megabyte = asyncio.Event()
        self.received = 0
        self.content_type = ""
        self.download = bytes(range(256)) * (5 * 4096)  # 5 MB
        self.media_requested = asyncio.Event()
        self.hold: asyncio.Event | None = None
        """When set by a test, downloads are answered only once it is set."""
        self.finished = asyncio.Event()
        """Set when a handler is done, however it ended (a proxy that hangs on never lets it end)."""

    async def upload(self, request: web.Request) -> web.Response:
        try:
            self.content_type = request.headers["Content-Type"]
            async for chunk in request.content.iter_any():
                self.received += len(chunk)
                if self.received >= 1024 * 1024:
                    self.first_megabyte.set()
            return web.json_response({"id": "4490709327384033"})
        finally:
            self.finished.set()

    async def media(self, request: web.Request) -> web.StreamResponse:
        try:
            self.media_requested.set()
            if self.hold is not None:
                await self.hold.wait()
            response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
            response.content_length = len(self.download)
            await response.prepare(request)
            for i in range(0, len(self.download), PIECE):
                await response.write(self.download[i : i + PIECE])
            await response.write_eof()
            return response
        finally:
            self.finished.set()


@pytest.fixture
async def streaming_config(aiohttp_server: Any, make_config: Any) -> tuple[StreamingUpstream, Config]:
    """A streaming upstream, and a config whose Graph API is that upstream."""
    upstream = StreamingUpstream()
    app = web.Application()
    app.router.add_post("/v21.0/{pnid}/media", upstream.upload)
    app.router.add_get("/v21.0/{id:[0-9]+}", upstream.media)
    return upstream, make_config(await stand_in_graph(aiohttp_server, app))


@pytest.fixture
async def streaming(
    streaming_config: tuple[StreamingUpstream, Config], aiohttp_client: Any, clock: Any
) -> tuple[StreamingUpstream, TestClient[Any, Any]]:
    upstream, config = streaming_config
    return upstream, await aiohttp_client(create_app(config, clock=clock))


async def test_20mb_upload_streams_through_with_bounded_memory(streaming):
    upstream, client = streaming
    boundary = "gatewayboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="messaging_product"\r\n\r\nwhatsapp\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    piece = b"\xab" * PIECE
    total = len(head) + UPLOAD_BYTES + len(tail)

    async def body() -> AsyncIterator[bytes]:
        yield head
        for i in range(UPLOAD_BYTES // PIECE):
            if i == 8:  # 2 MB sent: the upstream must already hold the first megabyte, or the proxy is buffering
                await asyncio.wait_for(upstream.first_megabyte.wait(), 20)
            yield piece
        yield tail

    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    resp = await client.post(
        f"/v21.0/{PNID}/media",
        data=body(),
        headers={**TOKEN, "Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(total)},
    )
    growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert resp.status == 200
    assert await resp.json() == {"id": "4490709327384033"}
    assert upstream.received == total
    assert upstream.content_type == f"multipart/form-data; boundary={boundary}"
    assert growth_kb < 16 * 1024, f"peak RSS grew by {growth_kb} kB for a 20 MB upload"


async def test_large_download_streams_back_unchanged(streaming):
    upstream, client = streaming
    resp = await client.get("/v21.0/1234567890123", headers=TOKEN)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/jpeg"
    assert resp.headers["Content-Length"] == str(len(upstream.download))
    assert await resp.read() == upstream.download


async def test_enforcement_off_is_a_pure_pass_through(
    aiohttp_client: Any, make_config: Any, clock: Any, fake_graph: FakeGraph
) -> None:
    def off(data: dict[str, Any]) -> None:
        data["gateway"] = {"enforce": False}

    app = create_app(make_config(off), clock=clock)
    client = await aiohttp_client(app)
    await wrote_recently(app[SERVICE], PNID, "573001234567")
    blocked = await client.post(f"/admin/api/connectors/{PNID}/blocks", json={"number": "573001234567"}, headers=auth())
    assert blocked.status == 201
    body = b'{"messaging_product":"whatsapp","to":"573001234567","type":"text","text":{"body":"hi"}}'
    resp = await client.post(f"/v21.0/{PNID}/messages", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 200
    assert [r.body for r in fake_graph.requests] == [body]


# --- answers that break off, callers that hang up -----------------------------------------------------------------


class BrokenUpstream:
    """A real TCP server that answers with a full set of headers, then only part of the declared body, then hangs up:
    a Graph API connection dropped mid-answer."""

    def __init__(self, declared: int, sent: int) -> None:
        self.declared = declared
        self.sent = sent
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {self.declared}\r\n\r\n".encode()
            + b"x" * self.sent
        )
        await writer.drain()
        writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.parametrize("declared", [200, 1024 * 1024])
async def test_an_answer_that_breaks_off_is_never_passed_on_as_complete(
    aiohttp_client: Any, make_config: Any, clock: Any, declared: int
) -> None:
    upstream = BrokenUpstream(declared=declared, sent=50)
    base_url = await upstream.start()

    def point(data: dict[str, Any]) -> None:
        data["graph"]["base_url"] = base_url

    try:
        client = await aiohttp_client(create_app(make_config(point), clock=clock))
        resp = await client.post(f"/v21.0/{PNID}/messages", json=text_message(ALLOWED), headers=TOKEN)
        if declared <= 64 * 1024:
            # A small answer is read whole before anything is sent back, so the caller gets a proper error.
            assert resp.status == 502
            error = (await resp.json())["error"]
            assert (error["code"], error["is_transient"]) == (131016, True)
            assert "broke off" in error["error_data"]["details"]
        elif resp.status == 502:
            # A large one broken off within the client's first read: nothing was sent back yet, a proper error.
            assert "broke off" in (await resp.json())["error"]["error_data"]["details"]
        else:
            # A large one is streamed: the status is gone already, so the connection is cut short.
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    finally:
        await upstream.close()


class LogWatch(logging.Handler):
    """Sets an event when a record containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if self.text in record.getMessage():
            self.seen.set()


@pytest.fixture
async def served_streaming(
    streaming_config: tuple[StreamingUpstream, Config], clock: Any
) -> AsyncIterator[tuple[StreamingUpstream, str, web.Application]]:
    """The proxy served as ``wa-blocklist serve`` serves it (aiohttp's test server cancels handlers when the caller
    hangs up; the real server lets them run on), in front of a streaming upstream."""
    upstream, config = streaming_config
    app = create_app(config, clock=clock)
    runner = web.AppRunner(app, **server_options(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield upstream, f"http://{host}:{port}", app
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("phase", ["upload", "download"])
async def test_a_caller_hanging_up_is_logged_as_such_not_as_a_graph_failure(
    served_streaming: Any, phase: str, caplog: pytest.LogCaptureFixture
) -> None:
    upstream, url, app = served_streaming
    caplog.set_level(logging.INFO, logger="wa_blocklist.proxy.outbound.gateway")
    watch = LogWatch("caller went away")
    gateway_log = logging.getLogger("wa_blocklist.proxy.outbound.gateway")
    gateway_log.addHandler(watch)
    try:
        _reader, writer = await asyncio.open_connection(*url.removeprefix("http://").split(":"))
        if phase == "upload":
            writer.write(
                f"POST /v21.0/{PNID}/media HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {UPLOAD_BYTES}\r\n\r\n".encode()
                + b"\xab" * (2 * 1024 * 1024)
            )
            await writer.drain()
            await asyncio.wait_for(upstream.first_megabyte.wait(), 20)
        else:
            upstream.hold = asyncio.Event()
            writer.write(b"GET /v21.0/1234567890123 HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await asyncio.wait_for(upstream.media_requested.wait(), 20)
        writer.transport.abort()  # hang up, as a crashed agent desktop would
        if upstream.hold is not None:
            upstream.hold.set()  # the answer comes after the caller has gone
        await asyncio.wait_for(watch.seen.wait(), 20)
        await asyncio.wait_for(upstream.finished.wait(), 20)  # the proxy let go of the upstream request
    finally:
        gateway_log.removeHandler(watch)
    assert not [m for m in watch.messages if "Graph API" in m], watch.messages
    assert app[METRICS].registry.get_sample_value("wabl_upstream_errors_total", {"upstream": "graph"}) == 0


async def test_an_upload_that_stalls_is_given_up_with_a_408(
    streaming_config: tuple[StreamingUpstream, Config], aiohttp_client: Any, clock: Any
) -> None:
    upstream, config = streaming_config
    impatient = dataclasses.replace(config, server=dataclasses.replace(config.server, body_timeout_seconds=0.5))
    app = create_app(impatient, clock=clock)
    client = await aiohttp_client(app)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        f"POST /v21.0/{PNID}/media HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {UPLOAD_BYTES}\r\n\r\n".encode()
        + b"\xab" * (2 * 1024 * 1024)
    )
    await writer.drain()  # then nothing more: the caller stalls with 18 MB to go
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    status_line, *header_lines = head.decode().split("\r\n")
    length = next(int(h.split(":", 1)[1]) for h in header_lines if h.lower().startswith("content-length:"))
    error = json.loads(await reader.readexactly(length))["error"]
    writer.close()
    assert status_line.startswith("HTTP/1.1 408")
    assert "stalled" in error["error_data"]["details"]
    await asyncio.wait_for(upstream.finished.wait(), 20)  # the upstream request was abandoned, not left hanging
    assert 1024 * 1024 <= upstream.received < UPLOAD_BYTES
    assert app[METRICS].registry.get_sample_value("wabl_upstream_errors_total", {"upstream": "graph"}) == 0
