"""Tests of the synthetic sample basin (npp_core.sample): determinism, format, planted structure."""
from __future__ import annotations

import csv
import hashlib
import math
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.warp import Resampling, reproject

from npp_core import sample
from npp_core.casa import validate_plots
from npp_core.raster import read_raster

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def build0() -> dict:
    # one build shared by the files and the truth (generate() = _write(_build); planted_truth() = _truth(_build))
    return sample._build(0)


@pytest.fixture(scope="module")
def ds0(build0, tmp_path_factory) -> Path:
    return sample._write(tmp_path_factory.mktemp("seed0"), build0)


@pytest.fixture(scope="module")
def truth(build0) -> dict:
    return sample._truth(build0)


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _file_entries(node, out: list[str]) -> list[str]:
    """Every file path named in a manifest (strings ending in a file extension, or inline {path})."""
    if isinstance(node, dict):
        if "path" in node:
            out.append(node["path"])
        else:
            for v in node.values():
                _file_entries(v, out)
    elif isinstance(node, list):
        for v in node:
            _file_entries(v, out)
    elif isinstance(node, str) and re.search(r"\.(tif|csv|geojson)$", node):
        out.append(node)
    return out


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _to_grid(data: np.ndarray, src, dst, how=Resampling.bilinear) -> np.ndarray:
    out = np.full((data.shape[0],) + dst.shape, np.nan)
    reproject(data, out, src_transform=src.transform, src_crs=src.crs, src_nodata=np.nan,
              dst_transform=dst.transform, dst_crs=dst.crs, dst_nodata=np.nan, resampling=how)
    return out


# ------------------------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_differs(ds0: Path, tmp_path: Path) -> None:
    again = sample.generate(tmp_path / "again", seed=0)  # a fresh build through the public API
    other = sample.generate(tmp_path / "other", seed=1)
    h0, h1, h2 = _hashes(ds0), _hashes(again), _hashes(other)
    assert h0 == h1
    assert set(h0) - {p for p in h0 if p.startswith("landsat/")} <= set(h2)
    differing = [k for k in h0 if k in h2 and h0[k] != h2[k]]
    for key in ("ld/mines.csv", "soil/samples.csv", "landcover.tif", "modis/ndvi_250m_16day.tif"):
        assert key in differing


