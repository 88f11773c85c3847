"""Settings the examples read from the environment (secrets never go in code)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from wa_blocklist.plugins.client import BlocklistClient


def blocklist_from_env(actor: str) -> BlocklistClient:
    """HTTP mode when ``WA_BLOCKLIST_URL`` is set (with ``WA_BLOCKLIST_TOKEN``), else direct mode on the proxy's
    config file ``WA_BLOCKLIST_CONFIG`` (default ``config.yaml``): the proxy's store, which a running proxy serves
    (a bot never starts the embedded Redis itself)."""
    url = os.environ.get("WA_BLOCKLIST_URL", "")
    if url:
        return BlocklistClient.http(url, os.environ["WA_BLOCKLIST_TOKEN"])
    return BlocklistClient.direct(os.environ.get("WA_BLOCKLIST_CONFIG", "config.yaml"), actor=actor, source="example")


@dataclass(frozen=True)
class WhatsAppSettings:
    """The bot's own WhatsApp Cloud API settings."""

    phone_number_id: str
    access_token: str
    app_secret: str
    verify_token: str
    graph_url: str = "https://graph.facebook.com"
    """Where Graph calls go: Meta, or the proxy (``http://127.0.0.1:8080``) to have it enforce too."""

    @classmethod
    def from_env(cls) -> WhatsAppSettings:
        return cls(
            phone_number_id=os.environ["WA_PHONE_NUMBER_ID"],
            access_token=os.environ["WA_ACCESS_TOKEN"],
            app_secret=os.environ["META_APP_SECRET"],
            verify_token=os.environ["META_VERIFY_TOKEN"],
            graph_url=os.environ.get("GRAPH_URL", "https://graph.facebook.com").rstrip("/"),
        )
