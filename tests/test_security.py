"""Security: roles on every admin route, no HTML reflection or cookies, only the configured upstream, no secret in
any log line, and an audit record for every block and unblock from every face."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from wa_blocklist.plugins.client import BlocklistClient
from wa_blocklist.proxy.app import create_app, server_options
from wa_blocklist.proxy.appkeys import SERVICE
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService
from wa_blocklist.proxy.config import Config, load_config
from wa_blocklist.proxy.store.client import open_store

import payloads as p
from fakes import FakeContactCenter, FakeGraph, sign
from support import (
    ADMIN_TOKEN,
    APP_SECRET,
    APP_SECRET_BR,
    PNID,
    PNID_BR,
    REPO,
    VERIFY_TOKEN,
    VIEWER_TOKEN,
    ConfigFactory,
    FakeClock,
    Proxy,
    auth,
    base_config_data,
    free_port,
    wrote_recently,
)

NUMBER = "573001234567"
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


async def serve(aiohttp_client: Any, config: Config, clock: FakeClock) -> TestClient[Any, Any]:
    """The proxy on a test server with the production server options (``TestServer(app, **kw)`` ignores kw)."""
    server = TestServer(create_app(config, clock=clock))
    await server.start_server(**server_options(config))
    client: TestClient[Any, Any] = await aiohttp_client(server)
    return client


# --- roles on every admin route, driven by the OpenAPI document ---------------------------------------------------


def admin_operations(document: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """``(method, path, public)`` for every operation of the document, path parameters filled in."""
    found = []
    for template, operations in document["paths"].items():
        path = "/admin/api" + template.replace("{pnid}", PNID).replace("{number}", NUMBER)
        for method, operation in operations.items():
            if method in ("get", "post", "put", "patch", "delete"):
                public = operation.get("security", document.get("security")) == []
                found.append((method.upper(), path, public))
    return found


async def test_every_admin_route_enforces_tokens_and_roles(
    client: TestClient[Any, Any], service: BlocklistService
) -> None:
    document = await (await client.get("/admin/api/openapi.json")).json()
    operations = admin_operations(document)
    assert len(operations) >= 8
    await wrote_recently(service, PNID, NUMBER)
    await service.block(PNID, NUMBER, actor=Actor("supervisor", "test"))
    before = [e.to_json() for e in (await service.list_blocks(PNID, limit=100))[0]]

    for method, path, public in operations:
        if public:
            continue
        for headers in ({}, auth("not-a-token"), {"Authorization": ADMIN_TOKEN}, {"Cookie": f"token={ADMIN_TOKEN}"}):
            resp = await client.request(method, path, headers=headers)
            assert resp.status == 401, (method, path, headers)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await resp.json())["error"]["code"] == "unauthorized"
        resp = await client.request(method, path, headers=auth(VIEWER_TOKEN), json={"number": NUMBER})
        if method == "GET":
            assert resp.status not in (401, 403), (method, path)
        else:
            assert resp.status == 403, (method, path)
            assert (await resp.json())["error"]["code"] == "forbidden"
    # no viewer changed anything
    assert [e.to_json() for e in (await service.list_blocks(PNID, limit=100))[0]] == before

    for method, path, _ in operations:
        if method == "GET":
            resp = await client.get(path, headers=auth(ADMIN_TOKEN))
            assert resp.status not in (401, 403), (method, path)


# --- no HTML reflection, no cookies --------------------------------------------------------------------------------


async def test_no_response_reflects_user_text_as_html_and_none_sets_a_cookie(
    client: TestClient[Any, Any], service: BlocklistService, contact_center: FakeContactCenter
) -> None:
    await wrote_recently(service, PNID, NUMBER)
    body = p.encode(p.envelope(p.messages_change(PNID, [p.text(NUMBER, body=XSS)])))
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", f"/admin/api/connectors/{PNID}/blocks", {"json": {"number": NUMBER, "reason": XSS}}),
        ("POST", f"/admin/api/connectors/{PNID}/blocks", {"json": {"number": XSS}}),
        ("POST", f"/admin/api/connectors/{PNID}/blocks", {"json": {XSS: XSS}}),
        ("POST", f"/admin/api/connectors/{PNID}/blocks", {"data": XSS}),
        ("GET", f"/admin/api/connectors/{PNID}/blocks", {"params": {"q": XSS, "limit": XSS}}),
        ("GET", f"/admin/api/connectors/{PNID}/blocks", {"params": {"cursor": XSS}}),
        ("GET", f"/admin/api/connectors/{PNID}/blocks/{XSS}", {}),
        ("GET", f"/admin/api/connectors/{PNID}/check/{XSS}", {}),
        ("DELETE", f"/admin/api/connectors/{XSS}/blocks/{XSS}", {"params": {"reason": XSS}}),
        ("GET", f"/admin/api/{XSS}", {}),
        ("GET", f"/admin/{XSS}", {}),
        ("GET", "/admin/", {"params": {"q": XSS}}),
        ("GET", f"/admin/static/{XSS}", {}),
        ("POST", f"/v21.0/{PNID}/messages", {"json": {"to": XSS, "type": "text"}}),
        ("POST", f"/v21.0/{PNID}/messages", {"data": XSS, "headers_extra": {"Content-Type": "application/json"}}),
        ("GET", f"/webhooks/{XSS}", {}),
        (
            "GET",
            "/webhooks/whatsapp",
            {"params": {"hub.mode": "subscribe", "hub.verify_token": XSS, "hub.challenge": XSS}},
        ),
        (
            "POST",
            "/webhooks/whatsapp",
            {"data": body, "headers_extra": {"X-Hub-Signature-256": sign(APP_SECRET, body)}},
        ),
        ("POST", "/webhooks/whatsapp", {"data": XSS, "headers_extra": {"X-Hub-Signature-256": XSS}}),
    ]
    for method, path, options in requests:
        headers = {**auth(), **options.pop("headers_extra", {})}
        resp = await client.request(method, path, headers=headers, **options)
        text = await resp.text()
        assert resp.status < 500, (method, path, text)
        assert "Set-Cookie" not in resp.headers, (method, path)
        if "alert(" in text:  # the user text came back
            # Only JSON (escaped for a browser by the page, which renders it as text: see test_admin_page).
            assert resp.content_type == "application/json", (method, path, resp.content_type)
            assert resp.headers.get("X-Content-Type-Options") == "nosniff", (method, path)
        else:
            assert resp.content_type != "text/html" or XSS not in text
    page = await client.get("/admin/")
    assert page.content_type == "text/html" and "<script>alert" not in await page.text()
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]  # no inline script could ever run


async def test_admin_changes_need_the_bearer_header_so_cross_site_forms_cannot_forge_them(
    client: TestClient[Any, Any], service: BlocklistService
) -> None:
    await wrote_recently(service, PNID, NUMBER)
    # What a hostile page can make a browser send: a simple form post, cookies included, no Authorization header.
    for content_type, data in [
        ("application/x-www-form-urlencoded", f"number={NUMBER}"),
        ("text/plain", json.dumps({"number": NUMBER})),
        (
            "multipart/form-data; boundary=x",
            f'--x\r\nContent-Disposition: form-data; name="number"\r\n\r\n{NUMBER}\r\n--x--',
        ),
    ]:
        resp = await client.post(
            f"/admin/api/connectors/{PNID}/blocks",
            data=data,
            headers={"Content-Type": content_type, "Cookie": f"token={ADMIN_TOKEN}", "Origin": "https://evil.example"},
        )
        assert resp.status == 401
    assert (await service.list_blocks(PNID))[0] == []


# --- only the configured upstream -----------------------------------------------------------------------------------


@pytest.fixture
async def elsewhere() -> Any:
    """A second server the proxy must never reach (what an attacker would name in a path trick)."""
    other = FakeGraph()
    await other.start()
    yield other
    await other.close()


async def raw_request(port: int, request_line: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_line + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_no_request_target_reaches_anything_but_the_configured_upstream(
    client: TestClient[Any, Any], fake_graph: FakeGraph, elsewhere: FakeGraph
) -> None:
    assert elsewhere.server is not None and client.server.port is not None
    there = f"127.0.0.1:{elsewhere.server.port}"
    targets = [
        f"http://{there}/v21.0/me",
        f"//{there}/v21.0/me",
        f"///{there}/v21.0/me",
        f"/@{there}/v21.0/me",
        f"/v21.0/me/../../{there}/x",
        f"/v21.0/%2e%2e/%2e%2e/{there}",
        f"/%2F%2F{there}/v21.0/me",
        f"/\\\\{there}/v21.0/me",
        f"/v21.0/me?next=http://{there}/",
        f"http://{there}:{client.server.port}@{there}/v21.0/me",
        f"{there}/v21.0/me",
    ]
    for target in targets:
        answer = await raw_request(client.server.port, b"GET " + target.encode() + b" HTTP/1.1")
        assert answer.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), target
        assert b" 500 " not in answer.split(b"\r\n", 1)[0], target
    assert elsewhere.requests == []
    for seen in fake_graph.requests:  # what reached the configured upstream has no dot segments left
        assert ".." not in seen.path.split("/"), seen.path


# --- no secret in any log line --------------------------------------------------------------------------------------

CALLER_TOKEN = "EAAG-caller-secret-token-7777"
CONNECTOR_TOKEN = "EAAG-connector-secret-token-8888"
SECRETS = [ADMIN_TOKEN, VIEWER_TOKEN, APP_SECRET, APP_SECRET_BR, VERIFY_TOKEN, CALLER_TOKEN, CONNECTOR_TOKEN]


async def exercise_every_face(session: aiohttp.ClientSession, base: str) -> list[int]:
    """Requests to every face carrying secrets in headers, query strings, bodies; returns the statuses."""
    statuses = []
    bearer = {"Authorization": f"Bearer {CALLER_TOKEN}"}
    body = p.encode(p.envelope(p.messages_change(PNID, [p.text(NUMBER)])))
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/v21.0/me?fields=id&access_token={CALLER_TOKEN}", {}),
        ("GET", f"/v21.0/me?ACCESS_TOKEN={CALLER_TOKEN}&appsecret_proof={APP_SECRET}", {"headers": bearer}),
        ("POST", f"/v21.0/{PNID}/messages?access_token={CALLER_TOKEN}", {"json": {"to": NUMBER, "type": "text"}}),
        ("POST", f"/v21.0/{PNID}/messages", {"data": {"to": "not a number", "access_token": CALLER_TOKEN}}),
        ("POST", f"/v21.0/{PNID}/block_users?access_token={CALLER_TOKEN}",
         {"json": {"messaging_product": "whatsapp", "block_users": [{"user": NUMBER}]}}),
        ("GET", f"/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1", {}),
        ("GET", f"/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}x&hub.challenge=1", {}),
        ("POST", "/webhooks/whatsapp", {"data": body, "headers": {"X-Hub-Signature-256": sign(APP_SECRET, body)}}),
        ("POST", "/webhooks/whatsapp", {"data": body, "headers": {"X-Hub-Signature-256": sign(APP_SECRET_BR, body)}}),
        ("POST", "/webhooks/whatsapp", {"data": body, "headers": {"X-Hub-Signature-256": APP_SECRET}}),
        ("GET", "/admin/api/connectors", {"headers": {"Authorization": f"Bearer {ADMIN_TOKEN}"}}),
        ("GET", "/admin/api/connectors", {"headers": {"Authorization": f"Bearer {ADMIN_TOKEN}x"}}),
        ("POST", f"/admin/api/connectors/{PNID}/blocks",
         {"headers": {"Authorization": f"Bearer {VIEWER_TOKEN}"}, "json": {"number": NUMBER}}),
        ("POST", f"/admin/api/connectors/{PNID}/blocks",
         {"headers": {"Authorization": f"Bearer {ADMIN_TOKEN}"}, "json": {"number": NUMBER, "reason": "abuse"}}),
        ("GET", f"/admin/api/connectors/{PNID}/blocks?access_token={ADMIN_TOKEN}", {}),
        ("GET", f"/v21.0/me?access_token={CALLER_TOKEN}&fields=" + "a" * 9000, {}),  # refused by the HTTP parser
    ]  # fmt: skip
    for method, path, options in calls:
        async with session.request(method, base + path, **options) as resp:
            await resp.read()
            statuses.append(resp.status)
    return statuses


def secret_config(data: dict[str, Any]) -> None:
    data["connectors"][0]["access_token"] = CONNECTOR_TOKEN
    data["connectors"][0]["sync_to_meta"] = True


async def test_no_secret_in_any_log_record_at_debug(
    aiohttp_client: Any,
    make_config: ConfigFactory,
    clock: FakeClock,
    fake_graph: FakeGraph,
    contact_center: FakeContactCenter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("aiohttp.access").setLevel(logging.DEBUG)
    client = await serve(aiohttp_client, make_config(secret_config), clock)
    await wrote_recently(client.app[SERVICE], PNID, NUMBER)
    fake_graph.respond("GET", "/v21.0/me$", 400, {"error": {"message": f"bad token {CALLER_TOKEN}"}})
    async with aiohttp.ClientSession() as session:
        statuses = await exercise_every_face(session, str(client.make_url("")).rstrip("/"))
    assert 500 not in statuses
    await client.close()  # shutdown logs too
    ours = [
        r
        for r in caplog.records
        # Not ours: the fakes' own access lines (aiohttp's default logger, without the proxy's request fields), and
        # the HTTP parser's errors, redacted by the production log handler (see the process test below).
        if not (r.name == "aiohttp.access" and not hasattr(r, "request")) and r.name != "aiohttp.server"
    ]
    logged = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''} {r.__dict__.get('request', '')}" for r in ours
    )
    assert sum(1 for r in ours if r.name == "aiohttp.access") >= 15  # the proxy's access log was captured
    for secret in SECRETS:
        assert secret not in logged, f"{secret} appeared in the logs"


async def test_no_secret_in_the_served_proxys_output(
    tmp_path: Path, redis_url: str, fake_graph: FakeGraph, contact_center: FakeContactCenter
) -> None:
    """``wa-blocklist serve`` as run in production: its whole stderr (access log, warnings, parser errors)."""
    data = base_config_data(redis_url)
    assert fake_graph.server is not None and contact_center.server is not None
    data["graph"]["base_url"] = str(fake_graph.server.make_url("")).rstrip("/")
    for connector in data["connectors"]:
        connector["forward_webhooks_to"] = str(contact_center.server.make_url("/webhooks/whatsapp"))
    secret_config(data)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(data))
    proxy = Proxy(config_path, free_port())
    await asyncio.to_thread(proxy.start)
    assert proxy.process is not None and proxy.process.stderr is not None
    try:
        config = load_config(config_path)
        async with open_store(config.store) as store:
            await wrote_recently(BlocklistService(store, config), PNID, NUMBER)
        async with aiohttp.ClientSession() as session:
            statuses = await exercise_every_face(session, f"http://127.0.0.1:{proxy.port}")
        assert 500 not in statuses
        proxy.process.send_signal(signal.SIGTERM)
        output = (await asyncio.to_thread(proxy.process.communicate, timeout=30))[1].decode()
    finally:
        await asyncio.to_thread(proxy.stop, signal.SIGKILL)
    assert "/admin/api/connectors" in output and "access_token=[redacted]" in output  # access lines, redacted
    assert "refused an unreadable HTTP request" in output  # the parser's error on the over-long line, unquoted
    for secret in SECRETS:
        assert secret not in output, f"{secret} appeared in the proxy's output"


# --- the audit trail: every face leaves its record ------------------------------------------------------------------


async def test_every_face_leaves_an_audit_record_with_its_source(
    client: TestClient[Any, Any],
    service: BlocklistService,
    fake_graph: FakeGraph,
    config: Config,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    numbers = {face: f"5730012340{i:02d}" for i, face in enumerate(["api", "cli", "graph", "direct", "http"])}
    await wrote_recently(service, PNID, *numbers.values())

    resp = await client.post(
        f"/admin/api/connectors/{PNID}/blocks", json={"number": numbers["api"], "reason": "insults"}, headers=auth()
    )
    assert resp.status == 201
    assert (await client.delete(f"/admin/api/connectors/{PNID}/blocks/{numbers['api']}?reason=apologised",
                                headers=auth())).status == 204  # fmt: skip

    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(base_config_data(config.store.redis_url)))
    for command in (
        ["block", numbers["cli"], "--reason", "spam", "--by", "ana"],
        ["unblock", numbers["cli"], "--by", "ana"],
    ):
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "wa_blocklist.proxy.cli", *command, "--connector", PNID,
             "--config", str(config_path)],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

    graph_token = {"Authorization": "Bearer EAAG-contact-center"}
    users = {"messaging_product": "whatsapp", "block_users": [{"user": numbers["graph"]}]}
    answer = {
        "messaging_product": "whatsapp",
        "block_users": {"added_users": [{"input": numbers["graph"], "wa_id": numbers["graph"]}]},
    }
    fake_graph.respond("*", "block_users$", 200, answer)
    assert (await client.post(f"/v21.0/{PNID}/block_users", json=users, headers=graph_token)).status == 200
    assert (await client.delete(f"/v21.0/{PNID}/block_users", json=users, headers=graph_token)).status == 200

    async with BlocklistClient.direct(config, actor="moderation-bot", source="pywa", clock=clock) as bot:
        await bot.block(PNID, numbers["direct"], reason="bot rule")
        await bot.unblock(PNID, numbers["direct"])
    async with BlocklistClient.http(str(client.make_url("")).rstrip("/"), ADMIN_TOKEN) as remote:
        await remote.block(PNID, numbers["http"], reason="over http")
        await remote.unblock(PNID, numbers["http"])

    resp = await client.get(f"/admin/api/connectors/{PNID}/audit", headers=auth(VIEWER_TOKEN))
    records = (await resp.json())["records"]
    seen = {(r["number"], r["action"]): (r["by"], r["source"], r["reason"]) for r in records}
    assert seen == {
        (numbers["api"], "block"): ("supervisor", "admin_api", "insults"),
        (numbers["api"], "unblock"): ("supervisor", "admin_api", "apologised"),
        (numbers["cli"], "block"): ("ana", "cli", "spam"),
        (numbers["cli"], "unblock"): ("ana", "cli", ""),
        (numbers["graph"], "block"): ("graph_api", "block_users_api", ""),
        (numbers["graph"], "unblock"): ("graph_api", "block_users_api", ""),
        (numbers["direct"], "block"): ("moderation-bot", "pywa", "bot rule"),
        (numbers["direct"], "unblock"): ("moderation-bot", "pywa", ""),
        (numbers["http"], "block"): ("supervisor", "admin_api", "over http"),
        (numbers["http"], "unblock"): ("supervisor", "admin_api", ""),
    }
    assert all(r["at"].endswith("Z") and r["at"][:2] == "20" for r in records)
    assert (records[0]["number"], records[0]["action"]) == (numbers["http"], "unblock")  # newest first
    assert (records[-1]["number"], records[-1]["action"]) == (numbers["api"], "block")


# --- unsigned webhooks ----------------------------------------------------------------------------------------------


async def test_an_opted_out_connector_cannot_carry_unsigned_items_for_one_that_requires_signatures(
    aiohttp_client: Any, make_config: ConfigFactory, clock: FakeClock, contact_center: FakeContactCenter
) -> None:
    def opt_out_first(data: dict[str, Any]) -> None:
        data["connectors"][0]["require_signature"] = False

    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_config(opt_out_first), clock=clock))
    mixed = p.encode(
        p.envelope(p.messages_change(PNID, [p.text(NUMBER)]), p.messages_change(PNID_BR, [p.text("5511987650000")]))
    )
    for headers in (
        {},
        {"X-Hub-Signature-256": "sha256=" + "0" * 64},
        {"X-Hub-Signature-256": sign(APP_SECRET, mixed)},
    ):
        resp = await client.post("/webhooks/whatsapp", data=mixed, headers=headers)
        assert resp.status in (401, 403)
    only_required = p.encode(p.envelope(p.messages_change(PNID_BR, [p.text("5511987650000")])))
    assert (await client.post("/webhooks/whatsapp", data=only_required)).status == 401
    assert contact_center.received == []


# --- admin authentication: throttled per address, failures logged without the token -------------------------------


async def test_wrong_tokens_close_the_address_with_exponential_back_off(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wa_blocklist.proxy.admin.auth")
    wrong = {"Authorization": "Bearer wrong-token-guess-0001"}
    statuses = []
    for _ in range(20):  # a burst of guesses, as fast as the client can send them
        async with client.get("/admin/api/session", headers=wrong) as resp:
            statuses.append(resp.status)
            retry_after = resp.headers.get("Retry-After")
    assert statuses[:5] == [401] * 5 and statuses[5] == 401  # five free failures; the sixth closes the address
    assert set(statuses[6:]) == {429}  # every further guess is refused unchecked
    assert retry_after == "1"
    resp = await client.get("/admin/api/session", headers=auth())
    assert resp.status == 429  # even the right token: a closed address learns nothing
    body = await resp.json()
    assert body["error"]["code"] == "too_many_attempts" and int(resp.headers["Retry-After"]) >= 1
    failures = [r for r in caplog.records if r.name == "wa_blocklist.proxy.admin.auth"]
    assert len(failures) == 6 and {r.levelno for r in failures} == {logging.WARNING}
    assert all("127.0.0.1" in r.getMessage() for r in failures)
    assert "closed for 1 s" in failures[-1].getMessage()
    assert not [r for r in caplog.records if "wrong-token-guess" in r.getMessage() or ADMIN_TOKEN in r.getMessage()]


def test_back_off_doubles_reopens_and_forgets() -> None:
    from wa_blocklist.proxy.admin.auth import AuthThrottle, TooManyAttempts

    now = [1000.0]
    throttle = AuthThrottle(free=2, base_seconds=1, max_seconds=8, forget_seconds=60, max_addresses=3,
                            clock=lambda: now[0])  # fmt: skip
    assert [throttle.failed("10.0.0.1") for _ in range(2)] == [0, 0]
    closings = []
    for _ in range(5):
        closings.append(throttle.failed("10.0.0.1"))
        with pytest.raises(TooManyAttempts) as refused:
            throttle.check("10.0.0.1")
        assert refused.value.retry_after == max(1, int(closings[-1]))
        now[0] += closings[-1]  # wait exactly as long as told
        throttle.check("10.0.0.1")  # open again
    assert closings == [1, 2, 4, 8, 8]  # doubling, capped
    throttle.check("10.0.0.2")  # other addresses are not affected
    throttle.succeeded("10.0.0.1")
    assert throttle.failed("10.0.0.1") == 0  # a success starts the count afresh
    for address in ("a", "b", "c", "d"):
        throttle.failed(address)
    assert "10.0.0.1" not in throttle._failures and len(throttle._failures) == 3  # bounded memory
    throttle.failed("d")
    throttle.failed("d")
    now[0] += 61
    throttle.check("d")  # forgotten after an hour without failures


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(client: TestClient[Any, Any]) -> None:
    for i in range(6):  # a client cannot dodge the count by claiming another address on each guess
        headers = {"Authorization": "Bearer wrong-token-guess-0001", "X-Forwarded-For": f"10.1.1.{i}"}
        assert (await client.get("/admin/api/session", headers=headers)).status == 401
    assert (await client.get("/admin/api/session", headers=auth())).status == 429


async def test_metrics_can_be_put_behind_a_token(aiohttp_client: Any, make_config: ConfigFactory) -> None:
    def with_token(data: dict[str, Any]) -> None:
        data["admin"]["metrics_token"] = "metrics-scrape-token-01"

    open_metrics = await aiohttp_client(create_app(make_config()))
    assert (await open_metrics.get("/metrics")).status == 200
    guarded = await aiohttp_client(create_app(make_config(with_token)))
    for headers in ({}, {"Authorization": "Bearer nope"}, auth()):
        resp = await guarded.get("/metrics", headers=headers)
        assert resp.status == 401 and "WWW-Authenticate" in resp.headers
        assert "wabl_" not in await resp.text()
    resp = await guarded.get("/metrics", headers={"Authorization": "Bearer metrics-scrape-token-01"})
    assert resp.status == 200 and "wabl_requests_total" in await resp.text()
    assert (await guarded.get("/healthz")).status == 200  # probes stay open
