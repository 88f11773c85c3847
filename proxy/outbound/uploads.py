"""Limits for streamed pass-through uploads (``POST /{pnid}/media`` and the like), so they cannot starve sends.

An upload streamed to the Graph API holds an upstream connection for as long as the caller takes to send it. Without
limits, a thousand slow uploads (one byte every two seconds) hold every connection of the gateway's pool and every
send then waits for one until it times out. Two rules, used by the gateway:

- :class:`UploadLimiter`: at most ``total`` uploads streamed at once, and at most ``per_client`` from one client
  address; one more is refused at once (429, retry later) instead of queueing for a connection. With ``total``
  well under the pool size, sends always find a connection.
- :class:`Pace`: an upload must keep an average pace, at least ``min_bytes`` in every ``window`` seconds; a trickle
  is cut (408) at the end of the first window it falls short in, long before the pause bound
  (``server.body_timeout_seconds``) would notice a caller that sends one byte just often enough.
  :func:`paced_pieces` applies both the pace and the pause bound to a request body.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator

from aiohttp import StreamReader

from ..base.errors import BlocklistError


class TooManyUploads(BlocklistError, status=429, code="too_many_uploads"):
    """The upload limits are reached (for this client or in all): retry later."""


class UploadTooSlow(BlocklistError, status=408, code="upload_too_slow"):
    """The caller sent its upload below the minimum pace, or paused longer than allowed."""


class UploadLimiter:
    """How many uploads are streamed at once, in all and per client address.

    Args:
        total: uploads streamed at once at most (keep it well under the gateway's upstream pool size).
        per_client: uploads streamed at once from one client address at most.
    """

    def __init__(self, total: int = 200, per_client: int = 20) -> None:
        self.total = total
        self.per_client = per_client
        self.in_flight = 0
        self._by_client: dict[str, int] = {}

    @contextlib.contextmanager
    def slot(self, client: str) -> Iterator[None]:
        """Hold one upload slot for ``client`` while the block runs.

        Raises:
            TooManyUploads: no slot free for this client, or none at all.
        """
        mine = self._by_client.get(client, 0)
        if mine >= self.per_client:
            raise TooManyUploads(f"this client already streams {mine} uploads at once (at most {self.per_client})")
        if self.in_flight >= self.total:
            raise TooManyUploads(f"{self.in_flight} uploads are being streamed (at most {self.total}); retry later")
        self.in_flight += 1
        self._by_client[client] = mine + 1
        try:
            yield
        finally:
            self.in_flight -= 1
            left = self._by_client[client] - 1
            if left:
                self._by_client[client] = left
            else:
                del self._by_client[client]


class Pace:
    """At least ``min_bytes`` in every window of ``window`` seconds, windows counted from the start of the upload.

    Args:
        min_bytes: bytes each window must bring.
        window: the window's length in seconds.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, min_bytes: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_bytes = min_bytes
        self.window = window
        self.clock = clock
        self._start = clock()
        self._bytes = 0

    def _roll(self) -> None:
        now = self.clock()
        while now >= self._start + self.window:
            if self._bytes < self.min_bytes:
                raise UploadTooSlow(
                    f"the upload is too slow: {self._bytes} bytes in {self.window:g} seconds "
                    f"(at least {self.min_bytes} are needed)"
                )
            self._start += self.window
            self._bytes = 0

    def received(self, size: int) -> None:
        """Count ``size`` bytes that just arrived.

        Raises:
            UploadTooSlow: a window that ended before they arrived fell short.
        """
        self._roll()
        self._bytes += size

    def seconds_left(self) -> float:
        """How long the next piece may take before the rule is broken (0 when it is broken already)."""
        end = self._start + self.window
        if self._bytes >= self.min_bytes:
            end += self.window  # this window is met; the next one starts empty
        return max(0.0, end - self.clock())

    def check(self) -> None:
        """Raise :class:`UploadTooSlow` if the rule is broken now (a timer fired with nothing received)."""
        self._roll()


async def paced_pieces(content: StreamReader, pace: Pace, idle: float) -> AsyncIterator[bytes]:
    """A request body piece by piece, cut with :class:`UploadTooSlow` when it falls below ``pace`` or pauses longer
    than ``idle`` seconds."""
    while True:
        allowed = min(idle, pace.seconds_left())
        try:
            async with asyncio.timeout(allowed):
                piece = await content.readany()
        except TimeoutError:
            pace.check()  # raises when the pace is what ran out
            if allowed >= idle:
                raise UploadTooSlow(f"the upload stalled: nothing arrived for {idle:g} seconds") from None
            continue  # a window ended with its quota met: keep waiting
        if not piece:
            return
        pace.received(len(piece))
        yield piece
