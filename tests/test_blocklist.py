"""The blocklist service over a real Redis: 24-hour rule, variants, BSUID links, paging, atomicity."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from wa_blocklist.proxy.base.errors import BadRequest, InvalidNumber, NotBlocked, NotRecentlyActive, UnknownConnector
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService, InboundUser
from wa_blocklist.proxy.config import Config
from wa_blocklist.proxy.store.client import open_store

from support import PNID, PNID_BR, FakeClock, wrote_recently

SUPERVISOR = Actor("supervisor", "test")


@pytest.fixture
async def svc(config: Config, clock: FakeClock) -> AsyncIterator[BlocklistService]:
    async with open_store(config.store) as store:
        yield BlocklistService(store, config, clock)


async def test_block_requires_a_message_in_the_last_24_hours(svc: BlocklistService, clock: FakeClock) -> None:
    with pytest.raises(NotRecentlyActive, match="has not messaged this connector in the last 24 hours"):
        await svc.block(PNID, "+57 300 123 4567", actor=SUPERVISOR)

    await wrote_recently(svc, PNID, "573001234567")
    clock.advance(24 * 3600 - 1)  # one second before the window closes
    entry, created = await svc.block(PNID, "+57 300 123 4567", actor=SUPERVISOR, reason="spam")
    assert created
    assert (entry.number, entry.reason, entry.blocked_by, entry.source) == (
        "573001234567",
        "spam",
        "supervisor",
        "test",
    )

    await wrote_recently(svc, PNID, "573001112233")
    clock.advance(24 * 3600 + 1)
    with pytest.raises(NotRecentlyActive):
        await svc.block(PNID, "573001112233", actor=SUPERVISOR)


async def test_activity_is_per_connector(svc: BlocklistService) -> None:
    await wrote_recently(svc, PNID_BR, "573001234567")
    with pytest.raises(NotRecentlyActive):
        await svc.block(PNID, "573001234567", actor=SUPERVISOR)
    await svc.block(PNID_BR, "573001234567", actor=SUPERVISOR)
    assert await svc.is_blocked(PNID_BR, svc.parse_number(PNID_BR, "+57 300 123 4567"))
    assert not await svc.is_blocked(PNID, svc.parse_number(PNID, "+57 300 123 4567"))


async def test_force_skips_the_rule(svc: BlocklistService) -> None:
    entry, created = await svc.block(PNID, "+57 300 999 8877", actor=SUPERVISOR, force=True)
    assert created and entry.number == "573009998877"


async def test_block_is_idempotent_and_keeps_the_first_entry(svc: BlocklistService, clock: FakeClock) -> None:
    await wrote_recently(svc, PNID, "573001234567")
    first, created = await svc.block(PNID, "573001234567", actor=SUPERVISOR, reason="first")
    clock.advance(60)
    again, created_again = await svc.block(PNID, "+57 300 123 4567", actor=Actor("other", "test"), reason="second")
    assert created and not created_again
    assert again == first
    entries, _ = await svc.list_blocks(PNID)
    assert len(entries) == 1


async def test_every_variant_matches_one_block(svc: BlocklistService) -> None:
    # WhatsApp reports this Brazilian user without the 9; the supervisor types it with the 9.
    await wrote_recently(svc, PNID_BR, "551112345678")
    entry, _ = await svc.block(PNID_BR, "(11) 91234-5678", actor=SUPERVISOR)
    assert entry.number == "5511912345678"
    for form in ["+55 11 91234-5678", "5511912345678", "551112345678", "+55 (11) 1234-5678"]:
        assert await svc.is_blocked(PNID_BR, svc.parse_number(PNID_BR, form)), form
        assert (await svc.get(PNID_BR, form)).number == "5511912345678"
    assert not await svc.is_blocked(PNID_BR, svc.parse_number(PNID_BR, "+55 11 91234-5679"))
    removed = await svc.unblock(PNID_BR, "551112345678", actor=SUPERVISOR)
    assert removed.number == "5511912345678"
    assert not await svc.is_blocked(PNID_BR, svc.parse_number(PNID_BR, "5511912345678"))


async def test_mexico_and_argentina_variants(svc: BlocklistService) -> None:
    await wrote_recently(svc, PNID, "5215512345678", "5491112345678")
    await svc.block(PNID, "+52 55 1234 5678", actor=SUPERVISOR)
    await svc.block(PNID, "+54 11 1234 5678", actor=SUPERVISOR)
    from wa_blocklist.proxy.graph.identity import from_wa_id

    assert await svc.is_blocked(PNID, from_wa_id("5215512345678"))
    assert await svc.is_blocked(PNID, from_wa_id("5491112345678"))


async def test_bsuid_blocks_and_links(svc: BlocklistService) -> None:
    bsuid = "US.13491208655302741918"
    # The user writes with both identities: the link is learned.
    await svc.record_inbound(PNID, [InboundUser(wa_id="16505551234", bsuid=bsuid)])
    await svc.block(PNID, "+1 650 555 1234", actor=SUPERVISOR)
    # A later message carries only the BSUID (username users): still blocked.
    assert await svc.record_inbound(PNID, [InboundUser(bsuid=bsuid)]) == [True]
    assert await svc.is_blocked(PNID, svc.parse_number(PNID, bsuid))
    # An unrelated BSUID is not.
    assert await svc.record_inbound(PNID, [InboundUser(bsuid="US.999")]) == [False]


async def test_block_by_bsuid_catches_the_linked_number(svc: BlocklistService) -> None:
    bsuid = "CO.9f8e7d6c5b4a"
    await svc.record_inbound(PNID, [InboundUser(bsuid=bsuid)])
    entry, _ = await svc.block(PNID, bsuid, actor=SUPERVISOR)
    assert (entry.number, entry.kind) == (bsuid, "bsuid")
    flags = await svc.record_inbound(
        PNID, [InboundUser(wa_id="573004445566", bsuid=bsuid), InboundUser("573001110000")]
    )
    assert flags == [True, False]
    assert await svc.is_blocked(PNID, svc.parse_number(PNID, "+57 300 444 5566"))


async def test_recent_activity_through_the_linked_identity_allows_the_block(svc: BlocklistService) -> None:
    await svc.record_inbound(PNID, [InboundUser(wa_id="573004445566", bsuid="CO.abc123")])
    await svc.record_inbound(PNID, [InboundUser(bsuid="CO.abc123")])
    _, created = await svc.block(PNID, "CO.abc123", actor=SUPERVISOR)
    assert created
    assert await svc.last_inbound_ms(PNID, "+57 300 444 5566") is not None


async def test_unblock_unknown_and_errors(svc: BlocklistService) -> None:
    with pytest.raises(NotBlocked):
        await svc.unblock(PNID, "+57 300 123 4567", actor=SUPERVISOR)
    with pytest.raises(NotBlocked):
        await svc.get(PNID, "573001234567")
    with pytest.raises(UnknownConnector):
        await svc.block("999", "+57 300 123 4567", actor=SUPERVISOR)
    with pytest.raises(InvalidNumber):
        await svc.block(PNID, "not a number", actor=SUPERVISOR)
    with pytest.raises(BadRequest, match="reason is too long"):
        await svc.block(PNID, "+57 300 123 4567", actor=SUPERVISOR, reason="x" * 501)
    with pytest.raises(BadRequest, match="limit"):
        await svc.list_blocks(PNID, limit=0)
    with pytest.raises(BadRequest, match="cursor"):
        await svc.list_blocks(PNID, cursor="garbage!!")


async def _block_many(svc: BlocklistService, clock: FakeClock, count: int, start: int = 0) -> list[str]:
    numbers = [f"5730{start + i:08d}" for i in range(count)]
    await wrote_recently(svc, PNID, *numbers)
    for number in numbers:
        clock.advance(0.001)
        await svc.block(PNID, number, actor=SUPERVISOR, reason=f"reason {number[-3:]}", force=False)
    return numbers


async def test_list_is_newest_first_with_cursor_paging(svc: BlocklistService, clock: FakeClock) -> None:
    numbers = await _block_many(svc, clock, 120)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        entries, cursor = await svc.list_blocks(PNID, limit=50, cursor=cursor)
        seen += [e.number for e in entries]
        pages += 1
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(numbers))


async def test_paging_is_stable_under_concurrent_changes(svc: BlocklistService, clock: FakeClock) -> None:
    numbers = await _block_many(svc, clock, 60)
    first, cursor = await svc.list_blocks(PNID, limit=20)
    # While the supervisor pages: a new block (newer than everything) and the removal of an unseen entry.
    await _block_many(svc, clock, 1, start=500)
    await svc.unblock(PNID, numbers[10], actor=SUPERVISOR)
    rest: list[str] = []
    while cursor:
        entries, cursor = await svc.list_blocks(PNID, limit=20, cursor=cursor)
        rest += [e.number for e in entries]
    got = [e.number for e in first] + rest
    expected = [n for n in reversed(numbers) if n != numbers[10]]
    assert got == expected  # no duplicate, nothing skipped, the new block appears only on a fresh listing


async def test_entries_with_the_same_timestamp_page_correctly(svc: BlocklistService) -> None:
    numbers = [f"57301{i:07d}" for i in range(7)]
    await wrote_recently(svc, PNID, *numbers)
    for number in numbers:  # the clock does not move: every entry has the same blocked_at
        await svc.block(PNID, number, actor=SUPERVISOR)
    got: list[str] = []
    cursor = None
    while True:
        entries, cursor = await svc.list_blocks(PNID, limit=2, cursor=cursor)
        got += [e.number for e in entries]
        if cursor is None:
            break
    assert sorted(got) == sorted(numbers) and len(got) == len(numbers)


async def test_search_by_digits_reason_and_author(svc: BlocklistService, clock: FakeClock) -> None:
    numbers = await _block_many(svc, clock, 30)
    entries, cursor = await svc.list_blocks(PNID, q="00000012")
    assert [e.number for e in entries] == [numbers[12]] and cursor is None
    entries, _ = await svc.list_blocks(PNID, q="+57 30 0000 0012")
    assert [e.number for e in entries] == [numbers[12]]
    entries, _ = await svc.list_blocks(PNID, q="REASON 02")
    assert {e.number for e in entries} == {n for n in numbers if n[-3:].startswith("02")}
    entries, _ = await svc.list_blocks(PNID, q="nobody-wrote-this")
    assert entries == []
    entries, _ = await svc.list_blocks(PNID, q="SUPERVISOR", limit=5)
    assert len(entries) == 5


async def test_concurrent_blocks_of_one_number_create_one_entry(svc: BlocklistService) -> None:
    await wrote_recently(svc, PNID, "573001234567")
    forms = ["+57 300 123 4567", "573001234567", "300 123 4567", "+57 (300) 123-4567"] * 5
    results = await asyncio.gather(*(svc.block(PNID, f, actor=SUPERVISOR) for f in forms))
    assert sum(created for _, created in results) == 1
    assert len({entry for entry, _ in results}) == 1
    counts = await svc.connectors()
    assert {c["phone_number_id"]: c["blocked_count"] for c in counts} == {PNID: 1, PNID_BR: 0}


async def test_listeners_hear_changes_and_cannot_break_them(svc: BlocklistService) -> None:
    heard: list[tuple[str, str, str]] = []

    async def listener(action: str, pnid: str, entry: object) -> None:
        heard.append((action, pnid, entry.number))
        raise RuntimeError("listener failure must not undo the change")

    svc.add_listener(listener)
    await wrote_recently(svc, PNID, "573001234567")
    await svc.block(PNID, "573001234567", actor=SUPERVISOR)
    await svc.block(PNID, "573001234567", actor=SUPERVISOR)  # idempotent: no second event
    await svc.unblock(PNID, "573001234567", actor=SUPERVISOR)
    assert heard == [("block", PNID, "573001234567"), ("unblock", PNID, "573001234567")]


async def test_audit_records_who_did_what(svc: BlocklistService) -> None:
    await wrote_recently(svc, PNID, "573001234567")
    await svc.block(PNID, "573001234567", actor=SUPERVISOR, reason="harassment")
    await svc.unblock(PNID, "573001234567", actor=Actor("lead", "cli"), reason="appealed")
    records, cursor = await svc.audit(PNID)
    assert cursor is None
    assert [{k: v for k, v in r.items() if k not in ("id", "at")} for r in records] == [
        {
            "action": "unblock",
            "number": "573001234567",
            "type": "phone",
            "by": "lead",
            "source": "cli",
            "reason": "appealed",
        },
        {
            "action": "block",
            "number": "573001234567",
            "type": "phone",
            "by": "supervisor",
            "source": "test",
            "reason": "harassment",
        },
    ]
    assert records[0]["at"].endswith("Z")
    first, cursor = await svc.audit(PNID, limit=1)
    assert cursor == first[0]["id"]
    second, cursor = await svc.audit(PNID, limit=1, cursor=cursor)
    assert [r["action"] for r in second] == ["block"] and cursor is None
