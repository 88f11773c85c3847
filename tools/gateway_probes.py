"""Probe the outbound gateway with hand-written request kinds and count how many reach a blocked user.

Each probe is sent as raw bytes to a running proxy (real Redis, real aiohttp servers) whose Graph API is the
test suite's fake; what the fake receives is read the way Meta might read it (tests/meta_reading.py, every
reading at once). The same script measures any version of the proxy: run it with that version first on
``PYTHONPATH``, e.g. for the code before issue 13::

    git worktree add /tmp/before f95307a
    PYTHONPATH=/tmp/before .venv/bin/python tools/gateway_probes.py
    .venv/bin/python tools/gateway_probes.py            # this tree

Prints one line per probe and the totals: ``reached`` (a blocked user reached under some reading of what Meta got)
and the other failures a probe can show (a supervisor's block lifted, an unknown connector's send unchecked, an
allowed gzip send broken, one of the proxy's own faces forwarded, a 5xx from input).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))

from aiohttp.test_utils import TestServer
from meta_reading import World, reaches

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.appkeys import SERVICE
from wa_blocklist.proxy.blocklist.service import Actor, InboundUser
from wa_blocklist.proxy.config import parse_config

from fakes import FakeContactCenter, FakeGraph

PNID = "111111111111111"
PNID_NO_COUNTRY = "333333333333333"
UNKNOWN = "999999999999999"
BLOCKED = "573001234567"
ALLOWED = "573009876543"
BLOCKED_MESSAGE = "wamid.HBgMNTczMDAxMjM0NTY3FQIAEhgUM0VCMEJMT0NLRUQA"
BLOCKED_JOIN = "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ"
GROUP = "Y2FwaV9ncm91cDoxNzA1NTU1MDEzOToxMjAzNjM0MDQ2OTQyMzM4MjAZD"
TEXT = {"messaging_product": "whatsapp", "type": "text", "text": {"body": "hola"}}


@dataclass
class Probe:
    name: str
    method: str
    target: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    check: str = "reach"
    """reach | lift (a supervisor's block lifted) | unknown (unchecked send) | gzip_ok | own_face | no_5xx"""


def send(to: Any, **extra: Any) -> bytes:
    return json.dumps({**TEXT, "to": to, **extra}).encode()


JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
M = f"/v21.0/{PNID}/messages"
BATCH_ITEM = [{"method": "POST", "relative_url": f"v21.0/{PNID}/messages", "body": f"to={BLOCKED}&type=text"}]
BATCH_FORM = urlencode({"batch": json.dumps(BATCH_ITEM)}).encode()


def multipart(
    parts: list[tuple[str, str, str | None]], boundary: str = "probeboundary"
) -> tuple[bytes, dict[str, str]]:
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n{value}\r\n".encode()
    out += f"--{boundary}--\r\n".encode()
    return out, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def probes() -> list[Probe]:
    file_to, file_to_headers = multipart(
        [("messaging_product", "whatsapp", None), ("to", BLOCKED, "to.txt"), ("type", "text", None)]
    )
    batch_part, batch_part_headers = multipart(
        [("messaging_product", "whatsapp", None), ("batch", json.dumps(BATCH_ITEM), None), ("file", "xx", "a.jpg")]
    )
    deep = b'{"to": "' + ALLOWED.encode() + b'", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    return [
        # Graph batch requests anywhere
        Probe("batch at the root (form)", "POST", "/v21.0/", BATCH_FORM, FORM),
        Probe("batch at /me (form)", "POST", "/v21.0/me", BATCH_FORM, FORM),
        Probe("batch at /{pnid} (JSON)", "POST", f"/v21.0/{PNID}", json.dumps({"batch": BATCH_ITEM}).encode(), JSON),
        Probe("batch in the query of /{pnid}", "POST", f"/v21.0/{PNID}?{BATCH_FORM.decode()}"),
        Probe("batch part in a media upload", "POST", f"/v21.0/{PNID}/media", batch_part, batch_part_headers),
        Probe("batch in a form body on the media edge", "POST", f"/v21.0/{PNID}/media", BATCH_FORM, FORM),
        Probe(
            "batch in a template creation body",
            "POST",
            "/v21.0/102290129340398/message_templates",
            json.dumps({"name": "x", "batch": BATCH_ITEM}).encode(),
            JSON,
        ),
        # methods and overrides
        Probe("GET with ?method=post", "GET", f"{M}?method=post&to={BLOCKED}&type=text"),
        Probe("duplicated ?method (get, then post)", "POST", f"{M}?method=get&method=post", send(BLOCKED), JSON),
        Probe("GET with body method=post", "GET", M, f"method=post&to={BLOCKED}&type=text".encode(), FORM),
        Probe(
            "X-HTTP-Method-Override: POST on GET",
            "GET",
            f"{M}?to={BLOCKED}&type=text",
            headers={"X-HTTP-Method-Override": "POST"},
        ),
        Probe("PUT on messages", "PUT", M, send(BLOCKED), JSON),
        Probe("PATCH on messages", "PATCH", M, send(BLOCKED), JSON),
        # duplicated parameters
        Probe("to twice in a form", "POST", M, f"to={ALLOWED}&to={BLOCKED}&type=text".encode(), FORM),
        Probe("to in query and JSON body", "POST", f"{M}?to={ALLOWED}", send(BLOCKED), JSON),
        Probe("PHP array to[]", "POST", M, f"to[]={BLOCKED}&type=text".encode(), FORM),
        Probe("upper-case TO key", "POST", M, json.dumps({**TEXT, "TO": BLOCKED}).encode(), JSON),
        # paths Meta may read differently
        Probe("messages;x=1", "POST", f"{M};x=1", send(BLOCKED), JSON),
        Probe("{pnid};x=1/messages", "POST", f"/v21.0/{PNID};x=1/messages", send(BLOCKED), JSON),
        Probe("messages%20", "POST", f"{M}%20", send(BLOCKED), JSON),
        Probe("messages%00", "POST", f"{M}%00", send(BLOCKED), JSON),
        Probe("messages%2ejson", "POST", f"{M}%2ejson", send(BLOCKED), JSON),
        Probe("messages.json", "POST", f"{M}.json", send(BLOCKED), JSON),
        Probe("messages/x", "POST", f"{M}/x", send(BLOCKED), JSON),
        Probe("doubled version", "POST", f"/v21.0/v21.0/{PNID}/messages", send(BLOCKED), JSON),
        Probe("node ID with a leading zero", "POST", f"/v21.0/0{PNID}/messages", send(BLOCKED), JSON),
        Probe("node ID with +", "POST", f"/v21.0/+{PNID}/messages", send(BLOCKED), JSON),
        Probe("node ID with %2B", "POST", f"/v21.0/%2B{PNID}/messages", send(BLOCKED), JSON),
        Probe("edge in capitals", "POST", f"/V21.0/{PNID}/MESSAGES", send(BLOCKED), JSON),
        # bodies read differently
        Probe("JSON with a UTF-8 BOM", "POST", M, b"\xef\xbb\xbf" + send(BLOCKED), JSON),
        Probe("JSON in UTF-16", "POST", M, send(BLOCKED).decode().encode("utf-16"), JSON),
        Probe("multipart to as a file part", "POST", M, file_to, file_to_headers),
        Probe("recipient_type group with a phone number", "POST", M, send(BLOCKED, recipient_type="group"), JSON),
        Probe(
            "calls action [connect]",
            "POST",
            f"/v21.0/{PNID}/calls",
            json.dumps({"messaging_product": "whatsapp", "to": BLOCKED, "action": ["connect"]}).encode(),
            JSON,
        ),
        Probe(
            "JSON labelled as a form, with &to= in a text",
            "POST",
            M,
            json.dumps(
                {"messaging_product": "whatsapp", "to": ALLOWED, "type": "text", "text": {"body": f"x&to={BLOCKED}"}}
            ).encode(),
            FORM,
        ),
        Probe(
            "gzip send to the blocked user",
            "POST",
            M,
            gzip.compress(send(BLOCKED)),
            {**JSON, "Content-Encoding": "gzip"},
        ),
        # number forms
        Probe("trunk prefix +57 (0) 300...", "POST", M, send("+57 (0) 300 123 4567"), JSON),
        Probe(
            "national number, connector without default_country",
            "POST",
            f"/v21.0/{PNID_NO_COUNTRY}/messages",
            send("300 123 4567"),
            JSON,
        ),
        Probe("00 international prefix", "POST", M, send("0057 300 123 4567"), JSON),
        # reaching the user without a message
        Probe(
            "read receipt on the blocked user's message",
            "POST",
            M,
            json.dumps({"messaging_product": "whatsapp", "status": "read", "message_id": BLOCKED_MESSAGE}).encode(),
            JSON,
        ),
        Probe(
            "typing indicator on the blocked user's message",
            "POST",
            M,
            json.dumps(
                {
                    "messaging_product": "whatsapp",
                    "status": "read",
                    "message_id": BLOCKED_MESSAGE,
                    "typing_indicator": {"type": "text"},
                }
            ).encode(),
            JSON,
        ),
        Probe(
            "approve the blocked user's join request",
            "POST",
            f"/v21.0/{GROUP}/join_requests",
            json.dumps({"messaging_product": "whatsapp", "join_requests": [BLOCKED_JOIN]}).encode(),
            JSON,
        ),
        Probe(
            "add the blocked user to a group",
            "POST",
            f"/v21.0/{GROUP}/participants",
            json.dumps({"messaging_product": "whatsapp", "participants": [{"user": BLOCKED}]}).encode(),
            JSON,
        ),
        # other failures
        Probe(
            "lift a supervisor's block with DELETE block_users",
            "DELETE",
            f"/v21.0/{PNID}/block_users",
            json.dumps({"messaging_product": "whatsapp", "block_users": [{"user": BLOCKED}]}).encode(),
            JSON,
            check="lift",
        ),
        Probe(
            "send from an unknown phone number ID",
            "POST",
            f"/v21.0/{UNKNOWN}/messages",
            send(ALLOWED),
            JSON,
            check="unknown",
        ),
        Probe(
            "gzip send to an allowed user arrives readable",
            "POST",
            M,
            gzip.compress(send(ALLOWED)),
            {**JSON, "Content-Encoding": "gzip"},
            check="gzip_ok",
        ),
        Probe(
            "/ADMIN/api/connectors forwarded",
            "GET",
            "/ADMIN/api/connectors",
            headers={"Authorization": "Bearer admin-token"},
            check="own_face",
        ),
        Probe("/Webhooks/whatsapp forwarded", "GET", "/Webhooks/whatsapp?hub.verify_token=x", check="own_face"),
        Probe("deeply nested JSON", "POST", M, deep, JSON, check="no_5xx"),
        Probe("block_users list ?after=nan", "GET", f"/v21.0/{PNID}/block_users?after=nan", check="no_5xx"),
    ]


