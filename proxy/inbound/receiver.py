"""The webhook receiver (``/webhooks/whatsapp``): Meta's callbacks in, blocked users' items out, the rest forwarded.

One callback URL serves the whole Meta app. A change whose ``value.metadata.phone_number_id`` names a connector is
that connector's; an account-level change (no phone number ID: template status, account and quality updates...) is
routed by its WhatsApp Business Account (``entry[].id``) to the contact centers of the connectors with that
``waba_id`` (each URL once), else to ``webhooks.account_events_to``. Flow of one POST:

1. read the raw body (at most ``webhooks.max_body_bytes``), parse it, check its shape
   (:mod:`wa_blocklist.proxy.graph.payload`);
2. verify ``X-Hub-Signature-256`` on the raw bytes (:mod:`wa_blocklist.proxy.graph.signature`) before anything is
   learned from it;
3. per connector, one Redis round trip records who wrote (only user-sent items count), learns wa_id↔BSUID links and
   who sent which message / join request, and says who is blocked (nothing is recorded from an unverified body); the
   same script first claims the body for the replay guard (:mod:`wa_blocklist.proxy.inbound.replay`);
4. remove the blocked users' items as the policy table of :mod:`wa_blocklist.proxy.graph.payload` says; reject their
   incoming calls at Meta in the background; a blocked user's change of number carries the block to the new wa_id;
5. forward each contact center's share, concurrently: the original bytes and signature when it gets the whole POST
   unchanged, otherwise the kept changes serialised the way Meta serialises and re-signed;
6. answer Meta 200 only when every contact center answered 2xx, otherwise 5xx so Meta retries (at least once).

Changes for unknown connectors or WABAs follow ``webhooks.unknown_connectors`` without holding back the rest of the
POST. Errors are ``{"error": {"code", "message"}}`` like the admin API; Meta ignores the body, operators read it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from aiohttp import web
from multidict import CIMultiDictProxy
from pyreqwest.exceptions import PyreqwestError, RequestTimeoutError

from ..appkeys import CONFIG, GRAPH_SESSION, METRICS, SERVICE, STORE, WEBHOOK_CLIENT, WEBHOOK_TASKS
from ..base.bodies import read_body
from ..base.errors import (
    BadRequest,
    BlocklistError,
    DeliveryFailed,
    DeliveryTimeout,
    Forbidden,
    StoreUnavailable,
    Unauthorized,
    UnknownWebhookConnector,
    json_error,
)
from ..base.logs import note, tag_upstream
from ..blocklist.meta_sync import MetaClient, MetaError
from ..blocklist.service import BlocklistService, InboundUser
from ..config import Config, ConnectorConfig
from ..graph import payload as wp
from ..graph.optout import Keyword
from ..graph.signature import LEGACY_SIGNATURE_HEADER, SIGNATURE_HEADER, meta_dumps, sign, sign_sha1, verify
from .replay import Confirmations, ReplayGuard

__all__ = ["WEBHOOK_PATH", "handle_verification", "handle_webhook", "setup_webhooks", "sign", "verify_token_matches"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

WEBHOOK_PATH = "/webhooks/whatsapp"

ACCOUNT_LABEL = "account"
"""Metrics label of deliveries to ``webhooks.account_events_to``."""

_CLAIM_MARGIN_SECONDS = 30
"""A replay claim holds for the delivery's time bound plus this, until the delivery is confirmed or released."""

_CONFIRMATIONS = web.AppKey("webhook_replay_confirmations", Confirmations)
"""The receiver's own batch of replay-guard confirmations (set and written out by its cleanup context)."""

_RESULTS = {0: "unreachable", -1: "timeout"}


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
    app[_CONFIRMATIONS] = confirmations = Confirmations(app[STORE])
    yield
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    await confirmations.close()  # the store closes after this context (it was opened before)


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
    config = request.app[CONFIG].current
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
class _Destination:
    """One contact center URL and the changes it gets."""

    url: str
    secret: str  # signs what the proxy rebuilds
    label: str  # metrics label and log name
    name: str
    kept: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    changed: bool = False  # some change it gets was filtered


@dataclass
class _Share:
    """One connector's changes: the users in them and, after the check, what is left of each."""

    connector: ConnectorConfig
    changes: list[wp.Change] = field(default_factory=list)
    kept: dict[tuple[int, int], dict[str, Any] | None] = field(default_factory=dict)
    removed: list[wp.Item] = field(default_factory=list)
    follows: list[wp.Item] = field(default_factory=list)  # blocked users' items naming their new wa_id / BSUID
    auto_blocked: int = 0  # users blocked by flood protection while this webhook was checked
    users: list[InboundUser] = field(default_factory=list)
    people: list[wp.Person] = field(default_factory=list)  # the same users as the walker names them
    claim: tuple[str, int] | None = None  # (replay-guard key, hold in ms) for the recording script to claim
    replayed: bool = False  # the recording script found the body claimed already: nothing was recorded


