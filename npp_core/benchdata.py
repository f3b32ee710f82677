"""Synthetic large study areas for benchmarks, tiled from the sample basin.

:func:`bench_data` writes a dataset of about N pixels (same manifest layout as the sample basin
of :mod:`npp_core.sample`) by mirror-tiling the basin's 500 × 440 layers: tile ``(i, j)`` is the
basin flipped vertically when ``i`` is odd and horizontally when ``j`` is odd, so every seam
joins a layer to its own mirror image (no artificial edges for the windowed statistics). Each
tile keeps the basin's outside (nodata) ring, so a large area has realistic holes.

What is written (all on one UTM 49N 30 m grid extending the sample's to the south-east):
``landcover.tif``, ``dem.tif``, ``ndvi_monthly.tif`` (``[ndvi] fine_series``: the planted
monthly NDVI, so fusion is skipped), ``climate/{tmean,prec,srad}_monthly.tif`` (the sample's
climate resampled bilinearly to 30 m; solar in W m⁻² as in the sample), the six
``ld/*.tif`` indicators and ``ld/ahp_matrix.csv``, and ``soil/samples.csv`` (the sample's points
mirrored into every tile, in grid coordinates, at most ``max_soil`` of them drawn at random so
that all-sample kriging stays a fixed cost per pixel). Validation data and the boundary polygon
are left out (the land cover's nodata is the study-area mask).

Every raster is written strip by strip (windowed writes) from the small base layers, so memory
stays near one strip of the widest layer whatever N is.
"""
from __future__ import annotations

import csv
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.warp import Resampling, reproject

from .raster import Grid, atomic_path, read_raster
from .sample import MANIFEST_DEGRADATION_INDICATORS, MANIFEST_LANDCOVER, MANIFEST_SOIL_PROPERTIES

__all__ = ["BenchDataError", "bench_data", "bench_shape"]

_STRIP_VALUES = 16_000_000  # values per written strip (≈ 64 MB float32)


class BenchDataError(ValueError):
    """Bad arguments to :func:`bench_data`, with the fix."""


def bench_shape(pixels: int, base: tuple[int, int] = (500, 440)) -> tuple[int, int]:
    """Grid shape (rows, cols) of about ``pixels`` pixels with the base's aspect ratio.

    Parameters
    ----------
    pixels : int
        Wanted number of pixels (≥ 1).
    base : (int, int)
        Shape of the tile (the sample basin's 500 × 440).

    Returns
    -------
    (int, int)
    """
    k = math.sqrt(pixels / (base[0] * base[1]))
    return max(1, int(round(base[0] * k))), max(1, int(round(base[1] * k)))


def _mirror(n_out: int, n_base: int, start: int = 0) -> np.ndarray:
    """Base index of output positions ``start..start+n_out`` under mirror tiling."""
    i = np.arange(start, start + n_out)
    t, w = np.divmod(i, n_base)
    return np.where(t % 2 == 0, w, n_base - 1 - w)


