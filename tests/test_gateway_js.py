"""A real JavaScript client, whatsapp-api-js (npm, pinned in tests/js), driving the gateway under Node.

Its sends, template, media upload, media URL lookup and download, and mark-as-read with a typing indicator go
through the proxy unchanged for an allowed user; for a blocked user the library hands back our Graph error (it
returns error bodies rather than throwing). The script is tests/js/gateway_client.mjs.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from wa_blocklist.proxy.blocklist.service import Actor, InboundUser
from wa_blocklist.proxy.graph.errors import RECIPIENT_BLOCKED

from fakes import FakeGraph
from support import PNID, require_binary

JS = Path(__file__).resolve().parent / "js"
BLOCKED = "573001234567"
ALLOWED = "573009876543"
MEDIA_ID = "4490709327384033"


@pytest.fixture
def node() -> str:
    binary = require_binary("node")
    if not (JS / "node_modules" / "whatsapp-api-js").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail("tests/js/node_modules is missing in CI (make test runs npm ci)")
        pytest.skip("whatsapp-api-js not installed (cd tests/js && npm ci)")
    return binary


async def test_whatsapp_api_js_works_unchanged_for_allowed_users_and_gets_our_refusal_for_blocked_ones(
    node: str, client: Any, service: Any, fake_graph: FakeGraph
) -> None:
    await service.record_inbound(
        PNID,
        [InboundUser(wa_id=BLOCKED), InboundUser(wa_id=ALLOWED)],
        messages=[("wamid.FROM_BLOCKED", 0), ("wamid.FROM_ALLOWED", 1)],
    )
    await service.block(PNID, BLOCKED, actor=Actor("supervisor", "admin_api"))
    assert fake_graph.server is not None
    graph_url = str(fake_graph.server.make_url("")).rstrip("/")
    fake_graph.respond("POST", r"/media$", 200, {"id": MEDIA_ID})
    fake_graph.respond(
        "GET",
        rf"/v21.0/{MEDIA_ID}$",
        200,
        {
            "messaging_product": "whatsapp",
            "id": MEDIA_ID,
            "mime_type": "image/jpeg",
            "url": f"{graph_url}/whatsapp_business/attachments/?mid={MEDIA_ID}",
        },
    )
    proxy = str(client.make_url("")).rstrip("/")
    process = await asyncio.create_subprocess_exec(
        node,
        str(JS / "gateway_client.mjs"),
        proxy,
        PNID,
        ALLOWED,
        BLOCKED,
        "wamid.FROM_ALLOWED",
        "wamid.FROM_BLOCKED",
        cwd=JS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    out = json.loads(stdout)

    assert out["text"]["messages"] == [{"id": "wamid.FAKE"}]
    assert out["template"]["messages"] == [{"id": "wamid.FAKE"}]
    assert out["upload"] == {"id": MEDIA_ID}
    assert out["media"]["id"] == MEDIA_ID
    assert out["download"]["status"] == 200 and out["download"]["bytes"] > 0
    assert "error" not in out["read"]
    for refused in (out["blocked_text"], out["blocked_read"]):
        assert refused["error"]["code"] == RECIPIENT_BLOCKED
        assert "blocked on connector" in refused["error"]["error_data"]["details"]

    seen = [(r.method, r.path) for r in fake_graph.requests]
    assert seen == [
        ("POST", f"/v21.0/{PNID}/messages"),
        ("POST", f"/v21.0/{PNID}/messages"),
        ("POST", f"/v21.0/{PNID}/media"),
        ("GET", f"/v21.0/{MEDIA_ID}"),
        ("GET", "/whatsapp_business/attachments/"),  # the download goes where the URL points, not through the proxy
        ("POST", f"/v21.0/{PNID}/messages"),
    ]
    text, template, upload, _, _, read = fake_graph.requests
    assert text.json()["to"] == ALLOWED and text.json()["text"] == {"body": "hola"}
    assert template.json()["template"]["name"] == "hello_world"
    assert upload.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert b"\xff\xd8\xff\xe0" in upload.body
    assert upload.query == "messaging_product=whatsapp"
    assert read.json() == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.FROM_ALLOWED",
        "typing_indicator": {"type": "text"},
    }
    assert all(r.headers["Authorization"] == "Bearer EAAG-js-token" for r in fake_graph.requests[:4])
