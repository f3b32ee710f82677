"""Tests of npp_core.estarfm: brute-force parity, tiling, series, compositing, errors, accuracy."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from npp_core.estarfm import (
    EstarfmError,
    fuse,
    fuse_series,
    monthly_composite,
    series_thresholds,
    similarity_thresholds,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
ZHU = SHARED / "data" / "estarfm_zhu_testdata"


# --------------------------------------------------------------------------- #
# a slow, obviously-correct per-pixel implementation of specs/estarfm.md
# --------------------------------------------------------------------------- #
def reference_fuse(f1, c1, f2, c2, c0, window, classes, valid_range, counters=None):
    """Per-pixel ESTARFM written straight from the spec; arrays (bands, rows, cols) with NaN."""
    lo, hi = valid_range
    nb, rows, cols = f1.shape
    w = window // 2
    valid = np.ones((rows, cols), bool)
    for a in (f1, c1, f2, c2, c0):
        valid &= np.isfinite(a).all(axis=0)
    fine_ok = np.isfinite(f1).all(axis=0) & np.isfinite(f2).all(axis=0)
    th1 = [np.std(f1[b][fine_ok], ddof=1) * 2 / classes for b in range(nb)]
    th2 = [np.std(f2[b][fine_ok], ddof=1) * 2 / classes for b in range(nb)]
    out = np.full(f1.shape, np.nan)
    counters = {} if counters is None else counters
    for i in range(rows):
        for j in range(cols):
            if not valid[i, j]:
                continue
            cands = [
                (y, x)
                for y in range(max(0, i - w), min(rows, i + w + 1))
                for x in range(max(0, j - w), min(cols, j + w + 1))
                if valid[y, x]
            ]
            similar = [
                (y, x)
                for (y, x) in cands
                if all(abs(f1[b, y, x] - f1[b, i, j]) < th1[b] and abs(f2[b, y, x] - f2[b, i, j]) < th2[b]
                       for b in range(nb))
            ]
            m0 = [np.mean([c0[b, y, x] for y, x in cands]) for b in range(nb)]
            m1 = [np.mean([c1[b, y, x] for y, x in cands]) for b in range(nb)]
            m2 = [np.mean([c2[b, y, x] for y, x in cands]) for b in range(nb)]
            if len(similar) > 5:
                counters["regression_branch"] = counters.get("regression_branch", 0) + 1
                rs = []
                for y, x in similar:
                    if nb == 1:
                        with np.errstate(all="ignore"):
                            r = 1 - 0.5 * (abs((f1[0, y, x] - c1[0, y, x]) / (f1[0, y, x] + c1[0, y, x]))
                                           + abs((f2[0, y, x] - c2[0, y, x]) / (f2[0, y, x] + c2[0, y, x])))
                    else:
                        fv = np.concatenate([f1[:, y, x], f2[:, y, x]])
                        cv = np.concatenate([c1[:, y, x], c2[:, y, x]])
                        with np.errstate(all="ignore"):
                            r = np.corrcoef(fv, cv)[0, 1]
                    rs.append(0.5 if np.isnan(r) else r)
                d = [1 + np.hypot(y - i, x - j) / w for y, x in similar]
                wts = np.array([1 / ((1 - r) * dd + 1e-7) for r, dd in zip(rs, d)])
                wts /= wts.sum()
                for b in range(nb):
                    s1 = np.array([c1[b, y, x] for y, x in similar])
                    s2 = np.array([c2[b, y, x] for y, x in similar])
                    g1 = np.array([f1[b, y, x] for y, x in similar])
                    g2 = np.array([f2[b, y, x] for y, x in similar])
                    s0 = np.array([c0[b, y, x] for y, x in similar])
                    v = 1.0
                    if abs(s1.mean() - s2.mean()) >= 0.02 * hi:
                        lr = stats.linregress(np.concatenate([s1, s2]), np.concatenate([g1, g2]))
                        if lr.pvalue <= 0.05 and 0 < lr.slope <= 5:
                            v = lr.slope
                            counters["v_fitted"] = counters.get("v_fitted", 0) + 1
                    d1 = abs(m0[b] - m1[b]) + 1e-10
                    d2 = abs(m0[b] - m2[b]) + 1e-10
                    t1 = (1 / d1) / (1 / d1 + 1 / d2)
                    t2 = (1 / d2) / (1 / d1 + 1 / d2)
                    p1 = f1[b, i, j] + np.sum(wts * v * (s0 - s1))
                    p2 = f2[b, i, j] + np.sum(wts * v * (s0 - s2))
                    pred = t1 * p1 + t2 * p2
                    if pred <= lo or pred >= hi:
                        counters["range_fallback"] = counters.get("range_fallback", 0) + 1
                        pred = t1 * np.sum(wts * g1) + t2 * np.sum(wts * g2)
                    out[b, i, j] = pred
            else:
                counters["few_similar"] = counters.get("few_similar", 0) + 1
                for b in range(nb):
                    e1 = m0[b] - m1[b] + 1e-10
                    e2 = m0[b] - m2[b] + 1e-10
                    t1 = (1 / abs(e1)) / (1 / abs(e1) + 1 / abs(e2))
                    t2 = (1 / abs(e2)) / (1 / abs(e1) + 1 / abs(e2))
                    out[b, i, j] = t1 * (f1[b, i, j] + e1) + t2 * (f2[b, i, j] + e2)
    return out


def synthetic_scene(rows=40, cols=40, bands=1, seed=0):
    """NDVI-like fine/coarse images with classes, a seasonal change and a few NaN holes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    cls = ((xx // 10) + 2 * (yy // 13)) % 4
    base = np.array([0.15, 0.35, 0.55, 0.75])[cls]
    def img(level, noise):
        out = []
        for b in range(bands):
            out.append(base * (1 + 0.2 * b) + level + noise * rng.standard_normal((rows, cols)))
        return np.array(out)
    f1 = img(0.0, 0.04)
    f2 = img(0.15, 0.04)
    # coarse: smoothed fine plus bias, so the fine-coarse regression is meaningful
    def smooth(a):
        k = np.ones(5) / 5
        s = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), -1, a)
        return np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), -2, s)
    c1 = smooth(f1) + 0.02
    c2 = smooth(f2) + 0.03
    c0 = 0.5 * (c1 + c2) + 0.05 + 0.01 * rng.standard_normal((bands, rows, cols))
    # isolated outliers: centres with too few similar pixels
    f1[:, 5, 5] = 3.0
    f2[:, 5, 5] = -2.0
    f1[:, 3 * rows // 4, cols // 2] = -1.5
    # NaN holes in different images, incl. coarse0 (recomputed pixels)
    f1[:, 12:14, 3:6] = np.nan
    c2[:, 25, 25] = np.nan
    c0[:, 8:10, cols - 10:cols - 7] = np.nan
    f2[:, rows - 2, 0] = np.nan
    return f1, c1, f2, c2, c0


def test_fuse_matches_bruteforce_single_band():
    f1, c1, f2, c2, c0 = synthetic_scene()
    vr = (-1.0, 0.9)  # a tight upper bound so the out-of-range fallback fires
    counters: dict = {}
    ref = reference_fuse(f1, c1, f2, c2, c0, 11, 4, vr, counters)
    got = fuse(f1[0], c1[0], f2[0], c2[0], c0[0], window=11, classes=4, valid_range=vr)
    assert got.shape == (40, 40)
    # every branch of the algorithm was exercised
    for key in ("regression_branch", "v_fitted", "range_fallback", "few_similar"):
        assert counters.get(key, 0) > 0, key
    assert np.array_equal(np.isnan(got), np.isnan(ref[0]))
    assert np.isnan(got[12, 4]) and np.isnan(got[8, 31])  # holes stay holes
    np.testing.assert_allclose(got, ref[0], rtol=0, atol=1e-9, equal_nan=True)


def test_fuse_matches_bruteforce_three_bands():
    f1, c1, f2, c2, c0 = synthetic_scene(rows=28, cols=28, bands=3, seed=3)
    vr = (-1.0, 1.2)
    ref = reference_fuse(f1, c1, f2, c2, c0, 7, 4, vr)
    got = fuse(f1, c1, f2, c2, c0, window=7, classes=4, valid_range=vr)
    assert got.shape == (3, 28, 28)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9, equal_nan=True)


