"""The app in a real browser: Debian's Chromium driven by Playwright (no `playwright install`).

Piano roll: loads an example, paints a stroke on the roll with the mouse, presses Generate, waits for the result
picture and the MIDI download, and saves a screenshot to ``test-artifacts/app-pianoroll.png``. Image: types a
prompt, presses Generate, waits for the picture and its PNG download, puts the result into the inpainting editor,
and saves ``test-artifacts/app-image.png``. Video: types a prompt, presses Generate, waits until Chromium has
decoded the MP4 it plays (so the clip is browser-playable), checks the GIF download and saves
``test-artifacts/app-video.png``. Image search: opens the "Test-time search" accordion, runs a best-of-2 and waits
for the two captioned candidates (``test-artifacts/app-image-search.png``). A missing browser fails the tests: CI
installs ``chromium`` from ``.ci/apt-packages``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.app.test_image_tab import (  # noqa: F401  (fixtures: an app whose Image tab has a tiny model)
    image_app_settings,
    image_server,
    tiny_image_pipeline_dir,
)
from tests.app.test_search_options import (  # noqa: F401  (fixtures: an app with every tiny model and a tiny CLIP)
    search_server,
    search_settings,
    tiny_clip_dir,
)
from tests.app.test_video_tab import (  # noqa: F401  (fixtures: an app whose Video tab has a tiny model)
    tiny_video_pipeline_dir,
    video_app_settings,
    video_server,
)

pytestmark = pytest.mark.slow  # minutes, not seconds: `make test-slow`

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Headless Chromium in a container: no sandbox (root), no GPU, nothing fetched from the network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                 "--disable-default-apps", "--mute-audio"]
EXAMPLE = "Reel: From Night Till Morn (8 bars)"


def chromium_path() -> str:
    """The Chromium binary: ``$LINGEN_CHROMIUM``, else ``chromium`` on PATH; fails the test when absent."""
    path = os.environ.get("LINGEN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path or not Path(path).exists():
        pytest.fail("no Chromium found for the browser test: install Debian's package (`apt-get install chromium`, "
                    "listed in .ci/apt-packages) or set LINGEN_CHROMIUM to a Chromium binary", pytrace=False)
    return path


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def wait_for_fit(page, count: int) -> None:
    """Wait until the editor has fitted ``count`` rolls to its box (``data-fits``, set by the app's script)."""
    page.wait_for_function(f"() => Number(document.getElementById('roll-editor')?.dataset.fits || 0) >= {count}")


def screenshot_if_failed(page, request, name: str) -> None:
    """Save ``test-artifacts/<name>-failure.png`` when the test failed (what the page showed)."""
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}-failure.png"), full_page=True)


@pytest.fixture
def shoot_on_failure(page, request):
    """Save ``test-artifacts/app-pianoroll-failure.png`` when the test fails (what the page showed)."""
    yield
    screenshot_if_failed(page, request, "app-pianoroll")


@pytest.fixture
def shoot_image_on_failure(page, request):
    """Save ``test-artifacts/app-image-failure.png`` when the test fails."""
    yield
    screenshot_if_failed(page, request, "app-image")


@pytest.fixture
def shoot_video_on_failure(page, request):
    """Save ``test-artifacts/app-video-failure.png`` when the test fails."""
    yield
    screenshot_if_failed(page, request, "app-video")


