"""Calls the proxy itself makes to Meta's Graph API (not the pass-through), with a connector's access token."""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp

from .config import ConnectorConfig, GraphConfig

log = logging.getLogger(__name__)


class MetaError(Exception):
    """Meta answered with an error, or could not be reached. ``status`` is 0 when nothing was answered."""

    def __init__(self, status: int, body: Any, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class MetaClient:
    """A thin client over the shared Graph session.

    Args:
        session: the app's pooled Graph session.
        graph: where the Graph API is and which version to call.
    """

    def __init__(self, session: aiohttp.ClientSession, graph: GraphConfig) -> None:
        self.session = session
        self.graph = graph

    def url(self, pnid: str, edge: str) -> str:
        return f"{self.graph.base_url}/{self.graph.api_version}/{pnid}/{edge}"

    async def request(
        self,
        method: str,
        connector: ConnectorConfig,
        edge: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Send one request with the connector's token; returns ``(status, parsed JSON or None)``.

        Raises:
            MetaError: if the connector has no access token or Meta cannot be reached (status 0).
        """
        if not connector.access_token:
            raise MetaError(0, None, f"connector {connector.phone_number_id} has no access_token configured")
        headers = {"Authorization": f"Bearer {connector.access_token}"}
        try:
            async with self.session.request(
                method,
                self.url(connector.phone_number_id, edge),
                json=body,
                params=params,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.graph.timeout_seconds),
            ) as resp:
                raw = await resp.read()
                try:
                    parsed = json.loads(raw) if raw else None
                except ValueError:
                    parsed = None
                return resp.status, parsed
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise MetaError(0, None, f"Graph API unreachable: {type(exc).__name__}") from None

    async def reject_call(self, connector: ConnectorConfig, call_id: str) -> bool:
        """Reject a WhatsApp call (``POST /{pnid}/calls`` with ``action: reject``); True if Meta accepted."""
        status, body = await self.request(
            "POST", connector, "calls", {"messaging_product": "whatsapp", "call_id": call_id, "action": "reject"}
        )
        if status != 200:
            log.warning("Meta refused to reject call on %s: HTTP %s", connector.phone_number_id, status)
        return status == 200
