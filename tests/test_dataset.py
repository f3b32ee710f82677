"""Tests of npp_core.dataset: manifest parsing, alignment, dates, units and checks.

Every dataset is synthetic and tiny (a 20 × 24 UTM grid of 30 m pixels), built
in a fixture with npp_core.raster.write_raster; expected values are computed
in the test (linear fields, hand block means, hand unit conversions).
"""
from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS

from npp_core.dataset import DatasetError, Problem, open_dataset, parse_date
from npp_core.raster import Grid, write_raster

UTM = CRS.from_epsg(32649)
WGS = CRS.from_epsg(4326)
X0, Y0, RES, ROWS, COLS = 600_000.0, 4_200_000.0, 30.0, 20, 24
GRID = Grid(crs=UTM, transform=Affine(RES, 0, X0, 0, -RES, Y0), width=COLS, height=ROWS)
TO_LL = Transformer.from_crs(UTM, WGS, always_xy=True)


def _lc() -> np.ndarray:
    lc = np.ones((ROWS, COLS), dtype=np.uint8)
    lc[:, 8:16] = 2
    lc[10:, :] = 3
    lc[0, 0] = 0  # nodata
    return lc


def _months(start: str, n: int) -> list[str]:
    y, m = int(start[:4]), int(start[5:7])
    out = []
    for i in range(n):
        mm = m - 1 + i
        out.append(f"{y + mm // 12:04d}-{mm % 12 + 1:02d}")
    return out


def _write(root: Path, rel: str, data: np.ndarray, grid: Grid = GRID, **kw) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    return write_raster(p, data, grid, **kw)


BASE_MANIFEST = """
name = "tiny"
grid = "landcover.tif"

[landcover]
raster = { path = "landcover.tif", nodata = 0 }

[landcover.classes]
1 = "forest"
2 = "grassland"
3 = "farmland"

[landcover.casa_type]
forest = "deciduous_broadleaf"
grassland = "grassland"
farmland = "cropland"

[ndvi]
scale = 0.0001
fine = ["fine/ndvi_2012-05-08.tif", { path = "fine/ndvi_b.tif", date = "2012-09-13" }]
coarse = "coarse.tif"

[climate]
temperature = "tmean.tif"
precipitation = "prec.tif"
start = "2010-01"

[climate.solar]
path = "srad.tif"
units = "W m-2"
scale = 0.1

[soil]
samples = "soil.csv"
crs = "EPSG:4326"

[soil.properties]
SOC = "soc"
pH = "ph"

[degradation]
ahp = "ahp.csv"

[degradation.indicators]
subsidence = "sub.tif"
dist = { path = "dist.tif", nodata = -1 }

[degradation.direction]
dist = "lower_is_worse"

[validation]
plots = "plots.csv"
"""


def _soil_csv(n: int = 12) -> str:
    xs, ys = GRID.xy()
    rng = np.random.default_rng(1)
    lines = ["\ufeffid;x;y;soc;ph"]
    for i in range(n):
        cx = xs[rng.integers(1, COLS - 1)]
        cy = ys[rng.integers(1, ROWS - 1)]
        lon, lat = TO_LL.transform(cx + i, cy)
        lines.append(f"s{i};{lon:.7f};{lat:.7f};{10 + i},5;7,{i}")
    return "\n".join(lines) + "\n"


def build(root: Path, manifest: str = BASE_MANIFEST, n_months: int = 24) -> Path:
    """A complete valid tiny dataset."""
    root.mkdir(parents=True, exist_ok=True)
    _write(root, "landcover.tif", _lc(), dtype="uint8", nodata=0)
    rng = np.random.default_rng(0)
    f1 = (rng.uniform(0.2, 0.8, (ROWS, COLS)) * 10000).round()
    _write(root, "fine/ndvi_2012-05-08.tif", f1, dtype="int16", nodata=-32768)
    _write(root, "fine/ndvi_b.tif", f1 * 0.9, dtype="int16", nodata=-32768)
    cg = Grid(UTM, Affine(240.0, 0, X0 - 240, 0, -240.0, Y0 + 240), 6, 5)
    _write(root, "coarse.tif", rng.uniform(2000, 8000, (3, 5, 6)).round(), cg, dtype="int16", nodata=-32768,
           band_names=["2012-05-08", "2012-05-24", "2012-06-09"])
    months = np.arange(n_months)
    season = np.sin((months % 12) / 12 * 2 * np.pi - np.pi / 2)
    t = (10 + 12 * season)[:, None, None] + np.zeros((1, ROWS, COLS))
    p = (50 + 40 * season + 40)[:, None, None] + np.zeros((1, ROWS, COLS))
    s = (1800 + 800 * season)[:, None, None] + np.zeros((1, ROWS, COLS))  # 0.1 W m-2
    _write(root, "tmean.tif", t)
    _write(root, "prec.tif", p)
    _write(root, "srad.tif", s, band_names=_months("2010-01", n_months))
    (root / "soil.csv").write_text(_soil_csv(), encoding="utf-8")
    _write(root, "sub.tif", rng.uniform(0, 2, (ROWS, COLS)))
    d = rng.uniform(0, 3000, (ROWS, COLS))
    d[0, :3] = -1
    _write(root, "dist.tif", d, nodata=-1)
    (root / "ahp.csv").write_text("name,subsidence,dist\nsubsidence,1,3\ndist,0.3333333,1\n")
    xs, ys = GRID.xy()
    (root / "plots.csv").write_text(f"id,x,y,measured_npp\nP1,{xs[3]},{ys[4]},248.96\nP2,{xs[20]},{ys[15]},275.15\n")
    (root / "dataset.toml").write_text(manifest)
    return root


