"""Logs: one line per request (JSON, or human-readable on a terminal), request IDs end to end, secrets redacted."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.appkeys import SERVICE
from wa_blocklist.proxy.base.logs import (
    REDACTED,
    REQUEST_INFO,
    HumanFormatter,
    JsonFormatter,
    RedactingAccessLogger,
    RedactingFilter,
    RequestInfo,
    new_request_id,
    redact,
    redact_query,
    setup_logging,
)
from wa_blocklist.proxy.blocklist.service import Actor

import payloads as p
from fakes import FakeContactCenter, FakeGraph, sign
from support import ADMIN_TOKEN, APP_SECRET, PNID, ConfigFactory, FakeClock, auth, wrote_recently

BLOCKED = "573007654321"
ALLOWED = "573001234567"
GRAPH_TOKEN = "EAAGsecretGraphToken123"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    """What the access logger writes, as JSON lines with secrets redacted (as ``setup_logging`` wires it)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("aiohttp.access")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture
async def logged_client(
    aiohttp_server: Any, aiohttp_client: Any, make_config: ConfigFactory, clock: FakeClock, access_lines: io.StringIO
) -> TestClient[Any, Any]:
    """The proxy served with the access logger ``wa-blocklist serve`` uses."""
    server = await aiohttp_server(create_app(make_config(), clock=clock), access_log_class=RedactingAccessLogger)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    return client


def header(headers: dict[str, str], name: str) -> str:
    """A header of a recorded request, whatever the case the server gave its name (aiohttp writes X-Request-ID)."""
    return {k.lower(): v for k, v in headers.items()}[name.lower()]


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_redact() -> None:
    assert redact("GET /v21.0/1/media?access_token=EAAB123&x=1") == f"GET /v21.0/1/media?access_token={REDACTED}&x=1"
    assert redact("Authorization: Bearer abc.def-123") == f"Authorization: Bearer {REDACTED}"
    assert redact('{"app_secret": "s3cr3t", "n": 1}') == f'{{"app_secret": "{REDACTED}", "n": 1}}'
    assert redact("hub.verify_token=vt&hub.challenge=42") == f"hub.verify_token={REDACTED}&hub.challenge=42"
    assert redact("nothing secret here") == "nothing secret here"
    assert (
        redact_query("a=1&access_token=EAAB&b=x%20y&Access%5Ftoken=EAAC")
        == f"a=1&access_token={REDACTED}&b=x%20y&Access%5Ftoken={REDACTED}"
    )
    assert redact_query("a=1&b=2") == "a=1&b=2"
    assert redact_query("") == ""


@pytest.mark.parametrize(
    "name",
    [
        "access_token", "input_token", "fb_exchange_token", "client_secret", "code", "authorization",
        "appsecret_proof", "password", "token", "refresh_token", "hub.verify_token", "X-Api-Key", "my_db_password",
        "Authorization", "Code",
    ],
)  # fmt: skip
def test_every_credential_is_redacted_by_its_name(name: str) -> None:
    secret = "S3cr3tValue9"
    assert redact_query(f"fields=id&{name}={secret}&limit=5") == f"fields=id&{name}={REDACTED}&limit=5"
    assert secret not in redact(f"GET /v21.0/oauth/access_token?x=1&{name}={secret}")
    if name.lower() != "code":  # OAuth's code is a secret as a URL parameter; "code": ... in text is an error code
        assert secret not in redact(f"{name}: {secret}")
        assert secret not in redact(f"{{'{name}': '{secret}'}}")


def test_credentials_in_headers_and_paths_are_redacted_with_their_scheme() -> None:
    assert redact("Authorization: Basic dXNlcjpwYXNz") == f"Authorization: Basic {REDACTED}"
    assert redact("{'Authorization': 'Bearer abcdef'}") == f"{{'Authorization': 'Bearer {REDACTED}'}}"
    assert redact("X-Hub-Signature-256: sha256=abcd") == f"X-Hub-Signature-256: sha256={REDACTED}"
    assert redact("/v21.0/me/accounts;access_token=EAAB9") == f"/v21.0/me/accounts;access_token={REDACTED}"
    # Words that are only secrets as URL parameters stay readable elsewhere (error codes in messages).
    assert redact('{"code": "recipient_blocked"}') == '{"code": "recipient_blocked"}'


