"""Property: no request built from the grammar below ever reaches a blocked user, however Meta reads it.

Requests are built from a grammar of methods, method overrides (query, body, headers, duplicated), paths (version
segments, node ID spellings, edge spellings Meta may normalise), parameters (in the query, a JSON, form or
multipart body, duplicated, as file parts), batches and body encodings (gzip, BOM, UTF-16, JSON labelled as a
form). Each is sent as raw bytes through a running proxy (real Redis) to the fake Graph API, and everything the fake
received is read by tests/meta_reading.py the way Meta might read it, taking any reading that reaches a user. A
blocked user must never be reached. Requests without tricks to allowed users must still get through unchanged.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from meta_reading import World, reaches

from wa_blocklist.proxy.blocklist.service import Actor, InboundUser

from fakes import FakeGraph
from support import PNID, PNID_BR, exhaustive

BLOCKED = "573001234567"
BLOCKED_BSUID = "CO.BLOCKEDBSUID0001"
ALLOWED = "573009876543"
UNKNOWN = "999999999999999"
GROUP = "Y2FwaV9ncm91cDoxNzA1NTU1MDEzOToxMjAzNjM0MDQ2OTQyMzM4MjAZD"
MESSAGES = {"blocked": "wamid.BLOCKED1", "allowed": "wamid.ALLOWED1"}
JOINS = {"blocked": "JRBLOCKED1", "allowed": "JRALLOWED1"}

WORLDS = [
    World(PNID, "57", {BLOCKED}, {BLOCKED_BSUID}, {MESSAGES["blocked"]}, {JOINS["blocked"]}),
    World(PNID_BR, "55", {BLOCKED}, {BLOCKED_BSUID}, {MESSAGES["blocked"]}, {JOINS["blocked"]}),
]

GRAMMAR = exhaustive(1500)

BLOCKED_FORMS: list[Any] = [
    BLOCKED,
    "+57 300 123 4567",
    "300 123 4567",
    "0057 300 1234567",
    "+57 (0) 300 123 4567",
    int(BLOCKED),
    BLOCKED_BSUID,
]
ALLOWED_FORMS: list[Any] = [ALLOWED, "+57 300 987 6543"]


@dataclass
class Built:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    clean: bool
    """No trick at all, only allowed users: the proxy must pass it (transparency)."""
    notes: list[str] = field(default_factory=list)


def _batch(to: Any) -> str:
    return json.dumps([{"method": "POST", "relative_url": f"v21.0/{PNID}/messages", "body": urlencode({"to": to})}])


@st.composite
def requests(draw: st.DrawFn) -> Built:
    notes: list[str] = []
    tricks = False
    # --- path
    version = draw(st.sampled_from(["v21.0", "v21.0", "", "V21.0", "v21.0/v21.0"]))
    node = draw(
        st.sampled_from(
            [PNID] * 6 + [PNID_BR, f"0{PNID}", f"+{PNID}", f"%2B{PNID}", f"{PNID};x=1", UNKNOWN, "me", GROUP]
        )
    )
    edge = draw(
        st.sampled_from(
            ["messages"] * 6
            + ["MESSAGES", "marketing_messages", "calls", "messages;x=1", "messages%20", "messages%00"]
            + ["messages%2ejson", "messages.json", "messages/x", "media", "participants", "join_requests", ""]
        )
    )
    if version not in ("v21.0", "") or node not in (PNID, PNID_BR) or edge != "messages":
        tricks = True
    path = "/" + "/".join(p for p in (version, node, edge) if p)
    if draw(st.integers(0, 9)) == 0:
        path += "/"
        tricks = True
    # --- parameters
    params: list[tuple[str, Any]] = [("messaging_product", "whatsapp")]
    kind = draw(st.sampled_from(["send"] * 5 + ["receipt", "participants", "join", "batch", "nested batch", "call"]))
    who = draw(st.sampled_from(["blocked", "allowed"]))
    if kind != "send":
        tricks = True
    if who == "blocked":
        tricks = True
    forms = BLOCKED_FORMS if who == "blocked" else ALLOWED_FORMS
    if kind == "send":
        params += [("to", draw(st.sampled_from(forms))), ("type", "text")]
        if draw(st.booleans()):
            recipient_type = draw(st.sampled_from(["individual", "individual", "group"]))
            params.append(("recipient_type", recipient_type))
            tricks = tricks or recipient_type == "group"
    elif kind == "receipt":
        params += [("status", "read"), ("message_id", MESSAGES[who])]
        if draw(st.booleans()):
            params.append(("typing_indicator", {"type": "text"}))
    elif kind == "participants":
        params.append(("participants", [{"user": draw(st.sampled_from(forms))}]))
    elif kind == "join":
        params.append(("join_requests", [JOINS[who]]))
    elif kind == "batch":
        params.append(("batch", _batch(draw(st.sampled_from(forms)))))
    elif kind == "nested batch":
        inner = _batch(draw(st.sampled_from(forms)))
        outer = [{"method": "POST", "relative_url": "v21.0/me", "body": urlencode({"batch": inner})}]
        params.append(("batch", json.dumps(outer)))
    elif kind == "call":
        params += [("to", draw(st.sampled_from(forms))), ("action", draw(st.sampled_from(["connect", ["connect"]])))]
    # duplicates: one parameter again with another user's value
    if draw(st.integers(0, 4)) == 0:
        params.append(("to", draw(st.sampled_from(BLOCKED_FORMS + ALLOWED_FORMS))))
        tricks = True
    # --- method and overrides
    method = draw(st.sampled_from(["POST"] * 8 + ["GET", "PUT", "PATCH", "DELETE"]))
    headers: dict[str, str] = {}
    override = draw(st.sampled_from(["none"] * 6 + ["query", "body", "header", "query twice"]))
    query: list[tuple[str, str]] = []
    if method != "POST" or override != "none":
        tricks = True
    if override == "query":
        query.append(("method", draw(st.sampled_from(["post", "POST", "get"]))))
    elif override == "query twice":
        query += [("method", "get"), ("method", "post")]
    elif override == "body":
        params.append(("method", draw(st.sampled_from(["post", "get"]))))
    elif override == "header":
        headers[draw(st.sampled_from(["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"]))] = "POST"
    # --- placement and encoding
    encodings = ["json"] * 4 + ["form", "multipart", "query", "json as form", "json unlabelled", "json as text"]
    encoding = draw(st.sampled_from(encodings))
    if encoding not in ("json",):
        tricks = tricks or encoding not in ("form", "multipart")  # form and multipart are ordinary Graph bodies
    body_params = params
    if encoding == "query":
        query += [(n, v if isinstance(v, str) else json.dumps(v)) for n, v in params]
        body_params = []
    elif draw(st.integers(0, 5)) == 0 and len(params) > 1:  # one parameter moved to the query
        name, value = params[-1]
        query.append((name, value if isinstance(value, str) else json.dumps(value)))
        body_params = params[:-1]
        tricks = True
    body = b""
    if body_params:
        if encoding.startswith("json"):
            body = _json_object(body_params).encode()
            labels = {"json": "application/json", "json as form": "application/x-www-form-urlencoded"}
            labels["json as text"] = "text/plain; charset=utf-8"
            if encoding in labels:
                headers["Content-Type"] = labels[encoding]
        elif encoding == "form":
            body = urlencode([(n, v if isinstance(v, str) else json.dumps(v)) for n, v in body_params]).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif encoding == "multipart":
            as_file = draw(st.integers(0, 3)) == 0
            tricks = tricks or as_file
            parts = b""
            for name, value in body_params:
                text = value if isinstance(value, str) else json.dumps(value)
                filename = '; filename="x.txt"' if as_file and name == "to" else ""
                parts += f'--gb\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n{text}\r\n'.encode()
            body = parts + b"--gb--\r\n"
            headers["Content-Type"] = "multipart/form-data; boundary=gb"
    transform = draw(st.sampled_from(["none"] * 6 + ["gzip", "bom", "utf-16"]))
    if body and transform == "gzip":
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    elif body and transform == "bom":
        body = b"\xef\xbb\xbf" + body
        tricks = True
    elif body and transform == "utf-16":
        body = body.decode().encode("utf-16")
        tricks = True
    target = path + ("?" + "&".join(f"{quote(n)}={quote(str(v))}" for n, v in query) if query else "")
    notes.append(f"{kind}/{who}/{encoding}/{transform}/{override}")
    return Built(method, target, headers, body, clean=not tricks, notes=notes)


def _json_object(pairs: list[tuple[str, Any]]) -> str:
    """A JSON object with every pair written, duplicate keys included (json.dumps of a dict would drop them)."""
    return "{" + ", ".join(f"{json.dumps(name)}: {json.dumps(value)}" for name, value in pairs) + "}"


async def exchange(client: TestClient[Any, Any], built: Built) -> int:
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    lines = [f"{built.method} {built.target} HTTP/1.1", "Host: graph.facebook.com", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in built.headers.items()]
    lines.append(f"Content-Length: {len(built.body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + built.body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return int(answer.split(b" ", 2)[1])


@GRAMMAR
@given(built=requests())
async def test_no_request_of_the_grammar_reaches_a_blocked_user(
    grammar_client: TestClient[Any, Any], fake_graph: FakeGraph, built: Built
) -> None:
    before = len(fake_graph.requests)
    status = await exchange(grammar_client, built)
    assert status < 500, (status, built)
    for seen in fake_graph.requests[before:]:
        for world in WORLDS:
            why = reaches(world, seen.method, seen.raw_path, seen.headers, seen.body)
            assert not why, (why, built)
    if built.clean:
        assert status == 200, (status, built)
        [seen] = fake_graph.requests[before:]
        assert (seen.raw_path, seen.body) == (built.target, built.body)


async def _prepare(client: TestClient[Any, Any]) -> None:
    from wa_blocklist.proxy.appkeys import SERVICE

    service = client.app[SERVICE]
    for pnid in (PNID, PNID_BR):
        await service.record_inbound(
            pnid,
            [InboundUser(wa_id=BLOCKED, bsuid=BLOCKED_BSUID), InboundUser(wa_id=ALLOWED)],
            messages=[(MESSAGES["blocked"], 0), (MESSAGES["allowed"], 1)],
            join_requests=[(JOINS["blocked"], 0), (JOINS["allowed"], 1)],
        )
        await service.block(pnid, BLOCKED, actor=Actor("supervisor", "admin_api"))


@pytest.fixture
async def grammar_client(client: TestClient[Any, Any]) -> TestClient[Any, Any]:
    await _prepare(client)
    return client
