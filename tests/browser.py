"""Headless Chromium for the explorer tests and README screenshots (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def why_no_browser() -> str | None:
    """None when the browser tests can run, else the reason they skip."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (python) is not installed: pip install -e '.[dev]'"
    if not CHROMIUM.is_file() and shutil.which("chromium") is None:
        return "no chromium at /usr/bin/chromium: apt-get install -y chromium (.ci/run does this)"
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A Playwright browser on Debian's chromium."""
    from playwright.sync_api import sync_playwright

    executable = str(CHROMIUM) if CHROMIUM.is_file() else shutil.which("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Visit:
    """One page opened in the browser, with every console error, page error and failed request seen."""

    def __init__(self, browser: Any, path: Path, width: int = 1280, height: int = 900) -> None:
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.problems: list[str] = []
        self.page.on(
            "console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        )
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("requestfailed", lambda request: self.problems.append(f"failed: {request.url}"))
        self.page.goto(path.resolve().as_uri(), wait_until="load")

    def broken_images(self) -> list[str]:
        """The images that fail to load, lazy ones (``loading="lazy"``, off screen) made to load first."""
        self.page.eval_on_selector_all('img[loading="lazy"]', "images => images.forEach(i => { i.loading = 'eager'; })")
        self.page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=30_000)
        return self.page.eval_on_selector_all(
            "img", "images => images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
        )

    def links(self) -> list[str]:
        return self.page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")

    def close(self) -> None:
        self.page.close()


def screenshot(browser: Any, page_path: Path, out: Path, width: int = 1200, height: int = 800) -> Path:
    """A PNG of the top of ``page_path`` (``width`` × ``height``)."""
    visit = Visit(browser, page_path, width, height)
    out.parent.mkdir(parents=True, exist_ok=True)
    visit.page.screenshot(path=str(out))
    visit.close()
    return out
