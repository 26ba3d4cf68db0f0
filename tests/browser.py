"""A real browser for tests of the status page: headless Chromium driven by its chromedriver.

Both come from Debian (`chromium`, `chromium-driver`), installed once by `tests.apt` when
missing; selenium (the test extra) speaks WebDriver to them. Chromium starts with a fresh
profile and with its background traffic off: the test machines' network is closed, and a
Chromium that phones home fills its log with refused connections and slows down.

`chromium()` is what a test module's fixture yields: one Chromium per test file, its window
1280x900 unless a test sets another size (and `desktop()` sets it back).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.apt import apt_install

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--mute-audio")
DESKTOP = (1280, 900)


def install() -> str:
    """Chromium and its driver from Debian; "" once they are there, else why not."""
    return apt_install(["chromium", "chromium-driver"],
                       lambda: Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), recommends=False)


def start_chromium(profile: Path) -> Any:
    """A headless Chromium with a fresh profile in `profile`, and its WebDriver session."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    # Console messages (a CSP violation is one) are kept for the tests to read.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def desktop(driver: Any) -> None:
    driver.set_window_size(*DESKTOP)


def wait_for(driver: Any, predicate: Callable[[Any], Any], timeout: float = 20.0, what: str = "the page") -> Any:
    """Poll `predicate(driver)` until truthy (WebDriverWait, which also rides out a node
    replaced between finding and reading it); its value, or an AssertionError naming `what`."""
    from selenium.common.exceptions import (
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(predicate)
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout}s waiting for {what} at {driver.current_url}") from None


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium for a test module's fixture (installed first if missing), quit after."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium is needed for the status page's tests: pip install -e '.[test]'")
    why = install()
    if why:
        pytest.fail(f"Chromium is needed for the status page's tests: {why}")
    driver = start_chromium(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
