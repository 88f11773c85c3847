"""Every program in docs/plugins.md runs as written, against a running ``wa-blocklist serve``.

Each ```python block of the page is preceded by ``<!-- snippet: NAME -->``; the block is written to a file and run
with the interpreter as a bot developer would run it (``python bot.py``), with its settings in the environment: the
proxy's config file (direct mode), the proxy's address and an admin token (HTTP mode), and the proxy as the Graph
API (the proxy forwards to a fake Graph API that records what reached "Meta"). Bots that serve webhooks are sent
signed Meta payloads. A snippet that does not work as written, or a python block that no test runs, fails here.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from wa_blocklist.proxy.blocklist.service import BlocklistService, InboundUser
from wa_blocklist.proxy.config import load_config
from wa_blocklist.proxy.store.client import open_store

from fakes import FakeGraph, sign
from plugin_support import ALLOWED, BLOCKED, dumps, messages_payload
from support import ADMIN_TOKEN, APP_SECRET, PNID, VERIFY_TOKEN, Proxy, base_config_data, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
PAGE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
SNIPPET = re.compile(r"<!-- snippet: (\w+) -->\n```python\n(.*?)\n```", re.S)
STRANGER = "573009998877"  # never wrote; a forged webhook must not make them "recently active"


def snippets() -> dict[str, str]:
    text = PAGE.read_text()
    found = dict(SNIPPET.findall(text))
    assert len(found) == text.count("```python"), "every python block of docs/plugins.md needs a snippet name"
    return found


@dataclass
class Deployment:
    """A running proxy on its embedded store, a fake Graph API behind it, and a directory for the bot's files."""

    proxy: Proxy
    config: Path
    graph: FakeGraph
    directory: Path
    env: dict[str, str]

    def replies(self) -> list[tuple[str, str]]:
        """(to, text) of every WhatsApp send that reached the fake Graph API."""
        sends = [r.json() for r in self.graph.requests if r.path.endswith("/messages")]
        return [(s["to"], s.get("text", {}).get("body", "")) for s in sends]

    @asynccontextmanager
    async def service(self) -> AsyncIterator[BlocklistService]:
        config = load_config(self.config)
        async with open_store(config.store) as store:  # shares the proxy's running embedded Redis
            yield BlocklistService(store, config)

    async def wrote(self, *wa_ids: str) -> None:
        async with self.service() as service:
            await service.record_inbound(PNID, [InboundUser(wa_id=w) for w in wa_ids])

    async def active(self, wa_id: str) -> bool:
        async with self.service() as service:
            return await service.last_inbound_ms(PNID, wa_id) is not None

    async def block(self, wa_id: str) -> None:
        await self.wrote(wa_id)
        status, _ = self.proxy.call("POST", f"/admin/api/connectors/{PNID}/blocks", {"number": wa_id})
        assert status == 201