def test_bad_seed_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(sample.SampleError, match="seed"):
        sample.generate(tmp_path, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        sample.planted_truth("0")  # type: ignore[arg-type]


def test_manifest_parses_and_names_exactly_the_files(ds0: Path) -> None:
    man = tomllib.loads((ds0 / "dataset.toml").read_text(encoding="utf-8"))
    named = set(_file_entries(man, []))
    for f in named:
        assert (ds0 / f).is_file(), f
    present = set(_hashes(ds0)) - {"dataset.toml", "README.md"}
    assert present == named
    assert man["grid"] == "landcover.tif" and man["boundary"] == "boundary.geojson"
    assert man["landcover"]["classes"] == {"1": "forest", "2": "grassland", "3": "farmland",
                                           "4": "construction", "5": "water"}
    assert man["landcover"]["casa_type"]["forest"] == "deciduous_broadleaf"
    assert man["climate"]["solar"]["units"] == "W m-2"
    assert man["ndvi"]["coarse"]["scale"] == 0.0001
    assert len(man["ndvi"]["fine"]) == 12
    assert set(man["degradation"]["indicators"]) == set(sample.INDICATORS)
    assert man["soil"]["crs"] == "EPSG:4326"


def test_reference_grid_nodata_and_landcover(ds0: Path, truth: dict) -> None:
    with rasterio.open(ds0 / "landcover.tif") as ds:
        assert ds.crs == CRS.from_epsg(32649)
        assert ds.res == (30.0, 30.0)
        assert ds.nodata == 0 and ds.dtypes[0] == "uint8"
        lc = ds.read(1)
        grid_t = ds.transform
    assert set(np.unique(lc)) == {0, 1, 2, 3, 4, 5}
    np.testing.assert_array_equal(lc > 0, truth["inside"])
    # 113 km² of basin
    assert abs((lc > 0).sum() * 900 / 1e6 - 113.0) < 0.5
    # every 30 m raster is on the reference grid and declares its nodata
    for f in ["dem.tif", *[f"ld/{n}" for n in ("subsidence_m.tif", "crack_density.tif", "seeper.tif",
                                               "goaf.tif", "slope_change.tif", "dist_mine_m.tif")]]:
        with rasterio.open(ds0 / f) as ds:
            assert ds.crs == CRS.from_epsg(32649) and ds.transform == grid_t and ds.shape == lc.shape, f
            assert ds.nodata is not None, f
    for f in ("ld/seeper.tif", "ld/goaf.tif"):
        with rasterio.open(ds0 / f) as ds:
            v = ds.read(1)
            assert ds.nodata == 255
            assert set(np.unique(v[lc > 0])) == {0, 1} and (v[lc == 0] == 255).all()
    # the coarse files declare nodata too
    for f in ("climate/tmean_monthly.tif", "modis/ndvi_250m_16day.tif", "validation/mod17a3.tif"):
        with rasterio.open(ds0 / f) as ds:
            assert ds.nodata is not None, f


def test_boundary_polygon_matches_the_grid(ds0: Path, truth: dict) -> None:
    import json

    gj = json.loads((ds0 / "boundary.geojson").read_text(encoding="utf-8"))
    ring = np.array(gj["features"][0]["geometry"]["coordinates"][0])
    assert 112.6 < ring[:, 0].min() < ring[:, 0].max() < 112.8
    assert 35.45 < ring[:, 1].min() < ring[:, 1].max() < 35.7
    x, y = Transformer.from_crs(4326, 32649, always_xy=True).transform(ring[:, 0], ring[:, 1])
    area = 0.5 * abs(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])) / 1e6
    assert abs(area - 113.0) < 0.5
    g = truth["grid"]
    m = rasterize([({"type": "Polygon", "coordinates": [list(zip(x, y))]}, 1)], out_shape=g.shape,
                  transform=g.transform).astype(bool)
    inter = (m & truth["inside"]).sum()
    union = (m | truth["inside"]).sum()
    assert inter / union > 0.99


def test_series_band_dates(ds0: Path) -> None:
    months = [f"{y}-{m:02d}" for y in range(2010, 2016) for m in range(1, 13)]
    for f in ("tmean", "prec", "srad"):
        _, g, dates = read_raster(ds0 / f"climate/{f}_monthly.tif")
        assert dates == months
        assert g.res[0] == pytest.approx(0.005)
    with rasterio.open(ds0 / "modis/ndvi_250m_16day.tif") as ds:
        assert ds.count == 138 and ds.dtypes[0] == "int16" and ds.nodata == -3000
        assert ds.crs.to_dict().get("proj") == "sinu"
        mdates = list(ds.descriptions)
        assert ds.tags(1)["DATE"] == "2010-01-01"
        assert ds.res[0] == pytest.approx(231.656358, abs=1e-3)
    assert mdates[:3] == ["2010-01-01", "2010-01-17", "2010-02-02"]
    assert mdates[23] == "2011-01-01" and mdates[-1] == "2015-12-19"
    assert all(sum(d.startswith(str(y)) for d in mdates) == 23 for y in range(2010, 2016))
    fine = sorted((ds0 / "landsat").glob("ndvi_*.tif"))
    assert len(fine) == 12
    n_cloudy = 0
    for f in fine:
        a, _, d = read_raster(f)
        assert f.stem == f"ndvi_{d[0]}" and d[0] in mdates  # paired with a coarse date
        assert np.nanmin(a) >= -1 and np.nanmax(a) <= 1
        n_cloudy += bool(np.isnan(a).any())
    assert n_cloudy == 1
    assert {f.stem[5:9] for f in fine} == {str(y) for y in range(2010, 2016)}


def test_modis_is_the_fine_truth_aggregated(ds0: Path) -> None:
    m, mg, mdates = read_raster(ds0 / "modis/ndvi_250m_16day.tif")
    for f in sorted((ds0 / "landsat").glob("ndvi_*.tif"))[:3]:
        a, g, d = read_raster(f)
        agg = _to_grid(a, g, mg, Resampling.average)[0]
        c = m[mdates.index(d[0])] * 1e-4
        ok = np.isfinite(agg) & np.isfinite(c)
        # interior pixels fully inside the fine image
        assert ok.sum() > 2000
        diff = c[ok] - agg[ok]
        assert abs(diff.mean()) < 0.005
        assert np.sqrt((diff**2).mean()) < 0.03  # noise 0.015 + footprint approximations
        assert np.corrcoef(c[ok], agg[ok])[0, 1] > 0.95


