"""One classification of every Graph API request the outbound gateway receives: default deny.

Pure (no aiohttp server, no Redis), so the plugins can use it as well as :mod:`wa_blocklist.proxy.outbound.gateway`. A
request is exactly one of:

* **send** (``POST /{id}/messages``, ``marketing_messages``, ``calls``): the users it may reach (``to``,
  ``recipient``) and the messages it refers to (read receipts, typing indicators) are returned for checking;
* **encrypted** (``POST /{id}/messages_encrypted``): the recipient cannot be read, a connector policy decides;
* **block users** (``GET|POST|DELETE /{id}/block_users``): Meta's Block Users API, see
  :mod:`wa_blocklist.proxy.outbound.block_users`;
* **participants** / **join requests** (``POST /{group_id}/participants`` and ``.../join_requests``): who is being
  let into a group;
* **pass**: a surface of the allow-list (``graph_surfaces.yaml`` plus the operator's ``gateway.allow``), none of
  which can deliver anything to a user;
* **refused** (:class:`Refused`): everything else, and everything that cannot be read one way only.

The reading is deliberately narrow. Meta's servers are not ours to inspect, so whenever a request could be read
in two ways (a method override, a parameter given twice, a path segment Meta might normalise, a body encoding we
do not decode the way Meta does, a ``batch`` anywhere), it is refused rather than guessed at. Where a harmless
second reading exists (JSON sent with a form Content-Type, as ``curl -d`` does), every reading is checked.

Steps: :func:`classify_target` looks at the method, path, query and headers (no body); when the target needs
its body, :func:`read_params` parses it; :func:`reach` says whom a send, approval or addition reaches.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Literal
from urllib.parse import unquote_plus

import yaml

from ..base.errors import InvalidNumber
from .identity import Identity, recipient_readings

PERMISSION_DENIED = 10
"""Meta's "Permission denied" code: the request is well formed but not allowed through the proxy."""

INVALID_PARAMETER = 100
"""Meta's "Invalid parameter" code: the request cannot be read unambiguously."""

MAX_INSPECTED_BODY = 1024 * 1024
"""Largest body (after gzip decoding) read for inspection; larger → 413."""

MAX_JSON_DEPTH = 64
"""Deepest JSON nesting read; no Graph payload comes close (a template with buttons is about 6)."""

METHODS = frozenset({"GET", "POST", "DELETE"})
"""The methods Meta's Graph API serves. Any other is refused everywhere."""

SEND_EDGES = frozenset({"messages", "marketing_messages", "calls"})
_ANSWERING = frozenset({"pre_accept", "accept"})
"""Call actions that connect a user's call (``connect`` names the user in ``to``; ``reject``/``terminate`` end one)."""
GUARDED_EDGES = SEND_EDGES | {"messages_encrypted", "block_users", "participants", "join_requests"}
"""Edges whose requests are checked; the allow-list (built in or configured) can never name them."""

OWN_FACES = frozenset({"admin", "webhooks", "metrics", "healthz", "readyz"})
"""First path segments served by the proxy itself, never forwarded in any letter case."""

CHECKED_FIELDS = frozenset(
    {
        "to",
        "recipient",
        "recipient_type",
        "status",
        "message_id",
        "action",
        "participants",
        "join_requests",
        "block_users",
        "messaging_product",
        "typing_indicator",
    }
)
"""Parameters the checks read: a name that equals one of them in another letter case is refused as ambiguous."""

OVERRIDES = frozenset({"method", "batch"})
"""Parameters that change what a Graph request does: refused anywhere, in any letter case."""

Kind = Literal["send", "encrypted", "block_users", "participants", "join_requests", "pass"]

