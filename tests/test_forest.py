"""Compiled forest evaluation (npp_core.forest) against scikit-learn and a brute-force walk."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor

from npp_core import forest as F
from npp_core.forest import flatten_forest, predict_forest, predict_trees


def _walk_reference(model, X: np.ndarray) -> np.ndarray:
    """Brute force: sklearn's rule (float64(float32(x)) <= threshold64), trees summed in order."""
    x = np.asarray(X, dtype=np.float32).astype(np.float64)
    acc = np.zeros(x.shape[0])
    rows = np.arange(x.shape[0])
    for est in model.estimators_:
        t = est.tree_
        node = np.zeros(x.shape[0], dtype=np.int64)
        while True:
            inner = t.children_left[node] != -1
            if not inner.any():
                break
            go_left = x[rows, np.maximum(t.feature[node], 0)] <= t.threshold[node]
            nxt = np.where(go_left, t.children_left[node], t.children_right[node])
            node = np.where(inner, nxt, node)
        acc += t.value[node, 0, 0]
    return acc / len(model.estimators_)


def _edge_rows(model, rng, n_trees_used: int) -> np.ndarray:
    """Rows whose one feature sits on / one ulp beside (float64 and float32) split thresholds."""
    p = model.n_features_in_
    blocks = []
    for est in model.estimators_[:n_trees_used]:
        t = est.tree_
        split = t.children_left != -1
        thr, feat = t.threshold[split], t.feature[split]
        t32 = thr.astype(np.float32)
        cands = (
            thr,
            np.nextafter(thr, np.inf),
            np.nextafter(thr, -np.inf),
            t32.astype(np.float64),
            np.nextafter(t32, np.float32(np.inf)).astype(np.float64),
            np.nextafter(t32, np.float32(-np.inf)).astype(np.float64),
        )
        for vals in cands:
            rows = np.repeat(rng.normal(size=(1, p)), thr.size, axis=0)
            rows[np.arange(thr.size), feat] = vals
            blocks.append(rows)
    return np.concatenate(blocks)