def test_climate_realistic(ds0: Path, truth: dict) -> None:
    g, ins = truth["grid"], truth["inside"]
    t, tg, _ = read_raster(ds0 / "climate/tmean_monthly.tif")
    p, pg, _ = read_raster(ds0 / "climate/prec_monthly.tif")
    s, sg, dates = read_raster(ds0 / "climate/srad_monthly.tif")
    # bilinear resampling is linear, so resampling the averages equals averaging the resampled months
    t_clim = t.reshape(6, 12, *t.shape[1:]).mean(axis=0)
    p_clim = p.reshape(6, 12, *p.shape[1:]).mean(axis=0)
    T = _to_grid(t_clim, tg, g)[:, ins]  # (12, pixels) monthly climatology
    P = _to_grid(p_clim, pg, g)[:, ins]
    assert T.mean() == pytest.approx(10.6, abs=0.3)
    clim = T.mean(axis=1)
    assert -4.5 < clim[0] < -2.0 and 22.5 < clim[6] < 25.5
    annual = P.sum(axis=0).mean()
    assert 550 < annual < 600
    assert set(np.argsort(P.mean(axis=1))[-2:]) == {6, 7}  # July–August peak
    yearly = np.array([p[12 * i:12 * i + 12].sum(axis=0).mean() for i in range(6)])
    assert yearly.std() / yearly.mean() > 0.05  # inter-annual variation
    # lapse rate and orographic precipitation, checked against the smooth terrain
    z = truth["dem_smooth"][ins]
    slope_t = np.polyfit(z, T.mean(axis=0), 1)[0]
    assert slope_t == pytest.approx(-0.006, rel=0.1)
    assert np.polyfit(z, P.sum(axis=0), 1)[0] > 0.2  # mm per m
    # solar: W m-2 monthly mean → MJ m-2 month-1 in 200–600
    days = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] * 6, dtype=float)
    days[2 * 12 + 1] = 29  # 2012-02
    mj = s.mean(axis=(1, 2)) * 86400 * days / 1e6
    assert 180 < mj.min() and mj.max() < 650
    assert np.argmax(mj[:12]) in (4, 5) and np.argmin(mj[:12]) in (0, 10, 11)


def test_soil_samples(ds0: Path, truth: dict) -> None:
    rows = _csv(ds0 / "soil/samples.csv")
    assert len(rows) == 117
    assert list(rows[0]) == ["id", "lon", "lat", "clay_pct", "soc_g_kg", "tn_g_kg", "ap_mg_kg",
                             "ak_mg_kg", "ph", "bd_g_cm3"]
    assert len({r["id"] for r in rows}) == 117
    ranges = {"clay_pct": (10, 30), "soc_g_kg": (5, 25), "tn_g_kg": (0.4, 1.8), "ap_mg_kg": (3, 30),
              "ak_mg_kg": (80, 250), "ph": (7.2, 8.4), "bd_g_cm3": (1.15, 1.55)}
    for k, (lo, hi) in ranges.items():
        v = np.array([float(r[k]) for r in rows])
        assert lo <= v.min() and v.max() <= hi, k
        assert v.std() > 0.05 * (hi - lo), k
    lon = np.array([float(r["lon"]) for r in rows])
    lat = np.array([float(r["lat"]) for r in rows])
    x, y = Transformer.from_crs(4326, 32649, always_xy=True).transform(lon, lat)
    g = truth["grid"]
    r_, c_ = g.index(x, y)
    assert truth["inside"][r_, c_].all()
    west = x < truth["river_x"][r_]
    soc = np.array([float(r["soc_g_kg"]) for r in rows])
    assert 20 < west.sum() < 97
    assert soc[~west].mean() > soc[west].mean() + 2.0
    # samples are the planted field plus nugget noise
    planted = truth["soil"]["SOC"][r_, c_]
    assert np.corrcoef(planted, soc)[0, 1] > 0.9
    assert np.abs(soc - planted).mean() < 1.5


