"""ESTARFM fusion block by block (issue #9) equals the whole-image fusion.

(a) :func:`npp_core.chunked.fuse_series_chunked` on a small synthetic series with NaN holes that
cross the block edges gives the numbers of :func:`npp_core.estarfm.fuse_series` on the whole image
(identical NaN pattern, values to 1e-12), with the whole image's similarity thresholds.
(b) The pipeline's fusion stage in ``run.mode = "chunked"`` (tiny blocks, threads) on a small
ESTARFM dataset (fine Landsat-like images on the grid, a coarse series on a 3× coarser grid,
land-cover holes straddling the block edges) writes the ``ndvi_fused.tif`` and
``ndvi_monthly.tif`` of ``run.mode = "memory"`` and the same summary fragment.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from npp_core import estarfm
from npp_core import params as P
from npp_core import pipeline
from npp_core.chunked import _pair_thresholds, fuse_series_chunked
from npp_core.dataset import open_dataset
from npp_core.raster import Grid, read_raster, write_raster

FINE_DATES = [_dt.date(2012, 5, 1), _dt.date(2012, 7, 1), _dt.date(2012, 9, 1)]
# 16-day coarse series: every fine date has a partner within 8 days; the first and last dates extrapolate
COARSE_DATES = [_dt.date(2012, 4, 20) + _dt.timedelta(days=16 * k) for k in range(10)]


def _series(rows: int, cols: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fine (3, rows, cols) and coarse (10, rows, cols) NDVI with a spatial pattern, a trend and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    base = 0.3 + 0.2 * np.sin(xx / 7.0) * np.cos(yy / 9.0) + 0.05 * rng.standard_normal((rows, cols))
    fine = np.stack([base + 0.1 * k + 0.02 * rng.standard_normal((rows, cols)) for k in range(3)])
    coarse = np.stack([base + 0.1 * (d - FINE_DATES[0]).days / 60 + 0.03 * rng.standard_normal((rows, cols))
                       for d in COARSE_DATES])
    return fine, coarse


def test_blocks_equal_the_whole_image():
    fine, coarse = _series(60, 70, 3)
    # NaN holes crossing the block edges (chunk 16: edges at 16, 32, 48 rows and columns)
    fine[0, 14:20, 10:40] = np.nan
    fine[1, 30:34, :] = np.nan
    coarse[3, :, 15:18] = np.nan
    coarse[5, 40:50, 30:50] = np.nan
    fine[2, 0, 0] = np.nan
    ref, info = estarfm.fuse_series(fine, FINE_DATES, coarse, COARSE_DATES, window=9)
    lazy, info_c = fuse_series_chunked(fine, FINE_DATES, coarse, COARSE_DATES, window=9, chunk=16)
    assert len(lazy.chunks[1]) == 4 and len(lazy.chunks[2]) == 5  # really several blocks (last 6 cols ≥ halo 4)
    got = lazy.compute(scheduler="threads")
    assert got.shape == ref.shape == (10, 60, 70)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert 0 < np.isnan(ref).sum() < ref.size // 2
    assert float(np.nanmax(np.abs(got - ref))) <= 1e-12
    # the holes reach the output on both sides of a block edge, and pixels next to them are defined
    assert np.isnan(got[:, 30:34, :]).all() and np.isfinite(got[4, 29, 20]) and np.isfinite(got[4, 34, 20])
    assert info_c == [{k: v for k, v in r.items() if k != "nodata_pixels"} for r in info]
    assert info_c[0]["extrapolated"] and not info_c[1]["extrapolated"]


def test_thresholds_equal_the_in_memory_ones_bit_for_bit():
    import dask.array as da

    fine, _ = _series(37, 53, 5)
    fine[0, 5:9, :] = np.nan
    fine[1, :, 40:] = np.nan
    f = da.from_array(fine, chunks=(1, 10, 12))
    got = _pair_thresholds(f[0], f[1], 4, ("a", "b"))
    ref = estarfm.similarity_thresholds(fine[0], fine[1], classes=4)
    assert got.tolist() == ref.tolist()
    # by hand: std (ddof 1) of the values valid in both, × 2 / classes
    ok = np.isfinite(fine[0]) & np.isfinite(fine[1])
    v = fine[0][ok]
    assert got[0] == pytest.approx(np.sqrt(((v - v.mean()) ** 2).sum() / (v.size - 1)) / 2, rel=1e-12)
    with pytest.raises(estarfm.EstarfmError, match="fewer than two pixels"):
        _pair_thresholds(f[0], f[1] * np.nan, 4, ("a", "b"))


def test_bad_inputs_raise_before_any_block():
    fine, coarse = _series(20, 20, 1)
    with pytest.raises(estarfm.EstarfmError, match="window"):
        fuse_series_chunked(fine, FINE_DATES, coarse, COARSE_DATES, window=8)
    with pytest.raises(estarfm.EstarfmError, match="no coarse image within"):
        fuse_series_chunked(fine, FINE_DATES, coarse[5:], COARSE_DATES[5:], window=5)
    with pytest.raises(estarfm.EstarfmError, match="differ in shape"):
        fuse_series_chunked(fine, FINE_DATES, coarse[:, :10], COARSE_DATES, window=5)


# ------------------------------------------------------------------ pipeline stage
UTM = CRS.from_epsg(32649)
X0, Y0, RES, ROWS, COLS = 600_000.0, 4_200_000.0, 30.0, 150, 140
#: run.chunk 64 on 150 × 140 pixels gives even blocks of 50 rows and 47 columns
HOLES = [(45, 56, 10, 120), (0, 150, 92, 96), (98, 103, 0, 140)]

MANIFEST = """
name = "tiny estarfm"
grid = "landcover.tif"