@pytest.fixture
async def deployment(tmp_path: Path, fake_graph: FakeGraph) -> AsyncIterator[Deployment]:
    assert fake_graph.server is not None
    graph_url = str(fake_graph.server.make_url("")).rstrip("/")
    fake_graph.respond(  # a send, as Meta answers it (pywa reads contacts[0] and messages[0])
        "POST", r"/messages$", 200,
        {"messaging_product": "whatsapp", "contacts": [{"input": ALLOWED, "wa_id": ALLOWED}],
         "messages": [{"id": "wamid.REPLY"}]},
    )  # fmt: skip
    fake_graph.respond("POST", r"^/v3/conversations/", 200, {"id": "reply-1"})  # the Bot Framework connector
    data = base_config_data("")
    data["store"] = {"redis_url": "", "data_dir": "./data"}
    data["graph"] = {"base_url": graph_url}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    proxy = Proxy(config, free_port())
    bot_dir = tmp_path / "bot"
    bot_dir.mkdir()
    env = {
        **os.environ,
        "WA_PHONE_NUMBER_ID": PNID,
        "WA_ACCESS_TOKEN": "bot-access-token",
        "META_APP_SECRET": APP_SECRET,
        "META_VERIFY_TOKEN": VERIFY_TOKEN,
        "GRAPH_URL": f"http://127.0.0.1:{proxy.port}",
        "WA_BLOCKLIST_CONFIG": str(config),
        "WA_BLOCKLIST_URL": f"http://127.0.0.1:{proxy.port}",
        "WA_BLOCKLIST_TOKEN": ADMIN_TOKEN,
        "PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    try:
        proxy.start()
        yield Deployment(proxy, config, fake_graph, bot_dir, env)
    finally:
        proxy.stop()


async def run_program(deployment: Deployment, name: str) -> str:
    """Run a snippet that ends by itself; returns its standard output."""
    path = deployment.directory / f"{name}_bot.py"  # not httpx.py: it would shadow the package
    path.write_text(snippets()[name])
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(path), cwd=deployment.directory, env=deployment.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def serve_program(deployment: Deployment, name: str, use: Callable[[str], Awaitable[None]]) -> None:
    """Start a snippet that serves (a bot), call ``use`` with its base URL, then stop it as an operator would."""
    path = deployment.directory / f"{name}_bot.py"  # not httpx.py: it would shadow the package
    path.write_text(snippets()[name])
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(path), cwd=deployment.directory, env=deployment.env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    port = int(deployment.env["PORT"])
    try:
        await listening(process, port)
        await use(f"http://127.0.0.1:{port}")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert "Traceback" not in err.decode(), err.decode()


async def listening(process: asyncio.subprocess.Process, port: int, within: float = 30.0) -> None:
    """Wait for a started bot to accept connections (its start-up), or fail with what it printed."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if process.returncode is not None:
            assert process.stderr is not None
            raise AssertionError(f"the bot exited: {(await process.stderr.read()).decode()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("the bot did not start listening") from None
            await asyncio.sleep(0.05)  # polling a child process's start-up
            continue
        writer.close()
        await writer.wait_closed()
        return


async def eventually(predicate: Callable[[], bool], what: str, within: float = 15.0) -> None:
    """Wait for something a bot does in the background after answering (pywa handles updates after its 200)."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # polling another process's effect


def signed(body: bytes) -> dict[str, str]:
    return {"X-Hub-Signature-256": sign(APP_SECRET, body), "Content-Type": "application/json"}


def test_every_python_block_is_run_by_a_test() -> None:
    assert set(snippets()) == {"client", "pywa", "httpx", "botframework", "asgi", "aiohttp"}


async def test_client_snippet(deployment: Deployment) -> None:
    await deployment.wrote(BLOCKED)  # Meta's 24-hour rule: the user wrote, so a block is allowed
    out = await run_program(deployment, "client")
    assert out.splitlines() == [
        "blocked: False",
        f"created: True {BLOCKED} sales-bot",
        "blocked: True",
        f"listed: ['{BLOCKED}'] None",
        "blocked: False",
    ]
    status, _ = deployment.proxy.call("GET", f"/admin/api/connectors/{PNID}/blocks/{BLOCKED}")
    assert status == 404


async def test_httpx_snippet(deployment: Deployment) -> None:
    await deployment.block(BLOCKED)
    out = await run_program(deployment, "httpx")
    assert out.splitlines() == [f"{BLOCKED} 400 139900", f"{ALLOWED} 200 None"]
    assert deployment.replies() == [(ALLOWED, "Hello")]


async def test_pywa_snippet(deployment: Deployment) -> None:
    await deployment.block(BLOCKED)

    async def use(bot: str) -> None:
        body = dumps(messages_payload(PNID, (BLOCKED, "", "insult"), (ALLOWED, "", "hello")))
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{bot}/webhooks/whatsapp", data=body, headers=signed(body)) as answer:
                assert answer.status == 200
            forged = dumps(messages_payload(PNID, (STRANGER, "", "hi")))
            async with http.post(f"{bot}/webhooks/whatsapp", data=forged, headers={"X-Hub-Signature-256": "x"}):
                pass
        # pywa answers first and handles the update afterwards: its reply is what shows it was handled
        await eventually(lambda: bool(deployment.replies()), "the bot's reply")

    await serve_program(deployment, "pywa", use)
    assert deployment.replies() == [(ALLOWED, "You said: hello")]  # the blocked user's message was removed first
    assert not await deployment.active(STRANGER)


async def test_botframework_snippet(deployment: Deployment) -> None:
    await deployment.block(BLOCKED)
    assert deployment.graph.server is not None
    connector = str(deployment.graph.server.make_url("")).rstrip("/")

    async def use(bot: str) -> None:
        async with aiohttp.ClientSession() as http:
            for n, user in enumerate((BLOCKED, ALLOWED)):
                activity = {
                    "type": "message", "id": f"in-{n}", "text": f"hi {n}", "channelId": "whatsapp",
                    "serviceUrl": connector, "from": {"id": user}, "recipient": {"id": PNID},
                    "conversation": {"id": f"conversation-{user}"},
                }  # fmt: skip
                async with http.post(f"{bot}/api/messages", json=activity) as answer:
                    assert answer.status == 201

    await serve_program(deployment, "botframework", use)
    replies = [(r.path.split("/")[3], r.json()["text"]) for r in deployment.graph.requests]
    assert replies == [(f"conversation-{ALLOWED}", "You said: hi 1")]


async def test_asgi_snippet(deployment: Deployment) -> None:
    await deployment.block(BLOCKED)
    seen: dict[str, Any] = {}

    async def use(bot: str) -> None:
        url = f"{bot}/webhooks/whatsapp"
        async with aiohttp.ClientSession() as http:
            params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"}
            async with http.get(url, params=params) as answer:
                seen["challenge"] = await answer.text()
            both = dumps(messages_payload(PNID, (BLOCKED, "", "insult"), (ALLOWED, "", "hello")))
            async with http.post(url, data=both, headers=signed(both)) as answer:
                seen["both"] = (answer.status, await answer.json())
            only_blocked = dumps(messages_payload(PNID, (BLOCKED, "", "again")))
            async with http.post(url, data=only_blocked, headers=signed(only_blocked)) as answer:
                seen["only_blocked"] = (answer.status, await answer.text())
            forged = dumps(messages_payload(PNID, (STRANGER, "", "hi")))
            async with http.post(url, data=forged, headers={"X-Hub-Signature-256": "sha256=00"}) as answer:
                seen["forged"] = answer.status

    await serve_program(deployment, "asgi", use)
    assert seen == {
        "challenge": "42",
        "both": (200, {"handled": [ALLOWED]}),
        "only_blocked": (200, "ok"),  # answered by the middleware: the bot was not called
        "forged": 403,  # the bot's own signature check still rejects forgeries
    }
    assert not await deployment.active(STRANGER)


async def test_aiohttp_snippet(deployment: Deployment) -> None:
    await deployment.block(BLOCKED)
    seen: dict[str, Any] = {}

    async def use(bot: str) -> None:
        async with aiohttp.ClientSession() as http:
            both = dumps(messages_payload(PNID, (BLOCKED, "", "insult"), (ALLOWED, "", "hello")))
            async with http.post(f"{bot}/webhooks/whatsapp", data=both, headers=signed(both)) as answer:
                seen["webhook"] = answer.status
            for user in (BLOCKED, ALLOWED):
                async with http.post(f"{bot}/notify", json={"to": user, "text": "offer"}) as answer:
                    seen[user] = await answer.json()
            forged = dumps(messages_payload(PNID, (STRANGER, "", "hi")))
            async with http.post(f"{bot}/webhooks/whatsapp", data=forged, headers={"X-Hub-Signature-256": "x"}) as a:
                seen["forged"] = a.status

    await serve_program(deployment, "aiohttp", use)
    assert seen == {
        "webhook": 200,
        BLOCKED: {"sent": False, "refused_code": 139900},
        ALLOWED: {"sent": True, "refused_code": None},
        "forged": 403,
    }
    assert deployment.replies() == [(ALLOWED, "You said: hello"), (ALLOWED, "offer")]
    assert not await deployment.active(STRANGER)
