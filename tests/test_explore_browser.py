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
from test_explore import TINY, build_site

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
    strongest = sorted((site / "data").glob("actmax-*/features.14/*_0.webp"))[0].name.split("_")[0]
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


def test_model_page_search_finds_channels_by_layer_and_index_and_by_what_drives_them(site, browser):
    import json

    index = json.loads((site / "search.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
    visit = Visit(browser, site / "index.html")

    def results(query: str) -> list[str]:
        visit.page.fill("#search-query", query)
        return visit.page.eval_on_selector_all("#search-results a", "links => links.map(a => a.getAttribute('href'))")

    assert results("features.3 5") == ["channels/features.3/5.html"]
    assert results("features.3[5]") == ["channels/features.3/5.html"]
    assert visit.page.inner_text("#search-results") == "features.3[5]"
    results("features.3 99")
    assert "features.3 has 16 channels (0 to 15)" in visit.page.inner_text("#search-results")
    photo = next(d for d in index["drivers"] if d["kind"] == "photo" and d["name"] == "photo_00.png")
    expected = [photo["page"]] + [f"channels/{layer}/{channel}.html" for layer, channel in photo["channels"]]
    assert results("PHOTO_00") == expected and len(photo["channels"]) == 2 * TINY.explain_top
    label = next(d for d in index["drivers"] if d["kind"].startswith("class"))
    found = results(label["name"])
    assert f"channels/{label['channels'][0][0]}/{label['channels'][0][1]}.html" in found
    assert results("zebra crossing") == [] and "no layer, channel" in visit.page.inner_text("#search-results")
    visit.page.fill("#search-query", "features.1[3]")
    with visit.page.expect_navigation():
        visit.page.press("#search-query", "Enter")
    assert visit.page.url.endswith("/channels/features.1/3.html") and visit.problems == []
    visit.close()


WIDE = 1280  # channels of features.18 of mobilenet_v2


@pytest.fixture(scope="module")
def wide_site(tmp_path_factory) -> Path:
    """A site through the real build path: one layer of 1,280 channels, 3 photos, no actmax (tiles are crops)."""
    import torch
    from test_explore import make_photos

    from fmapviz.inputs import default_transform
    from fmapviz.models import LoadedModel

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, WIDE, 3, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(WIDE, 4),
    ).eval()  # fmt: skip
    loaded = LoadedModel(net, default_transform(32, resize=32), ["a", "b", "c", "d"], "wide", None)
    folder = tmp_path_factory.mktemp("wide")
    make_photos(folder / "photos", 3)
    settings = ExploreSettings(topk=1, crops=1, least=0, explain_top=1, actmax_top=0, actmax_copies=1, batch_size=4)
    return fmapviz.explore(loaded, folder / "photos", "0", folder / "site", settings=settings, progress=False).parent


def test_a_layer_page_of_1280_tiles_is_usable_within_a_second(wide_site, browser):
    import json

    page = wide_site / "layers" / "0.html"
    data = json.loads(page.read_text().split('id="tile-data">')[1].split("</script>")[0])
    assert [row[0] for row in data] == list(range(WIDE))

    def measure() -> tuple[Visit, dict[str, float]]:
        visit = Visit(browser, page)
        timing = visit.page.evaluate(
            """() => { const n = performance.getEntriesByType('navigation')[0];
                       return {ready: n.domContentLoadedEventEnd, load: n.loadEventEnd}; }"""
        )
        act = """key => { const t0 = performance.now(); const sort = document.getElementById('sort');
                          sort.value = key; sort.dispatchEvent(new Event('change')); document.body.offsetHeight;
                          return performance.now() - t0; }"""
        timing["sort"] = visit.page.evaluate(act, "max")
        timing["filter"] = visit.page.evaluate(
            """() => { const t0 = performance.now(); const box = document.getElementById('hide-dead');
                       box.click(); document.body.offsetHeight; return performance.now() - t0; }"""
        )
        return visit, timing

    runs = []
    for attempt in range(3):  # the best of three: the page's own cost, less the other jobs on a shared machine
        visit, timing = measure()
        runs.append(timing)
        if attempt < 2:
            visit.close()
    timing = min(runs, key=lambda t: t["load"] + t["sort"] + t["filter"])
    print(f"layer page of {WIDE} tiles: {timing}")
    assert visit.problems == [] and visit.broken_images() == []
    assert timing["load"] + timing["sort"] + timing["filter"] < 1000, timing
    alive = sorted((row for row in data if row[1] != "dead"), key=lambda row: (-row[3], row[0]))
    shown = [int(c) for c in visit.page.eval_on_selector_all("#tiles > a", "ts => ts.map(t => t.dataset.channel)")]
    assert shown == [row[0] for row in alive[:240]]  # sorted and filtered over every channel, one page shown
    assert visit.page.inner_text("#shown").startswith(f"{len(alive)} of {WIDE} channels")
    visit.page.click("#more")  # a page more; the click scrolls to the button, whose observer may bring more pages
    visit.page.wait_for_timeout(100)
    shown = [int(c) for c in visit.page.eval_on_selector_all("#tiles > a", "ts => ts.map(t => t.dataset.channel)")]
    assert len(shown) >= min(480, len(alive)) and (len(shown) % 240 == 0 or len(shown) == len(alive))  # whole pages
    assert shown == [row[0] for row in alive[: len(shown)]]  # in the sorted, filtered order
    visit.page.uncheck("#hide-dead")
    visit.page.select_option("#sort", "channel")
    for _ in range(10):  # scrolling to the end brings every tile
        visit.page.mouse.wheel(0, 100_000)
        visit.page.wait_for_timeout(50)
    assert visit.page.locator("#tiles > a").count() == WIDE and visit.page.locator("#more").is_hidden()
    last = visit.page.locator("#tiles > a").last
    assert last.get_attribute("href") == "../channels/0/1279.html" and last.get_attribute("data-max") == str(
        data[-1][3]
    )
    visit.close()


def test_channel_page_captions_sit_under_their_images(site, browser):
    visit = Visit(browser, page_types(site)["channel"])
    boxes = visit.page.eval_on_selector_all(
        "figure",
        """fs => fs.filter(f => f.querySelector('img') && f.querySelector('figcaption')).map(f => {
             const i = f.querySelector('img').getBoundingClientRect();
             const c = f.querySelector('figcaption').getBoundingClientRect();
             return [i.left, i.right, i.bottom, c.left, c.right, c.top]; })""",
    )
    assert len(boxes) >= 5
    for left, right, bottom, caption_left, caption_right, top in boxes:
        assert left - 1 <= caption_left and caption_right <= right + 1 and top >= bottom - 1
    visit.close()
