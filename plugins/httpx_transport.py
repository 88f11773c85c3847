"""An httpx transport that enforces the blocklist on Graph API sends, for pywa and any other httpx-based bot.

``httpx.AsyncClient(transport=BlocklistTransport(blocklist))``: every Graph request is classified by the proxy
gateway's own classifier (:mod:`wa_blocklist.proxy.graph.classify`, see :mod:`wa_blocklist.plugins._graph`). A message,
marketing message, call, read receipt or typing indicator to a user blocked on the sending connector, and every request
the gateway refuses (a batch, a method override, a parameter given twice, a surface off the allow-list...), never leaves
the process: the transport answers it with the gateway's Graph error (HTTP 400, code 139900 for a blocked user; 400/403
with code 100/10 for a refused request; 503 with code 131016 when the blocklist cannot answer under
``on_error="deny"``), so Graph clients raise their usual error. With ``upstream=`` every call is routed to the proxy
instead of ``graph.facebook.com``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any, NoReturn, cast

import httpx

from wa_blocklist.proxy.graph.classify import Refused
from wa_blocklist.proxy.graph.errors import error_envelope

from ._graph import PartNameScanner, check_request
from ._webhook import OnError, check_on_error
from .client import BlocklistClient

__all__ = ["BlocklistSession", "BlocklistTransport", "ProxyRoutingTransport", "blocklist_session"]

_SYNC_ADVICE = (
    "the synchronous pywa.WhatsApp and httpx.Client cannot await it. Use `from pywa_async import WhatsApp`, or give "
    "the synchronous client httpx.Client(transport=ProxyRoutingTransport('http://127.0.0.1:8080')) so that the proxy "
    "enforces the blocklist"
)
SYNC_CLIENT_ERROR = "blocklist_session() is an httpx.AsyncClient, for pywa_async.WhatsApp: " + _SYNC_ADVICE
SYNC_TRANSPORT_ERROR = "BlocklistTransport is an async httpx transport, for httpx.AsyncClient: " + _SYNC_ADVICE


def _refusal(request: httpx.Request, refusal: Refused) -> httpx.Response:
    envelope = error_envelope(refusal.code, refusal.title, refusal.details, transient=refusal.transient)
    return httpx.Response(refusal.status, json=envelope, request=request)


class _Scanned(httpx.AsyncByteStream):
    """An upload's body, sent as it is while a :class:`PartNameScanner` watches its part names: a ``batch`` or
    ``method`` part raises :class:`Refused` before the body ends, so Meta never gets a complete request."""

    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self._stream = stream
        self._scanner = PartNameScanner()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            self._scanner.feed(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


def _route(request: httpx.Request, upstream: httpx.URL) -> None:
    prefix = upstream.path.rstrip("/")
    request.url = request.url.copy_with(
        scheme=upstream.scheme, host=upstream.host, port=upstream.port, path=prefix + request.url.path
    )
    request.headers["Host"] = request.url.netloc.decode("ascii")


class BlocklistTransport(httpx.AsyncBaseTransport):
    """An httpx transport that refuses Graph sends to blocked users before they leave the process.

    Args:
        blocklist: the blocklist to enforce locally; None to only route through the proxy (``upstream``).
        upstream: a base URL (the proxy, e.g. ``http://127.0.0.1:8080``) that replaces ``graph.facebook.com``.
        transport: the transport that really sends (default: ``httpx.AsyncHTTPTransport()``).
        on_error: when the blocklist cannot answer, ``deny`` answers HTTP 503 with Graph code 131016
            (transient, pywa raises and the bot may retry) and ``allow`` sends unchecked.
    """

    def __init__(
        self,
        blocklist: BlocklistClient | None = None,
        *,
        upstream: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        on_error: OnError = "deny",
    ) -> None:
        if blocklist is None and upstream is None:
            raise ValueError("give a blocklist to enforce locally, an upstream proxy URL, or both")
        self.blocklist = blocklist
        self.upstream = httpx.URL(upstream) if upstream else None
        if self.upstream is not None and self.upstream.scheme not in ("http", "https"):
            raise ValueError(f"upstream must be an http(s) URL, not {upstream!r}")
        self.on_error = check_on_error(on_error)
        self._transport = transport or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.blocklist is not None:
            raw_path, _, raw_query = request.url.raw_path.decode("ascii", "replace").partition("?")
            verdict = await check_request(
                self.blocklist,
                request.method,
                raw_path,
                raw_query,
                [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw],
                request.aread,
                self.on_error,
            )
            if verdict.refusal is not None:
                return _refusal(request, verdict.refusal)
            if verdict.scan:
                request.stream = _Scanned(cast(httpx.AsyncByteStream, request.stream))
        if self.upstream is not None:
            _route(request, self.upstream)
        try:
            return await self._transport.handle_async_request(request)
        except Refused as refusal:  # an upload cut off by its scanner
            return _refusal(request, refusal)

    async def aclose(self) -> None:
        await self._transport.aclose()

    # What a synchronous httpx.Client calls: this transport is async, so it says what to use instead.
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise TypeError(SYNC_TRANSPORT_ERROR)

    def __enter__(self) -> NoReturn:
        raise TypeError(SYNC_TRANSPORT_ERROR)

    def __exit__(self, *exc_info: object) -> None:
        return None

    def close(self) -> None:
        return None  # a synchronous client never used the inner (async) transport


class ProxyRoutingTransport(httpx.BaseTransport):
    """For the synchronous ``pywa.WhatsApp``: routes every Graph call through the proxy, which enforces.

    Args:
        upstream: the proxy's base URL, e.g. ``http://127.0.0.1:8080``.
        transport: the transport that really sends (default: ``httpx.HTTPTransport()``).
    """

    def __init__(self, upstream: str, *, transport: httpx.BaseTransport | None = None) -> None:
        self.upstream = httpx.URL(upstream)
        if self.upstream.scheme not in ("http", "https"):
            raise ValueError(f"upstream must be an http(s) URL, not {upstream!r}")
        self._transport = transport or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        _route(request, self.upstream)
        return self._transport.handle_request(request)

    def close(self) -> None:
        self._transport.close()


class _AsyncOnly:
    """What :class:`BlocklistSession` calls return: awaitable as usual, a clear TypeError when used synchronously."""

    __slots__ = ("_pending",)

    def __init__(self, pending: Any) -> None:
        self._pending = pending

    def __await__(self) -> Generator[Any, None, Any]:
        return cast(Generator[Any, None, Any], self._pending.__await__())

    async def __aenter__(self) -> Any:
        return await self._pending.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._pending.__aexit__(*exc_info)

    def __enter__(self) -> NoReturn:
        self._fail()

    def __getattr__(self, name: str) -> NoReturn:
        self._fail()

    def _fail(self) -> NoReturn:
        close = getattr(self._pending, "close", None)
        if close is not None:
            close()  # the coroutine is never awaited: close it rather than leave a "never awaited" warning
        raise TypeError(SYNC_CLIENT_ERROR)


class BlocklistSession(httpx.AsyncClient):
    """The ``httpx.AsyncClient`` :func:`blocklist_session` returns.

    Its ``request`` and ``stream`` work as usual when awaited; a synchronous caller (``pywa.WhatsApp`` given it by
    mistake) gets a TypeError saying what to use instead, not an AttributeError on a coroutine.
    """

    def request(self, *args: Any, **kwargs: Any) -> Any:
        return _AsyncOnly(super().request(*args, **kwargs))

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        return _AsyncOnly(super().stream(*args, **kwargs))


def blocklist_session(
    blocklist: BlocklistClient | None = None,
    *,
    upstream: str | None = None,
    on_error: OnError = "deny",
    **client_options: Any,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for ``pywa_async.WhatsApp(session=...)`` using :class:`BlocklistTransport`.

    ``client_options`` go to ``httpx.AsyncClient`` (e.g. ``timeout``); ``transport=`` sets the inner transport.
    The synchronous ``pywa.WhatsApp`` given this session raises a TypeError on its first Graph call, saying to use
    ``pywa_async`` or :class:`ProxyRoutingTransport`.
    """
    inner = client_options.pop("transport", None)
    transport = BlocklistTransport(blocklist, upstream=upstream, transport=inner, on_error=on_error)
    return BlocklistSession(transport=transport, **client_options)
