"""The grid workers' page in headless Chromium (Debian's, driven by Playwright): sign in with a
token, see an alert injected into the registry, acknowledge it, and find it acknowledged in the
registry; a change made elsewhere arrives over the live stream."""

import shutil
from typing import Any

import pytest
from playwright.async_api import async_playwright, expect

from devices.alerts import Alert
from rules.service import RulesService
from store.alerts import AlertStore
from store.registry.db import Registry
from tests.support.api import RunningApi, Tokens

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# What the machine's closed network needs: no background calls home, no sandbox as root.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


def snap(subject: str, title: str, **over: Any) -> Alert:
    return Alert.from_json({"rule": "fire", "subject": subject, "site": "small", "severity": "critical", "title": title,
            "first_ts": 1000, "last_ts": 1000, "state": "open", "count": 1, "escalation": 0, "grid": "g01",
            "building": "b001", "unit": "b001-u1", "zone": None, "recipients": [],
            "evidence": [{"ts": 1000, "smoke_obscuration_pct": 12.5}], "resolved_ts": None, **over})  # fmt: skip


async def inject(registry_url: str, subject: str, title: str) -> int:
    async with Registry(registry_url) as reg:
        applied = await AlertStore(reg).apply("opened", 1000, snap(subject, title))
    assert applied is not None
    return applied.alert.id


@pytest.mark.slow
async def test_a_grid_worker_signs_in_sees_the_alert_and_acknowledges_it(
    api: RunningApi, tokens: Tokens, registry_url: str, rules: RulesService
) -> None:
    first = await inject(registry_url, "smk-b001-u1-101", "1号楼1单元101 烟感报警")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            await page.goto(f"{api.url}/page/alerts/{first}")
            await page.fill("#token", tokens.worker_g01)
            await page.click("text=登录 Sign in")
            card = page.locator(f'[data-alert-id="{first}"]')
            await expect(card).to_contain_text("1号楼1单元101 烟感报警")
            await expect(card).to_contain_text("楼 b001")
            await expect(card).to_contain_text("smoke_obscuration_pct")
            await expect(card).to_have_class("alert critical focus")  # the message's deep link opens on it
            await expect(page.locator("#live")).to_contain_text("live")

            await card.locator("textarea").fill("到现场了 on site")
            await card.locator("text=确认 Acknowledge").click()
            await expect(card).to_have_attribute("data-state", "acknowledged")

            # Another alert opened and acknowledged elsewhere reaches the open page over the stream.
            second = await inject(registry_url, "smk-b002-u1-201", "2号楼 烟感报警")
            async with api.client(tokens.engineer) as c:
                assert (await c.post(f"/api/v1/alerts/{second}/acknowledge")).status_code == 200
            await expect(page.locator(f'[data-alert-id="{second}"]')).to_have_attribute("data-state", "acknowledged")
        finally:
            await browser.close()
    async with Registry(registry_url) as reg:
        view, audit = await AlertStore(reg).get(first)
    assert view.state == "acknowledged"
    assert (audit[-1].actor, audit[-1].action, audit[-1].detail) == (
        "grid_worker:wang", "acknowledged", {"note": "到现场了 on site"})  # fmt: skip


@pytest.mark.slow
async def test_a_bad_token_is_told_so_on_the_page(api: RunningApi) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = await browser.new_page()
            await page.goto(f"{api.url}/page")
            await page.fill("#token", "ew_nope_nope")
            await page.click("text=登录 Sign in")
            await expect(page.locator("#error")).to_contain_text("unknown or revoked")
            await expect(page.locator("#signin")).to_be_visible()
        finally:
            await browser.close()
