"""Numbers of npp_core.render (colours, reprojection, offline maps) and the HTML report."""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from affine import Affine
from PIL import Image
from pyproj import Transformer
from rasterio.crs import CRS

from npp_core import render
from npp_core.raster import Grid, write_raster

UTM = CRS.from_epsg(32649)


def _utm_grid(w: int = 120, h: int = 90, res: float = 30.0) -> Grid:
    return Grid(UTM, Affine(res, 0, 680_000.0, 0, -res, 3_940_000.0), w, h)


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


# ------------------------------------------------------------------ colours


def test_colorize_known_pixels():
    a = np.array([[0.0, 10.0], [5.0, np.nan]])
    rgba = render.colorize(a, "viridis", vmin=0.0, vmax=10.0)
    # viridis ends: (0.267004, 0.004874, 0.329415) and (0.993248, 0.906157, 0.143936)
    assert tuple(rgba[0, 0]) == (68, 1, 84, 255)
    assert tuple(rgba[0, 1]) == (253, 231, 37, 255)
    assert rgba[1, 1, 3] == 0  # NaN transparent
    # values beyond the range clip to the ends
    over = render.colorize(np.array([[-5.0, 99.0]]), "viridis", vmin=0.0, vmax=10.0)
    assert tuple(over[0, 0]) == (68, 1, 84, 255) and tuple(over[0, 1]) == (253, 231, 37, 255)


def test_robust_range_percentiles():
    v = np.arange(101, dtype=float)
    v[5] = np.nan
    lo, hi = render.robust_range(v.reshape(1, -1), 10, 90)
    finite = v[np.isfinite(v)]
    assert lo == pytest.approx(np.percentile(finite, 10))
    assert hi == pytest.approx(np.percentile(finite, 90))
    assert render.robust_range(np.full((2, 2), np.nan)) == (0.0, 1.0)
    assert render.robust_range(np.full((2, 2), 3.0)) == (3.0, 4.0)


def test_classes_and_rgb():
    codes = np.array([[1, 2], [0, 9]], dtype=np.uint8)
    rgba = render.classes_rgba(codes, {1: (10, 20, 30), 2: (40, 50, 60)}, nodata=0)
    assert tuple(rgba[0, 0]) == (10, 20, 30, 255)
    assert tuple(rgba[0, 1]) == (40, 50, 60, 255)
    assert rgba[1, 0, 3] == 0 and rgba[1, 1, 3] == 0  # nodata and unknown code
    rgb = np.zeros((3, 1, 3))
    rgb[:, 0, 0] = (255, 0, 128)
    rgb[1, 0, 1] = np.nan
    out = render.rgb_rgba(rgb)
    assert tuple(out[0, 0]) == (255, 0, 128, 255)
    assert out[0, 1, 3] == 0  # NaN
    assert out[0, 2, 3] == 0  # (0, 0, 0): outside the analysis


# ------------------------------------------------------------------ geometry


def test_geographic_grid_bounds_are_exact():
    g = Grid(CRS.from_epsg(4326), Affine(0.01, 0, 110.0, 0, -0.01, 36.0), 100, 100)
    wi = render.to_web_mercator(np.ones((100, 100)), g)
    (s, w), (n, e) = wi.bounds_latlon
    assert (s, w, n, e) == pytest.approx((35.0, 110.0, 36.0, 111.0), abs=1e-9)


def test_utm_bounds_contain_the_grid_and_planted_pixel_lands_where_it_should():
    g = _utm_grid()
    data = np.zeros(g.shape)
    data[40:43, 70:73] = 7.0  # a 3×3 block, centre pixel (41, 71)
    wi = render.to_web_mercator(data, g, categorical=True)
    # every grid corner, in lat/lon, lies inside the overlay bounds
    to_ll = Transformer.from_crs(UTM, 4326, always_xy=True)
    (s, w), (n, e) = wi.bounds_latlon
    left, bottom, right, top = g.bounds
    for x, y in ((left, bottom), (left, top), (right, bottom), (right, top)):
        lon, lat = to_ll.transform(x, y)
        assert s - 1e-9 <= lat <= n + 1e-9 and w - 1e-9 <= lon <= e + 1e-9
    # the planted block's centre maps to a 7 in the web-Mercator image
    x, y = g.transform * (71.5, 41.5)
    mx, my = Transformer.from_crs(UTM, 3857, always_xy=True).transform(x, y)
    col, row = ~wi.transform * (mx, my)
    assert wi.data[0, int(row), int(col)] == 7.0
    # and latlon_to_rowcol inverts the geometry
    lon, lat = to_ll.transform(x, y)
    assert render.latlon_to_rowcol(g, lat, lon) == (41, 71)
    assert render.latlon_to_rowcol(g, lat + 1.0, lon) is None


def test_size_is_capped():
    g = Grid(UTM, Affine(10, 0, 680_000.0, 0, -10, 3_940_000.0), 3000, 1500)
    wi = render.to_web_mercator(np.ones(g.shape, dtype=np.float32), g, max_size=512)
    assert max(wi.data.shape[1:]) <= 512
    assert wi.data.shape[2] > wi.data.shape[1]  # landscape stays landscape
    assert np.nanmean(wi.data) == pytest.approx(1.0)


def test_nan_stays_nan_without_spreading():
    g = _utm_grid(60, 60)
    data = np.ones(g.shape)
    data[:, :30] = np.nan
    wi = render.to_web_mercator(data, g)
    fin = wi.data[0][np.isfinite(wi.data[0])]
    assert fin.size > 0 and np.all(fin == pytest.approx(1.0))
    assert np.isnan(wi.data[0]).any()