def set_manifest(root: Path, text: str) -> None:
    (root / "dataset.toml").write_text(text)


def errors(probs: list[Problem]) -> list[Problem]:
    return [p for p in probs if p.severity == "error"]


def find(probs: list[Problem], *words: str, severity: str | None = None) -> list[Problem]:
    out = []
    for p in probs:
        text = f"{p.file} {p.message} {p.fix}".lower()
        if all(w.lower() in text for w in words) and (severity is None or p.severity == severity):
            out.append(p)
    return out


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    return build(tmp_path / "ds")


# ----------------------------------------------------------------------------- the valid dataset

def test_valid_dataset_has_no_errors_and_reads_every_role(tiny: Path) -> None:
    with open_dataset(tiny) as ds:
        probs = ds.check()
        assert errors(probs) == [], [str(p) for p in errors(probs)]
        assert ds.name == "tiny"
        assert ds.grid.same_as(GRID)
        # mask: land cover nodata at (0, 0) is outside
        assert ds.mask.shape == (ROWS, COLS) and not ds.mask[0, 0] and ds.mask.sum() == ROWS * COLS - 1
        codes, classes, casa = ds.landcover()
        assert codes.dtype == np.int16 and codes[0, 0] == -1 and codes[0, 9] == 2 and codes[15, 3] == 3
        assert classes == {1: "forest", 2: "grassland", 3: "farmland"}
        assert casa["farmland"] == "cropland"
        fine, fdates = ds.ndvi_fine()
        assert fdates == [dt.date(2012, 5, 8), dt.date(2012, 9, 13)]
        assert fine.shape == (2, ROWS, COLS) and np.nanmax(fine) <= 1 and np.isnan(fine[:, 0, 0]).all()
        coarse, cdates = ds.ndvi_coarse()
        assert coarse.shape == (3, ROWS, COLS) and cdates[-1] == dt.date(2012, 6, 9)
        t, months = ds.climate("temperature")
        assert months[0] == "2010-01" and months[-1] == "2011-12" and t.shape == (24, ROWS, COLS)
        assert ds.climate("evapotranspiration") is None
        soil = ds.soil_samples()
        assert set(soil["values"]) == {"SOC", "pH"} and len(soil["x"]) == 12
        assert soil["values"]["SOC"][0] == pytest.approx(10.5) and soil["values"]["pH"][3] == pytest.approx(7.3)
        deg = ds.degradation()
        assert deg["ahp_names"] == ["subsidence", "dist"] and deg["ahp_matrix"][0, 1] == 3
        assert deg["direction"] == {"subsidence": "higher_is_worse", "dist": "lower_is_worse"}
        assert np.isnan(deg["indicators"]["dist"][0, 1])  # declared nodata -1
        plots = ds.validation_plots()
        xs, ys = GRID.xy()
        assert plots[0]["id"] == "P1" and plots[0]["x"] == pytest.approx(xs[3]) and plots[1]["measured"] == 275.15
        assert ds.npp_ready() is None and ds.ld_raster() is None and ds.soil_rasters() == {}
        summ = ds.summary()
        json.dumps(summ)
        by_role = {lay["role"]: lay for lay in summ["layers"]}
        assert by_role["ndvi.coarse"]["resampling"] == "bilinear"
        assert by_role["landcover"]["resampling"] == "none"
        assert by_role["climate.solar"]["units"] == "W m-2 → MJ m-2 month-1"
        assert by_role["climate.temperature"]["dates"] == {"first": "2010-01-01", "last": "2011-12-01", "count": 24}
        kinds = {lay.role: lay.kind for lay in ds.layers()}
        assert kinds["landcover"] == "categorical" and kinds["soil.samples"] == "table"
        thumb = [lay for lay in ds.layers() if lay.role == "climate.temperature"][0].read_aligned()
        assert thumb.shape == (ROWS, COLS) and thumb[5, 5] == pytest.approx(t[:, 5, 5].mean())


def test_arrays_are_memoised(tiny: Path) -> None:
    with open_dataset(tiny) as ds:
        a = ds.climate("solar")[0]
        assert ds.climate("solar")[0] is a


# ----------------------------------------------------------------------------- manifest parsing

def test_section_defaults_inline_tables_lists_and_subtables(tiny: Path) -> None:
    with open_dataset(tiny) as ds:
        ents = ds._roles["ndvi.fine"]
        assert [e.path for e in ents] == ["fine/ndvi_2012-05-08.tif", "fine/ndvi_b.tif"]
        assert all(e.scale == 0.0001 for e in ents)  # section default
        assert ents[1].date == "2012-09-13"  # inline table
        sol = ds._roles["climate.solar"][0]
        assert (sol.units, sol.scale) == ("W m-2", 0.1)  # sub-table entry
        assert ds._roles["degradation.indicators.dist"][0].nodata == -1
        assert ds._roles["landcover"][0].nodata == 0


def test_unknown_keys_warn_with_suggestion(tiny: Path) -> None:
    text = BASE_MANIFEST.replace('name = "tiny"', 'name = "tiny"\ncolour = "red"').replace(
        "[ndvi]\n", "[ndvi]\ncomposit = \"max\"\n").replace('[landcover]', '[landcovr]\nx = 1\n\n[landcover]')
    set_manifest(tiny, text)
    with open_dataset(tiny) as ds:
        probs = ds.check()
    assert find(probs, "colour", severity="warning")
    assert find(probs, "composit", "did you mean 'composite'", severity="warning")
    assert find(probs, "landcovr", "did you mean 'landcover'", severity="warning")


