"""The outbound gateway: a Graph-API-compatible reverse proxy that refuses every way of reaching a blocked user.

Every request that reaches the root of the proxy and is not the webhook receiver, the admin app or a health
endpoint lands here, and is classified by :mod:`wa_blocklist.proxy.graph.classify` (default deny) into exactly one of:

1. **send** (``POST /{pnid}/messages``, ``marketing_messages``, ``calls``): the body is read (at most 1 MB after
   gzip decoding), every ``to`` / ``recipient`` is read with every reading Meta may give it
   (:func:`wa_blocklist.proxy.graph.identity.recipient_readings` with the connector's region) and checked against the
   connector's blocklist; a read receipt or typing indicator is checked against the sender of the message it names
   (learned from verified webhooks); a send to a group passes.
2. **encrypted** (``messages_encrypted``): refused unless the connector has ``allow_encrypted_messages``.
3. **block users** (``/{pnid}/block_users``): :mod:`wa_blocklist.proxy.outbound.block_users`.
4. **participants** / **join requests** (``POST /{group_id}/...``): users added, and the users behind approved
   join requests, checked against every connector's blocklist.
5. **pass**: an allow-listed surface that cannot reach a user (``proxy/graph/graph_surfaces.yaml`` + ``gateway.allow``):
   streamed (uploads) or, when it has a body, read and checked for ``batch`` / ``method`` first.
6. **refused**: everything else, with the Graph error envelope (code 10 or 100 and a sentence saying why).

A checked request is forwarded with its original bytes and headers (``Content-Encoding: gzip`` included: the
app turns aiohttp's automatic request decompression off, so what Meta gets is what the caller sent). A blocked
recipient gets HTTP 400 with code ``139900`` (``RECIPIENT_BLOCKED``); nothing reaches Meta.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn
from urllib.parse import unquote

import aiohttp
from aiohttp import StreamReader, web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import Counter
from pyreqwest.client import Client as ReqwestClient
from pyreqwest.client import ClientBuilder
from pyreqwest.exceptions import DecodeError, PyreqwestError, RequestTimeoutError
from pyreqwest.response import Response as ReqwestResponse
from yarl import URL

from ..appkeys import CONFIG, GATEWAY_CLIENT, GATEWAY_SESSION, METRICS, SERVICE
from ..base.bodies import read_body
from ..base.errors import BodyTimeout, BodyTooLarge, StoreUnavailable
from ..base.logs import REQUEST_ID_HEADER, note, tag_upstream
from ..base.logs import current as current_request
from ..base.phone_format import masked
from ..blocklist.service import BlocklistService
from ..config import Config, ConnectorConfig
from ..graph import classify
from ..graph.classify import (
    MAX_INSPECTED_BODY,
    OWN_FACES,
    PERMISSION_DENIED,
    Params,
    PartNameScanner,
    Reach,
    Refused,
    Target,
    carries_parameters,
    classify_target,
    reach,
    read_params,
)
from ..graph.errors import BAD_REQUEST, RECIPIENT_BLOCKED, RECIPIENT_OPTED_OUT, SERVICE_UNAVAILABLE, error_envelope
from ..graph.identity import Identity
from .uploads import Pace, TooManyUploads, UploadLimiter, UploadTooSlow

log = logging.getLogger(__name__)

SMALL_RESPONSE = 64 * 1024
"""Upstream answers of a known length up to this size are read whole and sent in one write, not streamed."""

UNKNOWN_ERROR = 1
"""Meta's "An unknown error occurred" code, for failures of the proxy itself."""

TOO_MANY_CALLS = 4
"""Meta's "Application request limit reached" code, for uploads over the gateway's upload limits (retry later)."""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers that describe one connection, never forwarded in either direction (RFC 9110 §7.6.1)."""

REQUEST_HEADERS_DROPPED = HOP_BY_HOP | {"host", "expect"}
"""Not forwarded upstream: the upstream Host comes from ``graph.base_url``; 100-continue was answered here."""

REQUEST_HEADERS_DROPPED_IN_HAND = REQUEST_HEADERS_DROPPED | {"content-length"}
"""Also not copied when the body is in hand: the client sets the length."""

_DROPPED_TAGGED = REQUEST_HEADERS_DROPPED_IN_HAND | {REQUEST_ID_HEADER.lower()}
"""... and inside a request, whose own ID replaces the caller's header (as
:func:`wa_blocklist.proxy.base.logs.tag_upstream` does)."""

RESPONSE_HEADERS_DROPPED = HOP_BY_HOP
"""Not copied from Meta's response to the caller."""

