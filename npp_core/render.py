"""Rasters to pictures: colour maps, web-Mercator PNG overlays, legends, offline Leaflet maps.

Pure presentation helpers used by the dashboard and the HTML report. Nothing here
imports streamlit and nothing reaches the internet:

* a raster (rows, cols) on any :class:`~npp_core.raster.Grid` is reprojected to
  EPSG:3857 (the projection Leaflet draws in) with its longest side capped near
  ``max_size`` pixels, colour-mapped to RGBA and encoded as PNG; the overlay
  bounds are the lat/lon corners of that 3857 rectangle, so the image lines up
  exactly with Leaflet's own projection;
* legends are plain HTML/SVG strings (no branca colourbars, which need d3 from
  a CDN);
* folium maps get Leaflet's JS/CSS from the ``xstatic-leaflet`` package as
  ``data:`` URIs (for ``st_folium``) or inline ``<script>``/``<style>`` blocks
  (for a standalone HTML page), never from a CDN. Basemap tiles are off by
  default.
"""
from __future__ import annotations

import base64
import functools
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .attribution import undetermined_mask  # noqa: F401  (re-exported for the pages)
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject, transform_bounds

from npp_core.raster import Grid

__all__ = [
    "Overlay",
    "WebImage",
    "colorize",
    "classes_rgba",
    "rgb_rgba",
    "to_web_mercator",
    "png_bytes",
    "data_url",
    "web_overlay",
    "thumbnail_png",
    "robust_range",
    "legend_continuous",
    "legend_classes",
    "ternary_legend_svg",
    "leaflet_assets",
    "make_map",
    "standalone_html",
    "latlon_to_rowcol",
    "undetermined_mask",
    "dominant_colours",
    "CATEGORY_RGB",
    "LANDCOVER_COLOURS",
]

WEB_MERCATOR = CRS.from_epsg(3857)
WGS84 = CRS.from_epsg(4326)

CATEGORY_RGB: dict[str, tuple[int, int, int]] = {"C": (66, 133, 244), "S": (219, 68, 55), "M": (15, 157, 88)}


def dominant_colours(labels: Mapping[int, str], categories: Sequence[str] | None = None) -> dict[int, tuple[int, int, int]]:
    """Colour of every dominant-driver class code.

    Single categories get their own colour (C blue, S red, M green, others
    from a fixed palette); an ordered pair "XY" (X first) mixes 65 % of X with
    35 % of Y, so "CS" and "SC" differ but both sit between blue and red;
    "undetermined" is light grey and "nodata" (code 0) is left out
    (transparent).

    Parameters
    ----------
    labels : mapping code → label
        As returned by ``npp_core.attribution.dominant_classes``.
    categories : sequence of str, optional
        Category names (default: the single-category labels in code order).
    """
    extra = [(156, 39, 176), (255, 160, 0), (0, 151, 167), (121, 85, 72), (233, 30, 99)]
    cats = list(categories) if categories else [v for v in labels.values() if v not in ("nodata", "undetermined") and len(v) == 1]
    base: dict[str, tuple[int, int, int]] = {}
    for i, c in enumerate(cats):
        base[c] = CATEGORY_RGB.get(c, extra[i % len(extra)])
    out: dict[int, tuple[int, int, int]] = {}
    for code, lab in labels.items():
        lab = str(lab)
        if lab == "nodata" or int(code) == 0:
            continue
        if lab == "undetermined":
            out[int(code)] = (200, 200, 200)
        elif lab in base:
            out[int(code)] = base[lab]
        else:
            parts = lab.split("+") if "+" in lab else list(lab)
            if len(parts) == 2 and all(p in base for p in parts):
                a, b = np.array(base[parts[0]], float), np.array(base[parts[1]], float)
                out[int(code)] = tuple(int(round(v)) for v in 0.65 * a + 0.35 * b)  # type: ignore[assignment]
            else:
                out[int(code)] = (120, 120, 120)
    return out


LANDCOVER_COLOURS: dict[str, tuple[int, int, int]] = {
    "forest": (34, 120, 50),
    "grassland": (150, 200, 90),
    "farmland": (240, 210, 110),
    "cropland": (240, 210, 110),
    "construction": (200, 60, 60),
    "water": (60, 120, 220),
    "shrub": (110, 160, 70),
}


