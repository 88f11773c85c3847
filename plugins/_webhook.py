"""Removing blocked users' items from a Meta webhook payload, shared by every webhook-side plugin.

The payload is walked by the proxy's own walker (:mod:`wa_blocklist.proxy.graph.payload`, the policy table of
docs/webhooks.md) and signatures are checked by :mod:`wa_blocklist.proxy.graph.signature`, so a plugin and the proxy
remove exactly the same items. Nothing is learned from a body (activity, wa_id↔BSUID links) unless its
``X-Hub-Signature-256`` verified under the app secret: a forged POST to a bot's public webhook URL must not un-block
anyone or make a stranger "recently active". The check itself is the blocklist's
(:class:`wa_blocklist.plugins.client.BlocklistClient`), never re-implemented here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from wa_blocklist.proxy.base.errors import BlocklistError, UnknownConnector
from wa_blocklist.proxy.blocklist.service import InboundUser
from wa_blocklist.proxy.graph import payload as wp
from wa_blocklist.proxy.graph.signature import SIGNATURE_HEADER, meta_dumps, sign, verify

from .client import BlocklistClient, DirectBlocklistClient

__all__ = [
    "SIGNATURE_HEADER",
    "BodyResult",
    "Decision",
    "FilterResult",
    "OnError",
    "WebhookGuard",
    "WebhookOptions",
    "check_on_error",
    "check_recording",
    "decide",
    "filter_body",
    "filter_payload",
    "is_blocked_or_policy",
    "refuses",
    "signature_valid",
]

log = logging.getLogger(__name__)

OnError = Literal["deny", "allow"]
"""What a plugin does when the blocklist cannot answer: ``deny`` refuses (sends) or defers (webhooks), ``allow``
lets the traffic through unchecked."""


def check_on_error(on_error: str) -> OnError:
    """Validate an ``on_error`` argument (``deny`` or ``allow``)."""
    if on_error not in ("deny", "allow"):
        raise ValueError(f"on_error must be 'deny' or 'allow', not {on_error!r}")
    return on_error  # type: ignore[return-value]


def refuses(on_error: OnError, exc: BlocklistError, what: str, *, refused: str, allowed: str) -> bool:
    """The plugins' one ``on_error`` policy: log that the blocklist could not answer, and say whether to refuse.

    Args:
        on_error: ``deny`` refuses (or defers) what could not be checked, ``allow`` lets it through unchecked.
        exc: what the blocklist raised.
        what: what was being checked, for the log line.
        refused: what happens with ``deny``, for the log line.
        allowed: what happens with ``allow``, for the log line.
    """
    refuse = on_error == "deny"
    log.warning("%s: blocklist unavailable (%s); %s", what, exc.code, refused if refuse else allowed)
    return refuse


def check_recording(blocklist: BlocklistClient, record_inbound: bool, app_secret: str | None) -> None:
    """Refuse to build a direct-mode webhook middleware that would record from bodies it cannot verify.

    Raises:
        ValueError: ``record_inbound`` with a direct blocklist and no ``app_secret``.
    """
    if record_inbound and not app_secret and isinstance(blocklist, DirectBlocklistClient):
        raise ValueError(
            "record_inbound needs app_secret: without it a forged webhook could record activity and re-link a "
            "blocked user's identities; pass app_secret=<your Meta app secret> or record_inbound=False"
        )


@dataclass(frozen=True)
class FilterResult:
    """What :func:`filter_payload` did.

    Attributes:
        payload: the payload without blocked users' items (the input itself when nothing was removed).
        removed: how many items were removed.
        empty: True when nothing is left to deliver (every change was removed).
    """

    payload: Any
    removed: int
    empty: bool


async def filter_payload(
    payload: Any, blocklist: BlocklistClient, *, record_inbound: bool = False, verified: bool = False
) -> FilterResult:
    """Remove blocked users' items from a parsed webhook payload (the input is not modified).

    Args:
        payload: the parsed JSON body of a webhook POST.
        blocklist: the blocklist to check against.
        record_inbound: record who wrote (direct mode), as the proxy's receiver does, so a bot without the proxy
            still meets Meta's 24-hour rule for blocking; only done when ``verified``.
        verified: the body's signature was verified under the Meta app secret.

    Raises:
        BlocklistError: the blocklist cannot answer (connectors it does not know are passed through unchecked).
    """
    try:
        wp.check(payload)
    except wp.PayloadError:
        return FilterResult(payload, 0, False)  # not a WhatsApp Business Account webhook: not ours to judge
    changes = wp.changes(payload)
    by_pnid: dict[str, list[wp.Change]] = {}
    for change in changes:
        if change.pnid:
            by_pnid.setdefault(change.pnid, []).append(change)
    kept: dict[tuple[int, int], dict[str, Any]] = {c.where: c.value for c in changes}
    removed = 0
    for pnid, mine in by_pnid.items():
        people = wp.users(mine)
        users = [InboundUser(p.wa_id, p.bsuid, active) for p, active in people]
        if not users:
            continue
        recording = record_inbound and verified
        # What belongs to whom (read receipts, call answers, join approvals the bot may send later): verified only.
        references = wp.references(mine, [p for p, _ in people]) if recording else ((), ())
        try:
            flags = await blocklist.blocked_users(pnid, users, record_inbound=recording, references=references)
        except UnknownConnector:
            log.debug("webhook for %s: not a configured connector, passed unchecked", pnid)
            continue
        blocked = {i for u, f in zip(users, flags, strict=True) if f for i in (u.wa_id, u.bsuid) if i}
        if not blocked:
            continue
        for change in mine:
            result = wp.filter_value(change, _any_of(blocked))
            removed += len(result.removed)
            if result.value is None:
                del kept[change.where]
            else:
                kept[change.where] = result.value
    if not removed:
        return FilterResult(payload, 0, False)
    out = wp.rebuild(payload, kept)
    return FilterResult(out, removed, not out["entry"])


def _any_of(blocked: set[str]) -> Callable[[wp.Person], bool]:
    return lambda person: bool(person.wa_id and person.wa_id in blocked) or bool(person.bsuid in blocked)


def signature_valid(app_secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time check of an ``X-Hub-Signature-256`` header."""
    return verify(app_secret, body, header)


