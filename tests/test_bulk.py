"""CSV import and export through the admin API and the CLI: per-row reports, nothing half-applied, row limits."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from wa_blocklist.proxy.blocklist.csv_io import MAX_ROWS
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService
from wa_blocklist.proxy.cli import ProgressBar

from support import PNID, PNID_BR, VIEWER_TOKEN, FakeClock, auth, base_config_data, record, wrote_recently

IMPORT = f"/admin/api/connectors/{PNID}/blocks/import"
EXPORT = f"/admin/api/connectors/{PNID}/blocks.csv"
REPO = Path(__file__).resolve().parent.parent
ACTIVE = ["573001111111", "573002222222", "573003333333"]
SUPERVISOR = Actor("supervisor", "test")

MIXED = (
    "number,reason,duration\r\n"
    "+57 300 111 1111,spam calls,\r\n"  # row 2: blocked, permanent
    "573002222222,insults,7d\r\n"  # row 3: blocked for 7 days
    "\r\n"  # row 4: blank, skipped
    "+57 300 999 9999,never wrote,\r\n"  # row 5: refused, 24-hour rule
    "not a number,,\r\n"  # row 6: refused, bad number
    "(300) 111-1111,same as row 2,\r\n"  # row 7: refused, duplicate of row 2 (the default country is CO)
    "573003333333,already,\r\n"  # row 8: already blocked
    "573004444444,bad duration,3 years\r\n"  # row 9: refused, bad duration
)


async def post_csv(client: TestClient[Any, Any], body: str | bytes, query: str = "", token: str | None = None) -> Any:
    data = body.encode() if isinstance(body, str) else body
    headers = {**auth(*([token] if token else [])), "Content-Type": "text/csv"}
    return await client.post(IMPORT + query, data=data, headers=headers)


async def test_import_reports_every_row(
    client: TestClient[Any, Any], service: BlocklistService, clock: FakeClock
) -> None:
    await wrote_recently(service, PNID, *ACTIVE)
    await service.block(PNID, "573003333333", actor=SUPERVISOR)
    resp = await post_csv(client, MIXED)
    assert resp.status == 200
    report = await resp.json()
    assert report["dry_run"] is False
    assert report["summary"] == {"blocked": 2, "already_blocked": 1, "refused": 4}
    rows = {r["row"]: r for r in report["rows"]}
    assert sorted(rows) == [2, 3, 5, 6, 7, 8, 9]
    assert [rows[n]["outcome"] for n in (2, 3, 8)] == ["blocked", "blocked", "already_blocked"]
    assert rows[5]["reason"].startswith("24-hour rule")
    assert "is not a phone number" in rows[6]["reason"] and rows[6]["number"] == "not a number"
    assert rows[7]["reason"] == "duplicate of row 2 in this file"
    assert rows[9]["reason"].startswith("duration must be")

    first = await service.get(PNID, "573001111111")
    assert (first.reason, first.expires_at_ms, first.blocked_by, first.source) == (
        "spam calls",
        None,
        "supervisor",
        "admin_api_import",
    )
    assert (await service.get(PNID, "573002222222")).expires_at_ms == service.now_ms() + 7 * 86_400_000
    assert len((await service.list_blocks(PNID))[0]) == 3


async def test_dry_run_writes_nothing(client: TestClient[Any, Any], service: BlocklistService) -> None:
    await wrote_recently(service, PNID, *ACTIVE)
    await service.block(PNID, "573003333333", actor=SUPERVISOR)
    dry = await (await post_csv(client, MIXED, "?dry_run=true")).json()
    assert dry["dry_run"] is True
    assert [e.number for e in (await service.list_blocks(PNID))[0]] == ["573003333333"]
    audit, _ = await service.audit(PNID)
    assert len(audit) == 1
    real = await (await post_csv(client, MIXED)).json()
    assert [(r["row"], r["outcome"]) for r in dry["rows"]] == [(r["row"], r["outcome"]) for r in real["rows"]]
    assert (await post_csv(client, MIXED, "?dry_run=maybe")).status == 400


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"number,reason\n573001111111,ok\n573002222222,caf\xe9\n", "row 3: the file is not UTF-8"),
        (b"", "the file is empty"),
        (b"phone,reason\n573001111111,x\n", "row 1: the header must name a 'number' column"),
        (b"number,colour\n573001111111,red\n", "row 1: unknown column(s) 'colour'"),
        (b"number,number\n573001111111,1\n", "row 1: a column is named twice"),
        (b"number,duration,expires_at\n", "either a duration or an expires_at column"),
        (b"number,reason\n573001111111,ok\n573002222222,too,many\n", "row 3: 3 fields but the header has 2"),
        (b'number,reason\n573001111111,"unterminated\n', "not valid CSV"),
        (b'number,reason\n573001111111,"a"b\n', "row 2: not valid CSV"),
        (b"number\x00,reason\n", "NUL bytes"),
    ],
)
async def test_malformed_file_is_refused_whole(
    client: TestClient[Any, Any], service: BlocklistService, body: bytes, message: str
) -> None:
    await wrote_recently(service, PNID, *ACTIVE)
    resp = await post_csv(client, body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_csv"
    assert message in error["message"]
    assert (await service.list_blocks(PNID))[0] == []  # not even the good rows before the bad one


async def test_row_limit(client: TestClient[Any, Any], service: BlocklistService) -> None:
    await wrote_recently(service, PNID, *ACTIVE)
    body = "number\n573001111111\n" + "".join(f"5730{i:08d}\n" for i in range(MAX_ROWS))
    resp = await post_csv(client, body)
    assert resp.status == 413
    error = (await resp.json())["error"]
    assert error == {"code": "too_many_rows", "message": f"the file has more than {MAX_ROWS} rows; split it into "
                     "several imports"}  # fmt: skip
    assert (await service.list_blocks(PNID))[0] == []


async def test_roles_and_connectors(client: TestClient[Any, Any]) -> None:
    assert (await post_csv(client, "number\n573001111111\n", token=VIEWER_TOKEN)).status == 403
    resp = await client.post("/admin/api/connectors/999999999/blocks/import", data=b"number\n", headers=auth())
    assert resp.status == 404
    assert (await client.get("/admin/api/connectors/999999999/blocks.csv", headers=auth())).status == 404
    assert (await client.get(EXPORT)).status == 401
    assert (await client.get(EXPORT, headers=auth(VIEWER_TOKEN))).status == 200  # viewers may read


async def test_export_and_import_back(
    client: TestClient[Any, Any], service: BlocklistService, clock: FakeClock
) -> None:
    await wrote_recently(service, PNID, *ACTIVE)
    await service.block(PNID, ACTIVE[0], actor=SUPERVISOR, reason='=HYPERLINK("x")')
    clock.advance(1)
    await service.block(PNID, ACTIVE[1], actor=SUPERVISOR, reason="a, \"quoted\"\nreason",
                        expires_at_ms=service.now_ms() + 86_400_000)  # fmt: skip
    resp = await client.get(EXPORT, headers=auth())
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert resp.headers["Content-Disposition"] == f'attachment; filename="blocklist-{PNID}.csv"'
    text = await resp.text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["number"] for r in rows] == [ACTIVE[1], ACTIVE[0]]  # newest first
    assert rows[0]["reason"] == 'a, "quoted" reason'
    assert rows[0]["expires_at"] == (await service.get(PNID, ACTIVE[1])).expires_at
    assert rows[1]["reason"] == '\'=HYPERLINK("x")'  # a spreadsheet must not run it as a formula
    assert rows[1]["expires_at"] == "" and rows[1]["source"] == "test" and rows[1]["type"] == "phone"

    # The export imports back as is: into the same connector every row is already blocked...
    again = await (await post_csv(client, text)).json()
    assert again["summary"] == {"blocked": 0, "already_blocked": 2, "refused": 0}
    # ...and into an empty one the rules still apply (nobody wrote to the Brazilian connector).
    resp = await client.post(f"/admin/api/connectors/{PNID_BR}/blocks/import", data=text.encode(), headers=auth())
    report = await resp.json()
    assert report["summary"]["refused"] == 2
    assert all(r["reason"].startswith("24-hour rule") for r in report["rows"])


def test_progress_bar_draws_in_place() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, width=10)
    for done in range(0, 201):
        bar.update(done, 200)
    bar.close()
    frames = out.getvalue().split("\r")[1:]
    assert len(frames) == 101  # once per percent, not once per row
    assert frames[0] == "[..........]   0% 0/200 rows"
    assert frames[-1] == "[##########] 100% 200/200 rows\n"


# ---------------------------------------------------------------- the CLI, as a real process on a real Redis


@pytest.fixture
def config_file(tmp_path: Path, redis_url: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base_config_data(redis_url)))
    return path


def cli(config: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wa_blocklist.proxy.cli", *args, "--config", str(config)],
        capture_output=True, text=True, cwd=REPO, timeout=60, **kwargs,
    )  # fmt: skip


@pytest.mark.slow
async def test_cli_import_and_export(config_file: Path, tmp_path: Path) -> None:
    await record(config_file, "573001111111", "573002222222", "573003333333")
    source = tmp_path / "in.csv"
    source.write_text(MIXED)

    dry = cli(config_file, "import", str(source), "--connector", PNID, "--dry-run")
    assert dry.returncode == 1  # some rows are refused
    assert "3 would be blocked, 0 already blocked, 4 refused (dry run: nothing changed)" in dry.stdout
    assert "row 5: +57 300 999 9999: refused: 24-hour rule" in dry.stdout
    assert dry.stderr == ""  # no progress bar: stderr is not a terminal
    assert cli(config_file, "export", "--connector", PNID).stdout.count("\n") == 1  # the header alone

    done = cli(config_file, "import", str(source), "--connector", PNID, "--json", "--by", "ana")
    report = json.loads(done.stdout)
    assert report["summary"] == {"blocked": 3, "already_blocked": 0, "refused": 4}

    exported = cli(config_file, "export", "--connector", PNID)
    assert exported.returncode == 0
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert sorted(r["number"] for r in rows) == ["573001111111", "573002222222", "573003333333"]
    assert {r["blocked_by"] for r in rows} == {"ana"} and {r["source"] for r in rows} == {"cli_import"}
    back = tmp_path / "back.csv"
    back.write_text(exported.stdout)
    again = cli(config_file, "import", str(back), "--connector", PNID)
    assert again.returncode == 0 and "0 blocked, 3 already blocked, 0 refused" in again.stdout

    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"number,reason\n573001111111,\xff\n")
    refused = cli(config_file, "import", str(bad), "--connector", PNID)
    assert refused.returncode == 1 and "row 2: the file is not UTF-8 text; nothing was imported" in refused.stderr
    missing = cli(config_file, "import", str(tmp_path / "nope.csv"), "--connector", PNID)
    assert missing.returncode == 1 and "cannot read" in missing.stderr


@pytest.mark.slow
async def test_cli_progress_bar_on_a_terminal(config_file: Path, tmp_path: Path) -> None:
    await record(config_file, *(f"5730{i:08d}" for i in range(300)))
    source = tmp_path / "big.csv"
    source.write_text("number\n" + "".join(f"+5730{i:08d}\n" for i in range(300)))
    done, text = run_on_a_terminal(config_file, "import", str(source), "--connector", PNID)
    assert done.returncode == 0, done.stdout
    assert "300 blocked, 0 already blocked, 0 refused" in done.stdout
    assert "\r[" in text and "100% 300/300 rows" in text


def run_on_a_terminal(config: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the CLI with its stderr on a pseudo-terminal; returns the result and what the terminal showed."""
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "wa_blocklist.proxy.cli", *args, "--config", str(config)]
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=follower, text=True, cwd=REPO)
    finally:
        os.close(follower)
    screen = b""
    try:
        while True:  # read while it runs, so a full terminal buffer never stalls it
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process closed its end and everything was read
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(leader)
    stdout, _ = process.communicate(timeout=60)
    return subprocess.CompletedProcess(command, process.returncode, stdout, ""), screen.decode()


