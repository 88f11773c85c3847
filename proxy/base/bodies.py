"""Reading a request body that must be inspected: bounded in size and in time, never read past the limit."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .errors import BodyTimeout, BodyTooLarge


async def read_body(request: web.Request, limit: int, *, within: float | None, limit_name: str = "") -> bytes:
    """The whole body, refusing more than ``limit`` bytes (declared or actual) without reading the rest.

    Args:
        request: the incoming request.
        limit: the most bytes accepted.
        within: seconds the whole body may take to arrive (None: no bound), so a stalled client cannot hold a task.
        limit_name: the setting behind ``limit``, named in the error (e.g. ``webhooks.max_body_bytes``).

    Raises:
        BodyTooLarge: over ``limit`` (413).
        BodyTimeout: not all there within ``within`` seconds (408).
    """
    setting = f" ({limit_name})" if limit_name else ""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"the request body is {declared} bytes, more than the {limit} bytes accepted{setting}")
    content = request.content
    if content.is_eof():
        # The whole body came with the headers (the usual case for a send or a webhook): nothing to wait for, so no
        # timer to arm. Flow control kept what is buffered small; its size is still checked.
        body = content.read_nowait()
        if len(body) > limit:
            raise BodyTooLarge(f"the request body is more than the {limit} bytes accepted{setting}")
        return body
    try:
        async with asyncio.timeout(within):
            chunks: list[bytes] = []
            size = 0
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"the request body is more than the {limit} bytes accepted{setting}")
                chunks.append(chunk)
            return b"".join(chunks)
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {within} seconds") from None
