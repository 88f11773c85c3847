"""Logging: one line per request (JSON, or human-readable on a terminal), request IDs, and secret redaction.

Every request gets a request ID: the caller's ``X-Request-Id`` when it is a sane one (1–128 characters of letters,
digits and ``-_.:``), otherwise a fresh one. It is answered in the response's ``X-Request-Id`` header and sent on
every upstream call made while handling the request (Graph API, contact centers) by the client sessions' trace
hooks or :func:`tag_upstream`.

Handlers deep in a face note what they learned (the connector, an outcome such as ``blocked``) with :func:`note`;
the access logger (:class:`RedactingAccessLogger`) makes the line when the response is done. With the logging
:func:`setup_logging` sets up, the line is filled into a template (the formatter's very text, without a
``LogRecord``) and written in batches, once per event-loop iteration (:class:`BatchingStreamHandler`); with any
other set-up it goes through ``logging`` as a record.

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

import asyncio
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
from math import isfinite
from typing import Any, TextIO
from urllib.parse import unquote_plus

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

_wall_clock = time.time
_perf_counter = time.perf_counter
"""``time.time`` (the access logger's ``log`` has a parameter called ``time``)."""

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
    started: float = 0.0
    """``time.perf_counter()`` when the request reached the middleware (0.0: unknown)."""


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


def _fresh_ids() -> tuple[str, itertools.count[int]]:
    return secrets.token_hex(8), itertools.count(1)


_ids = _fresh_ids()


def _new_process_ids() -> None:
    global _ids
    _ids = _fresh_ids()


os.register_at_fork(after_in_child=_new_process_ids)  # a forked worker must not repeat its parent's IDs


def new_request_id() -> str:
    """A fresh request ID: 32 hex digits, a random prefix per process and a counter (unique without asking the OS
    for randomness, or for the process ID, on every request)."""
    prefix, counter = _ids
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
        started = time.perf_counter()
        info = RequestInfo(request_id_from(request.headers), face_of(request.path), started=started)
        request[REQUEST_INFO] = info
        token = _CURRENT.set(info)
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
    """aiohttp's access logger replaced: one line per request with the request's fields (see :class:`JsonFormatter`),
    secret query values (``access_token=…``) redacted from the logged path.

    When the line's logger (``aiohttp.access``) is set up as :func:`setup_logging` leaves it, every record of it
    reaching exactly one :class:`BatchingStreamHandler` with this module's formatter, the line is built from a
    template and handed to that handler's batch (:meth:`BatchingStreamHandler.add_line`): the same text the
    formatter would write, without a ``LogRecord``, the handler's locking and a dict through the JSON encoder
    (a fifth of a proxied request's instructions). Any other set-up (a handler or filter on ``aiohttp.access``, a
    second handler, pytest's ``caplog``, a plugin's own logging) gets a record through ``logging`` as before.
    Either way the logger's level decides: below INFO, no line.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        info = request.get(REQUEST_INFO)
        path = redact(redact_path(request.path_qs))[:500]
        method, status = request.method, response.status
        if info is not None:
            request_id, face, connector, outcome = info.request_id, info.face, info.connector, info.outcome
        else:
            request_id = request.headers.get(REQUEST_ID_HEADER, "")[:128]
            face, connector, outcome = face_of(request.path), "", outcome_of(status)
        # aiohttp's ``time`` comes from the event loop's clock, which uvloop keeps in whole milliseconds; the
        # middleware's start, read now that the answer is written, gives the same span to the microsecond.
        seconds = _perf_counter() - info.started if info is not None and info.started else time
        latency_ms = round(seconds * 1000, 2)
        remote = request.remote or ""
        batching = _sole_batching_handler(logger)
        if batching is not None:
            handler, template = batching
            handler.add_line(
                template(
                    _timestamp_of(_wall_clock()), logger.name, method, path, status, request_id, face, connector,
                    outcome, latency_ms, remote,
                )
            )  # fmt: skip
            return
        fields = {
            "request_id": request_id,
            "method": method,
            "path": path,
            "face": face,
            "connector": connector,
            "outcome": outcome,
            "status": status,
            "latency_ms": latency_ms,
            "remote": remote,
        }
        logger.info("%s %s %s", method, path, status, extra={"request": fields})


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


def _date_part(whole: int) -> str:
    """``2026-11-25T03:04:05.`` for a whole second (formatting a date costs more than the rest of a line, so it is
    done once a second)."""
    global _second
    if _second[0] != whole:
        _second = (whole, datetime.fromtimestamp(whole, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S."))
    return _second[1]


def _timestamp(record: logging.LogRecord) -> str:
    return f"{_date_part(int(record.created))}{int(record.msecs):03d}Z"


def _timestamp_of(created: float) -> str:
    """The timestamp a record made at ``created`` (``time.time()``) gets; its milliseconds as ``LogRecord``'s."""
    whole = int(created)
    date = _second[1] if _second[0] == whole else _date_part(whole)
    return f"{date}{int((created - whole) * 1000):03d}Z"


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

_string = json.encoder.encode_basestring
"""A str as a JSON string exactly as :data:`_ENCODER` writes it (``ensure_ascii=False``: quotes, backslashes and
control characters escaped, the rest as is); the C function the encoder itself calls."""


def _json_line(
    ts: str, logger: str, method: str, path: str, status: int, request_id: str, face: str, connector: str,
    outcome: str, latency_ms: float, remote: str,
) -> str:  # fmt: skip
    """An access line as :class:`JsonFormatter` writes it (the same keys in the same order), newline included.

    ``status`` is an ``int`` (aiohttp makes it one), written as the encoder writes ints; ``latency_ms`` as the
    encoder writes floats (``repr``, and its spelling of NaN and infinities)."""
    latency = repr(latency_ms) if isfinite(latency_ms) else _ENCODER.encode(latency_ms)
    return (
        f'{{"ts":"{ts}","level":"info","logger":{_string(logger)},"message":{_string(f"{method} {path} {status}")},'
        f'"request_id":{_string(request_id)},"method":{_string(method)},"path":{_string(path)},'
        f'"face":{_string(face)},"connector":{_string(connector)},"outcome":{_string(outcome)},'
        f'"status":{status},"latency_ms":{latency},"remote":{_string(remote)}}}\n'
    )


def _human_line(
    ts: str, logger: str, method: str, path: str, status: int, request_id: str, face: str, connector: str,
    outcome: str, latency_ms: float, remote: str,
) -> str:  # fmt: skip
    """An access line as :class:`HumanFormatter` writes it, newline included."""
    return (
        f"{ts} INFO  {logger}: {method} {path} {status} {face} {outcome}{' ' + connector if connector else ''}"
        f" {latency_ms}ms [{request_id}]\n"
    )


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


_TEMPLATED: dict[type, Callable[..., str]] = {JsonFormatter: _json_line, HumanFormatter: _human_line}
"""The formatters whose access lines a template writes, each with its template."""


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`setup_logging` installs: a ``StreamHandler`` that also takes finished access lines
    (:meth:`add_line`) and writes them in batches, one write per event-loop iteration (or every
    :attr:`max_pending` lines), instead of one write and flush per request.

    Nothing is lost and nothing is reordered: any other record this handler emits first writes the lines waiting
    before it, and :meth:`flush` and :meth:`close` (which ``logging.shutdown`` calls at exit, so on every clean
    stop) write them too. Lines wait at most until the running loop's next iteration.
    """

    max_pending = 128
    """Lines kept before they are written, whatever the loop does."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self.pending: list[str] = []
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def add_line(self, line: str) -> None:
        """Queue one finished line (its newline included) to be written in this loop iteration's batch."""
        pending = self.pending
        pending.append(line)
        if len(pending) >= self.max_pending:
            self.write_pending()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: nobody would come back for it
            self.write_pending()
            return
        if self._scheduled_on is not loop:
            self._scheduled_on = loop
            loop.call_soon(self.write_pending)

    def write_pending(self) -> None:
        """Write the queued lines now, in one write."""
        self._scheduled_on = None
        pending = self.pending
        if not pending:
            return
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            count = len(pending)  # lines another thread's loop adds meanwhile stay queued for the next write
            text = "".join(pending[:count])
            del pending[:count]
            try:
                self.stream.write(text)
                super().flush()
            except Exception:
                self.handleError(logging.makeLogRecord({"name": "aiohttp.access", "msg": text[:200]}))

    def emit(self, record: logging.LogRecord) -> None:
        if self.pending:
            self.write_pending()
        super().emit(record)

    def flush(self) -> None:
        if self.pending:
            self.write_pending()
        super().flush()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            super().close()


def _sole_batching_handler(logger: logging.Logger) -> tuple[BatchingStreamHandler, Callable[..., str]] | None:
    """The one handler an INFO record of ``logger`` would reach, with the template of its formatter, when it is a
    :class:`BatchingStreamHandler` writing with :class:`JsonFormatter` or :class:`HumanFormatter` and filtering with
    :class:`RedactingFilter` only (which leaves access lines alone), and nothing else would see the record (a filter
    on the logger, another handler anywhere up the chain); else None."""
    if type(logger) is not logging.Logger or logger.filters:
        return None
    found: logging.Handler | None = None
    node: logging.Logger | None = logger
    while node is not None:
        for handler in node.handlers:
            if found is not None:
                return None
            found = handler
        node = node.parent if node.propagate else None
    if type(found) is not BatchingStreamHandler or found.level > logging.INFO:
        return None
    template = _TEMPLATED.get(type(found.formatter))
    if template is None:
        return None
    for chosen in found.filters:
        if type(chosen) is not RedactingFilter:
            return None
    return found, template


def setup_logging(stream: TextIO | None = None, *, as_json: bool | None = None, level: int = logging.INFO) -> None:
    """Send every log record to ``stream`` (stderr), JSON unless it is a terminal, with secrets redacted.

    Access lines are written in batches (see :class:`BatchingStreamHandler`).

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
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(JsonFormatter() if as_json else HumanFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, BatchingStreamHandler):
            old.flush()  # its waiting lines go where they were meant to
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
