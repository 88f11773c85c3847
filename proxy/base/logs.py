"""Logging: one line per request (JSON, or human-readable on a terminal), request IDs, and secret redaction.

Every request gets a request ID: the caller's ``X-Request-Id`` when it is a sane one (1–128 characters of letters,
digits and ``-_.:``), otherwise a fresh one. It is answered in the response's ``X-Request-Id`` header and sent on
every upstream call made while handling the request (Graph API, contact centers) by the client sessions' trace
hooks or :func:`tag_upstream`.

Handlers deep in a face note what they learned (the connector, an outcome such as ``blocked``) with :func:`note`;
the access logger writes the line when the response is done.

Secrets never reach a log line: :class:`RedactingFilter` runs :func:`redact` over every record's message, and the
access line logs the path with :func:`redact_query` applied to its query string. What is a secret is decided by the
parameter's or header's *name* (:func:`is_secret_name`: ``access_token``, ``input_token``, ``fb_exchange_token``,
``client_secret``, OAuth's ``code``, ``authorization``, ``appsecret_proof``, ``password`` and anything named like a
token, secret, password, key or signature), never by guessing at values.

aiohttp answers a request it cannot parse (a bad character in a header, an over-long line) itself, before any
handler, with a body that quotes the offending line, ``Authorization`` header included.
:func:`install_plain_http_errors` replaces that body with a fixed sentence and logs the refusal without the line.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import unquote_plus

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

REQUEST_ID_HEADER = "X-Request-Id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

SECRET_PARAMS = frozenset(
    {
        "access_token", "input_token", "fb_exchange_token", "refresh_token", "id_token", "client_secret",
        "app_secret", "appsecret_proof", "hub.verify_token", "code", "authorization", "proxy-authorization",
        "password", "passwd", "token", "key", "api_key", "apikey", "sig", "signature", "signed_request", "cookie",
        "set-cookie", "x-hub-signature", "x-hub-signature-256",
    }
)  # fmt: skip
"""Query, form and header names whose values are secrets (more are caught by :func:`is_secret_name`)."""

_CREDENTIAL_WORDS = (
    "token", "secret", "password", "passwd", "authorization", "api_key", "api-key", "apikey", "signature", "credential"
)  # fmt: skip
"""A name containing one of these is a secret's name (``x-api-key``, ``my_access_token``, ``db_password``...)."""

REDACTED = "[redacted]"

