"""Driver-side memory of chunked runs (issue #9): what stays in the process running the command.

The study-area mask and the land-cover codes are the only full-size arrays a chunked run keeps in
the driver; they must be compact (bool / int16), never the float64 land cover. Sampling and the
noise-floor pixels are drawn without a full-size index array. Every helper is also checked
against a brute-force reference written here (same points, same codes, same counts).
"""
from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from npp_core import attribution
from npp_core.dataset import open_dataset
from npp_core.raster import Grid, write_raster
from npp_core.stages import _code_counts, _nth_valid, _sample_points

UTM = CRS.from_epsg(32649)
ROWS, COLS = 1000, 1000
NPX = ROWS * COLS


def _landcover(rng: np.random.Generator) -> np.ndarray:
    """Codes 0 (nodata) … 6; 5 is not a declared class, 6 is declared; 4 % nodata."""
    codes = rng.choice(np.array([1, 2, 3, 5, 6], dtype=np.uint8), size=(ROWS, COLS), p=[0.4, 0.3, 0.2, 0.05, 0.05])
    codes[rng.random((ROWS, COLS)) < 0.04] = 0
    codes[:7, :] = 0  # a nodata band along the top edge
    return codes


@pytest.fixture(scope="module")
def lc_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("lcmem")
    codes = _landcover(np.random.default_rng(9))
    g = Grid(UTM, Affine(30.0, 0, 600_000.0, 0, -30.0, 4_200_000.0), COLS, ROWS)
    write_raster(root / "landcover.tif", codes, g, dtype="uint8", nodata=0)
    (root / "dataset.toml").write_text(
        'name = "mem"\n[landcover]\nraster = "landcover.tif"\n'
        '[landcover.classes]\n1 = "forest"\n2 = "grass"\n3 = "crop"\n6 = "water"\n'
        '[landcover.casa_type]\nforest = "mixed_forest"\ngrass = "grassland"\ncrop = "cropland"\nwater = "none"\n')
    return root, codes


def _full_size_arrays(obj: object, found: list[np.ndarray]) -> list[np.ndarray]:
    if isinstance(obj, np.ndarray):
        if obj.size >= NPX:
            found.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _full_size_arrays(v, found)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _full_size_arrays(v, found)
    return found


def test_mask_and_codes_are_compact_and_exact(lc_dataset: tuple[Path, np.ndarray]) -> None:
    root, raw = lc_dataset
    with open_dataset(root) as ds:
        tracemalloc.start()
        try:
            mask = ds.mask
            codes, classes, casa_type = ds.landcover()
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # nothing full-size in the dataset's memo is wider than 2 bytes (old code kept the float64 land cover)
        big = _full_size_arrays(list(ds._cache.values()), [])
        assert big, "the land-cover codes are memoised"
        assert all(a.dtype.itemsize <= 2 for a in big), [a.dtype for a in big]
        # mask (1) + codes (2) + the scan's ok (1) and codes (2): 6 bytes per pixel; the float64 land cover alone is 8
        assert held < 7.0 * NPX, held / NPX
        problems = [str(p) for p in ds.check(["casa"])]
    # brute force: mask = valid declared class; codes = class or -1
    declared = np.isin(raw, [1, 2, 3, 6])
    np.testing.assert_array_equal(mask, declared)
    assert mask.dtype == bool and codes.dtype == np.int16
    np.testing.assert_array_equal(codes, np.where(declared, raw.astype(np.int64), -1))
    assert classes == {1: "forest", 2: "grass", 3: "crop", 6: "water"}
    assert casa_type["water"] == "none"
    share = 100.0 * np.count_nonzero(raw == 5) / np.count_nonzero(raw != 0)
    assert any(f"codes [5] are not in [landcover.classes] ({share:.1f}% of pixels)" in p for p in problems), problems


