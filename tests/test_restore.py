"""Restoring an export (admin API and CLI) and updating a block's reason or expiry (PATCH), on a real Redis."""

from __future__ import annotations

import csv
import getpass
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wa_blocklist.proxy.base.csvsafe import strip_bidi
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService, strip_controls

from support import PNID, PNID_BR, VIEWER_TOKEN, FakeClock, auth, base_config_data, wrote_recently

REPO = Path(__file__).resolve().parent.parent
EXPORT = f"/admin/api/connectors/{PNID}/blocks.csv"
RESTORE_BR = f"/admin/api/connectors/{PNID_BR}/blocks/restore"
ORIGINAL = Actor("ana@example.com", "admin_api")
DAY = 86_400


async def seed(service: BlocklistService, clock: FakeClock) -> None:
    """Three blocks made days apart by different people: permanent, temporary, and a formula-like reason."""
    await wrote_recently(service, PNID, "573001111111")
    await service.block(PNID, "573001111111", actor=ORIGINAL, reason="insultos")
    clock.advance(2 * DAY)
    await wrote_recently(service, PNID, "573002222222")
    await service.block(PNID, "573002222222", actor=Actor("luis", "cli"), reason="spam", duration_seconds=30 * DAY)
    clock.advance(DAY)
    await wrote_recently(service, PNID, "573003333333")
    await service.block(PNID, "573003333333", actor=ORIGINAL, reason="=1+1 in a spreadsheet")


def as_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_an_export_restores_as_it_was_on_another_connector(
    client: TestClient[Any, Any], service: BlocklistService, clock: FakeClock
) -> None:
    await seed(service, clock)
    exported = await (await client.get(EXPORT, headers=auth())).text()
    # Nobody ever wrote to the Brazilian connector: an import would refuse every row (24-hour rule)...
    imported = await client.post(f"/admin/api/connectors/{PNID_BR}/blocks/import", data=exported, headers=auth())
    assert (await imported.json())["summary"]["refused"] == 3
    # ...a restore puts them all back, with their reasons, expiry, who and when.
    dry = await client.post(RESTORE_BR + "?dry_run=true", data=exported, headers=auth())
    assert (await dry.json())["summary"] == {"blocked": 3, "already_blocked": 0, "refused": 0}
    assert (await service.list_blocks(PNID_BR))[0] == []
    clock.advance(3600)
    restored = await client.post(RESTORE_BR, data=exported, headers=auth())
    assert restored.status == 200
    assert (await restored.json())["summary"] == {"blocked": 3, "already_blocked": 0, "refused": 0}

    original, copy = (await service.list_blocks(PNID))[0], (await service.list_blocks(PNID_BR))[0]
    keep = ("number", "type", "reason", "blocked_at", "blocked_by", "source", "expires_at")
    assert [{k: e.to_json()[k] for k in keep} for e in copy] == [{k: e.to_json()[k] for k in keep} for e in original]
    assert copy[0].reason == "=1+1 in a spreadsheet"  # the export's formula guard is taken off again
    again = await (await client.get(f"/admin/api/connectors/{PNID_BR}/blocks.csv", headers=auth())).text()
    assert as_rows(again) == as_rows(exported)  # export → restore → export is the identity

    # The audit trail says who restored, through which face, and when; the entries keep the original blocker.
    records = (await (await client.get(f"/admin/api/connectors/{PNID_BR}/audit", headers=auth())).json())["records"]
    assert {(r["action"], r["by"], r["source"]) for r in records} == {("block", "supervisor", "admin_api_restore")}
    assert not {r["at"] for r in records} & {e.blocked_at for e in copy}
    # The blocks apply: the gateway's own check says so.
    check = await client.get(f"/admin/api/connectors/{PNID_BR}/check/573002222222", headers=auth())
    assert (await check.json())["blocked"] is True

    # A second restore changes nothing.
    twice = await (await client.post(RESTORE_BR, data=exported, headers=auth())).json()
    assert twice["summary"] == {"blocked": 0, "already_blocked": 3, "refused": 0}


async def test_a_restore_refuses_expired_and_future_rows_and_viewers(
    client: TestClient[Any, Any], service: BlocklistService, clock: FakeClock
) -> None:
    await seed(service, clock)
    exported = await (await client.get(EXPORT, headers=auth())).text()
    clock.advance(31 * DAY)  # the 30-day block has ended meanwhile
    report = await (await client.post(RESTORE_BR, data=exported, headers=auth())).json()
    assert report["summary"] == {"blocked": 2, "already_blocked": 0, "refused": 1}
    refused = [r for r in report["rows"] if r["outcome"] == "refused"]
    assert refused[0]["number"] == "573002222222" and "future" in refused[0]["reason"]

    future = "number,reason,blocked_at\r\n573004444444,x,2999-01-01T00:00:00Z\r\n"
    report = await (await client.post(RESTORE_BR, data=future, headers=auth())).json()
    assert report["rows"][0]["outcome"] == "refused" and report["rows"][0]["reason"] == "blocked_at is in the future"
    bad = "number,blocked_at\r\n573004444444,yesterday\r\n"
    report = await (await client.post(RESTORE_BR, data=bad, headers=auth())).json()
    assert report["rows"][0]["reason"].startswith("blocked_at must be an ISO 8601 date-time")

    viewer = await client.post(RESTORE_BR, data=exported, headers=auth(VIEWER_TOKEN))
    assert viewer.status == 403 and (await viewer.json())["error"]["code"] == "forbidden"


