"""The finance console in a real browser: Debian's chromium, headless, driven by selenium and
chromedriver, against the ledger and sandboxes on loopback (test_console_http.py stages them).

One walk through every page: sign-in refusals, the items and their filters, a click from an item
to its payment's timeline, where a provider's `<script>` and `<img onerror>` are shown as text and
run nothing, balances, audit, sign-out. A screenshot of each page is saved under
tests/artifacts/console/ (git-ignored) and its path printed. Without chromium, chromedriver or
selenium the test is skipped and says which is missing.

Selenium blocks, and the ledger serves on this test's event loop, so the browser is driven from a
worker thread.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.e2e.test_console_http import (
    FINANCE_TOKEN,
    IMAGE,
    PAYMENTS_ONLY_TOKEN,
    SCRIPT,
    ConsoleWorld,
    console_world,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Containers often give /dev/shm 64 MB; a renderer that runs out of it crashes the tab.
    "--disable-dev-shm-usage",
    "--window-size=1600,900",
)


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    if not CHROMEDRIVER.exists():
        return f"no chromedriver at {CHROMEDRIVER} (apt-get install chromium-driver)"
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


@pytest.fixture
async def console(store, monkeypatch):
    async with console_world(store, monkeypatch) as staged:
        yield staged


class Walk:
    """The browser, and what it is asked to check, one page at a time."""

    def __init__(self, console: ConsoleWorld, profile: str) -> None:
        from selenium import webdriver  # noqa: PLC0415 - only when the test runs
        from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        self.console = console
        self.url = console.url
        self.shots: list[Path] = []

    def css(self, selector: str):
        from selenium.webdriver.common.by import By  # noqa: PLC0415

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def shoot(self, name: str) -> None:
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        self.shots.append(path)
        print(f"console screenshot: {path}")

    def click_to_next_page(self, element) -> None:
        """Clicks, and waits until the browser left the page (a click does not wait for the
        navigation it starts: reading at once could read the old page)."""
        from selenium.common.exceptions import WebDriverException  # noqa: PLC0415
        from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

        (page,) = self.css("html")

        def left(driver) -> bool:
            try:
                page.is_enabled()
            except WebDriverException:
                # Stale, or chromium's own word for it mid-navigation: "Node with given id
                # does not belong to the document".
                return True
            return False

        def loaded(driver) -> bool:
            try:
                return "complete" == driver.execute_script("return document.readyState")
            except WebDriverException:
                return False  # still between documents

        element.click()
        wait = WebDriverWait(self.driver, 30)
        wait.until(left)
        wait.until(loaded)

    def no_alert(self) -> None:
        from selenium.common.exceptions import NoAlertPresentException  # noqa: PLC0415

        with pytest.raises(NoAlertPresentException):
            _ = self.driver.switch_to.alert.text

    def sign_in(self, token: str) -> str:
        (field,) = self.css("#token")
        field.clear()
        field.send_keys(token)
        self.click_to_next_page(self.css("form.sign-in button")[0])
        message = self.css("#message")
        return message[0].text if message else ""

    def filter(self, **chosen: str) -> int:
        from selenium.webdriver.support.ui import Select  # noqa: PLC0415

        for name in ("reason", "provider", "state", "currency"):
            select = Select(self.css(f"select[name={name}]")[0])
            select.select_by_value(chosen.get(name, "open" if name == "state" else ""))
        self.click_to_next_page(self.css("form.filters button")[0])
        assert self.css("#items"), self.driver.page_source
        return len(self.css("#items a.timeline"))

    def run(self) -> None:
        driver = self.driver
        driver.get(self.url + "/console/")
        assert driver.current_url.endswith("/console/sign-in")
        assert "That token is not valid." == self.sign_in("wrong-token")
        assert "That token lacks the scope finance:read." == self.sign_in(PAYMENTS_ONLY_TOKEN)
        self.shoot("sign-in-refused")
        assert "" == self.sign_in(FINANCE_TOKEN)
        assert driver.current_url == self.url + "/console/"
        # The cookie is out of the page's reach.
        assert "" == driver.execute_script("return document.cookie")
        self.items()
        self.timeline()
        driver.get(self.url + "/console/balances")
        assert len(self.css("#balances tbody tr")) >= 4
        self.shoot("balances")
        driver.get(self.url + "/console/audit")
        assert self.css("#head-hash")[0].text
        assert 1 <= len(self.css("#checkpoints tbody tr td.good"))
        self.shoot("audit")
        self.click_to_next_page(self.css("form.sign-out button")[0])
        assert driver.current_url.endswith("/console/sign-in")
        driver.get(self.url + "/console/balances")
        assert driver.current_url.endswith("/console/sign-in")

    def items(self) -> None:
        assert 2 == len(self.css("#items a.timeline"))
        self.shoot("reconciliation")
        assert 1 == self.filter(provider="payment_engine")
        assert self.console.other_payment["payment_id"] in self.css("#items")[0].text
        assert 1 == self.filter(currency="USDT")
        assert 0 == self.filter(reason="overpaid", currency="USDT")
        assert 0 == self.filter(state="cleared")
        assert 1 == self.filter(reason="underpaid")
        self.shoot("reconciliation-filtered")
        # The merchant's order id, markup and all, is text in its cell.
        assert f"CON-{SCRIPT}" in self.css("#items tbody")[0].text
        assert "reason=underpaid" in self.css("#csv")[0].get_attribute("href")

    def timeline(self) -> None:
        payment_id = self.console.hostile_payment["payment_id"]
        (link,) = self.css("#items a.timeline")
        self.click_to_next_page(link)
        assert self.driver.current_url == f"{self.url}/console/payments/{payment_id}"
        self.no_alert()
        text = self.css("#timeline")[0].text
        assert SCRIPT in text
        assert IMAGE.removeprefix('"') in text  # shown inside a JSON string: \"><img ...>
        # Nothing the provider sent became an element, and the page has no script at all.
        assert [] == self.css("script")
        assert [] == self.css("main img")
        types = [e.text for e in self.css("#timeline .type")]
        assert "Payment.Created" == types[0]
        assert "Payment.DeliveryRecorded" in types
        assert "verified" in [e.text for e in self.css("#timeline .verification")]
        assert all(len(e.text) == 64 for e in self.css("#timeline .hashes code"))
        self.shoot("payment-timeline")
        (hostile,) = [e for e in self.css("#timeline pre.body") if "onerror" in e.text]
        self.driver.execute_script("arguments[0].scrollIntoView()", hostile)
        self.shoot("payment-timeline-hostile-body")

    def quit(self) -> None:
        self.driver.quit()


async def test_a_finance_user_walks_every_page_in_chromium(console):
    status, made = await console.world.ledger.call("POST", "/v1/audit/checkpoints")
    assert 201 == status, made
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    try:
        walk = await asyncio.to_thread(Walk, console, profile)
        try:
            await asyncio.to_thread(walk.run)
        finally:
            await asyncio.to_thread(walk.quit)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert {"sign-in-refused", "reconciliation", "reconciliation-filtered", "payment-timeline",
            "payment-timeline-hostile-body", "balances", "audit"} == {p.stem for p in walk.shots}
    assert all(path.stat().st_size > 0 for path in walk.shots)