FORMULA_REASONS = ["x;=1+1;", "ok,=cmd|' /C calc'!A0", "a; -2+3", "a, @SUM(1)", "tab\t+1", "x;＝1+1", "x; '=y"]
RLO = "\u202e"


async def test_export_is_safe_whatever_separator_a_spreadsheet_splits_on(
    client: TestClient[Any, Any], service: BlocklistService, clock: FakeClock
) -> None:
    numbers = [f"57300555{i:04d}" for i in range(len(FORMULA_REASONS) + 1)]
    await wrote_recently(service, PNID, *numbers)
    for number, reason in zip(numbers, FORMULA_REASONS, strict=False):
        await service.block(PNID, number, actor=SUPERVISOR, reason=reason)
        clock.advance(1)
    resp = await client.post(
        f"/admin/api/connectors/{PNID}/blocks", json={"number": numbers[-1], "reason": f"paid{RLO}gnp.exe"},
        headers=auth(),
    )  # fmt: skip
    assert (await resp.json())["reason"] == "paidgnp.exe"  # bidi controls never stored, so never shown by the API
    text = await (await client.get(EXPORT, headers=auth())).text()
    assert RLO not in text
    for separator in (",", ";", "\t"):  # as Excel opens a .csv in en-US, in es-CO / pt-BR, and a tab-separated one
        for row in csv.reader(io.StringIO(text), delimiter=separator):
            for cell in row:
                assert cell.strip(' "')[:1] not in ("=", "+", "-", "@", "＝", "＋", "－", "＠"), (separator, cell)
    # A restore takes the text back exactly.
    from wa_blocklist.proxy.base.csvsafe import unguard

    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(unguard(r["reason"]) for r in rows) == sorted(
        [" ".join(r.split()) for r in FORMULA_REASONS] + ["paidgnp.exe"]
    )


@settings(max_examples=300, derandomize=True, database=None)
@given(st.text(alphabet=st.sampled_from("ab =+-@＝,;\t\r\n'\u202e\u2066 ")))
def test_guarded_cells_never_start_a_formula_and_unguard_is_exact(text: str) -> None:
    from wa_blocklist.proxy.base.csvsafe import guard, strip_bidi, unguard

    guarded = guard(text)
    assert unguard(guarded) == strip_bidi(text)
    assert RLO not in guarded and "\u2066" not in guarded
    for segment in re.split(r"[,;\t\r\n]", guarded):
        assert segment.lstrip(" ")[:1] not in ("=", "+", "-", "@", "＝", "＋", "－", "＠")
