"""The webhook receiver (``/webhooks/whatsapp``): Meta's callbacks in, blocked users' items out, the rest forwarded.

One callback URL serves the whole Meta app. Each ``entry[].changes[].value`` names its connector in
``metadata.phone_number_id``; a POST may mix connectors and users, so it is split per connector and filtered per
item. Flow of one POST:

1. read the raw body (at most ``webhooks.max_body_bytes``), parse it, check its shape;
2. verify ``X-Hub-Signature-256`` on the raw bytes with the app secret of every connector it names;
3. per connector, one Redis round trip records who wrote (the 24-hour rule) and says who is blocked;
4. remove the blocked users' messages, contacts and calls; reject their incoming calls at Meta in the background;
5. forward each connector's share to its contact center, concurrently: the original bytes and signature when
   nothing changed, otherwise compact JSON re-signed with the connector's app secret;
6. answer Meta 200 only when every contact center answered 2xx, otherwise 5xx so Meta retries (at least once).

Errors are ``{"error": {"code", "message"}}`` like the admin API; Meta ignores the body, operators read it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

from .blocklist import BlocklistService, InboundUser
from .bodies import read_body
from .config import Config, ConnectorConfig
from .errors import (
    BadRequest,
    BlocklistError,
    DeliveryFailed,
    DeliveryTimeout,
    Forbidden,
    StoreUnavailable,
    Unauthorized,
    UnknownWebhookConnector,
)
from .keys import CONFIG, GRAPH_SESSION, METRICS, SERVICE, WEBHOOK_SESSION, WEBHOOK_TASKS
from .logs import note, tag_upstream
from .meta import MetaClient, MetaError

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/whatsapp"
WABA_OBJECT = "whatsapp_business_account"
SIGNATURE_HEADER = "X-Hub-Signature-256"
LEGACY_SIGNATURE_HEADER = "X-Hub-Signature"  # SHA-1, still sent by Meta and checked by some older consumers

_LARGE_BODY = 1024 * 1024
_ENVELOPE_KEYS = frozenset({"messaging_product", "metadata", "contacts"})
"""Keys of a change value that carry no event of their own: a value left with only these is not forwarded."""


def setup_webhooks(app: web.Application) -> None:
    """Add the webhook routes and the background-task context to the proxy app.

    Call it before the gateway's catch-all route is added, so ``/webhooks/whatsapp`` is matched first.
    """
    app.router.add_get(WEBHOOK_PATH, handle_verification, allow_head=False)
    app.router.add_post(WEBHOOK_PATH, handle_webhook)
    app.cleanup_ctx.append(_tasks_ctx)


async def _tasks_ctx(app: web.Application) -> AsyncIterator[None]:
    # Call rejections run after Meta has its answer; shutdown waits for them (each is bounded by the Graph timeout).
    tasks: set[asyncio.Task[None]] = set()
    app[WEBHOOK_TASKS] = tasks
    yield
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


# --- GET: the verification handshake ------------------------------------------------------------------------


def verify_token_matches(connectors: Iterable[ConnectorConfig], presented: str) -> bool:
    """True if ``presented`` equals any connector's ``verify_token``, compared in constant time.

    Digests of equal length are compared, and every token is compared (no early exit), so neither the
    length nor the position of a match leaks through timing.
    """
    digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
    found = False
    for token in {c.verify_token for c in connectors}:
        found |= hmac.compare_digest(digest, hashlib.sha256(token.encode()).digest())
    return found


async def handle_verification(request: web.Request) -> web.Response:
    """``GET /webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=...&hub.challenge=...``: echo the challenge."""
    config = request.app[CONFIG]
    mode = request.query.get("hub.mode", "")
    token = request.query.get("hub.verify_token", "")
    challenge = request.query.get("hub.challenge")
    if mode != "subscribe" or not token or not verify_token_matches(config.connectors, token):
        log.warning("webhook verification refused from %s: wrong mode or verify token", request.remote)
        return _error(403, "verification_failed", "hub.mode must be 'subscribe' and hub.verify_token must match")
    if not challenge:
        return _error(400, "bad_request", "hub.challenge is missing")
    log.info("webhook verification handshake answered for %s", request.remote)
    return web.Response(text=challenge, content_type="text/plain")


# --- POST: the event callback -------------------------------------------------------------------------------


@dataclass
class _Share:
    """One connector's part of a POST: where its changes sit, and what is left of them after filtering."""

    connector: ConnectorConfig
    where: list[tuple[int, int]] = field(default_factory=list)  # (entry index, change index) in the payload
    kept: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)  # the filtered changes to forward
    changed: bool = False
    rejected_calls: list[str] = field(default_factory=list)
    removed: int = 0  # items of blocked users taken out (messages, contacts, calls)