_VERSION = re.compile(r"^[vV][0-9]{1,3}(\.[0-9]{1,3})?$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_UPLOAD = re.compile(r"^upload:[A-Za-z0-9+=_-]{1,2048}$")
_NODE_ID = re.compile(r"^[1-9][0-9]{0,31}$")
_CODE = re.compile(r"^[A-Za-z0-9]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_PHONE_LIKE = re.compile(r"^[\s+()0-9./-]+$")
_BOUNDARY = re.compile(r"(?i)(?:^|;)\s*boundary\s*=\s*(\"[^\"]*\"|[^;\s]+)")
_NAME_PARAM = re.compile(r"(?i)(?:^|;)\s*name\*?\s*=")
_PARAMETER_TYPES = frozenset({"application/x-www-form-urlencoded", "application/json", "multipart/mixed"})
"""Content-Types whose bodies carry parameters (``multipart/form-data`` is streamed with its part names watched)."""
_PLACEHOLDER = re.compile(r"^\{(id|group_id|code|upload)\}$")
_LITERAL = re.compile(r"^[a-z0-9_]{1,64}$")


class Refused(Exception):
    """A request the gateway answers itself, with a Graph error envelope.

    Attributes:
        status: the HTTP status.
        code: the Graph error code (10, 100, 139900, 131016...).
        title: the short message (``(#code) title`` in the envelope).
        details: a sentence naming what was refused and why (``error_data.details``).
        transient: whether the caller should retry (``is_transient``).
    """

    def __init__(self, status: int, code: int, title: str, details: str, *, transient: bool = False) -> None:
        super().__init__(details)
        self.status = status
        self.code = code
        self.title = title
        self.details = details
        self.transient = transient


def invalid(details: str, status: int = 400) -> Refused:
    """A 400 with Meta's "Invalid parameter" code."""
    return Refused(status, INVALID_PARAMETER, "Invalid parameter", details)


def denied(details: str, status: int = 403) -> Refused:
    """A 403 with Meta's "Permission denied" code."""
    return Refused(status, PERMISSION_DENIED, "Permission denied", details)


# --- the allow-list ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Surface:
    """One pass-through surface: methods and a path pattern (see ``graph_surfaces.yaml``)."""

    name: str
    methods: frozenset[str]
    path: str
    stream: bool = False
    why: str = ""
    segments: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def matches(self, method: str, parts: Sequence[str]) -> bool:
        """True if the method and the path segments (after the version) fit this surface."""
        if method not in self.methods or len(parts) != len(self.segments):
            return False
        return all(_segment_fits(pattern, part) for pattern, part in zip(self.segments, parts, strict=True))


def _segment_fits(pattern: str, part: str) -> bool:
    if pattern == "{id}":
        return bool(_NODE_ID.match(part))
    if pattern == "{group_id}":
        return bool(_SEGMENT.match(part)) and part.lower() not in _RESERVED and not _VERSION.match(part)
    if pattern == "{code}":
        return bool(_CODE.match(part))
    if pattern == "{upload}":
        return bool(_UPLOAD.match(part))
    return part.lower() == pattern


_RESERVED = GUARDED_EDGES | OWN_FACES | {"me", "debug_token", "oauth"}
_GROUP_EDGES = frozenset({"participants", "join_requests"})
"""Checked on POST (who is let in); their other methods are on the allow-list."""


def compile_surface(
    name: str, methods: Iterable[str], path: str, *, stream: bool = False, why: str = "", builtin: bool = False
) -> Surface:
    """Validate a surface pattern (built in or from ``gateway.allow``).

    Only the built-in list may name a checked edge, for the methods that let nobody in (listing and removing
    group participants, listing and rejecting join requests); the classifier checks POST before the list is read.

    Raises:
        ValueError: a method Meta does not serve, an unknown placeholder, a segment that is not a lower-case
            literal, or a pattern that would name a checked edge or one of the proxy's own faces.
    """
    wanted = frozenset(m.strip().upper() for m in methods)
    if not wanted or not wanted <= METHODS:
        raise ValueError(f"methods must be some of {', '.join(sorted(METHODS))}")
    segments = tuple(s for s in path.strip().strip("/").split("/"))
    if not segments or segments == ("",):
        raise ValueError("the path pattern is empty (the Graph root only serves batch requests, which are refused)")
    for segment in segments:
        if _PLACEHOLDER.match(segment):
            continue
        if not _LITERAL.match(segment) or _VERSION.match(segment):
            raise ValueError(
                f"{segment[:40]!r} is neither a lower-case literal segment nor one of {{id}}, {{group_id}}, "
                "{code}, {upload} (leave out the version segment)"
            )
        if segment in GUARDED_EDGES and not (builtin and segment in ("participants", "join_requests")):
            raise ValueError(f"{segment!r} is a checked edge; the allow-list cannot switch its checks off")
    if segments[0] in OWN_FACES:
        raise ValueError(f"{segments[0]!r} is one of the proxy's own faces and is never forwarded")
    return Surface(name=name, methods=wanted, path="/".join(segments), stream=stream, why=why, segments=segments)


@lru_cache(maxsize=1)
def builtin_surfaces() -> tuple[Surface, ...]:
    """The allow-list shipped with the proxy (``proxy/graph/graph_surfaces.yaml``)."""
    text = resources.files(__package__).joinpath("graph_surfaces.yaml").read_text(encoding="utf-8")
    return tuple(
        compile_surface(
            str(item["surface"]),
            item["methods"],
            str(item["path"]),
            stream=bool(item.get("stream", False)),
            why=str(item.get("why", "")),
            builtin=True,
        )
        for item in yaml.safe_load(text)
    )


# --- step 1: the target ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a request addresses.

    Attributes:
        kind: the class (see the module docstring).
        method: the HTTP method (upper case).
        node: the first segment after the version (phone number ID, group ID, ...); "" for node-less surfaces.
        edge: the checked edge in lower case (``messages``...), "" for pass-through.
        version: the version segment as sent, or "".
        surface: the allow-list entry for ``pass``, else None.
        query: the query parameters as ``(name, value)`` pairs (each name once).
    """

    kind: Kind
    method: str
    node: str
    edge: str
    version: str
    surface: Surface | None
    query: tuple[tuple[str, str], ...]

    @property
    def stream(self) -> bool:
        """The surface takes uploads, which are forwarded unread (see :meth:`streams`)."""
        return self.surface is not None and self.surface.stream

    def streams(self, content_type: str) -> bool:
        """Whether a body of this Content-Type is forwarded unread: a multipart upload (its part names are watched by
        :class:`PartNameScanner`) or a file's raw bytes (``application/octet-stream``, ``image/jpeg``...). A body
        that could carry parameters (no Content-Type, a form, JSON, text) is read and checked like every other."""
        if not self.stream:
            return False
        return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data" or not carries_parameters(
            content_type
        )


def carries_parameters(content_type: str) -> bool:
    """Whether a body of this Content-Type may carry Graph parameters (no type, a form, JSON, multipart, any text);
    a file's bytes (``application/octet-stream``, ``image/jpeg``...) do not."""
    mime = content_type.split(";", 1)[0].strip().lower()
    return not mime or mime.startswith(("text/", "multipart/")) or mime in _PARAMETER_TYPES


def classify_target(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Iterable[tuple[str, str]],
    extra: Sequence[Surface] = (),
) -> Target:
    """Classify a request from everything but its body.

    Args:
        method: the HTTP method as received.
        raw_path: the path exactly as received (still percent-encoded), without the query.
        raw_query: the query string exactly as received, without ``?``.
        headers: every header as ``(name, value)`` pairs (repeated headers repeated).
        extra: the operator's ``gateway.allow`` surfaces.

    Raises:
        Refused: the request is refused (see the module docstring and docs/gateway.md).
    """
    if len(raw_path) + len(raw_query) <= _MEMO_TARGET and _headers_plain(headers):
        # no header the checks could refuse: the answer depends on the rest only
        return _classify_memo(method, raw_path, raw_query, tuple(extra))
    return _classify(method, raw_path, raw_query, headers, extra)


def _headers_plain(headers: Iterable[tuple[str, str]]) -> bool:
    """True when :func:`_check_headers` cannot refuse these headers: no name mentions a method and neither
    ``Content-Type`` nor ``Content-Encoding`` can be there twice (a cheap test on all names at once)."""
    names = "\n".join([name for name, _ in headers]).lower()
    return "method" not in names and names.count("content-type") < 2 and names.count("content-encoding") < 2


_MEMO_TARGET = 256
"""Longest path and query whose classification is remembered (4,096 of them at most: about 1 MB)."""


@lru_cache(maxsize=4096)
def _classify_memo(method: str, raw_path: str, raw_query: str, extra: tuple[Surface, ...]) -> Target:
    """:func:`_classify` of a request whose headers pass, remembered: a contact center sends to a handful of paths,
    and a :class:`Target` is immutable. Refusals are not remembered (``lru_cache`` keeps no exceptions)."""
    return _classify(method, raw_path, raw_query, (), extra)


def _classify(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Iterable[tuple[str, str]],
    extra: Sequence[Surface],
) -> Target:
    method = method.upper()
    parts = _path_parts(raw_path)
    if parts and parts[0].lower() in OWN_FACES:
        raise Refused(404, INVALID_PARAMETER, "Unknown path", f"{raw_path[:100]} is not served by the proxy")
    version = ""
    if parts and _VERSION.match(parts[0]):
        version = parts.pop(0)
    if parts and parts[0].lower() in OWN_FACES:
        raise Refused(404, INVALID_PARAMETER, "Unknown path", f"{raw_path[:100]} is not served by the proxy")
    for part in parts:
        if _VERSION.match(part):
            raise invalid("the path has a second version segment; Meta may read it differently, so it is refused")
    _check_headers(headers)
    query = tuple(_query_pairs(raw_query))
    if method not in METHODS:
        raise invalid(f"{method[:20]} is not a method of the Graph API (GET, POST and DELETE are)", status=405)
    if not parts:
        raise invalid(
            "Graph API batch requests (the root path) are not supported through the blocklist proxy; "
            "send each request on its own"
        )
    for part in parts:
        _check_segment(part)
    lowered = [p.lower() for p in parts]
    if len(parts) == 2 and lowered[1] in GUARDED_EDGES and not (method != "POST" and lowered[1] in _GROUP_EDGES):
        return _guarded(method, parts[0], lowered[1], version, query)
    if any(p in GUARDED_EDGES for p in lowered) and not (len(parts) == 2 and lowered[1] in _GROUP_EDGES):
        raise denied(
            f"{'/'.join(lowered)[:100]} is not a path the blocklist proxy can check; "
            "checked edges are /{phone_number_id}/messages and the like, with nothing after them"
        )
    for surface in (*builtin_surfaces(), *extra):
        if surface.matches(method, parts):
            return Target("pass", method, parts[0], "", version, surface, query)
    raise denied(
        f"{method} /{'/'.join(parts)[:100]} is not on the blocklist proxy's list of Graph API surfaces that cannot "
        "reach a user (docs/gateway.md); an operator can add a harmless one with gateway.allow"
    )


def _path_parts(raw_path: str) -> list[str]:
    if not raw_path.startswith("/") or raw_path.startswith("//"):
        raise invalid("the request path is not a Graph API path")
    inner = raw_path[1:]
    if inner.endswith("/"):
        inner = inner[:-1]  # one trailing slash: the same resource for Meta and for us
    if not inner:
        return []
    parts = inner.split("/")
    if any(not p for p in parts):
        raise invalid("the request path has an empty segment ('//'); Meta may read it differently, so it is refused")
    return parts


def _check_segment(part: str) -> None:
    if _SEGMENT.match(part) or _UPLOAD.match(part):
        if part.isdigit() and not _NODE_ID.match(part):
            raise invalid(
                f"the node ID {part[:40]!r} has a leading zero; Meta may read it as another node, so it is refused"
            )
        return
    if part.startswith("+") and part[1:].isdigit():
        raise invalid(f"the node ID {part[:40]!r} has a '+'; node IDs are digits only")
    if "%" in part:
        raise invalid(
            f"the path segment {part[:40]!r} is percent-encoded; Meta may decode it to another path, so it is refused"
        )
    if ";" in part:
        raise invalid(f"the path segment {part[:40]!r} has a path parameter (';'); Meta may drop it, so it is refused")
    raise invalid(
        f"the path segment {part[:40]!r} has characters Graph API paths do not use ('.', spaces, ...); "
        "Meta may read it as another path, so it is refused"
    )


def _check_headers(headers: Iterable[tuple[str, str]]) -> None:
    seen: set[str] = set()
    for name, _ in headers:
        low = name.lower()
        if "method" in low:
            raise invalid(f"the {name[:40]} header overrides the request method; send the method Meta uses instead")
        if low in ("content-type", "content-encoding") and low in seen:
            raise invalid(f"the {name} header is given twice")
        seen.add(low)


def _query_pairs(raw_query: str) -> list[tuple[str, str]]:
    pairs = _form_pairs(raw_query, "query string")
    _check_names(pairs, "query string")
    return pairs


def _form_pairs(text: str, where: str) -> list[tuple[str, str]]:
    """``name=value&...`` decoded as the Graph API (PHP) decodes it, each name checked."""
    pairs: list[tuple[str, str]] = []
    if not text:
        return pairs
    for piece in text.split("&"):
        if not piece:
            continue
        raw_name, _, raw_value = piece.partition("=")
        name = _decode(raw_name, where)
        value = _decode(raw_value, where)
        if not _NAME.match(name):
            raise invalid(
                f"the {where} has a parameter name {name[:40]!r} with characters other than letters, digits and "
                "'_' (PHP-style arrays such as to[] are read differently by Meta), so it is refused"
            )
        pairs.append((name, value))
    return pairs


def _decode(text: str, where: str) -> str:
    try:
        return unquote_plus(text, errors="strict")
    except UnicodeDecodeError:
        raise invalid(f"the {where} is not UTF-8 once percent-decoded") from None


def _check_names(pairs: Iterable[tuple[str, Any]], where: str) -> None:
    seen: set[str] = set()
    for name, _ in pairs:
        low = name.lower()
        if low in OVERRIDES:
            what = "batch requests" if low == "batch" else "method overrides"
            raise invalid(f"the {where} has a {name!r} parameter: {what} are not supported through the blocklist proxy")
        if low in CHECKED_FIELDS and name != low:
            raise invalid(f"the {where} has {name!r}: parameter names are lower case ({low!r})")
        if low in seen:
            raise invalid(f"the parameter {name[:40]!r} is given twice; Meta may use either, so it is refused")
        seen.add(low)


def _guarded(method: str, node: str, edge: str, version: str, query: tuple[tuple[str, str], ...]) -> Target:
    if edge == "block_users":
        if not _NODE_ID.match(node):
            raise denied("block_users must name a connector's phone number ID")
        return Target("block_users", method, node, edge, version, None, query)
    if method != "POST":
        raise invalid(f"{edge} accepts only POST through the blocklist proxy ({method} was sent)", status=405)
    if edge in ("participants", "join_requests"):
        return Target(edge, method, node, edge, version, None, query)  # type: ignore[arg-type]
    if not _NODE_ID.match(node):
        raise denied(f"{edge} must be sent to a connector's phone number ID, not {node[:40]!r}")
    kind: Kind = "encrypted" if edge == "messages_encrypted" else "send"
    return Target(kind, method, node, edge, version, None, query)


# --- step 2: the body ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    """Every parameter of an inspected request.

    Attributes:
        fields: the one reading Meta documents: query string plus body, each name once.
        also: values of a second reading some of Meta's parsers may take (a JSON body sent with a form
            Content-Type, read as a form): checked too when they can be read, never refused for being unreadable.
    """

    fields: dict[str, Any]
    also: dict[str, list[str]] = field(default_factory=dict)


def read_params(query: Sequence[tuple[str, str]], body: bytes, content_type: str, content_encoding: str = "") -> Params:
    """Parse an inspected request's parameters from its query and body.

    Args:
        query: :attr:`Target.query`.
        body: the body as received (still compressed when ``content_encoding`` is gzip).
        content_type: the ``Content-Type`` header ("" when absent).
        content_encoding: the ``Content-Encoding`` header ("" when absent).

    Raises:
        Refused: 400 for anything that cannot be read one way only, 413 for a body over
            :data:`MAX_INSPECTED_BODY` once decoded.
    """
    decoded = decode_body(body, content_encoding)
    mime, charset = _content_type(content_type)
    pairs: list[tuple[str, Any]] = [(name, _structured(name, value)) for name, value in query]
    also: dict[str, list[str]] = {}
    if decoded.strip():
        if decoded.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
            raise invalid("the request body starts with a byte order mark; send UTF-8 without one")
        if b"\x00" in decoded:
            raise invalid("the request body has NUL bytes (UTF-16 or binary); send UTF-8 text")
        if charset not in ("", "utf-8", "utf8", "us-ascii"):
            raise invalid(f"the request body is declared as {charset[:20]}; send UTF-8")
        stripped = decoded.lstrip()
        if stripped[:1] in (b"{", b"["):
            pairs.extend(_json_pairs(decoded))
            if mime != "application/json":
                also = _lenient_form(decoded)
        elif mime == "multipart/form-data":
            body_pairs = _multipart_pairs(decoded, content_type)
            _check_names(body_pairs, "multipart body")
            pairs.extend(body_pairs)
        else:
            try:
                text = decoded.decode("utf-8")
            except UnicodeDecodeError:
                raise invalid("the request body is neither JSON nor form-encoded parameters (not UTF-8)") from None
            body_pairs = [(n, _structured(n, v)) for n, v in _form_pairs(text.strip(), "request body")]
            _check_names(body_pairs, "request body")
            pairs.extend(body_pairs)
    _check_names(pairs, "request")
    return Params(fields=dict(pairs), also=also)


def decode_body(body: bytes, content_encoding: str) -> bytes:
    """The body to inspect: gzip decoded (at most :data:`MAX_INSPECTED_BODY` bytes), identity as is.

    Raises:
        Refused: another encoding, several, or a gzip stream that is broken, too large or has trailing data.
    """
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise invalid(
            f"Content-Encoding {content_encoding[:40]!r} cannot be inspected by the blocklist proxy; "
            "send the body uncompressed or gzip-compressed"
        )
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, MAX_INSPECTED_BODY + 1)
    except zlib.error:
        raise invalid("the gzip-compressed request body cannot be decoded") from None
    if len(out) > MAX_INSPECTED_BODY or inflater.unconsumed_tail:
        raise invalid(f"the request body is larger than {MAX_INSPECTED_BODY} bytes once decoded", status=413)
    if not inflater.eof or inflater.unused_data:
        raise invalid("the gzip-compressed request body is cut short or has data after its end")
    return out


@lru_cache(maxsize=256)
def _content_type(value: str) -> tuple[str, str]:
    mime, _, rest = value.partition(";")
    charset = ""
    for param in rest.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip('"').lower()
    return mime.strip().lower(), charset


def _reject_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                raise invalid(f"the JSON body has the key {key[:40]!r} twice; Meta may use either, so it is refused")
            seen.add(key)
    return dict(pairs)


_JSON = json.JSONDecoder(object_pairs_hook=_reject_pairs)
_JSON_SPACE = " \t\n\r"
"""JSON's whitespace (RFC 8259 §2): what may stand around the value."""


def _json_pairs(body: bytes) -> list[tuple[str, Any]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("the request body is not UTF-8") from None
    if nested_deeper_than(text, MAX_JSON_DEPTH):
        raise invalid(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep")
    text = text.strip(_JSON_SPACE)
    try:
        # what JSONDecoder.decode does, without its two whitespace regexes (scan_once is set by its constructor)
        data, end = _JSON.scan_once(text, 0)  # type: ignore[attr-defined]
    except (StopIteration, ValueError, RecursionError):
        raise invalid("the request body is not valid JSON") from None
    if end != len(text):
        raise invalid("the request body is not valid JSON")
    if not isinstance(data, dict):
        raise invalid("the request body must be a JSON object")
    return list(data.items())


def nested_deeper_than(text: str, limit: int) -> bool:
    """True if a JSON text nests arrays and objects more than ``limit`` levels deep (brackets in strings skipped).

    A cheap bound checked before the recursive parser runs (it recurses once per level); the admin API's body
    reader uses it too, with its own limit.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest > limit


def _lenient_form(body: bytes) -> dict[str, list[str]]:
    """The form reading of a JSON body sent with a form Content-Type: only well-formed pieces count."""
    found: dict[str, list[str]] = {}
    text = body.decode("utf-8", errors="replace")
    for piece in text.split("&"):
        raw_name, sep, raw_value = piece.partition("=")
        if not sep:
            continue
        name = unquote_plus(raw_name, errors="replace")
        if name.lower() in OVERRIDES:
            raise invalid(f"the request body, read as a form, has a {name!r} parameter; it is refused")
        if _NAME.match(name) and name.lower() in CHECKED_FIELDS:
            found.setdefault(name.lower(), []).append(unquote_plus(raw_value, errors="replace"))
    return found


def _structured(name: str, value: str) -> Any:
    # Structured parameters arrive JSON-encoded in form, query and multipart parameters.
    if name in ("participants", "block_users", "join_requests", "typing_indicator") and value.lstrip()[:1] in (
        "[",
        "{",
    ):
        if nested_deeper_than(value, MAX_JSON_DEPTH):
            raise invalid(f"the {name} parameter is nested more than {MAX_JSON_DEPTH} levels deep")
        try:
            return _JSON.decode(value)
        except (ValueError, RecursionError):
            raise invalid(f"the {name} parameter is not valid JSON") from None
    return value


def _multipart_pairs(body: bytes, content_type: str) -> list[tuple[str, Any]]:
    from email.parser import BytesParser
    from email.policy import HTTP

    boundaries = _BOUNDARY.findall(content_type)
    if len(boundaries) != 1:
        raise invalid("the multipart Content-Type must have exactly one boundary")
    boundary = boundaries[0].strip('"').encode("latin-1", errors="replace")
    # No preamble or epilogue: parsers differ on what they do with text outside the parts.
    if not body.startswith(b"--" + boundary) or body.rstrip(b"\r\n")[-len(boundary) - 4 :] != b"--" + boundary + b"--":
        raise invalid("the multipart body has text before its first part or after its last one")
    try:
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
        )
    except (UnicodeEncodeError, ValueError):
        raise invalid("the multipart body cannot be read") from None
    if not message.is_multipart() or message.defects:
        raise invalid("the multipart body cannot be read")
    out: list[tuple[str, Any]] = []
    for part in message.iter_parts():
        raw_dispositions = [str(v) for k, v in part.raw_items() if k.lower() == "content-disposition"]
        disposition = raw_dispositions[0] if len(raw_dispositions) == 1 else ""  # as sent, not as email reads it
        name = part.get_param("name", header="content-disposition")
        if (
            not disposition.lower().startswith("form-data")
            or not isinstance(name, str)
            or len(_NAME_PARAM.findall(disposition)) != 1
        ):
            raise invalid("a multipart part has no single plain form-data name")
        if part.get_filename() is not None:
            raise invalid(f"the multipart field {name[:40]!r} is sent as a file; this endpoint takes only text fields")
        transfer = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        if transfer not in ("", "7bit", "8bit", "binary"):
            raise invalid(f"the multipart field {name[:40]!r} has Content-Transfer-Encoding {transfer[:20]!r}")
        charset = part.get_content_charset()
        if charset not in (None, "utf-8", "us-ascii"):
            raise invalid(f"the multipart field {name[:40]!r} is declared as {charset[:20]}; send UTF-8")
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            raise invalid(f"the multipart field {name[:40]!r} cannot be read")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid(f"the multipart field {name[:40]!r} is not UTF-8 text") from None
        out.append((name, _structured(name, text)))
    return out


class PartNameScanner:
    """Watches a streamed multipart upload for a ``batch`` or ``method`` part, which the gateway cannot let pass.

    Uploads are forwarded as they arrive; a part header naming one of :data:`OVERRIDES` stops the upload before its
    end, so Meta never gets a complete request.
    """

    _PATTERN = re.compile(
        rb"content-disposition:[^\r\n]*?\bname\*?\s*=\s*\"?(?:[a-z0-9-]*'[a-z-]*')?\s*(batch|method)\b",
        re.IGNORECASE,
    )
    _KEEP = 1024

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        """Scan the next piece of the body.

        Raises:
            Refused: a part named batch or method was seen.
        """
        window = self._tail + chunk
        found = self._PATTERN.search(window)
        if found is not None:
            raise invalid(
                f"the upload has a {found.group(1).decode().lower()!r} part: batch requests and method overrides are "
                "not supported through the blocklist proxy"
            )
        self._tail = window[-self._KEEP :]


# --- step 3: whom it reaches -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reach:
    """Whom an inspected request may reach.

    Attributes:
        recipients: ``(field, value)`` for each ``to`` / ``recipient`` to check with every reading of the number;
            an unreadable value is refused.
        maybe_recipients: the same from a second reading (:attr:`Params.also`): checked when readable.
        message_ids: messages a read receipt or typing indicator refers to, and calls being answered (their users must
            not be blocked).
        participants: ``(field, value)`` users to be added to a group.
        join_requests: join-request IDs to be approved.
        group_send: a send to a group (allowed; its members joined through checked approvals).
        template: a template or marketing send (``marketing_messages``, or ``messages`` with ``type: template`` in
            any reading): refused to users who opted out (issue 19), unlike a free-form reply.
    """

    recipients: tuple[tuple[str, str], ...] = ()
    maybe_recipients: tuple[tuple[str, str], ...] = ()
    message_ids: tuple[str, ...] = ()
    participants: tuple[tuple[str, str], ...] = ()
    join_requests: tuple[str, ...] = ()
    group_send: bool = False
    template: bool = False


def reach(target: Target, params: Params) -> Reach:
    """Whom a send, participants addition or join-request approval reaches.

    Raises:
        Refused: 400 for a field that must be read and cannot be (a ``to`` that is not a string or number, a
            group send to a phone number, a non-string ``action``...).
    """
    fields = params.fields
    if target.kind == "participants":
        return Reach(participants=tuple(_participants(fields.get("participants"))))
    if target.kind == "join_requests":
        return Reach(join_requests=tuple(_join_requests(fields.get("join_requests"))))
    recipients = [(name, _text(name, fields[name])) for name in ("to", "recipient") if name in fields]
    maybe = [(name, value) for name in ("to", "recipient") for value in params.also.get(name, [])]
    group = False
    if target.edge == "calls" and "action" in fields and not isinstance(fields["action"], str):
        raise invalid('action must be a string such as "connect"')
    if "recipient_type" in fields:
        kind = fields["recipient_type"]
        if kind not in ("individual", "group"):
            raise invalid('recipient_type must be "individual" or "group"')
        if kind == "group":
            if "recipient" in fields:
                raise invalid("a group send names the group in to, without recipient")
            to = recipients[0][1] if recipients else ""
            if not to or _PHONE_LIKE.match(to):
                raise invalid(
                    'recipient_type "group" with a phone number in to is refused: Meta may deliver it to that user'
                )
            recipients = []
            group = True
    message_ids: list[str] = []
    if "message_id" in fields or "status" in fields:
        if fields.get("status") not in (None, "read"):
            raise invalid('status must be "read" (a read receipt or typing indicator)')
        message_id = fields.get("message_id")
        if not isinstance(message_id, str) or not message_id.strip():
            raise invalid("a read receipt or typing indicator needs the message_id of a message the user sent")
        message_ids.append(message_id)
    for value in params.also.get("message_id", []):
        message_ids.append(value)
    if target.edge == "calls" and fields.get("action") in _ANSWERING:
        # Answering a call connects the caller: whose call it is was learned from the verified calls webhook.
        call_id = fields.get("call_id")
        if not isinstance(call_id, str) or not call_id.strip():
            raise invalid("answering a call (pre_accept, accept) needs the call_id of a call the user placed")
        message_ids.append(call_id)
    return Reach(
        recipients=tuple(recipients),
        maybe_recipients=tuple(maybe),
        message_ids=tuple(message_ids),
        group_send=group,
        template=_is_template(target, params),
    )


def identities(values: Iterable[tuple[str, str]], region: str, *, strict: bool) -> list[Identity]:
    """Every user each ``(field, value)`` of a :class:`Reach` may reach, read with the connector's region.

    ``strict`` True is for :attr:`Reach.recipients` and :attr:`Reach.participants`: an unreadable value is
    refused. ``strict`` False is for :attr:`Reach.maybe_recipients` (a second reading of the body), whose values
    carry whatever followed them in the other reading (``573001234567"}}``): their digits alone are read too, and a
    value without digits is no recipient at all.

    Raises:
        Refused: 400 for a value that cannot be read as a number or BSUID.
    """
    found: list[Identity] = []
    for name, value in values:
        forms = [value] if strict else [value, re.sub(r"[^0-9]", "", value)]
        readable = False
        for form in forms:
            if not form:
                continue
            try:
                found.extend(recipient_readings(form, region))
                readable = True
            except InvalidNumber as exc:
                if strict:
                    raise invalid(f"{name}: {exc.message}") from None
        if not readable and not strict and forms[1]:
            raise invalid(
                f"the body, read as a form as its Content-Type says, has a {name} that cannot be read; "
                "send JSON with Content-Type: application/json"
            )
    return found


def _is_template(target: Target, params: Params) -> bool:
    """A send that an opt-out refuses: every ``marketing_messages`` send, and a ``messages`` send whose ``type`` is
    ``template`` in either reading (letter case and spaces ignored: when unsure, the opt-out applies)."""
    if target.edge == "marketing_messages":
        return True
    if target.edge != "messages":
        return False
    kinds = [params.fields.get("type"), *params.also.get("type", [])]
    return any(isinstance(kind, str) and kind.strip().lower() == "template" for kind in kinds)


def _text(name: str, value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"{name} must be a phone number, WhatsApp ID or business-scoped user ID")
    return value


def _participants(value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    found: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, dict):
            for key, inner in item.items():
                if key in ("user", "user_id", "wa_id", "to", "phone_number", "recipient"):
                    found.append((f"participants[].{key}", _text(f"participants[].{key}", inner)))
        else:
            found.append(("participants[]", _text("participants[]", item)))
    return found


def _join_requests(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("join_request_id", item.get("id"))
        if not isinstance(item, str) or not item.strip():
            raise invalid("join_requests must be a list of join request IDs")
        out.append(item)
    if not out:
        raise invalid("join_requests must be a non-empty list of join request IDs")
    return out