_NAME_CHARS = r"[A-Za-z0-9_.\-]"
_SECRET_IN_TEXT = re.compile(
    rf"(?<![\w.\-])(?P<name>{_NAME_CHARS}*(?:{'|'.join(_CREDENTIAL_WORDS)}|appsecret_proof|signed_request)"
    rf"{_NAME_CHARS}*|cookie|x-hub-signature(?:-256)?)"
    r"(?P<sep>=|%3D|[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<scheme>(?:Bearer|Basic|OAuth|Digest)\s+|sha256=|sha1=)?(?P<value>[^&\s\"',;]+)",
    re.IGNORECASE,
)
_SECRET_IN_URL = re.compile(r"(?<![\w.\-])(?P<name>code|key|sig|auth)(?P<sep>=|%3D)(?P<value>[^&\s\"',;]+)", re.I)
"""Short names that are only secrets as URL parameters (``"code": "not_found"`` in a log message is not one)."""
_TRIGGERS = (
    "token", "secret", "passw", "auth", "key", "sig", "proof", "cookie", "code", "bearer", "basic", "credential"
)  # fmt: skip
"""Every name the patterns here can match contains one of these (lower case)."""
_BEARER = re.compile(r"(?P<name>Bearer|OAuth|Basic)\s+(?P<value>[A-Za-z0-9._~+/=\-]{4,})", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """Whether a query/form parameter or header called ``name`` carries a credential (case-insensitive)."""
    lowered = name.strip().lower()
    return lowered in SECRET_PARAMS or any(word in lowered for word in _CREDENTIAL_WORDS)


def redact(text: str) -> str:
    """Blank every secret found in free text: ``name=value``, ``name: value`` or ``"name": "value"`` for every
    credential-like name (:func:`is_secret_name`), URL parameters such as OAuth's ``code=…``, and ``Bearer …`` /
    ``Basic …`` credentials."""
    lowered = text.lower()
    for word in _TRIGGERS:  # most lines (every access line's path) name no credential: skip the regexes (~10 µs)
        if word in lowered:
            break
    else:
        return text
    text = _SECRET_IN_TEXT.sub(lambda m: f"{m.group('name')}{m.group('sep')}{m.group('scheme') or ''}{REDACTED}", text)
    text = _SECRET_IN_URL.sub(lambda m: f"{m.group('name')}{m.group('sep')}{REDACTED}", text)
    return _BEARER.sub(lambda m: f"{m.group('name')} {REDACTED}", text)


def redact_query(query: str) -> str:
    """A raw query string with every credential's value (:func:`is_secret_name`) replaced by ``[redacted]``."""
    if not query:
        return ""
    parts = []
    for part in query.split("&"):
        name, sep, _ = part.partition("=")
        if sep and is_secret_name(unquote_plus(name)):
            part = f"{name}={REDACTED}"
        parts.append(part)
    return "&".join(parts)


def redact_path(path_qs: str) -> str:
    """``/path?query`` with secret query values redacted."""
    path, sep, query = path_qs.partition("?")
    return path + sep + redact_query(query) if sep else path


class RedactingFilter(logging.Filter):
    """Redacts secrets in every record's formatted message (and its exception text) before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request", None) is not None:
            return True  # an access line: RedactingAccessLogger redacted its one free-text field already
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


# --- the request context ----------------------------------------------------------------------------------------


@dataclass
class RequestInfo:
    """What one request's log line and metrics say about it."""

    request_id: str
    face: str
    connector: str = ""
    outcome: str = ""


_CURRENT: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar("wabl_request", default=None)
REQUEST_INFO = web.RequestKey("request_info", RequestInfo)


def current() -> RequestInfo | None:
    """The request being handled in this task (and the tasks it started), or None outside a request."""
    return _CURRENT.get()


def note(*, connector: str | None = None, outcome: str | None = None) -> None:
    """Record the connector and/or outcome of the current request (no-op outside a request).

    Outcomes used: ``blocked`` (a send refused or inbound items removed for a blocked user), ``refused`` (a
    request the proxy answered itself with an error), ``forwarded``, ``ok``, ``error``.
    """
    info = _CURRENT.get()
    if info is None:
        return
    if connector is not None:
        info.connector = connector
    if outcome is not None:
        info.outcome = outcome


def request_id_from(headers: Any) -> str:
    """The caller's request ID when it is sane, else a new random one."""
    presented = headers.get(REQUEST_ID_HEADER, "")
    return presented if _SANE_ID.match(presented) else new_request_id()


_ids: tuple[int, str, itertools.count[int]] = (-1, "", itertools.count())


def new_request_id() -> str:
    """A fresh request ID: 32 hex digits, a random prefix per process and a counter (unique without asking the OS
    for randomness on every request, which costs more than the rest of the ID)."""
    global _ids
    pid, prefix, counter = _ids
    if pid != os.getpid():  # a new process (a forked worker) must not repeat its parent's IDs
        _ids = pid, prefix, counter = os.getpid(), secrets.token_hex(8), itertools.count(1)
    return f"{prefix}{next(counter):016x}"


def face_of(path: str) -> str:
    """Which face a path belongs to: ``admin``, ``webhooks``, ``ops`` (metrics, health) or ``gateway``."""
    if path == "/admin" or path.startswith("/admin/"):
        return "admin"
    if path == "/webhooks" or path.startswith("/webhooks/"):
        return "webhooks"
    if path in ("/metrics", "/healthz", "/readyz"):
        return "ops"
    return "gateway"


def outcome_of(status: int) -> str:
    """The default outcome for a status when the handler noted none."""
    if status >= 500:
        return "error"
    if status >= 400:
        return "refused"
    return "ok"


def make_request_middleware(on_done: Callable[[RequestInfo, int, float], None] | None = None) -> Any:
    """The middleware that gives each request its ID and context (see :func:`note`) and reports it when done.

    The access line itself is written by :class:`RedactingAccessLogger` once the response is sent.

    Args:
        on_done: called with ``(info, status, seconds)`` after each request (the metrics hook), or None.
    """

    @web.middleware
    async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        info = RequestInfo(request_id=request_id_from(request.headers), face=face_of(request.path))
        request[REQUEST_INFO] = info
        token = _CURRENT.set(info)
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            _CURRENT.reset(token)
            if not info.outcome:
                info.outcome = outcome_of(status)
            if on_done is not None:
                on_done(info, status, time.perf_counter() - started)

    return request_middleware


async def send_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: answer every request with its ``X-Request-Id`` (streamed responses too)."""
    info = request.get(REQUEST_INFO)
    if info is not None:
        response.headers[REQUEST_ID_HEADER] = info.request_id


class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp's access logger replaced: one record per request with the request's fields (see
    :class:`JsonFormatter`), secret query values (``access_token=…``) redacted from the logged path."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        info = request.get(REQUEST_INFO) if isinstance(request, web.Request) else None
        path = redact(redact_path(request.path_qs))[:500]
        fields = {
            "request_id": info.request_id if info else request.headers.get(REQUEST_ID_HEADER, "")[:128],
            "method": request.method,
            "path": path,
            "face": info.face if info else face_of(request.path),
            "connector": info.connector if info else "",
            "outcome": info.outcome if info else outcome_of(response.status),
            "status": response.status,
            "latency_ms": round(time * 1000, 2),
            "remote": request.remote or "",
        }
        self.logger.info("%s %s %s", request.method, path, response.status, extra={"request": fields})


def tag_upstream(headers: MutableMapping[str, str]) -> None:
    """Give an upstream call made while handling a request that request's ``X-Request-Id`` (no-op outside one)."""
    info = _CURRENT.get()
    if info is not None:
        headers[REQUEST_ID_HEADER] = info.request_id


def request_id_trace() -> aiohttp.TraceConfig:
    """A client trace hook that sends the current request's ID upstream as ``X-Request-Id`` (for sessions whose
    callers do not call :func:`tag_upstream` themselves)."""

    async def on_request_start(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestStartParams
    ) -> None:
        tag_upstream(params.headers)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    return trace


# --- formatting ---------------------------------------------------------------------------------------------------


_second: tuple[int, str] = (-1, "")


def _timestamp(record: logging.LogRecord) -> str:
    global _second
    whole = int(record.created)
    if _second[0] != whole:  # formatting the date costs more than the rest of a line: once a second is enough
        _second = (whole, datetime.fromtimestamp(whole, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S."))
    return f"{_second[1]}{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message`` and, for access lines, the request
    fields (``request_id``, ``method``, ``path``, ``face``, ``connector``, ``outcome``, ``status``, ``latency_ms``)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "request", None)
        if isinstance(fields, dict):
            out.update(fields)
        else:
            info = _CURRENT.get()
            if info is not None:
                out["request_id"] = info.request_id
        if record.exc_info:
            out["exception"] = record.exc_text or redact(self.formatException(record.exc_info))
        return _ENCODER.encode(out)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
"""One encoder for every line (``json.dumps`` with options would build a new one per call)."""


class HumanFormatter(logging.Formatter):
    """``2026-11-25T03:04:05.678Z INFO  proxy.access: POST /v21.0/…/messages 400 gateway blocked 12.3ms [id]``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "request", None)
        if isinstance(fields, dict):
            text = (
                f"{fields['method']} {fields['path']} {fields['status']} {fields['face']} {fields['outcome']}"
                f"{' ' + fields['connector'] if fields['connector'] else ''} {fields['latency_ms']}ms"
                f" [{fields['request_id']}]"
            )
        else:
            text = record.getMessage()
        line = f"{_timestamp(record)} {record.levelname:<5} {record.name}: {text}"
        if record.exc_info:
            line += "\n" + (record.exc_text or redact(self.formatException(record.exc_info)))
        return line


def setup_logging(stream: TextIO | None = None, *, as_json: bool | None = None, level: int = logging.INFO) -> None:
    """Send every log record to ``stream`` (stderr), JSON unless it is a terminal, with secrets redacted.

    Args:
        stream: where to write; stderr by default.
        as_json: force the format; by default JSON when ``stream`` is not a TTY.
        level: the root level.
    """
    # Facts no formatter here uses, which logging would otherwise gather for every record (the caller's frame
    # walk is the dear one): the Logging HOWTO's "Optimization" section.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    stream = stream if stream is not None else sys.stderr
    if as_json is None:
        as_json = not (hasattr(stream, "isatty") and stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if as_json else HumanFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


# --- aiohttp's own answers to requests it cannot parse ----------------------------------------------------------

_server_log = logging.getLogger("proxy.http")
_installed = False


def install_plain_http_errors() -> None:
    """Make aiohttp's own error answers (request it cannot parse: a bad header character, a line too long, a bad
    method) name the problem and quote nothing of the request, and log them without the offending line.

    aiohttp has no hook for these (aio-libs/aiohttp#3287, #9882): they are answered by the connection's
    ``RequestHandler.handle_error`` before any middleware runs, with the parser's message as the body, which quotes
    the offending header line (``Authorization: Bearer …`` included). So that method is wrapped, once per process.
    500s (a handler's unexpected failure) keep aiohttp's own answer, which quotes nothing.
    """
    global _installed
    if _installed:
        return
    from http import HTTPStatus

    from aiohttp import web_protocol
    from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError

    original = web_protocol.RequestHandler.handle_error

    def handle_error(
        self: web_protocol.RequestHandler,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return original(self, request, status, exc, message)
        # The parser's message names the problem, then quotes the request (after a colon or in quotes): keep the name.
        what = re.split(r"[:'\"]", (exc.message or "").strip(), maxsplit=1)[0].strip()[:80] or type(exc).__name__
        level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.INFO
        _server_log.log(level, "refused an unreadable HTTP request from %s: %d %s", request.remote, status, what)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already being sent; the connection is closed")
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Bad Request"
        response = web.Response(
            status=status,
            text=f"{status} {phrase}: {what}; the request could not be read as HTTP (a malformed, oversized or "
            "forbidden request line or header) and nothing of it was processed\n",
            content_type="text/plain",
        )
        response.force_close()
        return response

    web_protocol.RequestHandler.handle_error = handle_error  # type: ignore[method-assign]  # see the docstring
    _installed = True