def config(redis_url: str, graph_url: str, center_url: str) -> Any:
    connector = {
        "app_secret": "s", "verify_token": "v", "forward_webhooks_to": center_url,
    }  # fmt: skip
    return parse_config(
        {
            "graph": {"base_url": graph_url},
            "store": {"redis_url": redis_url},
            "admin": {"tokens": [{"name": "supervisor", "token": "admin-token-0001", "role": "admin"}]},
            "connectors": [
                {"phone_number_id": PNID, "name": "Ventas", "display_number": "+57 601 555 0100",
                 "default_country": "CO", **connector},
                {"phone_number_id": PNID_NO_COUNTRY, "name": "Sin país", "display_number": "+57 601 555 0199",
                 **connector},
            ],
        },
        env={},
    )  # fmt: skip


async def exchange(port: int, probe: Probe) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"{probe.method} {probe.target} HTTP/1.1\r\nHost: graph.facebook.com\r\nConnection: close\r\n"
    headers = {"Authorization": "Bearer EAAG-probe", **probe.headers}
    if probe.body or probe.method in ("POST", "PUT", "PATCH", "DELETE"):
        headers["Content-Length"] = str(len(probe.body))
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(head.encode("latin-1") + b"\r\n" + probe.body)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/") else 0
    return status, raw.partition(b"\r\n\r\n")[2]


