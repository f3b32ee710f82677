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


def test_write_many_bounds_gdal_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GDAL keeps written tiles in its block cache until a file closes; write_many bounds that cache
    by the grid's width (two block rows), so the writing process does not hold the whole output."""
    import dask.array as da
    import rasterio
    from rasterio.env import get_gdal_config

    from npp_core import chunked

    def grid(rows: int, cols: int) -> Grid:
        return Grid(UTM, Affine(30.0, 0, 600_000.0, 0, -30.0, 4_200_000.0), cols, rows)

    before = int(get_gdal_config("GDAL_CACHEMAX"))
    # bytes per pixel 4 bands × float32 + a uint8 file = 17: (256 + 2 × 256) rows × 300 cols × 17 + 32 MiB
    need = (256 + 512) * 300 * 17 + (32 << 20)
    assert chunked._write_cache_bytes(grid(2000, 300), 256, 17) == min(need, before)
    # a 100 × taller area needs the same bound (width, not area); never above the cache in force
    assert chunked._write_cache_bytes(grid(200_000, 300), 256, 17) == min(need, before)
    assert chunked._write_cache_bytes(grid(1000, 10**7), 1024, 100) == before
    seen: list[int] = []
    write = chunked._Target.write

    def spy(self: Any, r0: int, c0: int, block: np.ndarray) -> None:
        seen.append(int(get_gdal_config("GDAL_CACHEMAX")))
        write(self, r0, c0, block)

    monkeypatch.setattr(chunked._Target, "write", spy)
    g = grid(1300, 300)
    x = np.random.default_rng(3).random((4, 1300, 300))
    x[1, 5:9, 7:50] = np.nan
    cls = (x[0] * 5).astype(np.uint8) + 1
    chunked.write_many([(tmp_path / "a.tif", da.from_array(x, chunks=(4, 256, 256)), {}),
                        (tmp_path / "c.tif", cls, {"dtype": "uint8", "nodata": 0})], g, chunk=256)
    assert seen and set(seen) == {min(need, before)}
    assert int(get_gdal_config("GDAL_CACHEMAX")) == before  # restored
    with rasterio.open(tmp_path / "a.tif") as src:
        np.testing.assert_array_equal(src.read(), x.astype(np.float32))
    with rasterio.open(tmp_path / "c.tif") as src:
        np.testing.assert_array_equal(src.read(1), cls)