async def test_oauth_and_debug_token_parameters_never_reach_the_access_log(
    logged_client: TestClient[Any, Any], access_lines: io.StringIO
) -> None:
    secrets = ["ClientS3cret", "AQDoauthCode", "EAAinputTok", "EAAexchangeTok", "AuthQueryTok", "Pr00f"]
    await logged_client.get(
        f"/v21.0/oauth/access_token?client_id=1&client_secret={secrets[0]}&code={secrets[1]}&redirect_uri=x"
    )
    await logged_client.get(f"/v21.0/debug_token?input_token={secrets[2]}&appsecret_proof={secrets[5]}")
    await logged_client.get(f"/oauth/access_token?grant_type=fb_exchange_token&fb_exchange_token={secrets[3]}")
    await logged_client.get(f"/v21.0/me?authorization={secrets[4]}")
    text = access_lines.getvalue()
    assert len([r for r in lines(access_lines) if "face" in r]) == 4
    assert not [s for s in secrets if s in text]
    assert "client_id=1" in text and "grant_type=fb_exchange_token" in text  # the rest is logged as sent


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /admin/api/session HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\x01x\r\n\r\n",
        b"GET /v21.0/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nBad Header: y\r\n\r\n",
        b"GET /v21.0/me?access_token=%s\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v21.0/me HTTP/1.1\r\nHost: x\r\nX-Long: %s" + b"a" * 9000 + b"\r\n\r\n",
    ],
    ids=["bad-header-char", "bad-header-name", "bad-target-char", "header-too-long"],
)
async def test_unreadable_requests_get_our_answer_which_quotes_nothing(
    aiohttp_server: Any, make_config: ConfigFactory, restore_root_logging: None, raw: bytes
) -> None:
    from wa_blocklist.proxy.app import server_options

    stream = io.StringIO()
    setup_logging(stream, level=logging.DEBUG)
    config = make_config()
    server = await aiohttp_server(create_app(config), **server_options(config))
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(raw % ADMIN_TOKEN.encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] in (b"400", b"431"), answer
    assert ADMIN_TOKEN.encode() not in answer and b"Authorization" not in body
    assert b"could not be read as HTTP" in body
    assert ADMIN_TOKEN not in stream.getvalue()
    assert "refused an unreadable HTTP request" in stream.getvalue()


async def test_one_json_line_per_request_with_ids_propagated(
    logged_client: TestClient[Any, Any], access_lines: io.StringIO, fake_graph: FakeGraph,
    contact_center: FakeContactCenter,
) -> None:  # fmt: skip
    service = logged_client.app[SERVICE]
    await wrote_recently(service, PNID, BLOCKED)
    await service.block(PNID, BLOCKED, actor=Actor("supervisor", "test"))
    send = {"messaging_product": "whatsapp", "to": ALLOWED, "type": "text", "text": {"body": "hola"}}

    # The caller's sane request ID is kept and sent on to the Graph API.
    resp = await logged_client.post(
        f"/v21.0/{PNID}/messages?access_token={GRAPH_TOKEN}", json=send, headers={"X-Request-Id": "cc-req-42"}
    )
    assert resp.status == 200 and resp.headers["X-Request-Id"] == "cc-req-42"
    assert header(fake_graph.requests[-1].headers, "X-Request-Id") == "cc-req-42"

    # An insane one is replaced by a fresh ID.
    resp = await logged_client.post(
        f"/v21.0/{PNID}/messages", json={**send, "to": BLOCKED}, headers={"X-Request-Id": "bad id\twith spaces"}
    )
    assert resp.status == 400
    generated = resp.headers["X-Request-Id"]
    assert generated != "bad id\twith spaces" and len(generated) == 32

    # A webhook: the contact center gets the request ID too.
    body = p.encode(p.envelope(p.change(PNID, contacts=[p.contact(ALLOWED)], messages=[p.message("text", ALLOWED)])))
    resp = await logged_client.post(
        "/webhooks/whatsapp",
        data=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(APP_SECRET, body)},
    )
    assert resp.status == 200
    webhook_id = resp.headers["X-Request-Id"]
    assert header(contact_center.received[-1].headers, "X-Request-Id") == webhook_id

    resp = await logged_client.get("/admin/api/connectors", headers=auth())
    assert resp.status == 200

    logged = [line for line in lines(access_lines) if "face" in line]  # not the fakes' own access lines
    assert len(logged) == 4
    sent, refused, webhook, admin = logged
    assert {k: sent[k] for k in ("request_id", "method", "face", "connector", "outcome", "status")} == {
        "request_id": "cc-req-42", "method": "POST", "face": "gateway", "connector": PNID, "outcome": "ok",
        "status": 200,
    }  # fmt: skip
    assert sent["path"] == f"/v21.0/{PNID}/messages?access_token=[redacted]"
    assert isinstance(sent["latency_ms"], float) and sent["latency_ms"] >= 0
    assert sent["logger"] == "aiohttp.access" and sent["level"] == "info" and sent["ts"].endswith("Z")
    assert (refused["request_id"], refused["outcome"], refused["status"]) == (generated, "blocked", 400)
    assert (webhook["request_id"], webhook["face"], webhook["connector"], webhook["outcome"]) == (
        webhook_id,
        "webhooks",
        PNID,
        "forwarded",
    )
    assert (admin["face"], admin["outcome"], admin["status"]) == ("admin", "ok", 200)
    text = access_lines.getvalue()
    assert GRAPH_TOKEN not in text and ADMIN_TOKEN not in text


