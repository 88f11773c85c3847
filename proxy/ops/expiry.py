"""The expiry sweep: removes temporary blocks whose time has come, with an ``expire`` audit record.

An expired block stops applying the moment its expiry passes, whatever this sweep does: every check in the store
compares the expiry with the service clock. The sweep only tidies the entries away (and announces them to the
change listeners, so Meta sync lifts them at Meta). It runs in every process; the removal is one Lua script, so
several processes sweeping at once remove each entry once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ..appkeys import METRICS, SERVICE
from ..base.errors import StoreUnavailable
from ..base.tasks import background

log = logging.getLogger(__name__)

SWEEP_SECONDS = web.AppKey("expiry_sweep_seconds", float)
"""Seconds between two sweeps (30 by default; tests make it short)."""

DEFAULT_SWEEP_SECONDS = 30.0


async def sweep_once(app: web.Application) -> int:
    """One sweep over every connector; returns how many entries were removed."""
    removed = await app[SERVICE].sweep_expired()
    for pnid, entries in removed.items():
        app[METRICS].expired.labels(pnid).inc(len(entries))
    return sum(len(entries) for entries in removed.values())


async def _run(app: web.Application) -> None:
    while True:
        await asyncio.sleep(app[SWEEP_SECONDS])  # the sweep's period: nothing waits on it being punctual
        try:
            await sweep_once(app)
        except StoreUnavailable as exc:
            log.warning("expiry sweep skipped: %s", exc.message)
        except Exception:  # the sweep must outlive a bug in one round
            log.exception("expiry sweep failed")


async def expiry_sweep_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context running the sweep while the app runs (after the store context)."""
    async with background(_run(app), "expiry-sweep"):
        yield
