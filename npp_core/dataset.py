"""A study-area dataset: the ``dataset.toml`` manifest, its checks, and alignment.

Design note
-----------
Abstractions:

* :class:`Entry` — one file named in the manifest, with its per-file settings
  (``scale``, ``offset``, ``units``, ``nodata``, ``crs``, ``start``, ``step``,
  ``date``) after section-level defaults were applied.
* *role* — what a file is for, as a dotted manifest key: ``landcover``,
  ``ndvi.fine``, ``climate.solar``, ``soil.rasters.SOC``,
  ``degradation.indicators.goaf`` …
* :class:`Dataset` — the opened manifest plus the reference :class:`~npp_core.raster.Grid`.
  Each role is loaded lazily, once (memoised with the problems found while
  loading it): read with :func:`npp_core.raster.read_raster` (size-checked),
  ``value × scale + offset``, reprojected onto the grid with
  :func:`rasterio.warp.reproject` (categorical: nearest; continuous: bilinear
  when the input is coarser or as fine, average when finer), masked outside
  :attr:`Dataset.mask`, converted to canonical units with
  :func:`npp_core.units.convert` and checked for plausibility.
* :class:`Problem` — something wrong or worth knowing, always with the file and
  a fix. :meth:`Dataset.check` never raises for data problems; the accessors
  (:meth:`Dataset.climate` …) raise :class:`DatasetError` when their role has
  an error, and return ``None`` when the role is absent.

Out of scope: writing outputs (``outputs.py``), the science of every stage,
vector layers other than the boundary polygon.
"""
from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import json
import math
import re
import shutil
import tempfile
import threading
import tomllib
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from rasterio.crs import CRS
from rasterio.enums import Resampling

from .raster import MAX_PIXELS, Grid, RasterError, open_checked, read_raster

__all__ = [
    "open_dataset",
    "dataset_from_files",
    "Dataset",
    "Problem",
    "DatasetError",
    "Layer",
    "Entry",
    "STAGES",
    "parse_date",
]

MANIFEST = "dataset.toml"
STAGES = ("fusion", "casa", "drivers", "correlation", "attribution")
CLIMATE_VARS = ("temperature", "precipitation", "solar", "evapotranspiration")
#: Quantity used for unit conversion of each climate variable.
_QUANTITY = {"temperature": "temperature", "precipitation": "precipitation", "solar": "solar",
             "evapotranspiration": "precipitation"}
_CANONICAL_UNITS = {"temperature": "degC", "precipitation": "mm month-1", "solar": "MJ m-2 month-1",
                    "evapotranspiration": "mm month-1"}
CASA_TYPES = ("evergreen_needleleaf", "evergreen_broadleaf", "deciduous_needleleaf", "deciduous_broadleaf",
              "mixed_forest", "shrub", "grassland", "cropland", "other", "none")
DIRECTIONS = ("higher_is_worse", "lower_is_worse")
_MAX_MANIFEST_BYTES = 1_000_000
_MAX_GEOJSON_BYTES = 50_000_000
_MAX_MANIFEST_DEPTH = 12


def _depth(obj: Any) -> int:
    """Nesting depth of dicts/lists (iterative, so a hostile document cannot exhaust the stack)."""
    deepest = 0
    stack = [(obj, 0)]
    while stack:
        o, d = stack.pop()
        deepest = max(deepest, d)
        if d > 1000:
            break
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend((v, d + 1) for v in o)
    return deepest

ENTRY_KEYS = ("path", "scale", "offset", "units", "nodata", "crs", "start", "step", "date", "kind", "category")
_DEFAULT_KEYS = ("scale", "offset", "units", "nodata", "crs", "start", "step")
TOP_KEYS = ("name", "description", "grid", "boundary", "landcover", "ndvi", "climate", "soil", "degradation",
            "npp", "validation", "drivers", "terrain")
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "landcover": ("raster", "classes", "casa_type", *_DEFAULT_KEYS),
    "ndvi": ("fine_series", "fine", "coarse", "composite", *_DEFAULT_KEYS),
    "climate": (*CLIMATE_VARS, *_DEFAULT_KEYS),
    "soil": ("samples", "rasters", "properties", "x_column", "y_column", "id_column", *_DEFAULT_KEYS),
    "degradation": ("ahp", "raster", "indicators", "direction", "mines", *_DEFAULT_KEYS),
    "terrain": ("dem", *_DEFAULT_KEYS),
    "npp": ("annual", *_DEFAULT_KEYS),
    "validation": ("plots", "reference_npp", "id_column", "x_column", "y_column", "measured_column",
                   "radius_column", "wkt_column", *_DEFAULT_KEYS),
}
#: Keys of a section that name files (role suffix → how many: "one" | "many" | "table").
_FILE_KEYS: dict[str, dict[str, str]] = {
    "landcover": {"raster": "one"},
    "ndvi": {"fine_series": "many", "fine": "many", "coarse": "many"},
    "climate": {v: "many" for v in CLIMATE_VARS},
    "soil": {"samples": "one", "rasters": "table"},
    "degradation": {"ahp": "one", "raster": "one", "indicators": "table", "mines": "one"},
    "terrain": {"dem": "one"},
    "npp": {"annual": "many"},
    "validation": {"plots": "one", "reference_npp": "one"},
}
#: Role → (layer kind, dating): dating "series" (dates needed), "static" (band 1), "table".
_TABLE_ROLES = ("soil.samples", "degradation.ahp", "validation.plots", "degradation.mines")
_CAT_ROLES = ("landcover",)
_SERIES_ROLES = ("ndvi.fine_series", "ndvi.fine", "ndvi.coarse", "npp.annual") + tuple(f"climate.{v}" for v in CLIMATE_VARS)
#: Sections whose ``crs`` key is the CRS of the coordinates in their CSV tables, not of their rasters.
_COORD_CRS_SECTIONS = ("soil", "validation", "degradation")
_DEFAULT_STEP = {"ndvi": "16D", "climate": "1M", "npp": "1Y"}


class DatasetError(ValueError):
    """A dataset (or one of its roles) that cannot be used; the message names the file, the problem and the fix."""

    def __init__(self, message: str, problems: Sequence["Problem"] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


@dataclass
class Problem:
    """One finding of :meth:`Dataset.check`.

    Attributes
    ----------
    severity : {"error", "warning", "info"}
    file : str
        The file at fault (relative to the dataset), or ``dataset.toml``.
    message : str
        What is wrong.
    fix : str
        What to do about it.
    role : str
        The manifest key concerned (e.g. ``climate.solar``), or ``""``.
    """

    severity: str
    file: str
    message: str
    fix: str = ""
    role: str = ""

    def __str__(self) -> str:
        return f"{self.file}: {self.message}" + (f" Fix: {self.fix}" if self.fix else "")

    def to_dict(self) -> dict[str, str]:
        """JSON-friendly form."""
        return asdict(self)


@dataclass(frozen=True)
class Entry:
    """A file named in the manifest, with per-file settings after section defaults."""

    key: str
    path: str
    scale: float = 1.0
    offset: float = 0.0
    units: str | None = None
    nodata: float | None = None
    crs: str | None = None
    start: str | None = None
    step: str | None = None
    date: str | None = None
    kind: str | None = None
    category: str | None = None
    raw: Any = field(default=None, compare=False, repr=False)

    def hash_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("raw", None)
        return d


@dataclass
class Layer:
    """A raster or table role of a dataset, for listings and thumbnails.

    Attributes
    ----------
    role : str
        Manifest key, e.g. ``"climate.temperature"``.
    name : str
        Short display name.
    path : Path or None
        First file behind the role.
    kind : {"categorical", "continuous", "table"}
    paths : tuple of Path
        Every file behind the role.
    """

    role: str
    name: str
    path: Path | None
    kind: str
    paths: tuple[Path, ...] = ()
    _ds: "Dataset | None" = field(default=None, repr=False, compare=False)

    def read_aligned(self, band: int | None = None) -> np.ndarray | None:
        """The layer on the reference grid, for thumbnails.

        Parameters
        ----------
        band : int, optional
            0-based band (over all files of the role in date order); default
            band 0 for single-band layers, the band mean for series.

        Returns
        -------
        ndarray, shape (rows, cols), float64, or None for tables
            NaN outside the mask and where nodata.
        """
        if self.kind == "table" or self._ds is None:
            return None
        stack = self._ds._stack_for(self.role)
        if band is not None:
            if not 0 <= band < stack.shape[0]:
                raise DatasetError(f"{self.name}: band {band} requested, the layer has {stack.shape[0]} band(s).")
            return stack[band]
        if stack.shape[0] == 1:
            return stack[0]
        with np.errstate(invalid="ignore"), _quiet():
            return np.nanmean(stack, axis=0)


class _quiet:
    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *a: Any) -> None:
        self._w.__exit__(*a)


# --------------------------------------------------------------------------- dates

_RE_FULL = re.compile(r"(?<!\d)((?:19|20)\d{2})([-_./]?)(0[1-9]|1[0-2])\2(0[1-9]|[12]\d|3[01])(?!\d)")
_RE_MONTH = re.compile(r"(?<!\d)((?:19|20)\d{2})[-_./]?(0[1-9]|1[0-2])(?!\d)")
_RE_DOY = re.compile(r"(?<![A-Za-z0-9])A((?:19|20)\d{2})(\d{3})(?!\d)")
_RE_YEAR = re.compile(r"(?<!\d)((?:19|20)\d{2})(?!\d)")


def parse_date(text: str | None, *, year_only: bool = False) -> _dt.date | None:
    """The date in a band description, tag or file name.

    Recognises ``YYYY-MM-DD`` (also ``YYYYMMDD``, ``_``/``.`` separators),
    ``YYYY-MM`` (→ the 1st), MODIS ``AYYYYDDD`` and, with ``year_only``, a bare
    ``YYYY`` (→ 1 January).

    Returns
    -------
    datetime.date or None
    """
    if not text:
        return None
    s = str(text)
    m = _RE_FULL.search(s)
    if m:
        try:
            return _dt.date(int(m.group(1)), int(m.group(3)), int(m.group(4)))
        except ValueError:
            pass
    m = _RE_DOY.search(s)
    if m and 1 <= int(m.group(2)) <= 366:
        return _dt.date(int(m.group(1)), 1, 1) + _dt.timedelta(days=int(m.group(2)) - 1)
    m = _RE_MONTH.search(s)
    if m:
        return _dt.date(int(m.group(1)), int(m.group(2)), 1)
    if year_only:
        m = _RE_YEAR.search(s)
        if m:
            return _dt.date(int(m.group(1)), 1, 1)
    return None


def _parse_step(step: str | int | None, default: str) -> tuple[str, int]:
    """('M' | 'D' | 'Y' | 'MODIS', n)."""
    s = str(step if step is not None else default).strip().upper().replace(" ", "")
    if s in ("MONTH", "MONTHLY", "M"):
        return "M", 1
    if s in ("YEAR", "YEARLY", "ANNUAL", "Y"):
        return "Y", 1
    if s in ("MODIS16", "MODIS"):
        return "MODIS", 16
    m = re.fullmatch(r"(\d+)(D|DAY|DAYS|M|MONTH|MONTHS|Y|YEAR|YEARS)?", s)
    if not m:
        raise ValueError(f"step {step!r} not understood; use e.g. \"1M\", \"16D\", \"1Y\" or \"modis16\"")
    n = int(m.group(1))
    unit = (m.group(2) or "D")[0]
    if n <= 0:
        raise ValueError(f"step {step!r} must be positive")
    return unit, n


