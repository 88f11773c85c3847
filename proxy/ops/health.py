"""Operations endpoints on the proxy's root: ``/healthz``, ``/readyz`` and ``/metrics``.

The probes need no token (they hold no data). ``/metrics`` needs ``Authorization: Bearer <admin.metrics_token>``
when that key is set (metrics name connectors and counts); otherwise restrict it at the network edge.
They must be registered before the gateway's catch-all, or they would be sent to Meta.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from aiohttp import web

from ..appkeys import CONFIG, METRICS, STORE
from ..base.errors import StoreUnavailable
from ..metrics import CONTENT_TYPE_LATEST


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the process is up and serving (always 200; for liveness probes)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: 200 when the config is loaded and the store answers PING, else 503 with the reason."""
    checks: dict[str, str] = {}
    config = request.app.get(CONFIG)
    checks["config"] = "ok" if config is not None else "not loaded"
    store = request.app.get(STORE)
    if store is None:
        checks["store"] = "not opened yet"
    else:
        try:
            await store.ping()
            checks["store"] = "ok"
        except StoreUnavailable as exc:
            checks["store"] = exc.message
    failed = {name: state for name, state in checks.items() if state != "ok"}
    body: dict[str, Any] = {"status": "ready" if not failed else "unavailable", "checks": checks}
    if failed:
        body["reason"] = "; ".join(f"{name}: {state}" for name, state in failed.items())
    return web.json_response(body, status=503 if failed else 200, headers={"Cache-Control": "no-store"})


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: this process's metrics in the Prometheus text format (behind ``admin.metrics_token``)."""
    expected = request.app[CONFIG].current.admin.metrics_token
    if expected:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            hashlib.sha256(presented.strip().encode()).digest(), hashlib.sha256(expected.encode()).digest()
        ):
            return web.json_response(
                {"error": {"code": "unauthorized", "message": "send the metrics token as 'Authorization: Bearer …'"}},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="wa-blocklist-metrics"'},
            )
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup_health(app: web.Application) -> None:
    """Register ``/healthz``, ``/readyz`` and ``/metrics`` (before the gateway's catch-all)."""
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    app.router.add_get("/metrics", metrics, name="metrics")
