"""The dashboard end to end in headless Chromium (Debian's chromium and chromium-driver).

Selenium drives the system browser through the system chromedriver (no
download). Every wait is an explicit ``WebDriverWait`` on the page's state;
nothing sleeps. Missing browser packages skip the test locally and fail it
under ``CI``, like the Redis and PostgreSQL tests.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dashboard.conftest import HOSTILE_NAME, T0, Dashboard

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver as Chrome
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1100",
)
WAIT_SECONDS = 30  # generous: two shared cores; the waits end as soon as the page is ready
SUCCESS_RGB = (0x25, 0x63, 0xEB)  # --success in style.css
FAILURE_RGB = (0xDC, 0x26, 0x26)  # --failure


def require_browser() -> tuple[str, str]:
    """Paths of chromium and chromedriver; skips the test locally, fails it under ``CI``."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [
        name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path
    ]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append('selenium (pip install -e ".[test]")')
    if missing:
        message = (
            f"{', '.join(missing)} not installed (Debian: apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the browser test")
        pytest.skip(message)
    assert chromium is not None
    assert driver is not None
    return chromium, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chrome]:
    chromium, chromedriver = require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingOptions", {"browser": "ALL"})
    # A driver path in Service keeps Selenium Manager (which downloads drivers) out of it.
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def matching_pixels(png: bytes, rgb: tuple[int, int, int], tolerance: int = 12) -> int:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        rgb_image = image.convert("RGB")
        colors = rgb_image.getcolors(rgb_image.width * rgb_image.height) or []
    matching = 0
    for count, color in colors:
        assert isinstance(color, tuple)
        if all(abs(channel - want) <= tolerance for channel, want in zip(color, rgb, strict=True)):
            matching += count
    return matching


class Page:
    """The dashboard in the browser, with explicit waits on what it renders."""

    def __init__(self, driver: WebDriver) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.wait = WebDriverWait(driver, WAIT_SECONDS)

    def find(self, css: str) -> WebElement:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def until(self, condition: Any, message: str) -> Any:
        return self.wait.until(lambda _: condition(), message)

    def ready(self) -> bool:
        return self.find("body").get_attribute("data-state") == "ready"

    def tile(self, key: str) -> str:
        return self.find(f'[data-tile="{key}"] .value').text

    def wait_tile(self, key: str, expected: int) -> None:
        self.until(
            lambda: (
                self.ready()
                and self.find_all(f'[data-tile="{key}"]')
                and self.tile(key) == f"{expected:,}"
            ),
            f"tile {key} never showed {expected}",
        )

    def buckets(self, every: str) -> list[tuple[str, int]]:
        groups = self.find_all(f'#chart svg[data-every="{every}"] g.bucket')
        return [
            (group.get_attribute("data-bucket") or "", int(group.get_attribute("data-count") or -1))
            for group in groups
        ]

    def wait_chart(self, every: str, expected: list[tuple[str, int]]) -> None:
        self.until(
            lambda: self.ready() and self.buckets(every) == expected,
            f"the {every} chart never showed {expected}",
        )

    def fill(self, element_id: str, text: str) -> None:
        field = self.find(f"#{element_id}")
        field.clear()
        field.send_keys(text)


def expected_buckets(dashboard: Dashboard, every: str, provider: str | None = None) -> list[Any]:
    """``(bucket, count)`` from the first to the last bucket holding an event (the page's span)."""
    step = timedelta(minutes=1) if every == "minute" else timedelta(hours=1)
    times = [started for started, _, p in dashboard.recorded.events if provider in (None, p)]

    def floor(when: datetime) -> datetime:
        when = when.replace(second=0, microsecond=0)
        return when if every == "minute" else when.replace(minute=0)

    start, end = floor(min(times)), floor(max(times)) + step
    out = []
    while start < end:
        count = dashboard.recorded.count(provider=provider, start=start, end=start + step)
        out.append((start.strftime("%Y-%m-%dT%H:%M:%SZ"), count))
        start += step
    return out