@dataclass(slots=True)
class _Delivery:
    destination: _Destination
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
    config = request.app[CONFIG].current
    body = await read_body(
        request,
        config.webhooks.max_body_bytes,
        within=config.server.body_timeout_seconds,
        limit_name="webhooks.max_body_bytes",
    )
    payload = parse_payload(body)
    found = wp.changes(payload)
    shares: dict[str, _Share] = {}
    account: list[tuple[wp.Change, list[ConnectorConfig]]] = []
    unknown: list[wp.Change] = []
    for change in found:
        if change.pnid:
            connector = config.connector(change.pnid)
            if connector is None:
                unknown.append(change)
            else:
                shares.setdefault(change.pnid, _Share(connector)).changes.append(change)
        else:
            owners = [c for c in config.connectors if change.waba_id and c.waba_id == change.waba_id]
            if owners or config.webhooks.account_events_to:
                account.append((change, owners))
            else:
                unknown.append(change)
    involved = list({c.phone_number_id: c for c in [s.connector for s in shares.values()] +
                     [c for _, owners in account for c in owners]}.values())  # fmt: skip
    for share in shares.values():
        named = wp.users(share.changes)
        share.people = [person for person, _ in named]
        share.users = [InboundUser(p.wa_id, p.bsuid, active) for p, active in named]
    header = request.headers.get(SIGNATURE_HEADER)
    secret, verified = verify_signature(config, involved, body, header)

    # A verified body already delivered within the window is a replay (or Meta delivering twice): acknowledged, not
    # forwarded or learned from again. Unverified bodies (require_signature: false) are not remembered.
    guard = ReplayGuard(request.app[STORE], config.webhooks.replay_window_seconds) if verified else None
    anchor = involved[0].phone_number_id if involved else "account"
    if guard is not None and config.webhooks.deduplicate_replays:
        hold = int(config.webhooks.forward_timeout_seconds) + _CLAIM_MARGIN_SECONDS
        only = shares.get(anchor) if len(shares) == 1 else None
        if only is not None and only.users:
            # The one connector's recording script claims the body before it records anything: one round trip.
            only.claim = (guard.key_of(anchor, body), hold * 1000)
        else:
            try:
                claimed = await guard.claim(anchor, body, hold_seconds=hold)
            except StoreUnavailable:  # de-duplication is not worth deferring what needs no lookup (statuses...)
                claimed, guard = True, None
            if not claimed:
                return _replay_acknowledged(request, config)
    else:
        guard = None
    try:
        response = await _deliver_all(request, config, body, payload, shares, account, unknown, secret, verified)
    except BaseException:
        if guard is not None and not any(s.replayed for s in shares.values()):
            try:
                await guard.release(anchor, body)
            except StoreUnavailable:  # the claim's short hold runs out before Meta retries
                log.warning("could not release a failed webhook's replay claim; its hold expires on its own")
        raise
    if response is None:
        return _replay_acknowledged(request, config)
    if guard is not None:  # written with a later webhook's script or a batch; the claim holds until then
        guard.confirm_later(request.app[_CONFIRMATIONS], anchor, body)
    return response


def _replay_acknowledged(request: web.Request, config: Config) -> web.Response:
    log.info("replayed webhook acknowledged without forwarding (delivered within the last %ss)",
             config.webhooks.replay_window_seconds)  # fmt: skip
    request.app[METRICS].webhook_replays.inc()
    note(outcome="replay")
    return web.Response(text="ok", content_type="text/plain")