async def test_no_secret_in_any_log_line(
    logged_client: TestClient[Any, Any], restore_root_logging: None, caplog: pytest.LogCaptureFixture
) -> None:
    stream = io.StringIO()
    setup_logging(stream)  # not a TTY: JSON
    logging.getLogger("wa_blocklist.proxy.test").warning("calling %s", f"https://graph/x?access_token={GRAPH_TOKEN}")
    logging.getLogger("wa_blocklist.proxy.test").error("header was Bearer %s", ADMIN_TOKEN)
    try:
        raise ValueError(f"token={GRAPH_TOKEN} access_token={GRAPH_TOKEN}")
    except ValueError:
        logging.getLogger("wa_blocklist.proxy.test").exception("failed")
    await logged_client.get(f"/v21.0/me?access_token={GRAPH_TOKEN}")
    text = stream.getvalue()
    assert GRAPH_TOKEN not in text and ADMIN_TOKEN not in text
    records = lines(stream)
    assert records[0]["message"] == f"calling https://graph/x?access_token={REDACTED}"
    assert records[0]["level"] == "warning" and records[0]["logger"] == "wa_blocklist.proxy.test"
    assert "exception" in records[2] and "ValueError" in records[2]["exception"]
    assert any(r.get("face") == "gateway" for r in records)


def test_human_readable_on_a_terminal(restore_root_logging: None) -> None:
    terminal = Tty()
    setup_logging(terminal)
    logging.getLogger("wa_blocklist.proxy.test").info("hello %s", "there")
    record = logging.LogRecord("aiohttp.access", logging.INFO, __file__, 1, "GET / 200", None, None)
    record.request = {  # type: ignore[attr-defined]
        "request_id": "r1", "method": "POST", "path": "/v21.0/1/messages", "face": "gateway", "connector": "1",
        "outcome": "blocked", "status": 400, "latency_ms": 1.5, "remote": "127.0.0.1",
    }  # fmt: skip
    logging.getLogger("aiohttp.access").handle(record)
    out = terminal.getvalue().splitlines()
    assert out[0].endswith("INFO  wa_blocklist.proxy.test: hello there")
    assert out[1].endswith("POST /v21.0/1/messages 400 gateway blocked 1 1.5ms [r1]")
    assert not out[0].startswith("{")
    assert isinstance(logging.getLogger().handlers[0].formatter, HumanFormatter)


def test_fresh_request_ids_are_unique_and_differ_in_a_forked_worker() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: what a worker forked after the first request would hand out
        os.write(write_end, new_request_id().encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end, "rb") as pipe:
        from_child = pipe.read().decode()
    assert len(from_child) == 32 and from_child[:16] != ids[0][:16]
    assert new_request_id()[:16] == ids[0][:16]