async def test_patch_changes_reason_and_expiry_explicitly(
    client: TestClient[Any, Any], service: BlocklistService, clock: FakeClock
) -> None:
    await wrote_recently(service, PNID, "573001234567")
    url = f"/admin/api/connectors/{PNID}/blocks/+57%20300%20123%204567"
    first = await client.post(
        f"/admin/api/connectors/{PNID}/blocks", json={"number": "+57 300 123 4567", "reason": "spam"}, headers=auth()
    )
    assert first.status == 201
    # Blocking again with another reason keeps the block as it is (200): changing it is PATCH.
    again = await client.post(
        f"/admin/api/connectors/{PNID}/blocks", json={"number": "573001234567", "reason": "insults"}, headers=auth()
    )
    assert again.status == 200 and (await again.json())["reason"] == "spam"

    changed = await client.patch(url, json={"reason": "insults", "duration": "7d"}, headers=auth())
    assert changed.status == 200
    body = await changed.json()
    assert body["reason"] == "insults" and body["expires_at"] is not None
    assert body["blocked_at"] == (await first.json())["blocked_at"]  # still the same block
    assert (await service.get(PNID, "573001234567")).reason == "insults"

    permanent = await (await client.patch(url, json={"expires_at": None}, headers=auth())).json()
    assert permanent["expires_at"] is None and permanent["reason"] == "insults"
    only_reason = await (await client.patch(url, json={"reason": "  threats  "}, headers=auth())).json()
    assert only_reason["reason"] == "threats" and only_reason["expires_at"] is None

    records = (await (await client.get(f"/admin/api/connectors/{PNID}/audit", headers=auth())).json())["records"]
    assert [r["action"] for r in records[:3]] == ["update", "update", "update"]
    assert records[0]["reason"] == "threats" and records[0]["by"] == "supervisor"

    for body_, code in (
        ({}, "bad_request"),
        ({"number": "573001234567"}, "bad_request"),
        ({"duration": "7d", "expires_at": "2030-01-01T00:00:00Z"}, "bad_request"),
        ({"duration": "forever"}, "bad_request"),
        ({"reason": 5}, "bad_request"),
        ({"reason": "x" * 501}, "bad_request"),
    ):
        resp = await client.patch(url, json=body_, headers=auth())
        assert (resp.status, (await resp.json())["error"]["code"]) == (400, code), body_
    missing = await client.patch(f"/admin/api/connectors/{PNID}/blocks/573009999999", json={"reason": "x"},
                                 headers=auth())  # fmt: skip
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "not_blocked"
    viewer = await client.patch(url, json={"reason": "x"}, headers=auth(VIEWER_TOKEN))
    assert viewer.status == 403
    clock.advance(1)
    assert (await service.get(PNID, "573001234567")).reason == "threats"


async def test_patch_to_a_past_expiry_is_refused_and_an_expired_block_is_not_there(
    client: TestClient[Any, Any], service: BlocklistService, clock: FakeClock
) -> None:
    await wrote_recently(service, PNID, "573001234567")
    await service.block(PNID, "573001234567", actor=ORIGINAL, duration_seconds=3600)
    url = f"/admin/api/connectors/{PNID}/blocks/573001234567"
    past = await client.patch(url, json={"expires_at": "2001-01-01T00:00:00Z"}, headers=auth())
    assert past.status == 400
    clock.advance(3601)
    gone = await client.patch(url, json={"reason": "late"}, headers=auth())
    assert gone.status == 404


@pytest.mark.slow
def test_cli_export_then_restore_round_trip(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base_config_data(redis_url)))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wa_blocklist.proxy.cli", *args, "--config", str(path)],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )  # fmt: skip

    blocked = cli("block", "+57 300 123 4567", "--connector", PNID, "--reason", "spam", "--force", "--by", "ana")
    assert blocked.returncode == 0
    assert cli("block", "+57 300 765 4321", "--connector", PNID, "--duration", "7d", "--force").returncode == 0
    exported = cli("export", "--connector", PNID)
    assert exported.returncode == 0
    backup = tmp_path / "backup.csv"
    backup.write_text(exported.stdout)

    plain = cli("import", str(backup), "--connector", PNID_BR)
    assert plain.returncode == 1 and "2 refused" in plain.stdout  # the 24-hour rule, row by row
    dry = cli("import", str(backup), "--connector", PNID_BR, "--restore", "--dry-run")
    assert dry.stdout.strip().endswith("2 would be restored, 0 already blocked, 0 refused (dry run: nothing changed)")
    done = cli("import", str(backup), "--connector", PNID_BR, "--restore", "--by", "maria")
    assert done.returncode == 0 and done.stdout.strip() == "2 restored, 0 already blocked, 0 refused"
    again = cli("export", "--connector", PNID_BR)
    assert as_rows(again.stdout) == as_rows(exported.stdout)
    assert {r["blocked_by"] for r in as_rows(again.stdout)} == {"ana", f"cli:{getpass.getuser()}"}


