"""The outbound gateway: a Graph-API-compatible reverse proxy that refuses every way of reaching a blocked user.

Every request that reaches the root of the proxy and is not the webhook receiver or the admin app lands here.
A few endpoints are **intercepted** (their small JSON bodies are read and checked against the connector's
blocklist); everything else is **passed through** to ``graph.base_url``, streamed both ways, with the caller's
headers (minus hop-by-hop ones) and Authorization, and Meta's status and body back unchanged.

Intercepted (with or without the ``/v21.0`` version segment, any edge letter case):

===========================================  ===============================================================
``POST /{pnid}/messages``                    ``to`` / ``recipient`` (individual sends) checked
``POST /{pnid}/marketing_messages``          ``to`` / ``recipient`` checked
``POST /{pnid}/calls``                       ``to`` / ``recipient`` checked when ``action`` is ``connect``
``POST /{pnid}/messages_encrypted``          refused unless the connector has ``allow_encrypted_messages``
``POST /{group_id}/participants``            every ``participants[].user`` / ``user_id`` checked
``POST|DELETE|GET /{pnid}/block_users``      Meta's Block Users API, applied to our blocklist too
===========================================  ===============================================================

A blocked recipient gets HTTP 400 with the Graph error envelope and code ``139900`` (``RECIPIENT_BLOCKED``);
nothing reaches Meta. Fields are read from the query string as well as the body (JSON, form-encoded or
multipart), since the Graph API accepts parameters in all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

import aiohttp
from aiohttp import StreamReader, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from . import identity as ids
from .blocklist import BlocklistService
from .bodies import read_body
from .config import Config, ConnectorConfig
from .errors import BodyTimeout, BodyTooLarge, InvalidNumber, StoreUnavailable
from .graph import BAD_REQUEST, RECIPIENT_BLOCKED, SERVICE_UNAVAILABLE, error_envelope
from .identity import Identity
from .keys import CONFIG, GATEWAY_SESSION, METRICS, SERVICE
from .logs import note, tag_upstream

log = logging.getLogger(__name__)

MAX_INSPECTED_BODY = 1024 * 1024
"""Largest body the gateway reads to inspect (sends, calls, participants, block_users); larger → 413."""

SMALL_RESPONSE = 64 * 1024
"""Upstream answers of a known length up to this size are read whole and sent in one write, not streamed."""

PERMISSION_DENIED = 10
"""Meta's "Permission denied" code, for endpoints a connector's policy does not allow."""

UNKNOWN_ERROR = 1
"""Meta's "An unknown error occurred" code, for failures of the proxy itself."""

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

RESPONSE_HEADERS_DROPPED = HOP_BY_HOP
"""Not copied from Meta's response to the caller."""

_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
_PNID = re.compile(r"^[0-9]{5,32}$")
_SEND_EDGES = frozenset({"messages", "marketing_messages", "calls", "messages_encrypted"})
_OWN_PREFIXES = ("/admin/", "/webhooks/")
_DOT_SEGMENT = re.compile(r"(^|/)(\.|%2e){1,2}(/|$)", re.IGNORECASE)


class GraphRefusal(Exception):
    """A request the gateway answers itself with a Graph error envelope."""

    def __init__(self, status: int, code: int, title: str, details: str, *, transient: bool = False) -> None:
        super().__init__(details)
        self.status = status
        self.code = code
        self.title = title
        self.details = details
        self.transient = transient

    def response(self) -> web.Response:
        body = error_envelope(self.code, self.title, self.details, transient=self.transient)
        # nosniff: details may quote the request (a recipient), which must never be rendered as anything but JSON.
        return web.json_response(body, status=self.status, headers={"X-Content-Type-Options": "nosniff"})


def bad_request(details: str) -> GraphRefusal:
    """A Graph-style 400 with Meta's "Invalid parameter" code."""
    return GraphRefusal(400, BAD_REQUEST, "Invalid parameter", details)


def unavailable(status: int, details: str) -> GraphRefusal:
    """A transient Graph-style 5xx with Meta's "Service unavailable" code: the caller should retry later."""
    return GraphRefusal(status, SERVICE_UNAVAILABLE, "Service unavailable", details, transient=True)


