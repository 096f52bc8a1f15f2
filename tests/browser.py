"""A real browser for page tests: Debian's chromium driven by Selenium through chromedriver.

Tests ask for the `browser` fixture (conftest.py). Where chromium is not installed the test is
skipped, unless FASHIONNET_REQUIRE_BROWSER=1 (set by .ci/run), which makes it a failure: CI must
never pass by skipping the browser.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMEDRIVER = "/usr/bin/chromedriver"


def browser_missing() -> str | None:
    """Why no browser can run here, or None."""
    if not (os.path.exists(CHROMEDRIVER) and (shutil.which("chromium") or
                                              os.path.exists("/usr/bin/chromium"))):  # fmt: skip
        return (
            "chromium and chromium-driver are not installed (apt-get install chromium "
            "chromium-driver)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@contextmanager
def chromium(width: int = 1200, height: int = 900) -> Iterator[Any]:
    """A headless chromium with its console log kept, closed on the way out."""
    why = browser_missing()
    if why is not None:
        if os.environ.get("FASHIONNET_REQUIRE_BROWSER") == "1":
            pytest.fail(f"FASHIONNET_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)  # a bound on a hung browser, never a decision
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
