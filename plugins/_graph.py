"""Checking an outgoing Graph API request against the blocklist, shared by the send-side plugins.

The request is classified by :mod:`wa_blocklist.proxy.graph.classify`, the proxy gateway's own classifier (one set of
rules, default deny), and each class is handled as the gateway handles it:

* **refused** (a batch, a method override, a parameter given twice, a path Meta might read differently, a surface
  that is not on the allow-list...): the classifier's Graph error, unchanged;
* **send** (``messages``, ``marketing_messages``, ``calls``): every ``to`` / ``recipient`` is read with the
  connector's region (:meth:`BlocklistClient.region`) and checked; a read receipt or typing indicator is checked
  against the sender of the message it names (:meth:`BlocklistClient.check_message`); a blocked user gets HTTP 400
  with code 139900; a template or marketing send (the classifier's
  :attr:`~wa_blocklist.proxy.graph.classify.Reach.template`, the gateway's own reading) to a user who opted out
  (:meth:`BlocklistClient.any_opted_out`) gets HTTP 400 with code 139901, and a free-form send to them goes out;
* **participants** / **join requests** (``POST /{group_id}/...``): the users let into a group, checked on every
  connector (:meth:`BlocklistClient.check_join_request` for approvals);
* **pass** (the allow-list in ``proxy/graph/graph_surfaces.yaml``): unchanged, after its body (if it has one) was read
  for ``batch`` / ``method``; an upload is sent as it is, its multipart part names watched (:class:`PartNameScanner`).

Two classes are refused here although the proxy may let them through, because a plugin cannot apply the proxy's
side of them: ``messages_encrypted`` (the recipient cannot be read; the proxy lets a connector allow it) and
``DELETE /{pnid}/block_users`` (the proxy refuses lifting a supervisor's block and keeps its list in step with
Meta's). Both work through the proxy (``upstream=``). The operator's ``gateway.allow`` is the proxy's config and is
not read by the plugins: such a surface is reached through the proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from wa_blocklist.proxy.base.errors import BlocklistError, UnknownConnector
from wa_blocklist.proxy.graph.classify import (
    PartNameScanner,
    Reach,
    Refused,
    Target,
    classify_target,
    denied,
    identities,
    invalid,
    reach,
    read_params,
)
from wa_blocklist.proxy.graph.errors import RECIPIENT_BLOCKED, RECIPIENT_OPTED_OUT, SERVICE_UNAVAILABLE

from ._webhook import OnError, refuses
from .client import BlocklistClient, ReferenceCheck

log = logging.getLogger(__name__)

__all__ = ["PartNameScanner", "Verdict", "check_request"]


@dataclass(frozen=True)
class Verdict:
    """What a plugin does with an outgoing Graph request.

    Attributes:
        refusal: the Graph error to answer with instead of sending; None to send.
        scan: the request is a multipart upload sent as it is: feed its bytes to a :class:`PartNameScanner`.
    """

    refusal: Refused | None = None
    scan: bool = False


def blocked_refusal(where: str) -> Refused:
    """The gateway's 139900 refusal; ``where`` is "phone number {pnid}" or "a connector"."""
    return Refused(
        400,
        RECIPIENT_BLOCKED,
        "Recipient is blocked on this connector",
        f"The user is blocked on {where} by its blocklist; the request was not sent to WhatsApp",
    )


def opted_out_refusal(pnid: str) -> Refused:
    """The gateway's 139901 refusal of a template or marketing send to a user who opted out."""
    return Refused(
        400,
        RECIPIENT_OPTED_OUT,
        "Recipient opted out of template and marketing messages",
        f"The user opted out on phone number {pnid}; templates and marketing messages are refused, free-form "
        "replies in the customer service window are not; the request was not sent to WhatsApp",
    )


def unavailable_refusal() -> Refused:
    return Refused(
        503,
        SERVICE_UNAVAILABLE,
        "Service unavailable",
        "The blocklist is unavailable, so the recipient cannot be checked; retry later",
        transient=True,
    )


def _header(headers: Iterable[tuple[str, str]], name: str) -> str:
    return next((value for key, value in headers if key.lower() == name), "")


