"""Headless Chromium for tests: open a local HTML file with every network request blocked.

Uses Debian's system Chromium and chromedriver at fixed paths (Selenium Manager never runs, nothing is
downloaded). A page is opened over file://, http(s) and ws(s) requests are blocked through the Chrome DevTools
Protocol, and the test reads back console messages, uncaught page errors, every attempted request, JSON values
evaluated in the page and a PNG screenshot.

    from browser import BROWSER_MISSING, open_page, is_blank
    pytestmark = pytest.mark.skipif(BROWSER_MISSING is not None, reason=str(BROWSER_MISSING))
    with open_page(path, ready_js="window.__done === true") as page:
        assert page.console_errors == [] and page.page_errors == [] and page.external_urls == []
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW_SIZE = (1280, 900)
PAGE_TIMEOUT_S = 30.0
BLOCKED_URL_PATTERNS = ["http://*", "https://*", "ws://*", "wss://*"]
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}", "--hide-scrollbars", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--force-device-scale-factor=1",
)
# Installed before any page script runs; records uncaught exceptions and unhandled promise rejections.
ERROR_RECORDER_JS = """
window.__pageErrors = [];
window.addEventListener('error', function (e) {
  if (e instanceof ErrorEvent) { window.__pageErrors.push(String(e.message)); }
});
window.addEventListener('unhandledrejection', function (e) {
  window.__pageErrors.push('unhandled rejection: ' + String(e.reason));
});
"""
_CONSOLE_LOCATION = re.compile(r"^\S+ \d+:\d+ (.*)$", re.DOTALL)


@dataclass(frozen=True)
class ConsoleMessage:
    """One entry of the browser log: level (SEVERE, WARNING, INFO...), source (console-api...), text."""

    level: str
    source: str
    text: str


@dataclass(frozen=True)
class PageResult:
    """What a page did while loading; `evaluate` works while its browser session is open."""

    url: str
    console: list[ConsoleMessage]
    page_errors: list[str]
    attempted_urls: list[str]
    blocked_urls: list[str]
    screenshot_png: bytes
    driver: Any

    @property
    def console_errors(self) -> list[str]:
        """Texts of SEVERE browser-log entries (console.error, failed loads)."""
        return [m.text for m in self.console if m.level == "SEVERE"]

    @property
    def console_warnings(self) -> list[str]:
        """Texts of WARNING browser-log entries."""
        return [m.text for m in self.console if m.level == "WARNING"]

    @property
    def external_urls(self) -> list[str]:
        """Attempted requests that are not local (file:, data:, blob:, about:)."""
        return [u for u in self.attempted_urls if not u.startswith(LOCAL_SCHEMES)]

    def evaluate(self, expression: str) -> Any:
        """Value of a JS expression in the page, round-tripped through JSON."""
        text = self.driver.execute_script(f"return JSON.stringify(({expression}));")
        return None if text is None else json.loads(text)


def _chrome_options() -> Any:
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in CHROMIUM_ARGS:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return options


def _start_driver() -> Any:
    """A headless Chromium with the network blocked and the error recorder installed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=_chrome_options())
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": BLOCKED_URL_PATTERNS})
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ERROR_RECORDER_JS})
    return driver


def _console_text(message: str) -> str:
    """The logged value without its 'url line:col' prefix; a single string argument is unquoted."""
    match = _CONSOLE_LOCATION.match(message)
    rest = match.group(1) if match else message
    with contextlib.suppress(ValueError):
        value = json.loads(rest)
        if isinstance(value, str):
            return value
    return rest


def _read_console(driver: Any) -> list[ConsoleMessage]:
    return [ConsoleMessage(e["level"], e.get("source", ""), _console_text(e["message"]))
            for e in driver.get_log("browser")]


def _read_requests(driver: Any) -> tuple[list[str], list[str]]:
    """(attempted URLs in order, URLs whose load was blocked) from the performance log."""
    urls_by_id: dict[str, str] = {}
    attempted: list[str] = []
    blocked: list[str] = []
    for entry in driver.get_log("performance"):
        event = json.loads(entry["message"])["message"]
        params = event.get("params", {})
        if event["method"] == "Network.requestWillBeSent":
            urls_by_id[params["requestId"]] = params["request"]["url"]
            attempted.append(params["request"]["url"])
        elif event["method"] == "Network.loadingFailed" and params.get("blockedReason"):
            blocked.append(urls_by_id.get(params["requestId"], "?"))
    return attempted, blocked


def _wait_until_ready(driver: Any, ready_js: str | None) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    condition = "document.readyState === 'complete'" + (f" && !!({ready_js})" if ready_js else "")
    WebDriverWait(driver, PAGE_TIMEOUT_S).until(lambda d: d.execute_script(f"return {condition};"))


class Browser:
    """One headless Chromium; `open` loads pages one after another in it."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def open(self, path: Path, ready_js: str | None = None) -> PageResult:
        """Load a local HTML file, wait for load (and `ready_js` to be truthy), return what happened."""
        for log_name in ("browser", "performance"):  # drop the entries of earlier pages
            self.driver.get_log(log_name)
        url = Path(path).resolve().as_uri()
        self.driver.get(url)
        _wait_until_ready(self.driver, ready_js)
        page_errors = self.driver.execute_script("return window.__pageErrors || [];")
        screenshot = self.driver.get_screenshot_as_png()
        attempted, blocked = _read_requests(self.driver)
        return PageResult(url, _read_console(self.driver), page_errors, attempted, blocked, screenshot, self.driver)


@contextlib.contextmanager
def browser_session() -> Iterator[Browser]:
    """A started Browser, quit on exit."""
    driver = _start_driver()
    try:
        yield Browser(driver)
    finally:
        driver.quit()


@contextlib.contextmanager
def open_page(path: Path, ready_js: str | None = None) -> Iterator[PageResult]:
    """Open one page in a fresh browser; the result's `evaluate` works inside the `with` block."""
    with browser_session() as browser:
        yield browser.open(path, ready_js)


def is_blank(png: bytes, tolerance: int = 8) -> bool:
    """True when every pixel of the PNG is within `tolerance` of one colour, per channel."""
    from PIL import Image

    extrema = Image.open(io.BytesIO(png)).convert("RGB").getextrema()
    return all(high - low <= tolerance for low, high in extrema)


def _browser_missing() -> str | None:
    """None when the system Chromium and chromedriver start; else a one-line reason to skip."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.is_file():
            return f"{binary} not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "python package selenium not installed"
    try:
        _start_driver().quit()
    except Exception as error:  # any start failure means: no usable browser here
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return f"headless chromium did not start: {first_line}"
    return None


BROWSER_MISSING: str | None = _browser_missing()