def test_the_dashboard_in_chromium(dashboard: Dashboard, browser: Chrome, tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import Select

    recorded = dashboard.recorded
    page = Page(browser)
    browser.get(dashboard.url)
    page.until(lambda: page.ready() and len(page.find_all("#report-list button")) == 2, "reports")

    # A report name that is HTML is shown as text and runs nothing.
    names = [element.text for element in page.find_all("#report-list .name")]
    assert names == [HOSTILE_NAME, "invoice_delivery"]
    assert page.find_all("img") == []
    assert browser.title == "event-meter dashboard"

    # Tiles: the counts of every event, by status.
    page.find('#report-list button[data-name="invoice_delivery"]').click()
    page.wait_tile("count", recorded.count())
    for status in ("success", "failure", "skipped"):
        assert page.tile(f"{status}_count") == str(recorded.count(status=status))
    assert recorded.count(status="failure") > 0
    assert recorded.count(status="skipped") > 0

    # The minute chart spans the data: 20 buckets with the recorded counts.
    page.wait_chart("minute", expected_buckets(dashboard, "minute"))
    chart = page.find("#chart svg")
    png = chart.screenshot_as_png
    (tmp_path / "chart-minute.png").write_bytes(png)
    browser.save_screenshot(str(tmp_path / "dashboard.png"))
    assert matching_pixels(png, SUCCESS_RGB) > 5_000, "too few success bars drawn"
    assert matching_pixels(png, FAILURE_RGB) > 200, "too few failure bars drawn"

    # Hour buckets: 10:00 and 11:00.
    page.find("#every-hour").click()
    page.wait_chart("hour", expected_buckets(dashboard, "hour"))
    assert page.find("#every-hour").get_attribute("aria-pressed") == "true"

    # Filter on the provider index: tiles and chart follow.
    Select(page.find("#index")).select_by_visible_text("provider")
    page.find('#filter-values input[data-param="provider"]').send_keys("postmark")
    page.find("#apply").click()
    page.wait_tile("count", recorded.count(provider="postmark"))
    page.wait_chart("hour", expected_buckets(dashboard, "hour", provider="postmark"))
    page.find("#every-minute").click()
    page.wait_chart("minute", expected_buckets(dashboard, "minute", provider="postmark"))

    # Compare the first ten minutes with the next ten, postmark only.
    middle = T0 + timedelta(minutes=10)
    windows = {
        "before-start": T0,
        "before-end": middle,
        "after-start": middle,
        "after-end": middle + timedelta(minutes=10),
    }
    for element_id, when in windows.items():
        page.fill(element_id, when.strftime("%Y-%m-%dT%H:%M:%SZ"))
    page.find("#run-compare").click()
    before = recorded.count(provider="postmark", end=middle)
    after = recorded.count(provider="postmark", start=middle)
    page.until(
        lambda: (
            page.ready()
            and page.find("#compare-table").is_displayed()
            and page.find('tr[data-metric="count"] .before').text == str(before)
            and page.find('tr[data-metric="count"] .after').text == str(after)
        ),
        "the compare table never showed the counts",
    )
    difference = after - before
    expected = f"{difference:+,d}" if difference else "0"
    assert page.find('tr[data-metric="count"] .difference').text == expected

    # Bad input: the library's message in the error box, not a broken page.
    page.fill("start", "yesterday")
    page.fill("end", "today")
    page.find("#apply").click()
    page.until(lambda: page.ready() and page.find("#error").is_displayed(), "no error shown")
    assert "is not an ISO-8601 time" in page.find("#error").text
    browser.save_screenshot(str(tmp_path / "dashboard-error.png"))

    # No CSP violation, failed request or script error along the way.
    log: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
    severe = [entry for entry in log if entry["level"] == "SEVERE"]
    assert [entry for entry in severe if "400 (Bad Request)" not in entry["message"]] == []
