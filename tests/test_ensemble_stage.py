"""The ensemble and dominance stages on the sample basin: member maps, modal class, agreement, intervals.

The reducer itself is tested in test_ensemble.py; here the stages are checked
end to end against class maps recomputed by hand from the stored member RelCon.
Small settings keep it quick; the upstream stages are shared through a stage
cache in the session's temporary folder (test_sensitivity.py uses the same one).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ROOT
from npp_core import params as P
from npp_core.pipeline import run
from npp_core.raster import read_raster

SAMPLE = ROOT / "sample_data"
FAST = ["rf.n_trees=30", "estarfm.window=21", "sampling.n_points=300", "rf.cv_blocks=2"]
MEMBERS = 3


def shared_cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "sample_stage_cache"


@pytest.fixture(scope="session")
def ens_run(tmp_path_factory):
    if not (SAMPLE / "dataset.toml").is_file():
        pytest.skip("sample_data/dataset.toml not generated in this checkout")
    from npp_core.dataset import open_dataset

    out = tmp_path_factory.mktemp("ens") / "out"
    prm = P.load(None, FAST + [f"ensemble.members={MEMBERS}", "ensemble.vary=seed"])
    with open_dataset(SAMPLE) as ds:
        res = run(ds, prm, out, only=["dominance"], cache_dir=shared_cache(tmp_path_factory))
    assert res.ok, [(s.name, s.message) for s in res.stages if s.status == "failed"]
    return out, res.summary, prm


def _classify(rel: np.ndarray, und: np.ndarray, cats: list[str], thr: float) -> np.ndarray:
    """Reference dominance rule (codes as category_codes: singles, ordered pairs, undetermined).

    Top and runner-up by two argmax passes (argmax takes the first of equal
    values, i.e. ties go to the earlier category), independent of the
    argsort ranking in attribution.dominant_classes.
    """
    k = len(cats)
    pair_code, code = np.zeros((k, k), np.uint8), k + 1
    for i in range(k):
        for j in range(i + 1, k):
            pair_code[i, j], pair_code[j, i] = code, code + 1
            code += 2
    defined = np.all(np.isfinite(rel), axis=0)
    r = np.where(defined[None], rel, 0.0)
    top = np.argmax(r, axis=0)
    masked = r.copy()
    np.put_along_axis(masked, top[None], -1.0, axis=0)
    second = np.argmax(masked, axis=0)
    top_val = np.take_along_axis(r, top[None], axis=0)[0]
    out = np.where(top_val > thr, top + 1, pair_code[top, second]).astype(np.uint8)
    out[~defined] = 0
    out[und] = code  # undetermined
    return out


@pytest.fixture(scope="session")
def member_maps(ens_run):
    out, summary, prm = ens_run
    ens = summary["ensemble"]
    cats = list(ens["categories"])
    k = len(cats)
    stack, _, names = read_raster(out / "ensemble" / "relcon.tif")
    assert stack.shape[0] == MEMBERS * (k + 1)
    assert names[: k + 1] == [f"m000_{c}" for c in cats] + ["m000_undetermined"]
    act = read_raster(out / "actcon.tif")[0]
    valid = np.all(np.isfinite(act), axis=0)
    thr = float(prm["dominance"]["threshold"])
    maps = []
    for i in range(MEMBERS):
        block = stack[i * (k + 1): (i + 1) * (k + 1)]
        m = _classify(block[:k], block[k] == 1, cats, thr)
        maps.append(np.where(valid, m, 0))
    return np.stack(maps), valid, stack, cats


def test_members_recorded_with_their_seeds(ens_run):
    _, summary, prm = ens_run
    runs = summary["ensemble"]["member_runs"]
    assert len(runs) == MEMBERS
    assert [m["rf_seed"] for m in runs] == [prm["rf"]["seed"] + 1000 * i for i in range(MEMBERS)]
    assert all(m["sample_seed"] == prm["sampling"]["seed"] for m in runs)  # vary=seed keeps the draw


def test_modal_map_and_agreement_match_member_maps_by_hand(ens_run, member_maps):
    out, summary, _ = ens_run
    maps, valid, _, _ = member_maps
    mode = np.nan_to_num(read_raster(out / "dominant_modal.tif")[0][0], nan=0).astype(int)
    agree = read_raster(out / "dominant_agreement.tif")[0][0]
    assert np.all(np.isnan(agree[~valid]))
    a = agree[valid]
    assert np.all((a >= 1 / MEMBERS - 1e-6) & (a <= 1 + 1e-6))
    # brute-force mode and agreement over the members
    n_cls = int(maps.max()) + 1
    counts = np.stack([(maps == c).sum(axis=0) for c in range(n_cls)])
    counts[0] = 0
    best = counts.argmax(axis=0)  # lowest code on ties, like the reducer
    np.testing.assert_array_equal(mode[valid], best[valid])
    np.testing.assert_allclose(agree[valid], counts.max(axis=0)[valid] / MEMBERS, atol=1e-6)
    unanimous = valid & np.all(maps == maps[0], axis=0)
    assert unanimous.any() and (~unanimous & valid).any()  # 30 trees: members disagree somewhere
    assert np.all(agree[unanimous] == 1.0)
    assert np.all(agree[valid & ~unanimous] < 1.0)
    assert summary["ensemble"]["mean_agreement"] == pytest.approx(float(np.mean(a)), rel=1e-6)


def test_member_zero_is_the_single_run(ens_run, member_maps):
    out, summary, _ = ens_run
    maps, valid, stack, cats = member_maps
    k = len(cats)
    rel = read_raster(out / "relcon.tif")[0]
    np.testing.assert_array_equal(stack[:k], rel)  # same seed, same sample → identical forests
    single = np.nan_to_num(read_raster(out / "dominant.tif")[0][0], nan=0).astype(int)
    np.testing.assert_array_equal(maps[0], single)


def test_intervals_contain_the_single_run_value(ens_run, member_maps):
    out, summary, _ = ens_run
    maps, valid, _, cats = member_maps
    iv = summary["ensemble"]["intervals"]
    runs = summary["ensemble"]["member_runs"]
    single = {
        **{f"relcon_mean.{c}": v for c, v in summary["relcon_mean"].items()},
        **{f"importance.{c}": v for c, v in summary["importance"]["categories"].items()},
        **{f"share.{lab}": v for lab, v in summary["dominant"]["area_share"].items()},
    }
    assert set(single) <= set(iv)
    for name, v in single.items():
        lo, hi = iv[name]["min"], iv[name]["max"]
        assert lo - 1e-6 <= v <= hi + 1e-6, name
        assert iv[name]["n"] == MEMBERS
    # member 0's own numbers equal the single run's
    for c in cats:
        assert runs[0]["relcon_mean"][c] == pytest.approx(summary["relcon_mean"][c], abs=1e-9)
        assert runs[0]["importance_categories"][c] == pytest.approx(summary["importance"]["categories"][c], abs=1e-9)
    # share intervals recomputed from the hand-made member maps
    labels = {int(c): lab for c, lab in summary["dominant"]["codes"].items()}
    for code, lab in labels.items():
        if code == 0:
            continue
        vals = [100.0 * np.count_nonzero(m[valid] == code) / np.count_nonzero(m[valid] != 0) for m in maps]
        assert iv[f"share.{lab}"]["mean"] == pytest.approx(np.mean(vals), abs=1e-6)
        assert iv[f"share.{lab}"]["p05"] == pytest.approx(np.percentile(vals, 5), abs=1e-6)
        assert iv[f"share.{lab}"]["p95"] == pytest.approx(np.percentile(vals, 95), abs=1e-6)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["ensemble"]["intervals"]["relcon_mean.C"]["n"] == MEMBERS


def test_threshold_sweep_reproduces_the_stage_ensemble_numbers(ens_run, member_maps):
    from npp_core.sensitivity import threshold_sweep

    out, summary, prm = ens_run
    maps, valid, _, _ = member_maps
    thr = float(prm["dominance"]["threshold"])
    rows = {r["threshold"]: r for r in threshold_sweep(out, [thr, 45.0])["rows"]}
    ens = summary["ensemble"]
    assert rows[thr]["agreement_mean"] == pytest.approx(ens["mean_agreement"], rel=1e-6)
    for lab, v in ens["modal_area_share"].items():
        assert rows[thr][f"modal_share.{lab}"] == pytest.approx(v, abs=1e-9)
    # at a lower threshold more pixels are single-category in every member: agreement changes
    assert rows[45.0]["agreement_mean"] != rows[thr]["agreement_mean"]