_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
_PNID = re.compile(r"^[0-9]{5,32}$")
_DOT_SEGMENT = re.compile(r"(^|/)(\.|%2e){1,2}(/|$)", re.IGNORECASE)


class GraphRefusal(Refused):
    """A request the gateway answers itself with a Graph error envelope (a
    :class:`~wa_blocklist.proxy.graph.classify.Refused`)."""

    def response(self) -> web.Response:
        return render(self)


def render(refusal: Refused) -> web.Response:
    """The Graph-style error response for a refusal."""
    body = error_envelope(refusal.code, refusal.title, refusal.details, transient=refusal.transient)
    # nosniff: details may quote the request (a recipient), which must never be rendered as anything but JSON.
    return web.json_response(body, status=refusal.status, headers={"X-Content-Type-Options": "nosniff"})


def bad_request(details: str) -> GraphRefusal:
    """A Graph-style 400 with Meta's "Invalid parameter" code."""
    return GraphRefusal(400, BAD_REQUEST, "Invalid parameter", details)


def permission_denied(details: str) -> GraphRefusal:
    """A Graph-style 403 with Meta's "Permission denied" code."""
    return GraphRefusal(403, PERMISSION_DENIED, "Permission denied", details)


def unavailable(status: int, details: str) -> GraphRefusal:
    """A transient Graph-style 5xx with Meta's "Service unavailable" code: the caller should retry later."""
    return GraphRefusal(status, SERVICE_UNAVAILABLE, "Service unavailable", details, transient=True)


def store_unavailable() -> GraphRefusal:
    return unavailable(503, "The blocklist store is unavailable, so the recipient cannot be checked; retry later")


def upstream_url(base_url: str, request: web.Request) -> URL:
    """The upstream URL for a request: ``graph.base_url`` + the request's raw path and query, nothing else.

    Raises:
        GraphRefusal: for request targets that could lead anywhere but the configured upstream (absolute-form
            or ``//`` targets, ``.``/``..`` segments, backslashes).
    """
    raw = request.raw_path
    if len(raw) <= _MEMO_URL:
        return _upstream_url(base_url, raw)
    return _checked_url(base_url, raw)


_MEMO_URL = 256
"""Longest request target whose upstream URL is remembered (4,096 of them at most)."""


@functools.lru_cache(maxsize=4096)
def _upstream_url(base_url: str, raw: str) -> URL:
    """:func:`_checked_url`, remembered: a contact center sends to a handful of paths, and a URL is immutable
    (refusals are not remembered)."""
    return _checked_url(base_url, raw)


def _checked_url(base_url: str, raw: str) -> URL:
    path_part = raw.split("?", 1)[0]
    if not raw.startswith("/") or raw.startswith("//") or "\\" in path_part or "%5c" in path_part.lower():
        raise bad_request("the request path is not a Graph API path")
    # A dot segment needs "/." or a percent escape: most paths have neither and skip the regexes.
    maybe_dots = "/." in path_part or "%" in path_part
    if maybe_dots and (_DOT_SEGMENT.search(path_part) or _DOT_SEGMENT.search(unquote(path_part))):
        raise bad_request("the request path must not contain '.' or '..' segments")
    target = URL(base_url.rstrip("/") + raw, encoded=True)
    if (target.scheme, target.host, target.port) != _origin(base_url):
        raise bad_request("the request path is not a Graph API path")
    return target


@functools.lru_cache(maxsize=8)
def _origin(base_url: str) -> tuple[str, str | None, int | None]:
    base = URL(base_url)
    return base.scheme, base.host, base.port


def _named_by_connection(values: Iterable[str]) -> set[str]:
    """The header names (lower case) that the ``Connection`` header's values name: hop-by-hop for this connection
    only, never forwarded (RFC 9110 §7.6.1)."""
    return {h.strip().lower() for value in values for h in value.split(",")}


def forward_headers(headers: CIMultiDictProxy[str], dropped: frozenset[str]) -> CIMultiDict[str]:
    """Copy headers minus ``dropped`` and minus every header the ``Connection`` header names."""
    named = _named_by_connection(headers.getall("Connection", ()))
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        low = name.lower()
        if low not in dropped and low not in named:
            out.add(name, value)
    return out


