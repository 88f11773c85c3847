"""Hostile input: property-based tests (hypothesis) over every face, size limits, and slow clients.

The properties: never a 500, never a crash, never a blocked user's item forwarded (inbound) or sent (outbound).
Hypothesis runs derandomized with a bounded number of examples so the suite stays fast and repeatable.
"""

from __future__ import annotations

import asyncio
import json
import string
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wa_blocklist.proxy.app import create_app, server_options
from wa_blocklist.proxy.appkeys import SERVICE
from wa_blocklist.proxy.base.errors import ConfigError, InvalidNumber
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService
from wa_blocklist.proxy.config import Config, parse_config
from wa_blocklist.proxy.graph import identity
from wa_blocklist.proxy.graph.classify import read_params

import payloads as p
from fakes import FakeContactCenter, FakeGraph, sign
from support import APP_SECRET, PNID, ConfigFactory, FakeClock, auth, base_config_data, wrote_recently

BLOCKED = "573001234567"
BLOCKED_BSUID = "CO.4412345678901234567"
ALLOWED = "573009876543"
BLOCKED_SPELLINGS = [
    BLOCKED,
    "+573001234567",
    "+57 300 123 4567",
    "+57 (300) 123-4567",
    "0057 300 1234567",
    " 573001234567 ",
    BLOCKED_BSUID,
]

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,  # derandomized runs need no example database (and leave no .hypothesis/ behind)
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
digits = st.text(alphabet=string.digits, min_size=0, max_size=20)
number_like = st.one_of(
    st.sampled_from([*BLOCKED_SPELLINGS, ALLOWED, "", " ", "+", "++57", "CO.", "CO.x", "0", "57300"]),
    digits,
    digits.map(lambda d: "+" + d),
    st.text(alphabet=string.digits + " +-().", max_size=25),
    text,
)


async def serve(aiohttp_client: Any, config: Config, clock: FakeClock) -> TestClient[Any, Any]:
    """The proxy app on a test server started with the production server options (limits, timeouts, access log).

    ``TestServer(app, **kwargs)`` ignores its keyword arguments; ``start_server(**kwargs)`` passes them on.
    """
    server = TestServer(create_app(config, clock=clock))
    await server.start_server(**server_options(config))
    client: TestClient[Any, Any] = await aiohttp_client(server)
    return client


@pytest.fixture
async def fuzz_client(aiohttp_client: Any, make_config: ConfigFactory, clock: FakeClock) -> TestClient[Any, Any]:
    """The proxy with one user blocked by number and BSUID (linked), served with the production server options."""
    config = make_config()
    client = await serve(aiohttp_client, config, clock)
    service: BlocklistService = client.app[SERVICE]
    await wrote_recently(service, PNID, BLOCKED, bsuid=BLOCKED_BSUID)
    await wrote_recently(service, PNID, ALLOWED)
    await service.block(PNID, BLOCKED, actor=Actor("supervisor", "test"), reason="abuse")
    return client


def mentions_blocked(value: Any) -> bool:
    """True if a forwarded JSON value names the blocked user anywhere (as a sender, contact, wa_id or BSUID)."""
    if isinstance(value, dict):
        return any(mentions_blocked(v) for v in value.values())
    if isinstance(value, list):
        return any(mentions_blocked(v) for v in value)
    return isinstance(value, str) and value in (BLOCKED, BLOCKED_BSUID)


# --- inbound webhooks ---------------------------------------------------------------------------------------------

senders = st.sampled_from([BLOCKED, ALLOWED, "573005550000", None])
users = st.sampled_from(
    [
        (BLOCKED, None),
        (BLOCKED, BLOCKED_BSUID),
        (None, BLOCKED_BSUID),
        (ALLOWED, None),
        (ALLOWED, "CO.7712345678901234567"),
        (None, "CO.7712345678901234567"),
        ("573005550000", None),
    ]
)  # (wa_id, BSUID) as one real user shows up: a number, a BSUID, or both
message_kinds = st.sampled_from([p.text, p.image, p.audio, p.reaction, p.location, p.button_reply, p.order, p.sticker])


@st.composite
def inbound_messages(draw: st.DrawFn) -> dict[str, Any]:
    sender, user_id = draw(users)
    message: dict[str, Any] = draw(message_kinds)(sender, user_id=user_id)
    for key, value in draw(
        st.dictionaries(st.sampled_from(["extra", "context", "errors", "id", "type"]), json_values)
    ).items():
        message[key] = value  # hostile or unexpected fields next to the real ones
    return message


@st.composite
def webhook_payloads(draw: st.DrawFn) -> dict[str, Any]:
    changes = []
    for _ in range(draw(st.integers(1, 3))):
        messages = draw(st.lists(inbound_messages(), min_size=1, max_size=4))
        change = p.messages_change(PNID, messages)
        if draw(st.booleans()):
            change["value"]["statuses"] = [p.status(draw(senders))]
        changes.append(change)
    return p.envelope(*changes)


