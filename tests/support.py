"""What the tests share that is not a fixture: the test config's constants and data, real Redis servers, a fake clock,
the proxy as a child process, the admin page in Chromium.

Test files import these from here; the fixtures stay in conftest.py (pytest discourages importing from conftest, and
from other test files).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from aiohttp import web
from hypothesis import HealthCheck, settings
from playwright.async_api import Locator, Page, expect

from wa_blocklist.proxy.blocklist.service import BlocklistService, InboundUser
from wa_blocklist.proxy.config import Config, load_config
from wa_blocklist.proxy.store.client import open_store
from wa_blocklist.proxy.store.embedded import redis_server_binary

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


def exhaustive(max_examples: int) -> settings:
    """Hypothesis settings for the request-grammar properties: many examples, reproducible (derandomized, no example
    database), no deadline, and no health check against function-scoped servers or large generated requests."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


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


class FakeClock:
    """A controllable clock (seconds since the epoch) for the 24-hour rule."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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


async def stand_in_graph(aiohttp_server: Any, app: web.Application, **gateway: Any) -> Callable[[dict[str, Any]], None]:
    """Serve ``app`` as the Graph API: a ``make_config`` change that points ``graph.base_url`` at it (and sets
    the ``gateway`` keys given)."""
    server = await aiohttp_server(app)

    def point(data: dict[str, Any]) -> None:
        data["graph"]["base_url"] = str(server.make_url("")).rstrip("/")
        if gateway:
            data.setdefault("gateway", {}).update(gateway)

    return point


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


# --- the proxy as a child process -----------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


async def record(config_path: Path, *wa_ids: str) -> None:
    config = load_config(config_path)
    async with open_store(config.store) as store:
        await BlocklistService(store, config).record_inbound(PNID, [InboundUser(wa_id=w) for w in wa_ids])


class Proxy:
    """``wa-blocklist serve`` as a child process on its embedded store."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._start(subprocess.PIPE)

    def _start(self, stderr: Any) -> None:
        """Start ``serve`` with its stderr going to ``stderr`` (a pipe or an open file) and wait until it serves."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wa_blocklist.proxy.cli", "serve", "--config", str(self.config),
             "--port", str(self.port)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
        wait_until(self.ready, timeout=30, what="the proxy to serve")

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"proxy exited: {self.process.stderr.read().decode() if self.process.stderr else ''}")
        try:
            self.call("GET", "/admin/api/connectors")
            return True
        except (urllib.error.URLError, ConnectionError):
            return False

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(30)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None


def redis_alive(data_dir: Path) -> int | None:
    """The pid of the live embedded redis-server of this data_dir (from its pidfile), or None."""
    try:
        pid = int((data_dir / "redis.pid").read_text())
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (OSError, ValueError):
        return None
    return pid if state != "Z" else None


class LoggedProxy(Proxy):
    """The proxy process with its stderr (the JSON log) going to a file the test can read."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        super().__init__(config, port)
        self.log = log

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self._start(sink)

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"proxy exited: {self.log.read_text()}")
        return super().ready()

    def connectors(self) -> list[str]:
        status, body = self.call("GET", "/admin/api/connectors")
        assert status == 200
        return [c["phone_number_id"] for c in body["connectors"]]

    def reloads(self, result: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(f'wabl_config_reloads_total{{result="{result}"}}'):
                    return float(line.split()[-1])
        return 0.0

    def hup(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def log_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]


# --- the admin page in Chromium --------------------------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


TIME_ZONE = "America/Bogota"  # UTC-5 all year: a date shown in UTC would be visibly wrong


OpenAdmin = Callable[..., Awaitable[Page]]

Closer = Callable[[httpx.AsyncClient], httpx.AsyncClient]
"""The ``closing`` fixture: registers an httpx client to be closed after the test and answers it."""


async def sign_in(page: Page, token: str = ADMIN_TOKEN) -> None:
    await page.get_by_label("Admin token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="WhatsApp connectors")).to_be_visible()


def blocks_dialog(page: Page) -> Locator:
    return page.get_by_role("dialog", name="Block Numbers")