def _own_face(raw_path: str) -> bool:
    parts = [p for p in raw_path.split("?", 1)[0].split("/") if p]
    if parts and re.match(r"^[vV][0-9]", parts[0]):
        parts = parts[1:]
    return bool(parts) and unquote(parts[0]).lower() in OWN_FACES


BlockUsersHandler = Callable[["Gateway", web.Request, URL, Target], Awaitable[web.StreamResponse]]
"""Answers a Block Users API call for the gateway (passed in, so that the gateway does not import its handler)."""


@dataclass(frozen=True)
class UserRefusal:
    """What the gateway says when it refuses a send for its user's state on a connector."""

    outcome: str
    """The access line's outcome."""
    log: str
    """The log line (``%s``: the connector's phone number ID)."""
    code: int
    title: str
    details: str
    """``error_data.details``, with ``{user}`` (masked), ``{name}`` and ``{pnid}`` of the connector."""


BLOCKED = UserRefusal(
    "blocked",
    "refused a send to a blocked user on %s",
    RECIPIENT_BLOCKED,
    "Recipient is blocked on this connector",
    "The user {user} is blocked on connector {name!r} ({pnid}) by its blocklist; the request was not sent to WhatsApp",
)
OPTED_OUT = UserRefusal(
    "opted_out",
    "refused a template send to a user who opted out on %s",
    RECIPIENT_OPTED_OUT,
    "Recipient opted out of template and marketing messages",
    "The user {user} opted out on connector {name!r} ({pnid}); templates and marketing messages are refused, "
    "free-form replies in the customer service window are not; the request was not sent to WhatsApp",
)


