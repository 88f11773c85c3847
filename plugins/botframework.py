"""Microsoft Bot Framework plugin (``pip install wa-blocklist-proxy[botframework]``): a botbuilder ``Middleware``.

Add it to the adapter (``adapter.use(BlocklistMiddleware(blocklist, phone_number_id=...))``) and:

* a turn started by a blocked user (``activity.from_property.id``) stops before the bot's logic runs;
* every activity the bot sends in any turn, proactive ones (``continue_conversation``) included, is checked
  against its recipient (``activity.recipient.id``), and the ones to a blocked user are removed from the batch;
* an activity whose ``channel_data`` carries a Graph message body (a ``to``, ``recipient``, ``status``,
  ``message_id``... as channel connectors that pass WhatsApp payloads through take it) is classified as
  ``POST /{phone_number_id}/messages`` by the proxy gateway's own classifier (:mod:`wa_blocklist.plugins._graph`): a
  send to a blocked ``to``, a read receipt or typing indicator on a blocked user's message, a ``batch`` or ``method``, a
  group send to a phone number... are removed too, with the gateway's Graph error in the log and in
  ``turn_state[REFUSALS_KEY]``. A template (or marketing) send to a user who opted out is removed with code 139901;
  a template in ``channel_data`` without its own ``to`` / ``recipient`` is read as sent to the activity's recipient.
  botbuilder sends whatever is left in the list after the ``on_send_activities`` handlers have run (not calling
  ``next_send`` does not stop it), so the refused activities are taken out of that list in place;
  ``send_activity`` then returns None for them.

WhatsApp reaches the Bot Framework through a channel connector (Infobip, Twilio, a custom adapter); user ids are
read as wa_ids (a ``whatsapp:`` prefix and a leading ``+`` are accepted) or BSUIDs. Pass ``user_id=`` to map
another id scheme, and ``phone_number_id=`` as a string or as a function of the turn's activity when one bot
serves several business numbers.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from botbuilder.core import Middleware, TurnContext  # type: ignore[import-untyped]
from botbuilder.schema import Activity, ActivityTypes, ChannelAccount  # type: ignore[import-untyped]

from wa_blocklist.proxy.base.errors import BlocklistError, UnknownConnector
from wa_blocklist.proxy.blocklist.service import InboundUser
from wa_blocklist.proxy.graph import identity
from wa_blocklist.proxy.graph.classify import CHECKED_FIELDS, OVERRIDES, Refused, invalid
from wa_blocklist.proxy.graph.errors import error_envelope

from ._graph import check_request
from ._webhook import OnError, check_on_error, refuses
from .client import BlocklistClient

log = logging.getLogger(__name__)

__all__ = ["REFUSALS_KEY", "REFUSED_KEY", "BlocklistMiddleware", "graph_body", "whatsapp_user_id"]

REFUSED_KEY = "wa_blocklist.refused"
"""``turn_context.turn_state`` key of the list of activities refused in this turn."""

REFUSALS_KEY = "wa_blocklist.refusals"
"""``turn_context.turn_state`` key of ``(activity, Graph error body)`` for activities whose ``channel_data`` the
gateway's classifier refused."""

_GRAPH_FIELDS = CHECKED_FIELDS | OVERRIDES
"""``channel_data`` keys that make it a Graph message body (read like one)."""


def graph_body(activity: Activity) -> bytes | None:
    """The Graph message body an activity's ``channel_data`` carries (JSON), or None when it carries none.

    Raises:
        Refused: channel data that names Graph fields but cannot be written as JSON.
    """
    data = activity.channel_data
    if not isinstance(data, dict) or not any(isinstance(k, str) and k.lower() in _GRAPH_FIELDS for k in data):
        return None
    try:
        return json.dumps(data).encode()
    except (TypeError, ValueError):
        raise invalid("the activity's channel_data names Graph fields but is not JSON") from None


def _addressed(activity: Activity, who: str | None) -> Activity:
    """The activity, with the recipient's id as ``to`` when its ``channel_data`` is a template without its own
    ``to`` / ``recipient``: the channel connector sends it to the activity's recipient, so that is whose opt-out
    applies (issue 19). Anything else is returned as it is."""
    data = activity.channel_data
    if not who or not isinstance(data, dict):
        return activity
    kind = data.get("type")
    if not isinstance(kind, str) or kind.strip().lower() != "template":
        return activity
    if any(isinstance(k, str) and k.lower() in ("to", "recipient") for k in data):
        return activity
    addressed = copy.copy(activity)  # the bot's own activity is sent as it wrote it
    addressed.channel_data = {**data, "to": who}
    return addressed


RefusedCallback = Callable[[TurnContext, list[Activity]], Awaitable[None]]


def whatsapp_user_id(account: ChannelAccount | None) -> str | None:
    """The WhatsApp identity of a channel account: its id without a ``whatsapp:`` prefix, or None."""
    if account is None or not account.id:
        return None
    return str(account.id).removeprefix("whatsapp:").strip() or None


def _user(text: str) -> InboundUser:
    return InboundUser(bsuid=text) if identity.bsuid(text) is not None else InboundUser(wa_id=text)