async def _deliver_all(
    request: web.Request,
    config: Config,
    body: bytes,
    payload: dict[str, Any],
    shares: dict[str, _Share],
    account: list[tuple[wp.Change, list[ConnectorConfig]]],
    unknown: list[wp.Change],
    secret: str,
    verified: bool,
) -> web.Response | None:
    """Check, filter and forward; None when the recording script found the body to be a replay (nothing done)."""
    header = request.headers.get(SIGNATURE_HEADER)
    service = request.app[SERVICE]
    confirmations = request.app[_CONFIRMATIONS]
    try:
        await _all([_check_share(service, share, verified, confirmations) for share in shares.values()])
    except StoreUnavailable:
        log.warning("webhook not forwarded: the blocklist store is unavailable; Meta will retry")
        raise
    if any(share.replayed for share in shares.values()):
        return None

    metrics = request.app[METRICS]
    note(connector=",".join(shares))
    for share in shares.values():
        if share.auto_blocked:
            metrics.auto_blocks.labels(share.connector.phone_number_id).inc(share.auto_blocked)
        if share.removed:
            metrics.inbound_blocked.inc((share.connector.phone_number_id,), len(share.removed))
            calls = [i.call_id for i in share.removed if i.call_id]
            if calls:
                _reject_calls_later(request.app, share.connector, calls)
        if share.follows and verified:
            await _follow_number_changes(service, share)

    destinations = _destinations(config, shares, account, secret)
    whole = wp.count_changes(payload)
    deliveries = [
        _deliver(
            request.app, d, payload, body, request.headers,
            original=verified and not d.changed and len(d.kept) == whole and header is not None,
        )
        for d in destinations.values()
        if d.kept
    ]  # fmt: skip
    results = await _all(deliveries)
    for r in results:
        result = _RESULTS.get(r.status) or ("delivered" if 200 <= r.status < 300 else "rejected")
        metrics.webhook_forwards.inc((r.destination.label, result))
    failed = [r for r in results if not 200 <= r.status < 300]
    if failed:
        names = ", ".join(f"{r.destination.name} ({_describe(r.status)})" for r in failed)
        if any(r.status == -1 for r in failed):
            raise DeliveryTimeout(f"contact center did not answer in time: {names}; Meta will retry")
        raise DeliveryFailed(f"contact center did not accept the webhook: {names}; Meta will retry")
    if unknown:
        _unknown_connectors(config, unknown)
    note(outcome="blocked" if any(s.removed for s in shares.values()) else "forwarded")
    return web.Response(text="ok", content_type="text/plain")


def parse_payload(body: bytes) -> dict[str, Any]:
    """Parse and shape-check a webhook body (see :func:`wa_blocklist.proxy.graph.payload.parse`).

    Raises:
        BadRequest: with code ``invalid_json``, ``wrong_object`` or ``invalid_payload``.
    """
    try:
        return wp.parse(body)
    except wp.PayloadError as exc:
        raise _bad(exc.code, exc.message) from None


def verify_signature(
    config: Config, involved: list[ConnectorConfig], body: bytes, header: str | None
) -> tuple[str, bool]:
    """Check ``X-Hub-Signature-256`` before anything is read from the body.

    Every connector the POST names must accept the signature under its app secret (one Meta app, one secret);
    connectors with ``require_signature: false`` are skipped. A POST that names no configured connector (unknown
    numbers only, or account-level events sent to ``webhooks.account_events_to``) must be signed with the app secret
    of some configured connector.

    Returns:
        The app secret to re-sign rebuilt bodies with, and whether the body is verified (only a verified body is
        learned from: activity, links, message owners).

    Raises:
        Unauthorized: the header is missing.
        Forbidden: the signature does not match.
    """
    if involved:
        required = [c for c in involved if c.require_signature]
        secret = involved[0].app_secret
    else:
        required = [c for c in config.connectors if c.require_signature]
        secret = required[0].app_secret if required else (config.connectors[0].app_secret if config.connectors else "")
    if not required:
        return secret, bool(secret) and verify(secret, body, header)
    if not header:
        log.warning("webhook refused: %s header missing", SIGNATURE_HEADER)
        raise Unauthorized(f"the {SIGNATURE_HEADER} header is missing")
    if involved:
        for connector in required:
            if not verify(connector.app_secret, body, header):
                log.warning("webhook refused: %s does not match the app secret of %s", SIGNATURE_HEADER, connector.name)
                raise Forbidden(f"the {SIGNATURE_HEADER} signature is not valid for this payload")
        return required[0].app_secret, True
    matched = [c.app_secret for c in required if verify(c.app_secret, body, header)]
    if not matched:
        log.warning("webhook refused: %s matches the app secret of no configured connector", SIGNATURE_HEADER)
        raise Forbidden(f"the {SIGNATURE_HEADER} signature is not valid for this payload")
    return matched[0], True


def _unknown_connectors(config: Config, unknown: list[wp.Change]) -> None:
    """Apply ``webhooks.unknown_connectors`` to changes no connector or WABA takes (the rest was delivered)."""
    names = ", ".join(sorted({(c.pnid or f"WABA {c.waba_id or '?'} ({c.field or 'no field'})")[:60] for c in unknown}))
    if config.webhooks.unknown_connectors == "refuse":
        # 503: Meta retries for days, so nothing is lost while the connector (or waba_id) is added to the config;
        # the rest of the POST was delivered and is delivered again on each retry (at least once, as Meta does).
        log.error(
            "webhook changes for %s refused: not configured connectors or WABAs; Meta will retry until they are "
            "added to the config (waba_id, webhooks.account_events_to) or webhooks.unknown_connectors is drop",
            names,
        )
        raise UnknownWebhookConnector(f"no connector or WABA is configured for {names}; Meta will retry")
    log.warning("webhook changes for unconfigured %s dropped", names)


