"""Chunked execution of the per-pixel and windowed stages (Dask arrays, windowed GeoTIFF I/O).

Design note
-----------
The science lives in the numpy kernels of :mod:`npp_core.lcc`, :mod:`npp_core.casa`,
:mod:`npp_core.forest` and :mod:`npp_core.kriging`; this module only cuts rasters into blocks,
runs those kernels per block and writes the blocks out. Every function returns lazy
``dask.array`` results with the same numbers as the in-memory call (to floating-point
rounding, whatever the chunk size):

* **LCC** – ``dask.array.map_overlap`` with ``depth = window // 2`` and
  ``boundary="none"``: interior block edges carry a halo of real pixels, true raster edges
  none, and :func:`npp_core.lcc.local_correlation` truncates its windows at the edges of the
  array it is given, which are then exactly the raster edges. The global centring/scaling
  (:class:`~npp_core.lcc.GlobalStats`) is computed once over the whole raster and passed to
  every block. Numerics: the kernel's running sums restart at block-relative rows/columns, so
  blocks differ from the whole raster by rounding only — but rounding amplified by the window's
  conditioning: ~1e-15 in r for ordinary windows, up to ~1e-7 in windows where a variable is
  almost constant (e.g. a smooth kriged surface over 5 × 5 pixels), which is also the accuracy
  of the in-memory value there.
* **CASA** – spatial blocks only (a pixel needs all its months for Topt and the heat
  index); the month axis is one chunk.
* **Forest prediction** – the fitted forest is flattened once
  (:func:`npp_core.forest.flatten_forest`), shipped once (one graph key locally,
  ``client.scatter(broadcast=True)`` on a cluster) and evaluated per block on the valid pixels.
* **Kriging** (all-samples fast path) – the inverse kriging matrix is computed once on the
  driver; each block is one matrix product. With ``n_closest > 0`` each block calls
  :func:`npp_core.kriging.krige_grid` (PyKrige, holds the GIL: prefer worker processes).
* **Writing** – :func:`write_blocks` / :func:`write_many` create a tiled deflate GeoTIFF and
  write it window by window (under a lock, in the calling process), optionally converting to
  a COG afterwards with ``rasterio.shutil.copy(driver="COG")``. No full-size array is ever
  materialised; output is float32 (or the dtype asked for). The output tiles (256 px, or the
  largest multiple of 16 down to 64 that divides every block offset) are aligned with the
  blocks whenever possible, so each block write completes whole tiles and GDAL's block cache
  stays a few tiles, whatever the area (:func:`_write_cache_bytes`).

Threads or processes: without a ``client`` the local threaded scheduler runs blocks (numba,
BLAS and tree prediction release the GIL); each block kernel then uses one numba thread so two
blocks do not oversubscribe the cores. With a ``dask.distributed.Client`` the same graphs run
on its workers; results stream back to this process, which writes them.

* **Land degradation** – :func:`degradation_chunked`: the min–max scaling needs global extremes,
  computed in reduction passes first; each block then applies them.
* **Driver-side helpers** – :func:`values_at` (values at sample pixels from windowed reads),
  :func:`read_window`, :func:`windows` for block-wise statistics in the calling process.

The pipeline's chunked stages (:mod:`npp_core.stages`) compose these with the lazy dataset reader
(:meth:`npp_core.dataset.Dataset.layer_dask`).

* **ESTARFM** – :func:`fuse_series_chunked`: the whole image's similarity thresholds per fine pair
  (computed strip by strip, bit-identical to the in-memory ones), then each block with a halo of half
  the window; equal to :func:`npp_core.estarfm.fuse_series` exactly.

Out of scope: sampling and model fitting (they stay on the driver).
"""
from __future__ import annotations

import math
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import dask
import dask.array as da
import numpy as np
import rasterio

from .raster import Grid, _looks_like_date, atomic_path, open_checked

__all__ = [
    "ChunkedError",
    "Block",
    "choose_mode",
    "plan_blocks",
    "open_dask",
    "as_dask",
    "lcc_chunked",
    "global_stats_chunked",
    "casa_chunked",
    "predict_chunked",
    "krige_chunked",
    "write_blocks",
    "write_many",
    "windows",
    "read_window",
    "values_at",
    "degradation_chunked",
]

#: Bytes per pixel and layer assumed by :func:`choose_mode` (float64 working copies and
#: intermediates: a stage holds about three float64 copies of its inputs at once).
BYTES_PER_VALUE = 8 * 3

ProgressFn = Callable[[float, str], None]


class ChunkedError(ValueError):
    """Bad input to a chunked operation, with a message naming the input and the fix."""


# --------------------------------------------------------------------------- mode and blocks
def choose_mode(shape: tuple[int, int], n_layers: int, params: Mapping[str, Any]) -> tuple[str, str]:
    """Pick in-memory or chunked execution from the grid size and the memory budget.

    Parameters
    ----------
    shape : (rows, cols)
        Reference grid shape.
    n_layers : int
        Largest number of full-size layers a stage holds (e.g. 4 × months for CASA).
    params : mapping
        The full settings (with a ``"run"`` section) or the ``run`` section itself:
        ``mode`` ("auto" | "memory" | "chunked") and ``memory_gb``.

    Returns
    -------
    mode : {"memory", "chunked"}
    reason : str
        One sentence for logs and the summary.
    """
    run = params.get("run", params)
    mode = str(run.get("mode", "auto"))
    if mode not in ("auto", "memory", "chunked"):
        raise ChunkedError(f"run.mode={mode!r}: must be one of auto, memory, chunked.")
    rows, cols = (int(shape[0]), int(shape[1]))
    if rows <= 0 or cols <= 0 or int(n_layers) <= 0:
        raise ChunkedError(f"shape={shape!r}, n_layers={n_layers!r}: need positive sizes.")
    need_gb = rows * cols * int(n_layers) * BYTES_PER_VALUE / 1e9
    budget = float(run.get("memory_gb", 4.0))
    if mode != "auto":
        return mode, f"run.mode = {mode} (forced); estimated in-memory need {need_gb:.2f} GB"
    if need_gb <= budget:
        return "memory", f"estimated {need_gb:.2f} GB fits the {budget:g} GB budget (run.memory_gb)"
    return "chunked", f"estimated {need_gb:.2f} GB exceeds the {budget:g} GB budget (run.memory_gb)"


@dataclass(frozen=True)
class Block:
    """One block of a raster: its core window and the halo-extended window to read.

    Attributes
    ----------
    row0, row1, col0, col1 : int
        Core window (half-open) in raster pixels; cores tile the raster exactly.
    rrow0, rrow1, rcol0, rcol1 : int
        Read window = core + halo, clipped to the raster.
    """

    row0: int
    row1: int
    col0: int
    col1: int
    rrow0: int
    rrow1: int
    rcol0: int
    rcol1: int

    @property
    def core(self) -> tuple[slice, slice]:
        """Slices of the core in raster coordinates."""
        return slice(self.row0, self.row1), slice(self.col0, self.col1)

    @property
    def read(self) -> tuple[slice, slice]:
        """Slices of the read window in raster coordinates."""
        return slice(self.rrow0, self.rrow1), slice(self.rcol0, self.rcol1)

    @property
    def inner(self) -> tuple[slice, slice]:
        """Slices of the core inside the read window (crop a halo block result with these)."""
        return (slice(self.row0 - self.rrow0, self.row1 - self.rrow0),
                slice(self.col0 - self.rcol0, self.col1 - self.rcol0))


def plan_blocks(shape: tuple[int, int], chunk: int | tuple[int, int], halo: int = 0) -> list[Block]:
    """Cut a raster into blocks with halos (row-major order).

    Parameters
    ----------
    shape : (rows, cols)
    chunk : int or (int, int)
        Core block side(s) in pixels.
    halo : int
        Extra pixels read on each side (``window // 2`` for windowed statistics);
        clipped at the raster edges, never padded.

    Returns
    -------
    list of Block
    """
    ch = (chunk, chunk) if np.isscalar(chunk) else tuple(chunk)
    if min(ch) < 1 or halo < 0:
        raise ChunkedError(f"chunk={chunk!r}, halo={halo!r}: chunk must be ≥ 1 and halo ≥ 0.")
    rows, cols = shape
    out = []
    for r0 in range(0, rows, int(ch[0])):
        r1 = min(rows, r0 + int(ch[0]))
        for c0 in range(0, cols, int(ch[1])):
            c1 = min(cols, c0 + int(ch[1]))
            out.append(Block(r0, r1, c0, c1, max(0, r0 - halo), min(rows, r1 + halo),
                             max(0, c0 - halo), min(cols, c1 + halo)))
    return out


