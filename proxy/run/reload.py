"""Hot reload of ``config.yaml`` on SIGHUP: connectors added, removed or changed without a restart.

The new file is read and validated in full first; a broken one is refused (every problem logged) and the running
config stays. A valid one is swapped in at one point, :func:`apply_config`, which sets the ``current`` of the
application's one :class:`~wa_blocklist.proxy.config.LiveConfig` (``app[CONFIG]``). The gateway, the webhook receiver,
the admin app, the blocklist service and the Meta sync all hold that same object and read ``current`` per request,
so nothing else needs patching. Connectors, tokens, gateway and webhook policies take effect on the next request.
Settings bound when the process started (``server``, ``store``, ``graph`` timeouts and the HTTP sessions) are kept;
a change to them is logged as needing a restart.

A config that would switch enforcement off by accident is refused too (:func:`connector_problems`): one with no
connectors (a file truncated before ``connectors:``, or ``connectors: []``) lets every send through unchecked, and
one that keeps none of the running connectors is most likely the wrong file. Each needs its explicit option in the
new file (``reload.allow_no_connectors``, ``reload.allow_replacing_all_connectors``). Every refusal is logged at
error level and counted in ``wabl_config_reloads_total{result="refused"}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from ..appkeys import CONFIG, META_SYNC, METRICS
from ..base.errors import ConfigError
from ..config import Config, connector_problems, load_config

log = logging.getLogger(__name__)


RESTART_ONLY = ("server", "store", "graph")
"""Config sections read once at start: a change to them is refused by reload and needs a restart."""


def apply_config(app: web.Application, config: Config) -> None:
    """Make ``config`` the running config of ``app`` (the one place the swap happens).

    One assignment on the event loop's thread; the application's own state is not changed (aiohttp discourages that
    once it has started, and warns), and no warning filter is needed.
    """
    app[CONFIG].current = config


def reload_config(app: web.Application, path: Path) -> bool:
    """Read ``path`` and, if it is valid, apply it; returns whether it was applied.

    A broken file, one that changes a start-time section (:data:`RESTART_ONLY`), or one refused by
    :func:`connector_problems` is refused, logged at error level and counted; the running config is kept.
    """
    old = app[CONFIG].current
    try:
        new = load_config(path)
    except ConfigError as exc:
        log.error("config reload refused, keeping the running config: %s", "; ".join(exc.problems))
        app[METRICS].reloads.labels("refused").inc()
        return False
    problems = connector_problems(new, old)
    if problems:
        log.error("config reload refused, keeping the running config: %s", "; ".join(problems))
        app[METRICS].reloads.labels("refused").inc()
        return False
    changed = [name for name in RESTART_ONLY if _start_time(new, name) != _start_time(old, name)]
    if changed:
        log.error(
            "config reload refused, keeping the running config: %s cannot change without a restart",
            ", ".join(changed),
        )
        app[METRICS].reloads.labels("refused").inc()
        return False
    if any(c.sync_to_meta for c in new.connectors) and META_SYNC not in app:
        log.warning("sync_to_meta on a connector added by reload takes effect after a restart")
    before = {c.phone_number_id for c in old.connectors}
    after = {c.phone_number_id for c in new.connectors}
    apply_config(app, new)
    app[METRICS].reloads.labels("applied").inc()
    log.info(
        "config reloaded from %s: %d connector(s); added %s; removed %s",
        path,
        len(new.connectors),
        ", ".join(sorted(after - before)) or "none",
        ", ".join(sorted(before - after)) or "none",
    )
    return True


def _start_time(config: Config, section: str) -> object:
    value = getattr(config, section)
    if section == "store" and not config.store.embedded:
        return dataclasses.replace(value, data_dir="")  # unused with a Redis URL
    return value


def reload_on_sighup(path: Path) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that reloads ``path`` on every SIGHUP while the app runs (Unix only)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, reload_config, app, path)
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGHUP)

    return ctx
