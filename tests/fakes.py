"""Real aiohttp servers standing in for Meta's Graph API and for a contact center.

They record what reached them, so tests can assert what was (and was not) forwarded, byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    raw_path: str = ""
    """The request target exactly as received (path and query, still percent-encoded)."""

    def json(self) -> Any:
        return json.loads(self.body)


Responder = Callable[[web.Request, bytes], "web.StreamResponse | asyncio.Future[web.StreamResponse]"]


@dataclass
class FakeGraph:
    """A fake Graph API. By default every request gets 200 ``{"messaging_product": "whatsapp", ...}``.

    ``respond(method, path_regex, status, body)`` sets a canned answer; ``delay`` makes every answer late;
    ``handlers`` may hold async callables for full control.
    """

    requests: list[Recorded] = field(default_factory=list)
    canned: list[tuple[str, re.Pattern[str], int, Any]] = field(default_factory=list)
    delay: float = 0.0
    server: TestServer | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def respond(self, method: str, path_regex: str, status: int, body: Any) -> None:
        self.canned.insert(0, (method.upper(), re.compile(path_regex), status, body))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(request.method, request.path, request.query_string, dict(request.headers), body, request.raw_path)
        )
        self.arrived.set()
        if self.delay:
            await asyncio.sleep(self.delay)  # a deliberately slow upstream, not synchronisation
        for method, pattern, status, canned in self.canned:
            if method in (request.method, "*") and pattern.search(request.path):
                return web.json_response(canned, status=status)
        return web.json_response({"messaging_product": "whatsapp", "contacts": [], "messages": [{"id": "wamid.FAKE"}]})

    async def start(self) -> str:
        # auto_decompress off: the body is recorded as it arrived (a gzip body must arrive gzip-compressed).
        app = web.Application(client_max_size=1024**3, handler_args={"auto_decompress": False})
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app)
        await self.server.start_server()
        return str(self.server.make_url("")).rstrip("/")

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


@dataclass
class FakeContactCenter:
    """A fake contact center webhook endpoint that verifies ``X-Hub-Signature-256`` like a real one would.

    ``secrets`` maps a phone number ID to the app secret its payloads must be signed with; a payload whose
    signature does not verify is answered 403 and recorded in ``rejected``.
    """

    secrets: dict[str, str]
    received: list[Recorded] = field(default_factory=list)
    rejected: list[Recorded] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0
    server: TestServer | None = None

    def _valid(self, body: bytes, header: str) -> bool:
        for secret in self.secrets.values():
            expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            if hmac.compare_digest(expected, header):
                return True
        return False

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record = Recorded(request.method, request.path, request.query_string, dict(request.headers), body)
        if self.delay:
            await asyncio.sleep(self.delay)  # a deliberately slow contact center, not synchronisation
        if not self._valid(body, request.headers.get("X-Hub-Signature-256", "")):
            self.rejected.append(record)
            return web.Response(status=403, text="bad signature")
        self.received.append(record)
        return web.Response(status=self.status, text="ok")

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/webhooks/whatsapp", self._handle)
        self.server = TestServer(app)
        await self.server.start_server()
        return str(self.server.make_url("/webhooks/whatsapp"))

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


def sign(secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256`` value for a body, as Meta computes it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
