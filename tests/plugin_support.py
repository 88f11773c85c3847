"""Shared by the plugin tests: a blocklist client in both modes, Meta webhook payloads, blocking a user.

Import the fixture into a test module with ``from plugin_support import blocklist_fixture  # noqa: F401``;
it is named ``blocklist`` in tests.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from botbuilder.schema import ChannelAccount, ConversationAccount, ConversationReference  # type: ignore[import-untyped]

from wa_blocklist.plugins.client import BlocklistClient
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService, InboundUser
from wa_blocklist.proxy.config import Config

from fakes import FakeGraph
from support import ADMIN_TOKEN, PNID, FakeClock, wrote_recently

BLOCKED = "573001234567"  # a Colombian mobile, as a wa_id
BLOCKED_BSUID = "CO.13491208655302741918"  # BSUIDs are CC. + digits (pywa tells them apart from group ids so)
ALLOWED = "573007654321"
ALLOWED_BSUID = "CO.13491208655302749999"


@pytest.fixture(name="blocklist", params=["direct", "http"])
async def blocklist_fixture(
    request: pytest.FixtureRequest, config: Config, clock: FakeClock, client: TestClient[Any, Any]
) -> AsyncIterator[BlocklistClient]:
    """A started client of the blocklist: direct (its own store connection) or HTTP (the running admin API)."""
    found: BlocklistClient
    if request.param == "direct":
        found = BlocklistClient.direct(config, actor="test-bot", clock=clock)
    else:
        found = BlocklistClient.http(str(client.make_url("")), ADMIN_TOKEN)
    async with found:
        yield found


async def block(service: BlocklistService, wa_id: str = BLOCKED, bsuid: str = "", pnid: str = PNID) -> None:
    """The user writes (so Meta's 24-hour rule allows it), then a supervisor blocks them."""
    await wrote_recently(service, pnid, wa_id, bsuid=bsuid)
    await service.block(pnid, wa_id, actor=Actor("supervisor", "test"), reason="abuse")


async def two_wrote_one_blocked(service: BlocklistService) -> None:
    """BLOCKED and ALLOWED each wrote one message (``wamid.FROM_BLOCKED``, ``wamid.FROM_ALLOWED``), then a supervisor
    blocked BLOCKED: the set-up of the plugins' read-receipt and recipient checks."""
    await service.record_inbound(
        PNID,
        [InboundUser(wa_id=BLOCKED), InboundUser(wa_id=ALLOWED)],
        messages=[("wamid.FROM_BLOCKED", 0), ("wamid.FROM_ALLOWED", 1)],
    )
    await block(service, BLOCKED)


def whatsapp_conversation(user: str, pnid: str = PNID) -> ConversationReference:
    """A Bot Framework conversation with ``user`` on the WhatsApp channel of connector ``pnid``."""
    return ConversationReference(
        channel_id="whatsapp",
        service_url="https://whatsapp.example",
        user=ChannelAccount(id=user),
        bot=ChannelAccount(id=pnid),
        conversation=ConversationAccount(id=f"conversation-{user}"),
    )


def messages_payload(pnid: str, *senders: tuple[str, str, str]) -> dict[str, Any]:
    """A ``messages`` webhook with one text message per ``(wa_id, bsuid, text)``, as Meta sends it."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "576015550100", "phone_number_id": pnid},
                            "contacts": [
                                {"profile": {"name": f"User {i}"}, "wa_id": wa_id, "user_id": bsuid}
                                for i, (wa_id, bsuid, _) in enumerate(senders)
                            ],
                            "messages": [
                                {
                                    "from": wa_id,
                                    "from_user_id": bsuid,
                                    "id": f"wamid.TEST{i}",
                                    "timestamp": "1764038400",
                                    "type": "text",
                                    "text": {"body": text},
                                }
                                for i, (wa_id, bsuid, text) in enumerate(senders)
                            ],
                        },
                    }
                ],
            }
        ],
    }


def statuses_payload(pnid: str, *recipients: str) -> dict[str, Any]:
    """A ``messages`` webhook carrying one ``delivered`` status per recipient wa_id."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "576015550100", "phone_number_id": pnid},
                            "contacts": [{"wa_id": wa_id} for wa_id in recipients],
                            "statuses": [
                                {
                                    "id": f"wamid.OUT{i}",
                                    "status": "delivered",
                                    "timestamp": "1764038400",
                                    "recipient_id": wa_id,
                                }
                                for i, wa_id in enumerate(recipients)
                            ],
                        },
                    }
                ],
            }
        ],
    }


def answer_sends(fake_graph: FakeGraph, path: str, wa_id: str, message_id: str, **extra: Any) -> str:
    """Have the fake Graph answer POSTs to ``path`` as Meta answers a send to ``wa_id`` (``extra`` fields after
    messaging_product); the fake Graph's base URL."""
    assert fake_graph.server is not None
    fake_graph.respond(
        "POST",
        path,
        200,
        {
            "messaging_product": "whatsapp",
            **extra,
            "contacts": [{"input": wa_id, "wa_id": wa_id}],
            "messages": [{"id": message_id}],
        },
    )
    return str(fake_graph.server.make_url("")).rstrip("/")


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
