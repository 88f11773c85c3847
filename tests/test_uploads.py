"""Limits for streamed uploads (proxy/outbound/uploads.py): admission per client and in all, and a minimum pace."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web

from wa_blocklist.proxy.outbound.uploads import Pace, TooManyUploads, UploadLimiter, UploadTooSlow, paced_pieces


def test_the_limiter_keeps_slots_for_others_and_frees_them() -> None:
    limiter = UploadLimiter(total=3, per_client=2)
    with limiter.slot("10.0.0.1"), limiter.slot("10.0.0.1"):
        with pytest.raises(TooManyUploads, match="at most 2"), limiter.slot("10.0.0.1"):
            pass
        with limiter.slot("10.0.0.2"):
            assert limiter.in_flight == 3
            with pytest.raises(TooManyUploads, match="at most 3"), limiter.slot("10.0.0.3"):
                pass
    assert limiter.in_flight == 0
    with pytest.raises(RuntimeError), limiter.slot("10.0.0.1"):
        raise RuntimeError("the upload failed")
    assert limiter.in_flight == 0 and limiter._by_client == {}  # freed whatever happened


def test_the_pace_is_judged_per_window() -> None:
    now = [0.0]
    pace = Pace(min_bytes=100, window=10, clock=lambda: now[0])
    pace.received(60)
    now[0] = 9
    pace.received(40)  # the first window is met
    assert pace.seconds_left() == 11  # the next window ends at 20 and starts empty
    now[0] = 15
    pace.received(100)
    now[0] = 25
    pace.received(1)
    now[0] = 30
    with pytest.raises(UploadTooSlow, match="1 bytes in 10 seconds"):
        pace.check()


@pytest.fixture
async def upload_server(aiohttp_client: Any) -> Any:
    """A real server whose upload route reads its body through paced_pieces (as the gateway does)."""

    async def upload(request: web.Request) -> web.Response:
        size = 0
        try:
            async for piece in paced_pieces(request.content, Pace(min_bytes=1000, window=0.5), idle=5):
                size += len(piece)
        except UploadTooSlow as exc:
            return web.json_response({"error": exc.message}, status=exc.status)
        return web.json_response({"size": size})

    app = web.Application()
    app.router.add_post("/upload", upload)
    return await aiohttp_client(app)


async def trickle(port: int, pieces: int, size: int, every: float) -> tuple[int, float]:
    """An upload sent chunked, ``size`` bytes every ``every`` seconds, until done or answered; returns the status and
    the seconds until the answer came."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.ensure_future(reader.readline())
    writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(pieces):
        if answer.done():
            break
        writer.write(f"{size:x}\r\n".encode() + b"x" * size + b"\r\n")
        await writer.drain()
        await asyncio.wait([answer], timeout=every)  # the client's own slowness: what is being tested
    else:
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    status = int((await answer).split()[1])
    took = time.monotonic() - started
    writer.close()
    return status, took


async def test_a_trickling_upload_is_cut_and_a_steady_one_passes(upload_server: Any) -> None:
    port = upload_server.server.port
    (slow, slow_took), (steady, _) = await asyncio.gather(
        trickle(port, pieces=40, size=1, every=0.05),  # 20 bytes per second: far below 1,000 per half second
        trickle(port, pieces=10, size=1000, every=0.05),
    )
    assert steady == 200
    assert slow == 408 and slow_took < 1.5  # cut at the end of the first window, not after the 2 s it would take
