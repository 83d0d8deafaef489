"""The headless-Chromium harness (tests/browser.py) on small pages: console, errors, network, canary, pixels."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser import BROWSER_MISSING, Browser, browser_session, is_blank, open_page

pytestmark = pytest.mark.skipif(BROWSER_MISSING is not None, reason=str(BROWSER_MISSING))


@pytest.fixture(scope="module")
def browser() -> Browser:
    with browser_session() as session:
        yield session


def _page(tmp_path: Path, body: str, style: str = "") -> Path:
    path = tmp_path / "page.html"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'></head>"
                    f"<body style='margin:0;{style}'>{body}</body></html>", encoding="utf-8")
    return path


def test_console_error_is_reported_exactly(browser: Browser, tmp_path: Path) -> None:
    page = browser.open(_page(tmp_path, "<script>console.error('x'); console.warn('careful');</script>"))
    assert page.console_errors == ["x"]
    assert page.console_warnings == ["careful"]
    assert page.page_errors == []


def test_clean_page_has_no_errors_or_requests(browser: Browser, tmp_path: Path) -> None:
    page = browser.open(_page(tmp_path, "<p>hello</p><script>console.log('fine')</script>"))
    assert page.console_errors == [] and page.page_errors == []
    assert page.attempted_urls == [page.url] and page.external_urls == []


def test_uncaught_exception_is_a_page_error(browser: Browser, tmp_path: Path) -> None:
    page = browser.open(_page(tmp_path, "<script>throw new Error('boom');</script>"))
    assert len(page.page_errors) == 1 and "boom" in page.page_errors[0]


def test_network_requests_are_recorded_and_blocked(browser: Browser, tmp_path: Path) -> None:
    body = ("<img src='https://example.com/a.png'><script>fetch('https://example.com/')"
            ".then(() => { window.__fetch = 'loaded'; }, () => { window.__fetch = 'failed'; });</script>")
    started = time.monotonic()
    page = browser.open(_page(tmp_path, body), ready_js="window.__fetch !== undefined")
    assert time.monotonic() - started < 10
    assert page.external_urls == ["https://example.com/a.png", "https://example.com/"]
    assert page.blocked_urls == ["https://example.com/a.png", "https://example.com/"]
    assert page.evaluate("window.__fetch") == "failed"


def test_script_runs_but_escaped_script_text_does_not(browser: Browser, tmp_path: Path) -> None:
    body = ("<script>window.__canary = 1;</script>"
            "<p id='item'>&lt;script&gt;window.__canary2=1&lt;/script&gt;</p>")
    page = browser.open(_page(tmp_path, body))
    assert page.evaluate("window.__canary") == 1
    assert page.evaluate("window.__canary2 === undefined") is True
    assert page.evaluate("document.getElementById('item').textContent") == "<script>window.__canary2=1</script>"


def test_screenshot_blank_only_for_a_plain_page(browser: Browser, tmp_path: Path) -> None:
    coloured = browser.open(_page(tmp_path, "<div style='width:200px;height:100px;background:#c33'></div>"))
    assert not is_blank(coloured.screenshot_png)
    white = browser.open(_page(tmp_path, "", style="background:#fff"))
    assert white.screenshot_png.startswith(b"\x89PNG") and is_blank(white.screenshot_png)


def test_evaluate_returns_json_values(browser: Browser, tmp_path: Path) -> None:
    page = browser.open(_page(tmp_path, "<script>window.data = {a: [1, 2.5, 'x'], b: null, c: true};</script>"))
    assert page.evaluate("window.data") == {"a": [1, 2.5, "x"], "b": None, "c": True}
    assert page.evaluate("document.querySelectorAll('script').length") == 1
    assert page.evaluate("undefined") is None


def test_open_page_starts_its_own_browser(tmp_path: Path) -> None:
    with open_page(_page(tmp_path, "<h1 id='t'>title</h1>")) as page:
        assert page.evaluate("document.getElementById('t').textContent") == "title"
        assert page.console_errors == [] and page.page_errors == []