@FUZZ
@given(payload=webhook_payloads())
async def test_webhook_payloads_never_500_and_never_forward_a_blocked_users_message(
    fuzz_client: TestClient[Any, Any], contact_center: FakeContactCenter, payload: dict[str, Any]
) -> None:
    contact_center.received.clear()
    body = p.encode(payload)
    resp = await fuzz_client.post(
        "/webhooks/whatsapp", data=body, headers={"X-Hub-Signature-256": sign(APP_SECRET, body)}
    )
    assert resp.status in (200, 400, 422), await resp.text()
    for delivered in contact_center.received:
        for entry in delivered.json()["entry"]:
            for change in entry["changes"]:
                value = change["value"]
                assert not mentions_blocked(value.get("messages", [])), value
                assert not mentions_blocked(value.get("contacts", [])), value


@FUZZ
@given(body=st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200)))
async def test_arbitrary_signed_webhook_bodies_are_clean_4xx(
    fuzz_client: TestClient[Any, Any], contact_center: FakeContactCenter, body: bytes
) -> None:
    resp = await fuzz_client.post(
        "/webhooks/whatsapp", data=body, headers={"X-Hub-Signature-256": sign(APP_SECRET, body)}
    )
    assert 400 <= resp.status < 500
    assert "code" in (await resp.json())["error"]
    assert contact_center.received == []


# --- outbound sends -----------------------------------------------------------------------------------------------


@FUZZ
@given(
    to=number_like,
    extra=st.dictionaries(st.sampled_from(["recipient", "recipient_type", "type", "text", "to2", "biz"]), json_values),
    as_form=st.booleans(),
)
async def test_sends_never_500_and_never_reach_a_blocked_user(
    fuzz_client: TestClient[Any, Any], fake_graph: FakeGraph, to: str, extra: dict[str, Any], as_form: bool
) -> None:
    fake_graph.requests.clear()
    message = {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": "hola"}, **extra}
    if as_form:
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in message.items()}
        resp = await fuzz_client.post(f"/v21.0/{PNID}/messages", data=fields)
    else:
        resp = await fuzz_client.post(f"/v21.0/{PNID}/messages", json=message)
    assert resp.status in (200, 400), await resp.text()
    if resp.status == 400:
        assert (await resp.json())["error"]["type"] == "OAuthException"
    for sent in fake_graph.requests:
        for name, values in _fields(sent.body).items():
            if name in ("to", "recipient"):
                for value in values:
                    assert not _is_blocked_identity(value), f"a send to {value!r} reached Meta"
    if to.strip() in BLOCKED_SPELLINGS or to in BLOCKED_SPELLINGS:
        assert resp.status == 400 and fake_graph.requests == [], (to, extra, as_form)


@pytest.mark.parametrize("to", ["3001234567", "300 123 4567", "(300) 123-4567", "0057 300 1234567", "00573001234567"])
async def test_every_reading_meta_may_give_a_recipient_is_checked(
    fuzz_client: TestClient[Any, Any], fake_graph: FakeGraph, to: str
) -> None:
    # Meta prepends the business number's country code to a number without "+", and 00 is the international prefix:
    # each of these reaches +57 300 123 4567 from a Colombian connector (found by the property test above).
    resp = await fuzz_client.post(f"/v21.0/{PNID}/messages", json={"to": to, "type": "text", "text": {"body": "x"}})
    assert resp.status == 400
    assert fake_graph.requests == []
    resp = await fuzz_client.post(f"/v21.0/{PNID}/messages", json={"to": "3009876543", "type": "text"})
    assert resp.status == 200  # a national number of someone else still goes through


def _fields(body: bytes) -> dict[str, list[Any]]:
    """Every parameter of a send that reached Meta as ``name → [values]``, both readings, as the gateway reads it."""
    params = read_params((), body, "")
    fields: dict[str, list[Any]] = {name: [value] for name, value in params.fields.items()}
    for name, values in params.also.items():
        fields.setdefault(name, []).extend(values)
    return fields


def _is_blocked_identity(value: Any) -> bool:
    try:
        readings = identity.recipient_readings(str(value), "CO")  # every user Meta may deliver it to
    except InvalidNumber:
        return False
    blocked = {identity.from_wa_id(BLOCKED).key, identity.recipient(BLOCKED_BSUID).key}
    return any(reading.key in blocked for reading in readings)


# --- numbers --------------------------------------------------------------------------------------------------------


@FUZZ
@given(raw=number_like, country=st.sampled_from(["CO", "BR", "MX", "AR", "US", ""]))
def test_number_parsing_either_understands_or_says_why(raw: str, country: str) -> None:
    for parse in (lambda t: identity.parse(t, country), identity.recipient):
        try:
            found = parse(raw)
        except InvalidNumber as exc:
            assert exc.message and exc.status == 400
        else:
            assert found.value and found.key


# --- admin requests -------------------------------------------------------------------------------------------------


