"""The admin page behind an authenticating reverse proxy (``admin.proxy_auth``), in a real headless Chromium.

oauth2-proxy (or nginx with ``auth_request``) adds ``X-Auth-Request-Email`` / ``X-Auth-Request-Groups`` to every
request it passes; the browser context adds them here the same way, from the loopback address the config trusts. The
page must not ask such a person for a token, and must not send one (an ``Authorization`` header outranks the proxy's
identity).
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Request, expect

from wa_blocklist.proxy.blocklist.service import BlocklistService
from wa_blocklist.proxy.config import Config

from support import PNID, ConfigFactory, OpenAdmin, blocks_dialog, sign_in, wrote_recently

NUMBER = "573001234567"


@pytest.fixture
def config(make_config: ConfigFactory) -> Config:
    def behind_the_reverse_proxy(data: dict[str, Any]) -> None:
        data["admin"]["proxy_auth"] = {
            "trusted_addresses": ["127.0.0.1"],
            "roles": [{"email": "ana@example.com", "role": "admin"}, {"group": "wallboard", "role": "viewer"}],
        }

    return make_config(behind_the_reverse_proxy)


async def test_a_person_signed_in_by_the_reverse_proxy_gets_the_page_without_a_token(
    open_admin: OpenAdmin, service: BlocklistService
) -> None:
    await wrote_recently(service, PNID, NUMBER)
    sent_authorization: list[str] = []
    page = await open_admin(headers={"X-Auth-Request-Email": "ana@example.com"})
    page.on("request", lambda request: _note_authorization(request, sent_authorization))
    await expect(page.get_by_role("heading", name="WhatsApp connectors")).to_be_visible()
    await expect(page.get_by_text("ana@example.com · admin")).to_be_visible()
    await expect(page.get_by_label("Admin token")).to_be_hidden()
    # the person can work: block a number, and the block carries their address
    await page.get_by_role("button", name="Block numbers of Ventas Colombia").click()
    dialog = blocks_dialog(page)
    await dialog.get_by_label("Number", exact=True).fill("+57 300 123 4567")
    await dialog.get_by_role("button", name="Add Number").click()
    await expect(dialog.locator("tbody tr").nth(0).locator("td").nth(3)).to_have_text("ana@example.com")
    entry = await service.get(PNID, NUMBER)
    assert entry is not None and entry.blocked_by == "ana@example.com"
    assert sent_authorization == []


async def test_a_person_without_a_role_is_told_so_and_can_still_use_a_token(open_admin: OpenAdmin) -> None:
    page = await open_admin(headers={"X-Auth-Request-Email": "eve@example.com"})
    await expect(page.get_by_label("Admin token")).to_be_visible()
    await expect(page.get_by_role("alert")).to_be_visible()
    await sign_in(page)


async def test_without_the_reverse_proxy_the_page_asks_for_a_token(open_admin: OpenAdmin) -> None:
    page = await open_admin()
    await expect(page.get_by_label("Admin token")).to_be_visible()
    await sign_in(page)


def _note_authorization(request: Request, seen: list[str]) -> None:
    if "authorization" in request.headers:
        seen.append(request.url)