def test_river_splits_west_and_east(truth: dict) -> None:
    lc, ins, g = truth["landcover"], truth["inside"], truth["grid"]
    xs, _ = g.xy()
    rows = np.flatnonzero(ins.any(axis=1))
    for r in rows[5:-5]:
        water = np.flatnonzero(lc[r] == 5)
        assert water.size, f"row {r} has no river"
        assert np.abs(xs[water] - truth["river_x"][r]).max() < 60
    # the river runs through the middle: both sides hold a good share of the basin
    west = (truth["west"] & ins).sum() / ins.sum()
    assert 0.35 < west < 0.65
    assert (lc[truth["west"] & ins] == 5).mean() < 0.02


def test_terrain_rims_higher_and_forest_uplands(ds0: Path, truth: dict) -> None:
    dem, _, _ = read_raster(ds0 / "dem.tif")
    dem = dem[0]
    lc, ins = truth["landcover"], truth["inside"]
    mean = {c: dem[lc == c].mean() for c in (1, 2, 3)}
    assert mean[1] > mean[2] + 50 > mean[3] + 100
    river = lc == 5
    assert dem[river].mean() < dem[ins].mean() - 60
    assert 650 < dem[ins].min() and dem[ins].max() < 1300


def test_mines_in_the_west_and_damage_around_them(ds0: Path, truth: dict) -> None:
    g = truth["grid"]
    rows = _csv(ds0 / "ld/mines.csv")
    assert len(rows) == 11 and list(rows[0]) == ["id", "x", "y", "name"]
    mx = np.array([float(r["x"]) for r in rows])
    my = np.array([float(r["y"]) for r in rows])
    r_, c_ = g.index(mx, my)
    assert truth["inside"][r_, c_].all()
    assert (mx < truth["river_x"][r_] - 1000).all()
    # distance raster = brute-force distance to the nearest mine (spot checks)
    dist, _, _ = read_raster(ds0 / "ld/dist_mine_m.tif")
    xs, ys = g.xy()
    rng = np.random.default_rng(3)
    ii = np.flatnonzero(truth["inside"].ravel())[rng.integers(0, truth["inside"].sum(), 50)]
    for k in ii:
        r, c = divmod(int(k), g.width)
        d = np.min(np.hypot(xs[c] - mx, ys[r] - my))
        assert dist[0, r, c] == pytest.approx(d, abs=0.1)
    subs, _, _ = read_raster(ds0 / "ld/subsidence_m.tif")
    near = truth["inside"] & (dist[0] < 1000)
    far = truth["inside"] & (dist[0] > 3000)
    assert np.nanmax(subs[0][near]) > 1.0 and np.nanmax(subs[0][far]) == 0.0
    ld = truth["ld"]
    assert np.nanmean(ld[near]) > 0.2
    assert np.nanmax(ld[far]) < 0.05
    assert np.nanmean(ld[~truth["west"] & truth["inside"]]) < 0.01
    # all indicators are within the basin only, and damage sits where the goaf is
    goaf, _, _ = read_raster(ds0 / "ld/goaf.tif")
    assert np.nanmean(subs[0][goaf[0] == 1]) > 5 * np.nanmean(subs[0][goaf[0] == 0])


