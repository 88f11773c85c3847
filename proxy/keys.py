"""Every resource shared through the aiohttp application, declared in one place.

Sub-applications (the admin app) read them through ``request.config_dict``.
"""

from __future__ import annotations

from aiohttp import ClientSession, web

from .blocklist import BlocklistService, Clock
from .config import Config
from .store import BlocklistStore

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)
STORE = web.AppKey("store", BlocklistStore)
SERVICE = web.AppKey("service", BlocklistService)

# HTTP client sessions, each opened and closed in its own cleanup context (see app.py).
GRAPH_SESSION = web.AppKey("graph_session", ClientSession)
"""Pooled session to ``graph.base_url``: the gateway's pass-through and the proxy's own calls to Meta."""
WEBHOOK_SESSION = web.AppKey("webhook_session", ClientSession)
"""Pooled session to the contact centers' webhook URLs."""