class Gateway:
    """The catch-all handler: classify, check, forward or refuse.

    Args:
        app: the proxy application (config, Graph session and blocklist service are read from it per request,
            since the session and service exist only once the app has started).
        block_users: the handler of Block Users API calls (:mod:`.block_users`, which builds on this class).
    """

    def __init__(self, app: web.Application, block_users: BlockUsersHandler) -> None:
        self.app = app
        self.block_users = block_users
        self.uploads = UploadLimiter()
        """Streamed uploads in flight (per process), bounded by ``gateway.uploads_total`` / ``uploads_per_client``."""

    @property
    def config(self) -> Config:
        return self.app[CONFIG].current

    @property
    def service(self) -> BlocklistService:
        return self.app[SERVICE]

    @property
    def session(self) -> aiohttp.ClientSession:
        return self.app[GATEWAY_SESSION]

    @property
    def client(self) -> ReqwestClient:
        return self.app[GATEWAY_CLIENT]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Route one request: check, refuse or pass through."""
        try:
            return await self._handle(request)
        except Refused as refusal:
            return render(refusal)
        except ConnectionResetError:
            # The caller hung up (mid-upload, or before the answer could be sent): nobody to answer, and not Meta's
            # failure. aiohttp closes the connection; the upstream request has been abandoned.
            log.info("caller went away during %s %s", request.method, request.path[:200])
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("gateway failure on %s %s", request.method, request.path[:200])
            return GraphRefusal(
                500, UNKNOWN_ERROR, "An unknown error occurred", "the proxy failed; it has been logged", transient=True
            ).response()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        config = self.config
        raw_path, _, raw_query = request.raw_path.partition("?")
        if not config.gateway.enforce:
            if _own_face(raw_path):  # our own faces, in another letter case: never sent (or a token) to Meta
                raise GraphRefusal(404, BAD_REQUEST, "Unknown path", f"{raw_path[:100]} is not served")
            return await self.forward(request, upstream_url(config.graph.base_url, request))
        target = classify_target(request.method, raw_path, raw_query, request.headers.items(), config.gateway.allow)
        url = upstream_url(config.graph.base_url, request)
        if target.kind == "pass":
            return await self._pass(request, url, target)
        if target.kind == "block_users":
            return await self.block_users(self, request, url, target)
        if target.kind in ("participants", "join_requests"):
            body, params = await self.read_inspected(request, target)
            await self._check_group(target, reach(target, params))
            return await self.forward(request, url, body=body)
        connector = self.connector_for(target.node)
        if connector is None:  # gateway.unknown_connectors: pass, the operator's choice
            return await self.forward(request, url)
        note(connector=connector.phone_number_id)
        if target.kind == "encrypted":
            if not connector.allow_encrypted_messages:
                raise permission_denied(
                    "messages_encrypted is refused on this connector: the proxy cannot see the recipient of an "
                    "encrypted message (set allow_encrypted_messages on the connector to allow it)"
                )
            if not carries_parameters(request.headers.get("Content-Type", "")):
                return await self.forward(request, url)  # opaque bytes: the connector's policy lets them through
        body, params = await self.read_inspected(request, target)
        found = reach(target, params)
        identities = classify.identities(found.recipients, connector.region, strict=True)
        identities += classify.identities(found.maybe_recipients, connector.region, strict=False)
        if identities:
            await self.refuse_if_blocked([connector], identities)
            if found.template:  # issue 19: opt-outs refuse templates and marketing, not free-form replies
                await self.refuse_if_opted_out(connector, identities)
        for message_id in found.message_ids:
            await self._check_receipt(connector, message_id)
        return await self.forward(request, url, body=body)

    async def read_inspected(self, request: web.Request, target: Target) -> tuple[bytes, Params]:
        """Read (capped) and parse an inspected request's body; the original bytes are returned for forwarding."""
        body = await read_capped(request, self.config.server.body_timeout_seconds) if request.body_exists else b""
        headers = request.headers
        params = read_params(target.query, body, headers.get("Content-Type", ""), headers.get("Content-Encoding", ""))
        return body, params

    async def _pass(self, request: web.Request, url: URL, target: Target) -> web.StreamResponse:
        if target.streams(request.headers.get("Content-Type", "")):
            encoding = request.headers.get("Content-Encoding", "").strip().lower()
            if encoding not in ("", "identity"):
                raise bad_request("uploads are forwarded as they arrive and cannot be compressed (Content-Encoding)")
            multipart = request.headers.get("Content-Type", "").lower().startswith("multipart/")
            scanner = PartNameScanner() if multipart else None
            if not request.body_exists or request.content.is_eof():  # sent in one write: holds no connection long
                return await self.forward(request, url, scanner=scanner)
            with self._upload_slot(request):
                return await self.forward(request, url, scanner=scanner)
        if request.body_exists:
            body, _ = await self.read_inspected(request, target)  # refuses batch, method and unreadable bodies
            return await self.forward(request, url, body=body)
        return await self.forward(request, url)

    @contextlib.contextmanager
    def _upload_slot(self, request: web.Request) -> Iterator[None]:
        """Hold one of the streamed-upload slots, so uploads can never take every upstream connection from sends.

        Raises:
            GraphRefusal: 429 (transient) when the client's or the process's upload limit is reached.
        """
        gateway = self.config.gateway  # read per upload: a reload may change the limits
        self.uploads.total, self.uploads.per_client = gateway.uploads_total, gateway.uploads_per_client
        try:
            with self.uploads.slot(request.remote or ""):
                yield
        except TooManyUploads as exc:
            log.info("upload refused: %s", exc.message)
            raise GraphRefusal(
                429, TOO_MANY_CALLS, "Application request limit reached", exc.message, transient=True
            ) from None

    def connector_for(self, node: str) -> ConnectorConfig | None:
        """The configured connector named in the path; raises a refusal when unknown ones are refused."""
        connector = self.config.connector(node)
        if connector is None and self.config.gateway.unknown_connectors == "refuse":
            raise permission_denied(
                f"phone number ID {node[:40]} is not a connector of this proxy (gateway.unknown_connectors: refuse)"
            )
        return connector

    async def _check_group(self, target: Target, found: Reach) -> None:
        # The path names the group, not the phone number that owns it: check every connector's blocklist.
        connectors = list(self.config.connectors)
        if found.participants:
            regions = sorted({c.region for c in connectors} | {""})
            participants = found.participants
            identities = [who for region in regions for who in classify.identities(participants, region, strict=True)]
            await self.refuse_if_blocked(connectors, identities)
        for join_request in found.join_requests:
            users: list[Identity] = []
            for connector in connectors:
                lookup = self.service.join_request_user(connector.phone_number_id, join_request)
                who = await self._lookup(connector, lookup)
                if who is not None:
                    users.append(who)
            if not users:
                self._unknown_reference(f"the join request {join_request[:60]!r}", "who asked to join")
                continue
            await self.refuse_if_blocked(connectors, users)

    async def _check_receipt(self, connector: ConnectorConfig, message_id: str) -> None:
        sender = await self._lookup(connector, self.service.message_sender(connector.phone_number_id, message_id))
        if sender is None:
            what = "call" if message_id.startswith("wacid") else "message"
            self._unknown_reference(f"the {what} {message_id[:80]!r}", "whose it is")
            return
        await self.refuse_if_blocked([connector], [sender])

    async def _lookup(self, connector: ConnectorConfig, lookup: Any) -> Identity | None:
        try:
            found: Identity | None = await lookup
        except StoreUnavailable:
            if connector.on_store_error == "allow":
                return None
            raise store_unavailable() from None
        return found

    def _unknown_reference(self, what: str, missing: str) -> None:
        if self.config.gateway.unknown_references == "pass":
            return
        raise permission_denied(
            f"the blocklist proxy has not seen {what} in a verified webhook, so it cannot tell {missing} "
            "and whether that user is blocked; refused (gateway.unknown_references: refuse)"
        )

    async def refuse_if_blocked(self, connectors: Iterable[ConnectorConfig], identities: list[Identity]) -> None:
        """Raise the 139900 refusal if any identity is blocked on any of the connectors.

        A store failure refuses with 503 when a connector's ``on_store_error`` is ``deny``, and lets the
        request through when it is ``allow``.
        """
        for connector in connectors:
            blocked = await self._under_store_policy(connector, self.service.first_blocked, identities, warn=True)
            if blocked is not None:
                self._refuse(BLOCKED, connector, blocked, self.app[METRICS].outbound_refused)

    async def refuse_if_opted_out(self, connector: ConnectorConfig, identities: list[Identity]) -> None:
        """Raise the 139901 refusal if a template / marketing send's recipient opted out on the connector.

        One store round trip (opt-outs are not in the check cache); a store failure follows ``on_store_error``.
        """
        opted_out = await self._under_store_policy(connector, self.service.first_opted_out, identities, warn=False)
        if opted_out is not None:
            self._refuse(OPTED_OUT, connector, opted_out, self.app[METRICS].optout_refused)

    @staticmethod
    def _refuse(why: UserRefusal, connector: ConnectorConfig, user: str, counter: Counter) -> NoReturn:
        """Log, note, count and raise the refusal of a send for its user's state on ``connector``."""
        log.info(why.log, connector.phone_number_id)
        note(connector=connector.phone_number_id, outcome=why.outcome)
        counter.labels(connector.phone_number_id).inc()
        details = why.details.format(user=masked(user), name=connector.name, pnid=connector.phone_number_id)
        raise GraphRefusal(400, why.code, why.title, details)

    async def _under_store_policy(
        self,
        connector: ConnectorConfig,
        lookup: Callable[[str, list[Identity]], Awaitable[str | None]],
        identities: list[Identity],
        *,
        warn: bool,
    ) -> str | None:
        """Ask the store ``lookup(phone_number_id, identities)`` under the connector's ``on_store_error`` policy.

        Args:
            warn: log a warning when a store failure lets the request through (the blocked check does; the
                opt-out check, which runs after it on the same send, does not repeat it).

        Returns:
            The lookup's answer, or None when the store is unavailable and ``on_store_error`` is ``allow``.

        Raises:
            GraphRefusal: 503 when the store is unavailable and ``on_store_error`` is ``deny``.
        """
        try:
            return await lookup(connector.phone_number_id, identities)
        except StoreUnavailable:
            if connector.on_store_error == "allow":
                if warn:
                    log.warning(
                        "store unavailable: letting a send through on %s (on_store_error: allow)",
                        connector.phone_number_id,
                    )
                return None
            raise store_unavailable() from None

    async def forward(
        self,
        request: web.Request,
        target: URL,
        *,
        body: bytes | None = None,
        scanner: PartNameScanner | None = None,
    ) -> web.StreamResponse:
        """Send the request upstream (the buffered ``body`` as received, or the request's stream) and relay the answer.

        Args:
            scanner: watches a streamed upload for parts the gateway refuses; the upload is cut off when one shows.

        Raises:
            GraphRefusal: 502 when the upstream cannot be reached, 504 when it does not answer in time.
        """
        if body is None and scanner is None and request.body_exists and request.content.is_eof():
            body = request.content.read_nowait()  # a small body that came with its headers: in hand already
        if body is not None and scanner is None:
            return await self.forward_buffered(request, target, body)
        async with self.upstream(request.method, target, request.headers, request, body, scanner) as upstream:
            return await relay(request, upstream)

    async def forward_buffered(self, request: web.Request, target: URL, body: bytes) -> web.StreamResponse:
        """Send a request whose body is in hand (every checked send) over the pyreqwest client; relay the answer.

        Same contract as :meth:`upstream` + :func:`relay`: the request's bytes and headers as received (minus
        hop-by-hop), ``X-Request-Id``, ``wabl_upstream_seconds`` to the response headers, 502/504 Graph-style
        refusals; a small answer is read whole (one that breaks off is a 502), a large one streamed.
        """
        headers = request.headers
        info = current_request()
        dropped = REQUEST_HEADERS_DROPPED_IN_HAND if info is None else _DROPPED_TAGGED
        named = _named_by_connection(headers.getall("Connection", ()))
        if named:
            dropped = dropped | named
        out = [(name, value) for name, value in headers.items() if name.lower() not in dropped]
        if info is not None:  # tag_upstream, for a list of pairs
            out.append((REQUEST_ID_HEADER, info.request_id))
        metrics = self.app[METRICS]
        answered = False
        started = time.perf_counter()
        try:
            built = self.client.request(request.method, str(target)).headers(out).body_bytes(body)
            async with built.build_streamed() as resp:
                answered = True
                metrics.graph_seconds.observe(time.perf_counter() - started)
                return await _relay_reqwest(request, resp)
        except RequestTimeoutError:
            if answered:
                raise
            metrics.graph_errors.inc()
            log.warning("Graph API timeout on %s %s", request.method, target.path[:200])
            raise unavailable(504, "the Graph API did not answer in time; retry later") from None
        except DecodeError as exc:
            if answered:
                raise
            # The headers came, the body broke off within the client's first read: nothing was sent back yet.
            log.warning("Graph API response broke off: %s", type(exc).__name__)
            raise unavailable(502, f"the Graph API response broke off ({type(exc).__name__}); retry later") from None
        except PyreqwestError as exc:
            if answered:
                raise
            metrics.graph_errors.inc()
            log.warning("Graph API unreachable on %s %s: %s", request.method, target.path[:200], type(exc).__name__)
            raise unavailable(502, f"the Graph API could not be reached ({type(exc).__name__}); retry later") from None

    @contextlib.asynccontextmanager
    async def upstream(
        self,
        method: str,
        target: URL,
        headers: CIMultiDictProxy[str],
        request: web.Request | None,
        body: bytes | None,
        scanner: PartNameScanner | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open an upstream request (errors mapped to Graph-style 502/504) and yield the response.

        The call carries the request's ``X-Request-Id`` and is timed to the response headers (``wabl_upstream_*``
        with ``upstream="graph"``).
        """
        out = forward_headers(headers, REQUEST_HEADERS_DROPPED)
        tag_upstream(out)
        data: Any = None
        streamed: _PacedBody | None = None
        if body is not None:
            out.popall("Content-Length", None)
            data = body
        elif request is not None and request.body_exists:
            if request.content.is_eof():  # a small body that came with the headers: sent as it is, in one write
                out.popall("Content-Length", None)
                data = request.content.read_nowait()
                if scanner is not None:
                    scanner.feed(data)
            else:  # an upload: streamed as it arrives, given up if the caller stalls
                gateway = self.config.gateway
                pace = Pace(gateway.upload_min_bytes, gateway.upload_pace_seconds)
                streamed = _PacedBody(request.content, self.config.server.body_timeout_seconds, scanner, pace)
                data = streamed.pieces()
        skip = [h for h in _AUTO_HEADERS if h not in headers]
        metrics = self.app[METRICS]
        answered = False
        started = time.perf_counter()
        try:
            async with self.session.request(
                method, target, data=data, headers=out, allow_redirects=False, skip_auto_headers=skip
            ) as resp:
                answered = True
                metrics.graph_seconds.observe(time.perf_counter() - started)
                yield resp
        except TimeoutError:
            if answered:
                raise  # from relaying the answer (relay's business), not from reaching the Graph API
            if streamed is not None and streamed.failed is not None:
                raise streamed.failed from None
            metrics.graph_errors.inc()
            log.warning("Graph API timeout on %s %s", method, target.path[:200])
            raise unavailable(504, "the Graph API did not answer in time; retry later") from None
        except aiohttp.ClientError as exc:
            if answered:
                raise  # writing the answer to a caller who hung up (a ConnectionResetError too), not the Graph API
            if streamed is not None and streamed.failed is not None:
                raise streamed.failed from None
            if request is not None and (request.transport is None or request.transport.is_closing()):
                # The caller hung up while its body was being streamed upstream: not the Graph API's failure.
                raise ConnectionResetError("the caller closed the connection") from None
            metrics.graph_errors.inc()
            log.warning("Graph API unreachable on %s %s: %s", method, target.path[:200], type(exc).__name__)
            raise unavailable(502, f"the Graph API could not be reached ({type(exc).__name__}); retry later") from None


class _PacedBody:
    """A request body streamed upstream piece by piece, given up when the caller sends nothing for ``idle`` seconds
    or falls below the ``pace`` (:class:`wa_blocklist.proxy.outbound.uploads.Pace`).

    A whole-body deadline would cut a large upload on a slow but steady line; a bound on the pause between pieces
    frees the task and the upstream connection that a stalled caller would otherwise hold, and the pace cuts a
    trickle that sends one byte just often enough to stay under the pause bound.
    """

    def __init__(
        self, content: StreamReader, idle: float, scanner: PartNameScanner | None = None, pace: Pace | None = None
    ) -> None:
        self.content = content
        self.idle = idle
        self.scanner = scanner
        self.pace = pace or Pace(0, idle)
        self.failed: Refused | None = None
        """Why the upload was given up (stalled, too slow, or a part the gateway refuses), for the caller's answer."""

    async def pieces(self) -> AsyncIterator[bytes]:
        # The loop of outbound/uploads.py: paced_pieces, with the gateway's own refusals for a stall and for a trickle.
        while True:
            allowed = min(self.idle, self.pace.seconds_left())
            try:
                async with asyncio.timeout(allowed):
                    piece = await self.content.readany()
            except TimeoutError:
                self._keep_pace()
                if allowed < self.idle:
                    continue  # a window ended with its quota met: keep waiting
                self.failed = self.refusal()
                log.info("caller stalled mid-upload for %s seconds; the upstream request is abandoned", self.idle)
                raise
            if not piece:
                return
            self._keep_pace(len(piece))
            if self.scanner is not None:
                try:
                    self.scanner.feed(piece)
                except Refused as refused:
                    self.failed = refused
                    log.info("refused an upload mid-way: %s", refused.details)
                    raise
            yield piece

    def _keep_pace(self, size: int = 0) -> None:
        try:
            self.pace.received(size)
        except UploadTooSlow as exc:
            self.failed = GraphRefusal(
                408,
                BAD_REQUEST,
                "Request timeout",
                f"{exc.message} (gateway.upload_min_bytes per gateway.upload_pace_seconds)",
            )
            log.info("cut a trickling upload: %s", exc.message)
            raise self.failed from None

    def refusal(self) -> GraphRefusal:
        return GraphRefusal(
            408,
            BAD_REQUEST,
            "Request timeout",
            f"the request body stalled: nothing arrived for {self.idle} seconds (server.body_timeout_seconds)",
        )