def _write_tiled(path: Path, base: np.ndarray, grid: Grid, *, dtype: str = "float32", nodata: Any = None,
                 band_names: list[str] | None = None, tags: dict[str, str] | None = None,
                 colormap: dict | None = None) -> None:
    """Mirror-tile ``base`` (bands, h, w) onto ``grid`` and write it strip by strip."""
    if base.ndim == 2:
        base = base[None]
    nb, h, w = base.shape
    dt = np.dtype(dtype)
    nd = (np.nan if nodata is None else nodata) if np.issubdtype(dt, np.floating) else nodata
    prof: dict[str, Any] = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": nb,
                            "dtype": dt.name, "crs": grid.crs, "transform": grid.transform, "nodata": nd,
                            "compress": "deflate", "BIGTIFF": "IF_SAFER"}
    if grid.width >= 256 and grid.height >= 256:
        prof.update(tiled=True, blockxsize=256, blockysize=256)
    if np.issubdtype(dt, np.floating):
        prof["predictor"] = 3
    cols = _mirror(grid.width, w)
    strip = max(256, (_STRIP_VALUES // max(1, nb * grid.width)) // 256 * 256)
    tmp, final = atomic_path(path)
    try:
        with rasterio.open(tmp, "w", **prof) as ds:
            for r0 in range(0, grid.height, strip):
                r1 = min(grid.height, r0 + strip)
                block = base[:, _mirror(r1 - r0, h, r0)][:, :, cols]
                if np.issubdtype(dt, np.floating):
                    block = block.astype(dt)
                else:
                    block = np.where(np.isnan(block), nodata, block).astype(dt) if block.dtype.kind == "f" \
                        else block.astype(dt)
                ds.write(block, window=rasterio.windows.Window(0, r0, grid.width, r1 - r0))
            for i, name in enumerate(band_names or []):
                ds.set_band_description(i + 1, name)
                if len(name) == 7 and name[4] == "-":
                    ds.update_tags(i + 1, DATE=name)
            if tags:
                ds.update_tags(**tags)
            if colormap:
                ds.write_colormap(1, colormap)
        tmp.replace(final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _soil_rows(src_csv: Path, base_grid: Grid, grid: Grid, max_soil: int, seed: int) -> list[list[str]]:
    from pyproj import Transformer

    with open(src_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    tr = Transformer.from_crs("EPSG:4326", base_grid.crs, always_xy=True)
    bx, by = tr.transform(np.array([float(r["lon"]) for r in rows]), np.array([float(r["lat"]) for r in rows]))
    t = base_grid.transform
    # position inside the tile in pixel units (float), mirrored per tile
    u = (bx - t.c) / t.a
    v = (by - t.f) / t.e
    h, w = base_grid.height, base_grid.width
    n_ti, n_tj = -(-grid.height // h), -(-grid.width // w)
    props = [k for k in rows[0] if k not in ("id", "lon", "lat")]
    out = []
    for ti in range(n_ti):
        for tj in range(n_tj):
            vv = ti * h + (v if ti % 2 == 0 else h - v)
            uu = tj * w + (u if tj % 2 == 0 else w - u)
            for k, r in enumerate(rows):
                if vv[k] < grid.height and uu[k] < grid.width:
                    x = grid.transform.c + uu[k] * grid.transform.a
                    y = grid.transform.f + vv[k] * grid.transform.e
                    out.append([f"T{ti}_{tj}_{r['id']}", f"{x:.2f}", f"{y:.2f}", *[r[p] for p in props]])
    if len(out) > max_soil:
        keep = np.sort(np.random.default_rng(seed).choice(len(out), size=max_soil, replace=False))
        out = [out[i] for i in keep]
    return [["id", "x", "y", *props], *out]


def bench_data(out: str | Path, pixels: int, seed: int = 0, *, years: int = 2, max_soil: int = 150) -> Path:
    """Write a synthetic benchmark dataset of about ``pixels`` pixels tiled from the sample basin.

    Parameters
    ----------
    out : path-like
        Destination folder (created; files of the dataset are overwritten).
    pixels : int
        Wanted number of pixels (≥ 10 000); the grid is about that size with the basin's aspect.
    seed : int
        Seed of the sample basin (:func:`npp_core.sample.generate`) and of the soil subsample.
    years : int
        Calendar years of monthly data (1–6, from 2010).
    max_soil : int
        Most soil samples kept (drawn at random from the mirrored copies).

    Returns
    -------
    Path
        The dataset folder (with ``dataset.toml``).
    """
    from . import sample

    if isinstance(pixels, bool) or int(pixels) != pixels or pixels < 10_000:
        raise BenchDataError(f"pixels={pixels!r}: give an integer ≥ 10000 (e.g. 1000000).")
    if not 1 <= int(years) <= len(sample.YEARS):
        raise BenchDataError(f"years={years!r}: must be 1..{len(sample.YEARS)} (the sample covers 2010–2015).")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BenchDataError(f"out: {out} exists and is not a folder. Choose a folder path.")
    m = 12 * int(years)
    rows, cols = bench_shape(int(pixels))
    bg: Grid = sample.GRID
    grid = Grid(bg.crs, bg.transform, cols, rows)
    with tempfile.TemporaryDirectory(prefix="npp-bench-src-", dir=out.parent if out.parent.exists() else None) as td:
        # one build of the basin gives both its files and its planted monthly NDVI
        # (generate() + planted_truth() would build it twice)
        build = sample._build(int(seed))
        src = sample._write(Path(td) / "basin", build)
        truth = sample._truth(build)
        del build
        out.mkdir(parents=True, exist_ok=True)
        lc, _, _ = read_raster(src / "landcover.tif")
        with rasterio.open(src / "landcover.tif") as ds:
            lc_tags, cmap = ds.tags(), ds.colormap(1)
        _write_tiled(out / "landcover.tif", lc, grid, dtype="uint8", nodata=0, band_names=["landcover"],
                     tags=lc_tags, colormap=cmap)
        dem, _, _ = read_raster(src / "dem.tif")
        _write_tiled(out / "dem.tif", dem, grid, band_names=["elevation"], tags={"units": "m"})
        months = [f"{y}-{k:02d}" for y in sample.YEARS[: int(years)] for k in range(1, 13)]
        ndvi = np.asarray(truth["ndvi_monthly"][:m], dtype=np.float32)
        ndvi = np.where(np.isnan(lc), np.nan, ndvi)
        _write_tiled(out / "ndvi_monthly.tif", ndvi, grid, band_names=months)
        del ndvi
        for name in ("tmean_monthly", "prec_monthly", "srad_monthly"):
            c, cg, _ = read_raster(src / "climate" / f"{name}.tif", bands=range(1, m + 1))
            fine = np.full((m,) + bg.shape, np.nan, dtype=np.float32)
            reproject(source=c.astype(np.float32), destination=fine, src_transform=cg.transform, src_crs=cg.crs,
                      src_nodata=np.nan, dst_transform=bg.transform, dst_crs=bg.crs, dst_nodata=np.nan,
                      resampling=Resampling.bilinear)
            _write_tiled(out / "climate" / f"{name}.tif", fine, grid, band_names=months)
        ld_names = ("subsidence_m", "crack_density", "seeper", "goaf", "slope_change", "dist_mine_m")
        for name in ld_names:
            p = src / "ld" / f"{name}.tif"
            a, _, _ = read_raster(p)
            with rasterio.open(p) as ds:
                dt, nd, desc = ds.dtypes[0], ds.nodata, ds.descriptions[0]
            _write_tiled(out / "ld" / f"{name}.tif", a, grid, dtype=dt,
                         nodata=None if dt.startswith("float") else nd, band_names=[desc or name])
        shutil.copyfile(src / "ld" / "ahp_matrix.csv", out / "ld" / "ahp_matrix.csv")
        soil = _soil_rows(src / "soil" / "samples.csv", bg, grid, int(max_soil), seed)
        (out / "soil").mkdir(exist_ok=True)
        with open(out / "soil" / "samples.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(soil)
    (out / "dataset.toml").write_text(_manifest(rows, cols, m, seed), encoding="utf-8")
    return out


def _manifest(rows: int, cols: int, months: int, seed: int) -> str:
    return f'''# Benchmark area written by npp_core.benchdata.bench_data: the sample basin (seed {seed})
# mirror-tiled to {rows} x {cols} = {rows * cols:,} pixels, {months} months.
name = "Benchmark area ({rows * cols:,} px)"
grid = "landcover.tif"

{MANIFEST_LANDCOVER}
[ndvi]
fine_series = "ndvi_monthly.tif"
composite = "max"

[climate]
temperature = "climate/tmean_monthly.tif"
precipitation = "climate/prec_monthly.tif"
solar = {{ path = "climate/srad_monthly.tif", units = "W m-2" }}

[soil]
samples = "soil/samples.csv"
crs = "EPSG:32649"
x_column = "x"
y_column = "y"

{MANIFEST_SOIL_PROPERTIES}
[degradation]
ahp = "ld/ahp_matrix.csv"

{MANIFEST_DEGRADATION_INDICATORS}'''
