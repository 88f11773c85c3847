"""Removing blocked users' items from a Meta webhook payload, shared by every webhook-side plugin.

A payload is ``{"object", "entry": [{"id", "changes": [{"field", "value": {...}}]}]}``; one ``value`` may hold
items (``messages[]``, ``statuses[]``, ``calls[]``, ``contacts[]``...) from several users. Only the blocked users'
items are removed; a change left with no events is dropped, then an entry left with no changes. The check itself
is the blocklist's (:class:`plugins.client.BlocklistClient`), never re-implemented here.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from proxy.blocklist import InboundUser
from proxy.errors import BlocklistError, UnknownConnector
from proxy.webhooks import sign

from .client import BlocklistClient

log = logging.getLogger(__name__)

OnError = Literal["deny", "allow"]
"""What a plugin does when the blocklist cannot answer: ``deny`` refuses (sends) or defers (webhooks), ``allow``
lets the traffic through unchecked."""

SIGNATURE_HEADER = "X-Hub-Signature-256"

# (wa_id field, BSUID field) per list; the first pair with a value names the item's user.
_USER_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "messages": (("from", "from_user_id"),),
    "contacts": (("wa_id", "user_id"),),
    "statuses": (("recipient_id", "recipient_user_id"),),
}
_FALLBACK_FIELDS = (("wa_id", "user_id"), ("from", "from_user_id"), ("recipient_id", "recipient_user_id"))


def check_on_error(on_error: str) -> OnError:
    """Validate an ``on_error`` argument (``deny`` or ``allow``)."""
    if on_error not in ("deny", "allow"):
        raise ValueError(f"on_error must be 'deny' or 'allow', not {on_error!r}")
    return on_error  # type: ignore[return-value]


def _user_of(list_name: str, item: dict[str, Any]) -> InboundUser | None:
    if list_name == "calls":
        # A business-initiated call's user is the callee; a user-initiated one's is the caller.
        outgoing = str(item.get("direction", "")).upper() == "BUSINESS_INITIATED"
        pairs: tuple[tuple[str, str], ...] = (("to", "to_user_id"),) if outgoing else (("from", "from_user_id"),)
    else:
        pairs = _USER_FIELDS.get(list_name, _FALLBACK_FIELDS)
    for wa_field, bsuid_field in pairs:
        wa_id, bsuid = item.get(wa_field), item.get(bsuid_field)
        wa_id = wa_id if isinstance(wa_id, str) else ""
        bsuid = bsuid if isinstance(bsuid, str) else ""
        if wa_id or bsuid:
            return InboundUser(wa_id=wa_id, bsuid=bsuid)
    return None


@dataclass
class _Item:
    pnid: str
    change: dict[str, Any]
    list_name: str
    item: dict[str, Any]
    user: InboundUser


def _items(payload: Any) -> list[_Item]:
    found: list[_Item] = []
    entries = payload.get("entry") if isinstance(payload, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        changes = entry.get("changes") if isinstance(entry, dict) else None
        for change in changes if isinstance(changes, list) else ():
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict):
                continue
            metadata = value.get("metadata")
            pnid = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
            if not isinstance(pnid, str) or not pnid:
                continue
            mine: list[_Item] = []
            for list_name, items in value.items():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if isinstance(item, dict) and (user := _user_of(list_name, item)) is not None:
                        mine.append(_Item(pnid, change, list_name, item, user))
            found.extend(_completed(mine))
    return found


def _completed(items: list[_Item]) -> list[_Item]:
    """Items whose user shows one identity get the other from the value's ``contacts[]`` (wa_id ↔ BSUID)."""
    pairs = [(i.user.wa_id, i.user.bsuid) for i in items if i.list_name == "contacts" and i.user.wa_id and i.user.bsuid]
    by_wa = dict(pairs)
    by_bsuid = {b: w for w, b in pairs}
    for i in items:
        if not i.user.bsuid and i.user.wa_id in by_wa:
            i.user = InboundUser(wa_id=i.user.wa_id, bsuid=by_wa[i.user.wa_id])
        elif not i.user.wa_id and i.user.bsuid in by_bsuid:
            i.user = InboundUser(wa_id=by_bsuid[i.user.bsuid], bsuid=i.user.bsuid)
    return items


@dataclass(frozen=True)
class FilterResult:
    """What :func:`filter_payload` did.

    Attributes:
        payload: the payload without blocked users' items (the input itself when nothing was removed).
        removed: how many items were removed.
        empty: True when nothing is left to deliver (every entry was removed).
    """

    payload: Any
    removed: int
    empty: bool


