"""Property-based tests (hypothesis): parsers never crash, numeric kernels keep their ranges.

* the manifest parser on random manifests (structured and mangled text): only
  :class:`DatasetError` at open; ``check()``, ``summary()`` and every accessor answer with
  problems or :class:`DatasetError`, never another exception;
* the CSV reader on random bytes and random dialects: only :class:`TableError` or a frame, and
  numbers written with any separator / decimal comma / BOM read back exactly;
* ``lcc.local_correlation`` against a brute-force window Pearson written here;
* ``casa.npp_monthly``: NPP ≥ 0 or NaN, NaN only where an input is NaN;
* ``ahp.weights`` on random reciprocal matrices; ``attribution.dominant_classes`` against a
  brute-force ranking.
"""
from __future__ import annotations

import math
import os
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from rasterio.crs import CRS
from rasterio.transform import from_origin

from npp_core.dataset import (CLIMATE_VARS, ENTRY_KEYS, SECTION_KEYS, TOP_KEYS, Dataset, DatasetError, Problem)
from npp_core.raster import Grid, write_raster
from npp_core.tables import TableError, read_csv

#: More examples for a long fuzzing session: NPP_FUZZ_EXAMPLES=2000 pytest tests/test_properties.py
N_EXAMPLES = int(os.environ.get("NPP_FUZZ_EXAMPLES", "60"))
FAST = settings(max_examples=N_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

# --------------------------------------------------------------------------- manifest parser

GRID = Grid(CRS.from_epsg(32649), from_origin(600000, 3900080, 10, 10), 8, 8)
FILES = ["g.tif", "a.tif", "n.tif", "s.csv", "m.csv", "b.geojson", "missing.tif", "../out.tif", "/etc/passwd",
         "C:/x.tif", "", " ", "a.tif/../g.tif", "sub/../a.tif", "s.csv\u0000"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    lc = np.tile(np.array([1, 2, 3, 1], float), (8, 2))
    write_raster(root / "g.tif", lc, GRID, dtype="uint8", nodata=0)
    write_raster(root / "a.tif", np.arange(3 * 64, dtype=float).reshape(3, 8, 8), GRID,
                 band_names=["2010-01", "2010-02", "2010-03"])
    write_raster(root / "n.tif", np.full((8, 8), 5000.0), GRID, dtype="int16", nodata=-3000, band_names=["2010-05-01"])
    (root / "s.csv").write_text("id;x;y;v\n1;600005;3900075;1,5\n2;600015;3900065;2\n", encoding="utf-8")
    (root / "m.csv").write_text("i,a,b\na,1,3\nb,0.3333,1\n", encoding="utf-8")
    (root / "b.geojson").write_text('{"type":"Polygon","coordinates":[[[600000,3900000],[600080,3900000],'
                                    '[600080,3900080],[600000,3900000]]]}', encoding="utf-8")
    return root


_leaf = st.one_of(
    st.sampled_from(FILES),
    st.text(max_size=8),
    st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["EPSG:4326", "EPSG:32649", "nonsense", "K", "W m-2", "mm d-1", "2010-01", "16D", "0M", "max"]),
)
_entry = st.fixed_dictionaries({}, optional={k: _leaf for k in ENTRY_KEYS})
_value = st.one_of(_leaf, _entry, st.lists(st.one_of(_leaf, _entry), max_size=3))
_sec_keys = sorted({k for ks in SECTION_KEYS.values() for k in ks} | set(CLIMATE_VARS) | {"1", "x", "forest"})
_section = st.dictionaries(st.sampled_from(_sec_keys) | st.text(min_size=1, max_size=5),
                           st.one_of(_value, st.dictionaries(st.sampled_from(["1", "2", "forest", "goaf", "SOC", "a"]) |
                                                             st.text(min_size=1, max_size=4), _value, max_size=3)),
                           max_size=5)
_manifest = st.dictionaries(st.sampled_from(TOP_KEYS) | st.text(min_size=1, max_size=6),
                            st.one_of(_value, _section), max_size=6)


def _exercise(root: Path) -> None:
    """Open, check, summarise and call every accessor; only DatasetError may escape."""
    try:
        ds = Dataset(root)
    except DatasetError as exc:
        assert str(exc)
        return
    with ds:
        probs = ds.check()
        assert all(isinstance(p, Problem) and p.severity in ("error", "warning", "info") and p.file for p in probs)
        assert isinstance(ds.summary(), dict)
        calls = [ds.landcover, ds.ndvi_fine, ds.ndvi_coarse, ds.ndvi_series, ds.soil_samples, ds.soil_rasters,
                 ds.degradation, ds.ld_raster, ds.npp_ready, ds.validation_plots, ds.mines, ds.dem, ds.reference_npp,
                 ds.extra_drivers, lambda: ds.mask] + [lambda v=v: ds.climate(v) for v in CLIMATE_VARS]
        for fn in calls:
            try:
                fn()
            except DatasetError as exc:
                assert str(exc)
        for lay in ds.layers():
            try:
                lay.read_aligned()
            except DatasetError:
                pass


@FAST
@given(m=_manifest, grid=st.sampled_from(["g.tif", "a.tif", "n.tif", "missing.tif", "s.csv", None]))
def test_random_manifests_never_crash(folder: Path, m: dict, grid: str | None) -> None:
    import tomli_w

    if grid is not None:
        m = {**m, "grid": grid}
    try:
        text = tomli_w.dumps(m)
    except Exception:
        assume(False)
    (folder / "dataset.toml").write_text(text, encoding="utf-8")
    _exercise(folder)


VALID = '''name = "x"
grid = "g.tif"
boundary = "b.geojson"
[landcover]
raster = "g.tif"
[landcover.classes]
1 = "forest"
2 = "grassland"
[landcover.casa_type]
forest = "mixed_forest"
[ndvi]
fine_series = { path = "n.tif", scale = 0.0001 }
[climate]
temperature = "a.tif"
precipitation = { path = "a.tif", units = "mm d-1" }
start = "2010-01"
[soil]
samples = "s.csv"
[soil.properties]
V = "v"
[degradation]
ahp = "m.csv"
[degradation.indicators]
a = "a.tif"
b = "g.tif"
'''


@FAST
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID)), st.integers(0, 6),
                                st.text(alphabet=string.printable + "{}[]=\"'\u00e9\ufeff", max_size=6)), max_size=4))
