"""Sampling, Pearson, RF importance, OOB rows, factorial RelCon, dominance, fast forest."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.ensemble import RandomForestRegressor

from npp_core import attribution as A
from npp_core.forest import flatten_forest, predict_forest, predict_trees

CATS3 = ("C", "S", "M")


# --------------------------------------------------------------------------- sampling
def test_sample_points_only_valid_unique_and_seeded():
    rng = np.random.default_rng(0)
    valid = rng.random((50, 40)) > 0.3
    r, c = A.sample_points(valid, n=500, seed=42)
    assert r.size == 500
    assert valid[r, c].all()
    assert len(set(zip(r.tolist(), c.tolist()))) == 500
    r2, c2 = A.sample_points(valid, n=500, seed=42)
    np.testing.assert_array_equal(r, r2)
    np.testing.assert_array_equal(c, c2)
    r3, _ = A.sample_points(valid, n=500, seed=43)
    assert not np.array_equal(r, r3)


def test_sample_points_fewer_valid_takes_all_with_warning_and_errors_below_20():
    valid = np.zeros((10, 10), dtype=bool)
    valid[2:7, 2:7] = True  # 25 valid
    with pytest.warns(A.SamplingWarning):
        r, c, info = A.sample_points(valid, n=100, return_info=True)
    assert r.size == 25 and info["drawn"] == 25 and "25" in info["warning"]
    valid[:] = False
    valid[0:2, :] = True
    valid[1, 9] = False  # 19 valid
    with pytest.raises(A.AttributionError, match="19 pixels"):
        A.sample_points(valid, n=10)


# --------------------------------------------------------------------------- Pearson
def test_pearson_matches_corrcoef_and_constant_column_is_nan():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    X[:, 2] = 5.0
    y = X[:, 0] * 2 + rng.normal(size=200)
    res = A.pearson(X, y, ["a", "b", "k"])
    assert res["a"]["r"] == pytest.approx(np.corrcoef(X[:, 0], y)[0, 1], abs=1e-12)
    assert res["a"]["p"] < 1e-10
    assert res["b"]["p"] > 1e-3
    assert np.isnan(res["k"]["r"]) and "constant" in res["k"]["note"]


# --------------------------------------------------------------------------- forests
def _synthetic(n=400, p=7, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    y = 3 * X[:, 0] + 2 * np.sin(2 * X[:, 3]) + rng.normal(size=n) * 0.3
    return X, y, [f"d{j}" for j in range(p)]


def test_oob_rows_reproduce_oob_prediction():
    X, y, _ = _synthetic(n=300)
    m = A.fit_forest(X, y, n_trees=60, seed=4)
    oob = A.oob_rows(m, X.shape[0])
    acc = np.zeros(X.shape[0])
    cnt = np.zeros(X.shape[0])
    for est, rows in zip(m.estimators_, oob):
        # OOB rows must really be out of bag: the tree's leaves are fitted without them
        acc[rows] += est.predict(X[rows])
        cnt[rows] += 1
    assert cnt.min() > 0
    np.testing.assert_allclose(acc / cnt, m.oob_prediction_, rtol=0, atol=1e-12)
    assert 250 < np.mean([len(r) for r in oob]) / 300 * 1000 < 450  # ~36.8% OOB


def test_rf_defaults_match_r():
    X, y, _ = _synthetic(p=7)
    m = A.fit_forest(X, y, n_trees=5)
    assert m.max_features == 2 and m.min_samples_split == 6 and m.bootstrap
    m1 = A.fit_forest(X[:, :2], y, n_trees=5)
    assert m1.max_features == 1


@pytest.mark.parametrize("measure", ["r_incmse", "raw"])
def test_importance_ranks_planted_drivers_first(measure):
    X, y, names = _synthetic()
    cats = {"C": ["d0", "d1", "d2"], "S": ["d3", "d4", "d5"], "M": ["d6"], "X": ["absent"]}
    res = A.importance(X, y, names, measure, n_trees=80, seed=0, categories=cats)
    pct = res["drivers"]
    assert sum(pct.values()) == pytest.approx(100.0)
    top2 = sorted(pct, key=pct.get, reverse=True)[:2]
    assert set(top2) == {"d0", "d3"}
    for noise in ("d1", "d2", "d4", "d5", "d6"):
        assert pct[noise] < 5.0
    assert res["categories"]["C"] == pytest.approx(sum(pct[d] for d in ("d0", "d1", "d2")))
    assert sum(res["categories"].values()) == pytest.approx(100.0)
    assert res["empty_categories"] == ["X"]
    assert res["oob_r2"] > 0.7


def test_r_incmse_is_mean_over_standard_error_by_hand():
    """Recompute R's scaled importance for one driver with plain sklearn calls."""
    X, y, names = _synthetic(n=200, p=4)
    m = A.fit_forest(X, y, n_trees=30, seed=2)
    res = A.importance(X, y, names, "r_incmse", seed=2, model=m)
    # unused variable => exactly 0 per tree; a tree that uses d0 must change OOB MSE
    d = A._permutation_deltas(m, X, y, [np.array([j]) for j in range(4)], 2)
    for t, est in enumerate(m.estimators_):
        used = set(est.tree_.feature[est.tree_.children_left != -1].tolist())
        for j in range(4):
            if j not in used:
                assert d[t, j] == 0.0
    mean = d[:, 0].mean()
    se = d[:, 0].std(ddof=0) / np.sqrt(30)
    assert res["values"]["d0"] == pytest.approx(mean / se, rel=1e-12)
    assert res["mean_increase"]["d0"] == pytest.approx(mean, rel=1e-12)