async def filter_payload(payload: Any, blocklist: BlocklistClient, *, record_inbound: bool = True) -> FilterResult:
    """Remove blocked users' items from a parsed webhook payload (the input is not modified).

    Args:
        payload: the parsed JSON body of a webhook POST.
        blocklist: the blocklist to check against.
        record_inbound: record the senders of ``messages[]`` as having written now (direct mode), as the proxy's
            webhook receiver does, so a bot without the proxy still meets Meta's 24-hour rule for blocking.

    Raises:
        BlocklistError: the blocklist cannot answer (connectors it does not know are passed through unchecked).
    """
    items = _items(payload)
    if not items:
        return FilterResult(payload, 0, False)
    blocked_ids: set[int] = set()
    for pnid in dict.fromkeys(i.pnid for i in items):
        mine = [i for i in items if i.pnid == pnid]
        # Each user once: statuses and contacts repeat the senders of the same POST.
        senders = list(dict.fromkeys(i.user for i in mine if i.list_name == "messages"))
        others = [u for u in dict.fromkeys(i.user for i in mine if i.list_name != "messages") if u not in senders]
        try:
            flags = await blocklist.blocked_users(pnid, senders, record_inbound=record_inbound)
            flags += await blocklist.blocked_users(pnid, others)
        except UnknownConnector:
            log.debug("webhook for %s: not a configured connector, passed unchecked", pnid)
            continue
        blocked_users = {(u.wa_id, u.bsuid) for u, f in zip(senders + others, flags, strict=True) if f}
        # A user known by one identity in one item and both in another is blocked in every item.
        for i in mine:
            wa_id, bsuid = i.user.wa_id, i.user.bsuid
            if any((wa_id and wa_id == w) or (bsuid and bsuid == b) for w, b in blocked_users):
                blocked_ids.add(id(i.item))
    if not blocked_ids:
        return FilterResult(payload, 0, False)
    return _without(payload, blocked_ids)


def _without(payload: dict[str, Any], blocked_ids: set[int]) -> FilterResult:
    removed = 0
    entries_out: list[Any] = []
    for entry in payload["entry"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("changes"), list):
            entries_out.append(entry)
            continue
        changes_out: list[Any] = []
        for change in entry["changes"]:
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict):
                changes_out.append(change)
                continue
            new_value: dict[str, Any] = {}
            cut = 0
            for name, items in value.items():
                if isinstance(items, list):
                    kept = [x for x in items if id(x) not in blocked_ids]
                    cut += len(items) - len(kept)
                    if kept or len(kept) == len(items):
                        new_value[name] = kept
                else:
                    new_value[name] = items
            removed += cut
            has_events = any(isinstance(v, list) and v and k != "contacts" for k, v in new_value.items())
            if cut and not has_events:
                continue  # nothing of this change is left but the blocked users' items
            changes_out.append({**change, "value": new_value} if cut else change)
        if changes_out or not entry["changes"]:
            entries_out.append({**entry, "changes": changes_out})
    return FilterResult({**payload, "entry": entries_out}, removed, not entries_out)


def signature_valid(app_secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time check of an ``X-Hub-Signature-256`` header."""
    return bool(header) and hmac.compare_digest(sign(app_secret, body), header or "")


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
) -> BodyResult:
    """Filter a raw webhook body and re-sign it when it changed.

    The new body is re-signed only when ``app_secret`` is given and the original signature was valid, so the
    bot's own signature check still rejects forgeries. A body that is not JSON is delivered unchanged: the bot
    answers it as it always would.

    Raises:
        BlocklistError: the blocklist cannot answer.
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return BodyResult(body, None, False, False)
    result = await filter_payload(payload, blocklist, record_inbound=record_inbound)
    if not result.removed:
        return BodyResult(body, None, False, False)
    new_body = json.dumps(result.payload, separators=(",", ":"), ensure_ascii=False).encode()
    new_signature = None
    if app_secret and signature_valid(app_secret, body, signature):
        new_signature = sign(app_secret, new_body)
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
        log.warning(
            "blocklist check for a %s failed (%s): %s", what, exc.code, "refused" if on_error == "deny" else "allowed"
        )
        return None if on_error == "deny" else False


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
        if on_error == "deny":
            log.warning("webhook: blocklist unavailable (%s); answered 503 so that Meta retries", exc.code)
            return Decision((503, "blocklist unavailable, retry later"), body, None)
        log.warning("webhook: blocklist unavailable (%s); forwarded unchecked", exc.code)
        return Decision(None, body, None)
    if result.empty:
        return Decision((200, "ok"), b"", None)
    return Decision(None, result.body, result.signature)