def test_mangled_manifest_text_never_crashes(folder: Path, edits: list) -> None:
    text = VALID
    for pos, cut, ins in edits:
        pos = min(pos, len(text))
        text = text[:pos] + ins + text[pos + cut:]
    (folder / "dataset.toml").write_text(text, encoding="utf-8")
    _exercise(folder)


def test_the_unmangled_manifest_is_usable(folder: Path) -> None:
    """Guard for the two tests above: the base manifest really loads (so mangling tests the parser)."""
    (folder / "dataset.toml").write_text(VALID, encoding="utf-8")
    with Dataset(folder) as ds:
        s = ds.soil_samples()
        np.testing.assert_allclose(s["values"]["V"], [1.5, 2.0])
        t, months = ds.climate("temperature")
        assert months == ["2010-01", "2010-02", "2010-03"] and t[1, 7, 7] == 64.0 + 63 and np.isnan(t[1, 0, 0])  # outside the triangle boundary
        nd, _ = ds.ndvi_series()
        assert nd[0, 7, 7] == pytest.approx(0.5)


_json = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-10**7, 10**7) | st.text(max_size=6),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "coordinates", "features", "geometry", "crs", "properties", "name"]), kids, max_size=4),
    max_leaves=25)
_geo = st.one_of(
    _json,
    st.fixed_dictionaries({"type": st.sampled_from(["Polygon", "MultiPolygon", "Feature", "FeatureCollection"])},
                          optional={"coordinates": _json, "features": _json, "geometry": _json, "crs": _json}),
    st.lists(st.lists(st.lists(st.floats(599990, 600090) | st.floats(-200, 200) | st.just(float("nan")),
                               min_size=0, max_size=3), max_size=5), max_size=2).map(
        lambda c: {"type": "Polygon", "coordinates": c}),
)


@pytest.mark.filterwarnings("ignore::UserWarning")  # rasterio skips empty shapes with a warning
@FAST
@given(geo=_geo)
def test_random_boundary_geojson_never_crashes(folder: Path, geo) -> None:
    import json

    (folder / "dataset.toml").write_text('grid = "g.tif"\nboundary = "b2.geojson"\n[landcover]\nraster = "g.tif"\n'
                                         '[landcover.classes]\n1 = "a"\n2 = "b"\n3 = "c"\n', encoding="utf-8")
    (folder / "b2.geojson").write_text(json.dumps(geo), encoding="utf-8")
    _exercise(folder)


def _small_zip() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ds/dataset.toml", 'grid = "g.tif"\n' * 20)
        z.writestr("ds/g.tif", bytes(range(256)) * 40)
    return buf.getvalue()


ZIP = _small_zip()