def test_float32_threshold_decides_exactly_like_sklearn():
    """x32 <= thr32 must equal float64(x32) <= t64 for x on and beside every threshold."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=500).astype(np.float32)
    t64 = np.concatenate([
        rng.normal(size=2000) * 10.0 ** rng.integers(-6, 6, 2000),
        rng.normal(size=200).astype(np.float32).astype(np.float64),  # exactly representable
        [0.0, -0.0, 1e-300, -1e-300, 1e-40, -1e-40, 3.4e38, -3.4e38],
        # midpoints of neighbouring float32 values (sklearn splits halfway between samples)
        (a.astype(np.float64) + np.nextafter(a, np.float32(np.inf))) / 2,
    ])
    thr32 = F._threshold32(t64)
    assert thr32.dtype == np.float32
    base = t64.astype(np.float32)  # round-to-nearest: may lie above t64
    assert (base.astype(np.float64) > t64).sum() > 100  # the naive cast would be wrong on these
    for x in (base, np.nextafter(base, np.float32(np.inf)), np.nextafter(base, np.float32(-np.inf)),
              thr32, np.nextafter(thr32, np.float32(np.inf))):
        np.testing.assert_array_equal(x <= thr32, x.astype(np.float64) <= t64)
    # flatten_forest stores exactly this conversion for every split node of a real forest
    X = np.random.default_rng(0).normal(size=(80, 3))
    m = RandomForestRegressor(4, random_state=0).fit(X, X[:, 0])
    flat = flatten_forest(m)
    split = flat.child != np.arange(flat.child.size)
    t_all = np.sort(np.concatenate([e.tree_.threshold[e.tree_.children_left != -1] for e in m.estimators_]))
    np.testing.assert_array_equal(np.sort(flat.threshold[split]), np.sort(F._threshold32(t_all)))
    assert np.isinf(flat.threshold[~split]).all()


@pytest.mark.parametrize("n_rows", [1, 511, 512, 513, 1700])
def test_predict_forest_bit_equal_to_bruteforce_and_sklearn(n_rows):
    rng = np.random.default_rng(n_rows)
    X = rng.normal(size=(400, 6))
    y = 3 * X[:, 0] + np.sin(3 * X[:, 1]) + X[:, 2] * (X[:, 3] > 0) + 0.2 * rng.normal(size=400)
    # min_samples_leaf=1 and no depth limit: trees far deeper than the lockstep + compaction levels
    m = RandomForestRegressor(25, max_features=2, min_samples_split=2, random_state=1, n_jobs=1).fit(X, y)
    assert flatten_forest(m).depth.min() > F._LOCKSTEP + F._EVERY
    Xt = np.concatenate([rng.normal(size=(n_rows, 6)) * 1.5, _edge_rows(m, rng, 25)])
    Xt[::7, 4] = -0.0
    Xt[::11, 5] = 0.0
    ref = _walk_reference(m, Xt)
    ours = predict_forest(m, Xt)
    np.testing.assert_array_equal(ours, ref)  # same tree order, same float64 sum: bit-equal
    np.testing.assert_allclose(ours, m.predict(Xt), rtol=0, atol=1e-9)
    per_tree = predict_trees(m, Xt[:300])
    for t in (0, 7, 24):
        np.testing.assert_array_equal(per_tree[t], m.estimators_[t].predict(Xt[:300]))


def test_predict_forest_nan_inf_rows_do_not_disturb_neighbours():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 3))
    m = RandomForestRegressor(10, min_samples_split=6, random_state=0).fit(X, X[:, 0] - 2 * X[:, 2])
    Xt = rng.normal(size=(1100, 3))
    bad = np.zeros(1100, dtype=bool)
    bad[[0, 3, 511, 512, 1099]] = True
    Xt[0, 1] = np.nan
    Xt[3, 0] = np.inf
    Xt[511, 2] = -np.inf
    Xt[512, :] = np.nan
    Xt[1099, 0] = np.nan
    out = predict_forest(m, Xt)
    assert np.isnan(out[bad]).all()
    np.testing.assert_array_equal(out[~bad], _walk_reference(m, Xt[~bad]))
    assert predict_forest(m, Xt[:0]).shape == (0,)


def test_predict_forest_rejects_wrong_width():
    X = np.random.default_rng(0).normal(size=(60, 3))
    m = RandomForestRegressor(3, random_state=0).fit(X, X[:, 0])
    with pytest.raises(F.ForestError, match=r"expected \(n_pixels, 3\)"):
        predict_forest(m, X[:, :2])


# --------------------------------------------------------------------------- fitting
_TREE_ARRAYS = ("children_left", "children_right", "feature", "threshold", "value", "impurity",
                "n_node_samples", "weighted_n_node_samples", "missing_go_to_left")


def _assert_same_forest(ours, ref, X):
    """Every fitted attribute, tree and random draw of two forests equal, bit for bit."""
    assert type(ours) is F.FastRandomForestRegressor and isinstance(ours, RandomForestRegressor)
    po, pr = ours.get_params(), ref.get_params()
    if isinstance(pr["random_state"], np.random.RandomState):  # equal when consumed alike
        np.testing.assert_array_equal(po.pop("random_state").get_state()[1], pr.pop("random_state").get_state()[1])
    assert po == pr
    assert set(vars(ours)) == set(vars(ref))
    for k, v in vars(ref).items():
        if k in ("estimators_", "random_state"):
            continue
        if k in ("estimator", "estimator_"):
            assert type(getattr(ours, k)) is type(v) and getattr(ours, k).get_params() == v.get_params()
        elif isinstance(v, np.ndarray):
            assert v.dtype == getattr(ours, k).dtype
            np.testing.assert_array_equal(getattr(ours, k), v)
        else:
            assert getattr(ours, k) == v, k
    assert len(ours.estimators_) == len(ref.estimators_)
    for a, b in zip(ours.estimators_, ref.estimators_):
        assert type(a) is type(b) and set(vars(a)) == set(vars(b))
        assert a.get_params() == b.get_params()  # includes the per-tree random_state
        for k in vars(b):
            if k != "tree_":
                assert np.array_equal(getattr(a, k), getattr(b, k)), k
        for k in _TREE_ARRAYS:
            np.testing.assert_array_equal(getattr(a.tree_, k), getattr(b.tree_, k))
    for s_o, s_r in zip(ours.estimators_samples_, ref.estimators_samples_, strict=True):
        assert s_o.dtype == s_r.dtype
        np.testing.assert_array_equal(s_o, s_r)
    # sklearn's own predict sums trees in a thread race when n_jobs > 1: compare serially
    jobs = ours.n_jobs, ref.n_jobs
    ours.n_jobs = ref.n_jobs = 1
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    ours.n_jobs, ref.n_jobs = jobs


@pytest.mark.parametrize("n_jobs, n_trees", [(2, 40), (1, 7), (None, 1)])
def test_fast_forest_is_sklearn_forest_bit_for_bit(n_jobs, n_trees):
    rng = np.random.default_rng(n_trees)
    X = rng.normal(size=(300, 7)) * np.array([1, 10, 1e3, 0.01, 1, 1, 5])
    X[:, 6] = np.round(X[:, 6])  # ties in one driver
    y = 3 * X[:, 0] + np.sin(X[:, 1]) + X[:, 2] * 1e-3 * (X[:, 3] > 0) + 0.3 * rng.normal(size=300)
    kw = dict(n_estimators=n_trees, max_features=2, min_samples_split=6, oob_score=True, n_jobs=n_jobs, random_state=11)
    with warnings.catch_warnings(record=True) as w_ref:
        warnings.simplefilter("always")
        ref = RandomForestRegressor(**kw).fit(X, y)
    with warnings.catch_warnings(record=True) as w_ours:
        warnings.simplefilter("always")
        ours = F.FastRandomForestRegressor(**kw).fit(X, y)
    # few trees: some rows never OOB -> the same warning, the same 0-count handling
    assert [str(w.message) for w in w_ours] == [str(w.message) for w in w_ref]
    assert ours.oob_score_ == ref.oob_score_
    np.testing.assert_array_equal(ours.oob_prediction_, ref.oob_prediction_)
    _assert_same_forest(ours, ref, X)


@pytest.mark.filterwarnings("ignore:Some inputs do not have OOB scores")
def test_fast_forest_fallback_paths_match_sklearn_and_refit():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(150, 4))
    y = X[:, 0] + 0.1 * rng.normal(size=150)
    sw = rng.uniform(0.5, 2.0, 150)
    # sample weights go through scikit-learn's own fit (with the cheap tree copies)
    kw = dict(n_estimators=6, max_features=2, oob_score=True, random_state=4)
    ref = RandomForestRegressor(**kw).fit(X, y, sample_weight=sw)
    ours = F.FastRandomForestRegressor(**kw).fit(X, y, sample_weight=sw)
    assert ours.oob_score_ == ref.oob_score_
    np.testing.assert_array_equal(ours.oob_prediction_, ref.oob_prediction_)
    _assert_same_forest(ours, ref, X)
    # refitting the same object, and a RandomState instance as random_state
    ours.fit(X, y)
    _assert_same_forest(ours, RandomForestRegressor(**kw).fit(X, y), X)
    a = F.FastRandomForestRegressor(6, random_state=np.random.RandomState(8)).fit(X, y)
    b = RandomForestRegressor(6, random_state=np.random.RandomState(8)).fit(X, y)
    _assert_same_forest(a, b, X)
    assert not hasattr(a, "_npp_tree_proto")


def test_predict_trees_permuted_equals_predict_on_permuted_copies():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(200, 5))
    m = RandomForestRegressor(6, max_features=2, min_samples_split=6, random_state=0).fit(X, X[:, 0] + X[:, 3] ** 2)
    member = np.array([[1, 0, 0, 0, 0], [0, 1, 1, 0, 1], [0, 0, 0, 1, 0]], dtype=bool)
    trees = [0, 3, 5, 3]
    rows = [rng.choice(200, 37, replace=False), np.arange(200), rng.choice(200, 5, replace=False), np.arange(0)]
    groups = [np.array([0, 1, 2]), np.array([2]), np.array([], dtype=int), np.array([1])]
    perms = [np.array([rng.permutation(len(r)) for _ in g]).reshape(len(g), len(r)) for r, g in zip(rows, groups)]
    out = F.predict_trees_permuted(flatten_forest(m), X, trees, rows, perms, groups, member)
    for j, t in enumerate(trees):
        est, Xr = m.estimators_[t], X[rows[j]]
        assert out[j].shape == (len(groups[j]) + 1, len(rows[j]))
        if len(rows[j]) == 0:
            continue
        np.testing.assert_array_equal(out[j][0], est.predict(Xr))
        for k, q in enumerate(groups[j]):
            Xp = Xr.copy()
            Xp[:, member[q]] = Xr[perms[j][k]][:, member[q]]
            np.testing.assert_array_equal(out[j][k + 1], est.predict(Xp))
    with pytest.raises(F.ForestError, match="perms"):
        F.predict_trees_permuted(flatten_forest(m), X, [0], [np.arange(4)], [np.array([[0, 1, 2, 9]])], [np.array([0])], member)
