"""Bad and hostile input, through the CLI and the library: a clear message, never a traceback.

Every bad dataset is GENERATED here: a lean copy of the shipped ``sample_data/`` (land cover,
boundary, 12 months of climate, soil samples, degradation indicators and a ready NPP raster, so
that no slow stage runs) with exactly one thing broken. Each case asserts the file name, the
problem and the fix in the output of ``python -m npp_core check``, the exit status (1 for
errors, 0 when only warnings) and that no traceback escaped. Hostile uploads (zip traversal,
symbolic links, zip bombs, a tiny GeoTIFF claiming 10⁶ × 10⁶ pixels, a pickle disguised as a
raster) are refused without writing outside the destination or executing anything.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.transform import from_origin

from conftest import ROOT
from npp_core import cli
from npp_core import params as P
from npp_core.dataset import DatasetError, dataset_from_files, open_dataset
from npp_core.raster import Grid, RasterError, read_raster, write_raster

SAMPLE = ROOT / "sample_data"

LEAN_MANIFEST = '''name = "lean sample"
grid = "landcover.tif"
boundary = "boundary.geojson"

[landcover]
raster = "landcover.tif"

[landcover.classes]
1 = "forest"
2 = "grassland"
3 = "farmland"
4 = "construction"
5 = "water"

[landcover.casa_type]
forest = "deciduous_broadleaf"
grassland = "grassland"
farmland = "cropland"
construction = "other"
water = "none"

[climate]
temperature = "climate/tmean_12.tif"
precipitation = "climate/prec_12.tif"
solar = { path = "climate/srad_12.tif", units = "W m-2" }

[soil]
samples = "soil/samples.csv"
crs = "EPSG:4326"
x_column = "lon"
y_column = "lat"

[soil.properties]
CF = "clay_pct"
SOC = "soc_g_kg"

[degradation]
ahp = "ld/ahp_matrix.csv"

[degradation.indicators]
subsidence = "ld/subsidence_m.tif"
cracks = "ld/crack_density.tif"
seeper = { path = "ld/seeper.tif", nodata = 255 }
goaf = { path = "ld/goaf.tif", nodata = 255 }
slope_change = "ld/slope_change.tif"
distance_to_mine = "ld/dist_mine_m.tif"

[degradation.direction]
distance_to_mine = "lower_is_worse"

[npp]
annual = "npp_annual.tif"
'''


# --------------------------------------------------------------------------- building the corpus

@pytest.fixture(scope="session")
def lean(tmp_path_factory) -> Path:
    """The sample basin without the heavy NDVI inputs, with a ready NPP raster and 12 climate months
    already on the reference grid (so that checking a case costs well under a second)."""
    from rasterio.warp import Resampling, reproject

    if not (SAMPLE / "dataset.toml").is_file():
        pytest.skip(f"shipped sample dataset not found at {SAMPLE}")
    dst = tmp_path_factory.mktemp("lean") / "base"
    shutil.copytree(SAMPLE, dst, ignore=shutil.ignore_patterns("modis", "landsat", "dem.tif", "*.md", "*_monthly.tif"))
    _, grid, _ = read_raster(SAMPLE / "landcover.tif")
    for v in ("tmean", "prec", "srad"):
        d, g, dates = read_raster(SAMPLE / "climate" / f"{v}_monthly.tif", bands=range(1, 13))
        out = np.full((12,) + grid.shape, np.nan)
        reproject(d, out, src_transform=g.transform, src_crs=g.crs, dst_transform=grid.transform, dst_crs=grid.crs,
                  src_nodata=np.nan, dst_nodata=np.nan, resampling=Resampling.bilinear)
        write_raster(dst / "climate" / f"{v}_12.tif", out, grid, band_names=dates)
    nd, g, _ = read_raster(SAMPLE / "landsat" / "ndvi_2010-09-14.tif")
    write_raster(dst / "npp_annual.tif", np.clip(nd, 0, None) * 600.0, g, band_names=["2010"])
    (dst / "dataset.toml").write_text(LEAN_MANIFEST, encoding="utf-8")
    return dst


def _copy(lean: Path, dst: Path) -> Path:
    shutil.copytree(lean, dst)
    return dst


def _manifest(d: Path, old: str, new: str) -> None:
    t = (d / "dataset.toml").read_text(encoding="utf-8")
    assert old in t, old
    (d / "dataset.toml").write_text(t.replace(old, new, 1), encoding="utf-8")


def _edit(d: Path, rel: str, fn: Callable[[bytes], bytes]) -> None:
    p = d / rel
    p.write_bytes(fn(p.read_bytes()))


def _rewrite_series(d: Path, rel: str, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    data, g, dates = read_raster(d / rel)
    write_raster(d / rel, fn(data), g, band_names=dates)


def _strip_crs(d: Path, rel: str) -> None:
    p = d / rel
    with rasterio.open(p) as s:
        prof, arr, desc = s.profile, s.read(), s.descriptions
    prof.pop("crs", None)
    p.unlink()
    with rasterio.open(p, "w", **prof) as o:
        o.write(arr)
        for i, t in enumerate(desc):
            if t:
                o.set_band_description(i + 1, t)


def huge_tiff(path: Path, side: int = 1_000_000) -> Path:
    """A valid 16 × 16 GeoTIFF whose header is patched to claim ``side`` × ``side`` pixels."""
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint8", crs="EPSG:32649",
                       transform=from_origin(647460, 3944520, 30, 30)) as o:
        o.write(np.ones((1, 16, 16), np.uint8))
    b = bytearray(path.read_bytes())
    assert b[:4] == b"II*\x00"  # classic little-endian TIFF
    ifd = struct.unpack_from("<I", b, 4)[0]
    patched = set()
    for i in range(struct.unpack_from("<H", b, ifd)[0]):
        off = ifd + 2 + 12 * i
        tag = struct.unpack_from("<H", b, off)[0]
        if tag in (256, 257, 278):  # ImageWidth, ImageLength, RowsPerStrip → LONG side
            struct.pack_into("<HHII", b, off, tag, 4, 1, side)
            patched.add(tag)
    assert {256, 257} <= patched
    path.write_bytes(bytes(b))
    return path


class _Payload:
    """Unpickling this creates the marker file: proof that something was unpickled."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_bomb(marker: Path) -> bytes:
    _Payload.marker = str(marker)
    return pickle.dumps(_Payload())


