"""The Graph API's error envelope, for every error the Graph-compatible faces return.

Clients such as pywa, Chatwoot and Typebot parse ``{"error": {...}}`` bodies into their usual error types, so a
refusal by the proxy looks to them exactly like a refusal by Meta.
"""

from __future__ import annotations

import base64
import os
from typing import Any

RECIPIENT_BLOCKED = 139900
"""Our code for a send refused because the recipient is blocked on the connector (Meta documents none)."""

RECIPIENT_OPTED_OUT = 139901
"""Our code for a template or marketing send refused because the recipient opted out on the connector (issue 19)."""

BAD_REQUEST = 100
"""Meta's "Invalid parameter" code, for bodies we cannot read."""

SERVICE_UNAVAILABLE = 131016
"""Meta's "Service unavailable" code, for transient failures (store down, upstream unreachable)."""


def fbtrace_id() -> str:
    """A random trace id shaped like Meta's, so support can correlate a refusal with our logs."""
    return base64.urlsafe_b64encode(os.urandom(12)).decode().replace("-", "A").replace("_", "B")


def error_envelope(
    code: int, title: str, details: str, *, transient: bool = False, trace_id: str | None = None
) -> dict[str, Any]:
    """The Graph error body: ``{"error": {"message", "type", "code", "error_data", "fbtrace_id"}}``."""
    error: dict[str, Any] = {
        "message": f"(#{code}) {title}",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details},
        "fbtrace_id": trace_id or fbtrace_id(),
    }
    if transient:
        error["is_transient"] = True
    return {"error": error}