def test_permutation_deltas_equal_naive_sklearn_predict_on_permuted_copies():
    """The compiled path must give the deltas of per-tree sklearn predict on explicit copies, bit for bit."""
    X, y, _ = _synthetic(n=250, p=6)
    m = A.fit_forest(X, y, n_trees=25, seed=3)
    for groups in ([np.array([j]) for j in range(6)], [np.array([0, 1, 2]), np.array([3, 4]), np.array([5])]):
        rng = np.random.default_rng(7)
        ref = np.zeros((25, len(groups)))
        for t, (est, rows) in enumerate(zip(m.estimators_, A.oob_rows(m, 250))):
            used = set(est.tree_.feature[est.tree_.children_left != -1].tolist())
            base = np.mean((est.predict(X[rows]) - y[rows]) ** 2)
            perms = [rng.permutation(rows.size) for _ in groups]
            for g, cols in enumerate(groups):
                if used.intersection(cols.tolist()):
                    Xp = X[rows].copy()
                    Xp[:, cols] = X[rows][perms[g]][:, cols]
                    ref[t, g] = np.mean((est.predict(Xp) - y[rows]) ** 2) - base
        np.testing.assert_array_equal(A._permutation_deltas(m, X, y, groups, 7), ref)
        assert (ref != 0).sum() > 20


def test_grouped_importance_gives_category_shares():
    X, y, names = _synthetic()
    cats = {"C": ["d0", "d1", "d2"], "S": ["d3", "d4", "d5"], "M": ["d6"]}
    res = A.importance(X, y, names, "grouped", n_trees=60, seed=0, categories=cats)
    c = res["categories"]
    assert sum(c.values()) == pytest.approx(100.0)
    assert c["C"] > c["S"] > c["M"]
    assert c["M"] < 3.0


def test_categories_errors():
    X, y, names = _synthetic(p=4)
    names = names[:3]
    X = X[:, :3]
    with pytest.raises(A.AttributionError, match="no category"):
        A.importance(X, y, names, n_trees=5, categories={"C": ["d0"], "S": ["d1"]})
    with pytest.raises(A.AttributionError, match="both"):
        A.importance(X, y, names, n_trees=5, categories={"C": ["d0", "d1"], "S": ["d1", "d2"]})
    with pytest.raises(A.AttributionError, match="measure"):
        A.importance(X, y, names, "gini", n_trees=5)


def test_block_cv_r2_high_for_signal_low_for_noise():
    rng = np.random.default_rng(5)
    n = 300
    rows = rng.integers(0, 100, n)
    cols = rng.integers(0, 100, n)
    X = rng.normal(size=(n, 3))
    y = 2 * X[:, 0] + 0.1 * rng.normal(size=n)
    assert A.block_cv_r2(X, y, rows, cols, 4, n_trees=30) > 0.8
    assert A.block_cv_r2(X, rng.normal(size=n), rows, cols, 4, n_trees=30) < 0.1