async def relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    """Send an upstream response back to the caller: status, headers (minus hop-by-hop) and body as is.

    A small body of known length (every send's answer) is read whole and answered in one write; anything else
    (media downloads) is streamed.

    Raises:
        GraphRefusal: 502 when a small body breaks off before the caller got anything.
    """
    headers = forward_headers(upstream.headers, RESPONSE_HEADERS_DROPPED)
    length = upstream.content_length
    if (
        length is not None
        and length <= SMALL_RESPONSE
        and request.method != "HEAD"
        and upstream.status not in (204, 304)
    ):
        try:
            body = await upstream.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _broke_off(exc) from None
        return web.Response(status=upstream.status, reason=upstream.reason, headers=headers, body=body)
    chunks = (chunk async for chunk, _ in upstream.content.iter_chunks())
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    return await _stream(request, response, chunks, (aiohttp.ClientError, TimeoutError))


async def _relay_reqwest(request: web.Request, upstream: ReqwestResponse) -> web.StreamResponse:
    """:func:`relay` for an answer of the pyreqwest client."""
    named = _named_by_connection(upstream.get_header_all("Connection"))
    # reqwest gives names in lower case; a list, which aiohttp copies once (a CIMultiDict would be copied again)
    headers = [
        (name, value)
        for name, value in upstream.headers.items()
        if name not in RESPONSE_HEADERS_DROPPED and name not in named
    ]
    status = upstream.status
    if request.method == "HEAD" or status in (204, 304):
        return web.Response(status=status, headers=headers)
    length = upstream.get_header("content-length")
    if length is not None and length.isdigit() and int(length) <= SMALL_RESPONSE:
        try:
            body = (await upstream.bytes()).to_bytes()
        except PyreqwestError as exc:
            raise _broke_off(exc) from None
        return web.Response(status=status, headers=headers, body=body)

    async def chunks() -> AsyncIterator[bytes]:
        reader = upstream.body_reader
        while (chunk := await reader.read_chunk()) is not None:
            yield chunk.to_bytes()

    return await _stream(request, web.StreamResponse(status=status, headers=headers), chunks(), (PyreqwestError,))


