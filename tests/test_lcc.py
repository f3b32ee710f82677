"""Local correlation: brute-force per-window Pearson reference, classes, shares."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from npp_core.lcc import (
    LCCError,
    area_shares,
    classify,
    global_stats,
    local_correlation,
)


def _brute_force(x, y, window, min_valid, mask=None):
    """Pearson of each truncated window with scipy.stats.pearsonr (the reference)."""
    rows, cols = x.shape
    h = window // 2
    r = np.full(x.shape, np.nan)
    p = np.full(x.shape, np.nan)
    n = np.zeros(x.shape, dtype=np.int64)
    ok = np.isfinite(x) & np.isfinite(y)
    if mask is not None:
        ok &= mask
    for i in range(rows):
        for j in range(cols):
            sl = (slice(max(0, i - h), i + h + 1), slice(max(0, j - h), j + h + 1))
            v = ok[sl]
            xs = x[sl][v]
            ys = y[sl][v]
            n[i, j] = v.sum()
            if not ok[i, j] or v.sum() < min_valid:
                continue
            if np.all(xs == xs[0]) or np.all(ys == ys[0]):
                continue  # constant window: undefined
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = stats.pearsonr(xs, ys)
            r[i, j] = res.statistic
            p[i, j] = res.pvalue
    return r, p, n


def _raster(seed=1, rows=23, cols=31):
    rng = np.random.default_rng(seed)
    x = rng.normal(10.0, 2.0, size=(rows, cols))
    y = 0.4 * x + rng.normal(size=(rows, cols))
    x[3:7, 4:9] = np.nan  # hole in x
    y[10:12, 20:25] = np.nan  # hole in y
    x[14:21, 2:9] = 2.5  # constant patch in x (larger than a 5x5 window)
    y[0:6, 24:31] = -1.0  # constant patch in y touching two edges
    x[18, 18] = np.nan  # single missing pixel
    # a large offset that would ruin uncentred float sums
    x += 1e6
    return x, y


@pytest.mark.parametrize("window,min_valid", [(3, 3), (5, 3), (7, 10), (31, 3)])
def test_matches_brute_force_pearsonr(window, min_valid):
    x, y = _raster()
    r, p, n = local_correlation(x, y, window, min_valid)
    rr, pp, nn = _brute_force(x, y, window, min_valid)
    np.testing.assert_array_equal(n, nn)
    np.testing.assert_array_equal(np.isnan(r), np.isnan(rr))
    np.testing.assert_array_equal(np.isnan(p), np.isnan(rr))
    d = ~np.isnan(rr)
    assert d.sum() > 400  # most pixels defined
    np.testing.assert_allclose(r[d], rr[d], rtol=0, atol=1e-9)
    np.testing.assert_allclose(p[d], pp[d], rtol=0, atol=1e-9)


def test_constant_windows_are_nan_not_one_or_zero():
    x, y = _raster()
    r, p, _ = local_correlation(x, y, 5)
    # windows fully inside the 7x7 constant x patch (rows 14..20, cols 2..8): centres 16..18, 4..6
    assert np.isnan(r[16:19, 4:7]).all()
    assert np.isnan(p[16:19, 4:7]).all()
    # y constant in rows 0..5, cols 24..30 -> windows centred rows 0..3, cols 26..30 are constant
    assert np.isnan(r[0:4, 26:31]).all()
    # the pixel next to the patch whose window straddles it is defined
    assert np.isfinite(r[16, 9])


def test_missing_centre_pixel_is_nan_even_with_enough_pairs():
    x, y = _raster()
    r, _, n = local_correlation(x, y, 5)
    assert np.isnan(r[18, 18]) and n[18, 18] == 24


def test_perfect_correlations_and_hand_example():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 9))
    r, p, _ = local_correlation(x, 2 * x + 1, 3)
    np.testing.assert_allclose(r, 1.0, atol=1e-12)
    np.testing.assert_allclose(p, 0.0, atol=1e-12)
    r, _, _ = local_correlation(x, -x, 3)
    np.testing.assert_allclose(r, -1.0, atol=1e-12)
    # 3x3 corner pixel: truncated window of 4 pairs, computed by hand
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[2.0, 1.0], [4.0, 3.0]])
    xa = np.pad(a, ((0, 3), (0, 3)), constant_values=np.nan)
    yb = np.pad(b, ((0, 3), (0, 3)), constant_values=np.nan)
    r, p, n = local_correlation(xa, yb, 3)
    # x = 1,2,3,4 ; y = 2,1,4,3 -> Sxy = 4, Sxx = Syy = 5 -> r = 0.6
    assert n[0, 0] == 4
    assert r[0, 0] == pytest.approx(0.6, abs=1e-12)
    t = 0.6 * np.sqrt(2 / (1 - 0.36))
    assert p[0, 0] == pytest.approx(2 * stats.t.sf(t, 2), abs=1e-12)


def test_chunked_equals_in_memory_with_shared_stats():
    x, y = _raster(seed=5, rows=40, cols=30)
    window = 5
    h = window // 2
    full = local_correlation(x, y, window)
    st = global_stats(x, y)
    top = local_correlation(x[: 20 + h], y[: 20 + h], window, stats=st)
    bottom = local_correlation(x[20 - h :], y[20 - h :], window, stats=st)
    for k in range(3):
        joined = np.concatenate([top[k][:20], bottom[k][h:]])
        np.testing.assert_allclose(joined, full[k], rtol=0, atol=1e-12, equal_nan=True)


def test_mask_excludes_pixels_from_windows():
    x, y = _raster(seed=7)
    mask = np.ones(x.shape, dtype=bool)
    mask[:, 15:] = False
    r, p, n = local_correlation(x, y, 5, mask=mask)
    rr, pp, nn = _brute_force(x, y, 5, 3, mask=mask)
    np.testing.assert_array_equal(n, nn)
    np.testing.assert_allclose(r, rr, atol=1e-9, equal_nan=True)
    assert np.isnan(r[:, 15:]).all()


def test_bad_inputs_raise():
    x = np.zeros((5, 5))
    with pytest.raises(LCCError, match="odd"):
        local_correlation(x, x, 4)
    with pytest.raises(LCCError, match="shapes differ"):
        local_correlation(x, np.zeros((5, 6)), 3)
    with pytest.raises(LCCError, match="min_valid"):
        local_correlation(x, x, 3, min_valid=2)


def test_all_constant_raster_is_undefined_everywhere():
    x = np.full((6, 6), 3.0)
    y = np.arange(36.0).reshape(6, 6)
    r, p, n = local_correlation(x, y, 3)
    assert np.isnan(r).all() and np.isnan(p).all()
    assert area_shares(r, p)["undefined"] == 100.0


def test_classify_and_area_shares_by_hand():
    r = np.array([[0.5, 0.5, 0.1, -0.5, -0.5], [np.nan, 0.2, -0.3, 0.0, 0.9]])
    p = np.array([[0.001, 0.03, 0.5, 0.04, 0.005], [np.nan, 0.05, 0.0499, 1.0, 0.01]])
    mask = np.ones(r.shape, dtype=bool)
    mask[1, 4] = False
    codes = classify(r, p, mask)
    np.testing.assert_array_equal(codes, [[1, 2, 3, 4, 5], [6, 3, 4, 3, 0]])
    sh = area_shares(r, p, mask)
    # analysed 9 pixels, 8 defined: pos_p01 1, pos_p05 1, insig 3, neg_p05 2, neg_p01 1
    assert sh["pos_p01"] == pytest.approx(12.5)
    assert sh["pos_p05"] == pytest.approx(12.5)
    assert sh["insignificant"] == pytest.approx(37.5)
    assert sh["neg_p05"] == pytest.approx(25.0)
    assert sh["neg_p01"] == pytest.approx(12.5)
    assert sh["undefined"] == pytest.approx(100 / 9)
    assert sum(sh[k] for k in ("pos_p01", "pos_p05", "insignificant", "neg_p05", "neg_p01")) == pytest.approx(100)
