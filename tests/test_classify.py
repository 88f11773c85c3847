"""The gateway's one classification (proxy/graph/classify.py): the allow-list table, and every refusal through the
proxy.

Every refusal is sent as raw bytes to a running proxy in front of the fake Graph API, which must receive nothing;
every allow-listed surface is sent the same way and must arrive unchanged.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.base.errors import ConfigError
from wa_blocklist.proxy.blocklist.service import Actor, InboundUser
from wa_blocklist.proxy.config import parse_config
from wa_blocklist.proxy.graph import classify
from wa_blocklist.proxy.graph.classify import (
    GUARDED_EDGES,
    METHODS,
    PartNameScanner,
    Refused,
    Surface,
    builtin_surfaces,
    classify_target,
    compile_surface,
    decode_body,
    read_params,
)

import payloads as p
from fakes import FakeGraph, sign
from support import APP_SECRET, PNID, base_config_data, wrote_recently

TOKEN = "Bearer EAAG-contact-center-token"
BLOCKED = "573001234567"
ALLOWED = "573009876543"
GROUP = "Y2FwaV9ncm91cDoxNzA1NTU1MDEzOToxMjAzNjM0MDQ2OTQyMzM4MjAZD"
SAMPLES = {"{id}": "1234567890123", "{group_id}": GROUP, "{code}": "4O4YGZEG3RIVE1", "{upload}": "upload:MTphdHRhY2g="}
M = f"/v21.0/{PNID}/messages"


def concrete(surface: Surface) -> str:
    return "/".join(SAMPLES.get(segment, segment) for segment in surface.segments)


async def raw(client: TestClient[Any, Any], method: str, target: str, headers: dict[str, str], body: bytes) -> Any:
    """Send exactly these bytes; return (status, parsed JSON body or raw bytes)."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    lines = [f"{method} {target} HTTP/1.1", "Host: graph.facebook.com", "Connection: close", f"Authorization: {TOKEN}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("POST", "PUT", "PATCH", "DELETE"):
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload


# --- the allow-list, table-driven ---------------------------------------------------------------------------------


ALLOWED_CASES = [(s, m) for s in builtin_surfaces() for m in sorted(s.methods)]


@pytest.mark.parametrize(("surface", "method"), ALLOWED_CASES, ids=[f"{m} {s.path}" for s, m in ALLOWED_CASES])
async def test_every_allow_listed_surface_passes_unchanged(client, fake_graph: FakeGraph, surface: Surface, method):
    path = f"/v21.0/{concrete(surface)}"
    target = classify_target(method, path, "fields=id", [])
    assert (target.kind, target.surface) == ("pass", surface)
    body = b'{"messaging_product":"whatsapp"}' if method == "POST" else b""
    headers = {"Content-Type": "application/json"} if body else {}
    status, _ = await raw(client, method, f"{path}?fields=id", headers, body)
    assert status == 200
    [seen] = fake_graph.requests
    assert (seen.method, seen.raw_path, seen.body) == (method, f"{path}?fields=id", body)
    assert seen.headers["Authorization"] == TOKEN


def test_the_allow_list_never_names_a_checked_send_edge_or_an_own_face() -> None:
    for surface in builtin_surfaces():
        assert surface.methods <= METHODS
        assert not set(surface.segments) & (GUARDED_EDGES - {"participants", "join_requests"}), surface
        if set(surface.segments) & {"participants", "join_requests"}:
            assert "POST" not in surface.methods  # letting someone in is checked, never listed
        assert surface.why, f"{surface.path} must say why it cannot reach a user"


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "{id}/message_templates/x"), ("PUT", "{id}/media"), ("POST", "{id}/messages"), ("GET", "v21.0/{id}")],
)
def test_allow_patterns_are_validated(method: str, path: str) -> None:
    with pytest.raises(ValueError):
        compile_surface("x", [method], path if "/x" not in path else path.replace("/x", "/X"))


