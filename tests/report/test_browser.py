"""report.html in a real browser: headless Chromium (Debian's ``chromium``) driven over the DevTools protocol.

The page is opened from a ``file://`` URL after being copied alone into an empty directory, in a browser context
that is offline, so it must be self-contained. Checks: every ``<img>`` loaded, no console error, no uncaught
exception, no failed or outside request, every claim section present. A full-page screenshot is saved into the
test's tmp dir and, when ``ATTNLAB_SCREENSHOT_DIR`` is set, there too. A deliberately broken page shows that the
harness does fail.

Chromium is looked for as ``$ATTNLAB_CHROMIUM``, then ``chromium``, ``chromium-browser`` on PATH (``.ci/run``
installs Debian's). Playwright (dev extra) drives it; its own browser downloads are never used.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from report_samples import sample_results

from attnlab.report import render

pytestmark = pytest.mark.timeout(120)  # a hung browser must not hold the suite for the global 600 s

SCREENSHOT_ENV = "ATTNLAB_SCREENSHOT_DIR"
CHROMIUM_ENV = "ATTNLAB_CHROMIUM"
TIMEOUT_MS = 30_000


def _find_chromium() -> str | None:
    if os.environ.get(CHROMIUM_ENV):
        return os.environ[CHROMIUM_ENV]
    return next((path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None)


CHROMIUM = _find_chromium()
REQUIRE_ENV = "ATTNLAB_REQUIRE_BROWSER"  # set by .ci/run: there a missing Chromium fails the test instead of skipping
requires_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get(REQUIRE_ENV),
    reason=f"no Chromium binary: install Debian's `chromium` (as .ci/run does) or set {CHROMIUM_ENV}",
)


@dataclass
class PageCheck:
    """What the browser saw while loading one page; ``problems`` is empty when the page rendered cleanly."""

    images: list[dict] = field(default_factory=list)  # {src, complete, naturalWidth}
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    section_ids: list[str] = field(default_factory=list)

    @property
    def broken_images(self) -> list[str]:
        return [img["src"] for img in self.images if not (img["complete"] and img["naturalWidth"] > 0)]

    @property
    def problems(self) -> list[str]:
        return (
            [f"image did not load: {src}" for src in self.broken_images]
            + [f"console error: {text}" for text in self.console_errors]
            + [f"uncaught exception: {text}" for text in self.page_errors]
            + [f"request failed: {text}" for text in self.failed_requests]
            + [f"request outside the page: {url}" for url in self.outside_requests]
        )


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail(
            f"{REQUIRE_ENV} is set but no Chromium binary was found (chromium, chromium-browser, {CHROMIUM_ENV})"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail('Chromium is installed but playwright is not: pip install -c constraints.txt -e ".[dev]"')
    with sync_playwright() as playwright:
        # executable_path: the system Chromium; playwright's own browser builds are never downloaded or used.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, timeout=TIMEOUT_MS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, path: Path, screenshot: Path | None = None) -> PageCheck:
    """Load ``path`` from disk in a fresh offline context, record what went wrong, optionally screenshot it."""
    check = PageCheck()
    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900}, java_script_enabled=True)
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", lambda msg: check.console_errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda error: check.page_errors.append(str(error)))
        page.on("requestfailed", lambda req: check.failed_requests.append(f"{req.url} ({req.failure})"))
        page.on("dialog", lambda dialog: (check.page_errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        page_url = path.resolve().as_uri()

        def on_request(request) -> None:
            if request.url != page_url and not request.url.startswith("data:"):
                check.outside_requests.append(request.url[:120])

        page.on("request", on_request)
        page.goto(page_url, wait_until="load")
        check.images = page.evaluate(
            """() => Array.from(document.images, img =>
                   ({src: img.src.slice(0, 60), complete: img.complete, naturalWidth: img.naturalWidth}))"""
        )
        check.section_ids = page.evaluate("() => Array.from(document.querySelectorAll('section'), s => s.id)")
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
    finally:
        context.close()
    return check


@requires_chromium
def test_report_renders_in_chromium(browser, tmp_path):
    out = tmp_path / "tour"
    report = render(sample_results(out, plots=True), out)
    alone = tmp_path / "copied-alone"  # the page must work without the figures next to it
    alone.mkdir()
    page_path = Path(shutil.copy(report, alone / "report.html"))

    screenshot = tmp_path / "report.png"
    check = open_page(browser, page_path, screenshot)

    assert not check.problems, "\n".join(check.problems)
    assert len(check.images) == 12, check.images  # every figure that exists (claim 6 failed, claim 9's 2nd missing)
    assert check.section_ids == [f"claim-{n}" for n in range(1, 14)]
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    if os.environ.get(SCREENSHOT_ENV):
        target = Path(os.environ[SCREENSHOT_ENV])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, target / "report.png")


@requires_chromium
def test_the_harness_fails_a_broken_page(browser, tmp_path):
    page_path = tmp_path / "broken.html"
    page_path.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>broken</title></head><body>"
        "<img src='missing.png' alt='gone'>"
        "<img src='https://example.invalid/remote.png' alt='remote'>"
        "<img src='data:image/png;base64,iVBORw0KGgo=' alt='truncated'>"
        "<script>console.error('boom'); throw new Error('kaput');</script>"
        "</body></html>",
        encoding="utf-8",
    )
    check = open_page(browser, page_path)

    assert len(check.broken_images) == 3, check.images
    assert any("boom" in text for text in check.console_errors), check.console_errors
    assert any("kaput" in text for text in check.page_errors), check.page_errors
    assert any("missing.png" in text for text in check.failed_requests), check.failed_requests
    assert any("example.invalid" in url for url in check.outside_requests), check.outside_requests
    assert len(check.problems) >= 6