def test_ahp_matrix_is_a_consistent_saaty_matrix(ds0: Path, truth: dict) -> None:
    with open(ds0 / "ld/ahp_matrix.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    names = rows[0][1:]
    assert names == list(sample.INDICATORS) == [r[0] for r in rows[1:]]
    a = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert a.shape == (6, 6)
    np.testing.assert_allclose(a * a.T, 1.0, atol=1e-5)
    saaty = np.array([1 / k for k in range(1, 10)] + list(range(1, 10)))
    assert np.all(np.min(np.abs(a[..., None] - saaty), axis=-1) < 1e-5)
    # principal eigenvector by power iteration, CR with Saaty's RI(6) = 1.24
    w = np.ones(6) / 6
    for _ in range(200):
        w = a @ w
        w /= w.sum()
    lam = float(np.mean((a @ w) / w))
    cr = (lam - 6) / 5 / 1.24
    assert 0 <= cr < 0.1
    np.testing.assert_allclose([truth["ahp_weights"][n] for n in names], w, atol=1e-5)
    assert truth["ahp_cr"] == pytest.approx(cr, abs=1e-5)


def test_planted_npp_statistics_and_validation(ds0: Path, truth: dict) -> None:
    npp, lc, ins = truth["npp_mean"], truth["landcover"], truth["inside"]
    v = npp[ins]
    assert np.isfinite(v).all() and (v >= 0).all()
    assert 270 < v.mean() < 310 and 80 < v.std() < 140
    by = {c: npp[lc == c].mean() for c in range(1, 6)}
    assert by[1] > by[2] > by[3] > by[4] > by[5] == 0.0
    assert 380 < by[1] < 480 and 150 < by[4] < 200
    np.testing.assert_allclose(truth["npp_annual"][:, ins].mean(axis=0), v, rtol=1e-9)
    # plots: measured ≈ planted in a 45 m radius, near the study's 249 / 275 gC m-2 yr-1
    plots = _csv(ds0 / "validation/plots.csv")
    assert [p["id"] for p in plots] == ["A", "B"]
    res = validate_plots(npp, truth["grid"].transform,
                         [{**p, "x": float(p["x"]), "y": float(p["y"]), "radius_m": float(p["radius_m"])}
                          for p in plots])
    for r, target in zip(res, (248.0, 276.0)):
        assert r["n_pixels"] == 9
        assert r["measured"] == pytest.approx(r["simulated"], rel=0.03)
        assert r["simulated"] == pytest.approx(target, abs=5)
    # the reference product is the planted NPP, coarse and biased: close per class, not equal
    ref, rg, _ = read_raster(ds0 / "validation/mod17a3.tif")
    refg = _to_grid(ref, rg, truth["grid"])[0]
    for c in (1, 2, 3):
        m = ins & (lc == c)
        assert np.nanmean(refg[m]) == pytest.approx(by[c], rel=0.15)
    assert np.corrcoef(refg[ins], npp[ins])[0, 1] > 0.5


def test_vigour_responds_to_the_planted_drivers(truth: dict) -> None:
    ins, lc = truth["inside"], truth["landcover"]
    veg = ins & (lc < 4)
    vig = truth["vigour"]
    d = truth["indicators"]["distance_to_mine"]

    def r(a, m):
        m = m & np.isfinite(a) & np.isfinite(vig)
        return np.corrcoef(a[m], vig[m])[0, 1]

    # near the mines vigour falls with LD; in the east it follows the soil; on the rims, the climate index
    assert r(truth["ld"], veg & (d < 1500)) < -0.3
    east = veg & (truth["zones"]["soil"] > 0.9) & (truth["zones"]["climate"] == 0)
    assert r(truth["soil_quality"], east & (lc == 3)) > 0.5
    rim = veg & (truth["zones"]["climate"] > 0.8) & (lc == 1)
    assert r(truth["climate_index"], rim) > 0.3
    # AP and clay are planted as irrelevant: no more than chance correlation with the planted NPP
    npp = truth["npp_mean"]
    for k in ("AP", "CF"):
        assert abs(np.corrcoef(truth["soil"][k][veg], npp[veg])[0, 1]) < 0.15, k
    assert np.corrcoef(truth["soil"]["SOC"][veg], npp[veg])[0, 1] > 0.3
    # the soil property used by the vigour model is better in the east
    soc = truth["soil"]["SOC"]
    assert np.nanmean(soc[~truth["west"] & ins]) > np.nanmean(soc[truth["west"] & ins]) + 2


def test_shipped_sample_data_matches_the_generator(ds0: Path) -> None:
    shipped = REPO / "sample_data"
    if not (shipped / "dataset.toml").exists():
        pytest.skip("sample_data/ not generated in this checkout")
    assert (shipped / "dataset.toml").read_text(encoding="utf-8") == (ds0 / "dataset.toml").read_text(encoding="utf-8")
    assert set(_hashes(shipped)) == set(_hashes(ds0))
    a = _csv(shipped / "soil/samples.csv")
    b = _csv(ds0 / "soil/samples.csv")
    assert [r["id"] for r in a] == [r["id"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("lon", "lat", "soc_g_kg"):
            assert math.isclose(float(ra[k]), float(rb[k]), abs_tol=0.02)
