"""Every resource shared through the aiohttp application, declared in one place.

Sub-applications (the admin app) read them through ``request.config_dict``.
"""

from __future__ import annotations

import asyncio

from aiohttp import ClientSession, web
from pyreqwest.client import Client as ReqwestClient

from .blocklist.meta_sync import MetaSync
from .blocklist.service import BlocklistService, Clock
from .config import LiveConfig
from .metrics import Metrics
from .store.blocks import BlocklistStore

CONFIG = web.AppKey("config", LiveConfig)
"""The running config: read ``app[CONFIG].current`` (``request.config_dict[CONFIG].current`` in the admin sub-app)
once per request. The blocklist service, the Meta sync and the gateway hold this same object, and a reload sets its
``current`` (:func:`wa_blocklist.proxy.run.reload.apply_config`), so nothing holds a copy to patch."""
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
STORE = web.AppKey("store", BlocklistStore)
SERVICE = web.AppKey("service", BlocklistService)

# HTTP client sessions, each opened and closed in its own cleanup context (see app.py).
GATEWAY_SESSION = web.AppKey("gateway_session", ClientSession)
"""Pooled session to ``graph.base_url`` for the gateway's traffic: no trace hooks (they cost about a tenth of a
pass-through's CPU); the gateway times its calls and sends the request ID itself."""
GATEWAY_CLIENT = web.AppKey("gateway_client", ReqwestClient)
"""The gateway's client for requests whose body is in hand (every checked send): pyreqwest (Rust's reqwest/hyper),
chosen by measurement (docs/performance.md): about a third of ``ClientSession``'s instructions per request.
Streamed uploads and downloads keep ``GATEWAY_SESSION``."""
GRAPH_SESSION = web.AppKey("graph_session", ClientSession)
"""Pooled session to ``graph.base_url`` for the proxy's own calls to Meta (sync, call rejects), traced."""
WEBHOOK_CLIENT = web.AppKey("webhook_client", ReqwestClient)
"""Pooled pyreqwest client to the contact centers' webhook URLs (untraced, like the gateway's: the receiver times its
calls and sends the request ID)."""

WEBHOOK_TASKS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("webhook_tasks")
"""Background work started by the webhook receiver (rejecting blocked users' calls), awaited at shutdown."""

META_SYNC = web.AppKey("meta_sync", MetaSync)
"""The Meta sync queue and its retry task (present only when a connector has ``sync_to_meta``)."""

METRICS = web.AppKey("metrics", Metrics)
"""This application's Prometheus metrics (its own registry), served at ``/metrics``."""
