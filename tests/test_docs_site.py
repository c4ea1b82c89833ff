"""The built documentation site (``make docs`` builds it, then runs this file).

Every local link and image resolves (and none is a ``file://`` URL), nothing is fetched from the network,
and headless Chromium renders four pages with their images; the screenshots land in
``docs/_build/screenshots/`` for a person to look at. Skipped when the site has not been built (except the
check that the link checker itself catches a dead link).
"""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import ROOT

SITE = ROOT / "docs" / "_build" / "html"
SHOTS = ROOT / "docs" / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

built = pytest.mark.skipif(not (SITE / "index.html").is_file(), reason="docs not built: run `make docs`")


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)
            if value and (name in ("href", "src") or (tag == "link" and name == "href")):
                self.links.append((tag, value))


def _pages(site: Path = SITE) -> dict[Path, _Page]:
    pages = {}
    for path in site.rglob("*.html"):
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        pages[path] = page
    return pages


def broken_links(pages: dict[Path, _Page], site: Path = SITE) -> list[str]:
    """Every ``href``/``src`` of ``pages`` that is a ``file://`` URL or a local path (``#anchor`` included)
    that does not resolve, as ``page: <tag> link (why)``."""
    broken = []
    for path, page in pages.items():
        for tag, link in page.links:
            parts = urlsplit(link)
            if parts.scheme == "file":
                broken.append(f"{path.relative_to(site)}: <{tag}> {link} (a file:// URL)")
            if parts.scheme or link.startswith("//"):
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{path.relative_to(site)}: <{tag}> {link} (no file)")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in pages[target].ids:
                broken.append(f"{path.relative_to(site)}: <{tag}> {link} (no anchor)")
    return broken


@built
def test_every_local_link_and_image_resolves():
    pages = _pages()
    broken = broken_links(pages)
    assert len(pages) > 20
    assert not broken, "\n".join(broken[:40])


def test_the_link_checker_catches_dead_and_file_links(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.html").write_text('<h1 id="top">a</h1><a href="../b.html#top">b</a>')
    (tmp_path / "b.html").write_text(
        '<p id="top"><a href="a/#top">a</a> <a href="a/#gone">gone</a> <img src="missing.png"> <a href="file://">x</a>'
        ' <a href="https://example.org/x">web</a> <a href="mailto:me@example.org">me</a></p>'
    )
    broken = broken_links(_pages(tmp_path), tmp_path)
    assert broken == [
        "b.html: <a> a/#gone (no anchor)",
        "b.html: <img> missing.png (no file)",
        "b.html: <a> file:// (a file:// URL)",
    ]


@built
def test_site_loads_nothing_from_the_network():
    remote = re.compile(r"""<(?:script|link|img|iframe)[^>]+(?:src|href)=["'](?:https?:)?//""", re.IGNORECASE)
    fetched = [
        f"{path.relative_to(SITE)}: {match.group(0)[:120]}"
        for path in SITE.rglob("*.html")
        for match in remote.finditer(path.read_text(encoding="utf-8"))
        if not match.group(0).lower().startswith("<link") or "stylesheet" in match.group(0).lower()
    ]
    assert not fetched, "\n".join(fetched[:20])


def _first(pattern: str) -> Path:
    found = sorted(SITE.glob(pattern))
    assert found, f"no page matches {pattern} in the built site"
    return found[0]


@built
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")
def test_screenshots_of_the_site_show_every_image():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e .[docs])")
    pages = {
        "home": SITE / "index.html",
        "reference": SITE / "reference" / "display.html",
        "gallery": _first("auto_examples/plot_*.html"),
        "notebook": SITE / "notebooks" / "quickstart.html",
    }
    SHOTS.mkdir(parents=True, exist_ok=True)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            view = browser.new_page(viewport={"width": 1280, "height": 1100})
            for name, path in pages.items():
                view.goto(path.as_uri(), wait_until="load")
                broken = view.evaluate(
                    "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
                )
                images = view.evaluate("document.images.length")
                title = view.title()
                view.screenshot(path=str(SHOTS / f"{name}.png"))
                assert not broken, f"{name}: images that did not load: {broken}"
                assert "fmapviz" in title, title
                if name == "reference":  # a generated entry, with its signature and example
                    entry = view.locator('dt[id="fmapviz.show_maps"]')
                    assert entry.count() == 1 and "channels" in entry.inner_text()
                    assert view.locator("div.doctest, div.highlight-pycon").count() >= 1
                else:
                    assert images >= 1, f"{name}: no image on {path.name}"
        finally:
            browser.close()
    from PIL import Image

    for name in pages:
        shot = Image.open(SHOTS / f"{name}.png").convert("L")
        assert shot.size == (1280, 1100)
        low, high = shot.getextrema()
        assert high - low > 100, f"{name}.png is blank"