def store_unavailable() -> GraphRefusal:
    return unavailable(503, "The blocklist store is unavailable, so the recipient cannot be checked; retry later")


@dataclass(frozen=True)
class Route:
    """What the gateway recognised in a request path.

    Attributes:
        node: the first path segment after the optional version (a phone number ID, group ID, media ID...).
        edge: the second segment, lower-cased (``messages``, ``block_users``...), or "" when absent.
        version: the version segment (``v21.0``) or "".
    """

    node: str
    edge: str
    version: str


def parse_route(path: str) -> Route | None:
    """Split a decoded request path into ``(version, node, edge)``; None when it has another shape."""
    parts = [p for p in path.split("/") if p]
    # Any first segment of three counts as the version: a spelling Meta might accept (``V21.0``) must not
    # slip past the checks.
    version = parts.pop(0) if len(parts) == 3 else ""
    if len(parts) != 2:
        return None
    return Route(node=parts[0], edge=parts[1].lower(), version=version)


def effective_method(request: web.Request) -> str:
    """The method the Graph API will apply: the HTTP method, or the ``method`` query parameter that overrides it
    (``GET /{pnid}/messages?method=post&to=...`` is a send)."""
    override = request.rel_url.query.get("method", "")
    return override.strip().upper() if override.strip() else request.method


def upstream_url(base_url: str, request: web.Request) -> URL:
    """The upstream URL for a request: ``graph.base_url`` + the request's raw path and query, nothing else.

    Raises:
        GraphRefusal: for request targets that could lead anywhere but the configured upstream (absolute-form
            or ``//`` targets, ``.``/``..`` segments, backslashes).
    """
    raw = request.raw_path
    path_part = raw.split("?", 1)[0]
    if not raw.startswith("/") or raw.startswith("//") or "\\" in path_part or "%5c" in path_part.lower():
        raise bad_request("the request path is not a Graph API path")
    if _DOT_SEGMENT.search(path_part) or _DOT_SEGMENT.search(unquote(path_part)):
        raise bad_request("the request path must not contain '.' or '..' segments")
    target = URL(base_url.rstrip("/") + raw, encoded=True)
    if (target.scheme, target.host, target.port) != _origin(base_url):
        raise bad_request("the request path is not a Graph API path")
    return target


@functools.lru_cache(maxsize=8)
def _origin(base_url: str) -> tuple[str, str | None, int | None]:
    base = URL(base_url)
    return base.scheme, base.host, base.port


def forward_headers(headers: CIMultiDictProxy[str], dropped: frozenset[str]) -> CIMultiDict[str]:
    """Copy headers minus ``dropped`` and minus every header the ``Connection`` header names."""
    named = {h.strip().lower() for value in headers.getall("Connection", ()) for h in value.split(",")}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        low = name.lower()
        if low not in dropped and low not in named:
            out.add(name, value)
    return out


