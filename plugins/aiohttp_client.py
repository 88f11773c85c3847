"""aiohttp client middleware: refuse Graph sends to blocked users from any bot that calls Graph with aiohttp.

::

    async with aiohttp.ClientSession(middlewares=(graph_client_middleware(blocklist),)) as graph:
        async with graph.post(f"https://graph.facebook.com/v21.0/{pnid}/messages", json=message) as response:
            ...

A send (``messages``, ``marketing_messages``, ``calls`` with ``connect``) to a blocked user raises
:class:`GraphSendRefused` — an :class:`aiohttp.ClientResponseError` with status 400 whose ``graph_error`` is the
proxy gateway's Graph error body (code 139900) — and never leaves the process. Other requests pass untouched.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse
from aiohttp.client_middlewares import ClientMiddlewareType

from proxy.gateway import GraphRefusal
from proxy.graph import error_envelope

from ._graph import check_send, send_route
from ._webhook import OnError, check_on_error
from .client import BlocklistClient

__all__ = ["GraphSendRefused", "graph_client_middleware"]


class GraphSendRefused(aiohttp.ClientResponseError):
    """A Graph request refused locally, as the proxy's gateway would refuse it.

    Attributes:
        status: 400 for a blocked recipient (or an unreadable body), 503 when the blocklist cannot answer.
        graph_error: the Graph error body ``{"error": {"message", "type", "code", "error_data", "fbtrace_id"}}``.
        graph_code: ``graph_error["error"]["code"]``: 139900 blocked, 131016 unavailable, 100 bad request.
    """

    def __init__(self, request: ClientRequest, refusal: GraphRefusal) -> None:
        super().__init__(request.request_info, (), status=refusal.status, message=refusal.details)
        self.graph_error: dict[str, Any] = error_envelope(
            refusal.code, refusal.title, refusal.details, transient=refusal.transient
        )
        self.graph_code = refusal.code


def graph_client_middleware(blocklist: BlocklistClient, *, on_error: OnError = "deny") -> ClientMiddlewareType:
    """An aiohttp client middleware that refuses Graph sends to users blocked on the sending connector.

    Args:
        blocklist: the blocklist to check against.
        on_error: when the blocklist cannot answer, ``deny`` raises (status 503, transient) and ``allow`` sends.
    """
    check_on_error(on_error)

    async def middleware(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        route = send_route(request.method, request.url.path)
        if route is not None:
            body = request.body
            raw = await body.as_bytes() if not isinstance(body, bytes) else body
            refusal = await check_send(
                blocklist, route, raw, request.headers.get("Content-Type", ""), request.url.query_string, on_error
            )
            if refusal is not None:
                raise GraphSendRefused(request, refusal)
        return await handler(request)

    return middleware
