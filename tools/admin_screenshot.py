"""Take the README's screenshot of the admin page's Block Numbers dialog (``docs/admin-block-numbers.png``).

Runs the real proxy app on a free local port with the embedded Redis in a temporary folder, seeds a few block
entries through the blocklist service (each number "wrote recently" first, as Meta's rule requires), then drives
Debian's Chromium with Playwright: sign in, open a connector, add one more number through the form, screenshot.

Usage::

    .venv/bin/python tools/admin_screenshot.py [--output docs/admin-block-numbers.png] [--lang en|es]
        [--width 1360 --height 840]

The docs use three: ``docs/admin-block-numbers.png`` (default), ``docs/admin-block-numbers-es.png`` (``--lang es``)
and ``docs/admin-block-numbers-phone.png`` (``--width 390 --height 844``).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from playwright.async_api import async_playwright, expect

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.appkeys import SERVICE
from wa_blocklist.proxy.blocklist.service import Actor, InboundUser
from wa_blocklist.proxy.config import parse_config

TOKEN = "screenshot-admin-token"
PNID = "106540352242922"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# (hours ago, number, reason, who) — the dialog lists them newest first.
SEED = [
    (30.0, "+57 310 555 0142", "Repeated insults to agents", "laura.gomez"),
    (20.5, "+57 315 555 0199", "Spam: crypto investment offers", "supervisor"),
    (6.25, "+57 300 555 0187", "Threatening messages", "andres.rios"),
    (1.5, "+57 320 555 0110", "", "supervisor"),
]
ADDED_BY_FORM = ("+57 301 555 0175", "Fraudulent payment links")
# What Spanish-speaking supervisors would have typed, for the Spanish screenshot.
REASONS_ES = {
    "Repeated insults to agents": "Insultos repetidos a los agentes",
    "Spam: crypto investment offers": "Spam: ofertas de inversión en criptomonedas",
    "Threatening messages": "Mensajes amenazantes",
    "Fraudulent payment links": "Enlaces de pago fraudulentos",
    "": "",
}
ALSO_ON_BRAZIL = "+57 300 555 0187"  # blocked on Suporte Brasil too: its row says so
FLOOD = "+57 318 555 0163"  # a temporary automatic block by flood protection (source auto)
BRAZIL = "215589473650118"


class ManualClock:
    """A clock the script moves back in time to give the seeded entries different block dates."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def build_config(data_dir: str) -> Any:
    connector = {"app_secret": "x" * 32, "verify_token": "verify", "forward_webhooks_to": "http://127.0.0.1:9/hook"}
    return parse_config(
        {
            "store": {"redis_url": "", "data_dir": data_dir},
            "admin": {"tokens": [{"name": "supervisor", "token": TOKEN, "role": "admin"}]},
            "connectors": [
                {
                    **connector,
                    "phone_number_id": PNID,
                    "name": "Ventas Colombia",
                    "display_number": "+57 601 555 0100",
                    "default_country": "CO",
                },
                {
                    **connector,
                    "phone_number_id": "215589473650118",
                    "name": "Suporte Brasil",
                    "display_number": "+55 11 4000 0000",
                    "default_country": "BR",
                },
                {
                    **connector,
                    "phone_number_id": "330718256491067",
                    "name": "Cobranzas México",
                    "display_number": "+52 55 5000 0000",
                    "default_country": "MX",
                },
            ],
        },
        env={},
    )


async def seed(app: web.Application, clock: ManualClock, lang: str) -> None:
    service = app[SERVICE]
    real_now = clock.now
    for hours_ago, number, english, who in SEED:
        reason = REASONS_ES[english] if lang == "es" else english
        clock.now = real_now - hours_ago * 3600
        wa_id = "".join(ch for ch in number if ch.isdigit())
        await service.record_inbound(PNID, [InboundUser(wa_id=wa_id)])
        await service.block(PNID, number, actor=Actor(who, "admin_api"), reason=reason)
    clock.now = real_now
    digits = "".join(c for c in ADDED_BY_FORM[0] if c.isdigit())
    await service.record_inbound(PNID, [InboundUser(wa_id=digits)])
    await service.record_inbound(BRAZIL, [InboundUser(wa_id=digits)])  # the form blocks it on all connectors
    await service.block(BRAZIL, ALSO_ON_BRAZIL, actor=Actor("supervisor", "admin_api"), force=True)
    reason = "flood: more than 20 messages in 60 s"
    await service.block(PNID, FLOOD, actor=Actor("flood", "auto"), reason=reason, force=True, duration_seconds=3600)


async def main(output: Path, lang: str, width: int = 1360, height: int = 840) -> None:
    clock = ManualClock()
    with tempfile.TemporaryDirectory(prefix="wa-blocklist-shot-") as data_dir:
        app = create_app(build_config(data_dir), clock=clock)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            await seed(app, clock, lang)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                context = await browser.new_context(
                    viewport={"width": width, "height": height},
                    device_scale_factor=1,
                    locale="es-CO" if lang == "es" else "en-US",
                    timezone_id="America/Bogota",
                )
                page = await context.new_page()
                await page.goto(f"http://127.0.0.1:{port}/admin/")
                await page.get_by_label("Admin token" if lang == "en" else "Token de administrador").fill(TOKEN)
                await page.keyboard.press("Enter")
                await page.locator("#connectors-body tr").first.locator("button").click()
                dialog = page.locator("#blocks-dialog")
                await expect(dialog.locator("#blocks-body tr")).to_have_count(len(SEED) + 1)
                await dialog.locator("#add-number").fill(ADDED_BY_FORM[0])
                added_reason = REASONS_ES[ADDED_BY_FORM[1]] if lang == "es" else ADDED_BY_FORM[1]
                await dialog.locator("#add-reason").fill(added_reason)
                await dialog.locator("#add-everywhere").check()
                await dialog.locator("#add-button").click()
                await expect(dialog.locator("#blocks-body tr")).to_have_count(len(SEED) + 2)
                await expect(dialog.locator("#dialog-status")).to_be_visible()
                await expect(dialog.locator(".block-elsewhere:visible")).to_have_count(2)
                await page.screenshot(path=str(output))
                await browser.close()
        finally:
            await runner.cleanup()
    print(f"wrote {output}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--output", type=Path, default=Path("docs/admin-block-numbers.png"))
    parser.add_argument("--lang", choices=("en", "es"), default="en")
    parser.add_argument("--width", type=int, default=1360, help="viewport width in CSS pixels (390: a phone)")
    parser.add_argument("--height", type=int, default=840)
    args = parser.parse_args()
    asyncio.run(main(args.output, args.lang, args.width, args.height))