# --- checking -------------------------------------------------------------------------------------------------


async def _check_share(service: BlocklistService, share: _Share, verified: bool, confirmations: Confirmations) -> None:
    """Record (verified bodies only; claiming the body first when ``share.claim`` is set) and check the users of one
    connector, then filter its changes. Earlier deliveries' replay confirmations for the connector ride along."""
    users = share.users
    index = {person: i for i, person in enumerate(share.people)}
    blocked: set[str] = set()
    if users:
        pnid = share.connector.phone_number_id
        if verified:
            items = [i for c in share.changes for i in c.items]
            messages, joins = wp.references(share.changes, share.people)
            keywords, counted = _keywords_and_counts(share.connector, items, index)
            confirm = confirmations.take(pnid)
            try:
                detail = await service.record_inbound_detail(
                    pnid, users, messages=messages, join_requests=joins, keywords=keywords, counted=counted,
                    claim=share.claim, confirm=confirm,
                )  # fmt: skip
            except BaseException:
                confirmations.restore(pnid, confirm)
                raise
            if detail is None:  # claimed already: a replay, nothing was recorded
                share.replayed = True
                return
            share.auto_blocked = detail.count(2)
            flags = [bool(f) for f in detail]
        else:
            flags = [await _blocked_unrecorded(service, pnid, u) for u in users]
        blocked = {ident for u, flag in zip(users, flags, strict=True) if flag for ident in (u.wa_id, u.bsuid) if ident}

    def is_blocked(person: wp.Person) -> bool:
        return bool(person.wa_id and person.wa_id in blocked) or bool(person.bsuid and person.bsuid in blocked)

    for change in share.changes:
        if not blocked:
            share.kept[change.where] = change.value
            continue
        share.follows += [i for i in change.items if (i.new_wa_id or i.new_bsuid) and is_blocked(i.person)]
        result = wp.filter_value(change, is_blocked)
        share.kept[change.where] = result.value
        share.removed += result.removed
    if share.removed and log.isEnabledFor(logging.DEBUG):
        # Debug only: the access line's outcome (blocked) and wabl_inbound_blocked_items_total{connector} say it on
        # every filtered webhook already, and a log line of its own cost about a twentieth of a delivery's CPU.
        log.debug(
            "removed %d item(s) of blocked users from a webhook for %s (%s)",
            len(share.removed), share.connector.name,
            ", ".join(sorted({i.kind.value for i in share.removed})),
        )  # fmt: skip


def _keywords_and_counts(
    connector: ConnectorConfig, items: list[wp.Item], index: dict[wp.Person, int]
) -> tuple[list[tuple[int, Keyword, str]], list[tuple[int, list[str]]]]:
    """Opt-out keyword messages (issue 19) and, with flood protection on, each user's inbound message IDs."""
    keywords: list[tuple[int, Keyword, str]] = []
    counted: dict[int, list[str]] = {}
    for item in items:
        if item.kind is not wp.Kind.MESSAGE or item.person not in index:
            continue
        user = index[item.person]
        if item.text and (mode := connector.keywords.match(item.text)) is not None:
            keywords.append((user, mode, item.text))
        if connector.flood_max_messages > 0:
            # Message IDs are the window's members, so Meta's retry of the same webhook is not counted twice.
            counted.setdefault(user, []).append(item.message_id or f"{item.path}:{time.time_ns()}")
    return keywords, list(counted.items())


async def _blocked_unrecorded(service: BlocklistService, pnid: str, user: InboundUser) -> bool:
    # An unverified body (a connector with require_signature: false, sent unsigned) is checked, never learned from.
    return await service.inbound_blocked(pnid, user)


async def _follow_number_changes(service: BlocklistService, share: _Share) -> None:
    for item in share.follows:
        moved = await service.follow_number_change(
            share.connector.phone_number_id,
            InboundUser(item.person.wa_id, item.person.bsuid),
            item.new_wa_id,
            item.new_bsuid,
        )
        if moved:
            log.info("a blocked user of %s changed number or BSUID: the block follows them", share.connector.name)


# --- forwarding -----------------------------------------------------------------------------------------------