@contextmanager
def _numba_threads(n: int | None) -> Iterator[None]:
    """Limit numba's (thread-local) thread count inside one block task."""
    if not n:
        yield
        return
    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(old)


# --------------------------------------------------------------------------- reading
class _WindowReader:
    """Array-like view of a GeoTIFF whose slicing is a windowed read (float64, NaN = nodata).

    Picklable (holds only the path), so Dask workers in other processes can read too.
    """

    def __init__(self, path: str, bands: list[int], shape: tuple[int, int, int], nodata: float | None):
        self.path = path
        self.bands = bands
        self.shape = shape
        self.ndim = 3
        self.dtype = np.dtype(np.float64)
        self.nodata = nodata

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        sl, squeeze = [], []
        for ax, k in enumerate(key):
            if isinstance(k, (int, np.integer)):
                i = int(k) + (self.shape[ax] if k < 0 else 0)
                sl.append(slice(i, i + 1))
                squeeze.append(ax)
            elif isinstance(k, slice):
                sl.append(k)
            else:  # lists / arrays: read the whole axis, index in memory
                return self._fancy(key)
        kb, kr, kc = sl
        b0, b1, bs = kb.indices(self.shape[0])
        r0, r1, rs = kr.indices(self.shape[1])
        c0, c1, cs = kc.indices(self.shape[2])
        bands = self.bands[b0:b1:bs]
        if not bands or r1 <= r0 or c1 <= c0:
            a = np.empty((len(bands), max(0, len(range(r0, r1, rs))), max(0, len(range(c0, c1, cs)))))
        else:
            win = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
            with rasterio.open(self.path) as ds:
                a = ds.read(bands, window=win).astype(np.float64)
                if self.nodata is not None and not np.isnan(self.nodata):
                    a[a == self.nodata] = np.nan
                for k, b in enumerate(bands):
                    flags = ds.mask_flag_enums[b - 1]
                    if any(f.name in ("per_dataset", "alpha") for f in flags):
                        a[k][ds.read_masks(b, window=win) == 0] = np.nan
            a = a[:, ::rs, ::cs]
        return a.squeeze(axis=tuple(squeeze)) if squeeze else a

    def _fancy(self, key: tuple) -> np.ndarray:
        """Fancy indexing: read the whole extent of the indexed axes, then index in memory."""
        full = self[tuple(k if isinstance(k, slice) else slice(None) for k in key)]
        return full[tuple(slice(None) if isinstance(k, slice) else k for k in key)]


def open_dask(
    path: Path | str,
    chunk: int | tuple[int, int] = 1024,
    *,
    bands: Sequence[int] | None = None,
    nodata: float | None = None,
) -> tuple[da.Array, Grid, list[str | None]]:
    """Open a GeoTIFF as a lazy Dask array read window by window.

    Parameters
    ----------
    path : path-like
    chunk : int or (int, int)
        Spatial block side(s); every band of a block is read together.
    bands : sequence of int, optional
        1-based band indexes; default all.
    nodata : float, optional
        Overrides the file's nodata value.

    Returns
    -------
    data : dask.array, shape (bands, rows, cols), float64
        NaN where the file has nodata (same values as :func:`npp_core.raster.read_raster`).
    grid : Grid
    dates : list of str or None
        Per band, the ``DATE`` tag or description.
    """
    with open_checked(path) as ds:
        idx = list(bands) if bands is not None else list(range(1, ds.count + 1))
        nd = nodata if nodata is not None else ds.nodata
        grid = Grid.from_dataset(ds)
        dates = [ds.tags(b).get("DATE") or ds.descriptions[b - 1] or None for b in idx]
    ch = (chunk, chunk) if np.isscalar(chunk) else tuple(chunk)
    full = str(Path(path).resolve())
    reader = _WindowReader(full, idx, (len(idx), grid.height, grid.width), nd)
    token = dask.base.tokenize(full, os.stat(full).st_mtime_ns, idx, nd, ch)
    arr = da.from_array(reader, chunks=(-1, int(ch[0]), int(ch[1])), lock=False, asarray=True,
                        meta=np.empty((0, 0, 0), dtype=np.float64), name=f"read-{Path(path).stem}-{token}")
    return arr, grid, dates


def as_dask(a: Any, chunk: int | tuple[int, int]) -> da.Array:
    """A numpy or Dask array chunked spatially (last two axes) with the leading axes whole.

    Parameters
    ----------
    a : ndarray or dask.array, shape (..., rows, cols)
    chunk : int or (int, int)
        Block side(s) of the last two axes.

    Returns
    -------
    dask.array
        Same shape and dtype.
    """
    ch = (chunk, chunk) if np.isscalar(chunk) else tuple(chunk)
    if isinstance(a, da.Array):
        x = a
    else:
        x = da.from_array(np.asarray(a), chunks=-1)
    chunks = (-1,) * (x.ndim - 2) + (int(ch[0]), int(ch[1]))
    return x.rechunk(chunks)


# --------------------------------------------------------------------------- LCC
def global_stats_chunked(x: Any, y: Any, mask: Any = None) -> Any:
    """:func:`npp_core.lcc.global_stats` computed blockwise (two passes: means, then centred sums of squares).

    Parameters
    ----------
    x, y : ndarray or dask.array, shape (rows, cols)
    mask : bool array, shape (rows, cols), optional

    Returns
    -------
    npp_core.lcc.GlobalStats
    """
    from .lcc import GlobalStats

    x = da.asarray(x).astype(np.float64)
    y = da.asarray(y).astype(np.float64)
    v = da.isfinite(x) & da.isfinite(y)
    if mask is not None:
        v = v & da.asarray(mask).astype(bool)
    xv = da.where(v, x, 0.0)
    yv = da.where(v, y, 0.0)
    n, sx, sy = dask.compute(v.sum(dtype=np.float64), xv.sum(), yv.sum())
    if n == 0:
        return GlobalStats(math.nan, math.nan, math.nan, math.nan)
    mx, my = float(sx / n), float(sy / n)
    vx, vy = dask.compute((da.where(v, x - mx, 0.0) ** 2).sum(), (da.where(v, y - my, 0.0) ** 2).sum())
    return GlobalStats(mx, my, float(np.sqrt(vx / n)), float(np.sqrt(vy / n)))


def _with_chunks(a: Any, chunks: tuple[tuple[int, ...], ...]) -> da.Array:
    if isinstance(a, da.Array):
        return a.rechunk(chunks)
    return da.from_array(np.asarray(a), chunks=chunks)


