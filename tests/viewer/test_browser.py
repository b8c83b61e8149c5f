"""The viewer in a real browser: Playwright drives Debian's chromium against a real ``slidegrad view``
on a small workflow run (tests/viewer/conftest.py)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from .conftest import TILES

pytestmark = pytest.mark.workflow

EXPLAINED = (512, 512)  # an explained tile's top-left (128 level-0 px a side)
UNEXPLAINED = (768, 0)


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 800}, accept_downloads=True)
    page = context.new_page()
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(server + "/")
    page.wait_for_function("window.sg && sg.panes.length === 1 && sg.ready()", timeout=30_000)
    yield page
    context.close()


def settle(page) -> None:
    page.wait_for_function("sg.ready()", timeout=30_000)
    page.wait_for_timeout(400)  # the next animation frames draw what loaded


def pixels(page, x: float, y: float, pane: int = 0, r: int = 2) -> np.ndarray:
    """The screenshot's RGB around level-0 ``(x, y)`` in a pane, ``(2r+1, 2r+1, 3)`` int."""
    p = page.evaluate(f"sg.toScreen({pane}, {x}, {y})")
    shot = page.screenshot(clip={"x": p["x"] - r, "y": p["y"] - r, "width": 2 * r + 1, "height": 2 * r + 1})
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), np.int32)


def set_opacity(page, key: str, value: float, pane: int = 0) -> None:
    page.eval_on_selector(
        f"#pane{pane} [data-opacity='{key}']",
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }",
        str(value),
    )


def centre_on(page, x: float, y: float, zoom: float = 2) -> None:
    page.evaluate(f"sg.goTo(0, {x}, {y}, {zoom})")
    settle(page)


def test_loads_with_no_console_errors(page):
    settle(page)
    assert page.errors == []
    assert page.evaluate("sg.slide.name") == "s1"
    assert page.locator("#pane0 .box").count() == len(TILES)
    labels = page.locator("#pane0 .layer span").all_inner_texts()
    assert labels == ["gradcam", "vanilla", "p(negative)", "p(positive)"]


def test_toggling_a_layer_changes_the_pixels_at_a_tile(page):
    x, y = EXPLAINED[0] + 40, EXPLAINED[1] + 40
    centre_on(page, x, y)
    shown = pixels(page, x, y)
    page.uncheck("#pane0 [data-layer='saliency:gradcam']")
    settle(page)
    hidden = pixels(page, x, y)
    page.check("#pane0 [data-layer='saliency:vanilla']")
    settle(page)
    other = pixels(page, x, y)
    assert np.abs(shown - hidden).mean() > 10 and np.abs(other - hidden).mean() > 10
    assert np.abs(other - shown).mean() > 1  # two methods, two colours
    assert page.errors == []


def test_opacity_blends_the_layer_over_the_slide(page):
    x, y = EXPLAINED[0] + 72, EXPLAINED[1] + 72  # the centre of a map pixel (16 level-0 px)
    centre_on(page, x, y, zoom=3)
    blends = {}
    for alpha in (0.0, 0.5, 1.0):
        set_opacity(page, "saliency:gradcam", alpha)
        settle(page)
        blends[alpha] = pixels(page, x, y, r=0)[0, 0]
    assert np.abs(blends[1.0] - blends[0.0]).max() > 20
    assert np.abs(blends[0.5] - (blends[0.0] + blends[1.0]) / 2).max() <= 3, blends


def test_clicking_an_explained_tile_opens_its_masks(page):
    x, y = EXPLAINED[0] + 64, EXPLAINED[1] + 64
    centre_on(page, x, y)
    p = page.evaluate(f"sg.toScreen(0, {x}, {y})")
    page.mouse.click(p["x"], p["y"])
    page.wait_for_selector("#panel-maps figure[data-method='vanilla'] img", timeout=20_000)
    assert page.locator("#panel h3").first.inner_text() == "Tile x512_y512"
    methods = page.locator("#panel-maps figure[data-method]").evaluate_all("els => els.map(e => e.dataset.method)")
    assert sorted(methods) == ["gradcam", "vanilla"]
    page.wait_for_function(
        "[...document.querySelectorAll('#panel-maps img')].every(i => i.complete && i.naturalWidth === 64)",
        timeout=20_000,
    )
    assert page.locator("#metrics tr").count() == 3  # header + one row per method (deletion)
    assert page.errors == []