# --------------------------------------------------------------------------- fast forest
def test_predict_forest_equals_sklearn_including_threshold_edges():
    X, y, _ = _synthetic(n=300, p=5)
    m = RandomForestRegressor(40, max_features=2, min_samples_split=6, random_state=0).fit(X, y)
    rng = np.random.default_rng(9)
    Xt = rng.normal(size=(3000, 5))
    # rows sitting exactly on, and one float64 ulp / a hair either side of, split thresholds:
    # the float32 cast decides their branch in sklearn
    est = m.estimators_[0].tree_
    split = est.children_left != -1
    thr = est.threshold[split]
    feat = est.feature[split]
    edge = np.repeat(rng.normal(size=(1, 5)), thr.size * 4, axis=0)
    for k, off in enumerate((0.0, 1e-9, -1e-9, np.inf)):
        rowsk = np.arange(thr.size) + k * thr.size
        vals = np.nextafter(thr, np.inf) if off == np.inf else thr + off * np.maximum(np.abs(thr), 1)
        edge[rowsk, feat] = vals
    Xt = np.concatenate([Xt, edge, X])
    ref = m.predict(Xt)
    ours = predict_forest(m, Xt)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
    # float64 comparisons (without the float32 cast) would disagree on some edge rows
    flat = flatten_forest(m)
    np.testing.assert_allclose(predict_forest(flat, Xt), ref, rtol=0, atol=1e-9)
    per_tree = predict_trees(flat, Xt[:50])
    np.testing.assert_allclose(per_tree.mean(axis=0), ref[:50], atol=1e-9)
    np.testing.assert_allclose(per_tree[3], m.estimators_[3].predict(Xt[:50]), atol=1e-12)


def test_predict_forest_nan_rows_and_stump_trees():
    X = np.random.default_rng(0).normal(size=(50, 2))
    m = RandomForestRegressor(5, random_state=0).fit(X, np.full(50, 7.0))  # single-leaf trees
    out = predict_forest(m, np.array([[0.0, 1.0], [np.nan, 0.0]]))
    assert out[0] == 7.0 and np.isnan(out[1])


# --------------------------------------------------------------------------- dominance
def test_dominant_threshold_is_strict_and_ties_follow_category_order():
    rc = np.array(
        [
            # C     S     M
            [60.0, 30.0, 10.0],  # exactly 60 -> not dominant -> CS
            [60.5, 30.0, 9.5],  # C
            [40.0, 40.0, 20.0],  # tie C=S -> CS
            [20.0, 40.0, 40.0],  # tie S=M -> SM
            [40.0, 20.0, 40.0],  # tie C=M -> CM
            [10.0, 30.0, 60.0],  # M at exactly 60 -> MS
            [5.0, 25.0, 70.0],  # M
            [30.0, 45.0, 25.0],  # SC
            [33.3, 33.3, 33.4],  # MC
            [np.nan, np.nan, np.nan],  # nodata
            [1 / 3 * 100, 1 / 3 * 100, 1 / 3 * 100],  # all tied -> CS
        ]
    ).T
    codes, labels = A.dominant_classes(rc, CATS3, 60.0)
    got = [labels[c] for c in codes]
    assert got == ["CS", "C", "CS", "SM", "CM", "MS", "M", "SC", "MC", "nodata", "CS"]
    assert labels == {
        0: "nodata", 1: "C", 2: "S", 3: "M", 4: "CS", 5: "SC", 6: "CM", 7: "MC", 8: "SM", 9: "MS",
        10: "undetermined",
    }
    # reclassification from stored RelCon only: a lower threshold makes row 0 "C"
    codes50, _ = A.dominant_classes(rc, CATS3, 50.0)
    assert labels[codes50[0]] == "C" and labels[codes50[7]] == "SC"
    und = np.zeros(rc.shape[1], dtype=bool)
    und[[1, 9]] = True
    codes_u, _ = A.dominant_classes(rc, CATS3, 60.0, undetermined_mask=und)
    assert labels[codes_u[1]] == "undetermined" and labels[codes_u[9]] == "undetermined"
    assert labels[codes_u[0]] == "CS"