@FUZZ
@given(
    body=st.one_of(
        st.fixed_dictionaries({"number": number_like}, optional={"reason": text}),
        json_values,
    ),
    method=st.sampled_from(["POST", "GET", "DELETE"]),
    number=number_like,
    query=st.dictionaries(st.sampled_from(["limit", "cursor", "q", "reason"]), text, max_size=3),
)
async def test_admin_requests_are_never_a_500(
    fuzz_client: TestClient[Any, Any], body: Any, method: str, number: str, query: dict[str, str]
) -> None:
    base = f"/admin/api/connectors/{PNID}/blocks"
    if method == "POST":
        resp = await fuzz_client.post(base, data=json.dumps(body), params=query, headers=auth())
    else:
        path = f"{base}/{quote(number, safe='')}" if number.strip() and method == "DELETE" else base
        resp = await fuzz_client.request(method, path, params=query, headers=auth())
    assert resp.status in (200, 201, 204, 400, 404, 405, 409), await resp.text()
    if resp.status >= 400:
        assert set((await resp.json())["error"]) == {"code", "message"}
    service: BlocklistService = fuzz_client.app[SERVICE]
    if not await service.is_blocked(PNID, identity.from_wa_id(BLOCKED)):
        await service.block(PNID, BLOCKED, actor=Actor("supervisor", "test"))  # a fuzzed DELETE may unblock it


# --- limits and slow clients --------------------------------------------------------------------------------------


async def raw_exchange(client: TestClient[Any, Any], data: bytes, until_response: bool = False) -> bytes:
    """Send raw bytes on a fresh connection; read until the server closes it, or one whole response."""
    timeout = 10
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(data)
        await writer.drain()
        if not until_response:
            return await asyncio.wait_for(reader.read(), timeout)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        return head + await asyncio.wait_for(reader.readexactly(length), timeout)
    finally:
        writer.close()


async def test_oversized_request_line_and_headers_are_refused(
    fuzz_client: TestClient[Any, Any], fake_graph: FakeGraph
) -> None:
    # aiohttp answers 400 before any handler runs (and logs the error at ERROR level; see the logging test).
    long_target = b"/v21.0/me?fields=" + b"a" * 9000
    answer = await raw_exchange(fuzz_client, b"GET " + long_target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 400") and b"Got more than 8190 bytes" in answer
    answer = await raw_exchange(
        fuzz_client, b"GET /v21.0/me HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.0 400") and b"Got more than 8190 bytes" in answer
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    answer = await raw_exchange(fuzz_client, b"GET /v21.0/me HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.0 400") and b"Too many headers received" in answer
    assert fake_graph.requests == []


@pytest.fixture
async def impatient_client(aiohttp_client: Any, make_config: ConfigFactory, clock: FakeClock) -> TestClient[Any, Any]:
    def impatient(data: dict[str, Any]) -> None:
        data["server"] = {"idle_timeout_seconds": 0.5, "body_timeout_seconds": 0.5}

    config = make_config(impatient)
    return await serve(aiohttp_client, config, clock)


async def test_a_client_that_never_finishes_its_headers_is_disconnected(impatient_client: TestClient[Any, Any]) -> None:
    # The read returns (EOF) only because the server closed the connection after server.idle_timeout_seconds.
    answer = await raw_exchange(impatient_client, b"POST /webhooks/whatsapp HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert answer == b""


@pytest.mark.parametrize(
    ("path", "headers", "status", "says"),
    [
        ("/webhooks/whatsapp", b"", 408, b'"code": "body_timeout"'),
        (f"/admin/api/connectors/{PNID}/blocks", b"Authorization: Bearer " + b"test-admin-token-0001\r\n", 408,
         b'"code": "body_timeout"'),
        (f"/v21.0/{PNID}/messages", b"", 408, b"Request timeout"),
    ],
    ids=["webhook", "admin", "gateway"],
)  # fmt: skip
async def test_a_body_that_stalls_is_answered_408(
    impatient_client: TestClient[Any, Any],
    contact_center: FakeContactCenter,
    fake_graph: FakeGraph,
    path: str,
    headers: bytes,
    status: int,
    says: bytes,
) -> None:
    head = (
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 200\r\nConnection: close\r\n" + headers + b"\r\n"
    )
    answer = await raw_exchange(impatient_client, head + b'{"to": "57', until_response=True)  # the rest never comes
    assert answer.startswith(b"HTTP/1.1 %d" % status), answer[:200]
    assert says in answer
    assert contact_center.received == [] and fake_graph.requests == []


def test_server_timeouts_are_validated_by_name(redis_url: str) -> None:
    data = base_config_data(redis_url)
    data["server"] = {"idle_timeout_seconds": 0, "body_timeout_seconds": "soon"}
    with pytest.raises(ConfigError) as raised:
        parse_config(data, env={})
    assert raised.value.problems == [
        "server.idle_timeout_seconds: 0 must be a positive number",
        "server.body_timeout_seconds: 'soon' is not a number",
    ]
    assert parse_config(base_config_data(redis_url), env={}).server.body_timeout_seconds == 30.0