def test_clicking_an_unexplained_tile_computes_the_saliency_map(page, viewer_run):
    import slidegrad as sg

    x, y = UNEXPLAINED[0] + 50, UNEXPLAINED[1] + 70
    centre_on(page, x, y)
    page.select_option("#method", "vanilla")
    p = page.evaluate(f"sg.toScreen(0, {x}, {y})")
    page.mouse.click(p["x"], p["y"])
    page.wait_for_selector("#ondemand-time", timeout=120_000)
    result = page.evaluate("sg.lastCompute")
    assert (result["x"], result["y"], result["size"], result["method"]) == (*UNEXPLAINED, 128, "vanilla")
    assert "computed in" in page.inner_text("#ondemand-time")
    model = sg.load_model(str(viewer_run / "model"))
    with sg.WSI(viewer_run / "s1.tiff", tile_px=64, tile_um=64) as wsi:
        tile = sg.get_preprocess_fn(model)(wsi.read(*UNEXPLAINED)[None])
    expected = sg.SaliencyMap(model).vanilla(tile)[0]
    np.testing.assert_allclose(np.array(result["mask"], np.float32), expected, rtol=0, atol=1e-6)
    settle(page)
    assert page.locator("#pane0 .box.ondemand").count() == 1
    assert page.errors == []


def test_two_panes_stay_in_sync_and_export_a_png(page):
    page.check("#compare")
    page.wait_for_function("sg.panes.length === 2 && sg.ready()", timeout=30_000)
    page.evaluate("sg.goTo(0, 300, 700, 2.5)")
    settle(page)
    centres = page.evaluate("sg.panes.map(p => { const c = p.viewer.viewport.getCenter(); return [c.x, c.y, p.viewer.viewport.getZoom()]; })")
    np.testing.assert_allclose(centres[0], centres[1], rtol=1e-6)
    # pane 2 shows the other method
    assert page.is_checked("#pane1 [data-layer='saliency:vanilla']") and page.is_checked("#pane0 [data-layer='saliency:gradcam']")
    with page.expect_download() as download:
        page.click("#export")
    assert download.value.suggested_filename == "s1-view.png"
    url = page.evaluate("sg.exported")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    widths = page.evaluate("sg.panes.map(p => p.viewer.drawer.canvas.width)")
    assert image.size[0] == sum(widths) and np.asarray(image).std() > 5
    assert page.errors == []


def test_hover_reads_the_values_and_a_colour_map_recolours_the_layer(page):
    x, y = EXPLAINED[0] + 40, EXPLAINED[1] + 40
    centre_on(page, x, y)
    p = page.evaluate(f"sg.toScreen(0, {x}, {y})")
    page.mouse.move(p["x"], p["y"])
    page.wait_for_function("document.getElementById('hover').textContent.includes('tile x512_y512')", timeout=10_000)
    text = page.inner_text("#hover")
    assert "gradcam: " in text and "p(positive): " in text and "negative" in text
    page.uncheck("#pane0 [data-layer='saliency:gradcam']")
    page.check("#pane0 [data-layer='prediction:1']")  # a probability between 0 and 1: coolwarm is coloured
    settle(page)
    before = pixels(page, x, y)
    page.select_option("#pane0 [data-cmap='prediction:1']", "gray")
    page.wait_for_function("sg.panes[0].layers['prediction:1'].cmap === 'gray'")
    page.wait_for_timeout(300)
    settle(page)
    after = pixels(page, x, y)
    assert np.abs(after - before).mean() > 5
    assert page.locator("#pane0 img.legend").nth(3).get_attribute("src") == "/cmap/gray.png"
    assert page.errors == []