@given(
    st.lists(
        st.sampled_from(
            ["access_token", "X-Api-Key", "Authorization", "Bearer ", "Basic ", "OAuth ", "code", "sig", "key", "auth",
             "Cookie", "x-hub-signature-256", "credential", "=", ": ", '": "', "&", "?", "/", "abc123", " ", "'", "%3D"]
        ),
        max_size=12,
    ).map("".join)
)  # fmt: skip
@settings(max_examples=300, derandomize=True, database=None)
def test_the_quick_skip_never_skips_a_secret(text: str) -> None:
    from wa_blocklist.proxy.base import logs

    full = logs._SECRET_IN_TEXT.sub(
        lambda m: f"{m.group('name')}{m.group('sep')}{m.group('scheme') or ''}{REDACTED}", text
    )
    full = logs._SECRET_IN_URL.sub(lambda m: f"{m.group('name')}{m.group('sep')}{REDACTED}", full)
    full = logs._BEARER.sub(lambda m: f"{m.group('name')} {REDACTED}", full)
    assert redact(text) == full


# --- access lines from a template, written in batches ---------------------------------------------------------------

ACCESS_KEYS = [
    "ts", "level", "logger", "message", "request_id", "method", "path", "face", "connector", "outcome", "status",
    "latency_ms", "remote",
]  # fmt: skip
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)  # control characters, quotes, surrogates too


@given(
    method=ANY_TEXT, path=ANY_TEXT, status=st.integers(0, 999), request_id=ANY_TEXT, face=ANY_TEXT,
    connector=ANY_TEXT, outcome=ANY_TEXT, latency_ms=st.floats() | st.integers(0, 10**6), remote=ANY_TEXT,
    created=st.floats(0, 4e9),
)  # fmt: skip
@settings(max_examples=500, derandomize=True, database=None)
def test_the_access_line_template_writes_exactly_what_the_formatters_write(
    method: str, path: str, status: int, request_id: str, face: str, connector: str, outcome: str,
    latency_ms: float, remote: str, created: float,
) -> None:  # fmt: skip
    from wa_blocklist.proxy.base import logs

    record = logging.LogRecord("aiohttp.access", logging.INFO, __file__, 1, "%s %s %s", (method, path, status), None)
    record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0  # as LogRecord sets them
    record.request = {  # type: ignore[attr-defined]  # what the logging path's record carries
        "request_id": request_id, "method": method, "path": path, "face": face, "connector": connector,
        "outcome": outcome, "status": status, "latency_ms": latency_ms, "remote": remote,
    }  # fmt: skip
    fields = (method, path, status, request_id, face, connector, outcome, latency_ms, remote)
    ts = logs._timestamp_of(created)
    assert ts == logs._timestamp(record)
    assert logs._json_line(ts, "aiohttp.access", *fields) == JsonFormatter().format(record) + "\n"
    assert logs._human_line(ts, "aiohttp.access", *fields) == HumanFormatter().format(record) + "\n"


@pytest.fixture
async def served(
    aiohttp_server: Any, aiohttp_client: Any, make_config: ConfigFactory, clock: FakeClock
) -> TestClient[Any, Any]:
    """The proxy as ``wa-blocklist serve`` serves it (its access logger), no test handler on ``aiohttp.access``."""
    server = await aiohttp_server(create_app(make_config(), clock=clock), access_log_class=RedactingAccessLogger)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    return client


@pytest.fixture
def records_made() -> Iterator[list[str]]:
    """The logger names of the LogRecords made meanwhile."""
    made: list[str] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        made.append(record.name)
        return record

    logging.setLogRecordFactory(counting)
    yield made
    logging.setLogRecordFactory(factory)


async def wait_for_lines(stream: io.StringIO, count: int) -> list[str]:
    for _ in range(200):
        if len(stream.getvalue().splitlines()) >= count:
            break
        await asyncio.sleep(0.01)
    return stream.getvalue().splitlines()