@dataclass(frozen=True)
class _Delivery:
    connector: ConnectorConfig
    status: int  # the contact center's HTTP status; 0 unreachable, -1 timed out


async def handle_webhook(request: web.Request) -> web.Response:
    """``POST /webhooks/whatsapp``: verify, filter, forward; 200 only when every contact center accepted."""
    try:
        return await _process(request)
    except BlocklistError as exc:
        return _error(exc.status, exc.code, exc.message)
    except Exception:  # a bug must still answer 5xx (Meta retries) in our format, with the trace in the log
        log.exception("webhook processing failed")
        return _error(500, "internal_error", "an internal error occurred; it has been logged and Meta will retry")


async def _process(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    body = await read_body(
        request,
        config.webhooks.max_body_bytes,
        within=config.server.body_timeout_seconds,
        limit_name="webhooks.max_body_bytes",
    )
    payload = parse_payload(body)
    shares, unknown = _split(config, payload)
    verify_signatures(shares.values(), body, request.headers.get(SIGNATURE_HEADER))
    if unknown:
        _unknown_connectors(config, unknown, shares)

    service = request.app[SERVICE]
    try:
        await asyncio.gather(*(_filter_share(service, share, payload) for share in shares.values()))
    except StoreUnavailable:
        log.warning("webhook not forwarded: the blocklist store is unavailable; Meta will retry")
        raise

    metrics = request.app[METRICS]
    note(connector=",".join(shares))
    for share in shares.values():
        if share.removed:
            metrics.inbound_blocked.labels(share.connector.phone_number_id).inc(share.removed)
        if share.rejected_calls:
            _reject_calls_later(request.app, share.connector, share.rejected_calls)

    single = len(shares) == 1 and sum(len(s.where) for s in shares.values()) == _count_changes(payload)
    deliveries = [
        _deliver(request.app, share, payload, body, request.headers, original=single and not share.changed)
        for share in shares.values()
        if share.kept
    ]
    results = await asyncio.gather(*deliveries)
    for r in results:
        result = {0: "unreachable", -1: "timeout"}.get(r.status, "delivered" if 200 <= r.status < 300 else "rejected")
        metrics.webhook_forwards.labels(r.connector.phone_number_id, result).inc()
    failed = [r for r in results if not 200 <= r.status < 300]
    if failed:
        names = ", ".join(f"{r.connector.name} ({_describe(r.status)})" for r in failed)
        if any(r.status == -1 for r in failed):
            raise DeliveryTimeout(f"contact center did not answer in time: {names}; Meta will retry")
        raise DeliveryFailed(f"contact center did not accept the webhook: {names}; Meta will retry")
    note(outcome="blocked" if any(s.removed for s in shares.values()) else "forwarded")
    return web.Response(text="ok", content_type="text/plain")


def parse_payload(body: bytes) -> dict[str, Any]:
    """Parse and shape-check a webhook body: ``object`` is a WhatsApp Business Account, entries hold changes.

    Raises:
        BadRequest: with code ``invalid_json``, ``wrong_object`` or ``invalid_payload``.
    """
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: absurd nesting
        raise _bad("invalid_json", "the webhook body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise _bad("invalid_payload", "the webhook body must be a JSON object")
    if payload.get("object") != WABA_OBJECT:
        raise _bad("wrong_object", f"'object' must be '{WABA_OBJECT}'")
    entries = payload.get("entry")
    if not isinstance(entries, list) or not entries:
        raise _bad("invalid_payload", "'entry' must be a non-empty list")
    count = 0
    for e, entry in enumerate(entries):
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            raise _bad("invalid_payload", f"entry[{e}].changes must be a list")
        for c, change in enumerate(changes):
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict):
                raise _bad("invalid_payload", f"entry[{e}].changes[{c}].value must be an object")
            metadata = value.get("metadata")
            pnid = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
            if not isinstance(pnid, str) or not pnid:
                raise _bad(
                    "missing_phone_number_id",
                    f"entry[{e}].changes[{c}].value.metadata.phone_number_id is missing: "
                    "the proxy routes webhooks by phone number ID",
                )
            count += 1
    if not count:
        raise _bad("invalid_payload", "the webhook holds no changes")
    return payload


def _split(config: Config, payload: dict[str, Any]) -> tuple[dict[str, _Share], set[str]]:
    """Group the changes by connector; also return the phone number IDs no connector has."""
    shares: dict[str, _Share] = {}
    unknown: set[str] = set()
    for where, value in _changes(payload):
        pnid = value["metadata"]["phone_number_id"]
        connector = config.connector(pnid)
        if connector is None:
            unknown.add(pnid)
            continue
        shares.setdefault(pnid, _Share(connector)).where.append(where)
    return shares, unknown


def _unknown_connectors(config: Config, unknown: set[str], shares: dict[str, _Share]) -> None:
    """Apply ``webhooks.unknown_connectors``: refuse the POST (default) or drop the unknown changes."""
    names = ", ".join(sorted(pnid[:40] for pnid in unknown))
    if config.webhooks.unknown_connectors == "refuse":
        # A refusal makes Meta retry for days: nothing is lost while the connector is added to the config.
        log.error(
            "webhook refused: phone number ID(s) %s are not configured connectors; Meta will retry until "
            "they are added to the config (or set webhooks.unknown_connectors: drop)",
            names,
        )
        raise UnknownWebhookConnector(f"no connector is configured for phone number ID(s) {names}")
    log.warning("webhook changes for unconfigured phone number ID(s) %s dropped", names)
    for share in shares.values():
        share.changed = True  # the forwarded payload lacks the dropped changes: re-serialise and re-sign


def verify_signatures(shares: Iterable[_Share], body: bytes, header: str | None) -> None:
    """Check ``X-Hub-Signature-256`` against the app secret of every connector named (one Meta app, one secret).

    Connectors with ``require_signature: false`` are skipped.

    Raises:
        Unauthorized: the header is missing.
        Forbidden: the signature does not match some connector's app secret.
    """
    required = [s.connector for s in shares if s.connector.require_signature]
    if not required:
        return
    if not header:
        log.warning("webhook refused: %s header missing", SIGNATURE_HEADER)
        raise Unauthorized(f"the {SIGNATURE_HEADER} header is missing")
    presented = header.strip().encode("utf-8", "surrogateescape")
    for connector in required:
        if not hmac.compare_digest(presented, sign(connector.app_secret, body).encode()):
            log.warning("webhook refused: %s does not match the app secret of %s", SIGNATURE_HEADER, connector.name)
            raise Forbidden(f"the {SIGNATURE_HEADER} signature is not valid for this payload")


def sign(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta would send for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _sign_sha1(secret: str, body: bytes) -> str:
    return "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


# --- filtering ------------------------------------------------------------------------------------------------


def _changes(payload: dict[str, Any]) -> Iterator[tuple[tuple[int, int], dict[str, Any]]]:
    for e, entry in enumerate(payload["entry"]):
        for c, change in enumerate(entry["changes"]):
            yield (e, c), change["value"]


def _count_changes(payload: dict[str, Any]) -> int:
    return sum(len(entry["changes"]) for entry in payload["entry"])


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _items(value: dict[str, Any], key: str) -> list[Any]:
    items = value.get(key)
    return items if isinstance(items, list) else []


def _contact_ids(contact: Any) -> tuple[str, str]:
    if not isinstance(contact, dict):
        return "", ""
    return _text(contact.get("wa_id")), _text(contact.get("user_id"))


def _sender_ids(item: Any) -> tuple[str, str]:
    if not isinstance(item, dict):
        return "", ""
    return _text(item.get("from")), _text(item.get("from_user_id"))


def _call_ids(call: Any) -> tuple[str, str]:
    # A business-initiated call's "from" is the business itself; its events are about our own action, like statuses.
    if not isinstance(call, dict) or call.get("direction") == "BUSINESS_INITIATED":
        return "", ""
    return _sender_ids(call)


def _users(value: dict[str, Any]) -> list[tuple[str, str]]:
    """Every user who acts in one change value, as ``(wa_id, bsuid)``, completed from ``contacts[]``.

    ``contacts[]`` pairs a wa_id with a BSUID and comes first, so the Redis script learns the link before it checks
    the messages; a message that carries only one identity is completed from it, so it adds no second pair.
    """
    contacts = [_contact_ids(c) for c in _items(value, "contacts")]
    by_wa = {wa: uid for wa, uid in contacts if wa and uid}
    by_uid = {uid: wa for wa, uid in contacts if wa and uid}
    users = list(contacts)
    for wa, uid in [_sender_ids(m) for m in _items(value, "messages")] + [_call_ids(c) for c in _items(value, "calls")]:
        users.append((wa or by_uid.get(uid, ""), uid or by_wa.get(wa, "")))
    return [u for u in users if u[0] or u[1]]


async def _filter_share(service: BlocklistService, share: _Share, payload: dict[str, Any]) -> None:
    """Record activity for everyone who wrote to this connector and keep only the items of users not blocked."""
    mine = set(share.where)
    values = {where: value for where, value in _changes(payload) if where in mine}
    users = list(dict.fromkeys(u for value in values.values() for u in _users(value)))
    blocked: set[str] = set()
    if users:
        flags = await service.record_inbound(
            share.connector.phone_number_id, [InboundUser(wa_id=wa, bsuid=uid) for wa, uid in users]
        )
        blocked = {ident for (wa, uid), flag in zip(users, flags, strict=True) if flag for ident in (wa, uid) if ident}
    for where, value in values.items():
        filtered = _filter_value(value, blocked, share) if blocked else value
        if filtered is not value:
            share.changed = True
        if filtered is not None:
            share.kept[where] = filtered


def _filter_value(value: dict[str, Any], blocked: set[str], share: _Share) -> dict[str, Any] | None:
    """The value without the blocked users' items (the same object if nothing was removed, None if nothing is left)."""

    def is_blocked(ids: tuple[str, str]) -> bool:
        return any(i and i in blocked for i in ids)

    result = dict(value)
    removed = 0
    for key, ids_of in (("messages", _sender_ids), ("contacts", _contact_ids), ("calls", _call_ids)):
        items = _items(value, key)
        kept = [item for item in items if not is_blocked(ids_of(item))]
        if len(kept) == len(items):
            continue
        removed += len(items) - len(kept)
        if key == "calls":
            share.rejected_calls += [
                _text(c.get("id"))
                for c in items
                if is_blocked(_call_ids(c)) and c.get("event") == "connect" and _text(c.get("id"))
            ]
        if kept:
            result[key] = kept
        else:
            del result[key]  # Meta omits an empty list rather than sending []
    if not removed:
        return value
    share.removed += removed
    log.info(
        "removed %d item(s) of blocked users from a %s webhook for %s",
        removed,
        "/".join(k for k in ("messages", "contacts", "calls") if k in value),
        share.connector.name,
    )
    if not set(result) - _ENVELOPE_KEYS:
        return None
    return result


# --- forwarding -----------------------------------------------------------------------------------------------


def _rebuild(payload: dict[str, Any], kept: dict[tuple[int, int], dict[str, Any]]) -> bytes:
    """The payload with only the kept changes (filtered values in place), serialised compactly."""
    entries = []
    for e, entry in enumerate(payload["entry"]):
        changes = [{**change, "value": kept[(e, c)]} for c, change in enumerate(entry["changes"]) if (e, c) in kept]
        if changes:
            entries.append({**entry, "changes": changes})
    out = {**payload, "entry": entries}
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()


async def _deliver(
    app: web.Application,
    share: _Share,
    payload: dict[str, Any],
    original_body: bytes,
    original_headers: CIMultiDictProxy[str],
    *,
    original: bool,
) -> _Delivery:
    connector = share.connector
    headers = {"Content-Type": "application/json"}
    if original and original_headers.get(SIGNATURE_HEADER) and connector.require_signature:
        body = original_body
        headers[SIGNATURE_HEADER] = original_headers[SIGNATURE_HEADER]
        if original_headers.get(LEGACY_SIGNATURE_HEADER):
            headers[LEGACY_SIGNATURE_HEADER] = original_headers[LEGACY_SIGNATURE_HEADER]
    else:
        # Changed, split, or never verified (require_signature: false): the proxy signs what it vouches for.
        body = original_body if original else _rebuild(payload, share.kept)
        headers[SIGNATURE_HEADER] = sign(connector.app_secret, body)
        headers[LEGACY_SIGNATURE_HEADER] = _sign_sha1(connector.app_secret, body)
    tag_upstream(headers)
    timeout = aiohttp.ClientTimeout(total=app[CONFIG].webhooks.forward_timeout_seconds)
    # aiohttp warns about raw bytes over 1 MB; a file-like payload is written in chunks instead.
    data: bytes | io.BytesIO = body if len(body) <= _LARGE_BODY else io.BytesIO(body)
    metrics = app[METRICS]
    answered = False
    started = time.perf_counter()
    try:
        async with app[WEBHOOK_SESSION].post(
            connector.forward_webhooks_to, data=data, headers=headers, allow_redirects=False, timeout=timeout
        ) as resp:
            answered = True
            metrics.contact_center_seconds.observe(time.perf_counter() - started)
            await resp.read()
            status = resp.status
    except TimeoutError:
        status = -1
    except aiohttp.ClientError as exc:
        log.warning("contact center of %s unreachable: %s", connector.name, type(exc).__name__)
        status = 0
    if not answered:
        metrics.contact_center_errors.inc()
    if not 200 <= status < 300:
        log.warning("webhook for %s not accepted by its contact center: %s", connector.name, _describe(status))
    return _Delivery(connector, status)


def _describe(status: int) -> str:
    return {0: "unreachable", -1: "timed out"}.get(status, f"HTTP {status}")


# --- calls from blocked users ---------------------------------------------------------------------------------


def _reject_calls_later(app: web.Application, connector: ConnectorConfig, call_ids: list[str]) -> None:
    tasks = app[WEBHOOK_TASKS]
    for call_id in call_ids:
        if not connector.access_token:
            log.warning(
                "blocked user's call on %s not rejected at Meta: the connector has no access_token configured",
                connector.name,
            )
            continue
        task = asyncio.create_task(_reject_call(app, connector, call_id))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def _reject_call(app: web.Application, connector: ConnectorConfig, call_id: str) -> None:
    try:
        if await MetaClient(app[GRAPH_SESSION], app[CONFIG].graph).reject_call(connector, call_id):
            log.info("rejected a blocked user's call on %s", connector.name)
    except MetaError as exc:
        log.warning("could not reject a blocked user's call on %s: %s", connector.name, exc)
    except Exception:  # a background task has nobody to raise to
        log.exception("rejecting a blocked user's call on %s failed", connector.name)


# --- helpers --------------------------------------------------------------------------------------------------


def _bad(code: str, message: str) -> BadRequest:
    error = BadRequest(message)
    error.code = code
    return error


def _error(status: int, code: str, message: str) -> web.Response:
    # nosniff: a browser must never render an error (which may quote the request) as anything but JSON.
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers={"X-Content-Type-Options": "nosniff"}
    )