def _broke_off(exc: BaseException) -> GraphRefusal:
    """The 502 for an upstream answer that broke off before anything was sent back (logged)."""
    log.warning("Graph API response broke off: %s", type(exc).__name__)
    return unavailable(502, f"the Graph API response broke off ({type(exc).__name__}); retry later")


async def _stream(
    request: web.Request,
    response: web.StreamResponse,
    chunks: AsyncIterator[bytes],
    broken: tuple[type[BaseException], ...],
) -> web.StreamResponse:
    """Send ``response``'s headers, then each chunk of the upstream answer as it comes.

    Args:
        broken: the upstream client's errors for an answer that breaks off: once the headers are gone, the only
            honest signal left is to cut the connection short.
    """
    tag_upstream(response.headers)  # the request's X-Request-Id, before the headers are sent (routes.gateway_first)
    await response.prepare(request)
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except ConnectionResetError:
        raise  # writing to a caller who hung up (ClientConnectionResetError is a ClientError too): handle() logs it
    except broken as exc:
        log.warning("Graph API response broke off after the headers: %s", type(exc).__name__)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


async def read_capped(request: web.Request, seconds: float, limit: int = MAX_INSPECTED_BODY) -> bytes:
    """Read a body the gateway must inspect, refusing (413) anything over ``limit`` bytes.

    Args:
        seconds: how long the body may take to arrive (``server.body_timeout_seconds``).

    Raises:
        GraphRefusal: 413 too large; 408 when the body does not arrive within ``seconds``.
    """
    try:
        return await read_body(request, limit, within=seconds)
    except BodyTooLarge:
        raise _too_large(limit) from None
    except BodyTimeout:
        raise GraphRefusal(
            408, BAD_REQUEST, "Request timeout", f"the request body did not arrive within {seconds} seconds"
        ) from None