def _step_dates(start: _dt.date, step: tuple[str, int], n: int) -> list[_dt.date]:
    unit, k = step
    out = []
    if unit == "MODIS":  # 16-day composites restarting on 1 January (DOY 1, 17, …, 353)
        d = start
        for _ in range(n):
            out.append(d)
            nxt = d + _dt.timedelta(days=16)
            d = nxt if nxt.year == d.year else _dt.date(d.year + 1, 1, 1)
        return out
    for i in range(n):
        if unit == "D":
            out.append(start + _dt.timedelta(days=k * i))
        elif unit == "M":
            mm = start.month - 1 + k * i
            out.append(_dt.date(start.year + mm // 12, mm % 12 + 1, min(start.day, 28) if start.day > 28 else start.day))
        else:
            out.append(_dt.date(start.year + k * i, start.month, start.day))
    return out


# --------------------------------------------------------------------------- helpers

def _closest(word: str, choices: Iterable[str]) -> str:
    m = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{m[0]}'?" if m else ""


def _crs_or_none(value: Any) -> CRS | None:
    if value is None:
        return None
    try:
        return CRS.from_user_input(value)
    except Exception:
        return None


def _fmt_range(a: np.ndarray) -> str:
    f = a[np.isfinite(a)]
    if not f.size:
        return "no valid values"
    return f"{f.min():.4g} to {f.max():.4g}"


def _clip_window(src: Any, crs: CRS | None, g: Grid) -> Any:
    """Window of an open raster covering the reference grid (2-pixel margin), or None to read it whole.

    None when the raster is rotated, has no CRS, or the window would hold ≥ 80 % of it anyway.
    """
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    try:
        t = src.transform
        if crs is None or t.b != 0 or t.d != 0 or t.e >= 0:
            return None
        gb = g.bounds if crs == g.crs else transform_bounds(g.crs, crs, *g.bounds, densify_pts=21)
        w = from_bounds(*gb, transform=t)
        c0 = max(0, math.floor(w.col_off) - 2)
        r0 = max(0, math.floor(w.row_off) - 2)
        c1 = min(src.width, math.ceil(w.col_off + w.width) + 2)
        r1 = min(src.height, math.ceil(w.row_off + w.height) + 2)
        if c1 > c0 and r1 > r0 and (c1 - c0) * (r1 - r0) < 0.8 * src.width * src.height:
            return Window(c0, r0, c1 - c0, r1 - r0)
    except Exception:
        return None
    return None


def _source_crs(e: Entry, rel: str, sg: Grid, g: Grid, role: str, probs: list[Problem]) -> CRS | None:
    """The CRS a source file is read in: the file's, or the manifest's ``crs`` (which overrides
    the file's when given in the entry itself, else only fills a missing one); a file without a
    CRS on exactly the reference grid takes the grid's. Appends the warnings to ``probs``;
    returns None after appending the error when there is no usable CRS."""
    src_crs = sg.crs
    explicit = isinstance(e.raw, dict) and "crs" in e.raw  # else a [section] default: fills a missing CRS only
    if e.crs and (explicit or src_crs is None or not str(src_crs)):
        c = _crs_or_none(e.crs)
        if c is None:
            probs.append(Problem("error", rel, f"crs {e.crs!r} of '{e.key}' is not a CRS.",
                                 "Write e.g. crs = \"EPSG:4326\".", role))
            return None
        if src_crs is not None and str(src_crs) and CRS.from_user_input(src_crs) != c:
            probs.append(Problem("warning", rel, f"the file says its CRS is {CRS.from_user_input(src_crs).to_string()}, "
                                 f"the manifest says {c.to_string()}; the manifest's is used.",
                                 "Remove crs from the entry if the file is right.", role))
        src_crs = c
    if src_crs is None or not str(src_crs):
        if sg.shape == g.shape and all(abs(a - b) < 1e-6 * max(1, abs(a)) for a, b in zip(sg.transform, g.transform)):
            probs.append(Problem("warning", rel, "the file has no CRS; its grid equals the reference grid, "
                                 "so the grid's CRS is assumed.",
                                 f"Save it with its CRS or add crs = \"...\" to '{e.key}'.", role))
            return CRS.from_user_input(g.crs)
        probs.append(Problem("error", rel, f"the file has no CRS and its grid differs from the reference "
                             f"grid, so it cannot be reprojected (manifest key '{e.key}').",
                             f"Save it with its CRS, or write {{ path = \"{e.path}\", crs = \"EPSG:....\" }} "
                             "in dataset.toml.", role))
        return None
    return CRS.from_user_input(src_crs)


def _overlap_share(e: Entry, rel: str, sgrid: Grid, g: Grid, role: str, probs: list[Problem]) -> float | None:
    """Share (0–1] of the reference grid's extent covered by a source's footprint; a warning
    below 99.9 %, None after appending the error when it cannot be transformed or does not overlap."""
    from rasterio.warp import transform_bounds

    try:
        b = sgrid.bounds if sgrid.crs == g.crs else transform_bounds(sgrid.crs, g.crs, *sgrid.bounds, densify_pts=21)
    except Exception as exc:
        probs.append(Problem("error", rel, f"cannot transform its extent to the grid CRS ({str(exc)[:100]}).",
                             "Check the file's CRS.", role))
        return None
    gb = g.bounds
    ix = max(0.0, min(b[2], gb[2]) - max(b[0], gb[0]))
    iy = max(0.0, min(b[3], gb[3]) - max(b[1], gb[1]))
    share = ix * iy / max((gb[2] - gb[0]) * (gb[3] - gb[1]), 1e-300)
    if share <= 0:
        probs.append(Problem("error", rel, f"does not overlap the reference grid (manifest key '{e.key}'): "
                             f"file extent {tuple(round(v, 3) for v in b)} vs grid {tuple(round(v, 3) for v in gb)} "
                             f"in {g.crs.to_string()}.",
                             "Check the file's CRS and that it covers the study area.", role))
        return None
    if share < 0.999:
        probs.append(Problem("warning", rel, f"covers only {100 * share:.1f}% of the reference grid; the rest "
                             "is nodata.", "Supply a file that covers the whole study area.", role))
    return share


def _month_label(d: _dt.date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


# --------------------------------------------------------------------------- opening

def open_dataset(path: Path | str | bytes | bytearray) -> "Dataset":
    """Open a dataset folder, a ``dataset.toml`` file, or a .zip of a dataset folder.

    Parameters
    ----------
    path : path-like or bytes
        Folder holding ``dataset.toml``; the manifest itself; a ``.zip``
        archive on disk; or the bytes of an archive (an upload). Archives are
        extracted with :func:`npp_core.safezip.extract_zip` into a temporary
        folder the dataset owns and removes on :meth:`Dataset.close` (or when
        used as a context manager, or when garbage-collected).

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        Missing or unparseable manifest, unsafe archive, unusable grid raster.
    """
    from .safezip import SafeZipError, extract_zip

    if isinstance(path, (bytes, bytearray, memoryview)):
        return _open_zip(bytes(path), "upload.zip", extract_zip, SafeZipError)
    p = Path(path)
    if p.is_file() and p.name == MANIFEST:
        return Dataset(p.parent)
    if p.is_file():
        import zipfile

        if p.suffix.lower() == ".zip" or zipfile.is_zipfile(p):
            return _open_zip(p, p.name, extract_zip, SafeZipError)
        raise DatasetError(f"{p.name}: neither a dataset folder, a {MANIFEST} nor a .zip. "
                           f"Give the folder that holds {MANIFEST}, or a .zip of it.")
    if not p.exists():
        raise DatasetError(f"{p}: not found. Give the folder that holds {MANIFEST}, or a .zip of it.")
    if p.is_dir() and not (p / MANIFEST).is_file():
        subs = [q.parent for q in p.glob(f"*/{MANIFEST}") if q.is_file()]
        if len(subs) == 1:  # an unzipped archive: the dataset is one folder down
            return Dataset(subs[0])
    return Dataset(p)


_SAFE_NAME = re.compile(r"^[\w\-. ]+(/[\w\-. ]+)*$")


def dataset_from_files(files: "dict[str, bytes]", manifest: dict[str, Any], *,
                       max_total_bytes: int = 2_000_000_000) -> "Dataset":
    """Build a dataset from in-memory files (uploads assigned to roles) and a manifest.

    Parameters
    ----------
    files : dict
        {relative path as named in the manifest: file bytes}. Paths must be
        relative, use ``/``, contain no ``..`` and only letters, digits, ``_``,
        ``-``, ``.`` and spaces.
    manifest : dict
        The manifest (same structure as ``dataset.toml``); written with tomli_w.
    max_total_bytes : int
        Largest total size.

    Returns
    -------
    Dataset
        Owning a temporary folder (removed by :meth:`Dataset.close`).

    Raises
    ------
    DatasetError
        Unsafe names, too much data, or a manifest/grid that cannot be used.
    """
    import tomli_w

    total = sum(len(b) for b in files.values())
    if total > max_total_bytes:
        raise DatasetError(f"uploads: {total:,} bytes, more than the limit of {max_total_bytes:,}. "
                           "Clip the rasters to the study area.")
    for name in files:
        if not _SAFE_NAME.match(name) or ".." in name.split("/") or name == MANIFEST:
            raise DatasetError(f"{name!r}: not an acceptable file name for an upload. Use a plain relative name "
                               "such as 'climate/tmean.tif' (letters, digits, _ - . and spaces).")
    try:
        text = tomli_w.dumps(manifest)
    except Exception as exc:
        raise DatasetError(f"{MANIFEST}: the manifest cannot be written as TOML ({exc}).") from None
    tmp = Path(tempfile.mkdtemp(prefix="npp_dataset_"))
    try:
        for name, data in files.items():
            target = (tmp / name).resolve()
            if tmp.resolve() not in target.parents:
                raise DatasetError(f"{name!r}: not an acceptable file name for an upload.")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bytes(data))
        (tmp / MANIFEST).write_text(text, encoding="utf-8")
        return Dataset(tmp, _tmpdir=tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _open_zip(src: Any, label: str, extract_zip: Callable, SafeZipError: type) -> "Dataset":
    tmp = Path(tempfile.mkdtemp(prefix="npp_dataset_"))
    try:
        root = extract_zip(src, tmp)
        return Dataset(root, _tmpdir=tmp)
    except SafeZipError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetError(str(exc)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class Dataset:
    """An opened study-area dataset (see :func:`open_dataset`).

    Attributes
    ----------
    name : str
    root : Path
        Folder holding ``dataset.toml``.
    manifest : dict
        The parsed manifest, as written.
    grid : npp_core.raster.Grid
        Reference grid from the manifest ``grid`` (default: the land-cover raster).
    """

    def __init__(self, root: Path | str, *, _tmpdir: Path | None = None):
        self.root = Path(root).resolve()
        self._tmpdir = _tmpdir
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(_tmpdir), True) if _tmpdir else None
        self._lock = threading.RLock()
        self._cache: dict[str, tuple[Any, list[Problem], dict[str, Any]]] = {}
        self._hash_cache: dict[tuple[str, int, int], str] = {}
        self._mask: np.ndarray | None = None
        self._mask_problems: list[Problem] = []
        mf = self.root / MANIFEST
        if not mf.is_file():
            raise DatasetError(
                f"{MANIFEST}: not found in {self.root}. Create it (see the dataset format) or build it in the "
                "dashboard from the uploaded files.")
        if mf.stat().st_size > _MAX_MANIFEST_BYTES:
            raise DatasetError(f"{MANIFEST}: larger than {_MAX_MANIFEST_BYTES:,} bytes; is it the right file?")
        try:
            text = mf.read_bytes().decode("utf-8-sig")
            self.manifest: dict[str, Any] = tomllib.loads(text)
        except UnicodeDecodeError:
            raise DatasetError(f"{MANIFEST}: not UTF-8 text. Save it as UTF-8.") from None
        except tomllib.TOMLDecodeError as exc:
            raise DatasetError(
                f"{MANIFEST}: not valid TOML ({exc}). Fix the syntax at that line: quote paths and text, and keep "
                "inline tables { … } on one line (use [section.sub] tables for anything longer).") from None
        except RecursionError:
            raise DatasetError(f"{MANIFEST}: nested too deeply to be a dataset manifest. Write it as in the "
                               "dataset format (sections, file entries, short lists).") from None
        if _depth(self.manifest) > _MAX_MANIFEST_DEPTH:
            raise DatasetError(f"{MANIFEST}: tables or lists nested more than {_MAX_MANIFEST_DEPTH} levels deep. "
                               "Write it as in the dataset format (sections, file entries, short lists).")
        self._problems: list[Problem] = []
        self._roles: dict[str, list[Entry]] = {}
        self._parse()
        self.name: str = str(self.manifest.get("name") or self.root.name)
        self.grid: Grid = self._open_grid()

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Drop cached arrays and remove the temporary folder of an extracted archive."""
        self._cache.clear()
        self._mask = None
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Dataset(name={self.name!r}, root={str(self.root)!r}, roles={sorted(self._roles)})"

    # ----------------------------------------------------------------- manifest
    def _warn(self, message: str, fix: str = "", role: str = "", file: str = MANIFEST, severity: str = "warning") -> None:
        self._problems.append(Problem(severity, file, message, fix, role))

    def _parse(self) -> None:
        m = self.manifest
        for k in m:
            if k not in TOP_KEYS:
                self._warn(f"unknown top-level key '{k}' is ignored.{_closest(k, TOP_KEYS)}",
                           "Remove it or correct the spelling.", k)
        for key in ("grid", "boundary"):
            if key in m:
                ents = self._entries(key, m[key], {})
                if ents:
                    self._roles[key] = ents[:1]
        for sec, allowed in SECTION_KEYS.items():
            if sec not in m:
                continue
            body = m[sec]
            if not isinstance(body, dict):
                self._warn(f"'{sec}' should be a section ([{sec}]), found {type(body).__name__}; ignored.",
                           f"Write it as a [{sec}] table.", sec, severity="error")
                continue
            for k in body:
                if k not in allowed:
                    self._warn(f"unknown key '{k}' in [{sec}] is ignored.{_closest(k, allowed)}",
                               "Remove it or correct the spelling.", f"{sec}.{k}")
            defaults = {k: body[k] for k in _DEFAULT_KEYS if k in body}
            for k, how in _FILE_KEYS[sec].items():
                if k not in body:
                    continue
                if how == "table":
                    tbl = body[k]
                    if not isinstance(tbl, dict):
                        self._warn(f"[{sec}] {k} should be a table of name = file, found {type(tbl).__name__}.",
                                   f"Write [{sec}.{k}] with one line per name = \"file\".", f"{sec}.{k}", severity="error")
                        continue
                    for name, v in tbl.items():
                        ents = self._entries(f"{sec}.{k}.{name}", v, defaults)
                        if ents:
                            self._roles[f"{sec}.{k}.{name}"] = ents
                else:
                    ents = self._entries(f"{sec}.{k}", body[k], defaults)
                    if ents:
                        if how == "one" and len(ents) > 1:
                            self._warn(f"[{sec}] {k} takes one file, {len(ents)} given; only the first is used.",
                                       "Give a single file.", f"{sec}.{k}")
                            ents = ents[:1]
                        self._roles[f"{sec}.{k}"] = ents
        ndvi = m.get("ndvi")
        if isinstance(ndvi, dict) and "composite" in ndvi and ndvi["composite"] not in ("max", "mean"):
            self._warn(f"[ndvi] composite = {ndvi['composite']!r} is not understood.", "Use \"max\" (maximum-value "
                       "composite, the default) or \"mean\".", "ndvi.composite", severity="error")
        if "drivers" in m:
            body = m["drivers"]
            if isinstance(body, dict):
                for name, v in body.items():
                    ents = self._entries(f"drivers.{name}", v, {})
                    if ents:
                        self._roles[f"drivers.{name}"] = ents[:1]
                        if not ents[0].category:
                            self._warn(f"driver '{name}' has no category; it is counted as mining (M).",
                                       f"Write {name} = {{ path = \"{ents[0].path}\", category = \"C\" }} "
                                       "(C climate, S soil, M mining, or a new category).", f"drivers.{name}",
                                       severity="info")
            else:
                self._warn("'drivers' should be a section of name = { path = ..., category = ... }.",
                           "Write [drivers] with one line per driver.", "drivers", severity="error")
        if "landcover.raster" in self._roles:
            self._roles["landcover"] = self._roles.pop("landcover.raster")
        elif "grid" in self._roles and isinstance(m.get("landcover"), dict) and "classes" in m["landcover"]:
            # classes given for the grid raster itself
            self._roles["landcover"] = [Entry(key="landcover", path=self._roles["grid"][0].path,
                                              nodata=self._roles["grid"][0].nodata, raw=m.get("grid"))]

    def _entries(self, key: str, value: Any, defaults: dict[str, Any]) -> list[Entry]:
        if isinstance(value, list):
            out = []
            for i, v in enumerate(value):
                out.extend(self._entries(f"{key}[{i}]", v, defaults))
            return out
        if isinstance(value, str):
            d: dict[str, Any] = {"path": value}
        elif isinstance(value, dict):
            if "path" not in value:
                self._warn(f"'{key}' is a table without 'path'.", f"Add path = \"...\" to {key}.", key, severity="error")
                return []
            for k in value:
                if k not in ENTRY_KEYS:
                    self._warn(f"unknown key '{k}' in the entry of '{key}' is ignored.{_closest(k, ENTRY_KEYS)}",
                               f"Allowed keys: {', '.join(ENTRY_KEYS)}.", key)
            d = dict(value)
        else:
            self._warn(f"'{key}' should be a file path or a table {{ path = ... }}, found {value!r}.",
                       "Write the path in quotes.", key, severity="error")
            return []
        defaults = dict(defaults)
        if key.split(".")[0] in _COORD_CRS_SECTIONS:
            defaults.pop("crs", None)  # there, [section] crs is the CRS of table coordinates
        merged = {**defaults, **d}
        try:
            scale = float(merged.get("scale", 1.0))
            offset = float(merged.get("offset", 0.0))
            nodata = None if merged.get("nodata") is None else float(merged["nodata"])
        except (TypeError, ValueError, OverflowError):
            self._warn(f"'{key}': scale, offset and nodata must be numbers.", "Write them without quotes.", key,
                       severity="error")
            return []
        if not (math.isfinite(scale) and math.isfinite(offset)) or scale == 0:
            self._warn(f"'{key}': scale = {scale:g}, offset = {offset:g} would destroy every value.",
                       "Give a finite, non-zero scale and a finite offset (value × scale + offset).", key,
                       severity="error")
            return []
        if not isinstance(merged["path"], str) or not merged["path"].strip():
            self._warn(f"'{key}': path must be a non-empty text.", "Write the path in quotes.", key, severity="error")
            return []
        return [Entry(
            key=key, path=merged["path"].strip(), scale=scale, offset=offset,
            units=None if merged.get("units") is None else str(merged["units"]),
            nodata=nodata, crs=None if merged.get("crs") is None else str(merged["crs"]),
            start=None if merged.get("start") is None else str(merged["start"]),
            step=None if merged.get("step") is None else str(merged["step"]),
            date=None if merged.get("date") is None else str(merged["date"]),
            kind=None if merged.get("kind") is None else str(merged["kind"]),
            category=None if merged.get("category") is None else str(merged["category"]),
            raw=value,
        )]

    def _resolve(self, e: Entry) -> tuple[Path | None, Problem | None]:
        """The file of an entry, or the problem (unsafe path, not found)."""
        raw = e.path
        unsafe = (
            raw.startswith(("/", "\\")) or PureWindowsPath(raw).drive or PurePosixPath(raw).is_absolute()
            or ".." in PurePosixPath(raw.replace("\\", "/")).parts or "\x00" in raw
        )
        p = (self.root / raw.replace("\\", "/")).resolve() if not unsafe else None
        if p is not None and p != self.root and self.root not in p.parents:
            unsafe = True
        if unsafe:
            return None, Problem("error", raw, f"path given for '{e.key}' leaves the dataset folder.",
                                 "Use a path relative to the folder holding dataset.toml, without '..' or a "
                                 "drive letter, and copy the file into the dataset folder.", e.key)
        assert p is not None
        if not p.is_file():
            hint = ""
            if p.parent.is_dir():
                names = [q.name for q in p.parent.iterdir() if q.is_file()]
                lower = [n for n in names if n.lower() == p.name.lower()]
                hint = f" A file '{lower[0]}' exists (names are case-sensitive)." if lower else _closest(p.name, names)
            return None, Problem("error", raw, f"file not found (manifest key '{e.key}').{hint}",
                                 "Correct the path in dataset.toml or add the file to the dataset folder.", e.key)
        return p, None

    def _rel(self, p: Path) -> str:
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return p.name

    # ----------------------------------------------------------------- grid, mask
    def _open_grid(self) -> Grid:
        ents = self._roles.get("grid") or self._roles.get("landcover")
        if not ents:
            raise DatasetError(
                f"{MANIFEST}: no reference grid. Add grid = \"landcover.tif\" (any raster on the grid you want "
                "results on) or a [landcover] raster.")
        if "grid" not in self._roles:
            self._warn(f"no 'grid' given; the land-cover raster {ents[0].path} is the reference grid.",
                       "Add grid = \"...\" to choose another raster.", "grid", severity="info")
            self._roles["grid"] = [Entry(key="grid", path=ents[0].path, crs=ents[0].crs, raw=ents[0].raw)]
            ents = self._roles["grid"]
        e = ents[0]
        p, prob = self._resolve(e)
        if prob is not None:
            raise DatasetError(f"{prob} The reference grid (manifest key 'grid') must be usable.", [prob])
        assert p is not None
        try:
            with open_checked(p) as src:
                g = Grid.from_dataset(src)
        except RasterError as exc:
            raise DatasetError(f"{exc} (reference grid, manifest key 'grid')") from None
        crs = _crs_or_none(e.crs) if e.crs else None
        if e.crs and crs is None:
            raise DatasetError(f"{MANIFEST}: grid crs {e.crs!r} is not a CRS. Write e.g. crs = \"EPSG:32649\".")
        if crs is None:
            crs = g.crs
        if crs is None or not str(crs):
            raise DatasetError(
                f"{self._rel(p)}: the reference grid has no CRS, so nothing can be aligned to it. Save it with its "
                "CRS, or write grid = { path = \"...\", crs = \"EPSG:....\" } in dataset.toml.")
        if g.transform.b != 0 or g.transform.d != 0:
            raise DatasetError(f"{self._rel(p)}: the reference grid is rotated. Warp it to a north-up grid first.")
        g = Grid(crs=CRS.from_user_input(crs), transform=g.transform, width=g.width, height=g.height)
        if g.crs.is_geographic:
            self._warn(f"the reference grid {self._rel(p)} is in geographic coordinates ({g.crs.to_string()}); "
                       "distances (kriging, LCC windows, plot radii) are then in degrees.",
                       "Reproject the grid raster to a projected CRS (e.g. the UTM zone).", "grid",
                       file=self._rel(p))
        return g

    @property
    def mask(self) -> np.ndarray:
        """Study-area mask, bool (rows, cols): inside the boundary polygon and valid land cover.

        Raises
        ------
        DatasetError
            When the boundary cannot be used or the mask is empty (a map on a wrong
            mask would look plausible, so there is no silent fallback).
        """
        m, probs = self._ensure_mask()
        self._raise_if_errors("mask", probs)
        return m

    def _ensure_mask(self) -> tuple[np.ndarray, list[Problem]]:
        with self._lock:
            if self._mask is None:
                self._mask, self._mask_problems = self._build_mask()
            return self._mask, self._mask_problems

    def _build_mask(self) -> tuple[np.ndarray, list[Problem]]:
        probs: list[Problem] = []
        mask = np.ones(self.grid.shape, dtype=bool)
        if "boundary" in self._roles:
            try:
                mask &= self._boundary_mask(probs)
            except DatasetError as exc:
                probs.extend(exc.problems or [Problem("error", self._roles["boundary"][0].path, str(exc), "", "boundary")])
            except Exception as exc:  # malformed geometry: a problem to report, never a crash
                probs.append(Problem("error", self._roles["boundary"][0].path,
                                     f"not a usable polygon GeoJSON ({exc.__class__.__name__}: {str(exc)[:120]}).",
                                     "Export the study-area polygon again as GeoJSON (Polygon or MultiPolygon).",
                                     "boundary"))
        if "landcover" in self._roles:
            try:
                scan = self._landcover_scan()[0]
            except Exception as exc:  # reported with the land cover itself; never a crash here
                scan = None
                probs.append(Problem("error", self._roles["landcover"][0].path, f"could not be read for the study-area "
                                     f"mask ({exc.__class__.__name__}: {str(exc)[:160]}).",
                                     "Export the land-cover raster again as a GeoTIFF and check its CRS.", "landcover"))
            if scan is not None:
                mask &= scan["ok"]
        if not mask.any():
            probs.append(Problem("error", MANIFEST, "the study-area mask is empty: no pixel is inside the boundary "
                                 "with valid land cover.",
                                 "Check that the boundary and land cover overlap the grid and that [landcover.classes] "
                                 "lists the raster's codes.", "boundary"))
        return mask, probs

    def _boundary_mask(self, probs: list[Problem]) -> np.ndarray:
        from rasterio.features import rasterize
        from rasterio.warp import transform_geom

        e = self._roles["boundary"][0]
        p, prob = self._resolve(e)
        if prob is not None:
            raise DatasetError(str(prob), [prob])
        assert p is not None
        rel = self._rel(p)
        if p.stat().st_size > _MAX_GEOJSON_BYTES:
            pr = Problem("error", rel, "the boundary file is too large.", "Simplify the polygon.", "boundary")
            raise DatasetError(str(pr), [pr])
        try:
            gj = json.loads(p.read_bytes().decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            pr = Problem("error", rel, f"not valid GeoJSON ({str(exc)[:120]}).",
                         "Export the study-area polygon as GeoJSON.", "boundary")
            raise DatasetError(str(pr), [pr]) from None
        geoms = []
        if isinstance(gj, dict) and gj.get("type") == "FeatureCollection":
            geoms = [f.get("geometry") for f in gj.get("features", []) if isinstance(f, dict)]
        elif isinstance(gj, dict) and gj.get("type") == "Feature":
            geoms = [gj.get("geometry")]
        elif isinstance(gj, dict) and "coordinates" in gj:
            geoms = [gj]
        geoms = [g for g in geoms if isinstance(g, dict) and g.get("type") in ("Polygon", "MultiPolygon")]
        if not geoms:
            pr = Problem("error", rel, "no Polygon or MultiPolygon found.",
                         "Give the study area as a polygon GeoJSON.", "boundary")
            raise DatasetError(str(pr), [pr])
        src_crs = None
        if e.crs:
            src_crs = _crs_or_none(e.crs)
        elif isinstance(gj.get("crs"), dict):
            src_crs = _crs_or_none((gj["crs"].get("properties") or {}).get("name"))
        if src_crs is None:
            coords = np.array(list(_iter_coords(geoms)), dtype=float)
            if coords.size and (np.abs(coords[:, 0]).max() > 180 or np.abs(coords[:, 1]).max() > 90):
                src_crs = self.grid.crs
                probs.append(Problem("info", rel, "the boundary has no CRS and projected-looking coordinates; "
                                     "taken to be in the grid's CRS.",
                                     "Add crs to the boundary entry if that is wrong.", "boundary"))
            else:
                src_crs = CRS.from_epsg(4326)
        if src_crs != self.grid.crs:
            try:
                geoms = [transform_geom(src_crs, self.grid.crs, g) for g in geoms]
            except Exception as exc:
                pr = Problem("error", rel, f"cannot reproject the boundary ({str(exc)[:120]}).",
                             "Save the polygon in the grid's CRS or in EPSG:4326.", "boundary")
                raise DatasetError(str(pr), [pr]) from None
        burned = rasterize([(g, 1) for g in geoms], out_shape=self.grid.shape, transform=self.grid.transform,
                           fill=0, dtype="uint8")
        if not burned.any():
            pr = Problem("error", rel, "the boundary polygon does not cover any pixel of the reference grid.",
                         "Check its CRS (GeoJSON without 'crs' is read as EPSG:4326) and extent.", "boundary")
            raise DatasetError(str(pr), [pr])
        return burned.astype(bool)

    # ----------------------------------------------------------------- alignment
    def _load_raw(self, role: str, apply_mask: bool = True) -> tuple[np.ndarray | None, list[Problem], dict[str, Any]]:
        """Aligned stack of a raster role (memoised): (stack or None, problems, info)."""
        key = role if apply_mask else role + "#raw"
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            if apply_mask:
                stack, probs, info = self._load_raw(role, apply_mask=False)
                if role != "landcover":  # only the land cover's raw codes are needed again (for the mask)
                    self._cache.pop(role + "#raw", None)
                if stack is not None:
                    if role == "landcover":
                        stack = stack.copy()
                    stack[:, ~self.mask] = np.nan
                    probs = list(probs)
                    inside = self.mask
                    if inside.any():
                        n_in = int(inside.sum())
                        n_nan = int(np.count_nonzero(np.isnan(stack))) - stack.shape[0] * (inside.size - n_in)
                        share = n_nan / (stack.shape[0] * n_in)
                        info = {**info, "nodata_share": share}
                        if share >= 1.0:
                            probs.append(Problem("error", info.get("file", role),
                                                 f"no valid pixel inside the study area (manifest key '{role}').",
                                                 "Check the nodata value, scale and extent of the file.", role))
                        elif role != "landcover" and share - (1 - min(
                                (x.get("overlap_share", 1.0) for x in info.get("source", [])), default=1.0)) > 0.1:
                            probs.append(Problem("warning", info.get("file", role),
                                                 f"{100 * share:.1f}% of the values inside the study area are nodata "
                                                 f"(manifest key '{role}').",
                                                 "Check the nodata value and that the file covers the study area.", role))
                res = (stack, probs, info)
            else:
                res = self._align_role(role)
            if apply_mask:
                _freeze(res[0])
            self._cache[key] = res
            return res

    def _align_role(self, role: str) -> tuple[np.ndarray | None, list[Problem], dict[str, Any]]:
        from rasterio.warp import reproject, calculate_default_transform

        ents = self._roles.get(role)
        if not ents:
            return None, [], {}
        kind = self._kind(role)
        series = role in _SERIES_ROLES
        probs: list[Problem] = []
        stacks: list[np.ndarray] = []
        band_dates: list[_dt.date | None] = []
        band_src: list[int] = []
        files: list[str] = []
        info: dict[str, Any] = {"role": role, "kind": kind, "resampling": [], "source": []}
        g = self.grid
        for ei, e in enumerate(ents):
            p, prob = self._resolve(e)
            if prob is not None:
                probs.append(prob)
                continue
            assert p is not None
            rel = self._rel(p)
            files.append(rel)
            try:
                data, sg, dtexts, full_shape = self._read_clipped(p, e)
            except RasterError as exc:
                probs.append(Problem("error", rel, f"{exc.problem} (manifest key '{e.key}')",
                                     exc.fix or "Export the file again as a GeoTIFF.", role))
                continue
            bad = np.isinf(data)
            if bad.any():
                probs.append(Problem("warning", rel, f"{int(bad.sum()):,} value(s) are infinite; they are treated as "
                                     f"nodata (manifest key '{e.key}').",
                                     "Set the file's nodata value (or nodata = ... in its entry) so that no value is "
                                     "±inf, or export it again.", role))
                data = np.where(bad, np.nan, data)
            src_crs = _source_crs(e, rel, sg, g, role, probs)
            if src_crs is None:
                continue
            if e.scale != 1.0 or e.offset != 0.0:
                data = data * e.scale + e.offset
            sgrid = Grid(crs=src_crs, transform=sg.transform, width=sg.width, height=sg.height)
            share = _overlap_share(e, rel, sgrid, g, role, probs)
            if share is None:
                continue
            shift = _pixel_shift(sgrid, g)
            if shift is not None:
                out = _paste(data, shift, g.shape)
                how = "none"
            else:
                if kind == "categorical":
                    rs = Resampling.nearest
                else:
                    if src_crs == g.crs:
                        sres = math.sqrt(sgrid.res[0] * sgrid.res[1])
                    else:
                        try:
                            tr, _, _ = calculate_default_transform(src_crs, g.crs, sgrid.width, sgrid.height,
                                                                   *sgrid.bounds)
                            sres = math.sqrt(abs(tr.a * tr.e))
                        except Exception:
                            sres = math.sqrt(g.res[0] * g.res[1])
                    ratio = sres / math.sqrt(g.res[0] * g.res[1])
                    rs = Resampling.average if ratio < 0.98 else Resampling.bilinear
                how = rs.name
                out = np.full((data.shape[0],) + g.shape, np.nan, dtype=np.float64)
                reproject(source=data, destination=out, src_transform=sgrid.transform, src_crs=src_crs,
                          dst_transform=g.transform, dst_crs=g.crs, src_nodata=np.nan, dst_nodata=np.nan,
                          resampling=rs, num_threads=2, warp_mem_limit=256)
            info["resampling"].append(how)
            info["source"].append({"file": rel, "crs": src_crs.to_string(), "shape": list(full_shape),
                                   "res": [float(sg.res[0]), float(sg.res[1])], "bands": int(data.shape[0]),
                                   "overlap_share": float(min(share, 1.0))})
            if not series and out.shape[0] > 1:
                probs.append(Problem("info", rel, f"has {out.shape[0]} bands; only band 1 is used for '{e.key}'.",
                                     "Give a single-band file.", role))
                out = out[:1]
                dtexts = dtexts[:1]
            stacks.append(out)
            # dates
            for k in range(out.shape[0]):
                d = parse_date(dtexts[k], year_only=(role == "npp.annual")) if k < len(dtexts) else None
                if d is None and out.shape[0] == 1:
                    d = parse_date(e.date, year_only=True) or parse_date(p.stem, year_only=(role == "npp.annual"))
                band_dates.append(d)
                band_src.append(ei)
        if not stacks:
            return None, probs, info
        stack = np.concatenate(stacks, axis=0) if len(stacks) > 1 else stacks[0]
        info["file"] = files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more)"
        info["files"] = files
        info["bands"] = int(stack.shape[0])
        if series:
            dates, dprobs = self._date_bands(role, ents, band_dates, band_src, files)
            probs.extend(dprobs)
            if dates is None:
                return None, probs, info
            order = sorted(range(len(dates)), key=lambda i: dates[i])
            if order != list(range(len(dates))):
                stack = stack[order]
                dates = [dates[i] for i in order]
            dup = sorted({d for d in dates if dates.count(d) > 1})
            if dup:
                probs.append(Problem("error", info["file"], f"several bands have the same date {dup[0]} (manifest key "
                                     f"'{role}').", "Give each band its own date (band description or DATE tag).", role))
                return None, probs, info
            info["dates"] = dates
        return stack, probs, info

    def _read_clipped(self, p: Path, e: Entry) -> tuple[np.ndarray, Grid, list[str | None], tuple[int, int]]:
        """Read only the part of a raster around the reference grid (plus a 2-pixel margin).

        Falls back to :func:`npp_core.raster.read_raster` (the whole file) when the
        window would cover most of the file or cannot be computed. Both paths go
        through :func:`npp_core.raster.open_checked` (size limit).

        Returns
        -------
        data : ndarray (bands, rows, cols) float64, NaN = nodata
        grid : Grid of ``data`` (CRS as in the file, may be None)
        dates : list of band date texts (DATE tag or description) or None
        full_shape : (rows, cols) of the whole file
        """

        with open_checked(p) as src:
            full_shape = (src.height, src.width)
            n_aligned = int(src.count) * self.grid.width * self.grid.height
            if n_aligned > MAX_PIXELS:
                msg = (f"its {src.count} band(s) on the {self.grid.height} × {self.grid.width} reference grid would "
                       f"be {n_aligned:,} values, more than the limit of {MAX_PIXELS:,}.")
                fix = "Split the series into shorter files, or use a coarser reference grid."
                raise RasterError(f"{p.name}: {msg} {fix}", problem=msg, fix=fix)
            explicit = isinstance(e.raw, dict) and "crs" in e.raw
            crs = _crs_or_none(e.crs) if e.crs and (explicit or not src.crs) else (
                CRS.from_user_input(src.crs) if src.crs else None)
            win = _clip_window(src, crs, self.grid)
            if win is not None:
                idx = list(range(1, src.count + 1))
                try:
                    data = src.read(idx, window=win, masked=False).astype(np.float64)
                except Exception as exc:
                    msg = f"the file is truncated or corrupt ({str(exc).replace(str(p), p.name)[:160]})."
                    fix = "Export it again as a GeoTIFF (and check the upload finished)."
                    raise RasterError(f"{p.name}: {msg} {fix}", problem=msg, fix=fix) from None
                nd = e.nodata if e.nodata is not None else src.nodata
                if nd is not None and not np.isnan(nd):
                    data[data == nd] = np.nan
                for k, b in enumerate(idx):
                    flags = src.mask_flag_enums[b - 1]
                    if any(f.name in ("per_dataset", "alpha") for f in flags):
                        data[k][src.read_masks(b, window=win) == 0] = np.nan
                dates = [src.tags(b).get("DATE") or src.descriptions[b - 1] or None for b in idx]
                wt = src.window_transform(win)
                grid = Grid(crs=src.crs, transform=wt, width=int(win.width), height=int(win.height))
                return data, grid, dates, full_shape
        data, grid, dates = read_raster(p, nodata=e.nodata)
        return data, grid, dates, full_shape

    def _date_bands(self, role: str, ents: list[Entry], band_dates: list[_dt.date | None], band_src: list[int],
                    files: list[str]) -> tuple[list[_dt.date] | None, list[Problem]]:
        section = role.split(".")[0]
        sec = self.manifest.get(section, {}) if isinstance(self.manifest.get(section), dict) else {}
        probs: list[Problem] = []
        if all(d is not None for d in band_dates):
            return [d for d in band_dates if d is not None], probs
        out: list[_dt.date | None] = list(band_dates)
        # entry-level start first, else the section's start counting over all bands
        groups: dict[int, list[int]] = {}
        for i, ei in enumerate(band_src):
            groups.setdefault(ei, []).append(i)
        section_start_used = False
        for ei, idx in groups.items():
            e = ents[ei]
            if all(out[i] is not None for i in idx):
                continue
            start = e.start if (e.raw and isinstance(e.raw, dict) and "start" in e.raw) else None
            step = e.step
            if start is None:
                continue
            d0 = parse_date(start, year_only=True)
            if d0 is None:
                probs.append(Problem("error", files[min(ei, len(files) - 1)], f"start {start!r} of '{e.key}' is not a date.",
                                     "Write start = \"YYYY-MM\" or \"YYYY-MM-DD\".", role))
                return None, probs
            try:
                ds_ = _step_dates(d0, _parse_step(step, _DEFAULT_STEP.get(section, "1M")), len(idx))
            except ValueError as exc:
                probs.append(Problem("error", MANIFEST, f"'{e.key}': {exc}.", "Fix step in dataset.toml.", role))
                return None, probs
            for i, d in zip(idx, ds_):
                out[i] = d
        if any(d is None for d in out) and sec.get("start") is not None:
            d0 = parse_date(str(sec["start"]), year_only=True)
            if d0 is None:
                probs.append(Problem("error", MANIFEST, f"[{section}] start {sec['start']!r} is not a date.",
                                     "Write start = \"YYYY-MM\" or \"YYYY-MM-DD\".", role))
                return None, probs
            try:
                ds_ = _step_dates(d0, _parse_step(sec.get("step"), _DEFAULT_STEP.get(section, "1M")), len(out))
            except ValueError as exc:
                probs.append(Problem("error", MANIFEST, f"[{section}]: {exc}.", "Fix step in dataset.toml.", role))
                return None, probs
            # start + step counts over all bands of the role in manifest order
            out = [d if d is not None else ds_[i] for i, d in enumerate(out)]
            section_start_used = True
        missing = sorted({band_src[i] for i, d in enumerate(out) if d is None})
        for ei in missing:
            f = ents[ei].path
            nb = sum(1 for s in band_src if s == ei)
            probs.append(Problem("error", f, f"cannot date {'its bands' if nb > 1 else 'the file'} (manifest key "
                                 f"'{role}'): no date in the band description, DATE tag or file name, and no start.",
                                 f"Name the file with its date (e.g. ndvi_2012-05-08.tif), set band descriptions "
                                 f"to dates, or add start = \"YYYY-MM\" (and step) to [{section}].", role))
        if missing:
            return None, probs
        if section_start_used:
            probs.append(Problem("info", files[0] if files else MANIFEST,
                                 f"bands of '{role}' dated from [{section}] start and step.", "", role))
        return [d for d in out if d is not None], probs

    def _kind(self, role: str) -> str:
        if role in _TABLE_ROLES:
            return "table"
        ents = self._roles.get(role) or []
        if ents and ents[0].kind in ("categorical", "continuous"):
            return ents[0].kind
        return "categorical" if role in _CAT_ROLES else "continuous"

    def _aligned(self, role: str) -> np.ndarray:
        """Masked aligned stack of a raster role, raising DatasetError on errors."""
        stack, probs, _ = self._load_raw(role)
        self._raise_if_errors(role, probs)
        if stack is None:
            raise DatasetError(f"{MANIFEST}: '{role}' could not be loaded.")
        return stack

    def _stack_for(self, role: str) -> np.ndarray:
        """(bands, rows, cols) float64 of a raster role as the accessors return it (converted units, checked)."""
        if role == "landcover":
            codes = self.landcover()[0]  # type: ignore[index]
            return np.where(codes >= 0, codes, np.nan).astype(np.float64)[None]
        if role.startswith("climate."):
            return self.climate(role.split(".", 1)[1])[0]  # type: ignore[index]
        acc = {"ndvi.fine": self.ndvi_fine, "ndvi.coarse": self.ndvi_coarse, "ndvi.fine_series": self.ndvi_series,
               "npp.annual": self.npp_ready}.get(role)
        if acc is not None:
            return acc()[0]  # type: ignore[index]
        return self._aligned(role)

    @staticmethod
    def _raise_if_errors(role: str, probs: list[Problem]) -> None:
        errs = [p for p in probs if p.severity == "error"]
        if errs:
            raise DatasetError(" ".join(str(p) for p in errs), errs)

    def _memo(self, key: str, fn: Callable[[], tuple[Any, list[Problem], dict[str, Any]]]) -> tuple[Any, list[Problem], dict[str, Any]]:
        with self._lock:
            if key not in self._cache:
                try:
                    res = fn()
                    _freeze(res[0])
                    self._cache[key] = res
                except DatasetError as exc:
                    self._cache[key] = (None, exc.problems or [Problem("error", MANIFEST, str(exc), "", key)], {})
            return self._cache[key]

    def _get(self, key: str, fn: Callable[[], tuple[Any, list[Problem], dict[str, Any]]]) -> Any:
        val, probs, _ = self._memo(key, fn)
        self._raise_if_errors(key, probs)
        return val

    # ----------------------------------------------------------------- land cover
    def _classes(self) -> dict[int, str]:
        lc = self.manifest.get("landcover") if isinstance(self.manifest.get("landcover"), dict) else {}
        out: dict[int, str] = {}
        for k, v in (lc.get("classes") or {}).items() if isinstance(lc.get("classes"), dict) else []:
            try:
                out[int(k)] = str(v)
            except (TypeError, ValueError):
                continue
        return out

    def _landcover_scan(self) -> tuple[dict[str, Any] | None, list[Problem], dict[str, Any]]:
        """The land cover reduced to compact full-size arrays, in row strips (memoised).

        The land cover is aligned to the grid strip by strip (:meth:`_landcover_strip_plan`:
        windowed reads, or nearest-neighbour warps of whole-width strips, as
        :meth:`layer_dask`), so no full-size float64 array is made; each strip is reduced at
        once and only the compact results are kept, so a large grid costs 3 bytes per pixel
        afterwards. Cases the strip plan does not cover (several files, a continuous land
        cover, any problem that leaves no data, a read error) take the whole-grid alignment
        (:meth:`_align_role`); both give the same scan, problems and info.

        Returns
        -------
        scan : dict or None
            ``ok`` bool (rows, cols): finite and, with ``[landcover.classes]``, a declared
            class (the land cover's part of :attr:`mask`); ``codes`` int16 (rows, cols): the
            rounded code where finite and a declared class (any code without classes), else
            −1 (not yet masked); ``present`` sorted codes ≥ 0 of finite pixels with their
            ``counts``; ``n_finite``; ``non_integer`` (some finite value is not whole).
            None when the role could not be aligned.
        problems, info
            Those of the alignment.
        """
        with self._lock:
            key = "landcover#scan"
            if key in self._cache:
                return self._cache[key]
            res = None
            plan = self._landcover_strip_plan()
            if plan is not None:
                splan, probs, info = plan
                g = self.grid
                step = _scan_step(g.width)
                try:
                    strips = ((r0, splan.block(g, r0, min(g.height, r0 + step), 0, g.width)[0])
                              for r0 in range(0, g.height, step))
                    res = (_scan_reduce(strips, g.shape, self._classes()), probs, info)
                except Exception:  # e.g. a corrupt tile: the whole-grid path reports it as the in-memory run does
                    res = None
            if res is None:
                res = self._landcover_scan_whole()
            _freeze(res[0])
            self._cache[key] = res
            # the alignment's problems and info stay where the other roles keep theirs; its float64 stack does not
            self._cache["landcover#raw"] = (None, res[1], res[2])
            return res

    def _landcover_scan_whole(self) -> tuple[dict[str, Any] | None, list[Problem], dict[str, Any]]:
        """:meth:`_landcover_scan` from the whole aligned float64 land cover (:meth:`_align_role`; not memoised)."""
        raw, probs, info = self._align_role("landcover")
        if raw is None:
            return None, probs, info
        h, w = raw.shape[1:]
        step = _scan_step(w)
        strips = ((r0, raw[0, r0:r0 + step]) for r0 in range(0, h, step))
        return _scan_reduce(strips, (h, w), self._classes()), probs, info

    def _landcover_strip_plan(self) -> tuple["_SourcePlan", list[Problem], dict[str, Any]] | None:
        """How to align the land cover strip by strip, with the problems and info of :meth:`_align_role`.

        Covers one land-cover file (categorical, the usual case) that aligns without an error;
        reads no pixel except, for a floating-point file, one pass counting infinite values
        (strip by strip). The problems and info replicate those of :meth:`_align_role` on that
        path (infinite values, CRS overridden or assumed, partial coverage, extra bands).

        Returns
        -------
        (plan, problems, info) or None
            ``plan`` reads band 1 aligned to any row strip of the grid (:meth:`_SourcePlan.block`);
            None when the case is left to :meth:`_align_role`.
        """
        from rasterio.warp import transform_bounds
        from rasterio.windows import Window

        role = "landcover"
        ents = self._roles.get(role)
        if not ents or len(ents) != 1 or self._kind(role) != "categorical":
            return None
        e = ents[0]
        p, prob = self._resolve(e)
        if prob is not None:
            return None
        assert p is not None
        g = self.grid
        rel = self._rel(p)
        probs: list[Problem] = []
        info: dict[str, Any] = {"role": role, "kind": "categorical", "resampling": [], "source": []}
        try:
            src = open_checked(p)
        except RasterError:
            return None
        with src:
            # the read of _read_clipped: the clip window (or the whole file), nodata and internal masks
            full_shape = (src.height, src.width)
            count = int(src.count)
            if count * g.width * g.height > MAX_PIXELS:
                return None
            explicit = isinstance(e.raw, dict) and "crs" in e.raw
            crs = _crs_or_none(e.crs) if e.crs and (explicit or not src.crs) else (
                CRS.from_user_input(src.crs) if src.crs else None)
            win = _clip_window(src, crs, g)
            if win is None:
                win = Window(0, 0, src.width, src.height)
            off = (int(win.row_off), int(win.col_off))
            shape = (int(win.height), int(win.width))
            wt = src.window_transform(win)
            sg = Grid(crs=src.crs, transform=wt, width=shape[1], height=shape[0])
            nd = e.nodata if e.nodata is not None else src.nodata
            masked = [any(f.name in ("per_dataset", "alpha") for f in src.mask_flag_enums[b - 1])
                      for b in range(1, count + 1)]
            n_inf = 0
            if any(np.issubdtype(np.dtype(d), np.floating) for d in src.dtypes):
                step = _scan_step(shape[1])
                try:
                    for r0 in range(0, shape[0], step):
                        w_ = Window(off[1], off[0] + r0, shape[1], min(step, shape[0] - r0))
                        a = src.read(list(range(1, count + 1)), window=w_, masked=False).astype(np.float64)
                        if nd is not None and not np.isnan(nd):
                            a[a == nd] = np.nan
                        for k in range(count):
                            if masked[k]:
                                a[k][src.read_masks(k + 1, window=w_) == 0] = np.nan
                        n_inf += int(np.count_nonzero(np.isinf(a)))
                except Exception:
                    return None
        if n_inf:
            probs.append(Problem("warning", rel, f"{n_inf:,} value(s) are infinite; they are treated as "
                                 f"nodata (manifest key '{e.key}').",
                                 "Set the file's nodata value (or nodata = ... in its entry) so that no value is "
                                 "±inf, or export it again.", role))
        # the CRS and coverage of _align_role (on an error the whole-grid scan reports it)
        src_crs = _source_crs(e, rel, sg, g, role, probs)
        if src_crs is None:
            return None
        sgrid = Grid(crs=src_crs, transform=wt, width=shape[1], height=shape[0])
        share = _overlap_share(e, rel, sgrid, g, role, probs)
        if share is None:
            return None
        shift = _pixel_shift(sgrid, g)
        info["resampling"].append("none" if shift is not None else Resampling.nearest.name)
        info["source"].append({"file": rel, "crs": src_crs.to_string(), "shape": list(full_shape),
                               "res": [float(sg.res[0]), float(sg.res[1])], "bands": count,
                               "overlap_share": float(min(share, 1.0))})
        if count > 1:
            probs.append(Problem("info", rel, f"has {count} bands; only band 1 is used for '{e.key}'.",
                                 "Give a single-band file.", role))
        info["file"] = rel
        info["files"] = [rel]
        info["bands"] = 1
        plan = _SourcePlan(path=str(p), offset=off, shape=shape, transform=tuple(wt)[:6], crs=src_crs.to_wkt(),
                           bands=[1], nodata=None if nd is None else float(nd), scale=float(e.scale),
                           add=float(e.offset), shift=shift, resampling=int(Resampling.nearest), masked=masked[:1])
        return plan, probs, info

    def _load_landcover(self) -> tuple[Any, list[Problem], dict[str, Any]]:
        scan, probs, info = self._landcover_scan()
        probs = list(probs)
        if scan is None:
            return None, probs, info
        rel = info.get("file", "landcover")
        lc = self.manifest.get("landcover") if isinstance(self.manifest.get("landcover"), dict) else {}
        classes = self._classes()
        raw_classes = lc.get("classes") if isinstance(lc.get("classes"), dict) else {}
        for k in raw_classes:
            try:
                int(k)
            except (TypeError, ValueError):
                probs.append(Problem("error", MANIFEST, f"[landcover.classes] key {k!r} is not a raster code.",
                                     "Use the integer code: 1 = \"forest\".", "landcover"))
        if scan["non_integer"]:
            probs.append(Problem("error", rel, "land-cover values are not whole numbers (manifest key 'landcover').",
                                 "Give a classified raster with integer codes.", "landcover"))
        present = list(scan["present"])
        if not classes:
            classes = {c: f"class {c}" for c in present}
            probs.append(Problem("warning", MANIFEST, "no [landcover.classes]; classes are named by their codes.",
                                 "Add [landcover.classes] with code = \"name\" and [landcover.casa_type].", "landcover"))
        else:
            unknown = [c for c in present if c not in classes]
            if unknown:
                n_unknown = sum(n for c, n in zip(scan["present"], scan["counts"]) if c in unknown)
                share = float(n_unknown / max(scan["n_finite"], 1))
                probs.append(Problem("warning", rel, f"codes {unknown[:10]} are not in [landcover.classes] "
                                     f"({100 * share:.1f}% of pixels); they are treated as nodata.",
                                     "Add them to [landcover.classes] or set the file's nodata value.", "landcover"))
        ct_raw = lc.get("casa_type") if isinstance(lc.get("casa_type"), dict) else {}
        casa_type: dict[str, str] = {}
        for name in classes.values():
            t = ct_raw.get(name)
            if t is None:
                casa_type[name] = "other"
                if ct_raw or name in {classes.get(c) for c in present}:
                    probs.append(Problem("warning", MANIFEST, f"class '{name}' has no [landcover.casa_type]; "
                                         "CASA type 'other' is used.",
                                         f"Add {name} = \"<type>\" with a type from: {', '.join(CASA_TYPES)}.",
                                         "landcover"))
            elif str(t) not in CASA_TYPES:
                probs.append(Problem("error", MANIFEST, f"CASA type {t!r} of class '{name}' is unknown."
                                     f"{_closest(str(t), CASA_TYPES)}",
                                     f"Use one of: {', '.join(CASA_TYPES)}.", "landcover"))
            else:
                casa_type[name] = str(t)
        for name in ct_raw:
            if name not in classes.values():
                probs.append(Problem("warning", MANIFEST, f"[landcover.casa_type] names '{name}', which is not a class."
                                     f"{_closest(name, classes.values())}",
                                     "Use the class names of [landcover.classes].", "landcover"))
        # the mask's own problems (e.g. empty because of these codes) are reported with the land cover,
        # so that the cause above is not replaced by its consequence
        m, mprobs = self._ensure_mask()
        probs.extend(p for p in mprobs if p.severity == "error" and p not in probs)
        # scan codes are -1 or (with classes) a declared class; without classes every present code is one
        out = np.where(m, scan["codes"], np.int16(-1))
        return (out, dict(classes), casa_type), probs, info

    def landcover(self) -> tuple[np.ndarray, dict[int, str], dict[str, str]] | None:
        """Land-cover codes on the grid.

        Returns
        -------
        codes : ndarray of int16, shape (rows, cols)
            Class code; −1 outside the mask or where nodata / not a declared class.
        classes : dict
            {code: class name}.
        casa_type : dict
            {class name: CASA vegetation type} ("none" = not vegetated).
        None when the manifest has no land cover.
        """
        if "landcover" not in self._roles:
            return None
        return self._get("landcover!", self._load_landcover)

    # ----------------------------------------------------------------- NDVI
    def _series(self, role: str, quantity: str | None) -> tuple[Any, list[Problem], dict[str, Any]]:
        stack, probs, info = self._load_raw(role)
        probs = list(probs)
        if stack is None:
            return None, probs, info
        if quantity == "ndvi":
            if np.isfinite(stack).any():
                with _quiet():
                    lo, hi = float(np.nanmin(stack)), float(np.nanmax(stack))
                if hi > 1.5 or lo < -1.5:
                    fix = ("Add scale = 0.0001 to the entry (MODIS/Landsat NDVI are stored × 10000)." if hi > 100
                           else "Set scale (and offset) so that values fall in [-1, 1].")
                    probs.append(Problem("error", info.get("file", role), f"NDVI values {lo:.4g} to {hi:.4g} lie "
                                         f"outside [-1, 1] after scaling (manifest key '{role}').", fix, role))
                elif hi > 1.0 or lo < -1.0:
                    probs.append(Problem("warning", info.get("file", role), f"NDVI values {lo:.4g} to {hi:.4g} lie "
                                         "slightly outside [-1, 1].", "Check scale, offset and the nodata value.", role))
        return (stack, list(info.get("dates", []))), probs, info

    def ndvi_fine(self) -> tuple[np.ndarray, list[_dt.date]] | None:
        """Fine-resolution NDVI images (ESTARFM inputs).

        Returns
        -------
        stack : ndarray, shape (n, rows, cols), float64 (NaN outside the mask / nodata)
        dates : list of datetime.date, ascending
        None when absent.
        """
        if "ndvi.fine" not in self._roles:
            return None
        return self._get("ndvi.fine!", lambda: self._series("ndvi.fine", "ndvi"))

    def ndvi_coarse(self) -> tuple[np.ndarray, list[_dt.date]] | None:
        """Coarse NDVI series resampled onto the fine grid (bilinear for a coarser input).

        Returns
        -------
        stack : ndarray, shape (n, rows, cols), float64
        dates : list of datetime.date, ascending
        None when absent.
        """
        if "ndvi.coarse" not in self._roles:
            return None
        return self._get("ndvi.coarse!", lambda: self._series("ndvi.coarse", "ndvi"))

    def ndvi_series(self) -> tuple[np.ndarray, list[_dt.date]] | None:
        """A ready fine NDVI series (``[ndvi] fine_series``), skipping fusion.

        Returns
        -------
        stack : ndarray, shape (n, rows, cols), float64
        dates : list of datetime.date
        None when absent.
        """
        if "ndvi.fine_series" not in self._roles:
            return None
        return self._get("ndvi.fine_series!", lambda: self._series("ndvi.fine_series", "ndvi"))

    # ----------------------------------------------------------------- climate
    def _load_climate(self, var: str) -> tuple[Any, list[Problem], dict[str, Any]]:
        from . import units as U

        role = f"climate.{var}"
        stack, probs, info = self._load_raw(role)
        probs = list(probs)
        if stack is None:
            return None, probs, info
        dates: list[_dt.date] = info["dates"]
        months = [_month_label(d) for d in dates]
        rel = info.get("file", role)
        e = self._roles[role][0]
        declared = e.units
        q = _QUANTITY[var]
        if len(set(months)) != len(months):
            probs.append(Problem("error", rel, f"two bands fall in the same month (manifest key '{role}').",
                                 "Give one band per month (a monthly series).", role))
            return None, probs, info
        if len(months) > 1:
            idx = [int(m[:4]) * 12 + int(m[5:7]) for m in months]
            gaps = [months[i + 1] for i in range(len(idx) - 1) if idx[i + 1] - idx[i] != 1]
            if gaps:
                probs.append(Problem("warning", rel, f"the monthly series has gaps (before {', '.join(gaps[:5])}).",
                                     "Supply every month of the study period.", role))
        try:
            days = U.month_days(months)
            conv = U.convert(stack, q, declared, days)
        except ValueError as exc:
            probs.append(Problem("error", rel, f"{exc} (manifest key '{role}')",
                                 f"Set units in the '{role}' entry to one of the known units.", role))
            return None, probs, info
        info["units_declared"] = declared
        info["units"] = U.normalise_units(q, declared) if var != "evapotranspiration" else (declared or "mm month-1")
        # keep one copy: the aligned array of this role is from now on the converted one
        self._cache[role] = (conv, self._cache[role][1], self._cache[role][2])
        own = self._climate_checks(var, conv, rel, declared, role)
        probs.extend(own)
        if not own:
            try:
                with _quiet():
                    msgs = U.check_plausible(conv, q, rel, units=declared)
                for msg in msgs:
                    body = msg.split(": ", 1)[-1] if msg.startswith(rel) else msg
                    probs.append(Problem("warning", rel, body, f"If so, change units/scale of the '{role}' entry in "
                                         "dataset.toml (scale and offset apply first, then units).", role))
                    own.append(probs[-1])
            except Exception:  # the checker must never break loading
                pass
        guess = None
        for p in own:
            m = re.search(r'units = "([^"]+)"', f"{p.message} {p.fix}")
            if m and m.group(1) != declared:
                guess = m.group(1)
                break
        info["units_guessed"] = guess
        return (conv, months), probs, info

    def _climate_checks(self, var: str, v: np.ndarray, rel: str, declared: str | None, role: str) -> list[Problem]:
        """Error-level unit checks with a manifest fix (the milder hints come from units.check_plausible)."""
        out: list[Problem] = []
        if not np.isfinite(v).any():
            return out
        with _quiet():
            lo, hi, med = float(np.nanmin(v)), float(np.nanmax(v)), float(np.nanmean(v))
        if var == "temperature":
            if med > 150:
                out.append(Problem("error", rel, f"temperatures {lo:.4g} to {hi:.4g} °C look like kelvin "
                                   f"(manifest key '{role}').", f"Add units = \"K\" to the '{role}' entry.", role))
            elif med < -150:
                out.append(Problem("error", rel, f"temperatures {lo:.4g} to {hi:.4g} °C after converting from kelvin "
                                   "look like they were already °C.", f"Remove units = \"K\" from '{role}'.", role))
        elif var in ("precipitation", "evapotranspiration"):
            if lo <= -999:
                out.append(Problem("error", rel, f"values down to {lo:.6g} look like an undeclared nodata value "
                                   f"(manifest key '{role}').", f"Add nodata = {lo:.6g} to the '{role}' entry.", role))
            elif lo < 0 and var == "precipitation":
                share = float(np.sum(v < 0) / np.isfinite(v).sum())
                out.append(Problem("error", rel, f"negative precipitation ({100 * share:.2f}% of values, min "
                                   f"{lo:.4g} mm); CASA cannot use negative totals.",
                                   "Check scale, offset and nodata; precipitation cannot be negative.", role))
            if var == "precipitation":
                annual = med * 12
                if (declared is None or "month" in str(declared)) and hi < 30 and annual < 150:
                    out.append(Problem("warning", rel, f"monthly precipitation only {lo:.3g} to {hi:.3g} mm (annual "
                                       f"≈ {annual:.0f} mm) — the values look like mm per day.",
                                       f"If they are daily rates, add units = \"mm d-1\" to '{role}'.", role))
        elif var == "solar":
            if lo < 0:
                out.append(Problem("error", rel, f"negative solar radiation (min {lo:.4g}).",
                                   "Check scale, offset and nodata.", role))
            if hi < 40:
                out.append(Problem("warning", rel, f"solar radiation {lo:.3g} to {hi:.3g} MJ m-2 month-1 is too small "
                                   "for monthly totals — the values look like MJ m-2 d-1.",
                                   f"Add units = \"MJ m-2 d-1\" to '{role}' (or \"W m-2\" for a mean flux).", role))
            elif hi > 1500:
                out.append(Problem("warning", rel, f"solar radiation up to {hi:.4g} MJ m-2 month-1 is too large — the "
                                   "values look like kJ m-2 d-1 or J m-2.",
                                   f"Add units = \"kJ m-2 d-1\" or \"J m-2\" to '{role}'.", role))
        return out

    def climate(self, var: str) -> tuple[np.ndarray, list[str]] | None:
        """A monthly climate series in CASA units.

        Parameters
        ----------
        var : {"temperature", "precipitation", "solar", "evapotranspiration"}

        Returns
        -------
        stack : ndarray, shape (months, rows, cols), float64
            °C (monthly mean), mm month⁻¹, MJ m⁻² month⁻¹, mm month⁻¹; NaN outside the mask.
        months : list of str
            ``"YYYY-MM"``, ascending.
        None when the variable is absent.
        """
        if var not in CLIMATE_VARS:
            raise DatasetError(f"climate variable {var!r} unknown; use one of {', '.join(CLIMATE_VARS)}.")
        if f"climate.{var}" not in self._roles:
            return None
        return self._get(f"climate.{var}!", lambda: self._load_climate(var))

    # ----------------------------------------------------------------- static rasters
    def _static(self, role: str) -> np.ndarray | None:
        if role not in self._roles:
            return None
        return self._aligned(role)[0]

    def soil_rasters(self) -> dict[str, np.ndarray]:
        """Ready soil rasters (``[soil.rasters]``): {name: (rows, cols) float64}; empty when none."""
        return {r.split(".", 2)[2]: self._static(r) for r in self._roles if r.startswith("soil.rasters.")}  # type: ignore[misc]

    def ld_raster(self) -> np.ndarray | None:
        """A ready land-degradation raster in [0, 1], shape (rows, cols), or None."""
        if "degradation.raster" not in self._roles:
            return None

        def load() -> tuple[Any, list[Problem], dict[str, Any]]:
            stack, probs, info = self._load_raw("degradation.raster")
            probs = list(probs)
            if stack is not None:
                f = stack[np.isfinite(stack)]
                if f.size and (f.min() < -1e-6 or f.max() > 1 + 1e-6):
                    probs.append(Problem("warning", info.get("file", ""), f"LD values {_fmt_range(f)} are outside [0, 1].",
                                         "Rescale the LD raster to [0, 1] (or set scale).", "degradation.raster"))
                return stack[0], probs, info
            return None, probs, info

        return self._get("degradation.raster!", load)

    def reference_npp(self) -> np.ndarray | None:
        """Another NPP product for comparison (``[validation] reference_npp``), (rows, cols), or None."""
        return self._static("validation.reference_npp")

    def extra_drivers(self) -> dict[str, tuple[str, np.ndarray]]:
        """User-supplied driver rasters (``[drivers]``): {name: (category, (rows, cols) array)}."""
        out = {}
        for r in self._roles:
            if r.startswith("drivers."):
                e = self._roles[r][0]
                out[r.split(".", 1)[1]] = (e.category or "M", self._static(r))
        return out  # type: ignore[return-value]

    def npp_ready(self) -> tuple[np.ndarray, list[int]] | None:
        """A ready annual NPP stack (``[npp] annual``, gC m⁻² yr⁻¹) that skips fusion and CASA.

        Returns
        -------
        stack : ndarray, shape (years, rows, cols), float64
        years : list of int
        None when absent.
        """
        if "npp.annual" not in self._roles:
            return None

        def load() -> tuple[Any, list[Problem], dict[str, Any]]:
            stack, probs, info = self._load_raw("npp.annual")
            probs = list(probs)
            if stack is None:
                return None, probs, info
            years = [d.year for d in info["dates"]]
            if len(set(years)) != len(years):
                probs.append(Problem("error", info.get("file", ""), "two bands of the annual NPP have the same year.",
                                     "Give one band per year (band description YYYY).", "npp.annual"))
            f = stack[np.isfinite(stack)]
            if f.size and (f.min() < -1 or f.max() > 5000):
                probs.append(Problem("warning", info.get("file", ""), f"annual NPP {_fmt_range(f)} gC m-2 yr-1 looks "
                                     "implausible.", "Check the units (gC m-2 yr-1) and scale.", "npp.annual"))
            return (stack, years), probs, info

        return self._get("npp.annual!", load)

    # ----------------------------------------------------------------- tables
    def _table(self, role: str, required: Sequence[str], numeric: Sequence[str]) -> tuple[Any, Path | None, list[Problem]]:
        from .tables import TableError, read_csv

        e = self._roles[role][0]
        p, prob = self._resolve(e)
        if prob is not None:
            return None, None, [prob]
        assert p is not None
        try:
            df = read_csv(p, required=required, numeric=numeric, name=self._rel(p))
        except TableError as exc:
            return None, p, [Problem("error", self._rel(p), getattr(exc, "problem", str(exc).split(": ", 1)[-1]),
                                     getattr(exc, "fix", "") or "See the message.", role)]
        probs = []
        if df.attrs.get("decimal_comma"):
            probs.append(Problem("info", self._rel(p), "decimal commas read as decimal points.", "", role))
        if not len(df):
            probs.append(Problem("error", self._rel(p), "the table has no data rows.", "Add the rows.", role))
            return None, p, probs
        return df, p, probs

    def _coords_to_grid(self, x: np.ndarray, y: np.ndarray, crs_text: Any, rel: str, role: str,
                        xcol: str, ycol: str) -> tuple[np.ndarray | None, np.ndarray | None, list[Problem]]:
        from pyproj import Transformer

        probs: list[Problem] = []
        src = _crs_or_none(crs_text) if crs_text else self.grid.crs
        if src is None:
            return None, None, [Problem("error", MANIFEST, f"crs {crs_text!r} for '{role}' is not a CRS.",
                                        "Write e.g. crs = \"EPSG:4326\".", role)]

        def tr(a: np.ndarray, b: np.ndarray, c: CRS) -> tuple[np.ndarray, np.ndarray]:
            if c == self.grid.crs:
                return a.astype(float), b.astype(float)
            t = Transformer.from_crs(c, self.grid.crs, always_xy=True)
            return (np.asarray(v, dtype=float) for v in t.transform(a, b))  # type: ignore[return-value]

        def inside(a: np.ndarray, b: np.ndarray) -> float:
            l, bo, r, t = self.grid.bounds
            ok = np.isfinite(a) & np.isfinite(b)
            return float(np.mean(ok & (a >= l) & (a <= r) & (b >= bo) & (b <= t))) if len(a) else 0.0

        with np.errstate(all="ignore"):
            gx, gy = tr(x, y, src)
        share = inside(gx, gy)
        if share == 0:
            fix = f"Check [{role.split('.')[0]}] crs and the coordinate columns."
            msg = "no point falls inside the reference grid"
            try:
                with np.errstate(all="ignore"):
                    sx, sy = tr(y, x, src)
                if inside(sx, sy) > 0.5:
                    msg, fix = (f"the coordinates look swapped (x = '{xcol}' holds latitude/northing)",
                                f"Swap x_column and y_column: x_column = \"{ycol}\", y_column = \"{xcol}\".")
                elif not src.is_geographic and np.nanmax(np.abs(x)) <= 180 and np.nanmax(np.abs(y)) <= 90:
                    with np.errstate(all="ignore"):
                        lx, ly = tr(x, y, CRS.from_epsg(4326))
                    if inside(lx, ly) > 0.5:
                        msg, fix = ("the coordinates look like longitude/latitude, but the CRS says "
                                    f"{src.to_string()}", f"Set crs = \"EPSG:4326\" in [{role.split('.')[0]}].")
                elif src.is_geographic and (np.nanmax(np.abs(x)) > 180 or np.nanmax(np.abs(y)) > 90):
                    msg, fix = ("the coordinates are too large for longitude/latitude",
                                f"Set crs in [{role.split('.')[0]}] to the CRS of the coordinates (e.g. the grid's "
                                f"{self.grid.crs.to_string()}).")
            except Exception:
                pass
            l, bo, r, t = self.grid.bounds
            where = (f"x {_fmt_range(np.asarray(gx))}, y {_fmt_range(np.asarray(gy))} in {self.grid.crs.to_string()}"
                     if np.isfinite(np.asarray(gx)).any() and np.isfinite(np.asarray(gy)).any() else
                     f"x ('{xcol}') {_fmt_range(np.asarray(x, dtype=float))}, y ('{ycol}') "
                     f"{_fmt_range(np.asarray(y, dtype=float))} in {src.to_string()}")
            probs.append(Problem("error", rel, f"{msg}: points span {where}; the grid spans x "
                                 f"{l:.6g} to {r:.6g}, y {bo:.6g} to {t:.6g} in {self.grid.crs.to_string()}.", fix, role))
            return None, None, probs
        if share < 1:
            n_out = int(round((1 - share) * len(gx)))
            probs.append(Problem("warning", rel, f"{n_out} of {len(gx)} points lie outside the reference grid.",
                                 "Check those coordinates (they are kept for interpolation).", role))
        return gx, gy, probs

    def _load_soil(self) -> tuple[Any, list[Problem], dict[str, Any]]:
        sec = self.manifest.get("soil", {})
        xcol, ycol = str(sec.get("x_column", "x")), str(sec.get("y_column", "y"))
        props = sec.get("properties") if isinstance(sec.get("properties"), dict) else {}
        if not props:
            return None, [Problem("error", MANIFEST, "[soil] samples given without [soil.properties].",
                                  "Add [soil.properties] with driver name = \"CSV column\" (e.g. SOC = \"soc_g_kg\").",
                                  "soil.samples")], {}
        cols = [str(c) for c in props.values()]
        df, p, probs = self._table("soil.samples", [xcol, ycol, *cols], [xcol, ycol, *cols])
        if df is None:
            return None, probs, {}
        rel = self._rel(p)  # type: ignore[arg-type]
        x = df[xcol].to_numpy(float)
        y = df[ycol].to_numpy(float)
        bad = ~(np.isfinite(x) & np.isfinite(y))
        if bad.any():
            lines = np.asarray(df.attrs["lines"])[bad]
            probs.append(Problem("warning", rel, f"{int(bad.sum())} row(s) without coordinates (lines "
                                 f"{', '.join(map(str, lines[:10]))}) are dropped.", "Fill in x and y.", "soil.samples"))
            df = df[~bad]
            x, y = x[~bad], y[~bad]
        idcol = str(sec.get("id_column", "id"))
        ids = df[idcol].to_numpy(str) if idcol in df.columns else np.array([str(i + 1) for i in range(len(df))])
        gx, gy, cp = self._coords_to_grid(x, y, sec.get("crs"), rel, "soil.samples", xcol, ycol)
        probs.extend(cp)
        if gx is None:
            return None, probs, {}
        keys = np.round(np.c_[gx, gy], 6)
        _, inv, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        dup = counts[inv.ravel()] > 1
        if dup.any():
            probs.append(Problem("warning", rel, f"{int(dup.sum())} samples share a location (ids "
                                 f"{', '.join(ids[dup][:10])}).",
                                 "Average duplicate samples into one row (kriging needs distinct points).",
                                 "soil.samples"))
        if len(gx) < 10:
            probs.append(Problem("warning", rel, f"only {len(gx)} sample points; kriging needs at least 10.",
                                 "Add samples or supply ready soil rasters ([soil.rasters]).", "soil.samples"))
        values = {}
        for name, col in props.items():
            v = df[str(col)].to_numpy(float)
            nn = int(np.isnan(v).sum())
            if nn:
                probs.append(Problem("info", rel, f"column '{col}' ({name}) has {nn} empty value(s); those samples "
                                     f"are left out for {name}.", "", "soil.samples"))
            values[str(name)] = v
        return dict(x=gx, y=gy, values=values, ids=ids, file=rel), probs, {"file": rel, "rows": int(len(gx))}

    def soil_samples(self) -> dict[str, Any] | None:
        """Soil sample points in the grid CRS.

        Returns
        -------
        dict with ``x``, ``y`` (ndarray (n,), grid CRS units), ``values`` {driver name: ndarray (n,)
        (NaN = missing)}, ``ids`` (ndarray of str), ``file`` (str); None when absent.
        """
        if "soil.samples" not in self._roles:
            return None
        return self._get("soil.samples!", self._load_soil)

    def _load_degradation(self, lazy_chunk: int | tuple[int, int] | None = None,
                          lazy_mask: Any = None) -> tuple[Any, list[Problem], dict[str, Any]]:
        sec = self.manifest.get("degradation", {})
        probs: list[Problem] = []
        names = [r.split(".", 2)[2] for r in self._roles if r.startswith("degradation.indicators.")]
        indicators = {}
        for n in names:
            try:
                if lazy_chunk:
                    indicators[n] = self.layer_dask(f"degradation.indicators.{n}", lazy_chunk, mask=lazy_mask)[0][0]
                else:
                    indicators[n] = self._static(f"degradation.indicators.{n}")
            except DatasetError as exc:
                probs.extend(exc.problems)
        direction_raw = sec.get("direction") if isinstance(sec.get("direction"), dict) else {}
        direction = {n: "higher_is_worse" for n in names}
        for k, v in direction_raw.items():
            if k not in names:
                probs.append(Problem("warning", MANIFEST, f"[degradation.direction] names '{k}', which is not an "
                                     f"indicator.{_closest(k, names)}", "Use the names of [degradation.indicators].",
                                     "degradation"))
            elif str(v) not in DIRECTIONS:
                probs.append(Problem("error", MANIFEST, f"direction {v!r} of '{k}' is unknown.{_closest(str(v), DIRECTIONS)}",
                                     "Use \"higher_is_worse\" or \"lower_is_worse\".", "degradation"))
            else:
                direction[k] = str(v)
        ahp_names = list(names)
        matrix = np.ones((len(names), len(names)))
        if "degradation.ahp" in self._roles:
            df, p, tp = self._table("degradation.ahp", (), ())
            probs.extend(tp)
            if df is not None:
                rel = self._rel(p)  # type: ignore[arg-type]
                header = [str(c) for c in df.columns]
                row_names = [str(v) for v in df[header[0]]]
                col_names = header[1:]
                if row_names != col_names or len(row_names) != len(df):
                    probs.append(Problem("error", rel, f"the AHP matrix must be square with the same names as header "
                                         f"and first column; header {col_names}, rows {row_names}.",
                                         "Write the indicator names across the first row and down the first column.",
                                         "degradation.ahp"))
                else:
                    try:
                        from .tables import read_csv

                        df2 = read_csv(p, numeric=col_names, name=rel)  # type: ignore[arg-type]
                        matrix = df2[col_names].to_numpy(float)
                        ahp_names = col_names
                        if not np.all(np.isfinite(matrix)) or (matrix <= 0).any():
                            probs.append(Problem("error", rel, "AHP judgements must be positive numbers (no empty "
                                                 "cells).", "Fill every cell with a Saaty 1–9 value or its reciprocal.",
                                                 "degradation.ahp"))
                        # indicators that are named but failed to load have their own error already
                        declared = set(names) | (set(map(str, sec["indicators"])) if isinstance(
                            sec.get("indicators"), dict) else set())
                        missing = [n for n in ahp_names if n not in declared]
                        unusable = [n for n in ahp_names if n in declared and n not in names]
                        if unusable:
                            probs.append(Problem("error", MANIFEST, f"the entries of {unusable} in "
                                                 "[degradation.indicators] are unusable (see the error about them), "
                                                 "so the AHP matrix cannot be applied.", "Correct those entries.",
                                                 "degradation.ahp"))
                        extra = [n for n in names if n not in ahp_names]
                        if missing:
                            probs.append(Problem("error", rel, f"the AHP matrix names {missing}, which have no raster "
                                                 "under [degradation.indicators].",
                                                 "Add the rasters or remove those rows/columns.", "degradation.ahp"))
                        if extra:
                            probs.append(Problem("warning", rel, f"indicators {extra} are not in the AHP matrix and are "
                                                 "not used.", "Add them to the matrix.", "degradation.ahp"))
                    except Exception as exc:
                        probs.append(Problem("error", rel, getattr(exc, "problem", str(exc).split(": ", 1)[-1]),
                                             getattr(exc, "fix", "") or "Use numbers only.", "degradation.ahp"))
        elif names:
            probs.append(Problem("warning", MANIFEST, "no AHP matrix ([degradation] ahp); indicators get equal weights.",
                                 "Add ahp = \"ld/ahp_matrix.csv\" or edit the matrix in the dashboard.", "degradation"))
        return dict(indicators=indicators, ahp_names=ahp_names, ahp_matrix=matrix, direction=direction), probs, {}

    def degradation(self) -> dict[str, Any] | None:
        """Land-degradation indicators and the AHP matrix.

        Returns
        -------
        dict with ``indicators`` {name: (rows, cols) float64}, ``ahp_names`` (list, matrix order),
        ``ahp_matrix`` (ndarray (n, n); all ones = equal weights when no matrix was given),
        ``direction`` {name: "higher_is_worse" | "lower_is_worse"}; None when no indicators.
        """
        if not any(r.startswith("degradation.indicators.") for r in self._roles):
            return None
        return self._get("degradation!", self._load_degradation)

    def degradation_lazy(self, chunk: int | tuple[int, int] = 1024, *, mask: Any = None) -> dict[str, Any] | None:
        """:meth:`degradation` with the indicators as lazy Dask arrays (see :meth:`layer_dask`, also for ``mask``).

        Returns
        -------
        dict or None
            As :meth:`degradation`, but ``indicators`` {name: dask.array (rows, cols) float64}.
        """
        if not any(r.startswith("degradation.indicators.") for r in self._roles):
            return None
        val, probs, _ = self._load_degradation(lazy_chunk=chunk, lazy_mask=mask)
        self._raise_if_errors("degradation", probs)
        return val

    def _load_plots(self) -> tuple[Any, list[Problem], dict[str, Any]]:
        sec = self.manifest.get("validation", {})
        idc = str(sec.get("id_column", "id"))
        xc, yc = str(sec.get("x_column", "x")), str(sec.get("y_column", "y"))
        mc = str(sec.get("measured_column", "measured_npp"))
        rc = str(sec.get("radius_column", "radius_m"))
        wc = str(sec.get("wkt_column", "wkt"))
        from .tables import TableError, read_csv

        e = self._roles["validation.plots"][0]
        p, prob = self._resolve(e)
        if prob is not None:
            return [], [prob], {}
        assert p is not None
        rel = self._rel(p)
        try:
            head = read_csv(p, name=rel)
            has_wkt = wc in head.columns and not (xc in head.columns and yc in head.columns)
            req = [idc, mc] + ([wc] if has_wkt else [xc, yc])
            num = [mc] + ([] if has_wkt else [xc, yc]) + ([rc] if rc in head.columns else [])
            df = read_csv(p, required=req, numeric=num, name=rel)
        except TableError as exc:
            return [], [Problem("error", rel, getattr(exc, "problem", str(exc).split(": ", 1)[-1]),
                                getattr(exc, "fix", "") or "See the message.", "validation.plots")], {}
        probs: list[Problem] = []
        radius = df[rc].to_numpy(float) if rc in df.columns else np.zeros(len(df))
        if has_wkt:
            try:
                import shapely.wkt
            except ImportError:  # pragma: no cover
                return [], [Problem("error", rel, "plot polygons (wkt) need shapely.", "Give x, y and radius_m.",
                                    "validation.plots")], {}
            xs, ys = [], []
            for i, w in enumerate(df[wc]):
                try:
                    geom = shapely.wkt.loads(str(w))
                except Exception:
                    return [], [Problem("error", rel, f"line {df.attrs['lines'][i]}: not WKT: {str(w)[:40]!r}.",
                                        "Write a POLYGON((x y, ...)) or POINT(x y).", "validation.plots")], {}
                c = geom.centroid
                xs.append(c.x)
                ys.append(c.y)
                if geom.area > 0 and not (rc in df.columns and np.isfinite(radius[i])):
                    radius[i] = math.sqrt(geom.area / math.pi)
            x, y = np.array(xs), np.array(ys)
        else:
            x, y = df[xc].to_numpy(float), df[yc].to_numpy(float)
        gx, gy, cp = self._coords_to_grid(x, y, sec.get("crs"), rel, "validation.plots", xc, yc)
        probs.extend(cp)
        if gx is None:
            return [], probs, {}
        meas = df[mc].to_numpy(float)
        out = [dict(id=str(i), x=float(a), y=float(b), measured=float(m), radius_m=float(r) if np.isfinite(r) else 0.0)
               for i, a, b, m, r in zip(df[idc], gx, gy, meas, radius)]
        return out, probs, {"file": rel, "rows": len(out)}

    def validation_plots(self) -> list[dict[str, Any]]:
        """Field plots with measured NPP: list of dict(id, x, y (grid CRS), measured (gC m⁻² yr⁻¹), radius_m)."""
        if "validation.plots" not in self._roles:
            return []
        return self._get("validation.plots!", self._load_plots) or []

    def dem(self) -> np.ndarray | None:
        """Elevation (``[terrain] dem``, m) on the grid, (rows, cols) float64, or None."""
        return self._static("terrain.dem")

    def _load_mines(self) -> tuple[Any, list[Problem], dict[str, Any]]:
        sec = self.manifest.get("degradation", {})
        df, p, probs = self._table("degradation.mines", ["x", "y"], ["x", "y"])
        if df is None:
            return [], probs, {}
        rel = self._rel(p)  # type: ignore[arg-type]
        gx, gy, cp = self._coords_to_grid(df["x"].to_numpy(float), df["y"].to_numpy(float), sec.get("crs"), rel,
                                          "degradation.mines", "x", "y")
        probs.extend(cp)
        if gx is None:
            return [], probs, {}
        ids = df["id"].tolist() if "id" in df.columns else [str(i + 1) for i in range(len(df))]
        names = df["name"].tolist() if "name" in df.columns else ids
        out = [dict(id=str(i), x=float(a), y=float(b), name=str(n)) for i, a, b, n in zip(ids, gx, gy, names)]
        return out, probs, {"file": rel, "rows": len(out)}

    def mines(self) -> list[dict[str, Any]]:
        """Mine locations (``[degradation] mines`` CSV with x, y; optional id, name): list of
        dict(id, x, y (grid CRS; coordinates in [degradation] crs, default the grid's), name), or []."""
        if "degradation.mines" not in self._roles:
            return []
        return self._get("degradation.mines!", self._load_mines) or []

    # ----------------------------------------------------------------- overview
    def layers(self) -> list[Layer]:
        """Every raster and table role named in the manifest (grid and boundary excluded)."""
        out = []
        for role, ents in self._roles.items():
            if role in ("grid", "boundary"):
                continue
            paths = tuple(p for p in (self._resolve(e)[0] for e in ents) if p is not None)
            out.append(Layer(role=role, name=role, path=paths[0] if paths else None, kind=self._kind(role),
                             paths=paths, _ds=self))
        return out

    def _role_loader(self, role: str) -> Callable[[], Any]:
        if role == "landcover":
            return self.landcover
        if role == "ndvi.fine":
            return self.ndvi_fine
        if role == "ndvi.coarse":
            return self.ndvi_coarse
        if role == "ndvi.fine_series":
            return self.ndvi_series
        if role.startswith("climate."):
            return lambda: self.climate(role.split(".", 1)[1])
        if role == "soil.samples":
            return self.soil_samples
        if role.startswith("degradation.indicators.") or role == "degradation.ahp":
            return self.degradation
        if role == "degradation.raster":
            return self.ld_raster
        if role == "degradation.mines":
            return self.mines
        if role == "npp.annual":
            return self.npp_ready
        if role == "validation.plots":
            return self.validation_plots
        return lambda: self._aligned(role)

    def _role_problems(self, role: str) -> list[Problem]:
        fn = self._role_loader(role)
        out: list[Problem] = []
        try:
            fn()
        except DatasetError as exc:
            out.extend(exc.problems or [Problem("error", role, str(exc), "", role)])
        except Exception as exc:  # check() reports, it never raises for data problems
            ents = self._roles.get(role) or []
            out.append(Problem("error", ents[0].path if ents else MANIFEST,
                               f"could not be read for '{role}' ({exc.__class__.__name__}: {str(exc)[:200]}).",
                               "Export the file again as a GeoTIFF/CSV and check its CRS.", role))
        # warnings and errors recorded while loading (memo entries)
        for key in (role, role + "!", "landcover!" if role == "landcover" else "", "degradation!" if role.startswith("degradation.") and role not in ("degradation.raster", "degradation.mines") else ""):
            if key and key in self._cache:
                out.extend(self._cache[key][1])
        return out

    def check(self, stages: Iterable[str] | None = None) -> list[Problem]:
        """Every problem found in the dataset, each with a fix; never raises for data problems.

        Parameters
        ----------
        stages : iterable of str, optional
            Stages to be run (subset of ``fusion``, ``casa``, ``drivers``, ``correlation``,
            ``attribution``; pipeline names ``sampling``, ``lcc``, ``dominance`` count as
            correlation/attribution). Missing roles these need are errors. Default: all.

        Returns
        -------
        list of Problem
            Errors first, then warnings, then infos; duplicates removed.
        """
        with self._lock:
            probs: list[Problem] = list(self._problems)
            probs.extend(self._ensure_mask()[1])
            for role in list(self._roles):
                if role in ("grid", "boundary"):
                    continue
                probs.extend(self._role_problems(role))
            probs.extend(self._requirements(stages))
            seen: set[tuple[str, str, str, str]] = set()
            out = []
            for p in probs:
                k = (p.severity, p.file, p.message, p.role)
                if k not in seen:
                    seen.add(k)
                    out.append(p)
            rank = {"error": 0, "warning": 1, "info": 2}
            out.sort(key=lambda p: rank.get(p.severity, 3))
            return out

    def _requirements(self, stages: Iterable[str] | None) -> list[Problem]:
        alias = {"sampling": "correlation", "lcc": "correlation", "dominance": "attribution"}
        wanted = set(STAGES) if stages is None else {alias.get(s, s) for s in stages}
        r = self._roles
        has = lambda *names: all(n in r for n in names)  # noqa: E731
        out: list[Problem] = []

        def need(stage: str, msg: str, fix: str, role: str) -> None:
            out.append(Problem("error", MANIFEST, f"{stage} needs {msg}.", fix, role))

        npp_ready = has("npp.annual")
        series = has("ndvi.fine_series")
        fusion_inputs = has("ndvi.fine", "ndvi.coarse")
        clim = [v for v in ("temperature", "precipitation", "solar") if f"climate.{v}" not in r]
        if "fusion" in wanted:
            if npp_ready or series:
                out.append(Problem("info", MANIFEST, "fusion is skipped: " + ("a ready NPP raster is given."
                                   if npp_ready else "a ready NDVI series (fine_series) is given."), "", "ndvi"))
            elif not fusion_inputs:
                need("fusion", "[ndvi] fine images and a coarse series (or a ready fine_series)",
                     "Add fine = [...] and coarse = \"...\" to [ndvi], or fine_series = \"...\".", "ndvi")
        if "casa" in wanted:
            if npp_ready:
                out.append(Problem("info", MANIFEST, "CASA is skipped: a ready NPP raster ([npp] annual) is given.",
                                   "", "npp"))
            else:
                if not (series or fusion_inputs):
                    need("casa", "NDVI ([ndvi] fine_series, or fine + coarse for fusion)",
                         "Add the NDVI files to [ndvi].", "ndvi")
                if clim:
                    need("casa", f"monthly climate: [climate] {', '.join(clim)}",
                         "Add the monthly series to [climate].", "climate")
                if not has("landcover"):
                    need("casa", "land cover ([landcover] raster with classes and casa_type)",
                         "Add [landcover] raster, [landcover.classes] and [landcover.casa_type].", "landcover")
        if wanted & {"drivers", "correlation", "attribution"}:
            if clim:
                need("drivers", f"monthly climate: [climate] {', '.join(clim)}",
                     "Add the monthly series to [climate].", "climate")
            if not (has("soil.samples") or any(k.startswith("soil.rasters.") for k in r)):
                need("drivers", "soil samples ([soil] samples) or ready soil rasters ([soil.rasters])",
                     "Add a samples CSV with [soil.properties], or [soil.rasters].", "soil")
            if not (has("degradation.raster") or any(k.startswith("degradation.indicators.") for k in r)):
                need("drivers", "degradation indicators ([degradation.indicators]) or an LD raster ([degradation] raster)",
                     "Add the indicator rasters and an AHP matrix, or a ready LD raster.", "degradation")
        if wanted & {"correlation", "attribution"} and not (npp_ready or series or fusion_inputs):
            need("correlation", "an NPP source (NDVI inputs for CASA, or [npp] annual)",
                 "Add NDVI and climate, or a ready NPP raster.", "npp")
        return out

    def summary(self) -> dict[str, Any]:
        """What was understood of the dataset (JSON-able).

        Returns
        -------
        dict
            ``name``, ``root``, ``grid`` (crs, transform, width, height, shape, res, bounds),
            ``mask`` (pixels inside, share), ``layers``: list of per-role dicts with ``role``,
            ``kind``, ``file``, ``files``, ``crs``, ``shape``, ``res``, ``bands``, ``dates``
            ({first, last, count}), ``units`` / ``units_declared`` / ``units_guessed``, ``scale``,
            ``offset``, ``nodata_share``, ``resampling``, ``error`` (when it could not be loaded).
        """
        g = self.grid.to_dict()
        g["shape"] = list(self.grid.shape)
        m, mprobs = self._ensure_mask()
        out: dict[str, Any] = {"name": self.name, "root": str(self.root), "grid": g,
                               "mask": {"pixels_inside": int(m.sum()), "share": float(m.mean()),
                                        "errors": [str(p) for p in mprobs if p.severity == "error"]},
                               "layers": []}
        for lay in self.layers():
            e = self._roles[lay.role][0]
            d: dict[str, Any] = {"role": lay.role, "kind": lay.kind, "file": e.path,
                                 "files": [x.path for x in self._roles[lay.role]], "scale": e.scale,
                                 "offset": e.offset, "units_declared": e.units}
            errs = list(dict.fromkeys(str(p) for p in self._role_problems(lay.role) if p.severity == "error"))
            if errs:
                d["error"] = " ".join(errs)
            if lay.kind != "table":
                cached = self._cache.get(lay.role + "#scan") or self._cache.get(lay.role) or \
                    self._cache.get(lay.role + "#raw")
                if cached is not None and cached[0] is not None:
                    info = cached[2]
                    src = info.get("source") or [{}]
                    d.update(crs=src[0].get("crs"), shape=src[0].get("shape"), res=src[0].get("res"),
                             bands=info.get("bands"), nodata_share=info.get("nodata_share"),
                             resampling=", ".join(sorted(set(info.get("resampling", [])))),
                             overlap_share=min((s.get("overlap_share", 1.0) for s in src), default=None))
                    if info.get("dates"):
                        ds_ = info["dates"]
                        d["dates"] = {"first": ds_[0].isoformat(), "last": ds_[-1].isoformat(), "count": len(ds_)}
                cl = self._cache.get(lay.role + "!")
                if lay.role.startswith("climate.") and cl is not None:
                    ci = cl[2]
                    canon = _CANONICAL_UNITS.get(lay.role.split(".")[1])
                    given = ci.get("units") or canon
                    d["units"] = given if given == canon else f"{given} → {canon}"
                    d["units_guessed"] = ci.get("units_guessed")
                    d["canonical_units"] = _CANONICAL_UNITS.get(lay.role.split(".")[1])
            else:
                for key in (lay.role + "!", "soil.samples!", "validation.plots!"):
                    if key.startswith(lay.role) and key in self._cache:
                        d["rows"] = self._cache[key][2].get("rows")
            out["layers"].append(d)
        return json.loads(json.dumps(out, default=str))

    # ----------------------------------------------------------------- hashing
    def _file_hash(self, p: Path) -> str:
        st = p.stat()
        k = (str(p), st.st_size, st.st_mtime_ns)
        if k not in self._hash_cache:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            self._hash_cache[k] = h.hexdigest()
        return self._hash_cache[k]

    def content_hash(self, *roles: str) -> str:
        """SHA-256 over the files behind ``roles`` and their manifest entries (for cache keys).

        Parameters
        ----------
        *roles : str
            Roles or role prefixes (``"climate"`` covers ``climate.*``). The grid,
            boundary and land cover (which define the grid and mask every aligned
            array depends on) and the role's section settings are always included.
            No roles: every file and the whole manifest.

        Returns
        -------
        str
            Hex digest.
        """
        h = hashlib.sha256()
        if not roles:
            chosen = sorted(self._roles)
            h.update(json.dumps(self.manifest, sort_keys=True, default=str).encode())
        else:
            pref = set(roles) | {"grid", "boundary", "landcover"}
            chosen = sorted(r for r in self._roles if any(r == q or r.startswith(q + ".") for q in pref))
            secs = sorted({r.split(".")[0] for r in chosen} | {q.split(".")[0] for q in roles})
            for s in secs:
                body = self.manifest.get(s)
                if isinstance(body, dict):
                    h.update(json.dumps({k: v for k, v in body.items() if k not in _FILE_KEYS.get(s, {})},
                                        sort_keys=True, default=str).encode())
        for r in chosen:
            h.update(r.encode())
            for e in self._roles[r]:
                h.update(json.dumps(e.hash_dict(), sort_keys=True, default=str).encode())
                p, _ = self._resolve(e)
                h.update(self._file_hash(p).encode() if p is not None else b"missing")
        return h.hexdigest()

    # ----------------------------------------------------------------- lazy (chunked) reading
    def layer_dask(self, role: str, chunk: int | tuple[int, int] = 1024, *,
                   mask: Any = None) -> tuple[Any, list[Any] | None]:
        """A raster role aligned to the reference grid as a lazy Dask array (windowed reads).

        The chunked counterpart of the in-memory accessors (:meth:`climate`,
        :meth:`ndvi_series`, :meth:`soil_rasters`, …): the same resampling choice
        (categorical nearest; continuous bilinear for coarser, average for finer
        inputs), scale/offset, unit conversion (climate) and study-area mask, but
        each block reads only the part of each source file it needs (a plain
        window when the file is on the grid's pixels, else the source window under
        the block's whole-width row strip, reprojected with :func:`rasterio.warp.reproject`
        band group by band group — whole rows keep GDAL's approximate transformer identical
        to the in-memory whole-grid warp, so values agree to rounding; the cost is one strip
        warp per block). No full-size array is read. The
        unit and plausibility checks of the in-memory accessors are not repeated
        here (run ``python -m npp_core check`` on the dataset).

        Parameters
        ----------
        role : str
            A raster role of the manifest, e.g. ``"climate.temperature"``,
            ``"ndvi.fine_series"``, ``"soil.rasters.SOC"``,
            ``"degradation.indicators.goaf"``, ``"degradation.raster"``, ``"drivers.X"``.
        chunk : int or (int, int)
            Block side(s) in pixels.
        mask : dask.array of bool, shape (rows, cols), optional
            The study-area mask (:attr:`mask`) as a Dask array whose blocks are used instead of
            ``chunk`` (e.g. one scattered to a cluster once); default built from :attr:`mask`.

        Returns
        -------
        data : dask.array, shape (bands, rows, cols), float64
            NaN outside the study-area mask and where the source has nodata.
            Climate in CASA units (°C, mm month⁻¹, MJ m⁻² month⁻¹).
        dates : list or None
            Climate: ``"YYYY-MM"`` labels; other series: ``datetime.date`` per band
            (ascending); None for single-layer roles.

        Raises
        ------
        DatasetError
            Unknown role, unusable file or undatable bands (the message names the file and the fix).
        """
        import dask.array as da

        ents = self._roles.get(role)
        if not ents or role in _TABLE_ROLES:
            raise DatasetError(f"{MANIFEST}: no raster role '{role}'; roles present: {', '.join(sorted(self._roles))}.")
        series = role in _SERIES_ROLES
        kind = self._kind(role)
        g = self.grid
        plans: list[_SourcePlan] = []
        band_dates: list[_dt.date | None] = []
        band_src: list[int] = []
        files: list[str] = []
        for ei, e in enumerate(ents):
            p, prob = self._resolve(e)
            if prob is not None:
                raise DatasetError(str(prob), [prob])
            assert p is not None
            files.append(self._rel(p))
            plan, dtexts = self._source_plan(p, e, kind, series)
            plans.append(plan)
            for k in range(len(plan.bands)):
                d = parse_date(dtexts[k], year_only=(role == "npp.annual")) if k < len(dtexts) else None
                if d is None and len(plan.bands) == 1:
                    d = parse_date(e.date, year_only=True) or parse_date(p.stem, year_only=(role == "npp.annual"))
                band_dates.append(d)
                band_src.append(ei)
        order = list(range(len(band_dates)))
        dates: list[Any] | None = None
        convert: tuple[str, str | None, list[int]] | None = None
        if series:
            ds_, probs = self._date_bands(role, ents, band_dates, band_src, files)
            self._raise_if_errors(role, probs)
            if ds_ is None:
                raise DatasetError(f"{MANIFEST}: the bands of '{role}' cannot be dated.")
            order = sorted(range(len(ds_)), key=lambda i: ds_[i])
            dates = [ds_[i] for i in order]
            if role.startswith("climate."):
                from . import units as U

                var = role.split(".", 1)[1]
                months = [_month_label(d) for d in dates]
                convert = (_QUANTITY[var], ents[0].units, [int(x) for x in U.month_days(months)])
                dates = months
        if mask is None:
            ch = (chunk, chunk) if np.isscalar(chunk) else tuple(chunk)
            md = da.from_array(self.mask, chunks=(int(ch[0]), int(ch[1])))
        else:
            md = mask
            if tuple(md.shape) != g.shape:
                raise DatasetError(f"mask: shape {tuple(md.shape)} differs from the grid {g.shape}.")
        reader = _RoleReader(plans, order, g, convert)
        nb = len(order)
        arr = md.map_blocks(reader, new_axis=0, chunks=((nb,),) + md.chunks, dtype=np.float64,
                            meta=np.empty((0, 0, 0), dtype=np.float64))
        return arr, dates

    def _source_plan(self, p: Path, e: Entry, kind: str, series: bool) -> tuple["_SourcePlan", list[str | None]]:
        """Where a block of the reference grid comes from in one file (no pixel is read)."""
        from rasterio.warp import calculate_default_transform

        g = self.grid
        rel = self._rel(p)
        try:
            src = open_checked(p)
        except RasterError as exc:
            raise DatasetError(f"{rel}: {exc.problem} (manifest key '{e.key}') {exc.fix}") from None
        with src:
            explicit = isinstance(e.raw, dict) and "crs" in e.raw
            file_crs = CRS.from_user_input(src.crs) if src.crs else None
            crs = _crs_or_none(e.crs) if e.crs and (explicit or file_crs is None) else file_crs
            t = src.transform
            win = _clip_window(src, crs, g)  # the same clip window as the in-memory reader (_read_clipped)
            if win is None:
                off, shape, wt = (0, 0), (src.height, src.width), t
            else:
                off, shape, wt = (int(win.row_off), int(win.col_off)), (int(win.height), int(win.width)), \
                    src.window_transform(win)
            bands = list(range(1, src.count + 1)) if series else [1]
            dtexts = [src.tags(b).get("DATE") or src.descriptions[b - 1] or None for b in bands]
            nodata = e.nodata if e.nodata is not None else src.nodata
            masked = [any(f.name in ("per_dataset", "alpha") for f in src.mask_flag_enums[b - 1]) for b in bands]
        if crs is None:
            if (src.height, src.width) == g.shape and all(abs(a - b) < 1e-6 * max(1, abs(a))
                                                          for a, b in zip(t, g.transform)):
                crs = g.crs
            else:
                raise DatasetError(f"{rel}: the file has no CRS and its grid differs from the reference grid "
                                   f"(manifest key '{e.key}'). Save it with its CRS or add crs = \"...\".")
        sgrid = Grid(crs=crs, transform=wt, width=shape[1], height=shape[0])
        shift = _pixel_shift(sgrid, g)
        rs = Resampling.nearest
        if shift is None and kind != "categorical":
            if crs == g.crs:
                sres = math.sqrt(sgrid.res[0] * sgrid.res[1])
            else:
                try:
                    tr, _, _ = calculate_default_transform(crs, g.crs, sgrid.width, sgrid.height, *sgrid.bounds)
                    sres = math.sqrt(abs(tr.a * tr.e))
                except Exception:
                    sres = math.sqrt(g.res[0] * g.res[1])
            ratio = sres / math.sqrt(g.res[0] * g.res[1])
            rs = Resampling.average if ratio < 0.98 else Resampling.bilinear
        plan = _SourcePlan(path=str(p), offset=off, shape=shape, transform=tuple(wt)[:6], crs=crs.to_wkt(),
                           bands=bands, nodata=None if nodata is None else float(nodata), scale=float(e.scale),
                           add=float(e.offset), shift=shift, resampling=int(rs), masked=masked)
        return plan, dtexts




@dataclass
class _SourcePlan:
    """One source file of a lazily read role: its clip window, CRS, bands and resampling."""

    path: str
    offset: tuple[int, int]            # (row, col) of the clip window in the file
    shape: tuple[int, int]             # clip window (rows, cols)
    transform: tuple[float, ...]       # affine of the clip window
    crs: str                           # WKT
    bands: list[int]
    nodata: float | None
    scale: float
    add: float
    shift: tuple[int, int] | None      # clip window's upper-left on the grid when pixel-aligned
    resampling: int
    masked: list[bool]

    def _read(self, src: Any, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows r0:r1, cols c0:c1 of the clip window: float64, NaN nodata, scaled."""
        from rasterio.windows import Window

        win = Window(self.offset[1] + c0, self.offset[0] + r0, c1 - c0, r1 - r0)
        a = src.read(self.bands, window=win, masked=False).astype(np.float64)
        if self.nodata is not None and not np.isnan(self.nodata):
            a[a == self.nodata] = np.nan
        for k, b in enumerate(self.bands):
            if self.masked[k]:
                a[k][src.read_masks(b, window=win) == 0] = np.nan
        a[np.isinf(a)] = np.nan
        if self.scale != 1.0 or self.add != 0.0:
            a = a * self.scale + self.add
        return a

    def block(self, grid: Grid, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """The grid block rows r0:r1, cols c0:c1 aligned from this file, (bands, h, w) float64."""
        import rasterio
        from affine import Affine
        from rasterio.warp import reproject, transform_bounds
        from rasterio.windows import from_bounds

        h, w = r1 - r0, c1 - c0
        out = np.full((len(self.bands), h, w), np.nan)
        with rasterio.open(self.path) as src:
            if self.shift is not None:
                sr, sc = self.shift
                a0, a1 = max(r0, sr), min(r1, sr + self.shape[0])
                b0, b1 = max(c0, sc), min(c1, sc + self.shape[1])
                if a1 > a0 and b1 > b0:
                    out[:, a0 - r0:a1 - r0, b0 - c0:b1 - c0] = self._read(src, a0 - sr, a1 - sr, b0 - sc, b1 - sc)
                return out
            crs = CRS.from_wkt(self.crs)
            st = Affine(*self.transform)
            # Warp whole-width strips: GDAL's approximate transformer interpolates along each destination
            # row, so a strip reproduces the in-memory (whole-grid) warp exactly; blocks of a row then
            # differ only in the columns they keep. Bands go in groups of ≤ ~64 MB.
            W = grid.width
            dt = grid.transform @ Affine.translation(0, r0)
            left, top = dt @ (0, 0)
            right, bottom = dt @ (W, h)
            bb = (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
            try:
                sb = bb if crs == grid.crs else transform_bounds(grid.crs, crs, *bb, densify_pts=21)
                sw = from_bounds(*sb, transform=st)
            except Exception:
                return out
            m = 3
            q0 = max(0, math.floor(sw.row_off) - m)
            q1 = min(self.shape[0], math.ceil(sw.row_off + sw.height) + m)
            p0 = max(0, math.floor(sw.col_off) - m)
            p1 = min(self.shape[1], math.ceil(sw.col_off + sw.width) + m)
            if q1 <= q0 or p1 <= p0:
                return out
            data = self._read(src, q0, q1, p0, p1)
        group = max(1, int(64e6 // (8 * W * h)))
        for b0 in range(0, data.shape[0], group):
            strip = np.full((min(group, data.shape[0] - b0), h, W), np.nan)
            reproject(source=data[b0:b0 + group], destination=strip, src_transform=st @ Affine.translation(p0, q0),
                      src_crs=crs, dst_transform=dt, dst_crs=grid.crs, src_nodata=np.nan, dst_nodata=np.nan,
                      resampling=Resampling(self.resampling), num_threads=1)
            out[b0:b0 + group] = strip[:, :, c0:c1]
        return out


class _RoleReader:
    """Picklable block function of :meth:`Dataset.layer_dask` (called with the mask block)."""

    def __init__(self, plans: list[_SourcePlan], order: list[int], grid: Grid,
                 convert: tuple[str, str | None, list[int]] | None):
        self.plans, self.order, self.grid, self.convert = plans, order, grid, convert

    def __call__(self, mask: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        (r0, r1), (c0, c1) = block_info[0]["array-location"]
        parts = [pl.block(self.grid, r0, r1, c0, c1) for pl in self.plans]
        stack = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        if self.order != list(range(stack.shape[0])):
            stack = stack[self.order]
        if self.convert is not None:
            from . import units as U

            q, declared, days = self.convert
            stack = U.convert(stack, q, declared, np.asarray(days))
        stack = np.asarray(stack, dtype=np.float64)
        stack[:, ~mask] = np.nan
        return stack


def _freeze(obj: Any) -> None:
    """Make memoised arrays read-only (they are shared by every caller; copy before changing)."""
    if isinstance(obj, np.ndarray):
        obj.flags.writeable = False
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            _freeze(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            _freeze(o)


def _scan_step(width: int) -> int:
    """Rows per strip of the land-cover scan (about a million pixels)."""
    return max(1, 1_000_000 // max(int(width), 1))


def _scan_reduce(strips: Iterable[tuple[int, np.ndarray]], shape: tuple[int, int],
                 classes: dict[int, str]) -> dict[str, Any]:
    """Reduce aligned land-cover row strips to the compact scan of :meth:`Dataset._landcover_scan`.

    Parameters
    ----------
    strips : iterable of (first row, ndarray (rows, cols) float64, NaN = nodata)
        Row strips covering the grid, in any order.
    shape : (rows, cols)
    classes : {code: name}
        ``[landcover.classes]`` (empty: every finite code is a class).

    Returns
    -------
    dict
        ``ok``, ``codes``, ``present``, ``counts``, ``n_finite``, ``non_integer`` as documented there.
    """
    cl = np.array(sorted(classes), dtype=np.float64)
    h, w = shape
    ok = np.empty((h, w), dtype=bool)
    codes = np.empty((h, w), dtype=np.int16)
    present: dict[int, int] = {}
    n_finite = 0
    non_integer = False
    for r0, cf in strips:
        r1 = r0 + cf.shape[0]
        fin = np.isfinite(cf)
        # mask: finite and a declared class, compared on the values as read (as the mask always was)
        okb = fin & np.isin(np.where(fin, cf, -1), cl) if classes else fin
        ok[r0:r1] = okb
        v = cf[fin]
        n_finite += int(v.size)
        rv = np.round(v)
        if v.size and not np.allclose(v, rv):
            non_integer = True
        ci = np.where(fin, np.round(cf), -1).astype(np.int64)
        pos = ci >= 0
        u, c = np.unique(ci[pos], return_counts=True)
        for a, b in zip(u.tolist(), c.tolist()):
            present[a] = present.get(a, 0) + b
        ci = np.where(pos & np.isin(ci, list(classes)), ci, -1) if classes else np.where(pos, ci, -1)
        codes[r0:r1] = ci.astype(np.int16)
    keys = sorted(present)
    return {"ok": ok, "codes": codes, "present": keys, "counts": [present[k] for k in keys],
            "n_finite": n_finite, "non_integer": non_integer}


def _pixel_shift(src: Grid, dst: Grid) -> tuple[int, int] | None:
    """(row, col) of the source's upper-left pixel on ``dst`` when both share CRS, pixel size and
    pixel edges (so copying is exact), else None."""
    a, b = src.transform, dst.transform
    if src.crs != dst.crs or a.b or a.d or b.b or b.d:
        return None
    if abs(a.a - b.a) > 1e-9 * abs(b.a) or abs(a.e - b.e) > 1e-9 * abs(b.e):
        return None
    c = (a.c - b.c) / b.a
    r = (a.f - b.f) / b.e
    if abs(c - round(c)) > 1e-6 or abs(r - round(r)) > 1e-6:
        return None
    return int(round(r)), int(round(c))


def _paste(data: np.ndarray, shift: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Copy ``data`` (bands, h, w) whose upper-left pixel sits at ``shift`` into a NaN array of ``shape``."""
    r0, c0 = shift
    if r0 == 0 and c0 == 0 and data.shape[1:] == tuple(shape):
        return data
    out = np.full((data.shape[0],) + tuple(shape), np.nan, dtype=np.float64)
    rs, cs = max(0, r0), max(0, c0)
    re_, ce = min(shape[0], r0 + data.shape[1]), min(shape[1], c0 + data.shape[2])
    if re_ > rs and ce > cs:
        out[:, rs:re_, cs:ce] = data[:, rs - r0:re_ - r0, cs - c0:ce - c0]
    return out


def _iter_coords(geoms: list[dict[str, Any]]) -> Iterable[tuple[float, float]]:
    for g in geoms:
        c = g.get("coordinates") or []
        stack = [c]
        while stack:
            x = stack.pop()
            if isinstance(x, (list, tuple)) and x and isinstance(x[0], (int, float)):
                yield float(x[0]), float(x[1])
            elif isinstance(x, (list, tuple)):
                stack.extend(x)