async def test_served_access_lines_come_from_the_template_in_batches(
    served: TestClient[Any, Any], restore_root_logging: None, records_made: list[str]
) -> None:
    stream = io.StringIO()
    setup_logging(stream)  # as `wa-blocklist serve` does: the only handler is the batching one
    for i in range(3):
        resp = await served.get(f"/healthz?access_token={GRAPH_TOKEN}&n={i}", headers={"X-Request-Id": f"cc-{i}"})
        assert resp.status == 200
    logged = [json.loads(line) for line in await wait_for_lines(stream, 3)]
    assert "aiohttp.access" not in records_made  # no LogRecord: the template wrote the lines
    assert [list(line) for line in logged] == [ACCESS_KEYS] * 3
    for i, line in enumerate(logged):
        path = f"/healthz?access_token={REDACTED}&n={i}"
        assert line["path"] == path and line["message"] == f"GET {path} 200" and GRAPH_TOKEN not in str(line)
        assert (line["request_id"], line["face"], line["outcome"], line["status"]) == (f"cc-{i}", "ops", "ok", 200)
        assert (line["logger"], line["level"], line["connector"], line["remote"]) == (
            "aiohttp.access", "info", "", "127.0.0.1"
        )  # fmt: skip
        assert isinstance(line["latency_ms"], float) and line["ts"].endswith("Z")

    # The logger's level still rules: above INFO, no access line.
    access = logging.getLogger("aiohttp.access")
    level = access.level
    access.setLevel(logging.WARNING)
    try:
        assert (await served.get("/healthz")).status == 200
        await asyncio.sleep(0.05)
    finally:
        access.setLevel(level)
    assert len(stream.getvalue().splitlines()) == 3


async def test_batched_lines_keep_their_order_and_are_never_lost(restore_root_logging: None) -> None:
    from wa_blocklist.proxy.base.logs import BatchingStreamHandler

    stream = io.StringIO()
    setup_logging(stream, as_json=False)
    [handler] = logging.getLogger().handlers
    assert isinstance(handler, BatchingStreamHandler)
    handler.add_line("access 1\n")
    handler.add_line("access 2\n")
    assert stream.getvalue() == ""  # waiting for the end of this loop iteration
    logging.getLogger("wa_blocklist.proxy.test").warning("made after the two requests")
    handler.add_line("access 3\n")
    await asyncio.sleep(0)  # the loop comes round: one write
    out = stream.getvalue().splitlines()
    assert out[:2] == ["access 1", "access 2"] and out[2].endswith("made after the two requests")
    assert out[3:] == ["access 3"]

    handler.add_line("access 4\n")
    handler.flush()  # what logging.shutdown() does at exit (a clean stop), or a handler's replacement
    assert stream.getvalue().splitlines()[-1] == "access 4"

    handler.add_line("access 5\n")
    setup_logging(io.StringIO())  # set up again: the old handler's waiting lines still reach its stream
    assert stream.getvalue().splitlines()[-1] == "access 5"

    many = BatchingStreamHandler(io.StringIO())
    for i in range(many.max_pending):  # a loop that never comes round still gets its lines written
        many.add_line(f"{i}\n")
    assert len(many.stream.getvalue().splitlines()) == many.max_pending
    many.close()


async def test_any_other_logging_set_up_gets_records(
    served: TestClient[Any, Any], restore_root_logging: None, records_made: list[str]
) -> None:
    stream = io.StringIO()
    setup_logging(stream)
    access = logging.getLogger("aiohttp.access")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            seen.append(record)
            return True

    keep = Keep()
    access.addFilter(keep)  # an operator's or a plugin's filter on the access logger
    try:
        assert (await served.get("/healthz")).status == 200
        await wait_for_lines(stream, 1)
    finally:
        access.removeFilter(keep)
    assert [r.name for r in seen] == ["aiohttp.access"] and "aiohttp.access" in records_made
    [line] = lines(stream)
    assert list(line) == ACCESS_KEYS and line["face"] == "ops"  # the same line, through logging


def test_the_access_line_times_the_request_from_the_middleware_not_the_loop_clock() -> None:
    """uvloop's loop clock, which aiohttp hands the access logger, moves in whole milliseconds: the line takes the
    span from the middleware's start instead, to the microsecond."""
    stream = io.StringIO()
    logger = logging.getLogger("test.access.latency")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        request = make_mocked_request("POST", f"/v21.0/{PNID}/messages")
        request[REQUEST_INFO] = RequestInfo("req-1", "gateway", started=time.perf_counter() - 0.0123)
        RedactingAccessLogger(logger, "").log(request, web.Response(status=200), 0.012)
    finally:
        logger.removeHandler(handler)
    latency = json.loads(stream.getvalue())["latency_ms"]
    assert 12.3 <= latency < 1000 and latency != 12.0