def _reference_points(valid: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    flat = np.flatnonzero(valid.ravel())
    chosen = flat if flat.size <= n else np.sort(np.random.default_rng(seed).choice(flat, size=n, replace=False))
    r, c = np.unravel_index(chosen, valid.shape)
    return r.astype(np.int64), c.astype(np.int64)


@pytest.mark.parametrize("share, n, seed", [(0.6, 1000, 42), (0.002, 1000, 7), (0.00005, 1000, 3), (1.0, 25, 0)])
def test_sample_points_equal_reference(share: float, n: int, seed: int) -> None:
    valid = np.random.default_rng(seed + 1).random((300, 257)) < share
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if np.count_nonzero(valid) < attribution.MIN_SAMPLES:
            with pytest.raises(attribution.AttributionError):
                _sample_points(valid, n, seed)
            return
        rows, cols = _sample_points(valid, n, seed)
        same = attribution.sample_points(valid, n=n, seed=seed)
    ref = _reference_points(valid, n, seed)
    np.testing.assert_array_equal(rows, ref[0])
    np.testing.assert_array_equal(cols, ref[1])
    np.testing.assert_array_equal(rows, same[0])
    np.testing.assert_array_equal(cols, same[1])
    assert rows.dtype == np.int64 and cols.dtype == np.int64
    assert valid[rows, cols].all()


def test_nth_valid_matches_flat_index() -> None:
    rng = np.random.default_rng(4)
    valid = rng.random((123, 77)) < 0.3
    valid[5] = False  # an empty row
    flat = np.flatnonzero(valid)
    idx = np.sort(rng.choice(flat.size, 400, replace=False))
    idx[0], idx[-1] = 0, flat.size - 1
    idx = np.unique(idx)
    r, c = _nth_valid(valid, idx)
    rr, cc = np.unravel_index(flat[idx], valid.shape)
    np.testing.assert_array_equal(r, rr)
    np.testing.assert_array_equal(c, cc)
    # the attribution noise pixels: the draw from n equals the draw from np.arange(n)
    idx2 = attribution.noise_pixel_index(np.arange(flat.size), 300, 11)
    mine = np.sort(np.random.default_rng(11).choice(flat.size, size=300, replace=False))
    np.testing.assert_array_equal(idx2, mine)


def test_sampling_has_no_full_size_index() -> None:
    valid = np.ones((ROWS, COLS), dtype=bool)
    valid[::3, ::2] = False
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        rows, cols = _sample_points(valid, 1000, 42)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows.size == 1000
    # np.flatnonzero of the valid pixels alone would be 8 bytes per valid pixel (~5.3 MB here)
    assert peak < 1.0 * NPX, peak / NPX


def test_code_counts_equal_bincount() -> None:
    codes = np.random.default_rng(2).integers(-1, 12, size=(2100, 613)).astype(np.int16)
    ref = np.bincount(codes[codes >= 0].ravel().astype(np.int64), minlength=5)
    np.testing.assert_array_equal(_code_counts(codes, 5), ref)
    np.testing.assert_array_equal(_code_counts(codes, 20), np.bincount(codes[codes >= 0].ravel(), minlength=20))
    assert _code_counts(np.full((3, 4), -1, dtype=np.int16), 3).tolist() == [0, 0, 0]


def _grid(rows: int, cols: int) -> Grid:
    return Grid(UTM, Affine(30.0, 0, 600_000.0, 0, -30.0, 4_200_000.0), cols, rows)


def _cache_in_force() -> int:
    from rasterio.env import get_gdal_config

    v = int(get_gdal_config("GDAL_CACHEMAX"))
    return v << 20 if v < 100_000 else v


def _gdal_cache_max() -> int | None:
    """GDAL's effective block-cache size (GDALGetCacheMax64 of the libgdal rasterio loaded), None if not found."""
    import ctypes
    import glob

    import rasterio

    libs = glob.glob(str(Path(rasterio.__file__).parents[1] / "rasterio.libs" / "libgdal*"))
    if not libs:
        return None
    lib = ctypes.CDLL(libs[0])
    lib.GDALGetCacheMax64.restype = ctypes.c_int64
    return int(lib.GDALGetCacheMax64())


@pytest.mark.parametrize("chunks, tile", [
    (((1024, 1024, 500), (1024, 300)), 256),     # run.chunk 1024: 256-px tiles are aligned
    (((1200, 1200, 7), (1200, 1200)), 240),      # 1200 = 5 × 240
    (((320, 320, 320), (320,)), 160),            # 256 does not divide 320; 160 does
    (((256, 256, 256, 20), (300,)), 256),        # one column block, short last row block
    (((1000, 1000), (1000, 1000)), None),        # 1000 = 8 × 125: no multiple of 16 ≥ 64 divides it
    (((200, 200, 1), (200,)), None),
    (((1024, 1000, 24), (1024,)), None),         # irregular blocks: offset 2024 is not a multiple of 16 × 4
    (((700,), (650,)), 256),                     # a single block: any tile
    (((2048, 2048), (4096 + 64, 10)), 64),       # gcd(2048, 4160) = 64
])
def test_aligned_tile(chunks: tuple, tile: int | None) -> None:
    from npp_core import chunked

    assert chunked._aligned_tile(chunks) == tile
    if tile is not None:  # brute force: every block offset is a multiple of the tile
        assert tile % 16 == 0 and 64 <= tile <= 256
        for ax in chunks:
            assert all(int(o) % tile == 0 for o in np.cumsum(ax)[:-1])


def test_write_cache_bound_aligned_is_independent_of_area() -> None:
    from npp_core import chunked

    before = _cache_in_force()
    # aligned: 4 tiles of all outputs, at least 32 MiB — whatever the grid and the block size
    for g in (_grid(1000, 1000), _grid(4000, 4000), _grid(100_000, 100_000)):
        assert chunked._write_cache_bytes(g, 1024, 113, 256, aligned=True) == min(32 << 20, before)
        assert chunked._write_cache_bytes(g, 4096, 500, 256, aligned=True) == min(4 * 256 * 256 * 500, before)
        assert chunked._write_cache_bytes(g, 1200, 500, 240, aligned=True) == min(4 * 240 * 240 * 500, before)
    # not aligned: the row bound, growing with the width (not the height)
    row = (1024 + 512) * 4000 * 113 + (32 << 20)
    assert chunked._write_cache_bytes(_grid(4000, 4000), 1024, 113) == min(row, before)
    assert chunked._write_cache_bytes(_grid(40_000, 4000), 1024, 113) == min(row, before)
    assert chunked._write_cache_bytes(_grid(1000, 40_000), 1024, 113) == min(10 * row - 9 * (32 << 20), before)


@pytest.mark.parametrize("chunk, tile, aligned", [(256, 256, True), (240, 240, True), (200, 256, False)])
def test_write_many_bounds_gdal_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, tile: int,
                                      aligned: bool) -> None:
    """GDAL keeps partially written tiles in its block cache until a file closes; write_many aligns the
    output tiles with its blocks when it can (then a few tiles of cache suffice), else bounds the cache
    by one row of blocks."""
    import dask.array as da
    import rasterio

    from npp_core import chunked

    before = _cache_in_force()
    # bytes per pixel: 4 bands × float32 + a uint8 file = 17
    if aligned:
        want = min(max(4 * tile * tile * 17, 32 << 20), before)
    else:
        want = min((chunk + 2 * 256) * 300 * 17 + (32 << 20), before)
    seen: list[int] = []
    effective: set[int | None] = set()
    write = chunked._Target.write

    def spy(self: Any, r0: int, c0: int, block: np.ndarray) -> None:
        seen.append(_cache_in_force())
        effective.add(_gdal_cache_max())  # the config option reaches GDAL's cache (process-wide)
        write(self, r0, c0, block)

    monkeypatch.setattr(chunked._Target, "write", spy)
    g = _grid(1300, 300)
    x = np.random.default_rng(3).random((4, 1300, 300))
    x[1, 5:9, 7:50] = np.nan
    cls = (x[0] * 5).astype(np.uint8) + 1
    chunked.write_many([(tmp_path / "a.tif", da.from_array(x, chunks=(4, 256, 256)), {}),
                        (tmp_path / "c.tif", cls, {"dtype": "uint8", "nodata": 0})], g, chunk=chunk)
    assert seen and set(seen) == {want}
    assert effective in ({want}, {None})
    assert _cache_in_force() == before  # restored
    with rasterio.open(tmp_path / "a.tif") as src:
        np.testing.assert_array_equal(src.read(), x.astype(np.float32))
        assert src.block_shapes[0] == (tile, tile)
    with rasterio.open(tmp_path / "c.tif") as src:
        np.testing.assert_array_equal(src.read(1), cls)
        assert src.block_shapes[0] == (tile, tile)


