"""Upstream HTTP clients compared on what the proxy asks of them: a small JSON send, keep-alive, 8 in flight.

``python -m bench.clients CLIENT URL COUNT``: COUNT POSTs of a send body to URL with CLIENT (``aiohttp``,
``aiohttp-tuned``, ``pyreqwest``, ``aiosonic``, ``pycurl``), 8 at a time on uvloop (pycurl: one reused easy handle,
no event loop: a lower bound for libcurl), after a warm-up of the same size. Under callgrind
(``valgrind --tool=callgrind --instr-atstart=no``) the measured part is switched on and off with
``callgrind_control`` so only the requests are counted; ``bench/instructions.sh clients`` does that for every client.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable

import uvloop

BODY = (
    b'{"messaging_product":"whatsapp","recipient_type":"individual","to":"573001234567","type":"text",'
    b'"text":{"body":"Hola, gracias por escribirnos"}}'
)
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer bench-graph-token", "X-Request-Id": "r-1"}
IN_FLIGHT = 8


def instrument(on: bool) -> None:
    """Switch callgrind's counting for this process (no-op when not under callgrind)."""
    if os.environ.get("WABL_CALLGRIND"):
        subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], capture_output=True)


async def drive(send: Callable[[], Awaitable[int]], count: int) -> None:
    async def worker(n: int) -> None:
        for _ in range(n):
            status = await send()
            assert status == 200, status

    for measured in (False, True):
        if measured:
            instrument(True)
        await asyncio.gather(*(worker(count // IN_FLIGHT) for _ in range(IN_FLIGHT)))
        if measured:
            instrument(False)


async def with_aiohttp(url: str, count: int, tuned: bool) -> None:
    import aiohttp

    if tuned:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=None, enable_cleanup_closed=False),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30),
        )
    else:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))

    async def send() -> int:
        async with session.post(url, data=BODY, headers=HEADERS, allow_redirects=False) as resp:
            await resp.read()
            return resp.status

    async with session:
        await drive(send, count)


async def with_pyreqwest(url: str, count: int) -> None:
    from datetime import timedelta

    from pyreqwest.client import ClientBuilder

    client = (
        ClientBuilder()
        .follow_redirects(False)
        .gzip(False)
        .connect_timeout(timedelta(seconds=10))
        .read_timeout(timedelta(seconds=30))
        .build()
    )

    async def send() -> int:
        resp = await client.post(url).headers(HEADERS).body_bytes(BODY).build().send()
        await resp.bytes()
        return resp.status

    async with client:
        await drive(send, count)


async def with_aiosonic(url: str, count: int) -> None:
    import aiosonic

    client = aiosonic.HTTPClient()

    async def send() -> int:
        resp = await client.post(url, data=BODY, headers=HEADERS)
        await resp.content()
        return int(resp.status_code)

    await drive(send, count)
    await client.aclose()


def with_pycurl(url: str, count: int) -> None:
    from io import BytesIO

    import pycurl

    curl = pycurl.Curl()
    curl.setopt(pycurl.URL, url)
    curl.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in HEADERS.items()])
    curl.setopt(pycurl.POSTFIELDS, BODY)
    curl.setopt(pycurl.TIMEOUT, 30)

    def send() -> int:
        buffer = BytesIO()
        curl.setopt(pycurl.WRITEDATA, buffer)
        curl.perform()
        return int(curl.getinfo(pycurl.RESPONSE_CODE))

    for measured in (False, True):
        if measured:
            instrument(True)
        for _ in range(count):
            assert send() == 200
        if measured:
            instrument(False)


def main() -> int:
    name, url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if name == "pycurl":
        with_pycurl(url, count)
        return 0
    runs = {
        "aiohttp": lambda: with_aiohttp(url, count, tuned=False),
        "aiohttp-tuned": lambda: with_aiohttp(url, count, tuned=True),
        "pyreqwest": lambda: with_pyreqwest(url, count),
        "aiosonic": lambda: with_aiosonic(url, count),
    }
    uvloop.run(runs[name]())
    return 0


if __name__ == "__main__":
    sys.exit(main())