def _too_large(limit: int) -> GraphRefusal:
    return GraphRefusal(
        413,
        BAD_REQUEST,
        "Invalid parameter",
        f"the request body is larger than {limit} bytes, the most this endpoint accepts",
    )


def relay_client(max_connections: int) -> ClientBuilder:
    """A pooled pyreqwest client that relays bytes as they are: no redirects, no decompression, no cookies, bounded
    connect time, idle connections dropped after 15 s (as aiohttp's keep-alive: before a server drops them)."""
    return (
        ClientBuilder()
        .follow_redirects(False)
        .gzip(False)
        .brotli(False)
        .zstd(False)
        .deflate(False)
        .default_cookie_store(False)
        .max_connections(max_connections)
        .pool_idle_timeout(timedelta(seconds=15))
        .connect_timeout(timedelta(seconds=10))
    )


def gateway_client(config: Config) -> ReqwestClient:
    """The gateway's client (``GATEWAY_CLIENT``): :func:`relay_client` with the Graph API's read-idle bound."""
    return relay_client(1000).read_timeout(timedelta(seconds=config.graph.timeout_seconds)).build()


def webhook_client() -> ReqwestClient:
    """The webhook forwarder's client (``WEBHOOK_CLIENT``): :func:`relay_client`; the total time is bounded per
    delivery (``webhooks.forward_timeout_seconds``)."""
    return relay_client(200).build()