@dataclass(frozen=True)
class BodyResult:
    """What to deliver to the bot for one webhook body.

    Attributes:
        body: the bytes to deliver (the original when unchanged).
        signature: the ``X-Hub-Signature-256`` to deliver with it (None: leave the header as it came).
        changed: True when blocked items were removed.
        empty: True when nothing is left to deliver: answer Meta 200 without calling the bot.
    """

    body: bytes
    signature: str | None
    changed: bool
    empty: bool


async def filter_body(
    body: bytes,
    blocklist: BlocklistClient,
    *,
    app_secret: str | None,
    signature: str | None,
    record_inbound: bool = True,
    verified: bool = False,
) -> BodyResult:
    """Filter a raw webhook body and re-sign it when it changed.

    The signature is checked first: only a body that verified under ``app_secret`` (or that the caller already
    ``verified``, e.g. pywa's own check) is recorded from, and only such a body is re-signed when it changed, so the
    bot's own check still rejects forgeries. A changed body is written the way Meta writes bodies (ASCII,
    ``\\uXXXX``, ``\\/``) so every consumer's signature check accepts it. A body that is not JSON is delivered
    unchanged: the bot answers it as it always would.

    Raises:
        BlocklistError: the blocklist cannot answer.
    """
    verified = verified or bool(app_secret and verify(app_secret, body, signature))
    try:
        payload = wp.parse(body)
    except wp.PayloadError:
        return BodyResult(body, None, False, False)
    result = await filter_payload(payload, blocklist, record_inbound=record_inbound, verified=verified)
    if not result.removed:
        return BodyResult(body, None, False, False)
    new_body = meta_dumps(result.payload)
    new_signature = sign(app_secret, new_body) if app_secret and verified else None
    log.info("webhook: removed %d item(s) of blocked users", result.removed)
    return BodyResult(new_body, new_signature, True, result.empty)