def test_missing_manifest_and_bad_toml(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="dataset.toml: not found"):
        open_dataset(tmp_path / "empty")
    root = build(tmp_path / "bad")
    set_manifest(root, 'grid = "landcover.tif"\n[ndvi]\ncoarse = { path = "a.tif",\n scale = 1 }\n')
    with pytest.raises(DatasetError, match="not valid TOML.*one line"):
        open_dataset(root)
    assert issubclass(DatasetError, ValueError)


def test_unusable_grid_raises(tmp_path: Path) -> None:
    root = build(tmp_path / "g")
    set_manifest(root, 'grid = "nothere.tif"\n')
    with pytest.raises(DatasetError, match="nothere.tif.*not found.*'grid'"):
        open_dataset(root)
    (root / "junk.tif").write_bytes(b"not a tiff")
    set_manifest(root, 'grid = "junk.tif"\n')
    with pytest.raises(DatasetError, match="junk.tif"):
        open_dataset(root)
    set_manifest(root, "name = 'x'\n")
    with pytest.raises(DatasetError, match="no reference grid"):
        open_dataset(root)


def test_missing_file_names_path_and_key(tiny: Path) -> None:
    set_manifest(tiny, BASE_MANIFEST.replace('precipitation = "prec.tif"', 'precipitation = "Prec.tif"'))
    with open_dataset(tiny) as ds:
        probs = ds.check()
        hit = find(probs, "Prec.tif", "climate.precipitation", "not found", severity="error")
        assert hit and "prec.tif" in hit[0].message  # case hint
        with pytest.raises(DatasetError, match="Prec.tif"):
            ds.climate("precipitation")


@pytest.mark.parametrize("bad", ["../outside.tif", "/etc/passwd", "C:/data/x.tif", "sub/../../x.tif"])
def test_paths_must_stay_inside(tiny: Path, bad: str) -> None:
    (tiny.parent / "outside.tif").write_bytes(b"x")
    set_manifest(tiny, BASE_MANIFEST.replace('subsidence = "sub.tif"', f'subsidence = "{bad}"'))
    with open_dataset(tiny) as ds:
        probs = ds.check()
    hit = find(probs, "leaves the dataset folder", severity="error")
    assert hit and hit[0].file == bad and hit[0].role == "degradation.indicators.subsidence"


# ----------------------------------------------------------------------------- alignment

def _one_layer_ds(root: Path, data: np.ndarray, grid: Grid, *, entry: str = '"x.tif"', extra: str = "",
                  **kw) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    _write(root, "grid.tif", np.ones((ROWS, COLS), dtype=np.uint8), dtype="uint8", nodata=0)
    _write(root, "x.tif", data, grid, **kw)
    set_manifest(root, f'grid = "grid.tif"\n[drivers]\nX = {entry}\n{extra}')
    return root


def test_other_crs_wgs84_to_utm_values_at_known_points(tmp_path: Path) -> None:
    lon0, lat0 = TO_LL.transform(X0 - 200, Y0 + 200)
    lon1, lat1 = TO_LL.transform(X0 + COLS * RES + 200, Y0 - ROWS * RES - 200)
    lon0, lon1 = min(lon0, lon1) - 0.002, max(lon0, lon1) + 0.002
    lat0, lat1 = max(lat0, lat1) + 0.002, min(lat0, lat1) - 0.002
    res = 0.0005  # ~45 × 55 m: coarser than 30 m → bilinear
    w, h = int(np.ceil((lon1 - lon0) / res)), int(np.ceil((lat0 - lat1) / res))
    g = Grid(WGS, Affine(res, 0, lon0, 0, -res, lat0), w, h)
    lon = lon0 + (np.arange(w) + 0.5) * res
    lat = lat0 - (np.arange(h) + 0.5) * res
    field = 1000 * (lon[None, :] - 111) + 500 * (lat[:, None] - 37)
    root = _one_layer_ds(tmp_path / "a", field, g, dtype="float64")
    with open_dataset(root) as ds:
        out = ds.extra_drivers()["X"][1]
        assert not find(ds.check(["drivers"]), "x.tif", severity="error")
        summ = {lay["role"]: lay for lay in ds.summary()["layers"]}
    assert summ["drivers.X"]["resampling"] == "bilinear" and summ["drivers.X"]["crs"] == "EPSG:4326"
    xs, ys = GRID.xy()
    for r, c in [(2, 3), (10, 12), (17, 21), (5, 18)]:
        lo, la = TO_LL.transform(xs[c], ys[r])
        # bilinear is exact on a linear field; GDAL's approximate transformer allows 1/8 source pixel (0.0625 here)
        assert out[r, c] == pytest.approx(1000 * (lo - 111) + 500 * (la - 37), abs=0.07)
    assert np.isfinite(out).all()


