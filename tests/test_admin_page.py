"""The admin web page at /admin/: served files and headers, and the page itself driven in a real headless Chromium.

The proxy runs in-process on the aiohttp test server against the real Redis; Playwright drives Debian's
``chromium``. Every wait is one of Playwright's auto-waiting expectations, never a sleep.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Request, expect

from wa_blocklist.proxy.base.phone_format import international
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService

from support import (
    ADMIN_TOKEN,
    PNID,
    TIME_ZONE,
    VIEWER_TOKEN,
    FakeClock,
    OpenAdmin,
    auth,
    blocks_dialog,
    sign_in,
    wrote_recently,
)

NUMBER = "573001234567"
SHOWN = international(NUMBER)  # "+57 300 1234567": how the page shows it
SUPERVISOR = Actor(name="supervisor", source="admin_api")
RED = "rgb(198, 40, 40)"


def local_time_pattern(blocked_at: str) -> re.Pattern[str]:
    """What en-US shows for an ISO UTC instant in TIME_ZONE, e.g. ``Nov 24, 2026, 9:49 PM``."""
    when = datetime.fromisoformat(blocked_at.replace("Z", "+00:00")).astimezone(ZoneInfo(TIME_ZONE))
    hour = when.hour % 12 or 12
    ampm = "AM" if when.hour < 12 else "PM"
    return re.compile(rf"^{when:%b} {when.day}, {when.year}, {hour}:{when:%M}\s{ampm}$")


# ---------------------------------------------------------------- served files and headers (no browser)


async def test_page_files_are_served_with_security_headers(client: TestClient[Any, Any]) -> None:
    redirect = await client.get("/admin", allow_redirects=False)
    assert redirect.status in (301, 308)
    assert redirect.headers["Location"] == "/admin/"

    page = await client.get("/admin/")
    assert page.status == 200
    assert page.content_type == "text/html"
    csp = {
        directive.split()[0]: directive.split()[1:]
        for directive in page.headers["Content-Security-Policy"].split(";")
        if directive.strip()
    }
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert "unsafe" not in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "Set-Cookie" not in page.headers

    html = await page.text()
    assert "<dialog" in html and "Block Numbers" in html
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    assert not re.search(r"\sstyle\s*=", html), "inline style"
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "reference to another origin"

    for name, media_type in [
        ("admin.js", "text/javascript"),
        ("admin.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ]:
        served = await client.get(f"/admin/static/{name}")
        assert served.status == 200, name
        assert served.content_type == media_type
        assert served.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in served.headers["Content-Security-Policy"]
        etag = served.headers["ETag"]
        assert etag.startswith('W/"')
        again = await client.get(f"/admin/static/{name}", headers={"If-None-Match": etag})
        assert again.status == 304
        assert await again.read() == b""
        stale = await client.get(f"/admin/static/{name}", headers={"If-None-Match": 'W/"an-older-version"'})
        assert stale.status == 200

    gzipped = await client.get("/admin/static/admin.js", headers={"Accept-Encoding": "gzip"})
    assert gzipped.headers["Content-Encoding"] == "gzip"
    assert "textContent" in await gzipped.text()

    head = await client.head("/admin/")
    assert head.status == 200


@pytest.mark.parametrize("path", ["/admin/static/index.html", "/admin/static/nope.js", "/admin/static/..%2fapi.py"])
async def test_only_the_page_files_are_served(client: TestClient[Any, Any], path: str) -> None:
    response = await client.get(path)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_admin_api_keeps_working_beside_the_page(client: TestClient[Any, Any]) -> None:
    response = await client.get("/admin/api/session", headers=auth())
    assert response.status == 200
    assert await response.json() == {"name": "supervisor", "role": "admin"}
    refused = await client.get("/admin/api/connectors")
    assert refused.status == 401
    assert (await refused.json())["error"]["code"] == "unauthorized"


# ---------------------------------------------------------------- the page in a browser


async def test_block_and_unblock_a_number(open_admin: OpenAdmin, service: BlocklistService) -> None:
    await wrote_recently(service, PNID, NUMBER)
    page = await open_admin()
    await sign_in(page)
    await expect(page.get_by_text("supervisor · admin")).to_be_visible()

    rows = page.locator("#connectors-body tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0).locator("th, td")).to_have_text(
        ["Ventas Colombia", "+57 601 555 0100", PNID, "0", "Block numbers"]
    )
    await expect(rows.nth(1).locator("th")).to_have_text("Suporte Brasil")
    block_button = page.get_by_role("button", name="Block numbers of Ventas Colombia")
    await expect(block_button).to_have_css("background-color", RED)

    # Keyboard: Enter opens the dialog and focus lands in the number field.
    await block_button.focus()
    await page.keyboard.press("Enter")
    dialog = blocks_dialog(page)
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("Ventas Colombia")
    number_field = dialog.get_by_label("Number", exact=True)
    await expect(number_field).to_be_focused()
    await expect(dialog.get_by_text("No numbers are blocked on this connector.")).to_be_visible()

    # A number that wrote recently: blocked, shown with its date in the browser's time zone.
    await number_field.fill("+57 300 123 4567")
    await dialog.get_by_label("Reason (optional)").fill("Insults to agents")
    await dialog.get_by_role("button", name="Add Number").click()
    block_rows = dialog.locator("tbody tr")
    await expect(block_rows).to_have_count(1)
    entry = await service.get(PNID, NUMBER)
    await expect(block_rows.nth(0).locator("td").nth(0)).to_have_text(SHOWN)
    await expect(block_rows.nth(0).locator("time")).to_have_attribute("datetime", entry.blocked_at)
    await expect(block_rows.nth(0).locator("time")).to_have_text(local_time_pattern(entry.blocked_at))
    await expect(block_rows.nth(0).locator("td").nth(2)).to_have_text("Insults to agents")
    await expect(block_rows.nth(0).locator("td").nth(3)).to_have_text("supervisor")
    await expect(dialog.get_by_role("status")).to_have_text(f"{SHOWN} is now blocked.")
    await expect(number_field).to_have_value("")

    # Blocking is idempotent: the same number again says since when it is blocked...
    await number_field.fill(NUMBER)
    await dialog.get_by_role("button", name="Add Number").click()
    await expect(dialog.get_by_role("status")).to_have_text(
        re.compile(rf"^{re.escape(SHOWN)} was already blocked \(.*2\d\d\d.*\)\.$")
    )
    await expect(block_rows).to_have_count(1)
    # ...and with another reason it says the block keeps its own, and how to change it.
    await number_field.fill(NUMBER)
    await dialog.get_by_label("Reason (optional)").fill("Threats")
    await dialog.get_by_role("button", name="Add Number").click()
    await expect(dialog.get_by_role("status")).to_have_text(
        re.compile(
            rf"^{re.escape(SHOWN)} was already blocked \(.*\) with the reason “Insults to agents”\. Use the pencil"
        )
    )
    assert (await service.get(PNID, NUMBER)).reason == "Insults to agents"

    # One that did not write in the last 24 hours: the API's 409 is shown, nothing is added.
    await number_field.fill("+57 300 999 9999")
    await dialog.get_by_role("button", name="Add Number").click()
    alert = dialog.get_by_role("alert")
    await expect(alert).to_have_text(
        "+57 300 999 9999 has not written to this connector in the last 24 hours, and WhatsApp only allows "
        "blocking numbers that wrote recently."
    )
    await expect(number_field).to_have_attribute("aria-invalid", "true")
    await expect(block_rows).to_have_count(1)
    assert [e.number for e in (await service.list_blocks(PNID))[0]] == [NUMBER]

    # Escape closes, focus returns to the button that opened it, the count is up to date.
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(block_button).to_be_focused()
    await expect(rows.nth(0).locator("td").nth(2)).to_have_text("1")

    # Unblock: a confirmation first; cancelling keeps the block.
    await block_button.click()
    await expect(block_rows).to_have_count(1)
    unblock_button = dialog.get_by_role("button", name=f"Unblock {SHOWN}")
    await unblock_button.click()
    confirm = page.get_by_role("dialog", name="Unblock this number?")
    await expect(confirm).to_be_visible()
    await expect(confirm).to_contain_text(f"{SHOWN} will be able to message Ventas Colombia again")
    await expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(confirm).to_be_hidden()
    await expect(unblock_button).to_be_focused()
    await expect(block_rows).to_have_count(1)
    await page.keyboard.press("Enter")  # the focused X opens the confirmation again; Escape closes only that
    await expect(confirm).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(confirm).to_be_hidden()
    await expect(dialog).to_be_visible()
    await expect(unblock_button).to_be_focused()
    assert await service.get(PNID, NUMBER)

    await unblock_button.click()
    await confirm.get_by_role("button", name="Unblock", exact=True).click()
    await expect(block_rows).to_have_count(0)
    await expect(dialog.get_by_role("status")).to_have_text(f"{SHOWN} is no longer blocked.")
    await expect(dialog.get_by_text("No numbers are blocked on this connector.")).to_be_visible()
    assert (await service.list_blocks(PNID))[0] == []

    await dialog.get_by_role("button", name="Close").click()
    await expect(dialog).to_be_hidden()
    await expect(rows.nth(0).locator("td").nth(2)).to_have_text("0")


async def test_search_and_load_more(open_admin: OpenAdmin, service: BlocklistService, clock: FakeClock) -> None:
    numbers = [f"57300100{i:04d}" for i in range(30)]
    await wrote_recently(service, PNID, *numbers)
    for i, number in enumerate(numbers):
        clock.advance(1)  # distinct block times: the list is newest first
        await service.block(PNID, number, actor=SUPERVISOR, reason="abuse" if i % 2 else "spam")
    page = await open_admin()
    await sign_in(page)
    await page.get_by_role("button", name="Block numbers of Ventas Colombia").click()
    dialog = blocks_dialog(page)
    block_rows = dialog.locator("tbody tr")

    await expect(block_rows).to_have_count(25)
    await expect(block_rows.first.locator("td").first).to_have_text(international(numbers[-1]))
    await expect(dialog.get_by_text("Showing 25 · more available")).to_be_visible()
    await dialog.get_by_role("button", name="Load more").click()
    await expect(block_rows).to_have_count(30)
    await expect(block_rows.nth(25).locator("td").first).to_be_focused()
    await expect(block_rows.last.locator("td").first).to_have_text(international(numbers[0]))
    await expect(dialog.get_by_role("button", name="Load more")).to_be_hidden()
    await expect(dialog.get_by_text("Showing 30", exact=True)).to_be_visible()

    search = dialog.get_by_label("Search")
    await search.fill("abuse")
    await expect(block_rows).to_have_count(15)
    await expect(dialog.locator("tbody td:nth-child(3)")).to_have_text(["abuse"] * 15)

    await search.fill("300 100 0007")
    await search.press("Enter")
    await expect(block_rows).to_have_count(1)
    await expect(block_rows.first.locator("td").first).to_have_text("+57 300 1000007")

    await search.fill("nobody-matches")
    await expect(dialog.get_by_text("No blocked number matches “nobody-matches”.")).to_be_visible()
    await expect(block_rows).to_have_count(0)

    await search.fill("")
    await expect(block_rows).to_have_count(25)


async def test_language_follows_the_switch_and_is_remembered(open_admin: OpenAdmin, service: BlocklistService) -> None:
    page = await open_admin("en-US")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await sign_in(page)

    await page.get_by_role("button", name="Español").click()
    await expect(page.locator("html")).to_have_attribute("lang", "es")
    await expect(page.get_by_role("button", name="Español")).to_have_attribute("aria-pressed", "true")
    await expect(page.get_by_role("heading", name="Conectores de WhatsApp")).to_be_visible()
    await expect(page.locator("#connectors-table thead th")).to_have_text(
        ["Nombre", "Número visible", "ID del número de teléfono", "Números bloqueados", "Acciones"]
    )
    await expect(page.get_by_role("button", name="Cerrar sesión")).to_be_visible()

    # Remembered across a reload (localStorage); the token survives too (sessionStorage, same tab).
    await page.reload()
    await expect(page.get_by_role("heading", name="Conectores de WhatsApp")).to_be_visible()
    await page.get_by_role("button", name="Bloquear números de Ventas Colombia").click()
    dialog = page.get_by_role("dialog", name="Bloquear números")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_role("button", name="Agregar número")).to_be_visible()
    await dialog.get_by_label("Número", exact=True).fill("+57 300 999 9999")
    await dialog.get_by_role("button", name="Agregar número").click()
    # Every word in Spanish: the page's own sentence, not the API's English message under a Spanish summary.
    await expect(dialog.get_by_role("alert")).to_have_text(
        "+57 300 999 9999 no ha escrito a este conector en las últimas 24 horas, y WhatsApp solo permite bloquear "
        "números que escribieron recientemente."
    )

    await page.keyboard.press("Escape")
    await page.get_by_role("button", name="English").click()
    await expect(page.get_by_role("heading", name="WhatsApp connectors")).to_be_visible()
    assert await page.evaluate("localStorage.getItem('wa-blocklist.lang')") == "en"


async def test_spanish_browser_starts_in_spanish(open_admin: OpenAdmin) -> None:
    page = await open_admin("es-CO")
    await expect(page.get_by_role("heading", name="Iniciar sesión")).to_be_visible()
    await expect(page.get_by_label("Token de administrador")).to_be_visible()
    await expect(page.locator("html")).to_have_attribute("lang", "es")


async def test_viewer_sees_lists_without_controls(open_admin: OpenAdmin, service: BlocklistService) -> None:
    await wrote_recently(service, PNID, NUMBER)
    await service.block(PNID, NUMBER, actor=SUPERVISOR, reason="spam")
    page = await open_admin()
    await sign_in(page, VIEWER_TOKEN)
    await expect(page.get_by_text("wallboard · viewer (read-only)")).to_be_visible()
    await expect(page.locator("#connectors-body tr").nth(0).locator("td").nth(2)).to_have_text("1")

    # Viewers are not offered to block: a neutral "View blocked numbers", and a dialog named for what they see.
    await expect(page.get_by_role("button", name=re.compile("Block numbers"))).to_have_count(0)
    view = page.get_by_role("button", name="Blocked numbers of Ventas Colombia")
    await expect(view).to_have_text("View blocked numbers")
    await expect(view).not_to_have_css("background-color", RED)
    await view.click()
    dialog = page.get_by_role("dialog", name="Blocked Numbers")
    await expect(dialog.get_by_role("heading", name="Block Numbers", exact=True)).to_have_count(0)
    await expect(dialog.locator("tbody tr")).to_have_count(1)
    await expect(dialog.locator("tbody tr td")).to_have_text(
        [SHOWN, re.compile(r"\d{4}"), "spam", "supervisor", "Never"]
    )
    await expect(
        dialog.get_by_text("Read-only: your token can see blocked numbers but not change them.")
    ).to_be_visible()
    await expect(dialog.get_by_role("button", name="Add Number")).to_have_count(0)
    await expect(dialog.get_by_label("Number", exact=True)).to_be_hidden()
    await expect(dialog.get_by_role("button", name=re.compile("Unblock|Change"))).to_have_count(0)
    await expect(dialog.get_by_label("Search")).to_be_focused()


async def test_bad_token_is_refused_and_the_token_stays_in_the_tab(open_admin: OpenAdmin) -> None:
    page = await open_admin()
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("Enter your admin token.")

    await page.get_by_label("Admin token").fill("not-a-real-token")
    await page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    await expect(alert).to_have_text("The token was not accepted. Check it and sign in again.")
    await expect(page.get_by_label("Admin token")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_role("heading", name="WhatsApp connectors")).to_be_hidden()
    assert await page.evaluate("sessionStorage.length") == 0

    api_calls: list[Request] = []
    page.on("request", lambda request: api_calls.append(request) if "/admin/api/" in request.url else None)
    await sign_in(page)
    assert await page.evaluate("sessionStorage.getItem('wa-blocklist.admin-token')") == ADMIN_TOKEN
    assert await page.evaluate("JSON.stringify(Object.values(localStorage))") == "[]"
    assert await page.evaluate("document.cookie") == ""
    assert api_calls
    for request in api_calls:
        assert (await request.all_headers())["authorization"] == f"Bearer {ADMIN_TOKEN}"

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.get_by_label("Admin token")).to_be_focused()
    assert await page.evaluate("sessionStorage.length") == 0


async def test_a_saved_token_no_longer_accepted_ends_the_session(open_admin: OpenAdmin) -> None:
    page = await open_admin()
    await sign_in(page)
    await page.evaluate("sessionStorage.setItem('wa-blocklist.admin-token', 'revoked-token')")
    await page.reload()
    await expect(page.get_by_role("alert")).to_contain_text("Your session has ended")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.get_by_role("heading", name="WhatsApp connectors")).to_be_hidden()
    assert await page.evaluate("sessionStorage.length") == 0


async def test_user_text_is_shown_as_text_never_as_html(open_admin: OpenAdmin, service: BlocklistService) -> None:
    reason = '<img src=x onerror="document.title=1"><b>bold</b>'
    await wrote_recently(service, PNID, NUMBER)
    await service.block(PNID, NUMBER, actor=Actor(name="<i>eve</i>", source="cli"), reason=reason)
    page = await open_admin()
    await sign_in(page)
    await page.get_by_role("button", name="Block numbers of Ventas Colombia").click()
    row = blocks_dialog(page).locator("tbody tr")
    await expect(row.locator("td").nth(2)).to_have_text(reason)
    await expect(row.locator("td").nth(3)).to_have_text("<i>eve</i>")
    await expect(row.locator("img, b, i")).to_have_count(0)
    assert await page.title() == "Block Numbers · WhatsApp blocklist"


async def test_temporary_block_from_the_duration_select(
    open_admin: OpenAdmin, service: BlocklistService, clock: FakeClock
) -> None:
    await wrote_recently(service, PNID, NUMBER, "573007654321")
    page = await open_admin()
    await sign_in(page)
    await page.get_by_role("button", name="Block numbers of Ventas Colombia").click()
    dialog = blocks_dialog(page)
    duration = dialog.get_by_label("Duration")
    await expect(duration).to_have_value("")
    await expect(duration.locator("option")).to_have_text(["Permanent", "1 day", "7 days", "30 days"])
    await expect(dialog.get_by_role("columnheader")).to_contain_text(["Expires"])

    # A 7-day block: the API stores the expiry, the Expires column shows it in the browser's time zone.
    await dialog.get_by_label("Number", exact=True).fill("+57 300 123 4567")
    await duration.select_option(label="7 days")
    await dialog.get_by_role("button", name="Add Number").click()
    rows = dialog.locator("tbody tr")
    await expect(rows).to_have_count(1)
    entry = await service.get(PNID, NUMBER)
    assert entry.expires_at_ms == entry.blocked_at_ms + 7 * 86_400_000
    assert entry.expires_at is not None
    expires = rows.nth(0).locator("td").nth(4).locator("time")
    await expect(expires).to_have_attribute("datetime", entry.expires_at)
    await expect(expires).to_have_text(local_time_pattern(entry.expires_at))
    await expect(duration).to_have_value("")  # the form resets to permanent after each block

    # A permanent block (the default) says "Never".
    await dialog.get_by_label("Number", exact=True).fill("+57 300 765 4321")
    await dialog.get_by_role("button", name="Add Number").click()
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0).locator("td").nth(4)).to_have_text("Never")
    assert (await service.get(PNID, "573007654321")).expires_at_ms is None


# ---------------------------------------------------------------- issue 17: language, layout, many connectors, PATCH

ADMIN_API_ERROR_CODES = [
    "bad_request", "invalid_number", "unauthorized", "forbidden", "not_found", "unknown_connector", "not_blocked",
    "not_recently_active", "body_timeout", "body_too_large", "store_unavailable", "too_many_attempts",
    "internal_error",
]  # fmt: skip


def test_the_page_owns_a_sentence_for_every_error_code_in_both_languages() -> None:
    from pathlib import Path

    from wa_blocklist.proxy.admin import auth as admin_auth
    from wa_blocklist.proxy.base import errors

    raised = {
        cls.code
        for module in (errors, admin_auth)
        for cls in vars(module).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.BlocklistError)
        and isinstance(cls.__dict__.get("code"), str)
    }
    webhook_and_csv_only = {"forward_failed", "forward_timeout", "config_invalid", "invalid_csv", "too_many_rows"}
    assert raised - webhook_and_csv_only <= set(ADMIN_API_ERROR_CODES)
    script = (Path(__file__).resolve().parent.parent / "proxy/admin/static/admin.js").read_text()
    english, spanish = script.split("\n  es: {", 1)
    for code in [*ADMIN_API_ERROR_CODES, "network", "generic"]:
        assert f"    error_{code}:" in english, code
        assert f"    error_{code}:" in spanish, code


@pytest.fixture
def config(make_config: Any, request: pytest.FixtureRequest) -> Any:
    """The usual two connectors; ``@pytest.mark.parametrize("config", [N], indirect=True)`` adds N more."""
    extra = getattr(request, "param", 0)

    def more(data: dict[str, Any]) -> None:
        template = data["connectors"][0]
        for i in range(extra):
            data["connectors"].append(
                {**template, "phone_number_id": f"90000000000{i:04d}", "name": f"Sede {i:02d}",
                 "display_number": f"+57 601 555 {i:04d}"}
            )  # fmt: skip

    return make_config(more)


@pytest.mark.parametrize("config", [48], indirect=True)
async def test_many_connectors_are_searched_and_paged(open_admin: OpenAdmin) -> None:
    page = await open_admin()
    await sign_in(page)
    rows = page.locator("#connectors-body tr")
    await expect(rows).to_have_count(20)
    await expect(page.get_by_text("Showing 20 of 50")).to_be_visible()
    await page.get_by_role("button", name="Show more").click()
    await expect(rows).to_have_count(40)
    await expect(rows.nth(20).get_by_role("button")).to_be_focused()
    await page.get_by_role("button", name="Show more").click()
    await expect(rows).to_have_count(50)
    await expect(page.get_by_role("button", name="Show more")).to_be_hidden()

    search = page.get_by_label("Find a connector")
    await search.fill("sede 4")
    await expect(rows).to_have_count(8)  # Sede 40 ... Sede 47
    await search.fill("601 555 0007")  # the digits of a display number, however they are typed
    await expect(rows).to_have_count(1)
    await expect(rows.first.locator("th")).to_have_text("Sede 07")
    await search.fill("900000000000012")
    await expect(rows.first.locator("th")).to_have_text("Sede 12")
    await search.fill("nothing like it")
    await expect(rows).to_have_count(0)
    await expect(page.get_by_text("No connector matches “nothing like it”.")).to_be_visible()
    await search.fill("Brasil")
    await rows.first.get_by_role("button").click()
    await expect(blocks_dialog(page)).to_contain_text("Suporte Brasil")


async def test_a_short_list_of_connectors_has_no_search(open_admin: OpenAdmin) -> None:
    page = await open_admin()
    await sign_in(page)
    await expect(page.locator("#connectors-body tr")).to_have_count(2)
    await expect(page.get_by_label("Find a connector")).to_be_hidden()
    await expect(page.get_by_role("button", name="Show more")).to_be_hidden()


async def test_the_dialog_does_not_move_when_a_message_appears(open_admin: OpenAdmin) -> None:
    page = await open_admin()
    await sign_in(page)
    await page.get_by_role("button", name="Block numbers of Ventas Colombia").click()
    dialog = blocks_dialog(page)
    add = dialog.get_by_role("button", name="Add Number")
    await expect(dialog.get_by_text("No numbers are blocked on this connector.")).to_be_visible()
    before = await add.bounding_box()
    await dialog.get_by_label("Number", exact=True).fill("+57 300 999 9999")
    await add.click()
    await expect(dialog.get_by_role("alert")).to_be_visible()
    after = await add.bounding_box()
    assert before is not None and after is not None
    assert (after["x"], after["y"]) == (before["x"], before["y"])  # the button stays under the pointer


async def test_a_phone_sized_screen_needs_no_sideways_scrolling(
    browser: Browser, client: TestClient[Any, Any], service: BlocklistService
) -> None:
    await wrote_recently(service, PNID, NUMBER, "573007654321")
    await service.block(PNID, NUMBER, actor=SUPERVISOR, reason="A fairly long reason that has to wrap on a phone")
    await service.block(PNID, "573007654321", actor=SUPERVISOR, reason="spam", duration_seconds=86_400)
    context = await browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US", timezone_id=TIME_ZONE)
    try:
        page = await context.new_page()
        await page.goto(str(client.make_url("/admin/")))
        await sign_in(page)
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await page.get_by_role("button", name="Block numbers of Ventas Colombia").click()
        dialog = page.locator("#blocks-dialog")
        await expect(dialog.locator("tbody tr")).to_have_count(2)
        sizes = await dialog.evaluate(
            """d => [d.scrollWidth, d.clientWidth,
                     ...[...d.querySelectorAll('.table-wrap')].map(w => w.scrollWidth - w.clientWidth)]"""
        )
        assert sizes[0] <= sizes[1] and all(extra <= 0 for extra in sizes[2:]), sizes
        for element in [dialog.locator("#add-button"), dialog.locator(".button-unblock").first,
                        dialog.locator("#search-input")]:  # fmt: skip
            box = await element.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        await expect(dialog.locator("tbody tr").first.locator(".block-reason")).to_have_text("spam")
        # Each row reads as a small card: the labels come with the values.
        label = await dialog.locator(".block-reason").first.evaluate(
            "cell => getComputedStyle(cell, '::before').content"
        )
        assert label == '"Reason: "'
        await dialog.locator(".button-unblock").first.click()
        await page.locator("#confirm-ok").click()
        await expect(dialog.locator("tbody tr")).to_have_count(1)
    finally:
        await context.close()


async def test_a_block_is_changed_from_the_page(open_admin: OpenAdmin, service: BlocklistService) -> None:
    await wrote_recently(service, PNID, NUMBER)
    await service.block(PNID, NUMBER, actor=SUPERVISOR, reason="spam")
    page = await open_admin()
    await sign_in(page)
    await page.get_by_role("button", name="Block numbers of Ventas Colombia").click()
    dialog = blocks_dialog(page)
    row = dialog.locator("tbody tr")
    await expect(row).to_have_count(1)
    change = dialog.get_by_role("button", name=f"Change the block of {SHOWN}")
    await change.click()
    editor = page.get_by_role("dialog", name="Change block")
    await expect(editor).to_contain_text(SHOWN)
    reason = editor.get_by_label("Reason (optional)")
    await expect(reason).to_be_focused()
    await expect(reason).to_have_value("spam")
    expiry = editor.get_by_label("Expires")
    await expect(expiry.locator("option")).to_have_text(["Keep as it is", "Permanent", "1 day", "7 days", "30 days"])

    # Cancel changes nothing and returns to the pencil.
    await reason.fill("nothing")
    await editor.get_by_role("button", name="Cancel").click()
    await expect(editor).to_be_hidden()
    await expect(change).to_be_focused()
    assert (await service.get(PNID, NUMBER)).reason == "spam"

    await change.click()
    await reason.fill("threats")
    await expiry.select_option(label="7 days")
    await editor.get_by_role("button", name="Save").click()
    await expect(editor).to_be_hidden()
    await expect(dialog.get_by_role("status")).to_have_text(f"The block of {SHOWN} was changed.")
    await expect(row.locator("td").nth(2)).to_have_text("threats")
    entry = await service.get(PNID, NUMBER)
    assert entry.reason == "threats" and entry.expires_at is not None
    await expect(row.locator("td").nth(4).locator("time")).to_have_attribute("datetime", entry.expires_at)
    await expect(change).to_be_focused()
    records, _ = await service.audit(PNID)
    assert records[0]["action"] == "update" and records[0]["by"] == "supervisor"

    # Back to permanent; in Spanish, the whole dialog speaks Spanish.
    await page.keyboard.press("Escape")
    await page.get_by_role("button", name="Español").click()
    await page.get_by_role("button", name="Bloquear números de Ventas Colombia").click()
    dialog = page.get_by_role("dialog", name="Bloquear números")
    row = dialog.locator("tbody tr")
    await dialog.get_by_role("button", name=f"Cambiar el bloqueo de {SHOWN}").click()
    editor = page.get_by_role("dialog", name="Cambiar bloqueo")
    await editor.get_by_label("Vence").select_option(label="Permanente")
    await editor.get_by_role("button", name="Guardar").click()
    await expect(dialog.get_by_role("status")).to_have_text(f"Se cambió el bloqueo de {SHOWN}.")
    await expect(row.locator("td").nth(4)).to_have_text("Nunca")
    assert (await service.get(PNID, NUMBER)).expires_at is None


async def test_a_change_that_fails_says_so_in_the_dialog(open_admin: OpenAdmin, service: BlocklistService) -> None:
    await wrote_recently(service, PNID, NUMBER)
    await service.block(PNID, NUMBER, actor=SUPERVISOR, reason="spam")
    page = await open_admin("es-CO")
    await page.get_by_label("Token de administrador").fill(ADMIN_TOKEN)
    await page.get_by_role("button", name="Iniciar sesión").click()
    await page.get_by_role("button", name="Bloquear números de Ventas Colombia").click()
    await page.get_by_role("button", name=f"Cambiar el bloqueo de {SHOWN}").click()
    await service.unblock(PNID, NUMBER, actor=SUPERVISOR)  # someone else unblocked it meanwhile
    editor = page.get_by_role("dialog", name="Cambiar bloqueo")
    await editor.get_by_role("button", name="Guardar").click()
    await expect(editor.get_by_role("alert")).to_have_text(f"{SHOWN} no está bloqueado en este conector.")
    await expect(editor).to_be_visible()
