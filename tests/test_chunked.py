"""Chunked execution: every chunked path equals the in-memory one, whatever the chunk size.

The rasters are ~150 × 170 cut into 37 × 41 blocks (many blocks, ragged last ones) with NaN holes
placed across block edges; references are the in-memory kernels and, for LCC, a brute-force
Pearson of each truncated window computed here.
"""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from scipy import stats
from sklearn.ensemble import RandomForestRegressor

from npp_core import casa, chunked, forest, kriging, lcc
from npp_core.raster import Grid, read_raster, write_raster

ROWS, COLS = 150, 170
CH = (37, 41)  # block edges at rows 37, 74, 111, 148 and cols 41, 82, 123, 164
GRID = Grid(CRS.from_epsg(32649), Affine(30.0, 0, 500_000.0, 0, -30.0, 4_000_000.0), COLS, ROWS)


def _holes(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """NaN holes straddling block edges (rows 37/74, cols 41/82) plus scattered single pixels."""
    a = a.copy()
    a[..., 35:39, 39:44] = np.nan  # corner where four blocks meet
    a[..., 73:75, 100:110] = np.nan  # along a row edge
    a[..., 120:130, 81:83] = np.nan  # along a column edge
    a[..., 0:2, :] = np.nan  # the raster's top edge
    flat = a.reshape(-1, ROWS * COLS) if a.ndim == 3 else a.reshape(1, -1)
    flat[:, rng.choice(ROWS * COLS, 200, replace=False)] = np.nan
    return a


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(7)
    base = rng.standard_normal((ROWS, COLS))
    x = _holes(base + 0.3 * rng.standard_normal((ROWS, COLS)) + 50.0, rng)
    y = _holes(-0.6 * base + rng.standard_normal((ROWS, COLS)) + 1000.0, np.random.default_rng(8))
    return x, y


def _pearson_window(x, y, i, j, window, min_valid):
    h = window // 2
    xs = x[max(0, i - h): i + h + 1, max(0, j - h): j + h + 1].ravel()
    ys = y[max(0, i - h): i + h + 1, max(0, j - h): j + h + 1].ravel()
    ok = np.isfinite(xs) & np.isfinite(ys)
    n = int(ok.sum())
    if not (np.isfinite(x[i, j]) and np.isfinite(y[i, j])) or n < min_valid:
        return np.nan, np.nan, n
    r, p = stats.pearsonr(xs[ok], ys[ok])
    return r, p, n


# ----------------------------------------------------------------------------- LCC
@pytest.mark.parametrize("window", [5, 9])
def test_lcc_chunked_equals_in_memory(pair, window):
    x, y = pair
    r, p, n = lcc.local_correlation(x, y, window, 3)
    out = chunked.lcc_chunked(x, y, window, 3, CH).compute()
    assert out.shape == (3, ROWS, COLS)
    np.testing.assert_array_equal(np.isnan(out[0]), np.isnan(r))
    np.testing.assert_allclose(out[0], r, rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(out[1], p, rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(out[2], n)
    assert np.isfinite(r).sum() > 0.8 * r.size  # the comparison is not between two empty maps


def test_lcc_chunked_brute_force_at_block_edges(pair):
    x, y = pair
    out = chunked.lcc_chunked(x, y, 5, 3, CH).compute()
    pixels = [(36, 40), (37, 41), (38, 44), (73, 99), (74, 110), (111, 82), (148, 164), (149, 169),
              (2, 0), (0, 5), (36, 123), (37, 122), (110, 163), (75, 81)]
    checked = 0
    for i, j in pixels:
        rr, pp, nn = _pearson_window(x, y, i, j, 5, 3)
        assert out[2, i, j] == nn
        if np.isnan(rr):
            assert np.isnan(out[0, i, j])
        else:
            checked += 1
            assert out[0, i, j] == pytest.approx(rr, abs=1e-10)
            assert out[1, i, j] == pytest.approx(pp, rel=1e-8, abs=1e-12)
    assert checked >= 8


def test_lcc_chunked_mask_and_tiny_chunks(pair):
    x, y = pair[0][:60, 30:100], pair[1][:60, 30:100]
    mask = np.ones(x.shape, bool)
    mask[20:40, 20:40] = False
    r, p, n = lcc.local_correlation(x, y, 7, 4, mask=mask)
    out = chunked.lcc_chunked(x, y, 7, 4, (5, 6), mask=mask)  # blocks barely above the halo
    assert len(out.chunks[1]) == 12 and min(out.chunks[1]) >= 3  # 60 rows: the 0-row tail never exists
    out = out.compute()
    np.testing.assert_allclose(out[0], r, rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(out[1], p, rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(out[2], n)
    assert np.isnan(out[0, 20:40, 20:40]).all() and np.isfinite(out[0]).mean() > 0.6


def test_global_stats_chunked_matches(pair):
    x, y = pair
    s_mem = lcc.global_stats(x, y)
    s_chk = chunked.global_stats_chunked(chunked.as_dask(x, CH), chunked.as_dask(y, CH))
    np.testing.assert_allclose(s_chk, s_mem, rtol=1e-13)


def test_lcc_chunked_rejects_bad_input(pair):
    x, y = pair
    with pytest.raises(lcc.LCCError, match="window"):
        chunked.lcc_chunked(x, y, 4)
    with pytest.raises(lcc.LCCError, match="shape"):
        chunked.lcc_chunked(x, y[:-1], 5)


# ----------------------------------------------------------------------------- CASA
def test_casa_chunked_equals_in_memory():
    rng = np.random.default_rng(3)
    m = 24
    month = np.arange(m) % 12
    nd = np.clip(0.2 + 0.5 * np.sin(np.pi * month / 11)[:, None, None] + 0.1 * rng.standard_normal((m, ROWS, COLS)),
                 -0.1, 0.95)
    t = (-5 + 28 * np.sin(np.pi * month / 11))[:, None, None] + rng.normal(0, 2, (m, ROWS, COLS))
    p = rng.gamma(2.0, 25.0, (m, ROWS, COLS))
    s = rng.uniform(150, 600, (m, ROWS, COLS))
    nd = _holes(nd, rng)
    t[5, 36:40, 80:84] = np.nan
    codes = rng.integers(0, 4, (ROWS, COLS))
    eps = np.array([np.nan, 0.692, 0.542, 0.389])[codes]  # code 0 non-vegetated
    nmin = np.full((ROWS, COLS), 0.023)
    nmax = np.array([np.nan, 0.747, 0.634, 0.634])[codes]
    srmax = (1 + nmax) / (1 - nmax)
    kw = dict(pet_zero="previous", halving=True, sr_max=srmax, sr_min=1.05)
    ref = casa.npp_monthly(nd, t, p, s, eps, nmin, nmax, **kw)
    out = chunked.casa_chunked(nd, t, p, s, eps, nmin, nmax, chunk=CH, **kw)
    assert out.chunks[0] == (m,)  # months never split
    out = out.compute()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out, ref, rtol=1e-13, atol=0, equal_nan=True)
    assert 0.5 < np.isfinite(ref).mean() < 0.8 and np.nanmax(ref) > 10


# ----------------------------------------------------------------------------- forest
@pytest.fixture(scope="module")
def forest_case():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 4))
    yv = X[:, 0] + X[:, 1] ** 2 - 0.5 * X[:, 3] + rng.normal(0, 0.1, 400)
    rf = RandomForestRegressor(n_estimators=40, min_samples_split=6, random_state=0).fit(X, yv)
    stack = _holes(rng.normal(size=(4, ROWS, COLS)), rng)
    return rf, stack


def test_predict_chunked_equals_sklearn(forest_case):
    rf, stack = forest_case
    X = stack.reshape(4, -1).T
    ok = np.isfinite(X).all(axis=1)
    ref = np.full(X.shape[0], np.nan)
    ref[ok] = rf.predict(X[ok])
    out = chunked.predict_chunked(rf, stack, chunk=CH).compute().ravel()
    np.testing.assert_array_equal(np.isnan(out), ~ok)
    np.testing.assert_allclose(out, ref, rtol=1e-12, equal_nan=True)
    with pytest.raises(forest.ForestError, match="expected"):
        chunked.predict_chunked(rf, stack[:3], chunk=CH)


def test_cluster_scattered_model_and_streamed_write(forest_case, tmp_path):
    distributed = pytest.importorskip("distributed")
    rf, stack = forest_case
    flat = forest.flatten_forest(rf)
    ref = forest.predict_forest(flat, stack.reshape(4, -1).T).reshape(ROWS, COLS)
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=":0") as client:
        pred = chunked.predict_chunked(flat, stack, chunk=CH, client=client)
        # the model is one scattered future shared by every block task, not embedded per task
        futures = [k for k in client.who_has() if "FlatForest" in str(k) or "flatforest" in str(k).lower()]
        assert len(futures) == 1
        lccr = chunked.lcc_chunked(stack[0], stack[1], 5, 3, CH)
        done: list[float] = []
        chunked.write_many([(tmp_path / "pred.tif", pred, {}), (tmp_path / "lcc.tif", lccr, {"cog": True})],
                           GRID, client=client, progress=lambda f, m: done.append(f), max_in_flight=3)
    back, g, _ = read_raster(tmp_path / "pred.tif")
    assert g.same_as(GRID)
    np.testing.assert_array_equal(back[0], ref.astype(np.float32))
    r, p, n = lcc.local_correlation(stack[0], stack[1], 5, 3)
    lb, _, _ = read_raster(tmp_path / "lcc.tif")
    np.testing.assert_array_equal(lb, np.stack([r, p, n]).astype(np.float32))
    assert len(done) == 5 * 5 and done[-1] == 1.0


# ----------------------------------------------------------------------------- kriging
def test_krige_chunked_equals_krige_grid():
    rng = np.random.default_rng(11)
    sx = rng.uniform(500_000, 500_000 + 30 * COLS, 80)
    sy = rng.uniform(4_000_000 - 30 * ROWS, 4_000_000, 80)
    sz = np.sin(sx / 900.0) + 0.5 * np.cos(sy / 1300.0) + rng.normal(0, 0.1, 80)
    vg = kriging.fit_variogram(sx, sy, sz, "exponential")
    gx, gy = GRID.xy()
    mask = np.ones((ROWS, COLS), bool)
    mask[35:40, 38:45] = False
    mask[rng.random((ROWS, COLS)) < 0.05] = False
    rp, rv = kriging.krige_grid(sx, sy, sz, gx, gy, vg, mask=mask)
    out = chunked.krige_chunked(sx, sy, sz, vg, GRID, chunk=CH, mask=mask).compute()
    np.testing.assert_array_equal(np.isnan(out[0]), ~mask)
    np.testing.assert_allclose(out[0], rp, rtol=1e-12, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(out[1], rv, rtol=1e-10, atol=1e-12, equal_nan=True)
    # exact interpolation survives chunking: a sample on a pixel centre returns its value
    i, j = 80, 90
    sx2, sy2, sz2 = np.append(sx, gx[j]), np.append(sy, gy[i]), np.append(sz, 3.0)
    out2 = chunked.krige_chunked(sx2, sy2, sz2, vg, GRID, chunk=CH).compute()
    assert out2[0, i, j] == pytest.approx(3.0, abs=1e-9) and out2[1, i, j] == pytest.approx(0.0, abs=1e-9)


# ----------------------------------------------------------------------------- writing and reading
def test_write_blocks_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    data = _holes(rng.normal(100.0, 20.0, (3, ROWS, COLS)), rng)
    arr = chunked.as_dask(data, CH)
    out = chunked.write_blocks(tmp_path / "a.tif", arr, GRID, band_names=["2010-01", "2010-02", "x"],
                               tags={"units": "gC m-2"})
    back, g, dates = read_raster(out)
    assert g.same_as(GRID) and dates == ["2010-01", "2010-02", "x"]
    np.testing.assert_array_equal(back, data.astype(np.float32))
    with rasterio.open(out) as ds:
        assert ds.compression.name.lower() == "deflate" and ds.tags()["units"] == "gC m-2"
        assert ds.tags(1)["DATE"] == "2010-01"
    # the same file as the in-memory writer, value for value
    write_raster(tmp_path / "b.tif", data, GRID)
    np.testing.assert_array_equal(read_raster(tmp_path / "b.tif")[0], back)
    # integer output with a nodata value
    cls = np.where(np.isnan(data[0]), np.nan, np.floor(data[0]) % 7)
    chunked.write_blocks(tmp_path / "c.tif", chunked.as_dask(cls, CH), GRID, dtype="uint8", nodata=255)
    with rasterio.open(tmp_path / "c.tif") as ds:
        raw = ds.read(1)
    assert ((raw == 255) == np.isnan(cls)).all()
    np.testing.assert_array_equal(raw[~np.isnan(cls)], cls[~np.isnan(cls)])
    # a numpy array is cut into the requested blocks (progress once per block written)
    seen: list[float] = []
    chunked.write_blocks(tmp_path / "d.tif", data, GRID, chunk=CH, progress=lambda f, m: seen.append(f))
    assert len(seen) == 25 and seen[-1] == 1.0
    np.testing.assert_array_equal(read_raster(tmp_path / "d.tif")[0], back)
    # no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif", "c.tif", "d.tif"]


def test_write_cog_and_open_dask(tmp_path):
    rng = np.random.default_rng(4)
    big = Grid(GRID.crs, GRID.transform, 600, 520)
    data = rng.normal(size=(2, 520, 600))
    data[:, 255:260, 250:262] = np.nan
    chunked.write_blocks(tmp_path / "cog.tif", chunked.as_dask(data, 200), big, cog=True, band_names=["a", "b"])
    with rasterio.open(tmp_path / "cog.tif") as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.overviews(1)
        assert ds.block_shapes[0][0] > 1  # tiled, not strips
    arr, g, dates = chunked.open_dask(tmp_path / "cog.tif", (111, 97))
    assert arr.chunks[1][0] == 111 and dates == ["a", "b"]
    np.testing.assert_array_equal(arr.compute(), read_raster(tmp_path / "cog.tif")[0])
    np.testing.assert_array_equal(arr.compute(), data.astype(np.float32))
    # integer and strided selections are pushed into the windowed read and still agree
    np.testing.assert_array_equal(arr[1].compute(), data[1].astype(np.float32))
    np.testing.assert_array_equal(arr[:, 250:400:7, -3].compute(), data[:, 250:400:7, -3].astype(np.float32))
    # nodata values (not NaN) become NaN in windowed reads too
    write_raster(tmp_path / "nd.tif", np.where(np.isnan(data[0]), -9999, data[0]), big, nodata=-9999)
    a2, _, _ = chunked.open_dask(tmp_path / "nd.tif", 128, nodata=None)
    np.testing.assert_array_equal(np.isnan(a2.compute()[0]), np.isnan(data[0]))


def test_write_rejects_wrong_shape(tmp_path):
    with pytest.raises(chunked.ChunkedError, match="does not match the grid"):
        chunked.write_blocks(tmp_path / "x.tif", np.zeros((10, 10)), GRID)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- planning
def test_choose_mode():
    p = {"run": {"mode": "auto", "memory_gb": 4.0, "chunk": 1024}}
    assert chunked.choose_mode((500, 440), 96, p)[0] == "memory"
    mode, why = chunked.choose_mode((4000, 4000), 96, p)  # 16 M px × 96 layers × 24 B = 36.9 GB
    assert mode == "chunked" and "36.86 GB" in why and "4 GB" in why
    # just below / above the budget: 1000 × 1000 × 10 layers × 24 B = 0.24 GB
    assert chunked.choose_mode((1000, 1000), 10, {"mode": "auto", "memory_gb": 0.25})[0] == "memory"
    assert chunked.choose_mode((1000, 1000), 10, {"mode": "auto", "memory_gb": 0.23})[0] == "chunked"
    assert chunked.choose_mode((4000, 4000), 96, {"run": {"mode": "memory"}})[0] == "memory"
    assert chunked.choose_mode((10, 10), 1, {"run": {"mode": "chunked"}})[0] == "chunked"
    with pytest.raises(chunked.ChunkedError, match="run.mode"):
        chunked.choose_mode((10, 10), 1, {"run": {"mode": "fast"}})


def test_plan_blocks_tiles_exactly_with_clipped_halos():
    blocks = chunked.plan_blocks((ROWS, COLS), CH, halo=3)
    assert len(blocks) == 5 * 5
    cover = np.zeros((ROWS, COLS), int)
    for b in blocks:
        cover[b.core] += 1
        assert b.rrow0 == max(0, b.row0 - 3) and b.rrow1 == min(ROWS, b.row1 + 3)
        assert b.rcol0 == max(0, b.col0 - 3) and b.rcol1 == min(COLS, b.col1 + 3)
        window = np.arange(ROWS * COLS).reshape(ROWS, COLS)[b.read]
        np.testing.assert_array_equal(window[b.inner], np.arange(ROWS * COLS).reshape(ROWS, COLS)[b.core])
    assert (cover == 1).all()
    assert blocks[-1].row1 == ROWS and blocks[-1].row1 - blocks[-1].row0 == ROWS - 4 * 37


# ----------------------------------------------------------------------------- benchmark data
def test_bench_data_mirror_tiles_the_sample(tmp_path):
    from npp_core import benchdata, dataset, sample

    with pytest.raises(benchdata.BenchDataError, match="pixels"):
        benchdata.bench_data(tmp_path / "x", 100)
    rows, cols = benchdata.bench_shape(250_000)
    assert (rows, cols) == (533, 469) and abs(rows * cols - 250_000) < 1_000
    out = benchdata.bench_data(tmp_path / "b", 250_000, seed=0, years=1, max_soil=40)
    lc, g, _ = read_raster(out / "landcover.tif")
    assert g.shape == (533, 469) and g.transform == sample.GRID.transform
    base = lc[0, :500, :440]
    # the seams mirror the basin: row 500 + k is row 499 − k, col 440 + k is col 439 − k
    np.testing.assert_array_equal(lc[0, 500:533, :440], base[::-1][:33])
    np.testing.assert_array_equal(lc[0, :500, 440:469], base[:, ::-1][:, :29])
    nd, _, months = read_raster(out / "ndvi_monthly.tif")
    assert nd.shape == (12, 533, 469) and months[0] == "2010-01" and months[-1] == "2010-12"
    np.testing.assert_array_equal(nd[6, 500:533, 100], nd[6, 499:466:-1, 100])
    assert np.array_equal(np.isnan(nd[0]), np.isnan(lc[0]))  # NDVI defined exactly on the land cover
    ds = dataset.open_dataset(out)
    assert not [p for p in ds.check() if p.severity == "error"]
    soil = ds.soil_samples()
    assert len(soil["x"]) == 40
    r, c = g.index(np.asarray(soil["x"]), np.asarray(soil["y"]))
    assert ((r >= 0) & (r < rows) & (c >= 0) & (c < cols)).all()