def _is_continuation(activity: Activity) -> bool:
    return bool(activity.type == ActivityTypes.event and activity.name == "ContinueConversation")


def _constant(body: bytes) -> Callable[[], Awaitable[bytes]]:
    async def read() -> bytes:
        return body

    return read


class BlocklistMiddleware(Middleware):  # type: ignore[misc]  # botbuilder ships no type information
    """Stops turns from blocked users and refuses outgoing activities to them.

    Args:
        blocklist: the blocklist to check against.
        phone_number_id: the connector (business number) the bot answers for, or a function of the turn's
            activity returning it (None: the turn is not checked).
        user_id: maps a channel account to a wa_id or BSUID (None: not a WhatsApp user, not checked).
        channels: check only activities of these ``channel_id`` values (default: every channel).
        on_error: when the blocklist cannot answer, ``deny`` stops the turn / refuses the send, ``allow`` lets it go.
        record_inbound: record message senders as having written now (direct mode), so a supervisor can block
            them under Meta's 24-hour rule when the bot runs without the proxy.
        on_refused: called with the turn context and the refused activities, e.g. to log or tell an agent.
    """

    def __init__(
        self,
        blocklist: BlocklistClient,
        *,
        phone_number_id: str | Callable[[Activity], str | None],
        user_id: Callable[[ChannelAccount | None], str | None] = whatsapp_user_id,
        channels: Collection[str] | None = None,
        on_error: OnError = "deny",
        record_inbound: bool = True,
        on_refused: RefusedCallback | None = None,
    ) -> None:
        self.blocklist = blocklist
        self._pnid = phone_number_id if callable(phone_number_id) else (lambda _activity: phone_number_id)
        self._user_id = user_id
        self._channels = frozenset(channels) if channels is not None else None
        self.on_error = check_on_error(on_error)
        self.record_inbound = record_inbound
        self._on_refused = on_refused

    async def _blocked(self, pnid: str, who: str, *, record: bool) -> bool:
        """True if blocked, or if the blocklist cannot answer and the policy is ``deny``."""
        try:
            (blocked,) = await self.blocklist.blocked_users(pnid, [_user(who)], record_inbound=record)
        except UnknownConnector:
            return False
        except BlocklistError as exc:
            return refuses(self.on_error, exc, "botframework", refused="deny", allowed="allow")
        return blocked

    async def on_turn(self, context: TurnContext, logic: Callable[[], Awaitable[Any]]) -> None:
        activity = context.activity
        pnid = self._pnid(activity) if activity is not None else None
        if pnid is None or (self._channels is not None and activity.channel_id not in self._channels):
            await logic()
            return
        context.on_send_activities(self._send_guard(pnid))
        if not _is_continuation(activity):
            sender = self._user_id(activity.from_property)
            is_message = activity.type == ActivityTypes.message
            if sender and await self._blocked(pnid, sender, record=self.record_inbound and is_message):
                log.info("botframework: turn from a blocked user on %s stopped", pnid)
                return
        await logic()

    async def _graph_refusal(self, pnid: str, activity: Activity) -> Refused | None:
        """The gateway's refusal of the Graph body in the activity's ``channel_data``, if it carries one."""
        try:
            body = graph_body(_addressed(activity, self._user_id(activity.recipient)))
        except Refused as refusal:
            return refusal
        if body is None:
            return None
        verdict = await check_request(
            self.blocklist,
            "POST",
            f"/{pnid}/messages",
            "",
            [("Content-Type", "application/json")],
            _constant(body),
            self.on_error,
        )
        return verdict.refusal

    def _send_guard(
        self, pnid: str
    ) -> Callable[[TurnContext, list[Activity], Callable[[], Awaitable[None]]], Awaitable[None]]:
        async def guard(
            context: TurnContext, activities: list[Activity], next_send: Callable[[], Awaitable[None]]
        ) -> None:
            verdicts: dict[str, bool] = {}
            refused: list[Activity] = []
            for activity in activities:
                if activity.type == ActivityTypes.trace:
                    continue  # traces go to the emulator / transcript, never to the user
                refusal = await self._graph_refusal(pnid, activity)
                if refusal is not None:
                    envelope = error_envelope(refusal.code, refusal.title, refusal.details, transient=refusal.transient)
                    context.turn_state.setdefault(REFUSALS_KEY, []).append((activity, envelope))
                    log.info("botframework: channel_data refused on %s: %s", pnid, refusal.details[:200])
                    refused.append(activity)
                    continue
                who = self._user_id(activity.recipient)
                if not who:
                    continue
                if who not in verdicts:
                    verdicts[who] = await self._blocked(pnid, who, record=False)
                if verdicts[who]:
                    refused.append(activity)
            if refused:
                # In place: TurnContext sends this very list once every handler has returned.
                activities[:] = [a for a in activities if all(a is not r for r in refused)]
                context.turn_state.setdefault(REFUSED_KEY, []).extend(refused)
                log.info("botframework: refused %d activity(ies) to a blocked user on %s", len(refused), pnid)
                if self._on_refused is not None:
                    await self._on_refused(context, refused)
            await next_send()

        return guard