async def run() -> int:
    from conftest import RedisServer  # the suite's real redis-server helper

    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp))
        redis.start()
        graph = FakeGraph()
        center = FakeContactCenter(secrets={})
        try:
            graph_url = await graph.start()
            center_url = await center.start()
            app = create_app(config(redis.url, graph_url, center_url))
            server = TestServer(app)
            await server.start_server()
            service = app[SERVICE]
            for pnid in (PNID, PNID_NO_COUNTRY):
                try:
                    await service.record_inbound(
                        pnid, [InboundUser(wa_id=BLOCKED)], messages=[(BLOCKED_MESSAGE, 0)],
                        join_requests=[(BLOCKED_JOIN, 0)],
                    )  # fmt: skip
                except TypeError:  # a version that does not learn message and join-request owners
                    await service.record_inbound(pnid, [InboundUser(wa_id=BLOCKED)])
                await service.block(pnid, BLOCKED, actor=Actor("supervisor", "admin_api"))
            world = World(
                pnid=PNID, country_code="57", blocked_numbers={BLOCKED},
                blocked_messages={BLOCKED_MESSAGE}, blocked_join_requests={BLOCKED_JOIN},
            )  # fmt: skip
            world_no_country = World(pnid=PNID_NO_COUNTRY, country_code="57", blocked_numbers={BLOCKED})
            failures = 0
            counts: dict[str, int] = {}
            assert server.port is not None
            for probe in probes():
                before = len(graph.requests)
                status, _body = await exchange(server.port, probe)
                arrived = graph.requests[before:]
                bad, what = judge(probe, status, arrived, world, world_no_country)
                if probe.check == "lift":
                    still = await service.check(PNID, BLOCKED)
                    bad, what = still is None, "the supervisor's block was lifted" if still is None else ""
                    if bad is False:
                        await service.block(PNID, BLOCKED, actor=Actor("supervisor", "admin_api"))
                counts[probe.check] = counts.get(probe.check, 0) + int(bad)
                failures += int(bad)
                mark = "FAIL" if bad else "ok  "
                print(f"{mark} {status:3d} {probe.check:8s} {probe.name}{': ' + what if what else ''}")
            total = len(probes())
            reach_total = sum(1 for p in probes() if p.check == "reach")
            print(f"\nreached a blocked user: {counts.get('reach', 0)} of {reach_total} reach probes")
            print(f"other failures: { {k: v for k, v in counts.items() if k != 'reach'} } ({total} probes in all)")
            await server.close()
            return failures
        finally:
            await graph.close()
            await center.close()
            redis.stop()