async def test_a_name_with_control_characters_still_restores(
    client: TestClient[Any, Any], service: BlocklistService
) -> None:
    await wrote_recently(service, PNID, "573001234567")
    await service.block(PNID, "573001234567", actor=Actor("bot\x00\x1b[31m\u202e", "plugin"), reason="a\x00b\x7fc")
    exported = await (await client.get(EXPORT, headers=auth())).text()
    assert "\x00" not in exported and "\x1b" not in exported and "\u202e" not in exported
    report = await (await client.post(RESTORE_BR, data=exported.encode(), headers=auth())).json()
    assert report["summary"]["blocked"] == 1
    restored = await service.get(PNID_BR, "573001234567")
    assert (restored.blocked_by, restored.reason) == ("bot[31m", "abc")


# ---------------------------------------------------------------- properties (hypothesis, derandomized)

PROPERTIES = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)  # the codec leaves out lone surrogates
cell_text = st.text(alphabet=st.sampled_from("ab =+-@＝＋'\",;\t\r\n\u202e "), max_size=30) | any_text


async def clear(service: BlocklistService, pnid: str) -> None:
    for entry in (await service.list_blocks(pnid, limit=500))[0]:
        await service.unblock(pnid, entry.number, actor=ORIGINAL)


@PROPERTIES
@given(
    reasons=st.lists(cell_text, min_size=1, max_size=3),
    # Names as tokens and people have them: no surrounding whitespace (CSV import trims every cell), no bidirectional
    # or other control characters (exports drop them: test_a_name_with_control_characters_still_restores).
    names=st.lists(cell_text.map(lambda s: strip_controls(strip_bidi(s)).strip()).filter(bool), min_size=3, max_size=3),
    days=st.lists(st.none() | st.integers(min_value=1, max_value=300), min_size=3, max_size=3),
)
async def test_export_then_restore_gives_the_same_export_for_any_text(
    client: TestClient[Any, Any],
    service: BlocklistService,
    reasons: list[str],
    names: list[str],
    days: list[int | None],
) -> None:
    await clear(service, PNID)
    await clear(service, PNID_BR)
    for i, (reason, name, lasts) in enumerate(zip(reasons, names, days, strict=False)):
        number = f"57300555{i:04d}"
        await wrote_recently(service, PNID, number)
        await service.block(PNID, number, actor=Actor(name, "admin_api"), reason=reason,
                            duration_seconds=None if lasts is None else lasts * DAY)  # fmt: skip
    exported = await (await client.get(EXPORT, headers=auth())).text()
    report = await (await client.post(RESTORE_BR, data=exported.encode(), headers=auth())).json()
    assert report["summary"] == {"blocked": len(reasons), "already_blocked": 0, "refused": 0}, report
    again = await (await client.get(f"/admin/api/connectors/{PNID_BR}/blocks.csv", headers=auth())).text()
    assert as_rows(again) == as_rows(exported), (exported, again)
    original, copy = (await service.list_blocks(PNID))[0], (await service.list_blocks(PNID_BR))[0]
    assert [(e.reason, e.blocked_by, e.blocked_at_ms, e.expires_at_ms) for e in copy] == [
        (e.reason, e.blocked_by, e.blocked_at_ms, e.expires_at_ms) for e in original
    ]


@PROPERTIES
@given(body=st.binary(max_size=300) | cell_text.map(str.encode))
async def test_any_restore_body_is_a_report_or_a_clean_4xx(client: TestClient[Any, Any], body: bytes) -> None:
    resp = await client.post(RESTORE_BR + "?dry_run=true", data=body, headers=auth())
    assert resp.status in (200, 400, 413), await resp.text()
    answer = await resp.json()
    assert set(answer) == ({"dry_run", "summary", "rows"} if resp.status == 200 else {"error"})


@PROPERTIES
@given(
    body=st.dictionaries(
        st.sampled_from(["reason", "duration", "expires_at", "number", "x"]),
        st.none() | st.booleans() | st.integers() | any_text,
        max_size=3,
    )
)
async def test_any_patch_body_changes_the_block_or_is_a_clean_4xx(
    client: TestClient[Any, Any], service: BlocklistService, body: dict[str, Any]
) -> None:
    if not await service.store.get(PNID, "573001234567", service.now_ms()):
        await wrote_recently(service, PNID, "573001234567")
        await service.block(PNID, "573001234567", actor=ORIGINAL, reason="spam")
    before = await service.get(PNID, "573001234567")
    resp = await client.patch(f"/admin/api/connectors/{PNID}/blocks/573001234567", json=body, headers=auth())
    assert resp.status in (200, 400), await resp.text()
    after = await service.get(PNID, "573001234567")
    if resp.status == 400:
        assert after == before and (await resp.json())["error"]["code"] == "bad_request"
    else:
        assert (await resp.json())["blocked_at"] == before.blocked_at