def test_gateway_allow_extends_the_list_but_never_switches_checks_off(redis_url: str) -> None:
    data = base_config_data(redis_url)
    data["gateway"] = {"allow": [{"method": "GET", "path": "{id}/owned_product_catalogs"}]}
    config = parse_config(data, env={})
    target = classify_target("GET", "/v21.0/123/owned_product_catalogs", "", [], config.gateway.allow)
    assert target.kind == "pass"
    for bad, says in [
        ({"method": "POST", "path": "{id}/messages"}, "checked edge"),
        ({"method": "POST", "path": "{id}/participants"}, "checked edge"),
        ({"method": "GET", "path": "admin/api"}, "own faces"),
        ({"method": "PUT", "path": "{id}/x"}, "methods must be"),
        ({"method": "GET", "path": "{nope}/x"}, "lower-case literal"),
        ({"method": "GET"}, "method and path"),
    ]:
        data["gateway"] = {"allow": [bad]}
        with pytest.raises(ConfigError) as raised:
            parse_config(data, env={})
        assert "gateway.allow[0]" in str(raised.value) and says in str(raised.value)


# --- every refusal, through the proxy ------------------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def send(to: Any = ALLOWED, **extra: Any) -> bytes:
    payload = {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": "hi"}, **extra}
    return json.dumps(payload).encode()


def multipart(*parts: tuple[str, str, str]) -> tuple[dict[str, str], bytes]:
    body = b"".join(
        f'--b0\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n{value}\r\n'.encode()
        for name, value, extra in parts
    )
    return {"Content-Type": "multipart/form-data; boundary=b0"}, body + b"--b0--\r\n"


BATCH = json.dumps([{"method": "POST", "relative_url": f"v21.0/{PNID}/messages", "body": f"to={ALLOWED}"}])

# (case id, method, target, headers, body, status, code, a phrase of the details)
REFUSALS: list[tuple[str, str, str, dict[str, str], bytes, int, int, str]] = [
    ("batch at the root", "POST", "/v21.0/", FORM, b"batch=" + BATCH.encode(), 400, 100, "batch requests"),
    ("batch at /me", "POST", "/v21.0/me", FORM, b"batch=x", 403, 10, "not on the blocklist proxy's list"),
    ("batch on a node (JSON)", "POST", f"/v21.0/{PNID}", JSON, json.dumps({"batch": []}).encode(), 400, 100, "batch"),
    ("batch in a query", "GET", f"/v21.0/{PNID}?batch=x", {}, b"", 400, 100, "batch requests"),
    ("Batch in any case", "POST", f"{M}?Batch=x", JSON, send(), 400, 100, "batch requests"),
    ("?method=", "GET", f"{M}?method=post&to={ALLOWED}", {}, b"", 400, 100, "method overrides"),
    ("method twice", "POST", f"{M}?method=get&method=post", JSON, send(), 400, 100, "method overrides"),
    ("body method", "POST", M, JSON, send(method="GET"), 400, 100, "method overrides"),
    ("form body method", "POST", M, FORM, f"to={ALLOWED}&method=post".encode(), 400, 100, "method overrides"),
    ("X-HTTP-Method-Override", "POST", M, {**JSON, "X-HTTP-Method-Override": "GET"}, send(), 400, 100, "overrides"),
    ("X-Method-Override", "GET", f"/v21.0/{PNID}", {"X-Method-Override": "POST"}, b"", 400, 100, "overrides"),
    ("PUT on messages", "PUT", M, JSON, send(), 405, 100, "not a method of the Graph API"),
    ("PATCH on messages", "PATCH", M, JSON, send(), 405, 100, "not a method of the Graph API"),
    ("GET on messages", "GET", f"{M}?to={ALLOWED}", {}, b"", 405, 100, "accepts only POST"),
    ("DELETE on calls", "DELETE", f"/v21.0/{PNID}/calls", {}, b"", 405, 100, "accepts only POST"),
    ("to twice (form)", "POST", M, FORM, f"to={ALLOWED}&to={BLOCKED}".encode(), 400, 100, "given twice"),
    ("to in query and body", "POST", f"{M}?to={ALLOWED}", JSON, send(), 400, 100, "given twice"),
    ("to twice (JSON)", "POST", M, JSON, b'{"to":"1","to":"2"}', 400, 100, "twice"),
    ("nested key twice", "POST", M, JSON, b'{"to":"573009876543","text":{"body":"a","body":"b"}}', 400, 100, "twice"),
    ("to[] (PHP array)", "POST", M, FORM, f"to[]={ALLOWED}".encode(), 400, 100, "PHP-style"),
    ("TO in capitals", "POST", M, JSON, json.dumps({"TO": ALLOWED}).encode(), 400, 100, "lower case"),
    ("path parameter", "POST", f"{M};x=1", JSON, send(), 400, 100, "path parameter"),
    ("node path parameter", "POST", f"/v21.0/{PNID};x=1/messages", JSON, send(), 400, 100, "path parameter"),
    ("%20", "POST", f"{M}%20", JSON, send(), 400, 100, "percent-encoded"),
    ("%00", "POST", f"{M}%00", JSON, send(), 400, 100, "percent-encoded"),
    ("%2e", "POST", f"{M}%2ejson", JSON, send(), 400, 100, "percent-encoded"),
    ("messages.json", "POST", f"{M}.json", JSON, send(), 400, 100, "characters Graph API paths do not use"),
    ("messages/x", "POST", f"{M}/x", JSON, send(), 403, 10, "nothing after them"),
    ("doubled version", "POST", f"/v21.0/v21.0/{PNID}/messages", JSON, send(), 400, 100, "second version"),
    ("leading zero", "POST", f"/v21.0/0{PNID}/messages", JSON, send(), 400, 100, "leading zero"),
    ("plus node", "POST", f"/v21.0/+{PNID}/messages", JSON, send(), 400, 100, "'+'"),
    ("empty segment", "POST", f"/v21.0/{PNID}//messages", JSON, send(), 400, 100, "empty segment"),
    ("send to a non-numeric node", "POST", "/v21.0/me/messages", JSON, send(), 403, 10, "phone number ID"),
    ("unknown connector", "POST", "/v21.0/999999999999/messages", JSON, send(), 403, 10, "not a connector"),
    ("unlisted surface", "POST", f"/v21.0/{PNID}/something_new", JSON, b"{}", 403, 10, "gateway.allow"),
    ("unlisted method", "DELETE", f"/v21.0/{PNID}/phone_numbers", {}, b"", 403, 10, "gateway.allow"),
    ("UTF-8 BOM", "POST", M, JSON, b"\xef\xbb\xbf" + send(), 400, 100, "byte order mark"),
    ("UTF-16", "POST", M, JSON, send().decode().encode("utf-16-le"), 400, 100, "NUL bytes"),
    ("UTF-16 charset", "POST", M, {"Content-Type": "application/json; charset=utf-16"}, send(), 400, 100, "UTF-8"),
    ("deflate", "POST", M, {**JSON, "Content-Encoding": "deflate"}, send(), 400, 100, "Content-Encoding"),
    ("gzip twice", "POST", M, {**JSON, "Content-Encoding": "gzip, gzip"}, gzip.compress(send()), 400, 100, "Encoding"),
    ("broken gzip", "POST", M, {**JSON, "Content-Encoding": "gzip"}, b"\x1f\x8b\x08\x00junk", 400, 100, "gzip"),
    ("gzip with trailing data", "POST", M, {**JSON, "Content-Encoding": "gzip"}, gzip.compress(send()) + b"x", 400,
     100, "after its end"),
    ("multipart to as a file", "POST", M, *multipart(("to", ALLOWED, '; filename="to.txt"')), 400, 100, "as a file"),
    ("multipart base64 part", "POST", M,
     {"Content-Type": "multipart/form-data; boundary=b0"},
     b"--b0\r\nContent-Disposition: form-data; name=\"to\"\r\nContent-Transfer-Encoding: base64\r\n\r\nNTcz\r\n"
     b"--b0--\r\n",
     400, 100, "Content-Transfer-Encoding"),
    ("group send to a phone number", "POST", M, JSON, send(recipient_type="group"), 400, 100, "group"),
    ("odd recipient_type", "POST", M, JSON, send(recipient_type="broadcast"), 400, 100, "recipient_type"),
    ("to as a list", "POST", M, JSON, send([ALLOWED]), 400, 100, "to must be"),
    ("calls action as a list", "POST", f"/v21.0/{PNID}/calls", JSON,
     json.dumps({"messaging_product": "whatsapp", "to": ALLOWED, "action": ["connect"]}).encode(), 400, 100, "action"),
    ("receipt status not read", "POST", M, JSON, b'{"status":"sent","message_id":"wamid.X"}', 400, 100, "status"),
    ("receipt without message_id", "POST", M, JSON, b'{"status":"read"}', 400, 100, "message_id"),
    ("receipt on an unknown message", "POST", M, JSON, b'{"status":"read","message_id":"wamid.NEVER"}', 403, 10,
     "has not seen"),
    ("approval of an unknown join request", "POST", f"/v21.0/{GROUP}/join_requests", JSON,
     b'{"messaging_product":"whatsapp","join_requests":["JR1"]}', 403, 10, "has not seen"),
    ("deeply nested JSON", "POST", M, JSON, b'{"x":' + b"[" * 3000 + b"]" * 3000 + b"}", 400, 100, "nested"),
    ("nested participants in a form", "POST", f"/v21.0/{GROUP}/participants", FORM,
     b"participants=" + b"[" * 3000 + b"]" * 3000, 400, 100, "nested"),
    ("not JSON", "POST", M, JSON, b'{"to": "5730', 400, 100, "not valid JSON"),
    ("JSON not an object", "POST", M, JSON, b'["573001234567"]', 400, 100, "JSON object"),
    ("our admin face in capitals", "GET", "/ADMIN/api/connectors", {}, b"", 404, 100, "not served"),
    ("our webhooks face in capitals", "GET", "/Webhooks/whatsapp?hub.verify_token=x", {}, b"", 404, 100, "not served"),
    ("metrics in capitals", "GET", "/METRICS", {}, b"", 404, 100, "not served"),
    ("healthz under a version", "GET", "/v21.0/HealthZ", {}, b"", 404, 100, "not served"),
    ("readyz in capitals", "GET", "/READYZ", {}, b"", 404, 100, "not served"),
    ("upload with a batch part", "POST", f"/v21.0/{PNID}/media",
     *multipart(("messaging_product", "whatsapp", ""), ("batch", BATCH, "")), 400, 100, "batch"),
    ("form body on the upload edge with batch", "POST", f"/v21.0/{PNID}/media", FORM, b"batch=" + BATCH.encode(), 400,
     100, "batch requests"),
    ("multipart preamble", "POST", M, {"Content-Type": "multipart/form-data; boundary=b0"},
     b"hello\r\n--b0\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\n1\r\n--b0--\r\n", 400, 100,
     "before its first"),
    ("multipart epilogue", "POST", M, {"Content-Type": "multipart/form-data; boundary=b0"},
     b"--b0\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\n1\r\n--b0--\r\nto=2", 400, 100, "after its last"),
    ("two boundaries", "POST", M, {"Content-Type": "multipart/form-data; boundary=b0; boundary=b1"},
     b"--b0\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\n1\r\n--b0--\r\n", 400, 100, "one boundary"),
    ("part named twice", "POST", M, {"Content-Type": "multipart/form-data; boundary=b0"},
     b"--b0\r\nContent-Disposition: form-data; name=\"x\"; name=\"to\"\r\n\r\n1\r\n--b0--\r\n", 400, 100,
     "single plain form-data name"),
    ("compressed upload", "POST", f"/v21.0/{PNID}/media",
     {"Content-Type": "multipart/form-data; boundary=b0", "Content-Encoding": "gzip"}, gzip.compress(b"--b0--\r\n"),
     400, 100, "compressed"),
    ("pass-through body with batch", "POST", "/v21.0/1234567890123/message_templates", FORM, b"batch=[]", 400, 100,
     "batch requests"),
    ("encrypted without the connector's consent", "POST", f"/v21.0/{PNID}/messages_encrypted",
     {"Content-Type": "application/octet-stream"}, b"\x00opaque", 403, 10, "allow_encrypted_messages"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "target", "headers", "body", "status", "code", "says"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
async def test_every_refusal_is_a_graph_error_and_nothing_reaches_meta(
    client, fake_graph: FakeGraph, method, target, headers, body, status, code, says
):
    got_status, got = await raw(client, method, target, headers, body)
    assert got_status == status, got
    error = got["error"]
    assert error["code"] == code
    assert error["type"] == "OAuthException"
    assert says in error["error_data"]["details"], error["error_data"]["details"]
    assert fake_graph.requests == []


async def test_a_blocked_users_receipt_typing_indicator_and_join_request_are_refused(client, service, fake_graph):
    group_join = "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ"
    await service.record_inbound(
        PNID,
        [InboundUser(wa_id=BLOCKED), InboundUser(wa_id=ALLOWED)],
        messages=[("wamid.BLOCKED", 0), ("wamid.ALLOWED", 1)],
        join_requests=[(group_join, 0), ("JR-ALLOWED", 1)],
    )
    await service.block(PNID, BLOCKED, actor=Actor("supervisor", "admin_api"))
    for body in (
        {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.BLOCKED"},
        {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": "wamid.BLOCKED",
            "typing_indicator": {"type": "text"},
        },
    ):
        status, got = await raw(client, "POST", M, JSON, json.dumps(body).encode())
        assert (status, got["error"]["code"]) == (400, 139900)
    status, got = await raw(
        client, "POST", f"/v21.0/{GROUP}/join_requests", JSON,
        json.dumps({"messaging_product": "whatsapp", "join_requests": ["JR-ALLOWED", group_join]}).encode(),
    )  # fmt: skip
    assert (status, got["error"]["code"]) == (400, 139900)
    assert fake_graph.requests == []
    # The allowed user's message and join request go through, and a group send too (documented).
    for target, body in [
        (M, {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.ALLOWED"}),
        (f"/v21.0/{GROUP}/join_requests", {"messaging_product": "whatsapp", "join_requests": ["JR-ALLOWED"]}),
        (M, {"messaging_product": "whatsapp", "recipient_type": "group", "to": GROUP, "type": "text"}),
    ]:
        status, _ = await raw(client, "POST", target, JSON, json.dumps(body).encode())
        assert status == 200, body
    assert len(fake_graph.requests) == 3


async def test_unknown_references_pass_lets_unseen_receipts_through(aiohttp_client, make_config, clock, fake_graph):
    def passes(data: dict[str, Any]) -> None:
        data["gateway"] = {"unknown_references": "pass"}

    client = await aiohttp_client(create_app(make_config(passes), clock=clock))
    status, _ = await raw(client, "POST", M, JSON, b'{"status":"read","message_id":"wamid.NEVER"}')
    assert status == 200
    assert len(fake_graph.requests) == 1


async def test_a_gzip_send_is_checked_and_forwarded_as_received(client, service, fake_graph):
    await wrote_recently(service, PNID, BLOCKED)
    await service.block(PNID, BLOCKED, actor=Actor("supervisor", "admin_api"))
    headers = {**JSON, "Content-Encoding": "gzip"}
    status, got = await raw(client, "POST", M, headers, gzip.compress(send(BLOCKED)))
    assert (status, got["error"]["code"]) == (400, 139900)
    compressed = gzip.compress(send(ALLOWED))
    status, _ = await raw(client, "POST", M, headers, compressed)
    assert status == 200
    [seen] = fake_graph.requests
    assert seen.body == compressed  # the original bytes, still compressed
    assert seen.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(seen.body))["to"] == ALLOWED


async def test_json_sent_as_a_form_is_checked_in_both_readings(client, service, fake_graph):
    await wrote_recently(service, PNID, BLOCKED)
    await service.block(PNID, BLOCKED, actor=Actor("supervisor", "admin_api"))
    hidden = {"messaging_product": "whatsapp", "to": ALLOWED, "type": "text", "text": {"body": f"a&to={BLOCKED}"}}
    status, got = await raw(client, "POST", M, FORM, json.dumps(hidden).encode())
    assert (status, got["error"]["code"]) == (400, 139900)
    plain = {"messaging_product": "whatsapp", "to": ALLOWED, "type": "text", "text": {"body": "a & b"}}
    status, _ = await raw(client, "POST", M, FORM, json.dumps(plain).encode())  # curl -d '{...}'
    assert status == 200


# --- the pure parts -------------------------------------------------------------------------------------------------


def test_gzip_bombs_are_413_not_memory() -> None:
    bomb = gzip.compress(b"{" + b" " * (8 * 1024 * 1024) + b"}")
    with pytest.raises(Refused) as raised:
        decode_body(bomb, "gzip")
    assert raised.value.status == 413


@pytest.mark.parametrize("split", [1, 17, 30, 45])
def test_the_upload_scanner_sees_a_batch_part_across_chunk_boundaries(split: int) -> None:
    header = b'--b0\r\nContent-Disposition: form-data; name="batch"\r\n\r\n[]\r\n'
    body = b'--b0\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n' + b"\xff" * 5000 + b"\r\n"
    stream = body + header
    scanner = PartNameScanner()
    cut = len(body) + split
    scanner.feed(stream[:cut])
    with pytest.raises(Refused):
        scanner.feed(stream[cut:])


def test_a_file_that_mentions_batch_in_its_content_is_not_a_batch_part() -> None:
    PartNameScanner().feed(b'--b0\r\nContent-Disposition: form-data; name="file"\r\n\r\nbatch method name=batch\r\n')


def test_read_params_reads_one_way_only() -> None:
    params = read_params([("access_token", "x")], send(ALLOWED), "application/json")
    assert params.fields["to"] == ALLOWED and params.also == {}
    params = read_params([], b"to=%2B57%20300&type=text", "application/x-www-form-urlencoded")
    assert params.fields["to"] == "+57 300"
    with pytest.raises(Refused, match="given twice"):
        read_params([("to", "1")], b"to=2", "")


def test_node_ids_and_versions() -> None:
    for path in (f"/{PNID}/messages", f"/v21.0/{PNID}/messages", f"/V22.0/{PNID}/Messages/"):
        target = classify_target("POST", path, "", [])
        assert (target.kind, target.node, target.edge) == ("send", PNID, "messages")
    for path in (f"/v21.0/00{PNID}/messages", f"/v21/v21.0/{PNID}/messages"):
        with pytest.raises(Refused):
            classify_target("POST", path, "", [])
    assert re.match(r"^v", classify_target("GET", "/v21.0/me", "", []).version)


def test_the_docs_table_lists_every_surface_of_the_allow_list() -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "gateway.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ") and "` | " in line]
    for surface in builtin_surfaces():
        row = f"| {', '.join(sorted(surface.methods))} | `/{surface.path}` | {surface.name} |"
        assert any(r.startswith(row) for r in rows), f"docs/gateway.md lacks the row {row}"
        assert any(surface.why in r for r in rows if r.startswith(row))


async def test_structured_parameters_in_the_query_are_read_too(client, service, fake_graph):
    await wrote_recently(service, PNID, BLOCKED)
    await service.block(PNID, BLOCKED, actor=Actor("supervisor", "admin_api"))
    participants = quote(json.dumps([{"user": BLOCKED}]))
    status, got = await raw(client, "POST", f"/v21.0/{GROUP}/participants?participants={participants}", {}, b"")
    assert (status, got["error"]["code"]) == (400, 139900)
    assert fake_graph.requests == []


async def test_answering_a_blocked_users_call_is_refused_and_unseen_calls_too(client, service, fake_graph):
    # The calls come in through the receiver (verified webhooks), which learns whose each call is.
    blocked_call, allowed_call = "wacid.BLOCKED-CALLER-0001", "wacid.ALLOWED-CALLER-0001"
    body = p.encode(p.envelope(p.calls_change(
        PNID, p.call("connect", BLOCKED, call_id=blocked_call), p.call("connect", ALLOWED, call_id=allowed_call)
    )))  # fmt: skip
    headers = {**JSON, "X-Hub-Signature-256": sign(APP_SECRET, body)}
    assert (await client.post("/webhooks/whatsapp", data=body, headers=headers)).status == 200
    await service.block(PNID, BLOCKED, actor=Actor("supervisor", "admin_api"))
    calls = f"/v21.0/{PNID}/calls"
    for action in ("pre_accept", "accept"):
        answer = {"messaging_product": "whatsapp", "call_id": blocked_call, "action": action}
        status, got = await raw(client, "POST", calls, JSON, json.dumps(answer).encode())
        assert (status, got["error"]["code"]) == (400, 139900), action
    unseen = {"messaging_product": "whatsapp", "call_id": "wacid.NEVER-SEEN", "action": "accept"}
    status, got = await raw(client, "POST", calls, JSON, json.dumps(unseen).encode())
    assert (status, got["error"]["code"]) == (403, 10)
    nameless = {"messaging_product": "whatsapp", "action": "accept"}
    status, got = await raw(client, "POST", calls, JSON, json.dumps(nameless).encode())
    assert (status, got["error"]["code"]) == (400, 100)
    assert fake_graph.requests == []
    # The allowed caller's call is answered, and ending the blocked caller's call passes.
    for body_ in (
        {"messaging_product": "whatsapp", "call_id": allowed_call, "action": "accept"},
        {"messaging_product": "whatsapp", "call_id": blocked_call, "action": "terminate"},
    ):
        status, _ = await raw(client, "POST", calls, JSON, json.dumps(body_).encode())
        assert status == 200, body_
    assert len(fake_graph.requests) == 2


# --- the remembered classification answers as the full one -------------------------------------------------------

_SEGMENTS = st.sampled_from(
    ["v21.0", "V2", PNID, "1234567890123", "0123", "+57", "messages", "MESSAGES", "media", "block_users", "admin",
     "participants", "a.b", "%2e", "x;y", "", "upload:MTph", "marketing_messages", "calls", "whatsapp_business_profile"]
)  # fmt: skip
_HEADER_NAMES = st.sampled_from(
    ["Content-Type", "content-type", "Content-Encoding", "X-HTTP-Method-Override", "X-Method", "Authorization",
     "X-Content-Type-Options", "Accept", "x-content-encoding-hint"]
)  # fmt: skip


def _outcome(call: Any) -> Any:
    try:
        return call()
    except Refused as refused:
        return ("refused", refused.status, refused.code, refused.details)


@settings(max_examples=800, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "post"]),
    parts=st.lists(_SEGMENTS, max_size=4),
    query=st.sampled_from(["", "fields=id", "method=post", "Batch=1", "to=1&to=2", "access_token=x", "a%FF=1"]),
    headers=st.lists(st.tuples(_HEADER_NAMES, st.just("v")), max_size=4),
)
def test_a_remembered_classification_is_the_full_one(method: str, parts: list[str], query: str, headers: Any) -> None:
    """classify_target remembers what it answers for requests whose headers it cannot refuse; every answer, twice
    asked, equals the unremembered classification's (the same Target, or the same refusal)."""
    path = "/" + "/".join(parts)
    full = _outcome(lambda: classify._classify(method, path, query, headers, ()))
    assert _outcome(lambda: classify_target(method, path, query, headers)) == full
    assert _outcome(lambda: classify_target(method, path, query, headers)) == full