def test_web_overlay_png_pixel():
    g = _utm_grid(50, 40)
    data = np.full(g.shape, 10.0)
    ov = render.web_overlay(data, g, "flat", cmap="viridis", vmin=0.0, vmax=10.0)
    img = _decode(ov.png)
    inside = img[img[..., 3] == 255]
    assert inside.shape[0] > 0.9 * 50 * 40 * 0.5
    assert np.all(inside[:, :3] == (253, 231, 37))


def test_undetermined_mask():
    act = np.zeros((3, 1, 4))
    act[:, 0, 0] = (1.0, -1.0, 0.5)  # Σ|.| = 2.5
    act[:, 0, 1] = (0.1, 0.1, -0.1)  # 0.3
    act[:, 0, 2] = np.nan
    act[:, 0, 3] = (0.0, 0.0, 1.0)  # 1.0 -> not below 1.0
    m = render.undetermined_mask(act, 1.0)
    assert m.tolist() == [[False, True, False, False]]


# ------------------------------------------------------------------ maps and legends


def _external_urls(text: str) -> set[str]:
    """URLs the page would fetch: script/img/iframe src, stylesheet links, CSS url(), tile templates."""
    found = set(re.findall(r"""<(?:script|img|iframe|source)[^>]*\ssrc\s*=\s*["'](https?://[^"']+)""", text))
    found |= set(re.findall(r"""<link[^>]*\shref\s*=\s*["'](https?://[^"']+)""", text))
    found |= set(re.findall(r"""url\(\s*["']?(https?://[^)"']+)""", text))
    found |= set(re.findall(r"""L\.tileLayer\(\s*["'](https?://[^"']+)""", text))
    return found


def test_map_is_offline():
    g = _utm_grid(40, 30)
    ov = render.web_overlay(np.random.default_rng(0).random(g.shape), g, "random")
    m = render.make_map([ov])
    assert [u[:5] for _, u in m.default_js] == ["data:"] and [u[:5] for _, u in m.default_css] == ["data:"]
    page = m.get_root().render()
    assert not _external_urls(page)
    assert "data:image/png;base64," in page
    assert "tile" not in page.lower().replace("tilelayer", "")  # no basemap tiles by default
    html = render.standalone_html(m)
    assert not _external_urls(html)
    assert "<script src=" not in html
    assert "L.imageOverlay" in html and "var L" not in html[:100]
    js, css = render.leaflet_assets()
    assert "sourceMappingURL" not in js and "images/layers.png" not in css


def test_legends():
    leg = render.legend_continuous("NPP", "viridis", 0.0, 500.0, "gC m-2 yr-1")
    assert "rgb(68,1,84) 0%" in leg and "rgb(253,231,37) 100%" in leg and "500.0" in leg
    cl = render.legend_classes("Dominant", [("C", (1, 2, 3)), ("S", (4, 5, 6))], {"C": 12.345})
    assert "rgb(1,2,3)" in cl and "12.3 %" in cl
    svg = render.ternary_legend_svg(120, steps=6)
    # the cell nearest each corner is dominated by that corner's colour (C blue, S red, M green)
    fills = re.findall(r'points="([^"]+)" fill="rgb\((\d+),(\d+),(\d+)\)"', svg)
    assert len(fills) == 6 * 6
    bottom_left = min(fills, key=lambda f: float(f[0].split()[0].split(",")[0]))
    assert int(bottom_left[3]) > int(bottom_left[1]) and int(bottom_left[3]) > int(bottom_left[2])


def test_thumbnail_size():
    png = render.thumbnail_png(np.arange(400 * 300, dtype=float).reshape(300, 400), max_size=100)
    img = _decode(png)
    assert max(img.shape[:2]) <= 100


# ------------------------------------------------------------------ report


def test_report_is_self_contained(tmp_path):
    from npp_core.report import build_report

    g = _utm_grid(30, 20)
    write_raster(tmp_path / "npp_mean.tif", np.linspace(0, 600, 600).reshape(20, 30), g)
    write_raster(tmp_path / "drivers" / "MAT.tif", np.ones((20, 30)), g)
    summary = {
        "inputs": {"dataset": "Test basin"},
        "npp": {"mean": 300.0, "sd": 10.0, "by_class": {"forest": 412.5}},
        "pearson": {"MAT": {"r": 0.5, "p": 0.001}},
        "stages": {"casa": {"status": "done", "seconds": 1.0, "message": ""}},
        "params": {"casa": {"eps_scale": 1.0}},
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    html = build_report(tmp_path)
    assert not _external_urls(html)
    assert html.count("<script src=") == 0
    assert html.count("* plotly.js v") == 1  # plotly.js inlined once
    assert html.count("Plotly.newPlot") == 2  # histogram + Pearson
    imgs = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', html)
    assert len(imgs) == 2
    first = _decode(base64.b64decode(imgs[0]))
    assert first.shape[:2] == (20, 30)
    assert "Test basin" in html and "412.5" in html and "forest" in html


def test_dominant_colours():
    labels = {0: "nodata", 1: "C", 2: "S", 3: "M", 4: "CS", 5: "SC", 10: "undetermined"}
    col = render.dominant_colours(labels)
    assert 0 not in col
    assert col[1] == (66, 133, 244) and col[2] == (219, 68, 55) and col[3] == (15, 157, 88)
    # CS = 0.65·C + 0.35·S, SC the other way round
    assert col[4] == (round(0.65 * 66 + 0.35 * 219), round(0.65 * 133 + 0.35 * 68), round(0.65 * 244 + 0.35 * 55))
    assert col[5] == (round(0.65 * 219 + 0.35 * 66), round(0.65 * 68 + 0.35 * 133), round(0.65 * 55 + 0.35 * 244))
    assert col[10] == (200, 200, 200)
