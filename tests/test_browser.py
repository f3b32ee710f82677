"""End-to-end: the dashboard in a real (headless) Chromium, fully offline.

Starts ``streamlit run app.py`` on a free port with the project's Python, blocks
every request to a non-local host, opens each page, checks that map overlays
really load (``naturalWidth > 0`` inside the map iframes), runs the analysis
on the bundled sample basin from an empty stage cache (the time of that cold run is
written to ``tests/screenshots/cold_run_seconds.txt``) and saves a screenshot of every
page into ``tests/screenshots/`` (git-ignored).
Skipped when ``/usr/bin/chromium`` is absent.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
SHOTS = Path(__file__).resolve().parent / "screenshots"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (apt install chromium)")

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    port = _free_port()
    # the bundled sample basin, as a user gets it; a private temp folder gives the app an empty stage
    # cache, so the Run below is a real cold run of every stage
    (tmp / "t").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NPP_SAMPLE_DIR"}
    env.update(TMPDIR=str(tmp / "t"), PYTHONUNBUFFERED="1")
    log = open(tmp / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read().strip() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            break
    else:
        proc.terminate()
        pytest.fail("streamlit did not become healthy in 60 s:\n" + (tmp / "streamlit.log").read_text()[-3000:])
    if proc.poll() is not None:
        pytest.fail("streamlit exited:\n" + (tmp / "streamlit.log").read_text()[-3000:])
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def page(server):
    SHOTS.mkdir(exist_ok=True)
    (SHOTS / ".gitignore").write_text("*\n")  # screenshots are for review, never committed
    blocked: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"],
        )
        ctx = browser.new_context(viewport={"width": 1400, "height": 2200})

        def guard(route):
            u = route.request.url
            if re.match(r"^(https?|wss?)://(127\.0\.0\.1|localhost)(:\d+)?/", u) or u.startswith(("data:", "blob:", "about:")):
                route.continue_()
            else:
                blocked.append(u)
                route.abort()

        ctx.route("**/*", guard)
        pg = ctx.new_page()
        pg.set_default_timeout(30_000)
        pg.blocked = blocked  # type: ignore[attr-defined]
        yield pg
        ctx.close()
        browser.close()


def _idle(pg, timeout: float = 60_000) -> None:
    pg.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)
    pg.wait_for_timeout(300)
    pg.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)


def _goto(pg, server: str, path: str) -> None:
    """Open a page by its sidebar link (a reload would start a new session and lose the results)."""
    if not path:
        pg.goto(server)
    else:
        pg.locator('[data-testid="stSidebarNav"] a', has_text=re.compile(rf"^\s*{path}\s*$")).first.click()
        pg.wait_for_url(re.compile(rf"/{path}$"))
    pg.wait_for_timeout(300)
    _idle(pg)


def _overlay_images(pg, min_count: int = 1, timeout: float = 30.0) -> list[int]:
    """naturalWidth of the Leaflet overlay images in every map iframe (waits until they load)."""
    end = time.time() + timeout
    widths: list[int] = []
    while time.time() < end:
        widths = []
        for fr in pg.frames:
            try:
                widths += fr.eval_on_selector_all("img.leaflet-image-layer", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
            except Exception:
                pass
        if len([w for w in widths if w > 0]) >= min_count:
            return widths
        time.sleep(0.5)
    return widths


def test_every_page_offline(server, page):
    pg = page
    _goto(pg, server, "")
    assert pg.get_by_text("NPP Driver Explorer").first.is_visible()
    pg.screenshot(path=str(SHOTS / "0_home.png"), full_page=True)

    _goto(pg, server, "Data")
    pg.get_by_text(re.compile(r"Layers")).first.wait_for()
    thumbs = pg.eval_on_selector_all('[data-testid="stImage"] img', "els => els.map(e => e.naturalWidth)")
    assert thumbs and all(w > 0 for w in thumbs), thumbs
    widths = _overlay_images(pg)
    assert any(w > 0 for w in widths), f"data map overlay did not load: {widths}"
    pg.wait_for_timeout(500)
    pg.screenshot(path=str(SHOTS / "1_data.png"), full_page=True)

    _goto(pg, server, "Parameters")
    pg.get_by_text(re.compile("CASA parameters per land-cover class")).wait_for()
    pg.screenshot(path=str(SHOTS / "2_parameters.png"), full_page=True)

    _goto(pg, server, "Run")
    t0 = time.perf_counter()
    pg.get_by_role("button", name=re.compile("Run")).first.click()
    pg.get_by_text(re.compile(r"Last run")).wait_for(timeout=900_000)
    _idle(pg, 900_000)
    seconds = time.perf_counter() - t0
    assert pg.get_by_text(re.compile("Results are ready")).count() >= 1
    # every stage ran (nothing restored from a cache) — the time is recorded for review, not asserted
    total = pg.get_by_text(re.compile(r"^Total [\d.]+ s\.$")).first.inner_text()
    (SHOTS / "cold_run_seconds.txt").write_text(f"click to results shown: {seconds:.1f} s; pipeline: {total}\n")
    print(f"sample basin cold run in the browser: {seconds:.1f} s (pipeline {total})")
    pg.screenshot(path=str(SHOTS / "3_run.png"), full_page=True)

    _goto(pg, server, "Explore")
    widths = _overlay_images(pg)
    assert any(w > 0 for w in widths), f"explore overlay did not load: {widths}"
    # click the middle of the map: the pixel's values and its NPP series appear
    frame = next(f for f in pg.frames if "st_folium" in f.url)
    cont = frame.locator(".leaflet-container").first
    cb, ib = cont.bounding_box(), frame.locator("img.leaflet-image-layer").first.bounding_box()
    cont.click(position={"x": ib["x"] + ib["width"] / 2 - cb["x"], "y": ib["y"] + ib["height"] / 2 - cb["y"]})
    pg.get_by_text(re.compile(r"Pixel")).first.wait_for()
    _idle(pg)
    pg.get_by_text(re.compile(r"NPP per (month|year) at this pixel")).first.wait_for()
    pg.wait_for_timeout(500)
    pg.screenshot(path=str(SHOTS / "4_explore.png"), full_page=True)
    pg.get_by_text("Dominant driver (threshold)", exact=True).click()
    pg.get_by_text(re.compile(r"Dominance threshold|Dominant-driver classes: not available")).first.wait_for()
    _idle(pg)
    if pg.get_by_text(re.compile("Dominance threshold")).count():
        pg.get_by_text(re.compile(r"Dominant driver at \d+ %")).first.wait_for()
        pg.wait_for_timeout(1000)
        widths = _overlay_images(pg)
        assert any(w > 0 for w in widths), f"dominant-class overlay did not load: {widths}"
        # move the threshold with the keyboard: the class map and its legend are redrawn for the new value
        slider = pg.get_by_role("slider").first
        slider.focus()
        for _ in range(10):
            pg.keyboard.press("ArrowLeft")
        _idle(pg)
        pg.get_by_text(re.compile(r"Dominant driver at (?!60 )\d+ %")).first.wait_for()
        widths = _overlay_images(pg)
        assert any(w > 0 for w in widths), f"recoloured class overlay did not load: {widths}"
        pg.wait_for_timeout(500)
    pg.screenshot(path=str(SHOTS / "4_explore_dominant.png"), full_page=True)
    pg.get_by_text("Charts", exact=True).click()
    pg.get_by_text(re.compile("NPP by land-cover class")).first.wait_for()
    _idle(pg)
    pg.locator(".js-plotly-plot").first.wait_for()
    pg.wait_for_timeout(1000)
    pg.screenshot(path=str(SHOTS / "4_explore_charts.png"), full_page=True)

    _goto(pg, server, "Sensitivity")
    pg.get_by_text("What to explore").first.wait_for()
    pg.screenshot(path=str(SHOTS / "5_sensitivity.png"), full_page=True)
    pg.get_by_text("Dominance threshold (instant)", exact=True).click()
    _idle(pg)
    pg.get_by_text(re.compile(r"Reference: the current threshold")).first.wait_for()
    pg.locator(".js-plotly-plot").first.wait_for()
    pg.wait_for_timeout(800)
    pg.screenshot(path=str(SHOTS / "5_sensitivity_threshold.png"), full_page=True)

    _goto(pg, server, "Export")
    pg.get_by_text(re.compile(r"Report \(offline HTML\)")).wait_for()
    pg.screenshot(path=str(SHOTS / "6_export.png"), full_page=True)
    # download a GeoTIFF through the browser and open it with rasterio
    pg.get_by_text("Single files", exact=True).click()
    _idle(pg)
    with pg.expect_download(timeout=60_000) as dl:
        pg.get_by_role("button", name=re.compile(r"Download .*\.tif")).first.click()
    tif = SHOTS / "_download.tif"
    dl.value.save_as(str(tif))
    import rasterio

    with rasterio.open(tif) as ds:
        assert ds.crs is not None and ds.count >= 1 and ds.width > 0
        assert ds.read(1, masked=True).count() > 0
    tif.unlink(missing_ok=True)

    # upload a zipped dataset through the real file input
    from test_app import make_dataset, zip_dir  # noqa: E402

    up = make_dataset(SHOTS / "_upload_src", name="Browser upload basin", w=20, h=16, seed=7)
    zpath = SHOTS / "_upload.zip"
    zpath.write_bytes(zip_dir(up))
    shutil.rmtree(up, ignore_errors=True)
    _goto(pg, server, "Data")
    pg.get_by_text("Upload a dataset (.zip)", exact=True).click()
    _idle(pg)
    pg.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(zpath))
    pg.get_by_text(re.compile("Browser upload basin")).first.wait_for()
    _idle(pg)
    zpath.unlink(missing_ok=True)
    pg.screenshot(path=str(SHOTS / "7_data_uploaded.png"), full_page=True)

    # nothing on any page reached for the internet (they were blocked, and none were needed for the checks above)
    external = [u for u in pg.blocked if "tile.openstreetmap" not in u]
    assert not external, f"pages tried to load external resources: {external[:5]}"
