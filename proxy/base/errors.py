"""One exception hierarchy for every face of the proxy.

Each error carries a machine-readable ``code`` (a slug), a human sentence and the HTTP status it maps to.
The admin API renders it as ``{"error": {"code", "message"}}``; the Graph-compatible gateway renders it in the
Graph error envelope. Messages never contain secrets.

A class states its status and code in its header, ``class NotFound(BlocklistError, status=404, code="not_found")``;
a subclass that names neither inherits its parent's.
"""

from __future__ import annotations

from aiohttp import web


class BlocklistError(Exception):
    """Base class of every error this package raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None) -> None:
        super().__init_subclass__()
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(BlocklistError, code="config_invalid"):
    """The configuration is invalid; ``problems`` lists every finding as ``key: what is wrong``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


class BadRequest(BlocklistError, status=400, code="bad_request"):
    """The request itself is malformed (JSON, fields, parameters)."""


class InvalidNumber(BadRequest, code="invalid_number"):
    """A phone number or BSUID that cannot be understood."""


class Unauthorized(BlocklistError, status=401, code="unauthorized"):
    """No credentials, or credentials that match nothing."""


class Forbidden(BlocklistError, status=403, code="forbidden"):
    """Valid credentials without the right to do this."""


class NotFound(BlocklistError, status=404, code="not_found"):
    """Something named in the request does not exist."""


class UnknownConnector(NotFound, code="unknown_connector"):
    """The phone number ID is not a configured connector."""


class NotBlocked(NotFound, code="not_blocked"):
    """The number has no block entry on this connector."""


class NotRecentlyActive(BlocklistError, status=409, code="not_recently_active"):
    """Meta's rule: only users who messaged the connector in the last 24 hours can be blocked."""


class BodyTimeout(BlocklistError, status=408, code="body_timeout"):
    """The client did not send its whole body within ``server.body_timeout_seconds`` (a slow or stalled client)."""


class BodyTooLarge(BadRequest, status=413, code="body_too_large"):
    """A request body is larger than the limit of its face (e.g. ``webhooks.max_body_bytes``)."""


class UnknownWebhookConnector(UnknownConnector, status=503):
    """The payload names a phone number ID or WABA that no connector has (``webhooks.unknown_connectors: refuse``).

    503, never 4xx: the payload is valid, Meta retries it until the connector is configured."""


class DeliveryFailed(BlocklistError, status=502, code="forward_failed"):
    """A contact center could not be reached or did not answer 2xx: Meta must retry."""


class DeliveryTimeout(DeliveryFailed, status=504, code="forward_timeout"):
    """A contact center did not answer within ``webhooks.forward_timeout_seconds``."""


class InvalidCsv(BadRequest, code="invalid_csv"):
    """The file cannot be imported at all; nothing was written."""


class TooManyRows(BlocklistError, status=413, code="too_many_rows"):
    """The file has more rows than one import accepts; nothing was written."""


class StoreUnavailable(BlocklistError, status=503, code="store_unavailable"):
    """Redis cannot be reached or did not answer in time. Transient: the caller may retry."""


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The admin-style error answer ``{"error": {"code", "message"}}`` (admin API, webhook receiver)."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)
