"""The command line on the bundled sample basin: check, run (every stage), cache, settings, errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib

import numpy as np
import pytest
import rasterio

from conftest import ROOT
from npp_core import cli

SAMPLE = ROOT / "sample_data"
from conftest import FAST  # noqa: E402  (the settings of the shared sample run)


def _py(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "npp_core", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_params_command_prints_documented_valid_toml():
    r = _py("params")
    assert r.returncode == 0, r.stderr
    cfg = tomllib.loads(r.stdout)
    assert cfg["dominance"]["threshold"] == 60.0 and cfg["casa"]["ndvi_range"] == "zhu_table"
    assert "# A single category dominates" in r.stdout


def test_check_sample_prints_what_was_understood():
    r = _py("check", str(SAMPLE))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "EPSG:32649" in r.stdout and "500 rows × 440 cols" in r.stdout
    assert "modis/ndvi_250m_16day.tif" in r.stdout and "138 band(s)" in r.stdout
    assert "W m-2 → MJ m-2 month-1" in r.stdout
    assert "0 error(s)" in r.stdout


def test_check_names_missing_file_and_fix(tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(SAMPLE, ds)
    (ds / "climate" / "prec_monthly.tif").unlink()
    r = _py("check", str(ds))
    assert r.returncode == 1
    assert "climate/prec_monthly.tif" in r.stdout and "file not found" in r.stdout and "fix:" in r.stdout
    r = _py("run", str(ds), "--out", str(tmp_path / "o"), "--only", "casa")
    assert r.returncode == 1 and "prec_monthly.tif" in r.stderr


def test_bad_setting_is_a_usage_error(tmp_path):
    r = _py("run", str(SAMPLE), "--out", str(tmp_path / "o"), "--set", "dominance.threshold=150")
    assert r.returncode == 2
    assert "dominance.threshold" in r.stderr and "maximum" in r.stderr
    assert not (tmp_path / "o").exists()


def test_sample_run_writes_every_output_on_the_grid(sample_run):
    out, _ = sample_run
    expected = {
        "ndvi_fused.tif": 138, "ndvi_monthly.tif": 72, "npp_monthly.tif": 72, "npp_annual.tif": 6,
        "npp_mean.tif": 1, "actcon.tif": 3, "relcon.tif": 3, "rgb.tif": 3, "dominant.tif": 1, "ld.tif": 1,
    }
    with rasterio.open(SAMPLE / "landcover.tif") as ref:
        grid = (ref.crs, ref.transform, ref.shape)
    for name, bands in expected.items():
        with rasterio.open(out / name) as ds:
            assert (ds.crs, ds.transform, ds.shape) == grid, name
            assert ds.count == bands, name
            assert ds.nodata is not None or ds.mask_flag_enums[0][0].name == "per_dataset", name
    with rasterio.open(out / "ndvi_monthly.tif") as ds:
        assert ds.descriptions[0] == "2010-01" and ds.descriptions[-1] == "2015-12"
        assert ds.tags(13)["DATE"] == "2011-01"
    with rasterio.open(out / "npp_annual.tif") as ds:
        assert list(ds.descriptions) == [str(y) for y in range(2010, 2016)]
    for n in ("MAT", "MAP", "MAE", "MAS", "CF", "SOC", "TN", "AP", "AK", "pH", "BD", "LD"):
        assert (out / "drivers" / f"{n}.tif").exists(), n
        assert (out / "lcc" / f"{n}.tif").exists(), n
    for n in ("SOC", "pH"):
        assert (out / "drivers" / f"{n}_variance.tif").exists()
    rows = (out / "samples.csv").read_text().splitlines()
    assert len(rows) == 601 and rows[0].startswith("x,y,row,col,landcover,NPP,MAT")


def test_sample_run_summary_is_complete_and_consistent(sample_run):
    out, _ = sample_run
    s = json.loads((out / "summary.json").read_text())
    for key in ("npp", "pearson", "lcc", "importance", "models", "relcon_mean", "dominant", "kriging", "ahp",
                "validation", "params", "inputs", "timings_s", "versions"):
        assert key in s, key
    npp = s["npp"]
    assert 230 < npp["mean"] < 350
    assert npp["cv"] == pytest.approx(100 * npp["sd"] / npp["mean"], rel=1e-6)
    bc = npp["by_class"]
    assert bc["forest"] > bc["grassland"] > bc["farmland"] > bc["construction"]
    # per-class means reproduce the basin mean (area-weighted)
    counts = npp["count_by_class"]
    weighted = sum(bc[c] * counts[c] for c in bc) / sum(counts.values())
    assert weighted == pytest.approx(npp["mean"], rel=1e-6)
    # every coarse date says which fine pair served it
    pairs = s["fusion"]["pairs"]
    assert len(pairs) == 138 and all(len(p["pair"]) == 2 for p in pairs)
    for shares in s["lcc"].values():
        five = sum(shares[k] for k in ("pos_p01", "pos_p05", "insignificant", "neg_p05", "neg_p01"))
        assert five == pytest.approx(100.0)
    assert sum(s["dominant"]["area_share"].values()) == pytest.approx(100.0)
    assert sum(s["importance"]["drivers"].values()) == pytest.approx(100.0)
    assert sum(s["relcon_mean"].values()) == pytest.approx(100.0)
    assert s["ahp"]["cr"] < 0.1
    assert [p["id"] for p in s["validation"]["plots"]] == ["A", "B"]
    assert s["models"]["all"]["oob_r2"] > 0.5


def test_npp_annual_is_sum_of_monthly_and_mean_of_annual(sample_run):
    out, _ = sample_run
    with rasterio.open(out / "npp_monthly.tif") as m, rasterio.open(out / "npp_annual.tif") as a, \
            rasterio.open(out / "npp_mean.tif") as mean:
        monthly = m.read(masked=True).astype(float).filled(np.nan)
        annual = a.read(masked=True).astype(float).filled(np.nan)
        mn = mean.read(1, masked=True).astype(float).filled(np.nan)
    for y in range(6):
        # a year with a missing month (e.g. under a cloud in every image of that month) is NaN, not a partial sum
        np.testing.assert_allclose(monthly[12 * y: 12 * y + 12].sum(axis=0), annual[y], rtol=1e-5, atol=1e-3)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmean(annual, axis=0)
    np.testing.assert_allclose(expected, mn, rtol=1e-5, atol=1e-3)
    assert np.isfinite(mn).sum() > 0.98 * np.isfinite(annual[0]).sum()


def test_rerun_is_cached_and_threshold_change_recomputes_only_dominance(sample_run, tmp_path, capsys):
    out, cache = sample_run
    code = cli.main(["run", str(SAMPLE), "--out", str(tmp_path / "again"), "--cache", str(cache), *FAST])
    assert code == 0
    text = capsys.readouterr().out
    status = {l.split()[0]: l.split()[1] for l in text.splitlines() if l.split() and l.split()[0] in
              ("fusion", "casa", "drivers", "sampling", "lcc", "attribution", "ensemble", "dominance")}
    assert set(status.values()) == {"cached"}, status
    a = (out / "dominant.tif").read_bytes()
    assert (tmp_path / "again" / "dominant.tif").read_bytes() == a
    code = cli.main(["run", str(SAMPLE), "--out", str(tmp_path / "again"), "--cache", str(cache), *FAST,
                     "--set", "dominance.threshold=40"])
    text = capsys.readouterr().out
    done = [l.split()[0] for l in text.splitlines() if len(l.split()) > 1 and l.split()[1] == "done"]
    assert done == ["dominance"]
    s40 = json.loads((tmp_path / "again" / "summary.json").read_text())["dominant"]["area_share"]
    s60 = json.loads((out / "summary.json").read_text())["dominant"]["area_share"]
    singles = ("C", "S", "M")
    assert sum(s40[c] for c in singles) > sum(s60[c] for c in singles)


def test_sample_run_recovers_the_planted_drivers(sample_run):
    """Mining leads where the sample's land degradation was planted, soil in the fertile east,
    and climate leads far more often on the rims than in the east."""
    from npp_core.sample import planted_truth

    out, _ = sample_run
    t = planted_truth(0)
    z, inside = t["zones"], t["inside"]
    with rasterio.open(out / "dominant.tif") as d:
        codes = d.read(1)
    labels = json.loads((out / "summary.json").read_text())["dominant"]["codes"]

    def first_letter_shares(sel):
        c = codes[sel & (codes > 0)]
        assert c.size > 500
        first = np.array([labels[str(int(k))][0] for k in c])
        return {L: float(np.mean(first == L)) for L in "CSM"}

    mining = first_letter_shares(inside & (np.nan_to_num(z["mining"]) > 0.3))
    east = first_letter_shares(inside & (z["soil"] > 0.8) & (np.nan_to_num(z["mining"]) < 0.05))
    rims = first_letter_shares(inside & (z["climate"] > 0.7))
    assert mining["M"] > 0.4 and mining["M"] == max(mining.values()), mining
    assert east["S"] > 0.5 and east["S"] == max(east.values()), east
    assert rims["C"] > east["C"] + 0.1, (rims, east)
    assert east["M"] < 0.1


def test_kriged_soil_follows_the_planted_fields(sample_run):
    """Ordinary kriging of the 117 samples reproduces the planted soil fields of the sample basin."""
    from npp_core.raster import read_raster
    from npp_core.sample import planted_truth

    out, _ = sample_run
    t = planted_truth(0)
    for name in ("SOC", "TN", "AK"):
        true = t["soil"][name]
        k = read_raster(out / "drivers" / f"{name}.tif")[0][0]
        ok = t["inside"] & np.isfinite(k) & np.isfinite(true)
        assert ok.sum() > 100_000
        r = np.corrcoef(k[ok], true[ok])[0, 1]
        rmse = np.sqrt(np.mean((k[ok] - true[ok]) ** 2))
        assert r > 0.9, (name, r)
        assert rmse < 0.4 * true[ok].std(), (name, rmse)
        assert abs(k[ok].mean() - true[ok].mean()) < 0.1 * true[ok].std(), name
    s = json.loads((out / "summary.json").read_text())["kriging"]["SOC"]
    assert s["model"] in ("spherical", "exponential", "gaussian") and 0.5 < s["msdr"] < 2.0
