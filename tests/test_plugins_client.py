"""The bots' BlocklistClient in both modes: direct (store + BlocklistService) and HTTP (the real admin API)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient

from wa_blocklist.plugins.client import BlocklistClient, DirectBlocklistClient, InboundUser, ReferenceCheck
from wa_blocklist.proxy.base.errors import (
    Forbidden,
    InvalidNumber,
    NotBlocked,
    NotRecentlyActive,
    StoreUnavailable,
    Unauthorized,
    UnknownConnector,
)
from wa_blocklist.proxy.blocklist.service import BlocklistService
from wa_blocklist.proxy.config import Config
from wa_blocklist.proxy.graph import identity

from plugin_support import (
    ALLOWED,
    ALLOWED_BSUID,
    BLOCKED,
    BLOCKED_BSUID,
    block,
    blocklist_fixture,  # noqa: F401  (the blocklist fixture, both modes)
)
from support import (
    ADMIN_TOKEN,
    PNID,
    PNID_BR,
    VIEWER_TOKEN,
    Proxy,
    base_config_data,
    free_port,
    redis_alive,
    wrote_recently,
)


async def test_is_blocked_in_every_written_form(blocklist: BlocklistClient, service: BlocklistService) -> None:
    await block(service, BLOCKED)
    assert await blocklist.is_blocked(PNID, BLOCKED)
    assert await blocklist.is_blocked(PNID, "+57 300 123 4567")
    assert await blocklist.is_blocked(PNID, "300 123 4567")  # local form, the connector's default country
    assert not await blocklist.is_blocked(PNID, ALLOWED)
    assert not await blocklist.is_blocked(PNID_BR, BLOCKED)  # blocks are per connector


async def test_block_list_unblock_round_trip(blocklist: BlocklistClient, service: BlocklistService) -> None:
    await wrote_recently(service, PNID, BLOCKED)
    entry, created = await blocklist.block(PNID, "+57 300 123 4567", reason="insults")
    assert created and entry.number == BLOCKED and entry.reason == "insults" and entry.type == "phone"
    again, created_again = await blocklist.block(PNID, BLOCKED)
    assert not created_again and again.blocked_at == entry.blocked_at
    entries, cursor = await blocklist.list(PNID)
    assert [e.number for e in entries] == [BLOCKED] and cursor is None
    assert (await service.get(PNID, BLOCKED)).reason == "insults"  # the same store the proxy reads
    await blocklist.unblock(PNID, BLOCKED)
    assert not await blocklist.is_blocked(PNID, BLOCKED)
    assert await blocklist.list(PNID) == ([], None)


async def test_errors_are_the_proxy_error_classes(blocklist: BlocklistClient, service: BlocklistService) -> None:
    with pytest.raises(NotRecentlyActive):
        await blocklist.block(PNID, ALLOWED)
    with pytest.raises(NotBlocked):
        await blocklist.unblock(PNID, ALLOWED)
    with pytest.raises(UnknownConnector):
        await blocklist.is_blocked("999999999", BLOCKED)
    with pytest.raises(InvalidNumber):
        await blocklist.block(PNID, "call me maybe")
    assert await service.list_blocks(PNID) == ([], None)


async def test_message_and_join_request_checks(
    blocklist: BlocklistClient, service: BlocklistService, client: TestClient[Any, Any]
) -> None:
    await service.record_inbound(
        PNID,
        [InboundUser(wa_id=BLOCKED), InboundUser(wa_id=ALLOWED)],
        messages=[("wamid.B", 0), ("wamid.A", 1)],
        join_requests=[("JR_B", 0)],
    )
    await block(service, BLOCKED)
    assert await blocklist.check_message(PNID, "wamid.B") == ReferenceCheck(True, True, "refuse")
    assert await blocklist.check_message(PNID, "wamid.A") == ReferenceCheck(True, False, "refuse")
    assert await blocklist.check_message(PNID, "wamid.unseen") == ReferenceCheck(False, False, "refuse")
    assert await blocklist.check_join_request("JR_B") == ReferenceCheck(True, True, "refuse")
    assert await blocklist.check_join_request("JR_unseen") == ReferenceCheck(False, False, "refuse")
    assert not (await blocklist.check_message(PNID_BR, "wamid.B")).known  # learned on the other connector
    with pytest.raises(UnknownConnector):
        await blocklist.check_message("999999999", "wamid.B")
    assert await blocklist.connector_regions() == {PNID: "CO", PNID_BR: "BR"}
    assert await blocklist.any_blocked(PNID, identity.recipient_readings("+57 300 123 4567"))
    assert not await blocklist.any_blocked(PNID, identity.recipient_readings(ALLOWED))
    assert not await blocklist.any_blocked(PNID, [])
    # The admin API endpoints behind the HTTP mode are readable with a viewer token.
    headers = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    async with client.get(f"/admin/api/connectors/{PNID}/messages/wamid.B/check", headers=headers) as response:
        assert response.status == 200
        assert await response.json() == {"known": True, "blocked": True, "unknown_references": "refuse"}
    async with client.get("/admin/api/join_requests/JR_B/check", headers=headers) as response:
        assert (await response.json())["blocked"] is True


async def test_paging_and_search(blocklist: BlocklistClient, service: BlocklistService) -> None:
    numbers = [f"57300100000{i}" for i in range(3)]
    for number in numbers:
        await block(service, number)
    first, cursor = await blocklist.list(PNID, limit=2)
    assert len(first) == 2 and cursor is not None
    rest, end = await blocklist.list(PNID, limit=2, cursor=cursor)
    assert sorted(e.number for e in first + rest) == numbers and end is None
    found, _ = await blocklist.list(PNID, q="1000002")
    assert [e.number for e in found] == [numbers[2]]


async def test_direct_mode_follows_wa_id_bsuid_links(config: Config, clock: Any, service: BlocklistService) -> None:
    await wrote_recently(service, PNID, BLOCKED, bsuid=BLOCKED_BSUID)  # the webhook showed both: linked
    await block(service, BLOCKED)
    async with BlocklistClient.direct(config, clock=clock) as blocklist:
        assert await blocklist.is_blocked(PNID, BLOCKED_BSUID)
        assert await blocklist.blocked_users(PNID, [InboundUser(bsuid=BLOCKED_BSUID), InboundUser(wa_id=ALLOWED)]) == [
            True,
            False,
        ]


async def test_direct_mode_records_inbound_users_for_the_24_hour_rule(
    config: Config, clock: Any, service: BlocklistService
) -> None:
    async with BlocklistClient.direct(config, clock=clock) as blocklist:
        assert await blocklist.blocked_users(PNID, [InboundUser(wa_id=BLOCKED)]) == [False]
        with pytest.raises(NotRecentlyActive):  # only checked, not recorded
            await blocklist.block(PNID, BLOCKED)
        assert await blocklist.blocked_users(PNID, [InboundUser(wa_id=BLOCKED)], record_inbound=True) == [False]
        entry, created = await blocklist.block(PNID, BLOCKED)
        assert created and entry.blocked_by == "bot" and entry.source == "plugin"
        assert await blocklist.blocked_users(PNID, [InboundUser(wa_id=BLOCKED)], record_inbound=True) == [True]
    assert (await service.get(PNID, BLOCKED)).blocked_by == "bot"


async def test_direct_mode_opens_the_store_from_a_config_file(
    config: Config, tmp_path: Any, service: BlocklistService, redis_url: str
) -> None:
    await block(service, BLOCKED)
    path = tmp_path / "config.yaml"
    path.write_text(
        f"store: {{redis_url: '{redis_url}'}}\n"
        "connectors:\n"
        f"  - {{phone_number_id: '{PNID}', name: V, app_secret: s, verify_token: v,"
        " forward_webhooks_to: 'http://127.0.0.1:9/x', default_country: CO}\n"
    )
    async with BlocklistClient.direct(path) as blocklist:
        assert await blocklist.is_blocked(PNID, BLOCKED)


async def test_http_mode_follows_wa_id_bsuid_links(client: TestClient[Any, Any], service: BlocklistService) -> None:
    await wrote_recently(service, PNID, BLOCKED, bsuid=BLOCKED_BSUID)  # the webhook showed both: linked
    await block(service, BLOCKED)
    async with BlocklistClient.http(str(client.make_url("")).rstrip("/"), ADMIN_TOKEN) as blocklist:
        assert await blocklist.is_blocked(PNID, BLOCKED_BSUID)
        assert not await blocklist.is_blocked(PNID, ALLOWED_BSUID)
        assert await blocklist.blocked_users(PNID, [InboundUser(bsuid=BLOCKED_BSUID), InboundUser(wa_id=ALLOWED)]) == [
            True,
            False,
        ]


async def test_http_mode_auth_errors(client: TestClient[Any, Any], service: BlocklistService) -> None:
    await wrote_recently(service, PNID, BLOCKED)
    base = str(client.make_url(""))
    async with BlocklistClient.http(base, "not-a-valid-token") as wrong:
        with pytest.raises(Unauthorized) as err:
            await wrong.is_blocked(PNID, BLOCKED)
        assert "not-a-valid-token" not in str(err.value)
    async with BlocklistClient.http(base, VIEWER_TOKEN) as viewer:
        assert not await viewer.is_blocked(PNID, BLOCKED)  # viewers may check
        with pytest.raises(Forbidden):
            await viewer.block(PNID, BLOCKED)
    assert await service.list_blocks(PNID) == ([], None)


async def test_http_mode_unreachable_api_is_store_unavailable() -> None:
    async with BlocklistClient.http(f"http://127.0.0.1:{free_port()}", "secret-token-0001") as blocklist:
        with pytest.raises(StoreUnavailable) as err:
            await blocklist.is_blocked(PNID, BLOCKED)
    assert err.value.status == 503 and "secret-token-0001" not in str(err.value)
    assert "secret-token-0001" not in repr(blocklist)


async def test_client_must_be_started(config: Config) -> None:
    with pytest.raises(RuntimeError, match="not started"):
        await BlocklistClient.direct(config).is_blocked(PNID, BLOCKED)
    with pytest.raises(ValueError, match="http"):
        BlocklistClient.http("ftp://example", "token")


async def test_direct_mode_over_a_running_service(service: BlocklistService) -> None:
    await block(service, BLOCKED)
    async with DirectBlocklistClient.from_service(service) as blocklist:
        assert await blocklist.is_blocked(PNID, BLOCKED)
    assert await blocklist.is_blocked(PNID, BLOCKED)  # closing it left the proxy's store open


# --- a bot never owns the proxy's store -----------------------------------------------------------------------------


@pytest.fixture
def embedded_config_file(tmp_path: Path) -> Path:
    """A config on the embedded store (``store.data_dir`` next to the file), as the shipped config.yaml has it."""
    data = base_config_data("")
    data["store"] = {"redis_url": "", "data_dir": "./data"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
async def test_a_bot_never_owns_the_proxys_embedded_store(embedded_config_file: Path) -> None:
    data_dir = embedded_config_file.parent / "data"
    # No proxy yet: the bot's client says how to fix it, and starts no redis-server of its own.
    early = BlocklistClient.direct(embedded_config_file, actor="bot")
    with pytest.raises(StoreUnavailable, match=r"no running proxy serves the embedded store") as caught:
        await early.start()
    assert "wa-blocklist serve" in caught.value.message and "store.redis_url" in caught.value.message
    assert redis_alive(data_dir) is None

    proxy = Proxy(embedded_config_file, free_port())
    try:
        proxy.start()
        redis_pid = redis_alive(data_dir)
        assert redis_pid is not None
        for _ in range(2):  # a bot starting and stopping, twice
            async with BlocklistClient.direct(embedded_config_file, actor="bot") as bot:
                await bot.blocked_users(PNID, [InboundUser(wa_id=BLOCKED)], record_inbound=True)
                await bot.block(PNID, BLOCKED, reason="from the bot")
                assert await bot.is_blocked(PNID, "+57 300 123 4567")
        # The bot is gone; the proxy's store is not.
        assert redis_alive(data_dir) == redis_pid
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{proxy.port}/readyz") as ready:
            assert ready.status == 200 and (await ready.json())["status"] == "ready"
        status, entry = proxy.call("GET", f"/admin/api/connectors/{PNID}/blocks/{BLOCKED}")
        assert status == 200 and entry["blocked_by"] == "bot" and entry["reason"] == "from the bot"
        status, _ = proxy.call("DELETE", f"/admin/api/connectors/{PNID}/blocks/{BLOCKED}")
        assert status == 204

        # A bot that stays up while the proxy restarts: refused (fail closed) while the store is gone, then served
        # again by the restarted proxy's store, without restarting the bot.
        async with BlocklistClient.direct(embedded_config_file, actor="bot") as bot:
            await bot.blocked_users(PNID, [InboundUser(wa_id=ALLOWED)], record_inbound=True)
            await bot.block(PNID, ALLOWED)
            proxy.stop()
            assert redis_alive(data_dir) is None
            with pytest.raises(StoreUnavailable):
                await bot.is_blocked(PNID, ALLOWED)
            proxy.start()
            assert await bot.is_blocked(PNID, ALLOWED)  # the block was kept, and the bot reconnected by itself
    finally:
        proxy.stop()


async def test_a_direct_client_on_an_unreachable_redis_says_where_without_the_password(config: Config) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://bot:s3cret-pass@127.0.0.1:{port}/0"
    store = dataclasses.replace(config.store, redis_url=url, timeout_seconds=1)
    client = BlocklistClient.direct(dataclasses.replace(config, store=store))
    with pytest.raises(StoreUnavailable) as caught:
        await client.start()
    assert f"redis://127.0.0.1:{port}/0" in caught.value.message
    assert "s3cret-pass" not in caught.value.message
    await client.close()


async def test_starting_a_direct_client_never_blocks_the_event_loop(config: Config) -> None:
    # A "Redis" that accepts connections and never answers: start() waits for its PING reply. The accept callback
    # runs on this loop, so it can only run while start() is still pending if start() yields to the loop.
    accepted = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        accepted.set()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = dataclasses.replace(config.store, redis_url=f"redis://127.0.0.1:{port}/0", timeout_seconds=2)
    client = BlocklistClient.direct(dataclasses.replace(config, store=store))
    starting = asyncio.create_task(client.start())
    try:
        await asyncio.wait_for(accepted.wait(), timeout=10)
        assert not starting.done()  # the loop served the accept while start() was waiting for Redis
        with pytest.raises(StoreUnavailable, match="cannot be reached"):
            await starting
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
        await client.close()