def test_paint_generate_and_download_in_the_browser(server, page, shoot_on_failure):
    page.goto(server)
    page.get_by_text("Bars are numbered from 1").wait_for()  # the first example loads with the page
    wait_for_fit(page, 1)

    page.get_by_label("Example").click()
    page.get_by_role("option", name=EXAMPLE).click()
    page.get_by_role("button", name="Load example").click()
    page.locator("#piece-info", has_text=EXAMPLE).wait_for()
    wait_for_fit(page, 2)  # the editor zooms the new roll to fit; paint after that
    canvas_width, box_width = page.evaluate("""() => [document.querySelector('#roll-editor canvas'),
        document.querySelector('#roll-editor .pixi-target')].map((e) => e.getBoundingClientRect().width)""")
    assert abs(canvas_width - box_width) <= 1, (canvas_width, box_width)  # the roll is shown large

    # One candidate and few steps keep the test quick; typed into the sliders' number boxes like a user would.
    for label, value in (("Number of samples (candidates to choose from)", "1"), ("Steps (more = cleaner, slower)",
                                                                                 "4")):
        box = page.get_by_label(f"number input for {label}")
        box.fill(value)
        box.press("Enter")

    # A stroke across the middle of the roll (the canvas shows the picture centred). Few pointer events: each
    # one re-renders the WebGL canvas, which takes about a second in software rendering. On a loaded machine
    # the editor can drop a stroke it had no time to render; the app then answers "the mask covers nothing"
    # (itself a tested behaviour) and the test paints again, slower, at most three times.
    box = page.locator("#roll-editor canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2 - 120, box["y"] + box["height"] / 2 - 30
    for attempt in range(3):
        page.mouse.move(x, y)
        page.wait_for_timeout(300 * attempt)
        page.mouse.down()
        for i in range(1, 7):
            page.mouse.move(x + 40 * i, y + 20 * i / 6)
            page.wait_for_timeout(150 * attempt)
        page.mouse.up()
        page.wait_for_timeout(500 * (attempt + 1))
        page.locator("#generate").click()
        done = page.locator("#result-stats", has_text="4 steps × RePaint 2")
        refused = page.get_by_text("the mask covers nothing").first
        done.or_(refused).first.wait_for()
        if done.count():
            break
        for close in page.locator(".toast-close").all():  # dismiss the refusal before painting again
            close.click()
        refused.wait_for(state="hidden")
    page.locator("#result-image img").wait_for()
    link = page.locator("#result-midi a").first
    link.wait_for()
    page.locator("#result-stats", has_text="4 steps × RePaint 2").wait_for()

    assert page.locator("input[type=radio][value=painting]").is_checked()
    href = link.get_attribute("href")
    assert href and href.endswith(".mid")
    download = page.request.get(href if href.startswith("http") else server.rstrip("/") + href)
    assert download.ok and download.body().startswith(b"MThd")

    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(500)  # let the audio waveform finish drawing
    page.screenshot(path=str(ARTIFACTS / "app-pianoroll.png"), full_page=True)
    assert (ARTIFACTS / "app-pianoroll.png").stat().st_size > 10_000


def test_prompt_generate_download_and_reuse_an_image_in_the_browser(image_server, page,  # noqa: F811
                                                                    shoot_image_on_failure):
    page.goto(image_server)
    page.get_by_role("tab", name="Image").click()
    page.locator("#image-model-status", has_text="32×32 pictures").wait_for()

    page.locator("#image-prompt textarea").fill("a red circle to the left of a blue square")
    box = page.get_by_label("number input for Steps (fewer = faster, rougher)")
    box.fill("4")
    box.press("Enter")
    page.locator("#image-generate").click()

    page.locator("#image-result img").wait_for()
    page.locator("#image-stats", has_text="4 steps").wait_for()
    link = page.locator("#image-file a").first
    link.wait_for()
    href = link.get_attribute("href")
    assert href and href.endswith(".png")
    download = page.request.get(href if href.startswith("http") else image_server.rstrip("/") + href)
    assert download.ok and download.body().startswith(b"\x89PNG")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "app-image-result.png").write_bytes(download.body())
    assert Image.open(ARTIFACTS / "app-image-result.png").size == (32, 32)  # the model's own size

    checkbox = page.locator("#image-inpaint input[type=checkbox]")
    assert not checkbox.is_checked()
    page.locator("#image-use-result").click()  # the result goes into the editor, fitted to its box
    page.wait_for_function("() => Number(document.getElementById('image-editor')?.dataset.fits || 0) >= 1")
    page.wait_for_function("() => document.querySelector('#image-inpaint input[type=checkbox]')?.checked")
    canvas_width, box_width = page.evaluate("""() => [document.querySelector('#image-editor canvas'),
        document.querySelector('#image-editor .pixi-target')].map((e) => e.getBoundingClientRect().width)""")
    assert abs(canvas_width - box_width) <= 1, (canvas_width, box_width)

    page.wait_for_timeout(500)  # let the editor finish drawing
    page.screenshot(path=str(ARTIFACTS / "app-image.png"), full_page=True)
    assert (ARTIFACTS / "app-image.png").stat().st_size > 10_000


def test_prompt_generate_play_and_download_a_clip_in_the_browser(video_server, page,  # noqa: F811
                                                                  shoot_video_on_failure):
    page.goto(video_server)
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-model-status", has_text="4-frame 16×16 clips").wait_for()

    page.locator("#video-prompt textarea").fill("a red circle moves to the right")
    box = page.get_by_label("number input for Steps (fewer = faster, rougher)")
    box.fill("4")
    box.press("Enter")
    page.locator("#video-generate").click()

    page.locator("#video-stats", has_text="4 steps").wait_for()
    # Chromium has decoded the MP4 (H.264 in yuv420p): enough data for the current frame, the ×8 size, no error.
    page.wait_for_function("""() => {
        const v = document.querySelector('#video-result video');
        return v && !v.error && v.readyState >= 2 && v.videoWidth === 128 && v.videoHeight === 128;
    }""")
    links = [a.get_attribute("href") for a in page.locator("#video-files a").all()]
    gifs = [href for href in links if href and href.endswith(".gif")]
    assert len(gifs) == 1 and any(href and href.endswith(".mp4") for href in links), links
    download = page.request.get(gifs[0] if gifs[0].startswith("http") else video_server.rstrip("/") + gifs[0])
    assert download.ok and download.body().startswith(b"GIF89a")

    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "app-video.png"), full_page=True)
    assert (ARTIFACTS / "app-video.png").stat().st_size > 10_000


@pytest.fixture
def shoot_search_on_failure(page, request):
    """Save ``test-artifacts/app-image-search-failure.png`` when the test fails."""
    yield
    screenshot_if_failed(page, request, "app-image-search")


def test_a_best_of_two_image_search_shows_two_captioned_candidates_in_the_browser(search_server, page,  # noqa: F811
                                                                                  shoot_search_on_failure):
    page.goto(search_server)
    page.get_by_role("tab", name="Image").click()
    page.locator("#image-prompt textarea").fill("a red circle to the left of a blue square")
    box = page.get_by_label("number input for Steps (fewer = faster, rougher)")
    box.fill("2")
    box.press("Enter")
    assert not page.locator("#image-candidates-box").is_visible()  # nothing to show before a search

    page.locator("#image-search").get_by_text("Test-time search").click()
    page.locator("#image-search-strategy").get_by_text("best-of-N").click()
    n = page.locator("#image-search-n input[type=number]")
    n.fill("2")
    n.press("Enter")
    page.locator("#image-generate").click()

    page.locator("#image-search-line", has_text="best-of-n over 2 candidates").wait_for()
    captions = page.locator("#image-candidates .caption-label")
    page.wait_for_function("() => document.querySelectorAll('#image-candidates .caption-label').length === 2")
    texts = captions.all_inner_texts()
    assert all(re.fullmatch(r"(✓ )?seed [01] · score -?[\d.e+-]+", t.strip()) for t in texts), texts
    assert sum(t.strip().startswith("✓") for t in texts) == 1
    page.locator("#image-stats", has_text="2 steps").wait_for()

    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "app-image-search.png"), full_page=True)