def _split(n: int, size: int, minimum: int) -> tuple[int, ...]:
    """Chunk sizes along one axis: ``size`` each, no chunk below ``minimum`` (a short tail joins its neighbour)."""
    size = max(size, minimum, 1)
    sizes = [size] * (n // size)
    rest = n - size * len(sizes)
    if rest:
        if sizes and rest < minimum:
            sizes[-1] += rest
        else:
            sizes.append(rest)
    return tuple(sizes) or (n,)


def _lcc_block(xb: np.ndarray, yb: np.ndarray, mb: np.ndarray, *, halo: int, window: int, min_valid: int,
               stats: Any, rtol: float, threads: int | None, block_info: dict | None = None) -> np.ndarray:
    from .lcc import local_correlation

    with _numba_threads(threads):
        r, p, n = local_correlation(xb, yb, window, min_valid, mask=mb, stats=stats, rtol=rtol)
    out = np.stack([r, p, n.astype(np.float64)])
    # map_overlap(trim=False): the block carries a halo only on sides facing another block
    info = block_info[0]
    (li, lj), (ni, nj) = info["chunk-location"], info["num-chunks"]
    top = halo if li > 0 else 0
    bottom = xb.shape[0] - (halo if li < ni - 1 else 0)
    left = halo if lj > 0 else 0
    right = xb.shape[1] - (halo if lj < nj - 1 else 0)
    return out[:, top:bottom, left:right]


def lcc_chunked(
    x: Any,
    y: Any,
    window: int,
    min_valid: int = 3,
    chunk: int | tuple[int, int] = 1024,
    *,
    mask: Any = None,
    stats: Any = None,
    rtol: float = 1e-10,
    threads: int | None = 1,
) -> da.Array:
    """Local correlation (:func:`npp_core.lcc.local_correlation`) block by block with halos.

    Parameters
    ----------
    x, y : ndarray or dask.array, shape (rows, cols)
        Co-registered rasters (NaN = nodata).
    window : int
        Odd window side (≥ 3); the halo is ``window // 2``.
    min_valid : int
        Fewest valid pairs for a defined r.
    chunk : int or (int, int)
        Core block side(s), at least ``window // 2`` (the halo); a last block shorter than
        the halo joins its neighbour.
    mask : bool array, shape (rows, cols), optional
        Study area.
    stats : GlobalStats, optional
        Global centring/scaling; default computed blockwise over the whole raster
        (:func:`global_stats_chunked`), so every block uses the same values.
    rtol : float
        See :func:`npp_core.lcc.local_correlation`.
    threads : int or None
        numba threads per block (1: blocks run in parallel instead; None: numba's default).

    Returns
    -------
    dask.array, shape (3, rows, cols), float64
        Band 0 r, band 1 p, band 2 valid-pair count n — the in-memory result stacked.
    """
    from .lcc import LCCError

    if isinstance(window, bool) or int(window) != window or window < 3 or window % 2 == 0:
        raise LCCError(f"window={window!r}: must be an odd integer ≥ 3 (e.g. 5); set lcc.window.")
    depth = int(window) // 2
    shape = tuple(np.shape(x))
    if len(shape) != 2 or shape != tuple(np.shape(y)):
        raise LCCError(f"x, y: need two 2-D rasters of the same shape; got {np.shape(x)} and {np.shape(y)}.")
    if mask is not None and tuple(np.shape(mask)) != shape:
        raise LCCError(f"mask: shape {np.shape(mask)} differs from x {shape}.")
    ch = (chunk, chunk) if np.isscalar(chunk) else tuple(chunk)
    chunks = (_split(shape[0], int(ch[0]), depth), _split(shape[1], int(ch[1]), depth))
    xd = _with_chunks(x, chunks).astype(np.float64)
    yd = _with_chunks(y, chunks).astype(np.float64)
    md = da.ones(shape, dtype=bool, chunks=chunks) if mask is None else _with_chunks(mask, chunks).astype(bool)
    if stats is None:
        stats = global_stats_chunked(xd, yd, md)
    return da.map_overlap(
        _lcc_block, xd, yd, md,
        depth={0: depth, 1: depth}, boundary="none", trim=False, align_arrays=False, allow_rechunk=False,
        new_axis=0, chunks=((3,),) + xd.chunks, dtype=np.float64, meta=np.empty((0, 0, 0), dtype=np.float64),
        halo=depth, window=int(window), min_valid=min_valid, stats=stats, rtol=rtol, threads=threads,
    )


# --------------------------------------------------------------------------- CASA
def _casa_block(ndvi: np.ndarray, t: np.ndarray, p: np.ndarray, s: np.ndarray, *params: np.ndarray,
                names: tuple[str, ...], kwargs: dict[str, Any]) -> np.ndarray:
    from .casa import npp_monthly

    kw = dict(kwargs)
    kw.update({n: v for n, v in zip(names, params)})
    return npp_monthly(ndvi, t, p, s, kw.pop("eps_max"), kw.pop("ndvi_min"), kw.pop("ndvi_max"),
                       threads=1, **kw)


def casa_chunked(
    ndvi: Any,
    temperature: Any,
    precipitation: Any,
    solar: Any,
    eps_max: float | Any,
    ndvi_min: float | Any,
    ndvi_max: float | Any,
    *,
    chunk: int | tuple[int, int] = 1024,
    **casa_kwargs: Any,
) -> da.Array:
    """CASA monthly NPP (:func:`npp_core.casa.npp_monthly`) per spatial block.

    Parameters
    ----------
    ndvi, temperature, precipitation, solar : ndarray or dask.array, shape (months, rows, cols)
        As for :func:`npp_core.casa.npp_monthly` (NDVI fraction, °C, mm month⁻¹,
        MJ m⁻² month⁻¹); rechunked to whole months × ``chunk`` pixels.
    eps_max, ndvi_min, ndvi_max : float or array, shape (rows, cols)
        Class parameters (gC MJ⁻¹; NDVI), e.g. from :func:`npp_core.casa.class_parameters`.
    chunk : int or (int, int)
        Spatial block side(s).
    **casa_kwargs
        Any other keyword of :func:`npp_core.casa.npp_monthly` (``halving``, ``pet_zero``,
        ``sr_min`` / ``sr_max`` as floats or (rows, cols) arrays, ``months``, …) except
        ``return_layers``/``threads``.

    Returns
    -------
    dask.array, shape (months, rows, cols), float64
        gC m⁻² month⁻¹, equal to the in-memory call.
    """
    from .casa import CasaError

    if casa_kwargs.get("return_layers"):
        raise CasaError("return_layers: not available chunked; run npp_monthly in memory on a window instead.")
    casa_kwargs.pop("threads", None)
    cubes = [as_dask(a, chunk).astype(np.float64) if not (isinstance(a, np.ndarray) and a.dtype == np.float32)
             else as_dask(a, chunk) for a in (ndvi, temperature, precipitation, solar)]
    shape = cubes[0].shape
    if len(shape) != 3 or any(c.shape != shape for c in cubes):
        raise CasaError(
            "ndvi, temperature, precipitation, solar: need (months, rows, cols) cubes of one shape; got "
            + ", ".join(str(c.shape) for c in cubes) + "."
        )
    cubes = [c.rechunk(cubes[0].chunks) for c in cubes]
    names: list[str] = []
    planes: list[da.Array] = []
    scalars: dict[str, Any] = {}
    for name, v in [("eps_max", eps_max), ("ndvi_min", ndvi_min), ("ndvi_max", ndvi_max),
                    *[(k, casa_kwargs.pop(k)) for k in ("sr_min", "sr_max") if k in casa_kwargs]]:
        if v is not None and (isinstance(v, da.Array) or np.ndim(v) == 2):
            if tuple(np.shape(v)) != shape[1:]:
                raise CasaError(f"{name}: shape {np.shape(v)} differs from the grid {shape[1:]}; align it first.")
            names.append(name)
            planes.append(as_dask(v, chunk).astype(np.float64).rechunk(cubes[0].chunks[1:]))
        else:
            scalars[name] = v
    kwargs = {**casa_kwargs, **scalars}
    args: list[Any] = []
    for c in cubes:
        args += [c, "myx"]
    for pl in planes:
        args += [pl, "yx"]
    return da.blockwise(
        _casa_block, "myx", *args, dtype=np.float64, concatenate=True,
        meta=np.empty((0, 0, 0), dtype=np.float64), names=tuple(names), kwargs=kwargs,
    )


# --------------------------------------------------------------------------- forest prediction
def _predict_block(stack: np.ndarray, flat: Any, threads: int | None) -> np.ndarray:
    from .forest import predict_forest

    p, r, c = stack.shape
    X = stack.reshape(p, -1).T
    ok = np.isfinite(X).all(axis=1)
    out = np.full(r * c, np.nan)
    if ok.any():
        with _numba_threads(threads):
            out[ok] = predict_forest(flat, X[ok])
    return out.reshape(r, c)


def predict_chunked(
    model: Any,
    stack: Any,
    *,
    chunk: int | tuple[int, int] = 1024,
    client: Any = None,
    threads: int | None = 1,
) -> da.Array:
    """Random-forest prediction per block, with the model shipped to the workers once.

    Parameters
    ----------
    model : RandomForestRegressor or FlatForest
        Fitted single-output forest (flattened here once if needed).
    stack : ndarray or dask.array, shape (p, rows, cols)
        Drivers in the fitting column order; chunked ``{band: -1, y: chunk, x: chunk}``.
    chunk : int or (int, int)
        Spatial block side(s).
    client : dask.distributed.Client, optional
        When given, the flattened forest is ``client.scatter(..., broadcast=True)`` once and
        every block task refers to that future; compute the result on the same client.
    threads : int or None
        numba threads per block (1: blocks run in parallel instead).

    Returns
    -------
    dask.array, shape (rows, cols), float64
        Prediction in target units; NaN where any driver is non-finite.
    """
    from .forest import ForestError, FlatForest, flatten_forest

    flat = model if isinstance(model, FlatForest) else flatten_forest(model)
    sd = as_dask(stack, chunk)
    if sd.ndim != 3 or sd.shape[0] != flat.n_features:
        raise ForestError(
            f"stack: shape {sd.shape}; expected ({flat.n_features}, rows, cols) with the bands in the order "
            "the forest was fitted on."
        )
    if client is not None:
        handle = client.scatter(flat, broadcast=True, hash=True)
    else:
        handle = dask.delayed(flat, pure=True, traverse=False)
    return da.map_blocks(_predict_block, sd, handle, threads, drop_axis=0, dtype=np.float64,
                         meta=np.empty((0, 0), dtype=np.float64))


# --------------------------------------------------------------------------- kriging
def _krige_block(block: np.ndarray, gx: np.ndarray, gy: np.ndarray, sx: np.ndarray, sy: np.ndarray,
                 z: np.ndarray, B: Any, variogram: dict[str, Any], n_closest: int, x0: float, y0: float,
                 block_info: dict | None = None) -> np.ndarray:
    from . import kriging

    (r0, r1), (c0, c1) = block_info[0]["array-location"]
    sel = block.astype(bool)
    out = np.full((2, r1 - r0, c1 - c0), np.nan)
    if not sel.any():
        return out
    if B is None:  # moving-window path: PyKrige per block
        p, v = kriging.krige_grid(sx + x0, sy + y0, z, gx[c0:c1], gy[r0:r1], variogram, n_closest=n_closest,
                                  mask=sel)
        out[0], out[1] = p, v
        return out
    yy, xx = np.meshgrid(gy[r0:r1], gx[c0:c1], indexing="ij")
    p, v = kriging._krige_fast(sx, sy, z, B, variogram, xx[sel] - x0, yy[sel] - y0,
                               kriging._auto_chunk(sx.size))
    out[0][sel] = p
    out[1][sel] = v
    return out


def krige_chunked(
    x: Any,
    y: Any,
    z: Any,
    variogram: dict[str, Any],
    grid: Grid,
    *,
    chunk: int | tuple[int, int] = 1024,
    mask: Any = None,
    n_closest: int = 0,
    client: Any = None,
) -> da.Array:
    """Ordinary kriging onto a grid block by block (same numbers as :func:`npp_core.kriging.krige_grid`).

    Parameters
    ----------
    x, y, z : array_like, shape (n,)
        Clean, unique samples in the grid CRS (m) and values (after
        :func:`npp_core.kriging.prepare_samples`; on the log scale if kriging logs).
    variogram : dict
        Fitted variogram (``model``, ``nugget``, ``psill``, ``range``).
    grid : Grid
        Target grid (pixel centres are predicted).
    chunk : int or (int, int)
    mask : bool array, shape (rows, cols), optional
        True where a prediction is wanted; elsewhere NaN at no cost.
    n_closest : int
        0 = all samples: the kriging-matrix inverse is computed once here and each block is one
        matrix product; k > 0 = PyKrige moving window per block (holds the GIL: use processes).
    client : dask.distributed.Client, optional
        Scatter the samples and inverse to the workers once.

    Returns
    -------
    dask.array, shape (2, rows, cols), float64
        Band 0 prediction (property units), band 1 kriging variance (units²).
    """
    from . import kriging

    x, y, z = kriging._check_xyz(x, y, z)
    kriging._unpack(variogram)
    gx, gy = grid.xy()
    x0, y0 = float(x.mean()), float(y.mean())
    k = int(n_closest or 0)
    B = None if 0 < k < x.size else kriging.kriging_matrix_inverse(x, y, variogram)
    m = da.ones(grid.shape, dtype=bool, chunks=chunk) if mask is None else as_dask(mask, chunk).astype(bool)
    if m.shape != grid.shape:
        raise kriging.KrigingError(f"mask has shape {m.shape}, the grid is {grid.shape} (rows, cols)")
    shared = (gx, gy, x - x0, y - y0, z, B)
    if client is not None:
        shared = tuple(client.scatter(list(shared), broadcast=True, hash=True))
    else:
        shared = tuple(dask.delayed(a, pure=True, traverse=False) if isinstance(a, np.ndarray) else a
                       for a in shared)
    return da.map_blocks(_krige_block, m, *shared, variogram, k, x0, y0, new_axis=0,
                         chunks=((2,),) + m.chunks, dtype=np.float64, meta=np.empty((0, 0, 0), dtype=np.float64))


# --------------------------------------------------------------------------- GDAL's cache
#: GDAL block cache (bytes) of every process of a chunked run. GDAL's default (5 % of RAM,
#: 1.2 GB here) fills with the tiles of files kept open while blocks are read, so a process's
#: memory grows with the area until it is reached; blocks are read once, and reads of 24-band
#: 1024² windows are no slower with 16–256 MiB than with the default (measured).
RUN_CACHE_BYTES = 128 << 20
_outer_cache: list[Any] = []  # the cache setting in force outside bounded_gdal_cache (for write_many)


@contextmanager
def bounded_gdal_cache(nbytes: int = RUN_CACHE_BYTES) -> Iterator[None]:
    """Bound GDAL's block cache of this process to ``nbytes`` while the block is entered.

    :func:`write_many` inside it still sizes its own write cache against the setting in force
    outside (so unaligned blocks keep their row of tiles).
    """
    from rasterio.env import get_gdal_config

    _outer_cache.append(get_gdal_config("GDAL_CACHEMAX"))
    try:
        with rasterio.Env(GDAL_CACHEMAX=int(nbytes)):
            yield
    finally:
        _outer_cache.pop()


def set_gdal_cache(nbytes: int = RUN_CACHE_BYTES) -> int:
    """Set GDAL's block cache of this process (bytes; run on every worker of a chunked run's cluster).

    Returns
    -------
    int
        The size set.
    """
    from rasterio.env import set_gdal_config

    set_gdal_config("GDAL_CACHEMAX", int(nbytes))
    return int(nbytes)


# --------------------------------------------------------------------------- writing
#: Output tile side (pixels) when the run's blocks do not dictate another one.
TILE = 256
#: Smallest output tile side :func:`write_many` picks to align the tiles with the run's blocks.
MIN_ALIGNED_TILE = 64


def _aligned_tile(chunks: tuple[Sequence[int], Sequence[int]], tile: int = TILE,
                  minimum: int = MIN_ALIGNED_TILE) -> int | None:
    """Largest output tile side (a multiple of 16 in ``[minimum, tile]``) that every block offset is a multiple of.

    Parameters
    ----------
    chunks : (row chunk sizes, column chunk sizes)
        The blocks of the writing pass (pixels).
    tile, minimum : int
        Preferred (largest) and smallest tile side; GeoTIFF tile sides are multiples of 16.

    Returns
    -------
    int or None
        The tile side, or None when no such side divides every block offset (the blocks
        then cut through tiles).
    """
    offsets = [int(o) for ax in chunks for o in np.cumsum(ax)[:-1]]
    g = math.gcd(*offsets) if offsets else 0
    for t in range(int(tile) - int(tile) % 16, max(int(minimum), 16) - 1, -16):
        if g % t == 0:
            return t
    return None


def _profile(grid: Grid, count: int, dtype: np.dtype, nodata: Any, tile: int = 256) -> dict[str, Any]:
    prof: dict[str, Any] = {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": count, "dtype": dtype.name,
        "crs": grid.crs, "transform": grid.transform, "nodata": nodata, "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    if grid.width >= tile and grid.height >= tile:
        prof.update(tiled=True, blockxsize=tile, blockysize=tile)
    if np.issubdtype(dtype, np.floating):
        prof["predictor"] = 3 if dtype.itemsize >= 4 else 1
    return prof


def _to_store(block: np.ndarray, dtype: np.dtype, nodata: Any) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        out = block.astype(dtype)
        if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
            out[np.isnan(out)] = nodata
        return out
    bad = np.isnan(block) if np.issubdtype(block.dtype, np.floating) else np.zeros(block.shape, bool)
    return np.where(bad, nodata if nodata is not None else 0, block).astype(dtype)


class _Target:
    """One open output file; ``write(r0, c0, block)`` writes a window under a lock."""

    def __init__(self, tmp: Path, final: Path, grid: Grid, count: int, dtype: Any, nodata: Any,
                 band_names: Sequence[str] | None, tags: Mapping[str, Any] | None, cog: bool,
                 colormap: Mapping[int, tuple[int, ...]] | None = None, tile: int = TILE):
        self.tmp, self.final, self.cog = tmp, final, cog
        self.dtype = np.dtype(dtype)
        if np.issubdtype(self.dtype, np.floating):
            self.nodata = np.nan if nodata is None else nodata
        else:
            self.nodata = nodata
        self.ds = rasterio.open(tmp, "w", **_profile(grid, count, self.dtype, self.nodata, tile=tile))
        self.lock = threading.Lock()
        if tags:
            self.ds.update_tags(**{k: str(v) for k, v in tags.items()})
        if colormap:
            self.ds.write_colormap(1, dict(colormap))
        for i, name in enumerate(band_names or []):
            if name is not None and i < count:
                self.ds.set_band_description(i + 1, str(name))
                if _looks_like_date(str(name)):
                    self.ds.update_tags(i + 1, DATE=str(name))

    def write(self, r0: int, c0: int, block: np.ndarray) -> None:
        b = block if block.ndim == 3 else block[None]
        data = _to_store(b, self.dtype, self.nodata)
        win = rasterio.windows.Window(c0, r0, b.shape[2], b.shape[1])
        with self.lock:
            self.ds.write(data, window=win)

    def write_mask(self, r0: int, c0: int, block: np.ndarray) -> None:
        """Write a window of the internal per-dataset mask (True = valid)."""
        b = np.asarray(block)
        b = b[0] if b.ndim == 3 else b
        win = rasterio.windows.Window(c0, r0, b.shape[1], b.shape[0])
        with self.lock:
            self.ds.write_mask(np.where(b.astype(bool), 255, 0).astype(np.uint8), window=win)

    def finish(self) -> Path:
        self.ds.close()
        if self.cog:
            from rasterio.shutil import copy as rio_copy

            cog_tmp = self.tmp.with_name(self.tmp.stem + ".cog.tif")
            try:
                rio_copy(self.tmp, cog_tmp, driver="COG", compress="DEFLATE", BIGTIFF="IF_SAFER")
            finally:
                self.tmp.unlink(missing_ok=True)
            os.replace(cog_tmp, self.final)
        else:
            os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        try:
            self.ds.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def _collect(*blocks: np.ndarray) -> list[np.ndarray]:
    return list(blocks)


def write_many(
    items: Sequence[tuple[Path | str, Any, Mapping[str, Any]]],
    grid: Grid,
    *,
    client: Any = None,
    progress: ProgressFn | None = None,
    max_in_flight: int | None = None,
    chunk: int | tuple[int, int] | None = None,
) -> list[Path]:
    """Compute several chunked arrays in one pass and write each to a tiled GeoTIFF block by block.

    Arrays that share intermediates (e.g. monthly NPP and its annual sums) are computed once.
    Each output is written to a temporary sibling and moved into place when complete.

    Parameters
    ----------
    items : sequence of (path, array, options)
        ``array``: numpy or dask, shape (rows, cols) or (bands, rows, cols);
        ``options``: any of ``nodata``, ``dtype`` (default float32), ``band_names``,
        ``tags``, ``cog`` (bool: convert to a Cloud-Optimized GeoTIFF afterwards),
        ``colormap`` ({code: (r, g, b, a)} for band 1 of an integer output), ``mask``
        (bool array (rows, cols), numpy or dask: written as the internal per-dataset mask).
    grid : Grid
        Grid of every array.
    client : dask.distributed.Client, optional
        Compute on this cluster (blocks stream back here and are written by this process);
        default the local threaded scheduler.
    progress : callable(fraction, message), optional
        Called after every written block.
    max_in_flight : int, optional
        Blocks computed ahead of the writer on a cluster (default 2 × workers' threads).
    chunk : int or (int, int), optional
        Block side(s) of the writing pass; default the blocks of the first Dask array
        (else 1024).

    Returns
    -------
    list of Path
        The written files.

    Notes
    -----
    Memory of this process: the blocks in flight plus GDAL's block cache. The tiles of the
    outputs are 256 px, or the largest multiple of 16 (≥ 64) dividing every block offset (e.g.
    240 for blocks of 1200); then the cache is bounded to a few tiles, independent of the area.
    When no such tile exists (e.g. blocks of 1000) the cache holds about one row of blocks
    (grows with the grid's width); prefer block sides that are multiples of 256.
    """
    if not items:
        return []
    arrays: list[da.Array] = []
    first_chunks = None
    if chunk is not None:
        ch = (chunk, chunk) if np.isscalar(chunk) else tuple(chunk)
        first_chunks = (_split(grid.height, int(ch[0]), 1), _split(grid.width, int(ch[1]), 1))
    else:  # the blocks of the first chunked array, else 1024²
        for _, arr, _ in items:
            if isinstance(arr, da.Array) and arr.shape[-2:] == grid.shape:
                first_chunks = arr.chunks[-2:]
                break
        else:
            first_chunks = (_split(grid.height, 1024, 1), _split(grid.width, 1024, 1))
    for path, arr, opt in items:
        a = arr if isinstance(arr, da.Array) else da.from_array(np.asarray(arr), chunks=-1)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3 or a.shape[1:] != grid.shape:
            raise ChunkedError(f"{Path(path).name}: array shape {a.shape[-2:]} does not match the grid {grid.shape}.")
        a = a.rechunk(((a.shape[0],),) + tuple(first_chunks))
        dt = np.dtype(opt.get("dtype", "float32"))
        if a.dtype != dt:
            # converted where the block is computed (the writer's own conversion is then a no-op):
            # blocks in flight and waiting on workers take the stored size, e.g. half of float64
            a = a.map_blocks(_to_store, dt, opt.get("nodata"), dtype=dt, meta=np.empty((0, 0, 0), dtype=dt))
        arrays.append(a)
    # internal masks are extra arrays whose blocks go to the mask of their target
    mask_of: list[int] = []
    for k, (path, _, opt) in enumerate(items):
        if opt.get("mask") is not None:
            mk = opt["mask"]
            mk = mk if isinstance(mk, da.Array) else da.from_array(np.asarray(mk), chunks=-1)
            if mk.ndim == 2:
                mk = mk[None]
            if mk.shape[1:] != grid.shape:
                raise ChunkedError(f"{Path(path).name}: mask shape {mk.shape[1:]} does not match the grid {grid.shape}.")
            arrays.append(mk.astype(bool).rechunk(((1,),) + tuple(first_chunks)))
            mask_of.append(k)
    targets: list[_Target] = []
    bytes_px = sum(a.shape[0] * np.dtype(opt.get("dtype", "float32")).itemsize
                   for (_, _, opt), a in zip(items, arrays)) + len(mask_of)
    tile = _aligned_tile(first_chunks)
    # a grid narrower or shorter than the tile is stored in whole-width strips, which blocks never fill alone
    aligned = tile is not None and grid.width >= tile and grid.height >= tile
    cache = _write_cache_bytes(grid, max(first_chunks[0]), bytes_px, tile or TILE, aligned=aligned)
    with rasterio.Env(GDAL_CACHEMAX=cache):
        return _write_many(items, arrays, mask_of, targets, grid, first_chunks, client, progress, max_in_flight,
                           tile or TILE)


def _write_cache_bytes(grid: Grid, block_rows: int, bytes_px: int, tile: int = TILE, *,
                       aligned: bool = False) -> int:
    """GDAL block-cache size while :func:`write_many` writes (bytes).

    GDAL keeps a written tile of an open GeoTIFF in its block cache until the tile is
    complete and evicted, the file is closed or the cache is full (default 5 % of RAM).

    * **Aligned blocks** (every block offset a multiple of the tile side, the usual case:
      ``run.chunk`` a multiple of 256, or :func:`write_many` picks a tile side that divides
      it): each block write fills whole tiles of all bands in one call, so no tile waits
      for another block. GDAL 3.10 then writes complete tiles straight to the file (measured:
      ~4 MiB of cache in use, whatever the area). The bound only has to keep the tile being
      assembled (all bands of one output) from being evicted half-written while other
      threads use the cache: four tiles of every output together, at least 32 MiB —
      independent of the area and of the block size.
    * **Otherwise** blocks cut through tiles and a tile on a block seam is complete only
      when the next row of blocks is written: one row of blocks plus the partial tiles on
      its seams stays in the cache (a partial tile flushed early is compressed and stored
      again: same values, but files ~9 % larger and slower). This bound grows with the
      grid's width (√area), not with the area.

    Never more than the cache size in force.

    Parameters
    ----------
    grid : Grid
    block_rows : int
        Rows of the largest block of the writing pass.
    bytes_px : int
        Bytes per pixel of all outputs together (bands × item size, + 1 per internal mask).
    tile : int
        Output tile side (pixels).
    aligned : bool
        Whether every block offset is a multiple of ``tile`` (:func:`_aligned_tile`).

    Returns
    -------
    int
        Bytes, at least 16 MiB.
    """
    from rasterio.env import get_gdal_config

    if aligned:
        need = max(4 * int(tile) * int(tile) * max(int(bytes_px), 1), 32 << 20)
    else:
        need = int((int(block_rows) + 2 * tile) * grid.width * max(int(bytes_px), 1)) + (32 << 20)
    try:
        current = int(_outer_cache[-1] if _outer_cache else get_gdal_config("GDAL_CACHEMAX"))
        if current < 100_000:  # GDAL reads small values as megabytes
            current <<= 20
    except (TypeError, ValueError):
        current = need
    return max(min(need, current), 16 << 20)


def _write_many(items: Sequence[tuple[Path | str, Any, Mapping[str, Any]]], arrays: list[da.Array],
                mask_of: list[int], targets: list["_Target"], grid: Grid,
                first_chunks: tuple[tuple[int, ...], tuple[int, ...]], client: Any,
                progress: ProgressFn | None, max_in_flight: int | None, tile: int = TILE) -> list[Path]:
    """The writing part of :func:`write_many` (under its GDAL cache bound), ``tile``: output tile side."""
    try:
        for (path, _, opt), a in zip(items, arrays):
            tmp, final = atomic_path(path)
            targets.append(_Target(tmp, final, grid, a.shape[0], opt.get("dtype", "float32"), opt.get("nodata"),
                                   opt.get("band_names"), opt.get("tags"), bool(opt.get("cog", False)),
                                   opt.get("colormap"), tile))
        writers: list[Callable[[int, int, np.ndarray], None]] = [t.write for t in targets] + \
            [targets[k].write_mask for k in mask_of]
        row_off = np.concatenate([[0], np.cumsum(first_chunks[0])])
        col_off = np.concatenate([[0], np.cumsum(first_chunks[1])])
        nbi, nbj = len(first_chunks[0]), len(first_chunks[1])
        total = nbi * nbj
        # not optimised: graph fusion would copy intermediates shared by several outputs (one kriging for a
        # prediction and its variance, one climate cube for MAT/MAP/MAS/MAE) into each output's chain,
        # computing them once per output instead of once
        delayed = [a.to_delayed(optimize_graph=False) for a in arrays]  # each (1, nbi, nbj)
        keys = [(i, j) for i in range(nbi) for j in range(nbj)]

        def put(i: int, j: int, blocks: Sequence[np.ndarray], done: int) -> None:
            for w, b in zip(writers, blocks):
                w(int(row_off[i]), int(col_off[j]), np.asarray(b))
            if progress is not None:
                progress(done / total, f"block {done}/{total}")

        if client is None:
            # local threads: one graph, blocks written as they finish (targets lock themselves)
            counter = {"n": 0}
            lock = threading.Lock()
            n_writes = total * len(writers)

            class _Sink:
                def __init__(self, w: Callable[[int, int, np.ndarray], None]):
                    self.w = w

                def __setitem__(self, key: tuple[slice, ...], value: np.ndarray) -> None:
                    self.w(key[1].start or 0, key[2].start or 0, value)
                    if progress is not None:
                        with lock:
                            counter["n"] += 1
                            n = counter["n"]
                        progress(n / n_writes, f"block {n}/{n_writes}")

            da.store(arrays, [_Sink(w) for w in writers], lock=False, compute=True, scheduler="threads",
                     optimize_graph=False)
        else:
            from distributed import as_completed

            nthreads = sum(client.nthreads().values()) or 1
            limit = max(2, max_in_flight or 2 * nthreads)
            group = max(1, limit // 2)
            it = iter(keys)
            pending: dict[Any, tuple[int, int]] = {}
            ac = as_completed(loop=client.loop)

            def submit_more() -> None:
                # blocks go to the scheduler in groups (one graph submission per group); at most
                # ``limit`` blocks are computed ahead of the writer, so worker memory stays bounded
                batch = []
                while len(pending) + len(batch) < limit and len(batch) < group:
                    nxt = next(it, None)
                    if nxt is None:
                        break
                    batch.append(nxt)
                if not batch:
                    return
                futs = client.compute([dask.delayed(_collect)(*[d[0, i, j] for d in delayed]) for i, j in batch],
                                      optimize_graph=False)
                for f, ij in zip(futs, batch):
                    pending[f.key] = ij
                    ac.add(f)

            submit_more()
            submit_more()
            done = 0
            for fut in ac:
                i, j = pending.pop(fut.key)
                blocks = fut.result()
                fut.release()
                done += 1
                put(i, j, blocks, done)
                del blocks
                if len(pending) <= limit - group:
                    submit_more()
        return [t.finish() for t in targets]
    except BaseException:
        for t in targets:
            t.abort()
        raise


def write_blocks(
    path: Path | str,
    data: Any,
    grid: Grid,
    *,
    nodata: float | int | None = None,
    dtype: str | np.dtype = "float32",
    band_names: Sequence[str] | None = None,
    tags: Mapping[str, Any] | None = None,
    cog: bool = False,
    client: Any = None,
    progress: ProgressFn | None = None,
    chunk: int | tuple[int, int] | None = None,
) -> Path:
    """Write one (chunked) array to a tiled, deflate-compressed GeoTIFF block by block.

    Parameters
    ----------
    path : path-like
    data : ndarray or dask.array, shape (rows, cols) or (bands, rows, cols)
        NaN is written as ``nodata`` (NaN for float outputs by default).
    grid : Grid
    nodata, dtype, band_names, tags
        As :func:`npp_core.raster.write_raster` (dates in band names also become ``DATE`` tags).
    cog : bool
        Convert to a Cloud-Optimized GeoTIFF afterwards (``rasterio.shutil.copy(driver="COG")``).
    client : dask.distributed.Client, optional
    progress : callable(fraction, message), optional
    chunk : int or (int, int), optional
        Block side(s); default the array's own blocks (numpy input: 1024).

    Returns
    -------
    Path
    """
    opts = {"nodata": nodata, "dtype": dtype, "band_names": band_names, "tags": tags, "cog": cog}
    return write_many([(path, data, opts)], grid, client=client, progress=progress, chunk=chunk)[0]


# --------------------------------------------------------------------------- driver-side helpers
def windows(shape: tuple[int, int], chunk: int | tuple[int, int]) -> Iterator[tuple[int, int, int, int]]:
    """Row-major blocks ``(row0, row1, col0, col1)`` tiling a raster of ``shape``.

    Parameters
    ----------
    shape : (rows, cols)
    chunk : int or (int, int)
        Block side(s) in pixels.

    Yields
    ------
    (int, int, int, int)
        Half-open row and column ranges.
    """
    for b in plan_blocks(shape, chunk):
        yield b.row0, b.row1, b.col0, b.col1


def read_window(path: Path | str, r0: int, r1: int, c0: int, c1: int,
                bands: Sequence[int] | None = None) -> np.ndarray:
    """Rows ``r0:r1``, columns ``c0:c1`` of a GeoTIFF as float64 with NaN for nodata.

    Parameters
    ----------
    path : path-like
    r0, r1, c0, c1 : int
        Half-open window in pixels.
    bands : sequence of int, optional
        1-based bands; default all.

    Returns
    -------
    ndarray, shape (bands, r1 - r0, c1 - c0), float64
        The values :func:`npp_core.raster.read_raster` gives for that window.
    """
    with rasterio.open(path) as ds:
        idx = list(bands) if bands is not None else list(range(1, ds.count + 1))
        nd = ds.nodata
        shape = (len(idx), ds.height, ds.width)
    return _WindowReader(str(path), idx, shape, nd)[:, r0:r1, c0:c1]


def values_at(path: Path | str, rows: np.ndarray, cols: np.ndarray, *, chunk: int = 1024,
              bands: Sequence[int] | None = None) -> np.ndarray:
    """Values of a GeoTIFF at pixels, read window by window (never the whole raster).

    Parameters
    ----------
    path : path-like
    rows, cols : array of int, shape (n,)
        Pixel indices.
    chunk : int
        Side of the windows read (only windows holding a pixel are read).
    bands : sequence of int, optional
        1-based bands; default all.

    Returns
    -------
    ndarray, shape (bands, n), float64
        NaN where the file has nodata.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    with rasterio.open(path) as ds:
        idx = list(bands) if bands is not None else list(range(1, ds.count + 1))
        h, w = ds.height, ds.width
    if rows.size and (rows.min() < 0 or cols.min() < 0 or rows.max() >= h or cols.max() >= w):
        raise ChunkedError(f"{Path(path).name}: pixel indices outside the {h} × {w} raster.")
    out = np.full((len(idx), rows.size), np.nan)
    key = (rows // chunk) * ((w + chunk - 1) // chunk) + cols // chunk
    for k in np.unique(key):
        sel = np.flatnonzero(key == k)
        r, c = rows[sel], cols[sel]
        r0, c0 = int(r.min()), int(c.min())
        blk = read_window(path, r0, int(r.max()) + 1, c0, int(c.max()) + 1, bands=idx)
        out[:, sel] = blk[:, r - r0, c - c0]
    return out


def _ld_block(*blocks: np.ndarray, names: tuple[str, ...], weights: np.ndarray, lo: np.ndarray,
              hi: np.ndarray, worse_low: tuple[bool, ...], capped: tuple[bool, ...], cap: float,
              raw: tuple[float, float] | None) -> np.ndarray:
    mask = blocks[-1].astype(bool)
    total = np.zeros(mask.shape)
    valid = mask.copy()
    for i in range(len(names)):
        v = np.asarray(blocks[i], dtype=np.float64)
        if capped[i]:
            v = np.minimum(v, cap)
        ok = mask & np.isfinite(v)
        s = (hi[i] - v) / (hi[i] - lo[i]) if worse_low[i] else (v - lo[i]) / (hi[i] - lo[i])
        total += weights[i] * np.where(ok, s, 0.0)
        valid &= ok
    if raw is None:  # first pass: the weighted sum (NaN where not every indicator is valid)
        return np.where(valid, total, np.nan)
    out = np.full(mask.shape, np.nan)
    out[valid] = (total[valid] - raw[0]) / (raw[1] - raw[0])
    return out


def degradation_chunked(
    indicators: Mapping[str, Any],
    weights: Mapping[str, float],
    mask: Any,
    *,
    direction: Mapping[str, str] | None = None,
    distance_keys: Sequence[str] = ("distance_to_mine",),
    influence_distance: float = 1500.0,
    chunk: int | tuple[int, int] = 1024,
) -> tuple[da.Array, dict[str, Any]]:
    """Land-degradation index (:func:`npp_core.ahp.degradation_index`) block by block.

    The min–max scaling needs global extremes, so the per-indicator minima/maxima
    (after capping distances) and then the extremes of the weighted sum are
    computed in two reduction passes first; each block then applies them.

    Parameters
    ----------
    indicators : mapping name -> array (rows, cols), numpy or dask
        Indicator rasters on the grid (NaN = nodata), distances in m.
    weights : mapping name -> float
        AHP weights (renormalised to sum 1).
    mask : bool array (rows, cols)
        Study area.
    direction, distance_keys, influence_distance
        As :func:`npp_core.ahp.degradation_index`.
    chunk : int or (int, int)

    Returns
    -------
    ld : dask.array, shape (rows, cols), float64
        In [0, 1]; NaN where any indicator is NaN or outside ``mask``.
    info : dict
        As :func:`npp_core.ahp.degradation_index`.
    """
    from .ahp import AhpError

    names = list(indicators)
    if not names:
        raise AhpError("no degradation indicators given; list them in [degradation.indicators]")
    if set(names) != set(weights):
        raise AhpError(
            f"AHP weights and LD indicators differ: no weight for {[k for k in names if k not in weights]}, "
            f"no raster for {[k for k in weights if k not in indicators]}; the AHP matrix header must name "
            "exactly the indicators"
        )
    direction = dict(direction or {})
    w = np.array([float(weights[k]) for k in names])
    if np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise AhpError(f"AHP weights must be non-negative with a positive sum (got {dict(zip(names, w))})")
    w = w / w.sum()
    dist = set(distance_keys)
    md = as_dask(mask, chunk).astype(bool)
    arrs = [as_dask(indicators[k], chunk).astype(np.float64).rechunk(md.chunks) for k in names]
    capped_v = [da.minimum(a, influence_distance) if k in dist else a for k, a in zip(names, arrs)]
    red = []
    for v in capped_v:
        ok = md & da.isfinite(v)
        red += [ok.any(), da.where(ok, v, np.inf).min(), da.where(ok, v, -np.inf).max()]
    vals = dask.compute(*red)
    lo, hi = np.empty(len(names)), np.empty(len(names))
    info: dict[str, Any] = {"weights": dict(zip(names, w.tolist())), "direction": {}, "min": {}, "max": {},
                            "capped": [k for k in names if k in dist], "influence_distance": float(influence_distance)}
    worse_low = []
    for i, k in enumerate(names):
        anyok, lo[i], hi[i] = bool(vals[3 * i]), float(vals[3 * i + 1]), float(vals[3 * i + 2])
        if not anyok:
            raise AhpError(f"indicator {k!r} has no valid pixel inside the study area; check its nodata value")
        if not hi[i] > lo[i]:
            raise AhpError(f"indicator {k!r} has no variance (all valid pixels = {lo[i]:g}); it cannot be min–max "
                           "scaled — remove it from the AHP matrix or fix the raster")
        d = direction.get(k, "lower_is_worse" if k in dist else "higher_is_worse")
        info["direction"][k] = d
        info["min"][k], info["max"][k] = float(lo[i]), float(hi[i])
        worse_low.append(d == "lower_is_worse")
    kw = dict(names=tuple(names), weights=w, lo=lo, hi=hi, worse_low=tuple(worse_low),
              capped=tuple(k in dist for k in names), cap=float(influence_distance))
    total = da.map_blocks(_ld_block, *arrs, md, dtype=np.float64, raw=None, **kw)
    fin = da.isfinite(total)
    n_valid, rlo, rhi = dask.compute(fin.sum(), da.where(fin, total, np.inf).min(), da.where(fin, total, -np.inf).max())
    if int(n_valid) == 0:
        raise AhpError("no pixel has every LD indicator valid; check the indicators' nodata and extent")
    if not float(rhi) > float(rlo):
        raise AhpError("the weighted LD sum is constant over the study area (all weights on constant indicators?)")
    info.update(raw_min=float(rlo), raw_max=float(rhi), n_valid=int(n_valid))
    ld = da.map_blocks(_ld_block, *arrs, md, dtype=np.float64, raw=(float(rlo), float(rhi)), **kw)
    return ld, info


# --------------------------------------------------------------------------- ESTARFM fusion
def _estarfm_block(fb: np.ndarray, cb: np.ndarray, *, halo: int, fine_dates: tuple[Any, ...],
                   coarse_dates: tuple[Any, ...], kwargs: dict[str, Any], thresholds: dict[Any, np.ndarray],
                   threads: int | None, block_info: dict | None = None) -> np.ndarray:
    """:func:`npp_core.estarfm.fuse_series` on one halo-extended block, cropped to the block's core."""
    from .estarfm import fuse_series

    with _numba_threads(threads):
        out, _ = fuse_series(fb, list(fine_dates), cb, list(coarse_dates), thresholds=thresholds, **kwargs)
    # map_overlap(trim=False): the block carries a halo only on sides facing another block
    info = block_info[0]
    (_, li, lj), (_, ni, nj) = info["chunk-location"], info["num-chunks"]
    top = halo if li > 0 else 0
    bottom = fb.shape[1] - (halo if li < ni - 1 else 0)
    left = halo if lj > 0 else 0
    right = fb.shape[2] - (halo if lj < nj - 1 else 0)
    return out[:, top:bottom, left:right]


def _pair_thresholds(f1: da.Array, f2: da.Array, classes: int, names: tuple[str, str]) -> np.ndarray:
    """:func:`npp_core.estarfm.similarity_thresholds` of two lazy fine images, bit for bit.

    The values valid in both images are gathered in row-major order (whole-width row strips,
    computed strip by strip), then ``np.std(..., ddof=1)`` runs on exactly the arrays the
    in-memory code builds. Peak memory: two float64 values per pixel valid in both images
    (plus one temporary of ``np.std``), never a full image stack.
    """
    from .estarfm import EstarfmError

    rows = f1.shape[0]
    step = max(1, int(f1.chunks[0][0]))
    v1: list[np.ndarray] = []
    v2: list[np.ndarray] = []
    for r0 in range(0, rows, step):
        a, b = dask.compute(f1[r0:r0 + step], f2[r0:r0 + step])
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        ok = np.isfinite(a) & np.isfinite(b)
        v1.append(a[ok])
        v2.append(b[ok])
    x1, x2 = np.concatenate(v1), np.concatenate(v2)
    del v1, v2
    if x1.size < 2:
        raise EstarfmError(f"fine images {names[0]} / {names[1]}: fewer than two pixels are valid in both fine "
                           "images; nothing to fuse. Check their nodata values and the study area.")
    return np.asarray([np.std(x1, ddof=1) * 2.0 / classes, np.std(x2, ddof=1) * 2.0 / classes], dtype=np.float64)


def fuse_series_chunked(
    fine: Any,
    fine_dates: Sequence[Any],
    coarse: Any,
    coarse_dates: Sequence[Any],
    *,
    window: int = 51,
    classes: int = 4,
    valid_range: tuple[float, float] = (-1.0, 1.0),
    max_pair_gap_days: int = 8,
    extrapolate: bool = True,
    chunk: int | tuple[int, int] = 1024,
    threads: int | None = 1,
) -> tuple[da.Array, list[dict[str, Any]]]:
    """ESTARFM fusion of a coarse series (:func:`npp_core.estarfm.fuse_series`) block by block.

    Every block is fused with a halo of ``window // 2`` pixels (``dask.array.map_overlap``,
    ``boundary="none"``: true raster edges get no halo, and the kernel truncates its windows
    at the edges of the array it is given, which are then the raster edges) and with the
    similarity thresholds of the *whole* image for each fine pair, so every block uses the
    whole image's similar-pixel rule and reproduces the in-memory result.

    The thresholds (``std(image, ddof=1) · 2 / classes`` over the pixels valid in both fine
    images) are computed on this process before the fusion, one fine pair at a time: the
    values valid in both images are gathered strip by strip and ``np.std`` runs on them, so
    they equal the in-memory numbers bit for bit (a blockwise Dask reduction sums in another
    order and differs in the last bits, which can flip a similar-pixel test). This reads each
    fine image once per pair it belongs to and holds two float64 values per valid pixel.

    Parameters
    ----------
    fine : ndarray or dask.array, shape (n_fine, rows, cols)
        Fine images (e.g. Landsat NDVI), NaN = missing, n_fine >= 2.
    fine_dates : sequence of datetime.date, length n_fine
        Their dates (any order, no duplicates).
    coarse : ndarray or dask.array, shape (n_coarse, rows, cols)
        Coarse images resampled onto the fine grid, NaN = missing.
    coarse_dates : sequence of datetime.date, length n_coarse
        Their dates (any order, no duplicates).
    window, classes, valid_range, max_pair_gap_days, extrapolate
        As :func:`npp_core.estarfm.fuse_series` (window in fine pixels, odd >= 3).
    chunk : int or (int, int)
        Core block side(s) in pixels; a last block shorter than the halo joins its neighbour.
    threads : int or None
        numba threads per block (1: blocks run in parallel instead; None: numba's default).

    Returns
    -------
    fused : dask.array, shape (n_coarse, rows, cols), float64
        Predicted fine images in the order of ``coarse_dates``; NaN where undefined. One
        spatial chunk per block, all dates in each.
    info : list of dict, one per coarse date (same order)
        ``{"date": date, "pair": [d1, d2], "extrapolated": bool}`` as
        :func:`npp_core.estarfm.fuse_series`, but *without* ``"nodata_pixels"`` (it would need
        a pass over the result: count NaN in ``fused`` or in the written file if needed).

    Raises
    ------
    EstarfmError
        As :func:`npp_core.estarfm.fuse_series` for the settings, shapes and dates (checked
        here before any block runs). The check that the values lie in ``valid_range`` (wrong
        units) runs per block, on the block's values.

    Notes
    -----
    Numerics: equal to the in-memory :func:`~npp_core.estarfm.fuse_series` to the last bit
    (the kernel's arithmetic for a pixel depends only on its window and the thresholds).
    """
    from . import estarfm as E

    w, _, _ = E._check_settings(window, classes, valid_range)
    fd_ = fine if isinstance(fine, da.Array) else da.from_array(np.asarray(fine), chunks=-1)
    cd_ = coarse if isinstance(coarse, da.Array) else da.from_array(np.asarray(coarse), chunks=-1)
    if fd_.ndim != 3 or cd_.ndim != 3:
        raise E.EstarfmError(
            f"fine {fd_.shape} / coarse {cd_.shape}: expected (n, rows, cols) stacks of single-band images "
            "(fuse several bands in memory with estarfm.fuse_series)."
        )
    if fd_.shape[0] < 2:
        raise E.EstarfmError(f"fine: {fd_.shape[0]} fine image(s); ESTARFM needs at least two fine dates (a pair).")
    if fd_.shape[1:] != cd_.shape[1:]:
        raise E.EstarfmError(
            f"fine images {fd_.shape[1:]} and coarse images {cd_.shape[1:]} differ in shape: resample the coarse "
            "series onto the fine grid first."
        )
    fd = E._check_dates("fine_dates", fine_dates, fd_.shape[0])
    cdates = E._check_dates("coarse_dates", coarse_dates, cd_.shape[0])
    _, groups, info = E._plan_series(fd, cdates, max_pair_gap_days, extrapolate)

    depth = w // 2
    rows, cols = fd_.shape[1:]
    ch = (chunk, chunk) if np.isscalar(chunk) else tuple(chunk)
    spatial = (_split(rows, int(ch[0]), depth), _split(cols, int(ch[1]), depth))
    fd_ = fd_.astype(np.float64).rechunk(((fd_.shape[0],),) + spatial)
    cd_ = cd_.astype(np.float64).rechunk(((cd_.shape[0],),) + spatial)

    thresholds: dict[Any, np.ndarray] = {}
    for i1, i2 in sorted(groups, key=lambda k: fd[k[0]]):
        names = (fd[i1].isoformat(), fd[i2].isoformat())
        thresholds[(fd[i1], fd[i2])] = _pair_thresholds(fd_[i1], fd_[i2], int(classes), names)

    kwargs = dict(window=w, classes=int(classes), valid_range=tuple(float(v) for v in valid_range),
                  max_pair_gap_days=int(max_pair_gap_days), extrapolate=bool(extrapolate))
    fused = da.map_overlap(
        _estarfm_block, fd_, cd_,
        depth={0: 0, 1: depth, 2: depth}, boundary="none", trim=False, align_arrays=False, allow_rechunk=False,
        chunks=((cd_.shape[0],),) + spatial, dtype=np.float64, meta=np.empty((0, 0, 0), dtype=np.float64),
        halo=depth, fine_dates=tuple(fd), coarse_dates=tuple(cdates), kwargs=kwargs, thresholds=thresholds,
        threads=threads,
    )
    return fused, [dict(r) for r in info]


__all__.append("fuse_series_chunked")