# --------------------------------------------------------------------------- colour


def _lut(cmap: str, n: int = 256) -> np.ndarray:
    """RGBA uint8 lookup table (n, 4) of a matplotlib colour map."""
    return _lut_cached(cmap, n).copy()


@functools.lru_cache(maxsize=32)
def _lut_cached(cmap: str, n: int) -> np.ndarray:
    import matplotlib

    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"colour map {cmap!r} is unknown; use e.g. 'viridis', 'YlGn', 'RdBu_r'.") from None
    lut = (np.asarray(cm(np.linspace(0.0, 1.0, n))) * 255.0 + 0.5).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def robust_range(data: np.ndarray, lo: float = 2.0, hi: float = 98.0) -> tuple[float, float]:
    """Percentile stretch (lo, hi) of the finite values; (0, 1) when there are none.

    Parameters
    ----------
    data : ndarray, any shape
    lo, hi : float
        Percentiles (0–100).
    """
    v = np.asarray(data, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    a, b = np.percentile(v, [lo, hi])
    if not b > a:
        a, b = float(v.min()), float(v.max())
        if not b > a:
            b = a + 1.0
    return float(a), float(b)


def colorize(
    data: np.ndarray,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """Map a 2-D array to RGBA with a colour map; NaN becomes transparent.

    Parameters
    ----------
    data : ndarray, shape (rows, cols)
    cmap : str
        Matplotlib colour-map name.
    vmin, vmax : float, optional
        Value range mapped to the ends of the colour map (values outside are
        clipped); default the 2nd–98th percentile of the finite values.

    Returns
    -------
    ndarray, shape (rows, cols, 4), uint8
    """
    a = np.asarray(data, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"colorize: expected a 2-D array, got shape {a.shape}.")
    if vmin is None or vmax is None:
        lo, hi = robust_range(a)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    if not vmax > vmin:
        vmax = vmin + 1.0
    lut = _lut_cached(cmap, 256)
    finite = np.isfinite(a)
    t = np.zeros(a.shape, dtype=np.float64)
    t[finite] = (a[finite] - vmin) / (vmax - vmin)
    idx = np.clip(np.rint(t * 255.0), 0, 255).astype(np.intp)
    out = lut[idx]
    out[~finite] = 0
    return out


def classes_rgba(
    codes: np.ndarray,
    colours: Mapping[int, tuple[int, int, int]],
    nodata: int | None = None,
) -> np.ndarray:
    """RGBA image of a class map.

    Parameters
    ----------
    codes : ndarray, shape (rows, cols), int or float (NaN = nodata)
    colours : mapping code → (r, g, b)
        Codes without a colour, NaN and ``nodata`` are transparent.

    Returns
    -------
    ndarray, shape (rows, cols, 4), uint8
    """
    c = np.asarray(codes)
    out = np.zeros(c.shape + (4,), dtype=np.uint8)
    if np.issubdtype(c.dtype, np.floating):
        valid = np.isfinite(c)
        ci = np.where(valid, c, -1).astype(np.int64)
    else:
        ci = c.astype(np.int64)
        valid = np.ones(c.shape, dtype=bool)
    if nodata is not None:
        valid &= ci != nodata
    for code, rgb in colours.items():
        sel = valid & (ci == int(code))
        out[sel, :3] = rgb[:3]
        out[sel, 3] = 255
    return out


def rgb_rgba(bands: np.ndarray, vmax: float = 255.0) -> np.ndarray:
    """RGBA of a 3-band composite; pixels with any NaN, or all three bands 0, are transparent.

    Parameters
    ----------
    bands : ndarray, shape (3, rows, cols)
        R, G, B values in [0, vmax] (e.g. ``rgb.tif``: R=S, G=M, B=C). Shares
        summing to 100 % never give black, so (0, 0, 0) marks pixels outside
        the analysis (``rgb.tif`` stores them as 0).
    """
    b = np.asarray(bands, dtype=np.float64)
    if b.ndim != 3 or b.shape[0] != 3:
        raise ValueError(f"rgb_rgba: expected shape (3, rows, cols), got {b.shape}.")
    valid = np.all(np.isfinite(b), axis=0) & np.any(np.nan_to_num(b) > 0, axis=0)
    out = np.zeros(b.shape[1:] + (4,), dtype=np.uint8)
    scaled = np.clip(np.nan_to_num(b) / vmax * 255.0 + 0.5, 0, 255).astype(np.uint8)
    out[..., :3] = np.moveaxis(scaled, 0, -1)
    out[..., 3] = np.where(valid, 255, 0)
    out[~valid, :3] = 0
    return out


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class WebImage:
    """A raster reprojected to EPSG:3857.

    Attributes
    ----------
    data : ndarray, shape (bands, rows, cols), float64 (NaN = nodata)
    transform : Affine
        Of the 3857 image.
    bounds_latlon : ((south, west), (north, east))
        Corners of the image in degrees, as Leaflet's ImageOverlay wants them.
    """

    data: np.ndarray
    transform: Affine
    bounds_latlon: tuple[tuple[float, float], tuple[float, float]]


def to_web_mercator(
    data: np.ndarray,
    grid: Grid,
    *,
    max_size: int = 1024,
    categorical: bool = False,
) -> WebImage:
    """Reproject a raster to web Mercator with its longest side at most ``max_size`` pixels.

    Parameters
    ----------
    data : ndarray, shape (rows, cols) or (bands, rows, cols)
        NaN = nodata.
    grid : Grid
        The raster's grid.
    max_size : int
        Cap of the output's longest side (pixels). Smaller rasters keep about
        their native resolution.
    categorical : bool
        Nearest-neighbour resampling (class maps) instead of bilinear.

    Returns
    -------
    WebImage
    """
    a = np.asarray(data, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.shape[1:] != grid.shape:
        raise ValueError(f"to_web_mercator: data shape {a.shape[1:]} does not match the grid {grid.shape}.")
    src_crs = CRS.from_user_input(grid.crs)
    # exact (densified) extent of the source in 3857, at about the native resolution
    left, bottom, right, top = transform_bounds(src_crs, WEB_MERCATOR, *grid.bounds, densify_pts=51)
    dst_t, _w, _h = calculate_default_transform(src_crs, WEB_MERCATOR, grid.width, grid.height, *grid.bounds)
    res = abs(dst_t.a)
    w = max(1, int(round((right - left) / res)))
    h = max(1, int(round((top - bottom) / res)))
    scale = max(w, h) / float(max_size)
    if scale > 1.0:
        w = max(1, int(round(w / scale)))
        h = max(1, int(round(h / scale)))
    dst_t = Affine((right - left) / w, 0.0, left, 0.0, (bottom - top) / h, top)
    out = np.full((a.shape[0], h, w), np.nan, dtype=np.float64)
    reproject(
        source=a,
        destination=out,
        src_transform=grid.transform,
        src_crs=src_crs,
        src_nodata=np.nan,
        dst_transform=dst_t,
        dst_crs=WEB_MERCATOR,
        dst_nodata=np.nan,
        resampling=Resampling.nearest if categorical else Resampling.bilinear,
    )
    from pyproj import Transformer

    tr = Transformer.from_crs(WEB_MERCATOR, WGS84, always_xy=True)
    west, south = tr.transform(left, bottom)
    east, north = tr.transform(right, top)
    return WebImage(out, dst_t, ((float(south), float(west)), (float(north), float(east))))


def latlon_to_rowcol(grid: Grid, lat: float, lon: float) -> tuple[int, int] | None:
    """Row and column of the grid pixel containing a WGS84 point, or None outside.

    Parameters
    ----------
    grid : Grid
    lat, lon : float
        Degrees.
    """
    from pyproj import Transformer

    tr = Transformer.from_crs(WGS84, CRS.from_user_input(grid.crs), always_xy=True)
    x, y = tr.transform(lon, lat)
    r, c = grid.index(np.array([x]), np.array([y]))
    r, c = int(r[0]), int(c[0])
    if 0 <= r < grid.height and 0 <= c < grid.width:
        return r, c
    return None


# --------------------------------------------------------------------------- images


def png_bytes(rgba: np.ndarray) -> bytes:
    """PNG encoding of an (rows, cols, 4) or (rows, cols, 3) uint8 image."""
    from PIL import Image

    a = np.ascontiguousarray(rgba, dtype=np.uint8)
    mode = {3: "RGB", 4: "RGBA"}.get(a.shape[-1] if a.ndim == 3 else 0)
    if mode is None:
        raise ValueError(f"png_bytes: expected (rows, cols, 3|4) uint8, got shape {a.shape}.")
    buf = io.BytesIO()
    Image.fromarray(a, mode).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def data_url(png: bytes, mime: str = "image/png") -> str:
    """``data:`` URL of some bytes."""
    return f"data:{mime};base64," + base64.b64encode(png).decode("ascii")


@dataclass
class Overlay:
    """One picture to lay on a map.

    Attributes
    ----------
    name : str
        Shown in the layer control.
    png : bytes
        PNG in EPSG:3857.
    bounds : ((south, west), (north, east))
    opacity : float
    show : bool
        Visible when the map opens.
    legend_html : str
        Legend shown below/alongside the map (plain HTML).
    """

    name: str
    png: bytes
    bounds: tuple[tuple[float, float], tuple[float, float]]
    opacity: float = 0.8
    show: bool = True
    legend_html: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def web_overlay(
    data: np.ndarray,
    grid: Grid,
    name: str,
    *,
    kind: str = "continuous",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    colours: Mapping[int, tuple[int, int, int]] | None = None,
    max_size: int = 1024,
    opacity: float = 0.8,
    show: bool = True,
    legend_html: str = "",
) -> Overlay:
    """Reproject, colour and encode a raster as a map overlay.

    Parameters
    ----------
    data : ndarray
        (rows, cols) for ``kind`` "continuous" or "classes"; (3, rows, cols)
        for "rgb" (values 0–255).
    grid : Grid
    kind : {"continuous", "classes", "rgb"}
    cmap, vmin, vmax
        Colouring of continuous data (range default: 2–98 % of the source
        pixels, computed before resampling).
    colours : mapping code → (r, g, b)
        For class maps.
    """
    a = np.asarray(data, dtype=np.float64)
    if kind == "continuous":
        if vmin is None or vmax is None:
            lo, hi = robust_range(a)
            vmin = lo if vmin is None else vmin
            vmax = hi if vmax is None else vmax
        wi = to_web_mercator(a, grid, max_size=max_size)
        rgba = colorize(wi.data[0], cmap, vmin, vmax)
    elif kind == "classes":
        wi = to_web_mercator(a, grid, max_size=max_size, categorical=True)
        rgba = classes_rgba(wi.data[0], colours or {})
    elif kind == "rgb":
        wi = to_web_mercator(a, grid, max_size=max_size, categorical=True)
        rgba = rgb_rgba(wi.data)
    else:
        raise ValueError(f"web_overlay: kind {kind!r} is not one of continuous, classes, rgb.")
    return Overlay(
        name=name,
        png=png_bytes(rgba),
        bounds=wi.bounds_latlon,
        opacity=opacity,
        show=show,
        legend_html=legend_html,
        meta={"vmin": vmin, "vmax": vmax, "cmap": cmap, "kind": kind, "size": rgba.shape[:2]},
    )


def thumbnail_png(
    data: np.ndarray,
    *,
    kind: str = "continuous",
    cmap: str = "viridis",
    colours: Mapping[int, tuple[int, int, int]] | None = None,
    max_size: int = 160,
) -> bytes:
    """Small PNG preview in the raster's own grid (no reprojection).

    Parameters
    ----------
    data : ndarray, shape (rows, cols) (or (3, rows, cols) for ``kind="rgb"``)
    max_size : int
        Longest side of the preview (pixels); decimated by striding.
    """
    a = np.asarray(data, dtype=np.float64)
    rows, cols = a.shape[-2:]
    step = max(1, int(np.ceil(max(rows, cols) / max_size)))
    a = a[..., ::step, ::step]
    if kind == "classes":
        rgba = classes_rgba(a, colours or {})
    elif kind == "rgb":
        rgba = rgb_rgba(a)
    else:
        rgba = colorize(a, cmap)
    return png_bytes(rgba)


# --------------------------------------------------------------------------- legends


def _fmt(v: float) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    av = abs(v)
    if av >= 1000:
        return f"{v:,.0f}"
    if av >= 10:
        return f"{v:.1f}"
    if av >= 0.1 or av == 0:
        return f"{v:.2f}"
    return f"{v:.3g}"


def legend_continuous(title: str, cmap: str, vmin: float, vmax: float, unit: str = "") -> str:
    """A horizontal colour bar as plain HTML (CSS gradient)."""
    lut = _lut_cached(cmap, 256)
    stops = ", ".join(
        "rgb({},{},{}) {:.0f}%".format(*lut[int(round(i * 255 / 10))][:3], i * 10) for i in range(11)
    )
    u = f" ({html.escape(unit)})" if unit else ""
    return (
        '<div class="npp-legend" style="font:12px sans-serif;margin:4px 0;max-width:360px">'
        f"<div><b>{html.escape(title)}</b>{u}</div>"
        f'<div style="height:12px;background:linear-gradient(to right, {stops});border:1px solid #888"></div>'
        '<div style="display:flex;justify-content:space-between">'
        f"<span>{_fmt(vmin)}</span><span>{_fmt((vmin + vmax) / 2)}</span><span>{_fmt(vmax)}</span></div></div>"
    )


def legend_classes(
    title: str,
    items: Sequence[tuple[str, tuple[int, int, int]]],
    shares: Mapping[str, float] | None = None,
) -> str:
    """A class legend (swatch, label, optional area share %) as plain HTML."""
    rows = []
    for label, (r, g, b) in items:
        share = ""
        if shares is not None and label in shares:
            share = f' <span style="color:#555">{float(shares[label]):.1f} %</span>'
        rows.append(
            f'<div><span style="display:inline-block;width:14px;height:14px;background:rgb({r},{g},{b});'
            f'border:1px solid #666;vertical-align:middle;margin-right:6px"></span>{html.escape(str(label))}{share}</div>'
        )
    return (
        f'<div class="npp-legend" style="font:12px sans-serif;margin:4px 0"><div><b>{html.escape(title)}</b></div>'
        + "".join(rows)
        + "</div>"
    )


def ternary_legend_svg(size: int = 150, steps: int = 12) -> str:
    """Ternary colour key of the RelCon RGB composite (R = S, G = M, B = C) as inline SVG.

    Each small triangle is coloured by the share of its centre towards each
    corner (corner C = pure blue, S = pure red, M = pure green).
    """
    h = size * np.sqrt(3) / 2
    pad = 16
    # corners: C bottom-left, S bottom-right, M top
    pc = np.array([pad, pad + h])
    ps = np.array([pad + size, pad + h])
    pm = np.array([pad + size / 2, pad])
    polys = []
    n = steps
    for i in range(n):
        for j in range(n - i):
            # barycentric lattice cells (upward and downward)
            for up in (True, False):
                if up:
                    pts = [(i, j), (i + 1, j), (i, j + 1)]
                else:
                    if i + j + 1 >= n:
                        continue
                    pts = [(i + 1, j), (i + 1, j + 1), (i, j + 1)]
                bary = [(a / n, b / n, 1 - a / n - b / n) for a, b in pts]  # (s, m, c)
                cen = np.mean(bary, axis=0)
                xy = [s * ps + m * pm + c * pc for s, m, c in bary]
                r, g, b = (np.clip(cen, 0, 1) * 255).round().astype(int)
                poly = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
                polys.append(f'<polygon points="{poly}" fill="rgb({r},{g},{b})" stroke="none"/>')
    W = size + 2 * pad
    H = h + 2 * pad
    labels = (
        f'<text x="{pc[0] - 4:.0f}" y="{pc[1] + 13:.0f}" font-size="11">C 100%</text>'
        f'<text x="{ps[0] - 36:.0f}" y="{ps[1] + 13:.0f}" font-size="11">S 100%</text>'
        f'<text x="{pm[0] - 18:.0f}" y="{pm[1] - 4:.0f}" font-size="11">M 100%</text>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W:.0f}" height="{H + 4:.0f}" '
        f'viewBox="0 0 {W:.0f} {H + 4:.0f}" font-family="sans-serif">' + "".join(polys) + labels + "</svg>"
    )


# --------------------------------------------------------------------------- maps


def _leaflet_dir() -> Path:
    import xstatic.pkg.leaflet as xl

    return Path(xl.BASE_DIR)


@functools.lru_cache(maxsize=1)
def leaflet_assets() -> tuple[str, str]:
    """Leaflet's JavaScript and CSS text from the installed ``xstatic-leaflet``.

    The CSS's image references (layer-control icon, default marker) are
    inlined as ``data:`` URLs and the source-map comment is dropped, so the
    pair needs nothing from any server.

    Returns
    -------
    js, css : str
    """
    d = _leaflet_dir()
    js = (d / "leaflet.js").read_text(encoding="utf-8")
    js = re.sub(r"//# sourceMappingURL=\S+", "", js)
    css = (d / "leaflet.css").read_text(encoding="utf-8")

    def inline(m: re.Match[str]) -> str:
        p = d / m.group(1)
        if p.exists():
            return "url(" + data_url(p.read_bytes()) + ")"
        return m.group(0)

    css = re.sub(r"url\((images/[^)]+)\)", inline, css)
    return js, css


def _asset_urls() -> tuple[str, str]:
    js, css = leaflet_assets()
    return (
        data_url(js.encode("utf-8"), "text/javascript"),
        data_url(css.encode("utf-8"), "text/css"),
    )


def make_map(
    overlays: Sequence[Overlay],
    *,
    bounds: tuple[tuple[float, float], tuple[float, float]] | None = None,
    basemap: bool = False,
    layer_control: bool = True,
    marker: tuple[float, float] | None = None,
) -> Any:
    """A folium map with image overlays that loads Leaflet from local data.

    Parameters
    ----------
    overlays : sequence of Overlay
    bounds : ((south, west), (north, east)), optional
        Initial view; default the union of the overlays.
    basemap : bool
        Add OpenStreetMap tiles (need internet; off by default).
    layer_control : bool
    marker : (lat, lon), optional
        A small circle marking a clicked pixel.

    Returns
    -------
    folium.Map
        Its ``default_js``/``default_css`` are ``data:`` URLs of the bundled
        Leaflet, and nothing else (no jQuery, Bootstrap or font CDN).
    """
    import folium

    if bounds is None:
        if overlays:
            s = min(o.bounds[0][0] for o in overlays)
            w = min(o.bounds[0][1] for o in overlays)
            n = max(o.bounds[1][0] for o in overlays)
            e = max(o.bounds[1][1] for o in overlays)
            bounds = ((s, w), (n, e))
        else:
            bounds = ((-1.0, -1.0), (1.0, 1.0))
    (s, w), (n, e) = bounds
    m = folium.Map(
        location=[(s + n) / 2, (w + e) / 2],
        zoom_start=10,
        tiles="OpenStreetMap" if basemap else None,
        control_scale=True,
    )
    js_url, css_url = _asset_urls()
    m.default_js = [("leaflet", js_url)]
    m.default_css = [("leaflet_css", css_url)]
    for o in overlays:
        folium.raster_layers.ImageOverlay(
            image=data_url(o.png),
            bounds=[list(o.bounds[0]), list(o.bounds[1])],
            name=o.name,
            opacity=float(o.opacity),
            show=o.show,
            interactive=False,
            cross_origin=False,
        ).add_to(m)
    if marker is not None:
        folium.CircleMarker(location=list(marker), radius=6, color="#000", weight=2, fill=False).add_to(m)
    if layer_control and overlays:
        folium.LayerControl(collapsed=False).add_to(m)
    m.fit_bounds([list(bounds[0]), list(bounds[1])])
    return m


def standalone_html(m: Any) -> str:
    """Full HTML page of a folium map with Leaflet inlined (works from a file, offline).

    The ``<script src="data:...">``/``<link href="data:...">`` tags that
    :func:`make_map` sets up are replaced by inline ``<script>``/``<style>``.
    """
    page = m.get_root().render()
    js, css = leaflet_assets()
    js_url, css_url = _asset_urls()
    page = page.replace(f'<script src="{js_url}"></script>', "<script>" + js.replace("</script", "<\\/script") + "</script>")
    page = page.replace(f'<link rel="stylesheet" href="{css_url}"/>', "<style>" + css + "</style>")
    return page


# --------------------------------------------------------------------------- analysis helpers


