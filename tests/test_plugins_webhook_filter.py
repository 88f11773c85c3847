"""The payload walk every webhook-side plugin shares (plugins/_webhook.py), on payload shapes Meta sends."""

from __future__ import annotations

import copy
from typing import Any

from wa_blocklist.plugins._webhook import filter_payload
from wa_blocklist.plugins.client import BlocklistClient
from wa_blocklist.proxy.blocklist.service import BlocklistService
from wa_blocklist.proxy.config import Config

from plugin_support import (
    ALLOWED,
    BLOCKED,
    BLOCKED_BSUID,
    block,
    blocklist_fixture,  # noqa: F401  (the blocklist fixture, both modes)
    messages_payload,
    statuses_payload,
)
from support import PNID, PNID_BR


def calls_payload(pnid: str, *calls: tuple[str, str]) -> dict[str, Any]:
    """A ``calls`` webhook: one ``connect`` event per ``(user wa_id, direction)``."""
    business = "576015550100"
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "calls",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": business, "phone_number_id": pnid},
                            "calls": [
                                {
                                    "id": f"wacid.{i}",
                                    "event": "connect",
                                    "direction": direction,
                                    "from": user if direction == "USER_INITIATED" else business,
                                    "to": business if direction == "USER_INITIATED" else user,
                                }
                                for i, (user, direction) in enumerate(calls)
                            ],
                        },
                    }
                ],
            }
        ],
    }


async def test_only_blocked_items_go_and_the_input_is_untouched(
    blocklist: BlocklistClient, service: BlocklistService
) -> None:
    await block(service, BLOCKED)
    payload = messages_payload(PNID, (BLOCKED, "", "x"), (ALLOWED, "", "y"))
    original = copy.deepcopy(payload)
    result = await filter_payload(payload, blocklist)
    assert payload == original
    value = result.payload["entry"][0]["changes"][0]["value"]
    assert [m["from"] for m in value["messages"]] == [ALLOWED]
    assert [c["wa_id"] for c in value["contacts"]] == [ALLOWED]
    assert result.removed == 2 and not result.empty


async def test_entries_of_several_connectors(blocklist: BlocklistClient, service: BlocklistService) -> None:
    await block(service, BLOCKED)
    payload = messages_payload(PNID, (BLOCKED, "", "x"))
    payload["entry"] += messages_payload(PNID_BR, (BLOCKED, "", "blocked on the other connector only"))["entry"]
    payload["entry"] += messages_payload("999999999", (BLOCKED, "", "not a connector: unchecked"))["entry"]
    result = await filter_payload(payload, blocklist)
    kept = [e["changes"][0]["value"]["metadata"]["phone_number_id"] for e in result.payload["entry"]]
    assert kept == [PNID_BR, "999999999"]


async def test_statuses_calls_and_other_fields(blocklist: BlocklistClient, service: BlocklistService) -> None:
    await block(service, BLOCKED, bsuid=BLOCKED_BSUID)
    original = statuses_payload(PNID, BLOCKED)
    statuses = await filter_payload(original, blocklist)
    # Statuses report the business's own messages: kept, with their contact, as the proxy keeps them (one walker).
    assert statuses.payload is original and statuses.removed == 0

    calls = calls_payload(
        PNID, (BLOCKED, "USER_INITIATED"), (BLOCKED, "BUSINESS_INITIATED"), (ALLOWED, "USER_INITIATED")
    )
    kept = (await filter_payload(calls, blocklist)).payload["entry"][0]["changes"][0]["value"]["calls"]
    assert [c["id"] for c in kept] == ["wacid.1", "wacid.2"]  # a business-initiated call is our own: kept

    account = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "account_update", "value": {"event": "VERIFIED"}}]}],
    }
    unchanged = await filter_payload(account, blocklist)
    assert unchanged.payload is account and unchanged.removed == 0


async def test_not_a_webhook_payload_passes(config: Config) -> None:
    never_started = BlocklistClient.direct(config)  # raises if consulted: nothing here names a user
    for payload in ([], {"entry": "x"}, {"entry": [{"changes": [{"value": {"messages": [{"from": BLOCKED}]}}]}]}):
        result = await filter_payload(payload, never_started)
        assert result.payload is payload and result.removed == 0


async def test_a_direct_bot_learns_whose_messages_and_calls_are_from_verified_bodies_only(
    config: Config, clock: Any, service: BlocklistService
) -> None:
    # A bot without the proxy in front: its own read receipts and call answers are checked against what its verified
    # webhooks showed (the gateway's classifier refuses references nobody has seen).
    messages = messages_payload(PNID, (ALLOWED, "", "hola"), (BLOCKED, BLOCKED_BSUID, "hola"))
    calls = calls_payload(PNID, (ALLOWED, "USER_INITIATED"))
    async with BlocklistClient.direct(config, actor="test-bot", clock=clock) as bot:
        for payload in (messages, calls):  # forged (never verified): nothing learned
            await filter_payload(payload, bot, record_inbound=True, verified=False)
        assert await service.message_sender(PNID, "wamid.TEST0") is None
        assert await service.message_sender(PNID, "wacid.0") is None
        for payload in (messages, calls):
            await filter_payload(payload, bot, record_inbound=True, verified=True)
        sender = await service.message_sender(PNID, "wamid.TEST0")
        assert sender is not None and sender.value == ALLOWED
        other = await service.message_sender(PNID, "wamid.TEST1")
        assert other is not None and other.value in (BLOCKED, BLOCKED_BSUID)
        caller = await service.message_sender(PNID, "wacid.0")
        assert caller is not None and caller.value == ALLOWED
        assert (await bot.check_message(PNID, "wamid.TEST0")).known