@settings(max_examples=max(200, N_EXAMPLES), deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, len(ZIP) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.just(len(ZIP)) | st.integers(0, len(ZIP)))
def test_corrupted_upload_archives_give_a_dataset_error(flips: list, cut: int) -> None:
    """Random byte damage or truncation of an uploaded zip: refused with a message, never another exception."""
    from npp_core.dataset import open_dataset

    b = bytearray(ZIP)
    for pos, val in flips:
        b[pos] = val
    try:
        ds = open_dataset(bytes(b[: max(cut, 1)]))
    except DatasetError as exc:
        assert str(exc)
        return
    ds.close()


# --------------------------------------------------------------------------- CSV reader

@settings(max_examples=max(150, N_EXAMPLES), deadline=None)
@given(raw=st.binary(max_size=300), bom=st.booleans(),
       req=st.lists(st.sampled_from(["a", "b", "x", ""]), max_size=2),
       num=st.lists(st.sampled_from(["a", "b", "x"]), max_size=2))
def test_csv_random_bytes_give_a_frame_or_a_table_error(raw: bytes, bom: bool, req: list, num: list) -> None:
    data = (b"\xef\xbb\xbf" if bom else b"") + raw
    try:
        df = read_csv(data, required=req, numeric=num, name="up.csv")
    except TableError as exc:
        assert str(exc).startswith("up.csv: ")
        return
    for c in num:
        if c in df.columns:
            assert df[c].dtype == np.float64
    assert all(c in df.columns for c in req)


_cell = st.one_of(st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: f"{v:.4f}"), st.integers(-999, 999).map(str),
                  st.sampled_from(["", "NA", "n/a", "abc", "1,5", "1.5", " 7 ", "-", "1e3", "x;y", '"q"', "\t"]))


@settings(max_examples=max(150, N_EXAMPLES), deadline=None)
@given(header=st.lists(st.sampled_from(["a", "b", "x", " a ", "y", ""]), min_size=1, max_size=4),
       rows=st.lists(st.lists(_cell, max_size=5), max_size=5), sep=st.sampled_from([",", ";", "\t"]),
       bom=st.booleans(), crlf=st.booleans())
def test_csv_random_tables_give_a_frame_or_a_table_error(header, rows, sep, bom, crlf) -> None:
    nl = "\r\n" if crlf else "\n"
    text = nl.join(sep.join(r) for r in [header, *rows])
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode()
    try:
        df = read_csv(data, required=["a"], numeric=["a", "b"], name="t.csv")
    except TableError as exc:
        assert str(exc).startswith("t.csv: ")
        return
    assert df["a"].dtype == np.float64


@settings(max_examples=max(80, N_EXAMPLES), deadline=None)
@given(values=hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 4)),
                         elements=st.floats(-1e7, 1e7, allow_nan=False).map(lambda v: round(v, 4))),
       sep=st.sampled_from([",", ";", "\t"]), bom=st.booleans(), crlf=st.booleans(), blank=st.booleans())
def test_csv_numbers_round_trip_in_every_dialect(values: np.ndarray, sep: str, bom: bool, crlf: bool,
                                                 blank: bool) -> None:
    names = [f"c{j}" for j in range(values.shape[1])]
    dec = "," if sep != "," else "."
    lines = [sep.join(names)] + [sep.join(f"{v:.4f}".replace(".", dec) for v in row) for row in values]
    if blank:
        lines.insert(1, "")
    text = ("\r\n" if crlf else "\n").join(lines) + "\n"
    df = read_csv(((b"\xef\xbb\xbf") if bom else b"") + text.encode(), required=names, numeric=names, name="r.csv")
    np.testing.assert_allclose(df[names].to_numpy(), values, rtol=0, atol=1e-9)
    assert df.attrs["decimal_comma"] == (dec == ",")
    if len(names) > 1:
        assert df.attrs["sep"] == sep


# --------------------------------------------------------------------------- local correlation