def test_dominant_codes_for_other_category_sets():
    _, lab2 = A.dominant_classes(np.array([[70.0], [30.0]]), ["A", "B"])
    assert lab2 == {0: "nodata", 1: "A", 2: "B", 3: "AB", 4: "BA", 5: "undetermined"}
    codes4, lab4 = A.dominant_classes(np.array([[10.0], [20.0], [30.0], [40.0]]), ["C", "S", "M", "H"])
    assert len(lab4) == 1 + 4 + 12 + 1 and lab4[codes4[0]] == "HM"
    codes1, lab1 = A.dominant_classes(np.array([[100.0, np.nan]]), ["Climate"])
    assert [lab1[c] for c in codes1] == ["Climate", "nodata"]
    _, labl = A.dominant_classes(np.array([[50.0], [50.0]]), ["Climate", "Soil"])
    assert labl[3] == "Climate+Soil"


def test_rgb_shares_and_means():
    rc = np.array([[[100.0, 20.0], [np.nan, 50.0]], [[0.0, 30.0], [np.nan, 50.0]], [[0.0, 50.0], [np.nan, 0.0]]])
    rgb = A.rgb_composite(rc, order=("S", "M", "C"), category_names=CATS3)
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 2, 2)
    np.testing.assert_array_equal(rgb[:, 0, 0], [0, 0, 255])  # R=S, G=M, B=C
    np.testing.assert_array_equal(rgb[:, 0, 1], [77, 128, 51])  # 30*2.55=76.5 and 127.5 round half up
    np.testing.assert_array_equal(rgb[:, 1, 0], [0, 0, 0])
    codes, labels = A.dominant_classes(rc, CATS3)
    sh = A.class_shares(codes, labels)
    assert sh["C"] == pytest.approx(100 / 3) and sh["MS"] == pytest.approx(100 / 3)
    assert sh["CS"] == pytest.approx(100 / 3) and sum(sh.values()) == pytest.approx(100.0)
    mean = A.relcon_mean(rc, CATS3)
    assert mean["C"] == pytest.approx((100 + 20 + 50) / 3)
    assert sum(mean.values()) == pytest.approx(100.0)