def test_coarser_same_crs_is_bilinear(tmp_path: Path) -> None:
    cres = 90.0
    g = Grid(UTM, Affine(cres, 0, X0 - 90, 0, -cres, Y0 + 90), COLS // 3 + 3, ROWS // 3 + 3)
    cx = g.transform.c + (np.arange(g.width) + 0.5) * cres
    cy = g.transform.f - (np.arange(g.height) + 0.5) * cres
    field = 0.01 * (cx[None, :] - X0) + 0.02 * (Y0 - cy[:, None])
    root = _one_layer_ds(tmp_path / "b", field, g, dtype="float64")
    with open_dataset(root) as ds:
        out = ds.extra_drivers()["X"][1]
        info = ds._cache["drivers.X"][2]
    assert info["resampling"] == ["bilinear"]
    xs, ys = GRID.xy()
    expect = 0.01 * (xs[None, :] - X0) + 0.02 * (Y0 - ys[:, None])
    np.testing.assert_allclose(out, expect, atol=1e-9)


def test_finer_same_crs_is_block_average(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    g = Grid(UTM, Affine(10.0, 0, X0, 0, -10.0, Y0), COLS * 3, ROWS * 3)
    fine = rng.uniform(0, 100, (ROWS * 3, COLS * 3))
    fine[4, 4] = -9999  # nodata inside block (1, 1): excluded from its mean
    root = _one_layer_ds(tmp_path / "c", fine, g, dtype="float64", nodata=-9999)
    with open_dataset(root) as ds:
        out = ds.extra_drivers()["X"][1]
        assert ds._cache["drivers.X"][2]["resampling"] == ["average"]
    block = fine[3:6, 6:9]
    assert out[1, 2] == pytest.approx(block.mean(), rel=1e-9)  # hand block mean
    b11 = fine[3:6, 3:6].ravel()
    assert out[1, 1] == pytest.approx(b11[b11 != -9999].mean(), rel=1e-9)
    expect = fine.reshape(ROWS, 3, COLS, 3).mean(axis=(1, 3))
    ok = np.ones((ROWS, COLS), bool)
    ok[1, 1] = False
    np.testing.assert_allclose(out[ok], expect[ok], rtol=1e-9)


def test_categorical_is_nearest(tmp_path: Path) -> None:
    root = tmp_path / "lc"
    root.mkdir()
    g = Grid(UTM, Affine(10.0, 0, X0, 0, -10.0, Y0), COLS * 3, ROWS * 3)
    rng = np.random.default_rng(5)
    codes = rng.integers(1, 4, (ROWS * 3, COLS * 3)).astype(np.uint8)
    _write(root, "grid.tif", np.zeros((ROWS, COLS)))
    _write(root, "lc.tif", codes, g, dtype="uint8", nodata=0)
    set_manifest(root, 'grid = "grid.tif"\n[landcover]\nraster = "lc.tif"\n[landcover.classes]\n1 = "a"\n2 = "b"\n'
                       '3 = "c"\n[landcover.casa_type]\na = "shrub"\nb = "grassland"\nc = "none"\n')
    with open_dataset(root) as ds:
        out, classes, casa = ds.landcover()
        assert ds._cache["landcover#raw"][2]["resampling"] == ["nearest"]
    np.testing.assert_array_equal(out, codes[1::3, 1::3])  # the source pixel under each centre
    assert casa == {"a": "shrub", "b": "grassland", "c": "none"}


def test_partial_overlap_nan_outside_and_warning(tmp_path: Path) -> None:
    g = Grid(UTM, Affine(RES, 0, X0 + 12 * RES, 0, -RES, Y0), COLS, ROWS)  # right half only
    root = _one_layer_ds(tmp_path / "d", np.full((ROWS, COLS), 5.0), g)
    with open_dataset(root) as ds:
        out = ds.extra_drivers()["X"][1]
        probs = ds.check(["drivers"])
    assert np.isnan(out[:, :12]).all() and (out[:, 12:] == 5).all()
    hit = find(probs, "x.tif", "covers only 50.0%", severity="warning")
    assert hit and not find(probs, "x.tif", "are nodata")


def test_no_overlap_is_error(tmp_path: Path) -> None:
    g = Grid(UTM, Affine(RES, 0, X0 + 10_000, 0, -RES, Y0), COLS, ROWS)
    root = _one_layer_ds(tmp_path / "e", np.ones((ROWS, COLS)), g)
    with open_dataset(root) as ds:
        assert find(ds.check(), "x.tif", "does not overlap", severity="error")
        with pytest.raises(DatasetError, match="x.tif.*does not overlap"):
            ds.extra_drivers()


def test_missing_crs(tmp_path: Path) -> None:
    root = tmp_path / "f"
    root.mkdir()
    _write(root, "grid.tif", np.ones((ROWS, COLS)))
    nocrs_same = Grid(None, GRID.transform, COLS, ROWS)  # type: ignore[arg-type]
    nocrs_other = Grid(None, Affine(10, 0, 0, 0, -10, 0), 5, 5)  # type: ignore[arg-type]
    _write(root, "same.tif", np.ones((ROWS, COLS)), nocrs_same)
    _write(root, "other.tif", np.ones((5, 5)), nocrs_other)
    set_manifest(root, 'grid = "grid.tif"\n[drivers]\nA = "same.tif"\nB = "other.tif"\n'
                       'C = { path = "other.tif", crs = "EPSG:32649" }\n')
    with open_dataset(root) as ds:
        probs = ds.check()
    assert find(probs, "same.tif", "no crs", "assumed", severity="warning")
    assert find(probs, "other.tif", "no crs", "cannot be reprojected", "crs =", severity="error")
    # with a crs given the file is placed (far away here) → overlap error instead of a CRS error
    assert find(probs, "other.tif", "does not overlap", severity="error")


# ----------------------------------------------------------------------------- scale, units, dates

def test_scale_offset_then_units_w_m2_to_mj_month(tmp_path: Path) -> None:
    root = tmp_path / "u"
    root.mkdir()
    _write(root, "grid.tif", np.ones((ROWS, COLS)))
    raw = np.full((2, ROWS, COLS), 1990.0)  # × 0.1 + 1 = 200 W m-2
    _write(root, "s.tif", raw, band_names=["2011-01", "2011-02"])
    set_manifest(root, 'grid = "grid.tif"\n[climate]\nsolar = { path = "s.tif", units = "W m-2", scale = 0.1, '
                       'offset = 1.0 }\n')
    with open_dataset(root) as ds:
        (lay,) = ds.layers()
        assert lay.read_aligned(band=0)[3, 3] == pytest.approx(535.68)  # thumbnails in canonical units too
        s, months = ds.climate("solar")
    assert months == ["2011-01", "2011-02"]
    assert s[0, 3, 3] == pytest.approx(535.68)  # 200 × 86400 × 31 / 1e6
    assert s[1, 3, 3] == pytest.approx(200 * 86400 * 28 / 1e6)


def test_kelvin_per_day_negative_and_solar_checks(tmp_path: Path) -> None:
    root = tmp_path / "k"
    root.mkdir()
    _write(root, "grid.tif", np.ones((ROWS, COLS)))
    m = _months("2010-01", 12)
    season = np.sin(np.arange(12) / 12 * 2 * np.pi)[:, None, None] + np.zeros((1, ROWS, COLS))
    _write(root, "tk.tif", 283 + 10 * season, band_names=m)
    pday = 1.5 + season
    _write(root, "pday.tif", pday, band_names=m)
    pneg = 60 + 30 * season
    pneg[0, 0, :] = -9999
    _write(root, "pneg.tif", pneg, band_names=m)
    _write(root, "sday.tif", 15 + 5 * season, band_names=m)
    set_manifest(root, 'grid = "grid.tif"\n[climate]\ntemperature = "tk.tif"\nprecipitation = "pday.tif"\n'
                       'solar = "sday.tif"\n[drivers]\n')
    with open_dataset(root) as ds:
        probs = ds.check(["casa"])
        with pytest.raises(DatasetError, match="tk.tif.*kelvin"):
            ds.climate("temperature")
    assert find(probs, "tk.tif", "kelvin", 'units = "K"', severity="error")
    assert find(probs, "pday.tif", "mm per day", "mm d-1", severity="warning")
    assert find(probs, "sday.tif", "MJ m-2 d-1", severity="warning")
    with open_dataset(root) as ds:
        by_role = {lay["role"]: lay for lay in ds.summary()["layers"]}
    assert by_role["climate.temperature"]["units_guessed"] == "K"
    assert by_role["climate.precipitation"]["units_guessed"] == "mm d-1"
    assert by_role["climate.solar"]["units_guessed"] == "MJ m-2 d-1"
    set_manifest(root, 'grid = "grid.tif"\n[climate]\ntemperature = { path = "tk.tif", units = "K" }\n'
                       'precipitation = "pneg.tif"\n')
    with open_dataset(root) as ds:
        probs = ds.check(["casa"])
        t, _ = ds.climate("temperature")
        assert t[0, 5, 5] == pytest.approx(283 + 10 * season[0, 5, 5] - 273.15)
    assert find(probs, "pneg.tif", "nodata", "-9999", severity="error")
    assert not find(probs, "tk.tif", "kelvin")
    _write(root, "pneg.tif", np.where(pneg < -1, -3.0, pneg), band_names=m)
    with open_dataset(root) as ds:
        assert find(ds.check(), "pneg.tif", "negative precipitation", severity="error")


def test_ndvi_scale_check(tiny: Path) -> None:
    set_manifest(tiny, BASE_MANIFEST.replace("scale = 0.0001\n", ""))
    with open_dataset(tiny) as ds:
        probs = ds.check()
        with pytest.raises(DatasetError, match="scale = 0.0001"):
            ds.ndvi_fine()
    hit = find(probs, "ndvi_2012-05-08.tif", "outside [-1, 1]", "scale = 0.0001", severity="error")
    assert hit and hit[0].role == "ndvi.fine"


def test_all_nodata_and_mostly_nodata_layers(tmp_path: Path) -> None:
    root = _one_layer_ds(tmp_path / "n", np.full((ROWS, COLS), -5.0), GRID, nodata=-5.0)
    with open_dataset(root) as ds:
        assert find(ds.check(), "x.tif", "no valid pixel", severity="error")
    a = np.full((ROWS, COLS), 1.0)
    a[:5] = -5.0  # 25 % nodata
    root = _one_layer_ds(tmp_path / "m", a, GRID, nodata=-5.0)
    with open_dataset(root) as ds:
        assert find(ds.check(), "x.tif", "25.0% of the values", severity="warning")


def test_dates_from_descriptions_tags_names_and_start(tmp_path: Path) -> None:
    root = tmp_path / "dates"
    root.mkdir()
    _write(root, "grid.tif", np.ones((ROWS, COLS)))
    z = np.zeros((2, ROWS, COLS))
    _write(root, "desc.tif", z, band_names=["2012-05-08", "2012-05-24"])
    _write(root, "tag.tif", z, band_tags=[{"DATE": "2013-01"}, {"DATE": "2013-02-15"}])
    _write(root, "img_20140301.tif", z[0])
    _write(root, "MOD13Q1.A2015017.tif", z[0])
    _write(root, "plain.tif", np.zeros((3, ROWS, COLS)))
    base = 'grid = "grid.tif"\n[ndvi]\n'
    cases = {
        'fine_series = "desc.tif"': [dt.date(2012, 5, 8), dt.date(2012, 5, 24)],
        'fine_series = "tag.tif"': [dt.date(2013, 1, 1), dt.date(2013, 2, 15)],
        'fine_series = ["MOD13Q1.A2015017.tif", "img_20140301.tif"]': [dt.date(2014, 3, 1), dt.date(2015, 1, 17)],
        'fine_series = "plain.tif"\nstart = "2012-12-18"\nstep = "modis16"':
            [dt.date(2012, 12, 18), dt.date(2013, 1, 1), dt.date(2013, 1, 17)],
        'fine_series = { path = "plain.tif", start = "2010-02-01", step = "8D" }':
            [dt.date(2010, 2, 1), dt.date(2010, 2, 9), dt.date(2010, 2, 17)],
    }
    for text, expect in cases.items():
        set_manifest(root, base + text + "\n")
        with open_dataset(root) as ds:
            assert ds.ndvi_series()[1] == expect, text
    set_manifest(root, base + 'fine_series = "plain.tif"\n')
    with open_dataset(root) as ds:
        hit = find(ds.check(), "plain.tif", "cannot date", "start", severity="error")
        assert hit and hit[0].file == "plain.tif"
    # climate: one file per month, dates from the names, sorted
    for mth in ("2010-02", "2010-01", "2010-03"):
        _write(root, f"clim/t_{mth}.tif", np.full((ROWS, COLS), float(mth[-1])))
    set_manifest(root, 'grid = "grid.tif"\n[climate]\ntemperature = ["clim/t_2010-02.tif", "clim/t_2010-01.tif", '
                       '"clim/t_2010-03.tif"]\n')
    with open_dataset(root) as ds:
        t, months = ds.climate("temperature")
    assert months == ["2010-01", "2010-02", "2010-03"] and list(t[:, 2, 2]) == [1, 2, 3]


def test_parse_date_forms() -> None:
    assert parse_date("ndvi_2012-05-08.tif") == dt.date(2012, 5, 8)
    assert parse_date("t_2010_07") == dt.date(2010, 7, 1)
    assert parse_date("A2012129") == dt.date(2012, 5, 8)
    assert parse_date("ndvi_30m_16day") is None
    assert parse_date("npp_2015", year_only=True) == dt.date(2015, 1, 1)


def test_npp_ready_years(tmp_path: Path) -> None:
    root = tmp_path / "npp"
    root.mkdir()
    _write(root, "grid.tif", np.ones((ROWS, COLS)))
    _write(root, "npp.tif", np.full((2, ROWS, COLS), 300.0), band_names=["2015", "2016"])
    set_manifest(root, 'grid = "grid.tif"\n[npp]\nannual = "npp.tif"\n')
    with open_dataset(root) as ds:
        stack, years = ds.npp_ready()
        probs = ds.check(["fusion", "casa"])
    assert years == [2015, 2016] and stack.shape == (2, ROWS, COLS)
    assert not errors(probs) and find(probs, "CASA is skipped")


# ----------------------------------------------------------------------------- requirements, boundary

def test_missing_roles_for_stages(tmp_path: Path) -> None:
    root = tmp_path / "req"
    root.mkdir()
    _write(root, "grid.tif", np.ones((ROWS, COLS)))
    set_manifest(root, 'grid = "grid.tif"\n')
    with open_dataset(root) as ds:
        assert find(ds.check(["fusion"]), "fusion needs", "fine", severity="error")
        casa = ds.check(["casa"])
        assert find(casa, "casa needs", "temperature, precipitation, solar", severity="error")
        assert find(casa, "casa needs", "land cover", severity="error")
        drv = ds.check(["drivers"])
        assert find(drv, "soil samples", severity="error") and find(drv, "degradation", severity="error")
        assert not find(ds.check(["fusion"]), "soil")


def test_boundary_in_wgs84_masks_pixels(tiny: Path) -> None:
    xs, ys = GRID.xy()
    # left half of the grid as a lon/lat polygon
    ring = [TO_LL.transform(x, y) for x, y in [(X0, Y0), (X0 + 12 * RES, Y0), (X0 + 12 * RES, Y0 - ROWS * RES),
                                                (X0, Y0 - ROWS * RES), (X0, Y0)]]
    gj = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                                                     "geometry": {"type": "Polygon", "coordinates": [ring]}}]}
    (tiny / "boundary.geojson").write_text(json.dumps(gj))
    set_manifest(tiny, BASE_MANIFEST.replace('grid = "landcover.tif"', 'grid = "landcover.tif"\nboundary = "boundary.geojson"'))
    with open_dataset(tiny) as ds:
        m = ds.mask
        t, _ = ds.climate("temperature")
        assert not errors(ds.check())
    assert m[5, 2:11].all() and not m[:, 13:].any()
    assert np.isnan(t[:, :, 14]).all() and np.isfinite(t[:, 5, 5]).all()


