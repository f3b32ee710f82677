"""Sensitivity sweeps on the sample basin: threshold reclassification, cached one-at-a-time sweeps, grids, AHP.

One small run of the sample (shared stage cache in the session's temporary
folder, the same one test_ensemble_stage.py uses) serves every test; sweeps
of ``dominance.threshold`` and ``lcc.window`` then rerun only their own stage.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from npp_core import params as P
from npp_core import pipeline
from npp_core import sensitivity as S
from npp_core.raster import read_raster

SAMPLE = ROOT / "sample_data"
FAST = ["rf.n_trees=30", "estarfm.window=21", "sampling.n_points=300", "rf.cv_blocks=2"]


def shared_cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "sample_stage_cache"


@pytest.fixture(scope="session")
def sample_ds():
    if not (SAMPLE / "dataset.toml").is_file():
        pytest.skip("sample_data/dataset.toml not generated in this checkout")
    from npp_core.dataset import open_dataset

    with open_dataset(SAMPLE) as ds:
        yield ds


@pytest.fixture(scope="session")
def base(sample_ds, tmp_path_factory):
    out = tmp_path_factory.mktemp("sens") / "base"
    prm = P.load(None, FAST)
    res = pipeline.run(sample_ds, prm, out, only=["dominance", "lcc"], cache_dir=shared_cache(tmp_path_factory))
    assert res.ok, [(s.name, s.message) for s in res.stages if s.status == "failed"]
    return out, res.summary, prm, shared_cache(tmp_path_factory)


def _reference_classes(out, thr: float) -> np.ndarray:
    """Dominant classes by hand from relcon.tif / actcon.tif / noise floor (codes of category_codes)."""
    summ = json.loads((out / "summary.json").read_text())
    cats = summ["attribution"]["categories"]
    floor = summ["attribution"]["noise_floor"]
    rel = read_raster(out / "relcon.tif")[0]
    act = read_raster(out / "actcon.tif")[0]
    valid = np.all(np.isfinite(act), axis=0)
    s = np.where(valid, np.abs(np.nan_to_num(act)).sum(axis=0), np.nan)
    und = valid & ((s == 0) | (s < floor))
    k = len(cats)
    pair, code = {}, k + 1
    for i in range(k):
        for j in range(i + 1, k):
            pair[(i, j)], pair[(j, i)] = code, code + 1
            code += 2
    r = np.where(np.isfinite(rel), rel, -1.0)
    top = np.argmax(r, axis=0)  # first maximum: ties go to the earlier category
    r2 = r.copy()
    np.put_along_axis(r2, top[None], -2.0, axis=0)
    second = np.argmax(r2, axis=0)
    top_val = np.take_along_axis(r, top[None], axis=0)[0]
    lut = np.zeros((k, k), np.uint8)
    for (i, j), c in pair.items():
        lut[i, j] = c
    out_codes = np.where(top_val > thr, top + 1, lut[top, second]).astype(np.uint8)
    out_codes[~np.all(np.isfinite(rel), axis=0)] = 0
    out_codes[und] = code
    out_codes[~valid] = 0
    return out_codes


def _shares(codes: np.ndarray, labels: dict[int, str]) -> dict[str, float]:
    n = np.count_nonzero(codes)
    return {lab: 100.0 * np.count_nonzero(codes == c) / n for c, lab in labels.items() if c != 0}


def _codes(path) -> np.ndarray:
    return np.nan_to_num(read_raster(path)[0][0], nan=0).astype(np.uint8)


# ----------------------------------------------------------------------------- no pipeline
def test_sweepable_settings_and_their_first_stage():
    expect = {
        "casa.eps_scale": "casa", "casa.halving": "casa", "kriging.model": "drivers",
        "degradation.influence_distance_m": "drivers", "lcc.window": "lcc", "sampling.n_points": "sampling",
        "rf.n_trees": "attribution", "dominance.threshold": "dominance",
    }
    for key, stage in expect.items():
        assert S.SWEEPABLE[key]["stage"] == stage, key
    assert S.SWEEPABLE["lcc.window"]["recomputes"] == ["lcc", "attribution", "ensemble", "dominance"]
    assert S.SWEEPABLE["degradation.influence_distance_m"]["unit"] == "m"
    assert S.SWEEPABLE["casa.halving"]["kind"] == "bool" and S.SWEEPABLE["kriging.model"]["kind"] == "choice"
    for key, info in S.SWEEPABLE.items():  # every suggested value is a valid setting
        sec, name = key.split(".")
        for v in info["values"]:
            P.validate({sec: {name: v}})
    with pytest.raises(S.SensitivityError, match="no pipeline stage"):
        S.first_stage("run.mode")


def test_bad_sweeps_fail_before_running_anything(tmp_path):
    prm = P.defaults()
    with pytest.raises(S.SensitivityError, match="lcc.window"):
        S.sweep(None, prm, "lcc.windw", [3], cache_dir=tmp_path / "c", work_dir=tmp_path / "w")
    with pytest.raises(S.SensitivityError, match="must be odd"):
        S.sweep(None, prm, "lcc.window", [3, 4], cache_dir=tmp_path / "c", work_dir=tmp_path / "w")
    with pytest.raises(S.SensitivityError, match="unknown"):
        S.sweep(None, prm, "lcc.window", [3], metrics=["nppp"], cache_dir=tmp_path / "c", work_dir=tmp_path / "w")
    with pytest.raises(S.SensitivityError, match="max_points"):
        S.sweep_grid(None, prm, "lcc.window", [3, 5, 7, 9, 11, 13, 15], "rf.n_trees", list(range(10, 70, 10)),
                     cache_dir=tmp_path / "c", work_dir=tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_class_change_counts_pixels_analysed_in_either_map():
    a = np.array([[1, 2, 0], [3, 3, 0]], np.uint8)
    b = np.array([[1, 3, 0], [3, 0, 2]], np.uint8)
    # analysed in either: 5 pixels; differing: (0,1), (1,1), (1,2) → 3
    assert S.class_change(a, b) == pytest.approx(60.0)
    assert np.isnan(S.class_change(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8)))


# ----------------------------------------------------------------------------- on the sample
def test_threshold_sweep_matches_reclassifying_by_hand(base):
    out, summary, _, _ = base
    thresholds = [40.0, 50.0, 60.0, 75.0]
    res = S.threshold_sweep(out, thresholds)
    labels = {int(c): lab for c, lab in summary["dominant"]["codes"].items()}
    ref60 = _reference_classes(out, 60.0)
    np.testing.assert_array_equal(ref60, _codes(out / "dominant.tif"))  # the stage used the same rule
    for row, t in zip(res["rows"], thresholds):
        codes = _reference_classes(out, t)
        for lab, v in _shares(codes, labels).items():
            assert row[f"share.{lab}"] == pytest.approx(v, abs=1e-9), (t, lab)
        analysed = (codes != 0) | (ref60 != 0)
        assert row["changed"] == pytest.approx(100.0 * np.count_nonzero(analysed & (codes != ref60)) / analysed.sum())
    by_t = {r["threshold"]: r for r in res["rows"]}
    assert by_t[60.0]["changed"] == 0.0 and by_t[40.0]["changed"] > 0
    # a lower threshold can only turn pairs into singles
    singles = [sum(r[f"share.{c}"] for c in summary["attribution"]["categories"]) for r in res["rows"]]
    assert singles == sorted(singles, reverse=True)
    with pytest.raises(S.SensitivityError, match=r"\[0, 100\]"):
        S.threshold_sweep(out, [120])


def test_threshold_sweep_through_pipeline_reruns_only_dominance(base, sample_ds, tmp_path):
    out, summary, prm, cache = base
    res = S.sweep(sample_ds, prm, "dominance.threshold", [50, 60, 70], cache_dir=cache, work_dir=tmp_path)
    quick = {r["threshold"]: r for r in S.threshold_sweep(out, [50, 60, 70])["rows"]}
    assert [r["value"] for r in res["rows"]] == [50.0, 60.0, 70.0]
    assert res["baseline"]["value"] == 60.0 and res["rows"][1]["is_baseline"]
    for row in res["rows"]:
        st = row["stages"]
        assert all(st[s] == "cached" for s in st if s != "dominance"), st
        assert row["recomputed"] == ([] if row["value"] == 60.0 else ["dominance"])
        q = quick[row["value"]]
        for lab in summary["dominant"]["area_share"]:
            assert row[f"share.{lab}"] == pytest.approx(q[f"share.{lab}"], abs=1e-9)
        assert row["class_change"] == pytest.approx(q["changed"], abs=1e-9)
        np.testing.assert_array_equal(_codes(row["dominant"]), _reference_classes(out, row["value"]))
        assert row["npp_mean"] == pytest.approx(summary["npp"]["mean"])
        assert row["relcon_mean.C"] == pytest.approx(summary["relcon_mean"]["C"])
        assert row["importance.M"] == pytest.approx(summary["importance"]["categories"]["M"])


def test_lcc_window_sweep_reruns_only_lcc_and_matches_individual_runs(base, sample_ds, tmp_path):
    out, summary, prm, cache = base
    res = S.sweep(sample_ds, prm, "lcc.window", [3, 7], cache_dir=cache, work_dir=tmp_path / "sw")
    assert "lcc" in res["metrics"] and res["stage"] == "lcc"
    assert res["baseline"]["value"] == 5 and not any(r["is_baseline"] for r in res["rows"])  # extra point
    sig = {}
    for row in res["rows"]:
        w = row["value"]
        assert row["recomputed"] == ["lcc"], row["stages"]
        assert row["class_change"] == 0.0  # LCC does not feed the attribution
        assert row["npp_mean"] == pytest.approx(summary["npp"]["mean"])
        r, p, n = read_raster(Path(row["out_dir"]) / "lcc" / "LD.tif")[0]
        assert np.nanmax(n) == w * w  # the window really changed
        defined = np.isfinite(r)
        hand = 100.0 * np.count_nonzero(defined & (p < 0.05)) / defined.sum()
        assert row["lcc_significant.LD"] == pytest.approx(hand, abs=1e-6)
        sig[w] = row["lcc_significant.LD"]
        # the same setting run on its own gives the same numbers
        single = pipeline.run(sample_ds, P.set_value(prm, f"lcc.window={w}"), tmp_path / f"single{w}",
                              only=["lcc", "dominance"], cache_dir=cache)
        assert single.summary["lcc"]["LD"] == pytest.approx(
            json.loads((Path(row["out_dir"]) / "summary.json").read_text())["lcc"]["LD"])
        assert 100.0 - single.summary["lcc"]["LD"]["insignificant"] == pytest.approx(row["lcc_significant.LD"])
    assert sig[7] > sig[3]  # wider windows: more pairs, more significant r


def test_grid_sweep_separates_the_two_settings(base, sample_ds, tmp_path):
    _, _, prm, cache = base
    res = S.sweep_grid(sample_ds, prm, "dominance.threshold", [50, 70], "lcc.window", [3, 5],
                       cache_dir=cache, work_dir=tmp_path)
    assert len(res["rows"]) == 4
    share = S.grid_table(res, "share.C")
    sig = S.grid_table(res, "lcc_significant.MAT")
    assert share.shape == (2, 2) and np.all(np.isfinite(share))
    np.testing.assert_array_equal(share[:, 0], share[:, 1])  # class shares depend on the threshold only
    np.testing.assert_array_equal(sig[0], sig[1])  # LCC shares on the window only
    assert share[0, 0] > share[1, 0] and sig[0, 0] != sig[0, 1]
    for row in res["rows"]:
        assert set(row["recomputed"]) <= {"lcc", "dominance"}


def test_perturbed_ahp_judgement_goes_into_the_override_setting(sample_ds):
    deg = sample_ds.degradation()
    names = list(deg["ahp_names"])
    a0 = np.asarray(deg["ahp_matrix"], float)
    prm = P.defaults()
    new = S.perturb_ahp(sample_ds, prm, names[0], names[2], 2.0)
    ov = new["degradation"]["ahp_override"]
    assert ov["names"] == names and prm["degradation"]["ahp_override"] == {}  # input untouched
    a = np.asarray(ov["matrix"])
    assert a[0, 2] == pytest.approx(2 * a0[0, 2]) and a[2, 0] == pytest.approx(1 / (2 * a0[0, 2]))
    mask = np.ones_like(a, bool)
    mask[0, 2] = mask[2, 0] = False
    np.testing.assert_array_equal(a[mask], a0[mask])
    # perturbing again starts from the override in effect: factors multiply
    again = S.perturb_ahp(sample_ds, new, names[0], names[2], 1.5)
    assert again["degradation"]["ahp_override"]["matrix"][0][2] == pytest.approx(3 * a0[0, 2])
    assert S.perturb_ahp(sample_ds, prm, names[0], names[1], 1.0) == prm  # unchanged: same cache key
    with pytest.raises(S.SensitivityError, match="not in the matrix"):
        S.perturb_ahp(sample_ds, prm, "nope", names[1], 2.0)
    with pytest.raises(S.SensitivityError, match="positive"):
        S.perturb_ahp(sample_ds, prm, names[0], names[1], 0.0)


def test_ahp_sweep_reruns_drivers_onwards_with_the_perturbed_weights(base, sample_ds, tmp_path):
    from npp_core import ahp

    out, summary, prm, cache = base
    names = list(sample_ds.degradation()["ahp_names"])
    res = S.ahp_sweep(sample_ds, prm, names[0], names[1], [3.0], cache_dir=cache, work_dir=tmp_path,
                      metrics=["attribution", "classes"])
    assert [r["factor"] for r in res["rows"]] == [3.0, 1.0]  # the unperturbed point is added as baseline
    pert, same = res["rows"]
    assert same["is_baseline"] and same["recomputed"] == [] and same["class_change"] == 0.0
    assert pert["recomputed"] == ["drivers", "sampling", "attribution", "ensemble", "dominance"]
    assert pert["stages"]["fusion"] == pert["stages"]["casa"] == "cached"
    a = np.array(sample_ds.degradation()["ahp_matrix"], float)
    a[0, 1] *= 3.0
    a[1, 0] = 1.0 / a[0, 1]
    w, cr = ahp.weights(a)
    assert pert["cr"] == pytest.approx(cr) and pert["judgement"] == pytest.approx(a[0, 1])
    for n, wi in zip(names, w):
        assert pert[f"weight.{n}"] == pytest.approx(wi)
    saved = json.loads((Path(pert["out_dir"]) / "summary.json").read_text())
    assert saved["ahp"]["weights"][names[0]] == pytest.approx(w[0])  # the drivers stage used them
    ld0 = read_raster(out / "drivers" / "LD.tif")[0]
    ld1 = read_raster(Path(pert["out_dir"]) / "drivers" / "LD.tif")[0]
    assert np.nanmax(np.abs(ld1 - ld0)) > 1e-3
    np.testing.assert_array_equal(read_raster(out / "drivers" / "MAT.tif")[0],
                                  read_raster(Path(pert["out_dir"]) / "drivers" / "MAT.tif")[0])
    assert pert["class_change"] > 0.0