# --------------------------------------------------------------------------- factorial
def _zones(rows=45, cols=90, seed=0):
    """Three vertical zones; in each, only one category's driver varies and drives y."""
    rng = np.random.default_rng(seed)
    zone = np.repeat(np.arange(3), cols // 3)[None, :].repeat(rows, axis=0)

    def field(s):
        f = gaussian_filter(rng.normal(size=(rows, cols)), s)
        return (f - f.mean()) / f.std()

    c1 = np.where(zone == 0, field(3), 0.0)
    s1 = np.where(zone == 1, field(3), 0.0)
    m1 = np.where(zone == 2, field(3), 0.0)
    noise = [rng.normal(size=(rows, cols)) for _ in range(3)]
    layers = {"MAT": c1, "MAP": noise[0], "SOC": s1, "TN": noise[1], "LD": m1, "AK": noise[2]}
    y = 100 + 30 * (c1 + s1 + m1) + rng.normal(size=(rows, cols))
    names = list(layers)
    stack = np.stack([layers[n] for n in names], axis=-1)
    cats = {"C": ["MAT", "MAP", "MAS"], "S": ["SOC", "TN", "AK"], "M": ["LD"], "E": ["XX"]}
    return stack, y, names, cats, zone


def test_factorial_recovers_planted_zones():
    stack, y, names, cats, zone = _zones()
    rows, cols = A.sample_points(np.ones(y.shape, dtype=bool), n=1000, seed=1)
    Xs = stack[rows, cols]
    ys = y[rows, cols]
    Xall = stack.reshape(-1, len(names))
    res = A.factorial(Xs, ys, Xall, names, cats, n_trees=60, seed=0)
    assert res["categories"] == ["C", "S", "M"] and res["empty_categories"] == ["E"]
    np.testing.assert_allclose(np.nansum(res["relcon"], axis=0)[~np.isnan(res["relcon"][0])], 100.0)
    np.testing.assert_allclose(res["actcon"].shape, (3, Xall.shape[0]))
    assert res["noise_floor"] > 0
    rc = res["relcon"].reshape(3, *y.shape)
    codes, labels = A.dominant_classes(rc, res["categories"], 60.0, res["undetermined"].reshape(y.shape))
    lab = np.vectorize(labels.get)(codes)
    for z, letter in enumerate("CSM"):
        share = np.mean([s.startswith(letter) for s in lab[zone == z]])
        assert share >= 0.7, (letter, share)
    # reclassifying with another threshold reuses stored relcon only
    codes80, _ = A.dominant_classes(rc, res["categories"], 80.0, res["undetermined"].reshape(y.shape))
    assert (codes80 != codes).any()
    sh = A.class_shares(codes, labels)
    assert sum(sh.values()) == pytest.approx(100.0)
    assert res["models"]["all"]["oob_r2"] > 0.8
    assert res["models"]["without_M"]["drivers"] == ["MAT", "MAP", "SOC", "TN", "AK"]


def test_factorial_nan_pixels_stay_nan():
    stack, y, names, cats, _ = _zones(rows=15, cols=30)
    Xall = stack.reshape(-1, len(names)).copy()
    Xall[5, 2] = np.nan
    Xs = np.delete(Xall, 5, axis=0)[:400]
    ys = np.delete(y.ravel(), 5)[:400]
    res = A.factorial(Xs, ys, Xall, names, cats, n_trees=10, seed=1, keep_model=True)
    # the kept RF_all is the forest importance() would fit with the same seed
    direct = A.importance(Xs, ys, names, n_trees=10, seed=1, categories=cats)
    reused = A.importance(Xs, ys, names, n_trees=10, seed=1, categories=cats, model=res["model_all"])
    assert reused["values"] == direct["values"]
    assert np.isnan(res["relcon"][:, 5]).all() and not res["undetermined"][5]
    codes, _ = A.dominant_classes(res["relcon"], res["categories"], undetermined_mask=res["undetermined"])
    assert codes[5] == 0 and (np.delete(codes, 5) != 0).all()


def test_valid_in_all_and_importance_with_wrong_model_rows():
    a = np.ones((3, 3))
    b = np.ones((3, 3))
    a[0, 0] = np.nan
    b[2, 2] = np.inf
    mask = np.ones((3, 3), dtype=bool)
    mask[1, 1] = False
    ok = A.valid_in_all([a, b], mask)
    assert ok.sum() == 6 and not ok[0, 0] and not ok[2, 2] and not ok[1, 1]
    X, y, names = _synthetic(n=100, p=4)
    m = A.fit_forest(X[:60], y[:60], n_trees=5)
    with pytest.raises(A.AttributionError, match="fitted on 60 rows"):
        A.importance(X, y, names, model=m)


# --------------------------------------------------------------------------- factorial, split for chunked runs
def _blockwise_factorial(fit, Xall, noise_pixels, seed, n_blocks=3):
    """factorial() recomposed from its pieces, pixels processed in n_blocks blocks (as Dask would)."""
    edges = np.linspace(0, Xall.shape[0], n_blocks + 1).astype(int)
    parts = [A.factorial_predict(fit, Xall[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    rf_all = np.concatenate([p["rf_all"] for p in parts])
    actcon = np.concatenate([p["actcon"] for p in parts], axis=1)
    # the chunked caller only knows which pixels are valid (all drivers finite)
    valid_index = np.flatnonzero(np.isfinite(Xall).all(axis=1))
    idx = A.noise_pixel_index(valid_index, noise_pixels, seed)
    noise = A.noise_floor(fit, Xall[idx])  # RF_all predicted again here: must not matter
    blocks = [A.relative_contributions(actcon[:, a:b], noise) for a, b in zip(edges[:-1], edges[1:])]
    relcon = np.concatenate([b[0] for b in blocks], axis=1)
    sum_abs = np.concatenate([b[1] for b in blocks])
    und = np.concatenate([b[2] for b in blocks])
    return rf_all, actcon, noise, relcon, sum_abs, und


@pytest.mark.parametrize("noise_pixels", [None, 150])
def test_factorial_pieces_block_by_block_equal_factorial(noise_pixels):
    stack, y, names, cats, _ = _zones(rows=20, cols=30)
    Xall = stack.reshape(-1, len(names)).copy()
    Xall[[3, 250, 599], [1, 4, 0]] = np.nan  # undefined pixels, one in each block
    Xs = np.delete(Xall, [3, 250, 599], axis=0)[::2]
    ys = np.delete(y.ravel(), [3, 250, 599])[::2]
    ref = A.factorial(Xs, ys, Xall, names, cats, n_trees=12, seed=3, noise_pixels=noise_pixels, keep_model=True)
    fit = A.factorial_fit(Xs, ys, names, cats, n_trees=12, seed=3)
    assert fit.categories == ref["categories"] == ["C", "S", "M"] and fit.empty_categories == ["E"]
    assert fit.models == ref["models"] and fit.model_all is None
    np.testing.assert_array_equal(fit.keep_cols["M"], [0, 1, 2, 3, 5])
    rf_all, actcon, noise, relcon, sum_abs, und = _blockwise_factorial(fit, Xall, noise_pixels, seed=3)
    np.testing.assert_array_equal(rf_all, ref["rf_all"])
    np.testing.assert_array_equal(actcon, ref["actcon"])
    assert noise == ref["noise_floor"] and noise > 0
    np.testing.assert_array_equal(relcon, ref["relcon"])
    np.testing.assert_array_equal(sum_abs, ref["sum_abs"])
    np.testing.assert_array_equal(und, ref["undetermined"])
    assert np.isnan(actcon[:, [3, 250, 599]]).all() and not und[[3, 250, 599]].any()
    # ActCon by hand from the kept sklearn RF_all and a refitted RF without M
    without_m = A.fit_forest(Xs[:, fit.keep_cols["M"]], ys, n_trees=12, seed=3)
    ok = np.isfinite(Xall).all(axis=1)
    hand = ref["model_all"].predict(Xall[ok]) - without_m.predict(Xall[ok][:, fit.keep_cols["M"]])
    np.testing.assert_allclose(actcon[2, ok], hand, rtol=0, atol=1e-9)
    if noise_pixels is not None:
        idx = A.noise_pixel_index(np.flatnonzero(ok), noise_pixels, 3)
        assert idx.size == 150 and np.all(np.diff(idx) > 0) and ok[idx].all()


def test_factorial_fit_pickles_small_and_predicts_the_same():
    import pickle

    stack, y, names, cats, _ = _zones(rows=15, cols=21)
    Xall = stack.reshape(-1, len(names))
    fit = A.factorial_fit(Xall[::2], y.ravel()[::2], names, cats, n_trees=8, seed=5, keep_model=True)
    assert fit.model_all is not None
    slim = fit.without_model()
    assert slim.model_all is None and fit.model_all is not None
    blob = pickle.dumps(slim)
    assert len(blob) < len(pickle.dumps(fit))
    back = pickle.loads(blob)
    a, b = A.factorial_predict(fit, Xall), A.factorial_predict(back, Xall)
    np.testing.assert_array_equal(a["rf_all"], b["rf_all"])
    np.testing.assert_array_equal(a["actcon"], b["actcon"])
    assert A.noise_floor(fit, Xall) == A.noise_floor(back, Xall)
    with pytest.raises(A.AttributionError, match="need \\(n_pixels, 6\\)"):
        A.factorial_predict(back, Xall[:, :5])


def test_factorial_single_category_predicts_sample_mean_without_it():
    X, y, names = _synthetic(n=200, p=4)
    fit = A.factorial_fit(X, y, names, {"ALL": names}, n_trees=6, seed=0)
    assert fit.flat_without["ALL"] is None and fit.keep_cols["ALL"].size == 0
    Xp = X[:10].copy()
    Xp[4, 1] = np.nan
    out = A.factorial_predict(fit, Xp)
    np.testing.assert_allclose(out["actcon"][0], out["rf_all"] - y.mean(), rtol=0, atol=1e-12)
    assert np.isnan(out["actcon"][0, 4])
    relcon, sum_abs, und = A.relative_contributions(out["actcon"], float("nan"))
    ok = np.arange(10) != 4
    np.testing.assert_array_equal(relcon[0, ok], np.where(sum_abs[ok] > 0, 100.0, np.nan))
    assert not und[4]