def test_landcover_class_checks(tiny: Path) -> None:
    text = BASE_MANIFEST.replace('3 = "farmland"\n', "").replace('farmland = "cropland"', 'farmland = "cropland"\n'
                                                                 'grassland2 = "grass"')
    text = text.replace('grassland = "grassland"', 'grassland = "grasland"')
    set_manifest(tiny, text)
    with open_dataset(tiny) as ds:
        probs = ds.check()
        with pytest.raises(DatasetError, match="grasland"):
            ds.landcover()
    assert find(probs, "landcover.tif", "codes [3]", "nodata", severity="warning")
    assert find(probs, "grasland", "did you mean 'grassland'", severity="error")


# ----------------------------------------------------------------------------- soil CSV checks

def test_soil_csv_problems(tiny: Path) -> None:
    good = (tiny / "soil.csv").read_text(encoding="utf-8")
    (tiny / "soil.csv").write_text(good.replace(";soc;", ";SOC_g;"), encoding="utf-8")
    with open_dataset(tiny) as ds:
        hit = find(ds.check(), "soil.csv", "'soc'", "columns found", severity="error")
        assert hit and "SOC_g" in hit[0].message
    lines = good.splitlines()
    lines[3] = lines[3].rsplit(";", 1)[0] + ";n.d."
    (tiny / "soil.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open_dataset(tiny) as ds:
        assert find(ds.check(), "soil.csv", "'ph'", "line(s) 4", severity="error")
    # swapped lon/lat
    hdr, *rows = good.splitlines()
    swapped = [hdr] + [";".join([r.split(";")[0], r.split(";")[2], r.split(";")[1], *r.split(";")[3:]]) for r in rows]
    (tiny / "soil.csv").write_text("\n".join(swapped) + "\n", encoding="utf-8")
    with open_dataset(tiny) as ds:
        assert find(ds.check(), "soil.csv", "swapped", "x_column", severity="error")
    # projected coordinates declared as lon/lat (orders of magnitude off)
    xs, ys = GRID.xy()
    (tiny / "soil.csv").write_text("id,x,y,soc,ph\n" + "".join(f"{i},{xs[i]},{ys[i]},1,7\n" for i in range(12)))
    with open_dataset(tiny) as ds:
        assert find(ds.check(), "soil.csv", "too large for longitude/latitude", "EPSG:32649", severity="error")
    # duplicates
    (tiny / "soil.csv").write_text(good + lines[1].replace("s0", "dup") + "\n", encoding="utf-8")
    with open_dataset(tiny) as ds:
        assert find(ds.check(), "soil.csv", "share a location", "dup", severity="warning")


# ----------------------------------------------------------------------------- zip, hashing

def _zip_dir(root: Path, prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + p.relative_to(root).as_posix())
    return buf.getvalue()


def test_open_zip_bytes_and_file_and_cleanup(tiny: Path, tmp_path: Path) -> None:
    data = _zip_dir(tiny, "basin/")
    ds = open_dataset(data)
    tmp = ds._tmpdir
    assert tmp is not None and tmp.exists() and ds.root.name == "basin"
    assert not errors(ds.check())
    ds.close()
    assert not tmp.exists()
    zp = tmp_path / "ds.zip"
    zp.write_bytes(_zip_dir(tiny))
    with open_dataset(zp) as ds2:
        assert ds2.climate("temperature")[0].shape == (24, ROWS, COLS)
        t2 = ds2._tmpdir
    assert not t2.exists()
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../evil.txt", "x")
        zf.writestr("dataset.toml", "")
    with pytest.raises(DatasetError, match="evil.txt"):
        open_dataset(evil.getvalue())


def test_content_hash(tiny: Path) -> None:
    with open_dataset(tiny) as ds:
        h_all, h_clim, h_soil = ds.content_hash(), ds.content_hash("climate"), ds.content_hash("soil")
        assert len(h_all) == 64 and len({h_all, h_clim, h_soil}) == 3
    _write(tiny, "prec.tif", np.ones((24, ROWS, COLS)))
    with open_dataset(tiny) as ds:
        assert ds.content_hash("climate") != h_clim
        assert ds.content_hash("soil") == h_soil
        assert ds.content_hash("climate.temperature") == ds.content_hash("climate.temperature")
    set_manifest(tiny, BASE_MANIFEST.replace('units = "W m-2"', 'units = "MJ m-2 d-1"'))
    with open_dataset(tiny) as ds:
        assert ds.content_hash("soil") == h_soil and ds.content_hash("climate.solar") != h_clim


# ----------------------------------------------------------------------------- the bundled sample

def test_sample_basin_has_no_errors() -> None:
    root = Path(__file__).resolve().parents[1] / "sample_data"
    if not (root / "dataset.toml").is_file():
        pytest.skip("sample_data/dataset.toml not generated yet")
    with open_dataset(root) as ds:
        probs = ds.check()
        assert errors(probs) == [], [str(p) for p in errors(probs)]


def test_large_source_is_read_through_a_window(tmp_path: Path) -> None:
    # a source 10× larger than the grid in each direction; only the window around the grid is read
    g = Grid(UTM, Affine(RES, 0, X0 - 100 * RES, 0, -RES, Y0 + 100 * RES), COLS * 10, ROWS * 10)
    cx = g.transform.c + (np.arange(g.width) + 0.5) * RES
    cy = g.transform.f - (np.arange(g.height) + 0.5) * RES
    field = (cx[None, :] - X0) + 1000 * (Y0 - cy[:, None])
    root = _one_layer_ds(tmp_path / "w", field, g, dtype="float64")
    with open_dataset(root) as ds:
        out = ds.extra_drivers()["X"][1]
        src = ds.summary()["layers"][0]
    xs, ys = GRID.xy()
    np.testing.assert_allclose(out, (xs[None, :] - X0) + 1000 * (Y0 - ys[:, None]))
    assert src["shape"] == [ROWS * 10, COLS * 10] and src["resampling"] == "none"


def test_unusable_boundary_is_an_error_not_a_silent_full_mask(tiny: Path) -> None:
    (tiny / "boundary.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [
        [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}))  # lon/lat far from the grid
    set_manifest(tiny, BASE_MANIFEST.replace('grid = "landcover.tif"', 'grid = "landcover.tif"\nboundary = "boundary.geojson"'))
    with open_dataset(tiny) as ds:
        probs = ds.check()
        assert find(probs, "boundary.geojson", "does not cover any pixel", severity="error")
        with pytest.raises(DatasetError, match="boundary.geojson"):
            _ = ds.mask
        with pytest.raises(DatasetError, match="boundary.geojson"):
            ds.climate("temperature")
        assert ds.summary()["mask"]["errors"]


