"""The explorer in a real browser: headless Debian chromium driven by Playwright, pages opened from file://.

Screenshots of the four page types go to tests/output/explorer/ for a person to look at; with the real
mobilenet_v2, to tests/output/explorer-mobilenet/ (the README's figures, copied to assets/figures/explorer_*.png).
Without chromium or playwright these tests skip and say why (.ci/run installs both).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser import Visit, chromium, screenshot, why_no_browser
from conftest import ASSETS, ROOT, real_weights
from test_explore import build_site

import fmapviz
from fmapviz.explorer import ExploreSettings

pytestmark = pytest.mark.skipif(why_no_browser() is not None, reason=str(why_no_browser()))
SCREENSHOTS = ROOT / "tests" / "output" / "explorer"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return build_site(tmp_path_factory.mktemp("explore"), progress=False).parent


@pytest.fixture(scope="module")
def browser():
    with chromium() as opened:
        yield opened


def page_types(site: Path) -> dict[str, Path]:
    return {
        "model": site / "index.html",
        "layer": site / "layers" / "features.3.html",
        "channel": site / "channels" / "features.3" / "5.html",
        "image": sorted((site / "images").glob("*.html"))[0],
    }


@pytest.mark.parametrize("kind", ["model", "layer", "channel", "image"])
def test_each_page_type_loads_from_file_without_errors_and_is_screenshotted(site, browser, kind):
    path = page_types(site)[kind]
    visit = Visit(browser, path)
    assert visit.problems == [] and visit.broken_images() == []
    assert visit.page.title().endswith("fmapviz explorer")
    visit.close()
    shot = screenshot(browser, path, SCREENSHOTS / f"{kind}.png")
    assert shot.stat().st_size > 10_000


def test_every_page_link_and_image_resolves_in_the_browser(site, browser):
    seen, queue = set(), [(site / "index.html").resolve().as_uri()]
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        visit = Visit(browser, Path(url.removeprefix("file://")))
        assert visit.problems == [] and visit.broken_images() == [], url
        for link in visit.links():
            target = Path(link.split("#")[0].removeprefix("file://"))
            assert target.is_file(), f"{url} links to missing {link}"
            if target.suffix == ".html":
                queue.append(target.as_uri())
        visit.close()
    assert len(seen) == 1 + 2 + (8 + 16) + 5  # model, layers, channels, photos


def tile_order(visit: Visit) -> list[int]:
    return [int(v) for v in visit.page.eval_on_selector_all("#tiles > a", "ts => ts.map(t => t.dataset.channel)")]


def visible(visit: Visit) -> list[int]:
    script = "ts => ts.filter(t => !t.hidden).map(t => t.dataset.channel)"
    return [int(v) for v in visit.page.eval_on_selector_all("#tiles > a", script)]


def test_sorting_filtering_and_jumping_on_a_layer_page(site, browser):
    visit = Visit(browser, page_types(site)["layer"])
    assert tile_order(visit) == list(range(16))
    maxima = {
        int(c): float(v)
        for c, v in visit.page.eval_on_selector_all(
            "#tiles > a", "ts => ts.map(t => [t.dataset.channel, t.dataset.max])"
        )
    }
    visit.page.select_option("#sort", "max")
    by_max = tile_order(visit)
    assert by_max != list(range(16)) and by_max == sorted(maxima, key=lambda c: (-maxima[c], c))
    visit.page.select_option("#sort", "positive")
    assert tile_order(visit) != by_max
    states = dict(
        visit.page.eval_on_selector_all("#tiles > a", "ts => ts.map(t => [+t.dataset.channel, t.dataset.state])")
    )
    dead = {c for c, state in states.items() if state == "dead"}
    weak = {c for c, state in states.items() if state == "weak"}
    assert 0 in dead and 1 in weak
    visit.page.check("#hide-dead")
    assert set(visible(visit)) == set(range(16)) - dead
    visit.page.check("#hide-weak")
    assert set(visible(visit)) == set(range(16)) - dead - weak
    assert visit.page.inner_text("#shown") == f"{16 - len(dead) - len(weak)} of 16 channels"
    visit.page.fill("#jump-to", "7")
    with visit.page.expect_navigation():
        visit.page.press("#jump-to", "Enter")
    assert visit.page.url.endswith("/channels/features.3/7.html")
    assert visit.problems == []
    visit.close()


@real_weights
@pytest.mark.real_weights
@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("FMAPVIZ_README_SHOTS") != "1",
    reason="makes the README's explorer screenshots (minutes): run with FMAPVIZ_README_SHOTS=1",
)
def test_mobilenet_site_over_the_bundled_photos_for_the_readme(browser, mobilenet, tmp_path):
    photos = [ASSETS / name for name in ("chelsea.png", "coffee.png", "astronaut.png")]
    settings = ExploreSettings(actmax_steps=64)  # every channel gets its tile, as by default
    site = fmapviz.explore(
        mobilenet, photos, ["features.7", "features.14"], tmp_path / "site", settings=settings
    ).parent
    strongest = sorted((site / "data").glob("actmax-*/features.14/*_0.png"))[0].name.split("_")[0]
    pages = {
        "model": site / "index.html",
        "layer": site / "layers" / "features.14.html",
        "channel": site / "channels" / "features.14" / f"{strongest}.html",
        "image": next((site / "images").glob("chelsea-*.html")),
    }
    for kind, path in pages.items():
        visit = Visit(browser, path)
        assert visit.problems == [] and visit.broken_images() == [], kind
        visit.close()
        screenshot(browser, path, ROOT / "tests" / "output" / "explorer-mobilenet" / f"{kind}.png")
    assert "Egyptian cat" in pages["image"].read_text() or "tabby" in pages["image"].read_text()