def test_write_many_strips_use_the_row_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A grid lower than a tile is stored in whole-width strips: blocks of 256 columns never complete a strip
    alone, so the row bound applies even though the block offsets are multiples of 256."""
    import rasterio

    from npp_core import chunked

    seen: list[int] = []
    write = chunked._Target.write

    def spy(self: Any, r0: int, c0: int, block: np.ndarray) -> None:
        seen.append(_cache_in_force())
        write(self, r0, c0, block)

    monkeypatch.setattr(chunked._Target, "write", spy)
    x = _smooth(2, 100, 1100)
    chunked.write_many([(tmp_path / "s.tif", x, {})], _grid(100, 1100), chunk=256)
    assert set(seen) == {min((100 + 512) * 1100 * 8 + (32 << 20), _cache_in_force())}
    with rasterio.open(tmp_path / "s.tif") as src:
        assert src.block_shapes[0][1] == 1100  # strips
        np.testing.assert_array_equal(src.read(), x.astype(np.float32))


def _smooth(bands: int, rows: int, cols: int) -> np.ndarray:
    r = np.arange(rows)[:, None]
    c = np.arange(cols)[None, :]
    return np.stack([np.sin(r / 9.0 + b) + np.cos(c / 13.0) + ((r * 7 + c * 3) % 5) * 0.01 for b in range(bands)])


@pytest.mark.parametrize("chunk, tile", [(128, 128), (240, 240), (100, 256)])
def test_write_many_small_cache_equals_write_raster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    chunk: int, tile: int) -> None:
    """Values, nodata, band names and masks of write_many under a 1 MiB GDAL cache (tiles flushed as soon as
    possible) equal write_raster of the same numpy data; aligned blocks store every tile once, so the file is
    no larger than under an unbounded cache."""
    import dask.array as da
    import rasterio

    from npp_core import chunked

    rows, cols = 730, 610
    g = _grid(rows, cols)
    x = _smooth(6, rows, cols)
    x[2, 100:140, 33:400] = np.nan
    x[:, 700:, :20] = np.nan
    y = x[0] * 10
    cls = np.where(np.isnan(x[2]), 0, (x[1] > 0).astype(np.uint8) + 1).astype(np.uint8)
    valid = ~np.isnan(x[2])
    names = [f"2020-{m:02d}" for m in range(1, 7)]

    def run(out: Path) -> list[Path]:
        out.mkdir()
        return chunked.write_many(
            [(out / "m.tif", da.from_array(x, chunks=(6, 256, 256)), {"band_names": names}),
             (out / "y.tif", da.from_array(y, chunks=(300, 300)), {"nodata": -9999.0}),
             (out / "c.tif", cls, {"dtype": "uint8", "nodata": 0, "mask": valid})], g, chunk=chunk)

    big = run(tmp_path / "big")
    monkeypatch.setattr(chunked, "_write_cache_bytes", lambda *a, **k: 1 << 20)
    small = run(tmp_path / "small")
    ref = tmp_path / "ref"
    ref.mkdir()
    write_raster(ref / "m.tif", x, g, band_names=names)
    write_raster(ref / "y.tif", y, g, nodata=-9999.0)
    write_raster(ref / "c.tif", cls, g, dtype="uint8", nodata=0, mask=valid)
    for p_small, p_big in zip(small, big):
        with rasterio.open(p_small) as a, rasterio.open(ref / p_small.name) as b:
            np.testing.assert_array_equal(a.read(), b.read())
            assert a.nodata == b.nodata or (np.isnan(a.nodata) and np.isnan(b.nodata))
            assert a.descriptions == b.descriptions
            assert [a.tags(k + 1).get("DATE") for k in range(a.count)] == [b.tags(k + 1).get("DATE") for k in range(b.count)]
            np.testing.assert_array_equal(a.dataset_mask(), b.dataset_mask())
            assert a.block_shapes[0] == (tile, tile)
        if tile == chunk:  # aligned: no tile is stored twice (a tile flushed half-written and stored again
            # makes the file 1.5–3 × larger here; the order tiles reach the file may differ by a few bytes)
            assert p_small.stat().st_size <= 1.01 * p_big.stat().st_size, (
                p_small.name, p_small.stat().st_size, p_big.stat().st_size)
    with rasterio.open(small[0]) as a:
        assert a.descriptions == tuple(names)
        np.testing.assert_array_equal(np.isnan(a.read(3)), np.isnan(x[2]))
    with rasterio.open(small[2]) as a:
        np.testing.assert_array_equal(a.dataset_mask() > 0, valid)


# --------------------------------------------------------------------------- land-cover scan in strips
def _scan_equal(a: tuple, b: tuple) -> None:
    (sa, pa, ia), (sb, pb, ib) = a, b
    assert (sa is None) == (sb is None)
    if sa is not None:
        assert set(sa) == set(sb)
        for k in sa:
            if isinstance(sa[k], np.ndarray):
                assert sa[k].dtype == sb[k].dtype, k
                np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
            else:
                assert sa[k] == sb[k], k
    assert [str(p) for p in pa] == [str(p) for p in pb]
    assert ia == ib


def _lc_root(root: Path, manifest_extra: str, lc_entry: str = '"landcover.tif"') -> Path:
    (root / "dataset.toml").write_text(
        f'name = "strips"\n{manifest_extra}[landcover]\nraster = {lc_entry}\n'
        '[landcover.classes]\n1 = "forest"\n2 = "grass"\n3 = "crop"\n6 = "water"\n'
        '[landcover.casa_type]\nforest = "mixed_forest"\ngrass = "grassland"\ncrop = "cropland"\nwater = "none"\n')
    return root


def test_landcover_strip_scan_same_grid_is_exact_and_small(lc_dataset: tuple[Path, np.ndarray],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from npp_core import dataset as D

    root, raw = lc_dataset
    monkeypatch.setattr(D, "_scan_step", lambda width: 20)  # strips of 20 rows (2 % of the grid)
    with open_dataset(root) as ds:
        ds.grid  # noqa: B018
        assert ds._landcover_strip_plan() is not None
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            new = ds._landcover_scan()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        old = ds._landcover_scan_whole()
    _scan_equal(new, old)
    # kept: ok (1) + codes (2) bytes per pixel, + ~1.2 for one strip's temporaries (measured 4.2); the
    # whole-grid scan peaks at ~12 (the float64 land cover alone is 8)
    assert peak < 5.5 * NPX, peak / NPX
    declared = np.isin(raw, [1, 2, 3, 6])
    np.testing.assert_array_equal(new[0]["ok"], declared)
    assert new[0]["present"] == [1, 2, 3, 5, 6]
    assert new[0]["counts"] == [int(np.count_nonzero(raw == k)) for k in (1, 2, 3, 5, 6)]
    assert new[0]["n_finite"] == int(np.count_nonzero(raw != 0))


def test_landcover_strip_scan_other_crs_equals_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A float land cover on WGS84 at another resolution, 2 bands, ±inf values, nodata, undeclared codes and
    partial coverage: the strip scan (nearest warps of whole-width strips) equals the whole-grid scan, with the
    same problems (infinite values, coverage, extra band) and info."""
    from rasterio.warp import transform_bounds

    from npp_core import dataset as D

    monkeypatch.setattr(D, "_scan_step", lambda width: 37)
    g = _grid(300, 280)
    write_raster(tmp_path / "ref.tif", np.zeros((300, 280), np.uint8), g, dtype="uint8", nodata=255)
    x0, y0, x1, y1 = transform_bounds(g.crs, "EPSG:4326", *g.bounds, densify_pts=21)
    res = (x1 - x0) / 230.0  # coarser than the grid in x
    lg = Grid(CRS.from_epsg(4326), Affine(res, 0, x0 + 0.08 * (x1 - x0), 0, -res * 0.8, y1 + 0.02 * (y1 - y0)),
              260, 330)
    rng = np.random.default_rng(5)
    codes = rng.choice(np.array([1, 2, 3, 5, 6], dtype=np.float32), size=(2, 330, 260))
    codes[0, rng.random((330, 260)) < 0.05] = 0
    codes[0, 40:43, 10:200] = np.inf
    codes[1, 5, 5] = -np.inf
    write_raster(tmp_path / "landcover.tif", codes, lg, dtype="float32", nodata=0)
    root = _lc_root(tmp_path, 'grid = "ref.tif"\n')
    with open_dataset(root) as ds:
        assert ds._landcover_strip_plan() is not None
        new = ds._landcover_scan()
        old = ds._landcover_scan_whole()
    _scan_equal(new, old)
    text = " ".join(str(p) for p in new[1])
    assert "571 value(s) are infinite" in text and "covers only" in text and "has 2 bands" in text, text
    assert new[2]["resampling"] == ["nearest"]
    assert 0 < new[0]["ok"].sum() < 0.95 * g.width * g.height