def test_section_crs_is_coordinates_for_tables_and_fills_missing_raster_crs(tmp_path: Path) -> None:
    root = tmp_path / "crs"
    root.mkdir()
    _write(root, "grid.tif", np.ones((ROWS, COLS)))
    _write(root, "ref.tif", np.full((ROWS, COLS), 7.0))  # in the grid's UTM CRS
    _write(root, "t_nocrs.tif", np.full((12, ROWS, COLS), 5.0), Grid(None, Affine(0.001, 0, 0, 0, -0.001, 0), COLS, ROWS),  # type: ignore[arg-type]
           band_names=_months("2010-01", 12))
    xs, ys = GRID.xy()
    lon, lat = TO_LL.transform(xs[6], ys[7])
    (root / "plots.csv").write_text(f"id,x,y,measured_npp,radius_m\nA,{lon:.8f},{lat:.8f},250,45\n")
    set_manifest(root, 'grid = "grid.tif"\n[validation]\ncrs = "EPSG:4326"\nplots = "plots.csv"\n'
                       'reference_npp = "ref.tif"\n[climate]\ncrs = "EPSG:32649"\ntemperature = "t_nocrs.tif"\n')
    with open_dataset(root) as ds:
        assert np.all(ds.reference_npp() == 7.0)  # [validation] crs did not override the raster's CRS
        (plot,) = ds.validation_plots()
        assert plot["x"] == pytest.approx(xs[6], abs=1e-3) and plot["y"] == pytest.approx(ys[7], abs=1e-3)
        assert plot["radius_m"] == 45 and plot["measured"] == 250
        # [climate] crs gives the CRS-less file a CRS: it lands far from the grid → overlap error, not a CRS error
        probs = ds.check(["casa"])
    assert find(probs, "t_nocrs.tif", "does not overlap", severity="error")
    assert not find(probs, "t_nocrs.tif", "no crs")


