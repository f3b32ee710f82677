"""Ensembles in run.mode = "chunked" (tiny blocks) write the same files and numbers as run.mode = "memory".

Upstream stages (fusion … attribution) run once in memory and are shared through a stage cache, so
both modes start the ensemble from identical inputs; the ensemble and dominance stages then run in
each mode. The area is a small benchmark dataset (:func:`npp_core.benchdata.bench_data`) with nodata
holes punched into the land cover across the block edges (run.chunk 64 on 213 × 188 pixels: blocks of
54 rows and 63 columns), so member predictions, the noise-floor pixels and the per-block reductions
all meet NaN at block boundaries. Three members with ``ensemble.vary = "both"`` make every member
differ in both its RF seed and its sample draw.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from npp_core import params as P
from npp_core import pipeline
from npp_core.benchdata import bench_data
from npp_core.dataset import open_dataset
from npp_core.raster import read_raster
from npp_core import stages
from fragments import differences

CHUNK = 64
MEMBERS = 3
FAST = ["rf.n_trees=30", "sampling.n_points=300", "rf.cv_blocks=2", f"ensemble.members={MEMBERS}",
        "ensemble.vary=both", f"run.chunk={CHUNK}", "run.scheduler=threads"]
HOLES = [(50, 60, 20, 150), (100, 200, 123, 129), (0, 213, 62, 64), (107, 109, 0, 188)]
ENSEMBLE_FILES = ["ensemble/relcon.tif", "ensemble/relcon_mean.tif", "dominant_modal.tif", "dominant_agreement.tif"]
OTHER_THRESHOLD = 45.0
NOISE = 5_000


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("chunked_ens")
    ds_path = bench_data(base / "ds", 40_000)
    with rasterio.open(ds_path / "landcover.tif", "r+") as src:
        lc = src.read(1)
        for r0, r1, c0, c1 in HOLES:
            lc[r0:r1, c0:c1] = 0  # the land cover's nodata: outside the study area
        src.write(lc, 1)
    up = base / "cache_up"
    out: dict[str, dict[str, pipeline.RunResult]] = {}
    # fewer noise-floor pixels than the area has, so both modes draw a seeded subset of them
    with pytest.MonkeyPatch.context() as mp, open_dataset(ds_path) as ds:
        mp.setattr(stages, "NOISE_PIXELS", NOISE)
        res = pipeline.run(ds, P.load(None, [*FAST, "run.mode=memory"]), base / "upstream", only=["attribution"],
                           cache_dir=up)
        assert res.ok, [(s.name, s.message) for s in res.stages if s.status == "failed"]
        for mode in ("memory", "chunked"):
            cache = base / f"cache_{mode}"
            shutil.copytree(up, cache)  # upstream entries only: the ensemble runs in each mode
            out[mode] = {}
            for thr in (None, OTHER_THRESHOLD):
                extra = [] if thr is None else [f"dominance.threshold={thr}"]
                prm = P.load(None, [*FAST, f"run.mode={mode}", *extra])
                r = pipeline.run(ds, prm, base / mode, only=["dominance"], cache_dir=cache)
                assert r.ok, [(s.name, s.message) for s in r.stages if s.status == "failed"]
                out[mode]["rerun" if thr else "first"] = r
                if thr is None:  # keep the first run's files: the rerun overwrites the dominance outputs
                    shutil.copytree(base / mode, base / f"{mode}_first")
    out["base"] = {"ds": ds_path, "cache": up}
    out["dirs"] = {m: base / f"{m}_first" for m in ("memory", "chunked")}
    out["dirs_rerun"] = {m: base / m for m in ("memory", "chunked")}
    return out


def _assert_same_tif(a_path: Path, b_path: Path, exact: bool) -> float:
    a, ga, na = read_raster(a_path)
    b, gb, nb = read_raster(b_path)
    assert a.shape == b.shape and ga == gb and na == nb, a_path.name
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=str(a_path))
    assert np.isfinite(a).any(), a_path
    diff = float(np.nanmax(np.abs(a - b)))
    if exact:
        np.testing.assert_array_equal(a, b, err_msg=str(a_path))
    else:
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=str(a_path))
    return diff


def _compare(u, v):
    """Differences between two summary fragments (floats to 1e-7 relative: members' mean RelCon is summed from
    the stored float32 bands in chunked mode, from float64 in memory)."""
    return differences(u, v, rel=1e-7, same_keys=True)


def test_modes_and_layout(runs):
    first = runs["chunked"]["first"].summary
    ex = first["run"]["execution"]
    assert ex["ensemble"]["mode"] == "chunked" and ex["dominance"]["mode"] == "chunked"
    assert all(v["mode"] == "memory" for v in runs["memory"]["first"].summary["run"]["execution"].values())
    st = {s.name: s.status for s in runs["chunked"]["first"].stages}
    assert st["ensemble"] == "done" and st["attribution"] == "cached"  # same upstream inputs in both modes
    c = runs["dirs"]["chunked"]
    stack, _, names = read_raster(c / "ensemble/relcon.tif")
    cats = list(first["ensemble"]["categories"])
    assert stack.shape[0] == MEMBERS * (len(cats) + 1)
    assert names == [f"m{i:03d}_{x}" for i in range(MEMBERS) for x in [*cats, "undetermined"]]
    # the holes are nodata in every member band, and members differ (seed and sample vary)
    for r0, r1, c0, c1 in HOLES:
        assert np.isnan(stack[:, r0:r1, c0:c1]).all()
    k = len(cats)
    assert not np.array_equal(stack[:k], stack[k + 1: 2 * k + 1], equal_nan=True)
    # more predicted pixels than noise-floor pixels: the floor uses a seeded subset (drawn without index arrays)
    assert np.count_nonzero(np.isfinite(stack[k])) > NOISE
    with rasterio.open(c / "dominant_modal.tif") as src:
        assert src.dtypes[0] == "uint8" and src.nodata == 0 and len(src.colormap(1)) >= 10


@pytest.mark.parametrize("which", ["dirs", "dirs_rerun"])
def test_every_ensemble_geotiff_equals_memory(runs, which):
    m, c = runs[which]["memory"], runs[which]["chunked"]
    files_m = sorted(str(p.relative_to(m)) for p in m.rglob("*.tif"))
    assert files_m == sorted(str(p.relative_to(c)) for p in c.rglob("*.tif"))
    assert set(ENSEMBLE_FILES) <= set(files_m)
    diffs = {}
    for rel in ENSEMBLE_FILES + ["dominant.tif", "rgb.tif"]:
        # per-pixel work is the same arithmetic in the same order in both modes: bit-identical
        diffs[rel] = _assert_same_tif(m / rel, c / rel, exact=True)
    print(which, diffs)


def test_ensemble_fragments_equal_memory(runs):
    em = runs["memory"]["first"].summary["ensemble"]
    ec = runs["chunked"]["first"].summary["ensemble"]
    assert len(ec["member_runs"]) == MEMBERS
    assert [(r["rf_seed"], r["sample_seed"]) for r in ec["member_runs"]] == \
        [(r["rf_seed"], r["sample_seed"]) for r in em["member_runs"]]
    assert len({r["sample_seed"] for r in ec["member_runs"]}) == MEMBERS  # vary = both
    for rm, rc in zip(em["member_runs"], ec["member_runs"]):
        assert rc["importance_categories"] == rm["importance_categories"]  # same sample, same forest
    assert not _compare(em, ec), _compare(em, ec)[:10]
    d = max(abs(rm["relcon_mean"][c] - rc["relcon_mean"][c]) for rm, rc in zip(em["member_runs"], ec["member_runs"])
            for c in rm["relcon_mean"])
    print("relcon_mean max diff", d, "mean_agreement diff", abs(em["mean_agreement"] - ec["mean_agreement"]))
    # modal shares are counts: exact; the member class-share intervals too
    assert ec["modal_area_share"] == em["modal_area_share"]
    for key, iv in em["intervals"].items():
        if key.startswith(("share.", "importance.")):
            assert ec["intervals"][key] == iv, key


def test_threshold_only_rerun_equals_memory(runs):
    for mode in ("memory", "chunked"):
        st = {s.name: s.status for s in runs[mode]["rerun"].stages}
        assert st["ensemble"] == "cached" and st["dominance"] == "done", st  # nothing refitted
    sm, sc = runs["memory"]["rerun"].summary, runs["chunked"]["rerun"].summary
    assert sc["dominant"]["threshold"] == OTHER_THRESHOLD
    assert not _compare(sm["ensemble"], sc["ensemble"]), _compare(sm["ensemble"], sc["ensemble"])[:10]
    assert not _compare(sm["dominant"], sc["dominant"])
    # the threshold changed the ensemble's classes
    first = runs["chunked"]["first"].summary["ensemble"]
    assert sc["ensemble"]["modal_area_share"] != first["modal_area_share"]


def test_chunked_modal_and_agreement_by_hand(runs):
    """Modal class, agreement and mean RelCon recomputed from the stored member bands (brute force)."""
    from npp_core import attribution

    c = runs["dirs"]["chunked"]
    summ = runs["chunked"]["first"].summary
    cats = list(summ["ensemble"]["categories"])
    k = len(cats)
    thr = float(summ["dominant"]["threshold"])
    stack = read_raster(c / "ensemble/relcon.tif")[0]
    valid = np.all(np.isfinite(read_raster(c / "actcon.tif")[0]), axis=0)
    maps = []
    for i in range(MEMBERS):
        b = stack[i * (k + 1): (i + 1) * (k + 1)]
        codes, labels = attribution.dominant_classes(b[:k], cats, threshold=thr, undetermined_mask=b[k] == 1)
        maps.append(np.where(valid, codes, 0))
    maps = np.stack(maps)
    n_cls = max(labels) + 1
    votes = np.stack([(maps == code).sum(axis=0) for code in range(n_cls)])
    votes[0] = 0
    mode = read_raster(c / "dominant_modal.tif")[0][0]
    agree = read_raster(c / "dominant_agreement.tif")[0][0]
    voted = votes.sum(axis=0) > 0
    np.testing.assert_array_equal(np.nan_to_num(mode, nan=0)[voted], votes.argmax(axis=0)[voted])
    np.testing.assert_allclose(agree[voted], (votes.max(axis=0) / np.maximum(votes.sum(axis=0), 1))[voted], rtol=1e-6)
    assert summ["ensemble"]["mean_agreement"] == pytest.approx(float(np.nanmean(agree[valid])), rel=1e-6)
    assert np.nanmin(agree) < 1.0  # members disagree somewhere
    rel = np.stack([stack[i * (k + 1): i * (k + 1) + k] for i in range(MEMBERS)])
    ok = np.all(np.isfinite(rel), axis=1)
    want = np.where(ok[:, None], rel, 0).sum(axis=0) / np.maximum(ok.sum(axis=0), 1)
    got = read_raster(c / "ensemble/relcon_mean.tif")[0]
    sel = valid & (ok.sum(axis=0) > 0)
    np.testing.assert_allclose(got[:, sel], want[:, sel], rtol=1e-6)
    # each member's mean RelCon over its determined pixels, from the stored bands
    for i, mrun in enumerate(summ["ensemble"]["member_runs"]):
        b = stack[i * (k + 1): (i + 1) * (k + 1)]
        det = (b[k] == 0) & np.all(np.isfinite(b[:k]), axis=0)
        for g, cat in enumerate(cats):
            assert mrun["relcon_mean"][cat] == pytest.approx(float(b[g][det].mean()), rel=1e-9)


def test_on_a_cluster_the_members_are_shipped_once(runs, tmp_path, monkeypatch):
    """run.scheduler = an address: the members' forests are scattered to the workers and the blocks
    run there; same files as in memory."""
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(stages, "NOISE_PIXELS", NOISE)
    cache = tmp_path / "cache"
    shutil.copytree(runs["base"]["cache"], cache)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as lc, \
            distributed.Client(lc) as client:
        prm = P.load(None, [*FAST, "run.mode=chunked", f"run.scheduler={lc.scheduler_address}"])
        with distributed.get_task_stream(client) as ts, open_dataset(runs["base"]["ds"]) as ds:
            res = pipeline.run(ds, prm, tmp_path / "out", only=["dominance"], cache_dir=cache)
        assert res.ok, [(s.name, s.message) for s in res.stages if s.status == "failed"]
        assert any("_ensemble_block" in str(t.get("key", "")) for t in ts.data)
    for rel in ENSEMBLE_FILES:
        _assert_same_tif(runs["dirs"]["memory"] / rel, tmp_path / "out" / rel, exact=True)
    assert not _compare(runs["memory"]["first"].summary["ensemble"], res.summary["ensemble"])