def _brute_lcc(x, y, valid, h, min_valid):
    """Window Pearson r by definition; ``cond`` marks windows with enough valid pairs that are clearly
    non-constant on the kernel's scale (values standardised by the global mean and SD, documented
    tolerance rtol = 1e-10 relative to Σz² + n; here a 10⁴ margin above it)."""
    rows, cols = x.shape
    with np.errstate(all="ignore"):
        sx = x[valid].std() if valid.any() else 1.0
        sy = y[valid].std() if valid.any() else 1.0
        zx = (x - (x[valid].mean() if valid.any() else 0.0)) / (sx if sx > 0 else 1.0)
        zy = (y - (y[valid].mean() if valid.any() else 0.0)) / (sy if sy > 0 else 1.0)
    r = np.full(x.shape, np.nan)
    n = np.zeros(x.shape, int)
    cond = np.zeros(x.shape, bool)  # enough valid, clearly non-constant pairs
    for i in range(rows):
        for j in range(cols):
            sl = (slice(max(0, i - h), i + h + 1), slice(max(0, j - h), j + h + 1))
            v = valid[sl]
            n[i, j] = int(v.sum())
            if not valid[i, j] or v.sum() < min_valid:
                continue
            a, b = zx[sl][v], zy[sl][v]
            k = len(a)
            caa, cbb = np.sum((a - a.mean()) ** 2), np.sum((b - b.mean()) ** 2)
            if caa > 1e-6 * (np.sum(a * a) + k) and cbb > 1e-6 * (np.sum(b * b) + k):
                cond[i, j] = True
                r[i, j] = float(np.sum((a - a.mean()) * (b - b.mean())) / math.sqrt(caa * cbb))
    return r, n, cond


_vals = st.one_of(st.floats(-1e6, 1e6), st.floats(-1e150, 1e150), st.floats(-1e-150, 1e-150),
                  st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, -np.inf]))


@settings(max_examples=max(60, N_EXAMPLES), deadline=None)
@given(data=st.data(), shape=st.tuples(st.integers(1, 9), st.integers(1, 9)), window=st.sampled_from([3, 5]),
       min_valid=st.integers(3, 6), scale=st.sampled_from([1.0, 1e-100, 1e100]))
def test_local_correlation_ranges_and_definedness(data, shape, window, min_valid, scale) -> None:
    lcc = pytest.importorskip("npp_core.lcc")
    x = data.draw(hnp.arrays(np.float64, shape, elements=_vals)) * scale
    y = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-1e3, 1e3) | st.just(np.nan)))
    mask = data.draw(hnp.arrays(np.bool_, shape))
    with np.errstate(all="ignore"):
        finite_ok = np.isfinite(x) & np.isfinite(y) & mask
        spread_ok = (not finite_ok.any()) or np.isfinite(np.std(x[finite_ok])) and np.isfinite(np.std(y[finite_ok]))
    try:
        r, p, n = lcc.local_correlation(x, y, window, min_valid, mask=mask)
    except lcc.LCCError as exc:
        # only acceptable when the global spread itself overflows float64
        assert not spread_ok, f"unexpected LCCError: {exc}"
        return
    assert r.shape == p.shape == n.shape == shape
    ok = ~np.isnan(r)
    assert np.all((r[ok] >= -1) & (r[ok] <= 1))
    assert np.array_equal(np.isnan(p), np.isnan(r))
    assert np.all((p[ok] >= 0) & (p[ok] <= 1))
    br, bn, cond = _brute_lcc(x, y, finite_ok, window // 2, min_valid)
    assert np.array_equal(n, bn)
    assert not np.isnan(r[cond]).any(), "r undefined where the window has enough valid, non-constant pairs"
    assert np.isnan(r[~finite_ok]).all()
    np.testing.assert_allclose(r[cond], br[cond], atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (2, 2)])
def test_local_correlation_degenerate_grids(shape) -> None:
    lcc = pytest.importorskip("npp_core.lcc")
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape)
    r, p, n = lcc.local_correlation(x, 2 * x + 1, 3, 3)
    nmax = min(shape[0], 2) * min(shape[1], 2) if shape == (2, 2) else None
    if shape == (1, 1):
        assert np.isnan(r).all() and (n == 1).all()
    elif shape == (2, 2):
        assert (n == nmax).all() and np.allclose(r, 1.0)
    else:  # a line: interior windows hold 3 pairs, ends 2
        assert n.ravel()[0] == 2 and n.ravel()[1] == 3
        assert np.isnan(r.ravel()[0]) and np.allclose(r.ravel()[1:-1], 1.0)


# --------------------------------------------------------------------------- CASA

