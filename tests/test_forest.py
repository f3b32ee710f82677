"""Compiled forest evaluation (npp_core.forest) against scikit-learn and a brute-force walk."""
from __future__ import annotations

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