async def check_request(
    blocklist: BlocklistClient,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Iterable[tuple[str, str]],
    body: Callable[[], Awaitable[bytes]],
    on_error: OnError,
) -> Verdict:
    """Classify an outgoing Graph request as the proxy's gateway does and check whom it reaches.

    Args:
        blocklist: the blocklist to check against.
        method: the HTTP method.
        raw_path: the path as it goes on the wire (percent-encoded), without the query.
        raw_query: the query string as it goes on the wire, without ``?``.
        headers: every request header as ``(name, value)``, repeated ones repeated.
        body: reads the whole body; called only for a request whose body the gateway reads too.
        on_error: when the blocklist cannot answer, ``deny`` refuses (503, code 131016, transient) and ``allow``
            sends unchecked.
    """
    listed = list(headers)
    try:
        target = classify_target(method, raw_path, raw_query, listed)
        content_type = _header(listed, "content-type")
        encoding = _header(listed, "content-encoding")
        if target.kind == "pass":
            if target.streams(content_type):
                if encoding.strip().lower() not in ("", "identity"):
                    raise invalid("uploads are forwarded as they arrive and cannot be compressed (Content-Encoding)")
                return Verdict(scan=content_type.lower().startswith("multipart/"))
            data = await body()
            if data:
                read_params(target.query, data, content_type, encoding)  # refuses batch, method, unreadable bodies
            return Verdict()
        if target.kind in ("send", "encrypted") and not await _known(blocklist, target.node):
            raise UnknownConnector(target.node)  # before the body is read, as the gateway does
        if target.kind == "encrypted":
            raise denied(
                "messages_encrypted is refused by the blocklist plugin: the recipient of an encrypted message cannot "
                "be read (send it through the proxy, on a connector with allow_encrypted_messages)"
            )
        if target.kind == "block_users" and target.method == "DELETE":
            raise denied(
                "unblocking through Meta's Block Users API is refused by the blocklist plugin: it would lift a "
                "block the blocklist keeps (unblock through the proxy's admin API, or send it through the proxy)"
            )
        params = read_params(target.query, await body(), content_type, encoding)
        if target.kind == "block_users":
            return Verdict()  # GET lists, POST blocks at Meta: neither reaches a user
        found = reach(target, params)  # what cannot be read is refused even when the blocklist cannot answer
        await _check_reach(blocklist, target, found)
    except Refused as refusal:
        return Verdict(refusal)
    except UnknownConnector:
        return Verdict(
            denied(f"phone number ID {target.node[:40]} is not a connector of the blocklist; the request was not sent")
        )
    except BlocklistError as exc:
        refuse = refuses(on_error, exc, "check of a Graph request", refused="refused", allowed="sent")
        return Verdict(unavailable_refusal() if refuse else None)
    return Verdict()


async def _known(blocklist: BlocklistClient, node: str) -> bool:
    """Whether the node is one of the blocklist's connectors; True when the blocklist cannot tell (the checks that
    follow meet the same failure and apply ``on_error`` after the body's own refusals)."""
    try:
        return node in await blocklist.connector_regions()
    except UnknownConnector:
        return False
    except BlocklistError:
        return True


async def _check_reach(blocklist: BlocklistClient, target: Target, found: Reach) -> None:
    if target.kind in ("participants", "join_requests"):
        # The path names the group, not the phone number that owns it: every connector's blocklist applies.
        regions = await blocklist.connector_regions()
        if found.participants:
            users = [
                who
                for region in sorted({*regions.values(), ""})
                for who in identities(found.participants, region, strict=True)
            ]
            for pnid in regions:
                if await blocklist.any_blocked(pnid, users):
                    raise blocked_refusal(f"phone number {pnid}")
        for join_request in found.join_requests:
            _verdict(
                await blocklist.check_join_request(join_request),
                f"the join request {join_request[:60]!r}",
                "who asked to join",
                "a connector",
            )
        return
    region = await blocklist.region(target.node)
    users = identities(found.recipients, region, strict=True)
    users += identities(found.maybe_recipients, region, strict=False)
    if users and await blocklist.any_blocked(target.node, users):
        log.info("refused a send to a blocked recipient on %s", target.node)
        raise blocked_refusal(f"phone number {target.node}")
    if users and found.template and await blocklist.any_opted_out(target.node, users):
        log.info("refused a template send to a user who opted out on %s", target.node)
        raise opted_out_refusal(target.node)
    for message_id in found.message_ids:
        _verdict(
            await blocklist.check_message(target.node, message_id),
            f"the message {message_id[:80]!r}",
            "who sent it",
            f"phone number {target.node}",
        )


def _verdict(check: ReferenceCheck, what: str, missing: str, where: str) -> None:
    if check.blocked:
        log.info("refused a request about a blocked user's %s", "message" if "message" in what else "join request")
        raise blocked_refusal(where)
    if not check.known and check.unknown_references != "pass":
        raise denied(
            f"the blocklist proxy has not seen {what} in a verified webhook, so it cannot tell {missing} and whether "
            "that user is blocked; refused (gateway.unknown_references: refuse)"
        )
