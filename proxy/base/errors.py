"""One exception hierarchy for every face of the proxy.

Each error carries a machine-readable ``code`` (a slug), a human sentence and the HTTP status it maps to.
The admin API renders it as ``{"error": {"code", "message"}}``; the Graph-compatible gateway renders it in the
Graph error envelope. Messages never contain secrets.
"""

from __future__ import annotations

from aiohttp import web


class BlocklistError(Exception):
    """Base class of every error this package raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(BlocklistError):
    """The configuration is invalid; ``problems`` lists every finding as ``key: what is wrong``."""

    code = "config_invalid"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


class BadRequest(BlocklistError):
    """The request itself is malformed (JSON, fields, parameters)."""

    status = 400
    code = "bad_request"


class InvalidNumber(BadRequest):
    """A phone number or BSUID that cannot be understood."""

    code = "invalid_number"


class Unauthorized(BlocklistError):
    """No credentials, or credentials that match nothing."""

    status = 401
    code = "unauthorized"


class Forbidden(BlocklistError):
    """Valid credentials without the right to do this."""

    status = 403
    code = "forbidden"


class NotFound(BlocklistError):
    """Something named in the request does not exist."""

    status = 404
    code = "not_found"


class UnknownConnector(NotFound):
    """The phone number ID is not a configured connector."""

    code = "unknown_connector"


class NotBlocked(NotFound):
    """The number has no block entry on this connector."""

    code = "not_blocked"


class NotRecentlyActive(BlocklistError):
    """Meta's rule: only users who messaged the connector in the last 24 hours can be blocked."""

    status = 409
    code = "not_recently_active"


class BodyTimeout(BlocklistError):
    """The client did not send its whole body within ``server.body_timeout_seconds`` (a slow or stalled client)."""

    status = 408
    code = "body_timeout"


class BodyTooLarge(BadRequest):
    """A request body is larger than the limit of its face (e.g. ``webhooks.max_body_bytes``)."""

    status = 413
    code = "body_too_large"


class UnknownWebhookConnector(UnknownConnector):
    """The payload names a phone number ID or WABA that no connector has (``webhooks.unknown_connectors: refuse``).

    503, never 4xx: the payload is valid, Meta retries it until the connector is configured."""

    status = 503
    code = "unknown_connector"


class DeliveryFailed(BlocklistError):
    """A contact center could not be reached or did not answer 2xx: Meta must retry."""

    status = 502
    code = "forward_failed"


class DeliveryTimeout(DeliveryFailed):
    """A contact center did not answer within ``webhooks.forward_timeout_seconds``."""

    status = 504
    code = "forward_timeout"


class InvalidCsv(BadRequest):
    """The file cannot be imported at all; nothing was written."""

    code = "invalid_csv"


class TooManyRows(BlocklistError):
    """The file has more rows than one import accepts; nothing was written."""

    status = 413
    code = "too_many_rows"


class StoreUnavailable(BlocklistError):
    """Redis cannot be reached or did not answer in time. Transient: the caller may retry."""

    status = 503
    code = "store_unavailable"


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The admin-style error answer ``{"error": {"code", "message"}}`` (admin API, webhook receiver)."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)