@settings(max_examples=max(40, N_EXAMPLES), deadline=None)
@given(data=st.data(), years=st.integers(1, 2), cols=st.integers(1, 3), nan_share=st.sampled_from([0.0, 0.05, 0.3]))
def test_casa_npp_is_non_negative_and_nan_only_where_inputs_are(data, years, cols, nan_share) -> None:
    casa = pytest.importorskip("npp_core.casa")
    shape = (12 * years, 2, cols)

    def arr(lo, hi):
        a = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(lo, hi)))
        holes = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1))) < nan_share
        return np.where(holes, np.nan, a)

    nd, t, pr, so = arr(-1.0, 1.0), arr(-40.0, 40.0), arr(0.0, 600.0), arr(0.0, 900.0)
    eps = data.draw(st.floats(0.2, 1.5))
    months = [f"{2010 + k // 12}-{k % 12 + 1:02d}" for k in range(shape[0])]
    out = casa.npp_monthly(nd, t, pr, so, eps, 0.023, 0.634, months=months)
    assert out.shape == shape
    assert np.all(out[np.isfinite(out)] >= 0)
    assert not np.isinf(out).any()
    # a pixel-year with every input finite has NPP for each of its months
    for yi in range(years):
        sl = slice(12 * yi, 12 * yi + 12)
        clean = np.all(np.isfinite(nd[sl]) & np.isfinite(t[sl]) & np.isfinite(pr[sl]) & np.isfinite(so[sl]), axis=0)
        assert np.isfinite(out[sl][:, clean]).all()
        # and a month with finite inputs in a pixel whose year is otherwise complete is defined too
        year_ok = np.isfinite(nd[sl]).all(0) & np.isfinite(t[sl]).all(0)
        for k in range(12):
            m = sl.start + k
            here = year_ok & np.isfinite(pr[m]) & np.isfinite(so[m]) & np.isfinite(pr[sl]).all(0)
            assert np.isfinite(out[m][here]).all()


# --------------------------------------------------------------------------- AHP

SAATY = [1 / 9, 1 / 7, 1 / 5, 1 / 3, 1, 3, 5, 7, 9, 2, 1 / 2, 4, 1 / 4]


@settings(max_examples=max(80, N_EXAMPLES), deadline=None)
@given(data=st.data(), n=st.integers(1, 10))
def test_ahp_weights_of_random_reciprocal_matrices(data, n) -> None:
    ahp = pytest.importorskip("npp_core.ahp")
    a = np.ones((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            v = data.draw(st.sampled_from(SAATY))
            a[i, j], a[j, i] = v, 1 / v
    w, cr = ahp.weights(a)
    assert w.shape == (n,)
    assert np.all(w > 0) and math.isclose(w.sum(), 1.0, abs_tol=1e-9)
    assert cr >= 0 and math.isfinite(cr)
    # weights are the principal eigenvector: A w = λmax w with λmax ≥ n
    lam = (a @ w) / w
    assert np.allclose(lam, lam.mean(), rtol=1e-6) and lam.mean() >= n - 1e-9


@settings(max_examples=max(60, N_EXAMPLES), deadline=None)
@given(w=hnp.arrays(np.float64, st.integers(1, 10), elements=st.floats(0.01, 1.0)))
def test_ahp_consistent_matrix_recovers_weights_with_zero_cr(w) -> None:
    ahp = pytest.importorskip("npp_core.ahp")
    a = w[:, None] / w[None, :]
    got, cr = ahp.weights(a)
    np.testing.assert_allclose(got, w / w.sum(), rtol=1e-9, atol=1e-12)
    assert 0 <= cr < 1e-9


# --------------------------------------------------------------------------- dominant classes

@settings(max_examples=max(80, N_EXAMPLES), deadline=None)
@given(data=st.data(), k=st.integers(1, 4), npx=st.integers(1, 30), threshold=st.floats(0, 100))
def test_dominant_classes_match_a_brute_force_ranking(data, k, npx, threshold) -> None:
    att = pytest.importorskip("npp_core.attribution")
    names = ["C", "S", "M", "X"][:k]
    rc = data.draw(hnp.arrays(np.float64, (k, npx), elements=st.floats(0, 100) | st.just(np.nan)))
    und = data.draw(hnp.arrays(np.bool_, (npx,)))
    codes, labels = att.dominant_classes(rc, names, threshold, undetermined_mask=und)
    assert codes.dtype == np.uint8 and codes.shape == (npx,)
    assert set(np.unique(codes)) <= set(labels)
    inv = {v: c for c, v in labels.items()}
    for j in range(npx):
        col = rc[:, j]
        if und[j]:
            exp = "undetermined"
        elif not np.isfinite(col).all():
            exp = "nodata"
        else:
            order = sorted(range(k), key=lambda i: (-col[i], i))  # ties: category order
            if k == 1 or col[order[0]] > threshold:
                exp = names[order[0]]
            else:
                exp = names[order[0]] + names[order[1]]
        assert labels[int(codes[j])] == exp, (col, threshold, exp)
        assert int(codes[j]) == inv[exp]