async def is_blocked_or_policy(
    blocklist: BlocklistClient, pnid: str, who: str, on_error: OnError, *, what: str = "send"
) -> bool | None:
    """``is_blocked`` with the plugins' shared policy.

    Returns:
        True / False as the blocklist says; False for a connector the blocklist does not manage or text that is
        no WhatsApp identity; None when the blocklist cannot answer and ``on_error`` is ``deny`` (the caller
        refuses); False in that case with ``allow``.
    """
    try:
        return await blocklist.is_blocked(pnid, who)
    except UnknownConnector:
        return False
    except BlocklistError as exc:
        if exc.status == 400:  # not a number or BSUID: nothing the blocklist can hold
            return False
        return None if refuses(on_error, exc, f"check of a {what}", refused="refused", allowed="allowed") else False


@dataclass(frozen=True)
class Decision:
    """What a webhook middleware does with one POST.

    Attributes:
        respond: ``(status, text)`` to answer Meta with directly, without calling the bot; None to forward.
        body: the body to forward.
        signature: the new ``X-Hub-Signature-256`` to forward, or None to keep the one that came.
    """

    respond: tuple[int, str] | None
    body: bytes
    signature: str | None


async def decide(
    body: bytes,
    blocklist: BlocklistClient,
    *,
    app_secret: str | None,
    signature: str | None,
    on_error: OnError,
    record_inbound: bool,
) -> Decision:
    """The webhook middlewares' shared decision for one webhook body.

    Nothing left after filtering → answer 200 (Meta must not retry what was removed on purpose); the blocklist
    unavailable → 503 with ``deny`` (Meta retries the delivery later), forward unchecked with ``allow``.
    """
    try:
        result = await filter_body(
            body, blocklist, app_secret=app_secret, signature=signature, record_inbound=record_inbound
        )
    except BlocklistError as exc:
        retry = "answered 503 so that Meta retries"
        if refuses(on_error, exc, "webhook", refused=retry, allowed="forwarded unchecked"):
            return Decision((503, "blocklist unavailable, retry later"), body, None)
        return Decision(None, body, None)
    if result.empty:
        return Decision((200, "ok"), b"", None)
    return Decision(None, result.body, result.signature)


class WebhookOptions(TypedDict, total=False):
    """The options every webhook middleware takes (ASGI and aiohttp), all keyword-only and optional."""

    path: str | Collection[str]
    """The webhook path(s) to guard, exactly as the request's path (default ``/webhooks/whatsapp``)."""
    app_secret: str | None
    """The Meta app secret: bodies are recorded from only when their signature verifies under it, and bodies that
    changed are re-signed with it (bots that verify signatures need it)."""
    on_error: OnError
    """When the blocklist cannot answer, ``deny`` (the default) answers 503 (Meta retries later), ``allow`` forwards
    the body unchecked."""
    record_inbound: bool
    """Record message senders as having written now (default True; direct mode, needs ``app_secret``; enables
    blocking under Meta's 24-hour rule for a bot that runs without the proxy)."""
    max_body_bytes: int
    """Larger bodies are answered 413 (default 3 MiB; Meta's payloads are far smaller)."""


class WebhookGuard:
    """A webhook middleware's settings, checked once, and its decision for each request.

    Raises:
        ValueError: ``record_inbound`` on a direct blocklist without ``app_secret``, or a bad ``on_error``.
        TypeError: an option that is not one of :class:`WebhookOptions`.
    """

    def __init__(self, blocklist: BlocklistClient, options: WebhookOptions) -> None:
        unknown = sorted(set(options) - WebhookOptions.__optional_keys__)
        if unknown:  # what a keyword-only signature would refuse, for callers mypy does not check
            raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
        path = options.get("path", "/webhooks/whatsapp")
        self.paths = frozenset([path] if isinstance(path, str) else path)
        self.blocklist = blocklist
        self.app_secret = options.get("app_secret")
        self.on_error = check_on_error(options.get("on_error", "deny"))
        self.record_inbound = options.get("record_inbound", True)
        check_recording(blocklist, self.record_inbound, self.app_secret)
        self.max_body_bytes = options.get("max_body_bytes", 3 * 1024 * 1024)

    def guards(self, method: str, path: str) -> bool:
        """Whether a request is a webhook POST to one of the guarded paths."""
        return method == "POST" and path in self.paths

    async def decide(self, body: bytes, signature: str | None) -> Decision:
        """:func:`decide` for one webhook body with these settings."""
        return await decide(
            body,
            self.blocklist,
            app_secret=self.app_secret,
            signature=signature,
            on_error=self.on_error,
            record_inbound=self.record_inbound,
        )