# each case: mutate(dataset folder, scratch folder), words expected in the output, exit status
def _truncated(d, s):
    _edit(d, "ld/crack_density.tif", lambda b: b[: len(b) // 3])


def _html(d, s):
    (d / "ld/crack_density.tif").write_text("<html><body>404 Not Found</body></html>")


def _empty(d, s):
    (d / "ld/crack_density.tif").write_bytes(b"")


def _pickle_tif(d, s):
    (d / "ld/crack_density.tif").write_bytes(_pickle_bomb(s / "UNPICKLED"))


def _no_crs(d, s):
    # the original 0.005° climate grid (not the reference grid), saved without its CRS
    data, g, dates = read_raster(SAMPLE / "climate" / "tmean_monthly.tif", bands=range(1, 13))
    write_raster(d / "climate/tmean_12.tif", data, g, band_names=dates)
    _strip_crs(d, "climate/tmean_12.tif")


def _no_crs_grid(d, s):
    _strip_crs(d, "landcover.tif")


def _no_overlap(d, s):
    data, g, _ = read_raster(d / "ld/slope_change.tif")
    t = g.transform
    write_raster(d / "ld/slope_change.tif", data, Grid(g.crs, Affine(t.a, 0, t.c + 1e6, 0, t.e, t.f), g.width, g.height))


def _all_nodata(d, s):
    data, g, _ = read_raster(d / "ld/slope_change.tif")
    write_raster(d / "ld/slope_change.tif", np.full_like(data, -9999.0), g, nodata=-9999.0)


def _inf(d, s):
    def f(a):
        a[:, 100:150, 100:150] = np.inf
        return a
    _rewrite_series(d, "climate/prec_12.tif", f)


def _negative(d, s):
    def f(a):
        a[:, 200:220, 200:220] = -50.0
        return a
    _rewrite_series(d, "climate/prec_12.tif", f)


def _ndvi_int(d, s):
    nd, g, _ = read_raster(SAMPLE / "landsat" / "ndvi_2010-09-14.tif")
    write_raster(d / "ndvi_series.tif", np.nan_to_num(nd * 10000, nan=-3000), g, dtype="int16", nodata=-3000,
                 band_names=["2010-09-14"])
    _manifest(d, '[npp]\nannual = "npp_annual.tif"', '[ndvi]\nfine_series = "ndvi_series.tif"')


def _kelvin(d, s):
    _rewrite_series(d, "climate/tmean_12.tif", lambda a: a + 273.15)


def _bad_units(d, s):
    _manifest(d, 'units = "W m-2"', 'units = "watts"')


def _missing_column(d, s):
    _edit(d, "soil/samples.csv", lambda b: b.replace(b"soc_g_kg", b"soc", 1))


def _text_in_numeric(d, s):
    _edit(d, "soil/samples.csv", lambda b: b.replace(b"\nS002,112.729857,35.605473,22.2,", b"\nS002,112.729857,35.605473,n.d.,", 1))


def _decimal_comma_with_comma_sep(d, s):
    _edit(d, "soil/samples.csv", lambda b: b.replace(b"\nS002,112.729857,35.605473,22.2,", b'\nS002,112.729857,35.605473,"22,2",', 1))


def _semicolon_decimal_comma_bom(d, s):
    _edit(d, "soil/samples.csv", lambda b: b"\xef\xbb\xbf" + b.replace(b",", b";").replace(b".", b","))


def _bom(d, s):
    _edit(d, "soil/samples.csv", lambda b: b"\xef\xbb\xbf" + b)


def _duplicates(d, s):
    def f(b):
        lines = b.rstrip(b"\n").split(b"\n")
        return b"\n".join(lines + [lines[1].replace(b"S001", b"S999")]) + b"\n"
    _edit(d, "soil/samples.csv", f)


def _swapped(d, s):
    _manifest(d, 'x_column = "lon"\ny_column = "lat"', 'x_column = "lat"\ny_column = "lon"')


def _binary_csv(d, s):
    (d / "soil/samples.csv").write_bytes(bytes(range(256)) * 8)


def _unknown_keys(d, s):
    _manifest(d, 'name = "lean sample"', 'name = "lean sample"\ncolour = "red"')
    _manifest(d, "[soil]\n", '[soil]\nsampels = "soil/other.csv"\n')


def _missing_file(d, s):
    (d / "ld/goaf.tif").unlink()


def _bad_toml(d, s):
    _manifest(d, "[soil]", "[soil\n")


def _escape(d, s):
    _manifest(d, '"ld/goaf.tif"', '"../../etc/passwd"')


def _huge(d, s):
    huge_tiff(d / "ld/crack_density.tif")


def _huge_grid(d, s):
    (d / "landcover.tif").unlink()
    huge_tiff(d / "landcover.tif")


def _ahp_text(d, s):
    _edit(d, "ld/ahp_matrix.csv", lambda b: b.replace(b"subsidence,1,2", b"subsidence,1,two", 1))


def _boundary(d, s):
    (d / "boundary.geojson").write_text('{"type": "FeatureCollection", "features": [')


def _boundary_structure(d, s):
    (d / "boundary.geojson").write_text('{"type": "FeatureCollection", "features": 5}')


def _boundary_multipolygon(d, s):
    (d / "boundary.geojson").write_text('{"type": "MultiPolygon", "coordinates": [[1, 2], [3]]}')


def _boundary_deep(d, s):
    (d / "boundary.geojson").write_text("[" * 100_000)


def _manifest_deep(d, s):
    _manifest(d, 'name = "lean sample"', 'name = "lean sample"\nx = ' + "[" * 50_000)


def _manifest_nested(d, s):
    _manifest(d, 'name = "lean sample"', 'name = "lean sample"\nx = ' + "[" * 40 + "]" * 40)


def _scale_nan(d, s):
    _manifest(d, 'seeper = { path = "ld/seeper.tif", nodata = 255 }', 'seeper = { path = "ld/seeper.tif", nodata = 255, scale = nan }')


def _header_only(d, s):
    _edit(d, "soil/samples.csv", lambda b: b.split(b"\n")[0] + b"\n")


def _dup_header(d, s):
    _edit(d, "soil/samples.csv", lambda b: b.replace(b"tn_g_kg", b"clay_pct", 1))


def _negative_solar(d, s):
    _rewrite_series(d, "climate/srad_12.tif", lambda a: -a)


def _symlink_out(d, s):
    (d / "ld/goaf.tif").unlink()
    (d / "ld/goaf.tif").symlink_to("/etc/passwd")


def _landcover_float(d, s):
    data, g, _ = read_raster(d / "landcover.tif")
    write_raster(d / "landcover.tif", data + 0.5, g)


def _casa_type(d, s):
    _manifest(d, 'forest = "deciduous_broadleaf"', 'forest = "broadleaf"')


CASES = {
    # id: (mutate, words that must all appear, exit status)
    "truncated_geotiff": (_truncated, ["ld/crack_density.tif", "damaged", "truncated", "Export it again as a GeoTIFF"], 1),
    "html_named_tif": (_html, ["ld/crack_density.tif", "HTML", "not a GeoTIFF", "Export it again"], 1),
    "empty_tif": (_empty, ["ld/crack_density.tif", "empty", "Export it again"], 1),
    "pickle_named_tif": (_pickle_tif, ["ld/crack_density.tif", "pickle", "not a GeoTIFF"], 1),
    "raster_without_crs": (_no_crs, ["climate/tmean_12.tif", "no CRS", 'crs = "EPSG:....'], 1),
    "grid_without_crs": (_no_crs_grid, ["landcover.tif", "no CRS", "crs = "], 1),
    "no_overlap": (_no_overlap, ["ld/slope_change.tif", "does not overlap", "covers the study area"], 1),
    "all_nodata": (_all_nodata, ["ld/slope_change.tif", "no valid pixel", "nodata value"], 1),
    "inf_values": (_inf, ["climate/prec_12.tif", "infinite", "nodata"], 0),
    "negative_precipitation": (_negative, ["climate/prec_12.tif", "negative precipitation", "min -50 mm",
                                                 "CASA cannot use negative totals", "cannot be negative"], 1),
    "ndvi_as_integers": (_ndvi_int, ["ndvi_series.tif", "outside [-1, 1]", "scale = 0.0001"], 1),
    "kelvin_as_celsius": (_kelvin, ["climate/tmean_12.tif", "kelvin", 'units = "K"'], 1),
    "unknown_units": (_bad_units, ["climate/srad_12.tif", "watts", "W m-2", "Set units"], 1),
    "csv_missing_column": (_missing_column, ["soil/samples.csv", "'soc_g_kg'", "columns found", "Did you mean 'soc_g_kg' → 'soc'?",
                                             "Rename the column"], 1),
    "csv_text_in_numeric": (_text_in_numeric, ["soil/samples.csv", "'clay_pct'", "line(s) 3", "'n.d.'",
                                               "Use numbers only"], 1),
    "csv_decimal_comma_comma_sep": (_decimal_comma_with_comma_sep, ["soil/samples.csv", "'22,2'",
                                                                    "Decimal commas need ';'"], 1),
    "csv_semicolon_decimal_comma_bom": (_semicolon_decimal_comma_bom, ["soil/samples.csv", "decimal commas read"], 0),
    "csv_bom": (_bom, ["soil.samples  soil/samples.csv", "0 error(s)"], 0),
    "csv_duplicate_points": (_duplicates, ["soil/samples.csv", "share a location", "S999", "Average duplicate"], 0),
    "csv_lon_lat_swapped": (_swapped, ["soil/samples.csv", "swapped", 'x_column = "lon", y_column = "lat"'], 1),
    "csv_binary": (_binary_csv, ["soil/samples.csv", "not UTF-8", "CSV UTF-8"], 1),
    "manifest_unknown_keys": (_unknown_keys, ["unknown top-level key 'colour'", "'sampels'", "Did you mean 'samples'",
                                              "Remove it or correct the spelling"], 0),
    "manifest_missing_file": (_missing_file, ["ld/goaf.tif", "file not found", "Correct the path"], 1),
    "manifest_bad_toml": (_bad_toml, ["dataset.toml", "not valid TOML", "line 27", "Fix the syntax"], 1),
    "manifest_path_escapes": (_escape, ["../../etc/passwd", "leaves the dataset folder", "relative"], 1),
    "tiny_file_claims_1e6_pixels": (_huge, ["ld/crack_density.tif", "1000000 × 1000000", "limit", "Clip the raster"], 1),
    "grid_claims_1e6_pixels": (_huge_grid, ["landcover.tif", "1000000 × 1000000", "limit", "Clip the raster"], 1),
    "ahp_text": (_ahp_text, ["ld/ahp_matrix.csv", "'two'", "numbers"], 1),
    "boundary_broken_json": (_boundary, ["boundary.geojson", "not valid GeoJSON", "Export the study-area polygon"], 1),
    "boundary_wrong_structure": (_boundary_structure, ["boundary.geojson", "not a usable polygon GeoJSON",
                                                       "Export the study-area polygon again"], 1),
    "boundary_bad_multipolygon": (_boundary_multipolygon, ["boundary.geojson", "not a usable polygon GeoJSON"], 1),
    "boundary_nested_100000_deep": (_boundary_deep, ["boundary.geojson", "not valid GeoJSON"], 1),
    "manifest_nested_50000_deep": (_manifest_deep, ["dataset.toml", "nested too deeply"], 1),
    "manifest_nested_40_deep": (_manifest_nested, ["dataset.toml", "nested more than 12 levels"], 1),
    "scale_nan": (_scale_nan, ["degradation.indicators.seeper", "scale = nan", "finite, non-zero scale"], 1),
    "csv_header_only": (_header_only, ["soil/samples.csv", "no data rows", "Add the rows"], 1),
    "csv_duplicate_header": (_dup_header, ["soil/samples.csv", "clay_pct appear more than once", "Rename"], 1),
    "negative_solar": (_negative_solar, ["climate/srad_12.tif", "negative solar radiation", "Check scale, offset and nodata"], 1),
    "symlink_leaving_the_folder": (_symlink_out, ["ld/goaf.tif", "leaves the dataset folder", "copy the file into"], 1),
    "landcover_not_integer": (_landcover_float, ["landcover.tif", "not whole numbers", "integer codes"], 1),
    "unknown_casa_type": (_casa_type, ["dataset.toml", "'broadleaf'", "deciduous_broadleaf"], 1),
}


# --------------------------------------------------------------------------- the CLI on every case

@pytest.mark.parametrize("case", list(CASES))
def test_check_command_explains_each_bad_input(case: str, lean: Path, tmp_path: Path, capsys) -> None:
    mutate, words, status = CASES[case]
    d = _copy(lean, tmp_path / case)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    mutate(d, scratch)
    code = cli.main(["check", str(d), "--stages", "drivers"])  # an escaping exception fails the test
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    assert code == status, text
    missing = [w for w in words if w not in text]
    assert not missing, f"{missing} not in:\n{text}"
    if status == 1:
        assert "error: " in text
        if "error(s)" in text:  # the manifest could be read: every error comes with its fix
            n_err = sum(1 for ln in out.out.splitlines() if ln.startswith("error: "))
            n_fix = sum(1 for ln in out.out.splitlines() if ln.startswith("    fix: "))
            assert n_fix >= n_err > 0
    # a broken indicator is not blamed on the AHP matrix as well
    assert "which have no raster" not in text
    assert not (scratch / "UNPICKLED").exists()


def test_huge_claim_file_is_tiny(tmp_path: Path) -> None:
    p = huge_tiff(tmp_path / "huge.tif")
    assert p.stat().st_size < 4096
    with rasterio.open(p) as ds:
        assert ds.shape == (1_000_000, 1_000_000)
    with pytest.raises(RasterError, match=r"huge.tif: claims 1 band\(s\) of 1000000 × 1000000.*Clip the raster"):
        read_raster(p)


def _py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "npp_core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_real_cli_process_refuses_huge_raster_without_traceback(lean: Path, tmp_path: Path) -> None:
    d = _copy(lean, tmp_path / "huge")
    _huge(d, tmp_path)
    r = _py("check", str(d))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "ld/crack_density.tif" in r.stdout and "limit of 400,000,000" in r.stdout and "Clip the raster" in r.stdout


def test_real_cli_run_stops_before_running_on_a_broken_dataset(lean: Path, tmp_path: Path) -> None:
    d = _copy(lean, tmp_path / "swapped")
    _swapped(d, tmp_path)
    out = tmp_path / "out"
    r = _py("run", str(d), "--out", str(out), "--only", "drivers")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "soil/samples.csv" in r.stderr and "swapped" in r.stderr and 'x_column = "lon"' in r.stderr
    assert "python -m npp_core check" in r.stderr
    assert not (out / "drivers").exists()


# --------------------------------------------------------------------------- the library

def test_library_session_survives_a_broken_layer(lean: Path, tmp_path: Path) -> None:
    d = _copy(lean, tmp_path / "t")
    _truncated(d, tmp_path)
    with open_dataset(d) as ds:
        probs = ds.check()
        errs = [p for p in probs if p.severity == "error"]
        assert [p.file for p in errs] == ["ld/crack_density.tif"]
        assert "truncated" in errs[0].message and errs[0].fix.startswith("Export it again")
        assert errs[0].role == "degradation.indicators.cracks"
        with pytest.raises(DatasetError, match=r"ld/crack_density.tif.*truncated"):
            ds.degradation()
        with pytest.raises(DatasetError, match="crack_density"):  # asked again: same answer, no crash
            ds.degradation()
        t, months = ds.climate("temperature")  # the rest of the dataset is still usable
        assert t.shape == (12, 500, 440) and months[0] == "2010-01"
        soil = ds.soil_samples()
        assert len(soil["x"]) > 10
        npp, years = ds.npp_ready()
        assert years == [2010]


def test_decimal_commas_semicolons_and_bom_give_the_same_numbers(lean: Path, tmp_path: Path) -> None:
    with open_dataset(lean) as ds:
        ref = ds.soil_samples()
    for mutate in (_semicolon_decimal_comma_bom, _bom):
        d = _copy(lean, tmp_path / mutate.__name__)
        mutate(d, tmp_path)
        with open_dataset(d) as ds:
            got = ds.soil_samples()
        np.testing.assert_allclose(got["x"], ref["x"], rtol=0, atol=1e-6)
        for k in ("CF", "SOC"):
            np.testing.assert_array_equal(got["values"][k], ref["values"][k])
        assert list(got["ids"]) == list(ref["ids"])


def test_inf_values_become_nodata_not_infinite_means(lean: Path, tmp_path: Path) -> None:
    d = _copy(lean, tmp_path / "inf")
    _inf(d, tmp_path)
    with open_dataset(d) as ds:
        p, _ = ds.climate("precipitation")
        assert not np.isinf(p).any()
        with open_dataset(lean) as ref:
            p0, _ = ref.climate("precipitation")
    block = np.zeros(p.shape, bool)
    block[:, 100:150, 100:150] = True
    assert np.isfinite(p0[block]).sum() > 1000
    assert np.isnan(p[block]).all()  # infinite → nodata, exactly there
    np.testing.assert_array_equal(p[~block], p0[~block])  # nothing else changed (no spread)


def test_failed_stage_keeps_earlier_results_and_says_why(lean: Path, tmp_path: Path) -> None:
    d = _copy(lean, tmp_path / "miss")
    _missing_column(d, tmp_path)
    out = tmp_path / "out"
    from npp_core.pipeline import run

    with open_dataset(d) as ds:
        res = run(ds, P.defaults(), out, only=["casa", "drivers"])
    st = {s.name: s for s in res.stages}
    assert st["casa"].status == "done"
    assert st["drivers"].status == "failed"
    assert "soil/samples.csv" in st["drivers"].message and "soc_g_kg" in st["drivers"].message
    assert not res.ok
    npp, _, _ = read_raster(out / "npp_mean.tif")  # the earlier stage's output is complete and readable
    assert np.isfinite(npp).sum() > 1000
    summ = json.loads((out / "summary.json").read_text())
    assert summ["stages"]["drivers"]["status"] == "failed" and "npp" in summ
    assert not list(out.rglob("*.part*"))


def test_write_raster_is_atomic_when_writing_fails(tmp_path: Path) -> None:
    g = Grid(rasterio.crs.CRS.from_epsg(32649), from_origin(0, 100, 10, 10), 10, 10)
    p = tmp_path / "x.tif"
    write_raster(p, np.ones((10, 10)), g)
    before = p.read_bytes()
    with pytest.raises(Exception):
        # the colour table is invalid: the failure comes after the pixels were written to the temporary file
        write_raster(p, np.zeros((10, 10)), g, dtype="uint8", nodata=255, colormap={1: "red"})  # type: ignore[dict-item]
    assert p.read_bytes() == before
    assert sorted(q.name for q in tmp_path.iterdir()) == ["x.tif"]


# --------------------------------------------------------------------------- hostile archives

def _zip(members: dict[str, bytes], *, symlinks: dict[str, str] | None = None,
         method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    return buf.getvalue()


MINI = b'grid = "g.tif"\n'


@pytest.mark.parametrize("members,symlinks,words", [
    ({"dataset.toml": MINI, "../evil.txt": b"x"}, None, ["'../evil.txt'", "climbs out", "relative paths"]),
    ({"dataset.toml": MINI, "/tmp/evil_abs.txt": b"x"}, None, ["'/tmp/evil_abs.txt'", "absolute path"]),
    ({"dataset.toml": MINI, "C:/evil.txt": b"x"}, None, ["drive letter"]),
    ({"dataset.toml": MINI, "a/../../evil.txt": b"x"}, None, ["climbs out"]),
    ({"dataset.toml": MINI}, {"ld/link.tif": "/etc/passwd"}, ["'ld/link.tif'", "symbolic link", "real files"]),
    ({"dataset.toml": MINI, "bomb.tif": b"\0" * (60 << 20)}, None, ["'bomb.tif'", "zip bomb", "limit"]),
    ({"readme.txt": b"hello"}, None, ["no dataset.toml", "zip that folder"]),
])
def test_hostile_zip_is_refused_before_writing(members, symlinks, words, tmp_path: Path) -> None:
    data = _zip(members, symlinks=symlinks)
    before = set(os.listdir(tmp_path))
    with pytest.raises(DatasetError) as ei:
        open_dataset(data)
    msg = str(ei.value)
    assert all(w in msg for w in words), msg
    assert set(os.listdir(tmp_path)) == before
    assert not Path("/tmp/evil_abs.txt").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_zip_bomb_through_the_cli_on_a_file(tmp_path: Path, capsys) -> None:
    z = tmp_path / "upload.zip"
    z.write_bytes(_zip({"dataset.toml": MINI, "bomb.tif": b"\0" * (60 << 20)}))
    assert z.stat().st_size < 200_000
    code = cli.main(["check", str(z)])
    err = capsys.readouterr().err
    assert code == 1 and "upload.zip" in err and "zip bomb" in err and "Traceback" not in err


def test_not_a_zip_nor_a_dataset(tmp_path: Path, capsys) -> None:
    p = tmp_path / "data.zip"
    p.write_bytes(b"PK\x03\x04 this is not really a zip")
    assert cli.main(["check", str(p)]) == 1
    err = capsys.readouterr().err
    assert "data.zip" in err and "not a readable zip" in err and "Create the archive again" in err
    q = tmp_path / "notes.txt"
    q.write_text("hello")
    assert cli.main(["check", str(q)]) == 1
    err = capsys.readouterr().err
    assert "notes.txt" in err and "dataset.toml" in err


def test_uploaded_files_with_unsafe_names_or_too_large(tmp_path: Path) -> None:
    for name in ("../x.tif", "/abs.tif", "a/../../x.tif", "dataset.toml", "x;rm -rf.tif", "C:\\x.tif"):
        with pytest.raises(DatasetError, match="not an acceptable file name"):
            dataset_from_files({name: b"x"}, {"grid": "g.tif"})
    with pytest.raises(DatasetError, match="more than the limit"):
        dataset_from_files({"g.tif": b"x" * 1000}, {"grid": "g.tif"}, max_total_bytes=100)


def test_nothing_from_an_upload_is_executed_or_unpickled() -> None:
    """Static guard: the modules that read user files never unpickle, eval or exec."""
    for mod in ("dataset.py", "tables.py", "safezip.py", "raster.py", "units.py"):
        src = (ROOT / "npp_core" / mod).read_text(encoding="utf-8")
        for bad in ("import pickle", "pickle.load", "eval(", "exec(", "allow_pickle=True", "import subprocess",
                    "os.system", "yaml.load(", "marshal"):
            assert bad not in src, f"npp_core/{mod} uses {bad!r}"


def test_series_too_large_for_the_grid_is_refused_before_allocating(lean: Path, monkeypatch, capsys) -> None:
    import npp_core.dataset as D

    monkeypatch.setattr(D, "MAX_PIXELS", 2_000_000)  # 12 bands × 500 × 440 = 2,640,000 values
    assert cli.main(["check", str(lean), "--stages", "drivers"]) == 1
    out = capsys.readouterr().out
    for f in ("climate/tmean_12.tif", "climate/prec_12.tif", "climate/srad_12.tif"):
        assert f"error: {f}: its 12 band(s) on the 500 × 440 reference grid would be 2,640,000 values" in out
    assert "Split the series into shorter files" in out
    assert "error: ld/" not in out  # single-band layers fit


def test_oversized_or_binary_manifest(tmp_path: Path, capsys) -> None:
    big = tmp_path / "big"
    big.mkdir()
    (big / "dataset.toml").write_text('name = "x"\n' + "# padding\n" * 150_000)
    assert cli.main(["check", str(big)]) == 1
    assert "dataset.toml: larger than 1,000,000 bytes" in capsys.readouterr().err
    binm = tmp_path / "bin"
    binm.mkdir()
    (binm / "dataset.toml").write_bytes(b"\xff\xfe\x00name = 1")
    assert cli.main(["check", str(binm)]) == 1
    err = capsys.readouterr().err
    assert "dataset.toml: not UTF-8 text. Save it as UTF-8." in err and "Traceback" not in err