def _destinations(
    config: Config,
    shares: dict[str, _Share],
    account: list[tuple[wp.Change, list[ConnectorConfig]]],
    secret: str,
) -> dict[str, _Destination]:
    """Each contact center URL once, with the changes it gets (filtered values in place)."""
    out: dict[str, _Destination] = {}

    def to(connector: ConnectorConfig | None) -> _Destination:
        if connector is None:
            url = config.webhooks.account_events_to
            return out.setdefault(url, _Destination(url, secret, ACCOUNT_LABEL, "webhooks.account_events_to"))
        url = connector.forward_webhooks_to
        return out.setdefault(url, _Destination(url, connector.app_secret, connector.phone_number_id, connector.name))

    for share in shares.values():
        for change in share.changes:
            value = share.kept[change.where]
            destination = to(share.connector)
            if value is not change.value:
                destination.changed = True
            if value is not None:
                destination.kept[change.where] = value
    for change, owners in account:
        targets: list[ConnectorConfig | None] = list(owners) if owners else [None]
        for connector in targets:
            to(connector).kept[change.where] = change.value
    return out


def rebuild(payload: dict[str, Any], kept: dict[tuple[int, int], dict[str, Any]]) -> bytes:
    """The payload with only the kept changes, in Meta's form (see
    :func:`wa_blocklist.proxy.graph.signature.meta_dumps`)."""
    return meta_dumps(wp.rebuild(payload, kept))


async def _deliver(
    app: web.Application,
    destination: _Destination,
    payload: dict[str, Any],
    original_body: bytes,
    original_headers: CIMultiDictProxy[str],
    *,
    original: bool,
) -> _Delivery:
    headers = {"Content-Type": "application/json"}
    if original:
        body = original_body
        headers[SIGNATURE_HEADER] = original_headers[SIGNATURE_HEADER]
        if original_headers.get(LEGACY_SIGNATURE_HEADER):
            headers[LEGACY_SIGNATURE_HEADER] = original_headers[LEGACY_SIGNATURE_HEADER]
    else:
        # Changed, split, or never verified (require_signature: false): the proxy signs what it vouches for.
        whole = not destination.changed and len(destination.kept) == wp.count_changes(payload)
        body = original_body if whole else rebuild(payload, destination.kept)
        headers[SIGNATURE_HEADER] = sign(destination.secret, body)
        headers[LEGACY_SIGNATURE_HEADER] = sign_sha1(destination.secret, body)
    tag_upstream(headers)
    timeout = _timedelta(app[CONFIG].current.webhooks.forward_timeout_seconds)
    metrics = app[METRICS]
    answered = False
    started = time.perf_counter()
    try:  # pyreqwest: about a third of aiohttp's client instructions per delivery (docs/performance.md)
        request = app[WEBHOOK_CLIENT].post(destination.url).headers(headers).body_bytes(body).timeout(timeout)
        resp = await request.build().send()  # the answer's body is read with it
        answered = True
        metrics.contact_center_seconds.observe(time.perf_counter() - started)
        status = resp.status
    except RequestTimeoutError:
        status = -1
    except PyreqwestError as exc:
        log.warning("contact center of %s unreachable: %s", destination.name, type(exc).__name__)
        status = 0
    if not answered:
        metrics.contact_center_errors.inc()
    if not 200 <= status < 300:
        log.warning("webhook for %s not accepted by its contact center: %s", destination.name, _describe(status))
    return _Delivery(destination, status)


@functools.lru_cache(maxsize=8)
def _timedelta(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


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
        if await MetaClient(app[GRAPH_SESSION], app[CONFIG].current.graph).reject_call(connector, call_id):
            log.info("rejected a blocked user's call on %s", connector.name)
    except MetaError as exc:
        log.warning("could not reject a blocked user's call on %s: %s", connector.name, exc)
    except Exception:  # a background task has nobody to raise to
        log.exception("rejecting a blocked user's call on %s failed", connector.name)


# --- helpers --------------------------------------------------------------------------------------------------


async def _all(steps: list[Coroutine[Any, Any, _T]]) -> list[_T]:
    """``asyncio.gather`` of ``steps``, awaited in place when there is only one (the usual webhook: one connector, one
    contact center): the same result and the same exception, without a task to create and schedule."""
    if len(steps) == 1:
        return [await steps[0]]
    return list(await asyncio.gather(*steps))


def _bad(code: str, message: str) -> BadRequest:
    error = BadRequest(message)
    error.code = code
    return error


def _error(status: int, code: str, message: str) -> web.Response:
    # nosniff: a browser must never render an error (which may quote the request) as anything but JSON.
    return json_error(status, code, message, {"X-Content-Type-Options": "nosniff"})