def test_nodata_value_is_missing_and_hand_computed_uniform_scene():
    # uniform scene: every window pixel similar, R = 1 - 0.5(|(.5-.4)/.9| + |(.7-.6)/1.3|),
    # the prediction is F1 + (C0 - C1) blended with temporal weights
    f1 = np.full((15, 15), 0.5)
    c1 = np.full((15, 15), 0.4)
    f2 = np.full((15, 15), 0.7)
    c2 = np.full((15, 15), 0.6)
    c0 = np.full((15, 15), 0.45)
    c0[7, 7] = -9999.0
    got = fuse(f1, c1, f2, c2, c0, window=5, nodata=-9999.0)
    assert np.isnan(got[7, 7]) and np.isfinite(got).sum() == 15 * 15 - 1
    # std = 0 -> threshold 0 -> no pixel similar (|0| < 0 is false): the few-similar branch
    t1 = (1 / (0.05 + 1e-10)) / (1 / (0.05 + 1e-10) + 1 / (0.15 + 1e-10))
    expect = t1 * (0.5 + 0.05) + (1 - t1) * (0.7 - 0.15)
    np.testing.assert_allclose(got[0, 0], expect, atol=1e-12)
    np.testing.assert_allclose(got[3, 12], expect, atol=1e-12)


def test_tiling_does_not_matter():
    f1, c1, f2, c2, c0 = (a[0] for a in synthetic_scene(60, 60, seed=7))
    whole = fuse(f1, c1, f2, c2, c0, window=11)
    th = similarity_thresholds(f1, f2)
    h = 5  # halo = window // 2
    for r0, r1, q0, q1 in [(0, 30, 0, 60), (30, 60, 0, 60), (10, 50, 17, 44)]:
        a0, a1, b0, b1 = max(0, r0 - h), min(60, r1 + h), max(0, q0 - h), min(60, q1 + h)
        crop = [a[a0:a1, b0:b1] for a in (f1, c1, f2, c2, c0)]
        tile = fuse(*crop, window=11, thresholds=th)
        np.testing.assert_array_equal(tile[r0 - a0:r1 - a0, q0 - b0:q1 - b0], whole[r0:r1, q0:q1])


