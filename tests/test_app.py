"""Wiring of the Streamlit dashboard with streamlit.testing.v1.AppTest.

A tiny synthetic dataset (40 × 30 pixels, two years of monthly data) stands in
for the sample basin so the whole flow — pages, run, explore, export, uploads,
parameter changes — stays within seconds.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from npp_core.raster import Grid, read_raster, write_raster

st_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = st_testing.AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = ["pages/1_Data.py", "pages/2_Parameters.py", "pages/3_Run.py", "pages/4_Explore.py", "pages/5_Sensitivity.py", "pages/6_Export.py"]

MANIFEST = '''name = "{name}"
grid = "landcover.tif"

[landcover]
raster = "landcover.tif"

[landcover.classes]
1 = "forest"
2 = "grassland"
3 = "farmland"
5 = "water"

[landcover.casa_type]
forest = "deciduous_broadleaf"
grassland = "grassland"
farmland = "cropland"
water = "none"

[ndvi]
fine_series = "ndvi.tif"

[climate]
temperature = "tmean.tif"
precipitation = "prec.tif"
solar = "srad.tif"

[soil]
samples = "soil.csv"
crs = "EPSG:32649"

[soil.properties]
SOC = "soc"
TN = "tn"
'''


LD_NAMES = ["subsidence", "cracks", "seeper"]
#: Judgements of the tiny dataset's AHP file (consistent enough: CR < 0.1).
LD_MATRIX = [[1.0, 3.0, 5.0], [1 / 3, 1.0, 2.0], [1 / 5, 1 / 2, 1.0]]


def make_dataset(root: Path, name: str = "Tiny test basin", w: int = 40, h: int = 30, seed: int = 0,
                 ld: bool = False) -> Path:
    """Write a small but complete dataset (land cover, NDVI series, climate, soil samples).

    With ``ld`` it also has three degradation indicators in [0, 1] with one pixel
    at 0 in all of them and one at 1 in all, so min–max scaling changes nothing
    and LD = Σ wᵢ·xᵢ exactly (the final rescale maps 0 → 0 and 1 → 1).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    g = Grid(CRS.from_epsg(32649), Affine(30, 0, 680_000, 0, -30, 3_940_000), w, h)
    lc = np.ones((h, w), np.uint8)
    lc[:, w // 3 :] = 2
    lc[:, 2 * w // 3 :] = 3
    lc[h // 2 :, :4] = 5
    write_raster(root / "landcover.tif", lc, g, dtype="uint8", nodata=0)
    months = [f"{y}-{m:02d}" for y in (2010, 2011) for m in range(1, 13)]
    mon = np.array([int(m[5:]) for m in months])
    season = np.sin((mon - 3) / 12 * np.pi).clip(0)
    ndvi = 0.15 + 0.6 * season[:, None, None] * (0.6 + 0.4 * rng.random((1, h, w)))
    write_raster(root / "ndvi.tif", ndvi, g, band_names=months)
    temp = -3 + 26 * np.sin((mon - 1) / 12 * np.pi)[:, None, None] + rng.normal(0, 0.5, (24, h, w))
    prec = 10 + 120 * season[:, None, None] + rng.random((24, h, w)) * 10
    srad = 200 + 350 * np.sin((mon - 0.5) / 12 * np.pi)[:, None, None] + rng.random((24, h, w))
    for n, a in (("tmean", temp), ("prec", prec), ("srad", srad)):
        write_raster(root / f"{n}.tif", a, g, band_names=months)
    xs = 680_000 + rng.random(30) * w * 30
    ys = 3_940_000 - rng.random(30) * h * 30
    rows = ["x,y,soc,tn"] + [
        f"{x:.1f},{y:.1f},{10 + (x - 680_000) / 100 + rng.normal():.3f},{1 + rng.random():.3f}" for x, y in zip(xs, ys)
    ]
    (root / "soil.csv").write_text("\n".join(rows) + "\n")
    manifest = MANIFEST.format(name=name)
    if ld:
        for i, n in enumerate(LD_NAMES):
            x = rng.random((h, w))
            x[0, 0], x[0, 1] = 0.0, 1.0
            write_raster(root / f"ind_{n}.tif", x, g)
        (root / "ahp.csv").write_text(
            "indicator," + ",".join(LD_NAMES) + "\n"
            + "".join(n + "," + ",".join(f"{v:.10g}" for v in row) + "\n" for n, row in zip(LD_NAMES, LD_MATRIX))
        )
        manifest += '\n[degradation]\nahp = "ahp.csv"\n\n[degradation.indicators]\n' + "".join(
            f'{n} = "ind_{n}.tif"\n' for n in LD_NAMES
        )
    (root / "dataset.toml").write_text(manifest)
    return root


def zip_dir(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, f"{folder.name}/{p.relative_to(folder).as_posix()}")
    return buf.getvalue()


@pytest.fixture(scope="module", autouse=True)
def private_stage_cache(tmp_path_factory):
    """A stage cache of this test module only, so "done" vs "cached" does not depend on earlier runs."""
    from pages import _common as C

    old = C.CACHE_DIR
    C.CACHE_DIR = tmp_path_factory.mktemp("stage_cache")
    yield C.CACHE_DIR
    C.CACHE_DIR = old


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds") / "tiny")


#: Small forests and samples: the wiring tests check what changes, not the science.
FAST = {"rf": {"n_trees": 20}, "sampling": {"n_points": 300}}


def new_app(ds: Path, fast: bool = False) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.session_state["ds_path"] = str(ds)
    if fast:
        from npp_core import params as P

        at.session_state["params"] = P.validate(FAST)
    at.run()
    assert not at.exception, at.exception
    return at


def goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error]
    parts += [w.value for w in at.warning] + [i.value for i in at.info] + [s.value for s in at.success]
    parts += [t.value for t in at.title] + [s.value for s in at.subheader]
    return "\n".join(str(p) for p in parts)


def run_pipeline(at: AppTest) -> None:
    goto(at, "pages/3_Run.py")
    at.button(key="run_start").click()
    at.run(timeout=180)  # the page polls the run until it ends
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["job"] is None
    assert at.session_state["last_job"]["error"] == ""


def test_every_page_runs_and_sample_flow(tiny):
    at = new_app(tiny, fast=True)
    assert "Tiny test basin" in texts(at)
    assert "not computed yet" in texts(at)  # sidebar: where results stand
    # Data page: layers listed with a thumbnail each (tables have none), grid understood
    goto(at, "pages/1_Data.py")
    assert "40 × 30 px" in [m.value for m in at.metric]
    assert len(at.get("image")) >= 5  # NDVI, 3 climate layers, land cover (the soil table has none)
    # the dataset's one problem (no land-degradation input) is shown with its fix, not as a crash
    errs = [e.value for e in at.error]
    assert len(errs) == 1 and "degradation" in errs[0] and "**Fix:**" in errs[0]
    # the interactive map is a streamlit-folium component whose Leaflet comes inline, not from a CDN
    maps = [e for e in at.get("component_instance") if e.proto.component_name.endswith("st_folium")]
    assert len(maps) == 1
    args = json.loads(maps[0].proto.json_args)
    assert [u[:5] for u in args["js_links"]] == ["data:"] and [u[:5] for u in args["css_links"]] == ["data:"]
    blob = json.dumps(args)
    assert "cdn" not in blob.lower() and "https://" not in args["script"] and "L.imageOverlay" in args["script"]
    for page in PAGES[1:]:
        goto(at, page)
    goto(at, "pages/5_Sensitivity.py")
    assert at.radio(key="sens_mode").value == "One setting" and not at.error
    at.radio(key="sens_mode").set_value("Dominance threshold (instant)").run()
    assert "open **Run** first" in texts(at)  # no results yet: says what to do

    # Run end to end, then Explore and Export work on the results
    run_pipeline(at)
    stages = {s["name"]: s["status"] for s in at.session_state["last_job"]["stages"]}
    assert stages["casa"] in ("done", "cached") and stages["fusion"] in ("done", "cached")
    assert "up to date" in texts(at)
    out = Path(at.session_state["run"]["out_dir"])
    assert (out / "npp_mean.tif").exists()
    goto(at, "pages/4_Explore.py")
    assert not at.error
    assert "Layer" in [s.label for s in at.selectbox]
    assert any(o.startswith("NPP · multi-year mean") for o in at.selectbox(key="explore_layer").options)
    # the dominance threshold recolours the stored classes at once, without a new run
    at.radio(key="explore_view").set_value("Dominant driver (threshold)").run()
    assert not at.exception, [e.value for e in at.exception]
    stored = read_raster(out / "relcon.tif")[0]
    valid = np.all(np.isfinite(stored), axis=0)

    def shares() -> dict[str, float]:
        html = " ".join(h.proto.body for h in at.get("html") if "Dominant driver at" in h.proto.body)
        return {m[0]: float(m[1]) for m in re.findall(r"</span>([A-Za-z+]+) <span[^>]*>([\d.]+) %", html)}

    s60 = shares()
    # a single category dominates at 60 % where its RelCon > 60 (undetermined pixels excepted)
    c_share = 100.0 * np.sum(valid & (stored[0] > 60.0)) / valid.sum()
    assert s60["C"] <= c_share + 0.05 and s60["C"] >= c_share - s60.get("undetermined", 0.0) - 0.05
    at.slider(key="explore_threshold").set_value(100.0).run()
    s100 = shares()
    assert s100.get("C", 0.0) == 0.0 and s100.get("S", 0.0) == 0.0  # nothing exceeds 100 %
    assert abs(sum(s100.values()) - 100.0) < 0.5 and abs(sum(s60.values()) - 100.0) < 0.5
    assert Path(at.session_state["run"]["out_dir"]) == out  # no recompute
    goto(at, "pages/6_Export.py")
    assert not at.error
    assert {b.label for b in at.get("download_button")} >= {"All outputs (.zip)", "Report (offline HTML)", "Settings (params.toml)"}

    # A parameter change marks the results stale; the rerun scales NPP exactly (NPP ∝ εmax)
    npp1 = read_raster(out / "npp_mean.tif")[0][0]
    goto(at, "pages/2_Parameters.py")
    at.number_input(key="p__casa__eps_scale").set_value(2.0).run()
    assert at.session_state["params"]["casa"]["eps_scale"] == 2.0
    assert "stale" in texts(at)
    run_pipeline(at)
    out2 = Path(at.session_state["run"]["out_dir"])
    assert out2 != out and not out.exists()  # the old run folder is cleaned up
    npp2 = read_raster(out2 / "npp_mean.tif")[0][0]
    veg = np.isfinite(npp1) & (npp1 > 1)
    assert veg.sum() > 100
    np.testing.assert_allclose(npp2[veg], 2 * npp1[veg], rtol=2e-6)
    assert "up to date" in texts(at)


def test_upload_zip_and_bad_upload(tiny, tmp_path, monkeypatch):
    from pages import _common as C

    monkeypatch.setattr(C, "SAMPLE_DIR", tiny)  # "back to the sample" below: the tiny one, not the real basin
    at = new_app(tiny)
    goto(at, "pages/1_Data.py")
    at.radio(key="data_source").set_value("Upload a dataset (.zip)").run()
    other = make_dataset(tmp_path / "mine", name="My uploaded basin", w=24, h=20, seed=3)
    at.file_uploader(key="upload_zip").set_value(("my basin.zip", zip_dir(other), "application/zip")).run()
    assert not at.exception
    assert all("**Fix:**" in e.value for e in at.error), [e.value for e in at.error]  # only dataset findings
    ds_path = Path(at.session_state["ds_path"])
    session = Path(at.session_state["session_dir"])
    assert session in ds_path.parents and "my basin" not in str(ds_path)  # private folder, generated name
    assert "My uploaded basin" in texts(at)
    assert "**Dataset:** My uploaded basin" in [m.value for m in at.sidebar.markdown]
    assert "24 × 20 px" in [m.value for m in at.metric]

    # a broken archive: message with what to do, the previous dataset stays
    at.file_uploader(key="upload_zip").set_value(("broken.zip", b"PK\x03\x04 not really a zip", "application/zip")).run()
    assert not at.exception
    errs = " ".join(e.value for e in at.error)
    assert "broken.zip" in errs and "previously loaded dataset" in errs
    assert Path(at.session_state["ds_path"]) == ds_path and ds_path.exists()

    # an archive without dataset.toml
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("readme.txt", "hello")
    at.file_uploader(key="upload_zip").set_value(("nomanifest.zip", buf.getvalue(), "application/zip")).run()
    assert "dataset.toml" in " ".join(e.value for e in at.error)
    assert Path(at.session_state["ds_path"]) == ds_path

    # back to the sample: the upload folder is removed
    at.radio(key="data_source").set_value("Bundled sample basin").run()
    at.button[0].click().run()
    assert not ds_path.exists() and Path(at.session_state["ds_path"]) == tiny


def test_parameters_save_load_and_errors(tiny):
    at = new_app(tiny)
    goto(at, "pages/2_Parameters.py")
    assert not at.error
    from npp_core import params as P

    good = P.dumps({**P.defaults(), "lcc": {"window": 7, "min_valid": 3}})
    at.file_uploader(key="params_upload").set_value(("p.toml", good.encode(), "application/toml")).run()
    assert at.session_state["params"]["lcc"]["window"] == 7
    assert at.number_input(key="p__lcc__window").value == 7  # widgets follow the loaded file
    at.file_uploader(key="params_upload").set_value(("bad.toml", b"[lcc]\nwindow = 4\n", "application/toml")).run()
    assert any("must be odd" in e.value for e in at.error)
    assert at.session_state["params"]["lcc"]["window"] == 7  # kept
    # the per-class CASA table lists the dataset's classes with their CASA types
    tables = [d.value for d in at.dataframe]
    casa = next(t for t in tables if "CASA type" in t.columns and "NDVImax" in t.columns)
    assert dict(zip(casa["class"], casa["CASA type"])) == {
        "forest": "deciduous_broadleaf", "grassland": "grassland", "farmland": "cropland", "water": "none"}
    assert casa.set_index("class").loc["forest", "εmax"] == pytest.approx(0.692)  # εmax table × eps_scale 1


def test_sessions_do_not_share_uploads_or_results(tiny, tmp_path):
    a = new_app(tiny)
    b = new_app(tiny)
    assert a.session_state["session_dir"] != b.session_state["session_dir"]
    goto(a, "pages/1_Data.py")
    a.radio(key="data_source").set_value("Upload a dataset (.zip)").run()
    other = make_dataset(tmp_path / "a_only", name="Only A's basin", w=20, h=16, seed=5)
    a.file_uploader(key="upload_zip").set_value(("a.zip", zip_dir(other), "application/zip")).run()
    assert "Only A's basin" in texts(a)
    goto(b, "pages/1_Data.py")
    assert "Only A's basin" not in texts(b)
    assert Path(b.session_state["ds_path"]) == tiny


def test_unexpected_failure_is_a_message_not_a_traceback():
    script = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from pages import _common as C

def body():
    raise KeyError("summary.json lost its 'npp' table")

C.run_page(body)
"""
    at = AppTest.from_string(script, default_timeout=30).run()
    assert not at.exception
    (err,) = at.error
    assert "KeyError" in err.value and "What to do" in err.value and "Traceback" not in err.value


def test_assemble_dataset_from_individual_files(tiny):
    at = new_app(tiny)
    goto(at, "pages/1_Data.py")
    at.radio(key="data_source").set_value("Upload individual files").run()
    names = ["landcover.tif", "ndvi.tif", "tmean.tif", "prec.tif", "srad.tif", "soil.csv"]
    at.file_uploader(key="upload_files").set_value(
        [(n, (tiny / n).read_bytes(), "text/csv" if n.endswith("csv") else "image/tiff") for n in names]
    ).run()
    assert not at.exception, [e.value for e in at.exception]
    want = {
        "landcover.tif": "land cover (class codes) — the reference grid",
        "ndvi.tif": "NDVI monthly series",
        "tmean.tif": "temperature, monthly (°C)",
        "prec.tif": "precipitation, monthly (mm)",
        "srad.tif": "solar radiation, monthly (MJ m-2)",
        "soil.csv": "soil samples (CSV with x, y columns)",
    }
    for sb in at.selectbox:
        fname = sb.label.split(" (")[0]
        if fname in want:
            sb.set_value(want[fname])
    at.run()
    at.text_input(key="files_soil_crs").set_value("EPSG:32649")
    at.button(key="files_build").click().run()
    assert not at.exception, [e.value for e in at.exception]
    ds_path = Path(at.session_state["ds_path"])
    assert at.session_state["ds_origin"] == "files"
    assert Path(at.session_state["session_dir"]) in ds_path.parents
    stored = sorted(p.name for p in ds_path.iterdir())
    assert "landcover.tif" in stored and not set(names[1:]) & set(stored)  # generated names, not the user's
    manifest = (ds_path / "dataset.toml").read_text()
    assert 'fine_series = "file_1.tif"' in manifest and "[soil.properties]" in manifest and '"soc" = "soc"' in manifest
    assert "40 × 30 px" in [m.value for m in at.metric]
    assert "**Dataset:** My study area" in [m.value for m in at.sidebar.markdown]


# --------------------------------------------------------------------------- settings editors → run


def _eig_weights(a: np.ndarray) -> np.ndarray:
    """Principal-eigenvector AHP weights, computed here independently of npp_core.ahp."""
    vals, vecs = np.linalg.eig(np.asarray(a, float))
    v = np.abs(np.real(vecs[:, np.argmax(np.real(vals))]))
    return v / v.sum()


@pytest.fixture(scope="module")
def tiny_ld(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("dsld") / "tiny_ld", name="Tiny LD basin", ld=True)


def test_ahp_edit_and_class_override_change_the_run_and_are_saved(tiny_ld):
    from npp_core import params as P

    at = new_app(tiny_ld, fast=True)
    run_pipeline(at)
    out1 = Path(at.session_state["run"]["out_dir"])
    x = np.stack([read_raster(tiny_ld / f"ind_{n}.tif")[0][0] for n in LD_NAMES])
    ld1 = read_raster(out1 / "ld.tif")[0][0]
    w1 = _eig_weights(np.array(LD_MATRIX))
    np.testing.assert_allclose(ld1, np.tensordot(w1, x, 1), atol=2e-6)  # the dataset's matrix as given
    npp1 = read_raster(out1 / "npp_mean.tif")[0][0]

    # a class override arrives through a settings file (validated, shown in the table, saved again)
    goto(at, "pages/2_Parameters.py")
    prm = P.validate({**FAST, "casa": {"overrides": {"forest": {"eps_max": 2 * 0.692}}}})
    at.file_uploader(key="params_upload").set_value(("p.toml", P.dumps(prm).encode(), "application/toml")).run()
    assert at.session_state["params"]["casa"]["overrides"] == {"forest": {"eps_max": 1.384}}
    assert any("Overridden classes: forest (eps_max)" in c.value for c in at.caption)
    bad = P.dumps({**prm, "casa": {"overrides": {"forest": {"ndvi_min": 0.5, "ndvi_max": 0.2}}}})
    at.file_uploader(key="params_upload").set_value(("bad.toml", bad.encode(), "application/toml")).run()
    assert any("ndvi_min must be below ndvi_max" in e.value for e in at.error)
    assert at.session_state["params"]["casa"]["overrides"] == {"forest": {"eps_max": 1.384}}  # kept

    # an AHP judgement edited on the page goes into degradation.ahp_override
    assert at.number_input(key="p__ahp__0__1").value == pytest.approx(3.0)
    at.number_input(key="p__ahp__0__1").set_value(0.5).run()
    at.number_input(key="p__ahp__0__2").set_value(1.0).run()  # now consistent: weights ¼, ½, ¼
    ov = at.session_state["params"]["degradation"]["ahp_override"]
    assert ov["names"] == LD_NAMES
    want = np.array([[1.0, 0.5, 1.0], [2.0, 1.0, 2.0], [1.0, 0.5, 1.0]])
    assert any(m.value == "0.000" for m in at.metric)  # live consistency ratio of the edited matrix
    np.testing.assert_allclose(ov["matrix"], want)
    saved = P.loads(P.dumps(at.session_state["params"]))  # what "Save settings" writes, read back
    np.testing.assert_allclose(saved["degradation"]["ahp_override"]["matrix"], want)
    assert saved["casa"]["overrides"] == {"forest": {"eps_max": 1.384}}
    assert "stale" in texts(at) and "degradation" in " ".join(m.value for m in at.sidebar.markdown)

    run_pipeline(at)
    out2 = Path(at.session_state["run"]["out_dir"])
    stages = {s["name"]: s["status"] for s in at.session_state["last_job"]["stages"]}
    assert stages["drivers"] == "done" and stages["casa"] == "done" and stages["fusion"] == "cached"
    ld2 = read_raster(out2 / "ld.tif")[0][0]
    w2 = _eig_weights(want)
    np.testing.assert_allclose(w2, [0.25, 0.5, 0.25])
    np.testing.assert_allclose(ld2, np.tensordot(w2, x, 1), atol=2e-6)
    assert np.nanmax(np.abs(ld2 - ld1)) > 0.05
    s2 = json.loads((out2 / "summary.json").read_text())
    np.testing.assert_allclose([s2["ahp"]["weights"][n] for n in LD_NAMES], w2, rtol=1e-6)
    # the override doubles forest NPP only (NPP ∝ εmax); the other classes are unchanged
    lc = read_raster(tiny_ld / "landcover.tif")[0][0]
    npp2 = read_raster(out2 / "npp_mean.tif")[0][0]
    forest, other = (lc == 1) & (npp1 > 1), np.isin(lc, (2, 3)) & (npp1 > 1)
    assert forest.sum() > 50 and other.sum() > 50
    np.testing.assert_allclose(npp2[forest], 2 * npp1[forest], rtol=2e-6)
    np.testing.assert_allclose(npp2[other], npp1[other], rtol=1e-7)

    # back to the dataset's matrix: the override is cleared
    goto(at, "pages/2_Parameters.py")
    at.button(key="ahp_reset").click().run()
    assert at.session_state["params"]["degradation"]["ahp_override"] == {}
    assert at.number_input(key="p__ahp__0__1").value == pytest.approx(3.0)


def test_casa_table_edits_become_validated_overrides():
    from pages import _common as C

    base = [
        {"class": "forest", "CASA type": "deciduous_broadleaf", "εmax": 0.692, "NDVImin": 0.023, "NDVImax": 0.738},
        {"class": "water", "CASA type": "none", "εmax": float("nan"), "NDVImin": float("nan"), "NDVImax": float("nan")},
        {"class": "grassland", "CASA type": "grassland", "εmax": 0.542, "NDVImin": 0.023, "NDVImax": 0.7},
    ]
    prev = {"grassland": {"ndvi_max": 0.7}}  # the table shows the current overrides
    same, ign = C.casa_overrides_from_table(base, [dict(r) for r in base], prev)
    assert same == prev and ign == []  # nothing edited: previous overrides kept
    ed = [dict(r) for r in base]
    ed[0]["εmax"] = 0.9
    ed[1]["εmax"] = 0.5  # not vegetated: refused with a message
    ed[2]["NDVImin"] = 0.75  # not below its overridden NDVImax (0.7): refused
    new, ign = C.casa_overrides_from_table(base, ed, prev)
    assert new == {"forest": {"eps_max": 0.9}, "grassland": {"ndvi_max": 0.7}}
    assert len(ign) == 2 and "water" in ign[0] and "grassland" in ign[1]


def test_ahp_matrix_from_judgements_is_reciprocal():
    from pages import _common as C

    fb = np.array(LD_MATRIX)
    m = C.ahp_from_judgements(LD_NAMES, {(0, 1): 7.0, (0, 2): float("nan"), (1, 2): -1.0}, fb)
    np.testing.assert_allclose(m, [[1, 7, 5], [1 / 7, 1, 2], [1 / 5, 1 / 2, 1]])


# --------------------------------------------------------------------------- sensitivity page


def test_sensitivity_threshold_sweep_and_ensemble(tiny):
    at = new_app(tiny, fast=True)
    run_pipeline(at)
    out = Path(at.session_state["run"]["out_dir"])
    goto(at, "pages/5_Sensitivity.py")
    # a one-setting sweep: εmax ×1 and ×2 → mean NPP doubles; the baseline point has no class change
    at.selectbox(key="sens_key0").set_value("casa.eps_scale").run()
    at.text_input(key="sens_vals0_casa.eps_scale").set_value("1, 2").run()
    at.button(key="sens_start").click()
    at.run(timeout=180)
    assert not at.exception, [e.value for e in at.exception]
    job = at.session_state["sens_job"]
    assert job.error == "", job.error
    rows = job.result["rows"]
    assert [r["value"] for r in rows] == [1.0, 2.0]
    assert rows[1]["npp_mean"] == pytest.approx(2 * rows[0]["npp_mean"], rel=1e-5)
    main = json.loads((out / "summary.json").read_text())
    assert rows[0]["npp_mean"] == pytest.approx(main["npp"]["mean"], rel=1e-6)  # same settings as the run
    assert rows[0]["class_change"] == 0.0 and rows[0]["is_baseline"]
    assert Path(job.work_dir).parent == Path(at.session_state["session_dir"])  # private folder
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    npp_chart = next(c for c in charts if "Mean NPP" in json.dumps(c["layout"].get("title", "")))
    assert npp_chart["data"][0]["y"] == pytest.approx([rows[0]["npp_mean"], rows[1]["npp_mean"]])
    maps = [e for e in at.get("component_instance") if e.proto.component_name.endswith("st_folium")]
    assert len(maps) == 1 and "L.imageOverlay" in json.loads(maps[0].proto.json_args)["script"]

    # a 2-setting grid: εmax scale × LCC window; the heat map of mean NPP doubles along εmax only
    at.radio(key="sens_mode").set_value("Two settings (grid)").run()
    at.text_input(key="sens_vals0_casa.eps_scale").set_value("1, 2").run()
    at.text_input(key="sens_vals1_lcc.window").set_value("3, 5").run()
    at.button(key="sens_start").click()
    at.run(timeout=180)
    assert not at.exception, [e.value for e in at.exception]
    job = at.session_state["sens_job"]
    assert job.error == "" and len(job.result["rows"]) == 4, job.error
    at.selectbox(key="sens_grid_metric").set_value("npp_mean").run()
    heat = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if json.loads(c.proto.spec)["data"][0]["type"] == "heatmap")
    z = np.array(heat["data"][0]["z"], float)
    assert z.shape == (2, 2) and heat["data"][0]["y"] == ["1.0", "2.0"] and heat["data"][0]["x"] == ["3", "5"]
    np.testing.assert_allclose(z[1], 2 * z[0], rtol=1e-5)
    np.testing.assert_allclose(z[:, 1], z[:, 0], rtol=1e-9)  # the LCC window does not touch NPP

    # the threshold sweep: shares from the stored RelCon, no run
    at.radio(key="sens_mode").set_value("Dominance threshold (instant)").run()
    assert not at.exception, [e.value for e in at.exception]
    at.slider(key="sens_thr_range").set_value((50.0, 100.0)).run()
    at.number_input(key="sens_thr_step").set_value(25.0).run()
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    share_chart = next(c for c in charts if "Dominant-class areas" in json.dumps(c["layout"].get("title", "")))
    by = {t["name"]: dict(zip(t["x"], t["y"])) for t in share_chart["data"]}
    assert set(by["C"]) == {50.0, 60.0, 75.0, 100.0}
    assert by["C"][100.0] == 0.0 and by["S"][100.0] == 0.0  # no category exceeds 100 %
    rel = read_raster(out / "relcon.tif")[0]
    valid = np.all(np.isfinite(rel), axis=0)
    c75 = 100.0 * np.sum(valid & (rel[0] > 75.0)) / valid.sum()
    assert by["C"][75.0] <= c75 + 0.05 and by["C"][75.0] >= c75 - by["undetermined"][75.0] - 0.05
    assert Path(at.session_state["run"]["out_dir"]) == out

    # an ensemble of 2 members: modal map, agreement and the interval table
    at.radio(key="sens_mode").set_value("Ensemble (seeds / sample draws)").run()
    at.number_input(key="ens_members").set_value(2).run()
    at.button(key="ens_start").click()
    at.run(timeout=180)
    assert not at.exception, [e.value for e in at.exception]
    ej = at.session_state["ens_job"]
    assert ej.error == "", ej.error
    ed = Path(ej.result["out_dir"])
    agree = read_raster(ed / "dominant_agreement.tif")[0][0]
    assert np.nanmin(agree) >= 0.5 - 1e-6 and np.nanmax(agree) <= 1.0  # 2 members: agreement is ½ or 1
    es = json.loads((ed / "summary.json").read_text())["ensemble"]
    assert es["members"] == 2 and es["intervals"]
    assert f"Ensemble of 2 members" in texts(at)
    tables = [d.value for d in at.dataframe]
    assert any("p05" in t.columns and len(t) == len(es["intervals"]) for t in tables)


# --------------------------------------------------------------------------- hosting


def test_password_gate(tiny, monkeypatch):
    monkeypatch.setenv("NPP_APP_PASSWORD", "s3cret pass")
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["ds_path"] = str(tiny)
    at.run()
    assert not at.exception
    assert "Work through the pages" not in texts(at) and "session_dir" not in at.session_state
    at.switch_page("pages/1_Data.py").run()  # every page is gated, not only Home
    assert not at.get("metric") and at.text_input(key="auth_password")
    at.text_input(key="auth_password").input("wrong")
    at.button[0].click().run()
    assert any("Wrong password" in e.value for e in at.error)
    assert not at.get("metric")
    at.text_input(key="auth_password").input("s3cret pass")
    at.button[0].click().run()
    assert not at.exception
    assert "40 × 30 px" in [m.value for m in at.metric]  # the Data page itself
    assert "auth_password" not in at.session_state  # the password is not kept


def test_oidc_login_gate_when_auth_is_configured(tiny):
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
                          "client_id": "id", "client_secret": "s", "server_metadata_url": "https://idp.example/.well-known/openid-configuration"}
    at.session_state["ds_path"] = str(tiny)
    at.run()
    assert not at.exception
    import importlib.util

    if importlib.util.find_spec("authlib") is None:  # st.login needs Authlib: the gate says so instead
        assert any("Authlib" in e.value for e in at.error) and not at.button
    else:
        assert at.button(key="auth_login").label == "Sign in"
    assert "Work through the pages" not in texts(at) and "session_dir" not in at.session_state


def test_session_folder_removed_when_session_ends_and_stale_sweep(tmp_path):
    import gc
    import os
    import time

    from pages import _common as C

    import threading

    f = C.SessionFolder(tmp_path)
    p = f.path
    (p / "upload_x").mkdir()
    (p / "upload_x" / "data.tif").write_bytes(b"x")
    running = threading.Event()
    f.cancels.append(running)
    assert p.is_dir() and p.parent == tmp_path and p.name.startswith(C.TMP_PREFIX)
    del f
    gc.collect()
    assert not p.exists()  # the finalizer ran when the session state let go of it
    assert running.is_set()  # and the session's background run was told to stop

    old, fresh = C.SessionFolder(tmp_path), C.SessionFolder(tmp_path)
    other = tmp_path / "not_a_session"
    other.mkdir()
    t = time.time() - 13 * 3600
    os.utime(old.path / ".last_seen", (t, t))
    os.utime(other, (t, t))
    removed = C.sweep_stale_sessions(tmp_path, max_age_h=12)
    assert removed == [old.path] and not old.path.exists()
    assert fresh.path.exists() and other.exists()  # live sessions and foreign folders are left alone
    fresh.remove()
    assert not fresh.path.exists()


def test_server_folders_stay_inside_the_data_root(tiny, tmp_path, monkeypatch):
    from pages import _common as C

    root = tmp_path / "root"
    make_dataset(root / "basin_a", w=8, h=6)
    outside = make_dataset(tmp_path / "secret", w=8, h=6)
    (root / "link").symlink_to(outside)
    monkeypatch.delenv("NPP_DATA_ROOT", raising=False)
    with pytest.raises(C.FolderAccessError, match="switched off"):
        C.resolve_data_folder("basin_a")
    monkeypatch.setenv("NPP_DATA_ROOT", str(root))
    assert C.resolve_data_folder("basin_a") == (root / "basin_a").resolve()
    for bad, why in [("../secret", r"'\.\.'"), ("basin_a/../../secret", r"'\.\.'"), (str(outside), "absolute"),
                     ("/etc", "absolute"), ("link", "outside the data root"), ("", "absolute"),
                     ("nope", "no dataset.toml")]:
        with pytest.raises(C.FolderAccessError, match=why):
            C.resolve_data_folder(bad)
    # the Data page lists only what is inside (not the link leading out) and loads it
    at = new_app(tiny)
    goto(at, "pages/1_Data.py")
    at.radio(key="data_source").set_value("Folder on the server").run()
    assert at.selectbox(key="server_folder").options == ["basin_a"]
    at.button(key="server_load").click().run()
    assert not at.exception and Path(at.session_state["ds_path"]) == (root / "basin_a").resolve()
    assert at.session_state["ds_origin"] == "server" and "8 × 6 px" in [m.value for m in at.metric]