@pytest.mark.parametrize("case", ["shifted", "no_crs", "scaled", "crs_override"])
def test_landcover_strip_scan_shift_and_crs_cases(tmp_path: Path, case: str) -> None:
    g = _grid(210, 190)
    write_raster(tmp_path / "ref.tif", np.zeros((210, 190), np.uint8), g, dtype="uint8", nodata=255)
    rng = np.random.default_rng(8)
    codes = rng.choice(np.array([0, 1, 2, 3, 5], dtype=np.uint8), size=(260, 250))
    entry = '"landcover.tif"'
    if case == "shifted":  # larger extent, whole-pixel offset: pasted (clip window), no resampling
        lg = Grid(UTM, Affine(30.0, 0, 600_000.0 - 30 * 17, 0, -30.0, 4_200_000.0 + 30 * 9), 250, 260)
        write_raster(tmp_path / "landcover.tif", codes, lg, dtype="uint8", nodata=0)
    elif case == "no_crs":  # no CRS, on the grid's pixels: the grid's CRS is assumed (a warning)
        import rasterio

        with rasterio.open(tmp_path / "landcover.tif", "w", driver="GTiff", width=190, height=210, count=1,
                           dtype="uint8", nodata=0, transform=g.transform) as dst:
            dst.write(codes[:210, :190], 1)
    elif case == "scaled":  # manifest scale/offset and a manifest CRS equal to the file's
        write_raster(tmp_path / "landcover.tif", codes[:210, :190], g, dtype="uint8", nodata=0)
        entry = '{ path = "landcover.tif", scale = 1.0, offset = 1.0, crs = "EPSG:32649" }'
    else:  # the file says another CRS; the manifest's wins (a warning)
        g50 = Grid(CRS.from_epsg(32650), g.transform, g.width, g.height)
        write_raster(tmp_path / "landcover.tif", codes[:210, :190], g50, dtype="uint8", nodata=0)
        entry = '{ path = "landcover.tif", crs = "EPSG:32649" }'
    root = _lc_root(tmp_path, 'grid = "ref.tif"\n', entry)
    with open_dataset(root) as ds:
        assert ds._landcover_strip_plan() is not None
        new = ds._landcover_scan()
        old = ds._landcover_scan_whole()
    _scan_equal(new, old)
    if case == "shifted":
        part = codes[9:219, 17:207].astype(np.int64)
        np.testing.assert_array_equal(new[0]["codes"], np.where(np.isin(part, [1, 2, 3]), part, -1))
        assert new[2]["resampling"] == ["none"]
    if case == "no_crs":
        assert any("the file has no CRS" in str(p) for p in new[1])
    if case == "scaled":
        assert new[0]["present"] == [2, 3, 4, 6]  # codes + 1; nodata (0) stays nodata
    if case == "crs_override":
        assert any("the manifest's is used" in str(p) for p in new[1])
        assert new[2]["resampling"] == ["none"]


