"""pywa plugin: the blocklist for bots built with pywa (``pip install wa-blocklist-proxy[pywa]``).

Both directions, with or without the proxy in front of Meta:

* **Sends** — :class:`BlocklistTransport` is an httpx transport for ``WhatsApp(session=httpx.AsyncClient(...))``.
  Every Graph call is classified by the proxy gateway's own classifier (:mod:`wa_blocklist.proxy.graph.classify`): a
  message, template, call, read receipt or typing indicator to a blocked user, and every request the gateway refuses (a
  batch, a method override, a parameter given twice...), never leaves the bot; the transport answers it with the
  gateway's Graph error (HTTP 400, code 139900 for a blocked user; code 100 or 10 for a refused request), so pywa
  raises its usual typed :class:`pywa.errors.WhatsAppError`. With ``upstream=`` every Graph call is routed through
  the proxy instead of ``graph.facebook.com`` (the proxy then enforces too).
* **Webhooks** — :func:`guard_webhooks` wraps the client's ``webhook_update_handler`` (the one entry point of
  pywa's built-in server and of custom servers), so handlers, listeners and raw-update handlers never see a
  blocked user's message, status or call. :func:`not_blocked` is the same check as a pywa filter for one handler.

Example (docs/plugins.md has the whole program)::

    blocklist = BlocklistClient.direct("config.yaml")

    @asynccontextmanager
    async def lifespan(app):
        async with blocklist:  # start the client with the server, before the first update or send
            yield

    app = Starlette(lifespan=lifespan)
    wa = WhatsApp(phone_id=..., token=..., session=blocklist_session(blocklist), server=app, app_secret=..., ...)
    guard_webhooks(wa, blocklist)
"""

from __future__ import annotations

import hashlib
import logging
from contextvars import ContextVar
from typing import Any

from pywa.filters import Filter
from pywa.filters import new as new_filter
from pywa_async.client import WhatsApp

from wa_blocklist.proxy.base.errors import BlocklistError, UnknownConnector
from wa_blocklist.proxy.blocklist.service import InboundUser
from wa_blocklist.proxy.graph.signature import verify

from ._webhook import OnError, check_on_error, check_recording, filter_body, refuses
from .client import BlocklistClient
from .httpx_transport import BlocklistTransport, ProxyRoutingTransport, blocklist_session

log = logging.getLogger(__name__)

__all__ = ["BlocklistTransport", "ProxyRoutingTransport", "blocklist_session", "guard_webhooks", "not_blocked"]

_VERIFIED: ContextVar[bytes | None] = ContextVar("wa_blocklist_pywa_verified", default=None)
"""SHA-256 of the update body whose signature the wrapped validator just verified in this task."""


def guard_webhooks(
    wa: WhatsApp,
    blocklist: BlocklistClient,
    *,
    on_error: OnError = "deny",
    record_inbound: bool = True,
    app_secret: str | None = None,
) -> None:
    """Make ``wa`` drop every webhook item of a blocked user before any handler or listener sees it.

    Wraps ``wa.webhook_update_handler``: pywa's own server and custom servers both call it, with the raw body,
    after ``wa.webhook_update_validator`` (pywa's signature check). Blocked users' messages, statuses and calls are
    removed from the update (other users' items in the same update still reach the handlers); an update left empty
    is acknowledged unhandled. Senders, activity and wa_id ↔ BSUID links are recorded only from an update whose
    ``X-Hub-Signature-256`` verified under the app secret in ``wa.webhook_update_validator`` (also wrapped): a
    forged POST to the bot's webhook URL changes nothing in the blocklist.

    Args:
        wa: a ``pywa_async.WhatsApp`` client.
        blocklist: the blocklist to check against.
        on_error: when the blocklist cannot answer, ``deny`` returns ``("Service Unavailable", 503)`` (a custom
            server that passes pywa's answer on makes Meta retry; pywa's own server has already answered 200, so
            there the update is dropped and logged as an error) and ``allow`` handles it unchecked.
        record_inbound: record senders as having written now (direct mode; enables blocking under Meta's
            24-hour rule when the bot runs without the proxy). Only verified updates are recorded from.
        app_secret: the Meta app secret that signs the updates; default: the one ``wa`` was given.

    Raises:
        TypeError: ``wa`` is the synchronous ``pywa.WhatsApp`` (route its webhooks through the proxy instead).
        ValueError: ``record_inbound`` with a direct blocklist and no app secret (nothing could be verified).
    """
    if not isinstance(wa, WhatsApp):
        raise TypeError("guard_webhooks needs a pywa_async.WhatsApp client")
    check_on_error(on_error)
    secret = app_secret if app_secret is not None else getattr(wa, "_app_secret", None)
    check_recording(blocklist, record_inbound, secret)
    handle = wa.webhook_update_handler
    validate = wa.webhook_update_validator

    async def validated(update: bytes, hmac_header: str | None) -> tuple[str, int] | None:
        failure = await validate(update, hmac_header)
        if failure is None and secret and verify(secret, update, hmac_header):
            # pywa's server awaits the validator, then the handler, in one task: the handler sees this mark.
            _VERIFIED.set(hashlib.sha256(update).digest())
        return failure

    async def guarded(update: bytes, hmac_header: str | None = None) -> tuple[str, int]:
        if hmac_header is not None:  # pywa's deprecated inline validation: it must see the body Meta signed
            failure = await validated(update, hmac_header)
            if failure:
                return failure
        verified = _VERIFIED.get() == hashlib.sha256(update).digest()
        _VERIFIED.set(None)
        try:
            result = await filter_body(
                update, blocklist, app_secret=None, signature=None, record_inbound=record_inbound, verified=verified
            )
        except BlocklistError as exc:
            if refuses(on_error, exc, "pywa webhook", refused="update dropped", allowed="update handled unchecked"):
                return "Service Unavailable", 503
            return await handle(update)
        if result.empty:
            return "ok", 200
        return await handle(result.body)

    wa.webhook_update_handler = guarded  # type: ignore[method-assign]
    wa.webhook_update_validator = validated  # type: ignore[method-assign]


def not_blocked(blocklist: BlocklistClient, *, on_error: OnError = "deny") -> Filter[Any]:
    """A pywa filter that passes updates whose user is not blocked on the update's connector.

    Use it on single handlers (``@wa.on_message(not_blocked(blocklist))``); :func:`guard_webhooks` covers them all.
    """
    check_on_error(on_error)

    async def check(_: WhatsApp, update: Any) -> bool:
        user = getattr(update, "from_user", None)
        metadata = getattr(update, "metadata", None)
        if user is None or metadata is None:
            return True
        who = InboundUser(wa_id=getattr(user, "wa_id", None) or "", bsuid=getattr(user, "bsuid", None) or "")
        try:
            (blocked,) = await blocklist.blocked_users(metadata.phone_number_id, [who])
        except UnknownConnector:
            return True
        except BlocklistError as exc:
            return not refuses(on_error, exc, "pywa filter", refused="update skipped", allowed="update handled")
        return not blocked

    return new_filter(check, name="not_blocked")  # type: ignore[arg-type]  # pywa types it for the sync client
