"""Checking an outgoing Graph API send against the blocklist, shared by the send-side plugins.

The request is read with the proxy gateway's own functions (:func:`proxy.gateway.parse_route`,
:func:`~proxy.gateway.parse_fields`, :func:`~proxy.gateway.send_recipients`), and a refusal is the gateway's
:class:`~proxy.gateway.GraphRefusal` with the same codes: a bot without the proxy refuses exactly what the
proxy would.
"""

from __future__ import annotations

import logging

from proxy.errors import BlocklistError
from proxy.gateway import GraphRefusal, Route, parse_fields, parse_route, send_recipients
from proxy.graph import RECIPIENT_BLOCKED, SERVICE_UNAVAILABLE

from ._webhook import OnError, is_blocked_or_policy
from .client import BlocklistClient

log = logging.getLogger(__name__)

# messages_encrypted is not here: its recipient cannot be read, and whether a connector allows it is the
# proxy's config (allow_encrypted_messages), which the HTTP mode cannot see.
SEND_EDGES = frozenset({"messages", "marketing_messages", "calls"})


def send_route(method: str, path: str) -> Route | None:
    """The route of a Graph request that may reach a user (``POST /{ver}/{pnid}/messages`` ...), else None.

    Decided from the method and path alone, so other requests (media uploads) are never buffered.
    """
    if method.upper() != "POST":
        return None
    route = parse_route(path)
    return route if route is not None and route.edge in SEND_EDGES else None


def blocked_refusal(pnid: str) -> GraphRefusal:
    return GraphRefusal(
        400,
        RECIPIENT_BLOCKED,
        "Recipient is blocked on this connector",
        f"The recipient is blocked on phone number {pnid} by its blocklist; the request was not sent to WhatsApp",
    )


def unavailable_refusal() -> GraphRefusal:
    return GraphRefusal(
        503,
        SERVICE_UNAVAILABLE,
        "Service unavailable",
        "The blocklist is unavailable, so the recipient cannot be checked; retry later",
        transient=True,
    )


async def check_send(
    blocklist: BlocklistClient, route: Route, body: bytes, content_type: str, query: str, on_error: OnError
) -> GraphRefusal | None:
    """The refusal for a send to a blocked user (or when the blocklist cannot answer under ``deny``), else None.

    A body the gateway could not read is refused with its 400 as well (Meta would refuse it too).
    """
    try:
        region = await blocklist.region(route.node)  # national numbers are read as the proxy reads them
    except BlocklistError:
        region = ""  # the checks below meet the same failure and apply on_error
    try:
        identities = send_recipients(route.edge, parse_fields(body, content_type, query), region)
    except GraphRefusal as refusal:
        return refusal
    for who in identities:
        blocked = await is_blocked_or_policy(blocklist, route.node, who.value, on_error)
        if blocked is None:
            return unavailable_refusal()
        if blocked:
            log.info("refused a send to a blocked recipient on %s", route.node)
            return blocked_refusal(route.node)
    return None