class Gateway:
    """The catch-all handler, with the intercepted endpoints.

    Args:
        app: the proxy application (config, Graph session and blocklist service are read from it per request,
            since the session and service exist only once the app has started).
    """

    def __init__(self, app: web.Application) -> None:
        self.app = app

    @property
    def config(self) -> Config:
        return self.app[CONFIG]

    @property
    def service(self) -> BlocklistService:
        return self.app[SERVICE]

    @property
    def session(self) -> aiohttp.ClientSession:
        return self.app[GATEWAY_SESSION]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Route one request: intercept, refuse or pass through."""
        try:
            if request.path.startswith(_OWN_PREFIXES) or request.path in ("/admin", "/webhooks"):
                # Our own faces, with a method or path they do not serve: never send them (or a verify token) to Meta.
                raise GraphRefusal(
                    404, BAD_REQUEST, "Unknown path", f"{request.method} {request.path[:100]} is not served"
                )
            target = upstream_url(self.config.graph.base_url, request)
            method = effective_method(request)
            if method == "POST" and len([p for p in request.path.split("/") if p]) <= 1:
                raise bad_request(
                    "Graph API batch requests are not supported through the blocklist proxy; "
                    "send each request on its own"
                )
            route = parse_route(request.path) if self.config.gateway.enforce else None
            if route is not None:
                if route.edge == "block_users" and _PNID.match(route.node):
                    from .block_users import handle_block_users  # local: block_users imports this module

                    return await handle_block_users(self, request, target, route)
                if method == "POST" and route.edge in _SEND_EDGES and _PNID.match(route.node):
                    return await self._guard_send(request, target, route)
                if method == "POST" and route.edge == "participants":
                    return await self._guard_participants(request, target, route)
            return await self.forward(request, target)
        except GraphRefusal as refusal:
            return refusal.response()
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

    def connector_for(self, route: Route) -> ConnectorConfig | None:
        """The configured connector named in the path; raises a refusal when unknown ones are refused."""
        connector = self.config.connector(route.node)
        if connector is None and self.config.gateway.unknown_connectors == "refuse":
            raise GraphRefusal(
                403,
                PERMISSION_DENIED,
                "Permission denied",
                f"phone number ID {route.node} is not a connector of this proxy (gateway.unknown_connectors: refuse)",
            )
        return connector

    async def _guard_send(self, request: web.Request, target: URL, route: Route) -> web.StreamResponse:
        connector = self.connector_for(route)
        if connector is None:
            return await self.forward(request, target)
        note(connector=connector.phone_number_id)
        if route.edge == "messages_encrypted":
            if not connector.allow_encrypted_messages:
                raise GraphRefusal(
                    403,
                    PERMISSION_DENIED,
                    "Permission denied",
                    "messages_encrypted is refused on this connector: the proxy cannot see the recipient of an "
                    "encrypted message (set allow_encrypted_messages on the connector to allow it)",
                )
            return await self.forward(request, target)
        body = await read_capped(request)
        fields = parse_fields(body, request.headers.get("Content-Type", ""), request.rel_url.query_string)
        identities = send_recipients(route.edge, fields, connector.default_country)
        if identities:
            await self.refuse_if_blocked([connector], identities)
        return await self.forward(request, target, body=body)

    async def _guard_participants(self, request: web.Request, target: URL, route: Route) -> web.StreamResponse:
        # The path names the group, not the phone number that owns it: check every connector's blocklist.
        body = await read_capped(request)
        fields = parse_fields(body, request.headers.get("Content-Type", ""), request.rel_url.query_string)
        identities = [who for value in fields.get("participants", []) for who in participant_identities(value)]
        if identities:
            await self.refuse_if_blocked(list(self.config.connectors), identities)
        return await self.forward(request, target, body=body)

    async def refuse_if_blocked(self, connectors: Iterable[ConnectorConfig], identities: list[Identity]) -> None:
        """Raise the 139900 refusal if any identity is blocked on any of the connectors.

        A store failure refuses with 503 when a connector's ``on_store_error`` is ``deny``, and lets the
        request through when it is ``allow``.
        """
        for connector in connectors:
            try:
                blocked = await self.service.first_blocked(connector.phone_number_id, identities)
            except StoreUnavailable:
                if connector.on_store_error == "allow":
                    log.warning(
                        "store unavailable: letting a send through on %s (on_store_error: allow)",
                        connector.phone_number_id,
                    )
                    continue
                raise store_unavailable() from None
            if blocked is not None:
                log.info("refused a send to a blocked user on %s", connector.phone_number_id)
                note(connector=connector.phone_number_id, outcome="blocked")
                self.app[METRICS].outbound_refused.labels(connector.phone_number_id).inc()
                raise GraphRefusal(
                    400,
                    RECIPIENT_BLOCKED,
                    "Recipient is blocked on this connector",
                    f"The user {_mask(blocked)} is blocked on connector {connector.name!r} "
                    f"({connector.phone_number_id}) by its blocklist; the request was not sent to WhatsApp",
                )

    async def forward(self, request: web.Request, target: URL, *, body: bytes | None = None) -> web.StreamResponse:
        """Send the request upstream (the buffered ``body``, or the request's stream) and relay the answer.

        Raises:
            GraphRefusal: 502 when the upstream cannot be reached, 504 when it does not answer in time.
        """
        async with self.upstream(request.method, target, request.headers, request, body) as upstream:
            return await relay(request, upstream)

    @contextlib.asynccontextmanager
    async def upstream(
        self,
        method: str,
        target: URL,
        headers: CIMultiDictProxy[str],
        request: web.Request | None,
        body: bytes | None,
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
            else:  # an upload: streamed as it arrives, given up if the caller stalls
                streamed = _PacedBody(request.content, self.config.server.body_timeout_seconds)
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
            if streamed is not None and streamed.stalled:
                raise streamed.refusal() from None
            metrics.graph_errors.inc()
            log.warning("Graph API timeout on %s %s", method, target.path[:200])
            raise unavailable(504, "the Graph API did not answer in time; retry later") from None
        except aiohttp.ClientError as exc:
            if answered:
                raise  # writing the answer to a caller who hung up (a ConnectionResetError too), not the Graph API
            if streamed is not None and streamed.stalled:
                raise streamed.refusal() from None
            if request is not None and (request.transport is None or request.transport.is_closing()):
                # The caller hung up while its body was being streamed upstream: not the Graph API's failure.
                raise ConnectionResetError("the caller closed the connection") from None
            metrics.graph_errors.inc()
            log.warning("Graph API unreachable on %s %s: %s", method, target.path[:200], type(exc).__name__)
            raise unavailable(502, f"the Graph API could not be reached ({type(exc).__name__}); retry later") from None


class _PacedBody:
    """A request body streamed upstream piece by piece, given up when the caller sends nothing for ``idle`` seconds.

    A whole-body deadline would cut a large upload on a slow but steady line; a bound on the pause between pieces
    frees the task and the upstream connection that a stalled caller would otherwise hold.
    """

    def __init__(self, content: StreamReader, idle: float) -> None:
        self.content = content
        self.idle = idle
        self.stalled = False

    async def pieces(self) -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout(self.idle):
                    piece = await self.content.readany()
            except TimeoutError:
                self.stalled = True
                log.info("caller stalled mid-upload for %s seconds; the upstream request is abandoned", self.idle)
                raise
            if not piece:
                return
            yield piece

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
            log.warning("Graph API response broke off: %s", type(exc).__name__)
            raise unavailable(502, f"the Graph API response broke off ({type(exc).__name__}); retry later") from None
        return web.Response(status=upstream.status, reason=upstream.reason, headers=headers, body=body)
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    await response.prepare(request)
    try:
        async for chunk, _ in upstream.content.iter_chunks():
            await response.write(chunk)
    except ConnectionResetError:
        raise  # writing to a caller who hung up (ClientConnectionResetError is a ClientError too): handle() logs it
    except (aiohttp.ClientError, TimeoutError) as exc:
        # Headers are gone already: the only honest signal left is to cut the connection short.
        log.warning("Graph API response broke off after the headers: %s", type(exc).__name__)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


async def read_capped(request: web.Request, limit: int = MAX_INSPECTED_BODY) -> bytes:
    """Read a body the gateway must inspect, refusing (413) anything over ``limit`` bytes.

    Raises:
        GraphRefusal: 413 too large; 408 when the body does not arrive within ``server.body_timeout_seconds``.
    """
    seconds = request.app[CONFIG].server.body_timeout_seconds  # the gateway is on the main app
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


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # rare: only then find which key it was
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise bad_request(f"the JSON body has the key {key[:40]!r} twice")
            seen.add(key)
    return out


_JSON = json.JSONDecoder(object_pairs_hook=_no_duplicates)
"""One decoder for every body (``json.loads`` with a hook would build a new one per call)."""


def parse_fields(body: bytes, content_type: str, query: str) -> dict[str, list[Any]]:
    """Every parameter of a Graph request, from the query string and the body, as ``name → [values]``.

    JSON bodies are recognised by their first character whatever the Content-Type says (``curl -d '{...}'``
    sends JSON as form-encoded); form-encoded and multipart bodies are parsed as the Graph API would.

    Raises:
        GraphRefusal: 400 when the body cannot be read.
    """
    fields: dict[str, list[Any]] = {}

    def add(name: str, value: Any) -> None:
        fields.setdefault(name, []).append(value)

    if query:
        for name, value in parse_qsl(query, keep_blank_values=True):
            add(name, _form_value(name, value))
    stripped = body.lstrip()
    mime = content_type.split(";", 1)[0].strip().lower()
    if not stripped:
        return fields
    if stripped[:1] in (b"{", b"["):
        try:
            data = _JSON.decode(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise bad_request("the request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise bad_request("the request body must be a JSON object")
        for name, value in data.items():
            add(name, value)
        return fields
    if mime == "multipart/form-data":
        for name, value in _multipart_fields(body, content_type):
            add(name, _form_value(name, value))
        return fields
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise bad_request("the request body is neither JSON nor form-encoded parameters") from None
    for name, value in pairs:
        add(name, _form_value(name, value))
    return fields


def _form_value(name: str, value: str) -> Any:
    # Structured parameters (participants, block_users) arrive JSON-encoded in form and query parameters.
    if name in ("participants", "block_users") and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            raise bad_request(f"the {name} parameter is not valid JSON") from None
    return value


def _multipart_fields(body: bytes, content_type: str) -> list[tuple[str, str]]:
    from email.parser import BytesParser
    from email.policy import HTTP

    try:
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
        )
    except (UnicodeEncodeError, ValueError):
        raise bad_request("the multipart body cannot be read") from None
    if not message.is_multipart():
        raise bad_request("the multipart body cannot be read")
    out: list[tuple[str, str]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.get_filename() is not None:
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        try:
            out.append((name, payload.decode("utf-8")))
        except UnicodeDecodeError:
            raise bad_request(f"the multipart field {name[:40]!r} is not UTF-8 text") from None
    return out


def _identity(field: str, value: Any) -> Identity:
    return _readings(field, value)[0]


def _readings(field: str, value: Any, default_country: str = "") -> list[Identity]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"{field} must be a phone number, WhatsApp ID or business-scoped user ID")
    try:
        return ids.recipient_readings(value, default_country)
    except InvalidNumber as exc:
        raise bad_request(f"{field}: {exc.message}") from None


def send_recipients(edge: str, fields: dict[str, list[Any]], default_country: str = "") -> list[Identity]:
    """The users a send, marketing message or call reaches (empty for read receipts, group sends, other calls).

    Each recipient counts with every reading Meta may give it (see :func:`proxy.identity.recipient_readings`);
    ``default_country`` is the connector's, for numbers written without ``+``.

    Raises:
        GraphRefusal: 400 when a recipient field is present but not a number, wa_id or BSUID.
    """
    if edge == "calls":
        actions = [a for a in fields.get("action", []) if isinstance(a, str)]
        if not any(a.strip().lower() == "connect" for a in actions):
            return []
    elif edge == "messages":
        kinds = {str(k).strip().lower() for k in fields.get("recipient_type", [])}
        if kinds == {"group"}:
            return []  # ``to`` is a group ID; its members are checked when they are added
    found: list[Identity] = []
    for name in ("to", "recipient"):
        for value in fields.get(name, []):
            found.extend(_readings(name, value, default_country))
    return found


def participant_identities(value: Any) -> list[Identity]:
    """Identities named in a ``participants`` parameter: ``[{"user": ...}]``, ``[{"user_id": ...}]`` or strings."""
    items = value if isinstance(value, list) else [value]
    found: list[Identity] = []
    for item in items:
        if isinstance(item, dict):
            for key in ("user", "user_id", "wa_id", "to"):
                if key in item:
                    found.append(_identity(f"participants[].{key}", item[key]))
        else:
            found.append(_identity("participants[]", item))
    return found


def _mask(key: str) -> str:
    return key if len(key) <= 6 else key[:-4] + "****"


def setup_gateway(app: web.Application) -> None:
    """Register the gateway's catch-all route and Meta sync; call it last, after every other route."""
    from .meta import meta_sync_ctx

    gateway = Gateway(app)
    app.router.add_route("*", "/{tail:.*}", gateway.handle)
    app.cleanup_ctx.append(meta_sync_ctx)