def test_solar_that_looks_like_w_m2_warns(tmp_path: Path) -> None:
    root = tmp_path / "w"
    root.mkdir()
    _write(root, "grid.tif", np.ones((ROWS, COLS)))
    season = np.sin(np.arange(12) / 12 * 2 * np.pi)[:, None, None] + np.zeros((1, ROWS, COLS))
    _write(root, "s.tif", 180 + 80 * season, band_names=_months("2010-01", 12))  # W m-2 without units
    set_manifest(root, 'grid = "grid.tif"\n[climate]\nsolar = "s.tif"\n')
    with open_dataset(root) as ds:
        assert find(ds.check(), "s.tif", "W m-2", severity="warning")


def test_extra_drivers_dem_mines_and_stage_aliases(tmp_path: Path) -> None:
    root = tmp_path / "x"
    root.mkdir()
    _write(root, "grid.tif", np.ones((ROWS, COLS)))
    _write(root, "gdp.tif", np.full((ROWS, COLS), 3.0))
    _write(root, "dem.tif", np.full((ROWS, COLS), 900.0))
    xs, ys = GRID.xy()
    (root / "mines.csv").write_text(f"id,x,y,name\nm1,{xs[2]},{ys[3]},North pit\n")
    set_manifest(root, 'grid = "grid.tif"\n[drivers]\nGDP = { path = "gdp.tif", category = "H" }\n'
                       'POP = "gdp.tif"\n[terrain]\ndem = "dem.tif"\n[degradation]\nmines = "mines.csv"\n')
    with open_dataset(root) as ds:
        ex = ds.extra_drivers()
        assert ex["GDP"][0] == "H" and ex["POP"][0] == "M" and np.all(ex["GDP"][1] == 3.0)
        assert ds.dem()[4, 4] == 900 and ds.mines() == [dict(id="m1", x=xs[2], y=ys[3], name="North pit")]
        assert find(ds.check(["sampling"]), "drivers needs", "soil", severity="error")
        assert not find(ds.check(["sampling"]), "fusion needs")


def test_dataset_from_uploaded_files(tiny: Path) -> None:
    from npp_core.dataset import dataset_from_files

    files = {"lc.tif": (tiny / "landcover.tif").read_bytes(), "clim/t.tif": (tiny / "tmean.tif").read_bytes()}
    manifest = {"name": "up", "grid": "lc.tif", "landcover": {"raster": "lc.tif"},
                "climate": {"temperature": "clim/t.tif", "start": "2010-01"}}
    ds = dataset_from_files(files, manifest)
    tmp = ds._tmpdir
    t, months = ds.climate("temperature")
    assert months[0] == "2010-01" and t.shape == (24, ROWS, COLS) and ds.name == "up"
    ds.close()
    assert not tmp.exists()
    for bad in ("../x.tif", "/abs.tif", "a/../../b.tif", "dataset.toml", "c:\\x.tif"):
        with pytest.raises(DatasetError, match="acceptable file name"):
            dataset_from_files({bad: b"x"}, manifest)