def test_chunked_stages_bound_gdals_cache_but_not_the_writers_row_bound(tmp_path):
    """Chunked stages run with GDAL's block cache at RUN_CACHE_BYTES (its default, 5 % of RAM, filled
    with the tiles of files kept open as blocks are read); write_many inside still sizes an unaligned
    row bound against the setting in force outside, and the setting comes back afterwards."""
    from rasterio.env import get_gdal_config

    from npp_core import chunked, stages

    g = Grid(UTM, Affine(30.0, 0, 600_000.0, 0, -30.0, 4_200_000.0), 40_000, 40_000)
    outside = get_gdal_config("GDAL_CACHEMAX")
    row_bound = chunked._write_cache_bytes(g, 1000, 100)
    seen: dict[str, Any] = {}

    @stages._bounded_cache
    def stage(ctx: Any) -> str:
        seen["cache"] = int(get_gdal_config("GDAL_CACHEMAX"))
        seen["row"] = chunked._write_cache_bytes(g, 1000, 100)
        return "done"

    assert stage(None) == "done"
    assert seen["cache"] == chunked.RUN_CACHE_BYTES == 128 << 20
    assert seen["row"] == row_bound > chunked.RUN_CACHE_BYTES  # ~ (1000 + 512) × 40 000 × 100 B, not capped
    assert get_gdal_config("GDAL_CACHEMAX") == outside