def judge(probe: Probe, status: int, arrived: list[Any], world: World, world_no_country: World) -> tuple[bool, str]:
    if probe.check == "reach":
        why: list[str] = []
        for seen in arrived:
            target = getattr(seen, "raw_path", "") or (seen.path + ("?" + seen.query if seen.query else ""))
            for w in (world, world_no_country):
                why += reaches(w, seen.method, target, seen.headers, seen.body)
        return bool(why), "; ".join(sorted(set(why)))[:160]
    if probe.check == "unknown":
        return bool(arrived), "forwarded unchecked" if arrived else ""
    if probe.check == "gzip_ok":
        if not arrived:
            return True, f"not forwarded ({status})"
        seen = arrived[0]
        try:
            readable = (
                json.loads(gzip.decompress(seen.body))
                if seen.headers.get("Content-Encoding") == "gzip"
                else (json.loads(seen.body))
            )
        except (OSError, ValueError):
            return True, "Meta got a body its Content-Encoding does not describe"
        return readable.get("to") != ALLOWED, ""
    if probe.check == "own_face":
        return bool(arrived), "sent to the Graph API" if arrived else ""
    if probe.check == "no_5xx":
        return status >= 500, f"HTTP {status}" if status >= 500 else ""
    return False, ""


if __name__ == "__main__":
    sys.exit(1 if asyncio.run(run()) else 0)
