"""GeoTIFF I/O that keeps CRS, transform, nodata and band dates honest.

Geometry (:class:`Grid`) is kept apart from I/O. Every reader returns float64
arrays with NaN where the file had nodata; every writer is atomic (a temporary
file in the destination folder, then ``os.replace``) so an interrupted run
never leaves a half-written GeoTIFF that looks complete.

Band dates are stored twice, as the band description (``"2010-01"`` or
``"2010-01-17"``) and as a ``DATE`` band tag, so that GIS software and this
package both see them.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

__all__ = [
    "Grid",
    "RasterError",
    "read_raster",
    "write_raster",
    "atomic_path",
    "MAX_PIXELS",
]

#: Largest raster (rows × cols × bands) we agree to read; a tiny file may claim
#: 10⁶ × 10⁶ pixels and exhaust memory.
MAX_PIXELS = 400_000_000


class RasterError(ValueError):
    """A raster that cannot be used, with a message naming the file and the fix.

    Parameters
    ----------
    message : str
        The whole message (``"<file>: <problem>. <fix>"``).
    problem, fix : str, optional
        The problem and the fix on their own (for listings that show them apart).
    """

    def __init__(self, message: str, *, problem: str = "", fix: str = ""):
        super().__init__(message)
        self.problem = problem or message
        self.fix = fix


def _error(name: str, problem: str, fix: str) -> RasterError:
    return RasterError(f"{name}: {problem} {fix}", problem=problem, fix=fix)


@dataclass(frozen=True)
class Grid:
    """A georeferenced pixel grid.

    Parameters
    ----------
    crs : rasterio.crs.CRS
        Coordinate reference system.
    transform : affine.Affine
        Pixel → map coordinates of the upper-left pixel corner.
    width, height : int
        Number of columns and rows.
    """

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return (self.height, self.width)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        t = self.transform
        left, top = t.c, t.f
        right, bottom = t.c + t.a * self.width + t.b * self.height, t.f + t.d * self.width + t.e * self.height
        return (min(left, right), min(bottom, top), max(left, right), max(bottom, top))

    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates.

        Returns
        -------
        x : ndarray, shape (cols,)
        y : ndarray, shape (rows,)
        """
        cols = np.arange(self.width) + 0.5
        rows = np.arange(self.height) + 0.5
        t = self.transform
        return t.c + cols * t.a, t.f + rows * t.e

    def index(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row and column (int, may be outside the grid) of map coordinates."""
        inv = ~self.transform
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        c = inv.a * x + inv.b * y + inv.c
        r = inv.d * x + inv.e * y + inv.f
        return np.floor(r).astype(np.int64), np.floor(c).astype(np.int64)

    def same_as(self, other: "Grid", tol: float = 1e-6) -> bool:
        """True if both grids have the same CRS, shape and (almost) transform."""
        return (
            self.shape == other.shape
            and CRS.from_user_input(self.crs) == CRS.from_user_input(other.crs)
            and all(abs(a - b) <= tol * max(1.0, abs(a)) for a, b in zip(self.transform, other.transform))
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description."""
        return {
            "crs": CRS.from_user_input(self.crs).to_string(),
            "transform": list(self.transform)[:6],
            "width": self.width,
            "height": self.height,
            "res": list(self.res),
            "bounds": list(self.bounds),
        }

    @classmethod
    def from_dataset(cls, ds: Any) -> "Grid":
        """Grid of an open rasterio dataset."""
        return cls(crs=ds.crs, transform=ds.transform, width=ds.width, height=ds.height)


def _check_size(path: Path | str, ds: Any) -> None:
    n = int(ds.width) * int(ds.height) * int(ds.count)
    if n > MAX_PIXELS:
        raise _error(
            Path(path).name,
            f"claims {ds.count} band(s) of {ds.height} × {ds.width} pixels ({n:,} values), more than the "
            f"limit of {MAX_PIXELS:,}.",
            "Clip the raster to the study area or resample it before loading.",
        )


def _short(exc: BaseException, p: Path) -> str:
    """The library's message without the full temporary path, shortened."""
    return str(exc).replace(str(p), p.name).replace(str(p.resolve()), p.name)[:200]


def _sniff(p: Path) -> str:
    """What the file looks like when it is not a raster GDAL reads (for messages)."""
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError:
        return ""
    if not head:
        return ": the file is empty"
    for magic, what in ((b"PK", "a zip archive"), (b"\x89PNG", "a PNG image"), (b"\xff\xd8", "a JPEG image"),
                        (b"%PDF", "a PDF document"), (b"<", "an HTML/XML text"), (b"{", "a JSON text"),
                        (b"\x80", "a Python pickle")):
        if head.startswith(magic):
            return f": the file is {what}, not a GeoTIFF"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return ": the TIFF structure is damaged (truncated upload?)"
    return ""


def open_checked(path: Path | str) -> Any:
    """Open a raster with rasterio, turning failures into :class:`RasterError`."""
    p = Path(path)
    if not p.exists():
        raise _error(p.name, f"file not found at {p}.", "Check the path in the manifest.")
    try:
        ds = rasterio.open(p)
    except Exception as exc:  # rasterio raises several types for broken files
        kind = _sniff(p)
        raise _error(
            p.name,
            f"not a readable raster{kind} ({exc.__class__.__name__}: {_short(exc, p)}).",
            "Export it again as a GeoTIFF.",
        ) from None
    try:
        _check_size(p, ds)
    except RasterError:
        ds.close()
        raise
    return ds


def read_raster(
    path: Path | str,
    *,
    bands: Sequence[int] | None = None,
    nodata: float | None = None,
) -> tuple[np.ndarray, Grid, list[str | None]]:
    """Read a raster as float64 with NaN for nodata.

    Parameters
    ----------
    path : path-like
        GeoTIFF (or anything GDAL reads).
    bands : sequence of int, optional
        1-based band indexes; default all.
    nodata : float, optional
        Overrides the file's nodata value.

    Returns
    -------
    data : ndarray, shape (bands, rows, cols), float64
    grid : Grid
    dates : list of str or None
        Per band, the date from its description or ``DATE`` tag (unparsed text), or None.
    """
    with open_checked(path) as ds:
        idx = list(bands) if bands is not None else list(range(1, ds.count + 1))
        try:
            data = ds.read(idx, masked=False).astype(np.float64)
        except Exception as exc:
            raise _error(
                Path(path).name,
                f"the file is truncated or corrupt ({_short(exc, Path(path))}).",
                "Export it again as a GeoTIFF (and check the upload finished).",
            ) from None
        nd = nodata if nodata is not None else ds.nodata
        if nd is not None and not np.isnan(nd):
            data[data == nd] = np.nan
        # internal masks (e.g. alpha) count as nodata too
        try:
            for k, b in enumerate(idx):
                flags = ds.mask_flag_enums[b - 1]
                if any(f.name in ("per_dataset", "alpha") for f in flags):
                    m = ds.read_masks(b)
                    data[k][m == 0] = np.nan
        except Exception:  # pragma: no cover - exotic drivers
            pass
        dates = []
        for b in idx:
            desc = ds.descriptions[b - 1]
            tag = ds.tags(b).get("DATE")
            dates.append(tag or desc or None)
        grid = Grid.from_dataset(ds)
    return data, grid, dates


def atomic_path(path: Path | str) -> tuple[Path, Path]:
    """A temporary sibling of ``path`` to write into before ``os.replace``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=".part" + p.suffix, dir=p.parent)
    os.close(fd)
    return Path(tmp), p


def write_raster(
    path: Path | str,
    data: np.ndarray,
    grid: Grid,
    *,
    nodata: float | int | None = None,
    dtype: str | np.dtype = "float32",
    band_names: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
    band_tags: Sequence[dict[str, str]] | None = None,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
    mask: np.ndarray | None = None,
) -> Path:
    """Write a tiled, deflate-compressed (level 1, multithreaded) GeoTIFF atomically.

    Parameters
    ----------
    path : path-like
        Destination.
    data : ndarray, shape (rows, cols) or (bands, rows, cols)
        NaN is written as ``nodata`` (float outputs default to NaN nodata,
        integer outputs need an explicit ``nodata``).
    grid : Grid
    nodata : number, optional
    dtype : str
        Stored data type (float32 by default).
    band_names : sequence of str, optional
        Band descriptions; dates here (``YYYY-MM`` or ``YYYY-MM-DD``) are also
        stored as a ``DATE`` band tag.
    tags, band_tags : dict, optional
        Dataset and per-band metadata.
    colormap : dict, optional
        Colour table for band 1 (uint8 class maps).
    mask : ndarray of bool, shape (rows, cols), optional
        Valid pixels, written as an internal per-dataset mask (for rasters
        such as RGB composites where every value is a valid colour).

    Returns
    -------
    Path
        The written file.
    """
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape[1:] != grid.shape:
        raise ValueError(f"data shape {arr.shape[1:]} does not match grid {grid.shape}")
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.floating):
        nd = np.nan if nodata is None else nodata
        out = arr.astype(dt)
        if nodata is not None:
            out = np.where(np.isnan(out), nodata, out).astype(dt)
    else:
        if nodata is None and np.isnan(arr.astype(float)).any():
            raise ValueError("integer raster with NaN needs a nodata value")
        nd = nodata
        out = np.where(np.isnan(arr.astype(float)), nodata if nodata is not None else 0, arr).astype(dt)
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": out.shape[0],
        "dtype": dt.name,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nd,
        "compress": "deflate",
        # level 1 + GDAL's worker threads: ~3x faster than the default level for ~4 % more bytes
        "zlevel": 1,
        "num_threads": "ALL_CPUS",
    }
    if grid.width >= 256 and grid.height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if np.issubdtype(dt, np.floating):
        profile["predictor"] = 3 if dt.itemsize >= 4 else 1
    tmp, final = atomic_path(path)
    try:
        with rasterio.open(tmp, "w", **profile) as ds:
            ds.write(out)
            if tags:
                ds.update_tags(**{k: str(v) for k, v in tags.items()})
            for i in range(out.shape[0]):
                if band_names is not None and i < len(band_names) and band_names[i] is not None:
                    name = str(band_names[i])
                    ds.set_band_description(i + 1, name)
                    if _looks_like_date(name):
                        ds.update_tags(i + 1, DATE=name)
                if band_tags is not None and i < len(band_tags) and band_tags[i]:
                    ds.update_tags(i + 1, **{k: str(v) for k, v in band_tags[i].items()})
            if colormap:
                ds.write_colormap(1, colormap)
            if mask is not None:
                ds.write_mask(np.where(np.asarray(mask, bool), 255, 0).astype(np.uint8))
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def _looks_like_date(s: str) -> bool:
    import re

    return bool(re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", s))
