"""Bot Framework plugin with the real botbuilder-core: TestAdapter, TurnContext and its middleware pipeline."""

from __future__ import annotations

from typing import Any

from botbuilder.core import MessageFactory, TurnContext
from botbuilder.core.adapters import TestAdapter
from botbuilder.schema import Activity, ChannelAccount, ConversationAccount

from wa_blocklist.plugins.botframework import REFUSED_KEY, BlocklistMiddleware
from wa_blocklist.plugins.client import BlocklistClient
from wa_blocklist.proxy.blocklist.service import BlocklistService

from plugin_support import (
    ALLOWED,
    BLOCKED,
    BLOCKED_BSUID,
    block,
    blocklist_fixture,  # noqa: F401  (the blocklist fixture, both modes)
    whatsapp_conversation,
)
from support import PNID, PNID_BR, free_port


def template(user: str, channel: str = "whatsapp") -> Activity:
    return Activity(
        channel_id=channel,
        service_url="https://whatsapp.example",
        from_property=ChannelAccount(id=user, name="customer"),
        recipient=ChannelAccount(id=PNID, name="bot"),
        conversation=ConversationAccount(id=f"conversation-{user}"),
    )


class EchoBot:
    """A bot that answers every message and remembers what reached it."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def on_turn(self, context: TurnContext) -> None:
        self.seen.append(f"{context.activity.from_property.id}:{context.activity.text}")
        await context.send_activity(MessageFactory.text(f"echo: {context.activity.text}"))


def adapter_for(user: str, bot: EchoBot, middleware: BlocklistMiddleware, channel: str = "whatsapp") -> TestAdapter:
    adapter = TestAdapter(bot.on_turn, template(user, channel))
    adapter.use(middleware)
    return adapter


async def test_blocked_sender_turn_stops_before_the_bot(blocklist: BlocklistClient, service: BlocklistService) -> None:
    await block(service, BLOCKED)
    bot = EchoBot()
    middleware = BlocklistMiddleware(blocklist, phone_number_id=PNID)
    blocked = adapter_for(f"whatsapp:+{BLOCKED}", bot, middleware)
    await blocked.receive_activity("you are useless")
    assert blocked.activity_buffer == []

    allowed = adapter_for(ALLOWED, bot, middleware)
    await allowed.receive_activity("hello")
    assert bot.seen == [f"{ALLOWED}:hello"]
    assert [a.text for a in allowed.activity_buffer] == ["echo: hello"]
    assert allowed.activity_buffer[0].recipient.id == ALLOWED


async def test_proactive_message_to_blocked_user_is_refused(
    blocklist: BlocklistClient, service: BlocklistService
) -> None:
    await block(service, BLOCKED)
    refused_seen: list[str] = []

    async def on_refused(context: TurnContext, activities: list[Activity]) -> None:
        refused_seen.extend(a.text for a in activities)

    adapter = TestAdapter(EchoBot().on_turn)
    adapter.use(BlocklistMiddleware(blocklist, phone_number_id=PNID, on_refused=on_refused))
    results: dict[str, Any] = {}

    for user in (BLOCKED, ALLOWED):
        reference = whatsapp_conversation(user)

        async def callback(context: TurnContext, user: str = user) -> None:
            results[user] = await context.send_activity(f"offer for {user}")
            results[f"{user}:refused"] = context.turn_state.get(REFUSED_KEY, [])

        await adapter.continue_conversation(reference, callback)

    assert results[BLOCKED] is None and len(results[f"{BLOCKED}:refused"]) == 1
    assert results[ALLOWED] is not None and results[f"{ALLOWED}:refused"] == []
    assert [(a.recipient.id, a.text) for a in adapter.activity_buffer] == [(ALLOWED, f"offer for {ALLOWED}")]
    assert refused_seen == [f"offer for {BLOCKED}"]


async def test_other_connectors_and_channels_are_not_checked(
    blocklist: BlocklistClient, service: BlocklistService
) -> None:
    await block(service, BLOCKED)
    bot = EchoBot()
    on_brazil = adapter_for(BLOCKED, bot, BlocklistMiddleware(blocklist, phone_number_id=PNID_BR))
    await on_brazil.receive_activity("hola")  # blocked on the Colombian connector only
    assert bot.seen == [f"{BLOCKED}:hola"] and len(on_brazil.activity_buffer) == 1

    teams = adapter_for(
        BLOCKED, bot, BlocklistMiddleware(blocklist, phone_number_id=PNID, channels={"whatsapp"}), "msteams"
    )
    await teams.receive_activity("not whatsapp")
    assert len(bot.seen) == 2


async def test_bsuid_users_and_links(blocklist: BlocklistClient, service: BlocklistService) -> None:
    await block(service, BLOCKED, bsuid=BLOCKED_BSUID)  # the webhook showed both identities: linked
    bot = EchoBot()
    adapter = adapter_for(BLOCKED_BSUID, bot, BlocklistMiddleware(blocklist, phone_number_id=PNID))
    await adapter.receive_activity("from my username")
    assert bot.seen == []  # both modes follow the link to the blocked wa_id


async def test_blocklist_down_policy(service: BlocklistService) -> None:
    async with BlocklistClient.http(f"http://127.0.0.1:{free_port()}", "any-token-000001") as unreachable:
        for on_error, reaches in (("deny", False), ("allow", True)):
            bot = EchoBot()
            adapter = adapter_for(
                ALLOWED, bot, BlocklistMiddleware(unreachable, phone_number_id=PNID, on_error=on_error)
            )  # type: ignore[arg-type]
            await adapter.receive_activity("hi")
            assert (bot.seen == [f"{ALLOWED}:hi"]) is reaches
            assert (len(adapter.activity_buffer) == 1) is reaches
