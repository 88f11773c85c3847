"""Sends served while many slow media uploads are open: a real ``wa-blocklist serve`` between a fake Graph API and
1,000 trickling uploads (one byte every 2 s) from 50 loopback addresses, then 300 timed sends.

Run by hand from the repository root: ``.venv/bin/python -m bench.slow_uploads`` (Redis at ``REDIS_URL``, default
``redis://127.0.0.1:6379/7``; ``UPLOADS``, ``ADDRESSES`` and ``SENDS`` change the load). It prints how the uploads
were answered (streamed up to ``gateway.uploads_total``, the rest 429 at once) and the sends' statuses and latency.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

PNID = "106540352242922"
UPLOADS = int(os.environ.get("UPLOADS", "1000"))
ADDRESSES = int(os.environ.get("ADDRESSES", "50"))
SENDS = int(os.environ.get("SENDS", "300"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def upstream(port: int) -> tuple[web.AppRunner, dict[str, int]]:
    seen = {"uploads_open": 0, "uploads_max": 0, "sends": 0}

    async def media(request: web.Request) -> web.Response:
        seen["uploads_open"] += 1
        seen["uploads_max"] = max(seen["uploads_max"], seen["uploads_open"])
        try:
            async for _ in request.content.iter_any():
                pass
        except ConnectionError:  # the proxy abandoned the upload (the caller hung up or was cut)
            pass
        finally:
            seen["uploads_open"] -= 1
        return web.json_response({"id": "1"})

    async def messages(request: web.Request) -> web.Response:
        await request.read()
        seen["sends"] += 1
        return web.json_response({"messaging_product": "whatsapp", "messages": [{"id": "wamid.X"}]})

    app = web.Application()
    app.router.add_post("/v21.0/{pnid}/media", media)
    app.router.add_post("/v21.0/{pnid}/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, seen


async def slow_upload(address: str, port: int, outcome: dict[str, int], stop: asyncio.Event) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    except OSError:
        outcome["connect_failed"] += 1
        return
    writer.write(
        (
            f"POST /v21.0/{PNID}/media HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    first = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
    writer.write(f"{len(first):x}\r\n".encode() + first + b"\r\n")
    await writer.drain()
    status = "open"
    try:
        while not stop.is_set():
            try:
                line = await asyncio.wait_for(reader.readline(), timeout=2)
            except TimeoutError:
                writer.write(b"1\r\nx\r\n")  # one byte every 2 s
                await writer.drain()
                continue
            status = line.split()[1].decode() if line else "closed"
            break
    except (ConnectionError, OSError):
        status = "reset"
    outcome[status] = outcome.get(status, 0) + 1
    writer.close()


def start_proxy(graph_port: int, port: int) -> subprocess.Popen[bytes]:
    """``wa-blocklist serve`` with the shipped config, pointed at the fake Graph API and a Redis."""
    work = Path(tempfile.mkdtemp())
    config = yaml.safe_load(Path("config.yaml").read_text())
    config["graph"]["base_url"] = f"http://127.0.0.1:{graph_port}"
    config["store"] = {"redis_url": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/7")}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    secrets = {"ADMIN_TOKEN": "a" * 24, "VIEWER_TOKEN": "v" * 24, "META_APP_SECRET": "s" * 24}
    env = {**os.environ, "PORT": str(port), "META_VERIFY_TOKEN": "t" * 24, **secrets}
    command = [sys.executable, "-m", "wa_blocklist.proxy.cli", "serve", "--config", str(work / "config.yaml")]
    return subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)


async def measure(graph_port: int, port: int) -> dict[str, object]:
    runner, seen = await upstream(graph_port)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)  # polling start-up, by hand: a benchmark, not a test
            outcome: dict[str, int] = {"connect_failed": 0}
            stop = asyncio.Event()
            uploads = [
                asyncio.create_task(slow_upload(f"127.0.0.{2 + i % ADDRESSES}", port, outcome, stop))
                for i in range(UPLOADS)
            ]
            await asyncio.sleep(3)  # every upload has sent its headers and first part
            open_at_send = seen["uploads_open"]
            latencies, statuses = [], {}
            body = {"messaging_product": "whatsapp", "to": "+57 300 123 4567", "type": "text", "text": {"body": "hi"}}
            started = time.perf_counter()
            for _ in range(SENDS):
                t = time.perf_counter()
                async with http.post(f"http://127.0.0.1:{port}/v21.0/{PNID}/messages", json=body) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                latencies.append((time.perf_counter() - t) * 1000)
            elapsed = time.perf_counter() - started
            still_open = seen["uploads_open"]
            stop.set()
            await asyncio.gather(*uploads)
    finally:
        await runner.cleanup()
    lat = sorted(latencies)
    return {
        "uploads_started": UPLOADS,
        "client_addresses": ADDRESSES,
        "upload_outcomes": outcome,
        "uploads_streaming_upstream_when_sends_began": open_at_send,
        "uploads_streaming_upstream_max": seen["uploads_max"],
        "still_streaming_after_sends": still_open,
        "sends": SENDS,
        "send_statuses": statuses,
        "sends_seconds": round(elapsed, 2),
        "send_ms_p50": round(statistics.median(lat), 2),
        "send_ms_p99": round(lat[int(0.99 * len(lat)) - 1], 2),
        "send_ms_max": round(lat[-1], 2),
    }


def main() -> None:
    graph_port, port = free_port(), free_port()
    proxy = start_proxy(graph_port, port)
    try:
        print(json.dumps(asyncio.run(measure(graph_port, port)), indent=1))
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)


if __name__ == "__main__":
    main()