def _series(rows=30, cols=30, seed=1):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    base = np.array([0.2, 0.4, 0.6, 0.8])[((xx // 8) + (yy // 9)) % 4]
    cdates = [dt.date(2012, 1, 1) + dt.timedelta(days=16 * k) for k in range(10)]
    season = [0.3 * np.sin(2 * np.pi * (d.timetuple().tm_yday - 80) / 365) for d in cdates]
    coarse = np.array([base * 0.8 + s + 0.05 + 0.02 * rng.standard_normal((rows, cols)) for s in season])
    coarse[6, 3:6, 10:14] = np.nan  # a cloud in one coarse date
    fidx = [1, 4, 8]
    fdates = [cdates[k] + dt.timedelta(days=3) for k in fidx]  # 3 days off: nearest partner within 8 days
    fine = np.array([base + season[k] + 0.03 * rng.standard_normal((rows, cols)) for k in fidx])
    fine[1, 20:22, 5:7] = np.nan
    return fine, fdates, coarse, cdates, fidx


def test_fuse_series_equals_fuse_date_by_date():
    fine, fdates, coarse, cdates, fidx = _series()
    calls = []
    fused, info = fuse_series(fine, fdates, coarse, cdates, window=9, progress=lambda f, m: calls.append(f))
    assert fused.shape == coarse.shape and fused.dtype == np.float64
    assert calls and calls[-1] == pytest.approx(1.0)
    pos = {d: i for i, d in enumerate(fdates)}
    for k, (d, rec) in enumerate(zip(cdates, info)):
        d1, d2 = rec["pair"]
        i1, i2 = pos[d1], pos[d2]
        c1, c2 = coarse[fidx[i1]], coarse[fidx[i2]]
        expect = fuse(fine[i1], c1, fine[i2], c2, coarse[k], window=9)
        np.testing.assert_allclose(fused[k], expect, rtol=0, atol=1e-9, equal_nan=True)
        assert rec["date"] == d
        assert rec["nodata_pixels"] == int(np.isnan(fused[k]).sum())
    # pair choice: dates 0 and 1 precede the first fine date (Jan 20) -> extrapolated from the first two
    assert info[0]["pair"] == [fdates[0], fdates[1]] and info[0]["extrapolated"]
    assert info[3]["pair"] == [fdates[0], fdates[1]] and not info[3]["extrapolated"]
    assert info[6]["pair"] == [fdates[1], fdates[2]] and not info[6]["extrapolated"]
    assert info[9]["pair"] == [fdates[1], fdates[2]] and info[9]["extrapolated"]
    assert info[6]["nodata_pixels"] == 12 + 4  # the cloud and the hole in the shared fine image
    assert info[3]["nodata_pixels"] == 4


def test_fuse_series_tiles_with_series_thresholds_equal_whole_image():
    fine, fdates, coarse, cdates, _ = _series(30, 30, seed=4)
    window, h = 9, 4  # halo = window // 2
    whole, info = fuse_series(fine, fdates, coarse, cdates, window=window)
    th = series_thresholds(fine, fdates, cdates)
    # one entry per pair used, each exactly the pair's similarity thresholds
    used = {tuple(rec["pair"]) for rec in info}
    assert set(th) == used and len(used) == 2
    pos = {d: i for i, d in enumerate(fdates)}
    for (d1, d2), v in th.items():
        assert d1 < d2
        np.testing.assert_array_equal(v, similarity_thresholds(fine[pos[d1]], fine[pos[d2]]))
    # four tiles split at an odd column and row, each fused with a halo of window // 2
    tiled = np.full_like(whole, -99.0)
    untied = np.full_like(whole, -99.0)
    for r0, r1, q0, q1 in [(0, 13, 0, 17), (0, 13, 17, 30), (13, 30, 0, 17), (13, 30, 17, 30)]:
        a0, a1, b0, b1 = max(0, r0 - h), min(30, r1 + h), max(0, q0 - h), min(30, q1 + h)
        crop = (fine[:, a0:a1, b0:b1], fdates, coarse[:, a0:a1, b0:b1], cdates)
        tile, tinfo = fuse_series(*crop, window=window, thresholds=th)
        assert [rec["pair"] for rec in tinfo] == [rec["pair"] for rec in info]
        tiled[:, r0:r1, q0:q1] = tile[:, r0 - a0:r1 - a0, q0 - b0:q1 - b0]
        own, _ = fuse_series(*crop, window=window)  # the tile's own thresholds
        untied[:, r0:r1, q0:q1] = own[:, r0 - a0:r1 - a0, q0 - b0:q1 - b0]
    assert np.isnan(whole).any()  # the cloud and the hole are in the comparison
    np.testing.assert_array_equal(tiled, whole)
    # without the whole image's thresholds the tiles do not reproduce it
    assert not np.array_equal(untied, whole, equal_nan=True)
    # a pair missing from the mapping, and thresholds of the wrong size, are errors
    first = min(th)
    with pytest.raises(EstarfmError, match=first[0].isoformat()):
        fuse_series(fine, fdates, coarse, cdates, window=window, thresholds={k: v for k, v in th.items() if k != first})
    with pytest.raises(EstarfmError, match="expected 2 finite values"):
        fuse_series(fine, fdates, coarse, cdates, window=window, thresholds={k: np.ones(3) for k in th})


def test_fuse_series_errors():
    fine, fdates, coarse, cdates, _ = _series(12, 12)
    with pytest.raises(EstarfmError, match="outside the fine images"):
        fuse_series(fine, fdates, coarse, cdates, window=5, extrapolate=False)
    late = list(fdates)
    late[2] = late[2] + dt.timedelta(days=40)
    with pytest.raises(EstarfmError, match=late[2].isoformat()):
        fuse_series(fine, late, coarse, cdates, window=5)
    with pytest.raises(EstarfmError, match="at least two fine"):
        fuse_series(fine[:1], fdates[:1], coarse, cdates, window=5)
    with pytest.raises(EstarfmError, match="differ in shape"):
        fuse_series(fine, fdates, coarse[:, :10], cdates, window=5)
    with pytest.raises(EstarfmError, match="duplicate"):
        fuse_series(fine, [fdates[0]] * 3, coarse, cdates, window=5)
    with pytest.raises(EstarfmError, match=r"scale 0\.0001"):
        fuse_series(fine * 10000, fdates, coarse * 10000, cdates, window=5)


def test_fuse_errors():
    a = np.full((10, 10), 0.5)
    with pytest.raises(EstarfmError, match="shapes differ"):
        fuse(a, a, a, a, np.ones((10, 11)))
    with pytest.raises(EstarfmError, match="odd"):
        fuse(a, a, a, a, a, window=10)
    scaled = np.linspace(1000, 8000, 100).reshape(10, 10)
    with pytest.raises(EstarfmError, match=r"0\.0001.*valid_range=\(-10000, 10000\)") as e:
        fuse(scaled, scaled, scaled, scaled, scaled)
    assert isinstance(e.value, ValueError)


def test_monthly_composite():
    dates = [dt.date(2012, 1, 1), dt.date(2012, 1, 17), dt.date(2012, 3, 5), dt.date(2012, 3, 21)]
    st = np.array([[[0.1, np.nan]], [[0.3, np.nan]], [[np.nan, 0.2]], [[0.5, 0.1]]])
    out, months = monthly_composite(st, dates)
    assert months == ["2012-01", "2012-02", "2012-03"]
    np.testing.assert_array_equal(out[0], [[0.3, np.nan]])
    assert np.isnan(out[1]).all()  # no image in February
    np.testing.assert_array_equal(out[2], [[0.5, 0.2]])
    mean, _ = monthly_composite(st, dates, how="mean")
    np.testing.assert_allclose(mean[0], [[0.2, np.nan]])
    with pytest.raises(EstarfmError, match="how"):
        monthly_composite(st, dates, how="median")


# --------------------------------------------------------------------------- #
# accuracy on the authors' test data
# --------------------------------------------------------------------------- #
def _read_zhu():
    if not ZHU.is_dir():
        pytest.skip(f"ESTARFM test data not found at {ZHU} (needs ../shared beside the repo)")
    import warnings

    import rasterio

    out = {}
    for n in ("tm0524", "tm0711", "tm0812", "modis0524", "modis0711", "modis0812"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the ENVI files carry no georeferencing
            with rasterio.open(ZHU / n) as src:
                out[n] = src.read().astype(np.float64)
    return out


def _rmse(a, b):
    return np.sqrt(np.mean((a - b) ** 2, axis=(-2, -1)))


def test_accuracy_ndvi_zhu_testdata():
    d = _read_zhu()
    # NDVI from red (band 2) and NIR (band 3); a few negative reflectances give |NDVI| > 1: clip
    ndvi = {k: np.clip((v[2] - v[1]) / (v[2] + v[1]), -1, 1) for k, v in d.items()}
    pred = fuse(ndvi["tm0524"], ndvi["modis0524"], ndvi["tm0812"], ndvi["modis0812"], ndvi["modis0711"],
                window=51, valid_range=(-1, 1))
    truth = ndvi["tm0711"]
    rmse = _rmse(pred, truth)
    r = np.corrcoef(pred.ravel(), truth.ravel())[0, 1]
    assert abs(_rmse(ndvi["modis0711"], truth) - 0.0788) < 0.001  # the same NDVI as the reference
    assert abs(rmse - 0.0461) <= 0.02 * 0.0461, rmse
    assert abs(r - 0.891) <= 0.01, r


def test_accuracy_reflectance_zhu_testdata():
    d = _read_zhu()
    pred = fuse(d["tm0524"], d["modis0524"], d["tm0812"], d["modis0812"], d["modis0711"],
                window=51, valid_range=(0, 10000))
    rmse = _rmse(pred, d["tm0711"])
    np.testing.assert_allclose(_rmse(d["modis0711"], d["tm0711"]), [74.2, 91.5, 399.3], atol=0.1)
    np.testing.assert_allclose(rmse, [53.5, 48.1, 125.0], rtol=0.02)