[landcover]
raster = { path = "landcover.tif", nodata = 0 }

[landcover.classes]
1 = "forest"
2 = "grassland"

[landcover.casa_type]
forest = "deciduous_broadleaf"
grassland = "grassland"

[ndvi]
fine = ["fine/ndvi_2012-05-01.tif", "fine/ndvi_2012-07-01.tif", "fine/ndvi_2012-09-01.tif"]
coarse = { path = "coarse.tif", scale = 0.0001, nodata = -3000 }
composite = "max"
"""


@pytest.fixture(scope="module")
def estarfm_ds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("estarfm_ds")
    grid = Grid(crs=UTM, transform=Affine(RES, 0, X0, 0, -RES, Y0), width=COLS, height=ROWS)
    lc = np.ones((ROWS, COLS), dtype=np.uint8)
    lc[:, 70:] = 2
    for r0, r1, c0, c1 in HOLES:
        lc[r0:r1, c0:c1] = 0
    write_raster(root / "landcover.tif", lc, grid, dtype="uint8", nodata=0)
    fine, _ = _series(ROWS, COLS, 7)
    fine[1, 20:30, 40:60] = np.nan  # a cloud
    (root / "fine").mkdir()
    for d, f in zip(FINE_DATES, fine):
        write_raster(root / "fine" / f"ndvi_{d.isoformat()}.tif", f, grid)
    # coarse series on a 90 m grid (one coarse pixel of margin), resampled bilinearly onto the grid
    cr, cc = ROWS // 3 + 2, COLS // 3 + 2
    _, coarse = _series(cr, cc, 8)
    cgrid = Grid(crs=UTM, transform=Affine(3 * RES, 0, X0 - 3 * RES, 0, -3 * RES, Y0 + 3 * RES), width=cc, height=cr)
    raw = np.round(coarse * 10000)
    raw[4, 10:14, 20:25] = -3000
    write_raster(root / "coarse.tif", raw, cgrid, dtype="int16", nodata=-3000,
                 band_names=[d.isoformat() for d in COARSE_DATES])
    (root / "dataset.toml").write_text(MANIFEST)
    return root


def _run(ds_path: Path, out: Path, mode: str) -> pipeline.RunResult:
    prm = P.load(None, [f"run.mode={mode}", "run.chunk=64", "run.scheduler=threads", "estarfm.window=9"])
    with open_dataset(ds_path) as ds:
        res = pipeline.run(ds, prm, out, only=["fusion"])
    st = {s.name: s for s in res.stages}
    assert st["fusion"].status not in ("failed", "skipped"), (st["fusion"].status, st["fusion"].message)
    return res


def test_fusion_stage_chunked_equals_memory(estarfm_ds, tmp_path):
    mem = _run(estarfm_ds, tmp_path / "memory", "memory")
    chk = _run(estarfm_ds, tmp_path / "chunked", "chunked")
    assert chk.summary["run"]["execution"]["fusion"]["mode"] == "chunked"
    assert mem.summary["run"]["execution"]["fusion"]["mode"] == "memory"
    for rel in ("ndvi_fused.tif", "ndvi_monthly.tif"):
        a, ga, da_ = read_raster(mem.out_dir / rel)
        b, gb, db = read_raster(chk.out_dir / rel)
        assert a.shape == b.shape and ga == gb and da_ == db, rel
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=rel)
        # the coarse series is warped per block strip (to rounding, see Dataset.layer_dask); float32 outputs
        assert float(np.nanmax(np.abs(a - b))) <= 1e-6, rel
        # outside the study area (the land-cover holes) there is no value; elsewhere there is
        for r0, r1, c0, c1 in HOLES:
            assert np.isnan(b[:, r0:r1, c0:c1]).all(), rel
        assert np.isfinite(b[:, 60:90, 10:80]).all(), rel
    fused, _, dates = read_raster(chk.out_dir / "ndvi_fused.tif")
    assert dates == [d.isoformat() for d in COARSE_DATES] and fused.shape == (10, ROWS, COLS)
    months = read_raster(chk.out_dir / "ndvi_monthly.tif")[2]
    assert len(months) == 6  # April .. September 2012
    # the monthly maximum composite of the chunked fused series, by hand at a pixel
    mon = read_raster(chk.out_dir / "ndvi_monthly.tif")[0]
    june = [i for i, d in enumerate(COARSE_DATES) if d.month == 6]
    assert mon[2, 70, 30] == pytest.approx(float(np.max(fused[june, 70, 30])), abs=0)
    fm, fc = mem.summary["fusion"], chk.summary["fusion"]
    assert fc["source"] == "estarfm" and set(fm) == set(fc)
    assert {k: v for k, v in fm.items() if k != "pairs"} == {k: v for k, v in fc.items() if k != "pairs"}
    assert fc["pairs"] == fm["pairs"]
