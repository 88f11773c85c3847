"""aiohttp client middleware: refuse Graph sends to blocked users from any bot that calls Graph with aiohttp.

::

    async with aiohttp.ClientSession(middlewares=(graph_client_middleware(blocklist),)) as graph:
        async with graph.post(f"https://graph.facebook.com/v21.0/{pnid}/messages", json=message) as response:
            ...

Every Graph request is classified by the proxy gateway's own classifier (:mod:`wa_blocklist.proxy.graph.classify`, see
:mod:`wa_blocklist.plugins._graph`). A send (``messages``, ``marketing_messages``, ``calls``), read receipt or typing
indicator to a blocked user, and every request the gateway refuses (a batch, a method override, a parameter given twice,
a surface off the allow-list...), raises :class:`GraphSendRefused` — an :class:`aiohttp.ClientResponseError` whose
``graph_error`` is the gateway's Graph error body (code 139900 blocked, 100 or 10 refused) — and never leaves the
process. Allow-listed requests (media, templates, profiles...) pass untouched.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse
from aiohttp.client_middlewares import ClientMiddlewareType

from wa_blocklist.proxy.graph.classify import Refused
from wa_blocklist.proxy.graph.errors import error_envelope

from ._graph import PartNameScanner, check_request
from ._webhook import OnError, check_on_error
from .client import BlocklistClient

__all__ = ["GraphSendRefused", "graph_client_middleware"]


class GraphSendRefused(aiohttp.ClientResponseError):
    """A Graph request refused locally, as the proxy's gateway would refuse it.

    Attributes:
        status: 400 for a blocked recipient or an unreadable request, 403 or 405 for one the gateway does not let
            through, 503 when the blocklist cannot answer.
        graph_error: the Graph error body ``{"error": {"message", "type", "code", "error_data", "fbtrace_id"}}``.
        graph_code: ``graph_error["error"]["code"]``: 139900 blocked, 131016 unavailable, 100 invalid, 10 denied.
    """

    def __init__(self, request: ClientRequest, refusal: Refused) -> None:
        super().__init__(request.request_info, (), status=refusal.status, message=refusal.details)
        self.graph_error: dict[str, Any] = error_envelope(
            refusal.code, refusal.title, refusal.details, transient=refusal.transient
        )
        self.graph_code = refusal.code


def graph_client_middleware(blocklist: BlocklistClient, *, on_error: OnError = "deny") -> ClientMiddlewareType:
    """An aiohttp client middleware that refuses Graph requests as the proxy's gateway does (see the module docstring).

    Args:
        blocklist: the blocklist to check against.
        on_error: when the blocklist cannot answer, ``deny`` raises (status 503, transient) and ``allow`` sends.
    """
    check_on_error(on_error)

    async def middleware(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        async def body() -> bytes:
            payload = request.body
            return payload if isinstance(payload, bytes) else await payload.as_bytes()

        verdict = await check_request(
            blocklist,
            request.method,
            request.url.raw_path,
            request.url.raw_query_string,
            request.headers.items(),
            body,
            on_error,
        )
        if verdict.refusal is not None:
            raise GraphSendRefused(request, verdict.refusal)
        if verdict.scan:
            # aiohttp's payloads can be read again (3.12+): the part names are read before the upload is sent.
            try:
                PartNameScanner().feed(await body())
            except Refused as refusal:
                raise GraphSendRefused(request, refusal) from None
        return await handler(request)

    return middleware
