"""AHP weights / consistency and the land-degradation index, against hand computations."""
from __future__ import annotations

import numpy as np
import pytest

from npp_core import ahp
from npp_core.ahp import AhpError


def _consistent(w):
    w = np.asarray(w, dtype=float)
    return w[:, None] / w[None, :]


def _power_iteration(a, iters=2000):
    """Brute-force principal eigenpair (independent of numpy.linalg.eig)."""
    v = np.ones(a.shape[0]) / a.shape[0]
    for _ in range(iters):
        v = a @ v
        v = v / v.sum()
    lam = float(np.mean((a @ v) / v))
    return v, lam


def test_random_index_is_saaty_1980():
    assert [ahp.RANDOM_INDEX[n] for n in range(1, 11)] == [0, 0, 0.58, 0.90, 1.12, 1.24, 1.32, 1.41, 1.45, 1.49]


def test_consistent_matrix_recovers_weights_and_zero_cr():
    w_true = np.array([0.5, 0.3, 0.2])
    w, cr = ahp.weights(_consistent(w_true))
    np.testing.assert_allclose(w, w_true, atol=1e-12)
    assert abs(cr) < 1e-10
    w4 = np.array([0.1, 0.4, 0.35, 0.15])
    w, cr = ahp.weights(_consistent(w4))
    np.testing.assert_allclose(w, w4, atol=1e-12)
    assert abs(cr) < 1e-10


def test_textbook_3x3_closed_form():
    # For a 3×3 reciprocal matrix λmax = 1 + κ^(1/3) + κ^(-1/3), κ = a13/(a12·a23), and the
    # eigenvector equals the normalised row geometric means.
    a = np.array([[1, 3, 5], [1 / 3, 1, 3], [1 / 5, 1 / 3, 1]])
    kappa = 5 / (3 * 3)
    lam = 1 + kappa ** (1 / 3) + kappa ** (-1 / 3)
    cr = (lam - 3) / 2 / 0.58
    g = np.prod(a, axis=1) ** (1 / 3)
    w, got_cr = ahp.weights(a)
    np.testing.assert_allclose(w, g / g.sum(), atol=1e-12)
    np.testing.assert_allclose(w, [0.6370, 0.2583, 0.1047], atol=5e-4)  # published values
    assert got_cr == pytest.approx(cr, abs=1e-12)
    assert got_cr == pytest.approx(0.0332, abs=5e-4)
    c = ahp.consistency(a)
    assert c["lambda_max"] == pytest.approx(lam, abs=1e-12)


def test_5x5_against_power_iteration():
    a = np.array(
        [
            [1, 2, 4, 3, 7],
            [1 / 2, 1, 3, 2, 5],
            [1 / 4, 1 / 3, 1, 1 / 2, 2],
            [1 / 3, 1 / 2, 2, 1, 3],
            [1 / 7, 1 / 5, 1 / 2, 1 / 3, 1],
        ]
    )
    v, lam = _power_iteration(a)
    w, cr = ahp.weights(a)
    np.testing.assert_allclose(w, v, atol=1e-10)
    assert cr == pytest.approx((lam - 5) / 4 / 1.12, abs=1e-9)
    assert cr < 0.1


def test_planted_bad_judgement_is_detected_and_named():
    names = ["subsidence", "cracks", "seeper", "goaf", "slope_change"]
    a = _consistent([0.35, 0.25, 0.2, 0.12, 0.08])
    a = np.round(a, 6)
    # plant: seeper judged 6× more important than subsidence (truth: 0.2/0.35 ≈ 0.57)
    a[2, 0], a[0, 2] = 6.0, 1 / 6.0
    w, cr = ahp.weights(a)
    assert cr >= 0.1
    d = ahp.disagreements(a, w, names, top=3)
    assert len(d) == 3
    assert {d[0]["row"], d[0]["col"]} == {"subsidence", "seeper"}
    assert d[0]["log_ratio"] >= d[1]["log_ratio"] >= d[2]["log_ratio"]
    # the reported log ratio is |ln(a_ij / (w_i/w_j))|
    i, j = d[0]["i"], d[0]["j"]
    assert d[0]["log_ratio"] == pytest.approx(abs(np.log(a[i, j] * w[j] / w[i])), rel=1e-12)
    ev = ahp.evaluate(a, names)
    assert not ev["consistent"]
    assert "subsidence vs seeper" in ev["message"] and "0.1" in ev["message"]
    ok = ahp.evaluate(_consistent([0.5, 0.3, 0.2]), ["a", "b", "c"])
    assert ok["consistent"] and ok["message"] == ""
    assert ok["weights"]["a"] == pytest.approx(0.5)


def test_two_decimal_reciprocals_are_accepted():
    a = np.array([[1, 3, 8], [0.33, 1, 2], [0.13, 0.5, 1]])
    w, cr = ahp.weights(a)
    assert w.argmax() == 0 and np.isfinite(cr)


@pytest.mark.parametrize(
    "matrix, needle",
    [
        (np.ones((2, 3)), "square"),
        (np.array([[1, 2], [0.5, -1.0]]), "not a positive number"),
        (np.array([[1, 2, 3], [0.5, 1, 4], [1 / 3, 0.5, 1]]), "not reciprocal"),
        (np.array([[2, 2], [0.5, 1]]), "diagonal"),
        (np.ones((11, 11)), "stop at 10"),
    ],
)
def test_check_matrix_messages(matrix, needle):
    with pytest.raises(AhpError, match=needle):
        ahp.check_matrix(matrix)


def test_check_matrix_names_pair_and_fix():
    a = np.array([[1, 2, 3], [0.5, 1, 4], [1 / 3, 0.5, 1]])
    with pytest.raises(AhpError) as e:
        ahp.check_matrix(a, ["cracks", "goaf", "seeper"])
    assert "(goaf, seeper) = 4" in str(e.value) and "0.25" in str(e.value)
    with pytest.raises(AhpError, match="3 indicator names"):
        ahp.check_matrix(np.eye(2), ["a", "b", "c"])


def test_degradation_index_hand_computed():
    sub = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, np.nan]])  # higher is worse
    dist = np.array([[0.0, 500.0, 1000.0], [1500.0, 3000.0, 100.0]])  # capped at 1500, lower is worse
    veg = np.array([[0.8, 0.2, 0.5], [0.5, 0.2, 0.9]])  # vegetation cover: lower is worse
    ld, info = ahp.degradation_index(
        {"subsidence": sub, "distance_to_mine": dist, "cover": veg},
        {"subsidence": 2.0, "distance_to_mine": 1.0, "cover": 1.0},  # renormalised to .5 .25 .25
        direction={"cover": "lower_is_worse"},
        influence_distance=1500.0,
    )
    s_sub = np.array([[0, 0.25, 0.5], [0.75, 1.0, np.nan]])
    s_dist = np.array([[1.0, 2 / 3, 1 / 3], [0.0, 0.0, 1400 / 1500]])
    s_veg = np.array([[1 / 7, 1.0, 4 / 7], [4 / 7, 1.0, 0.0]])  # (0.9 - v) / 0.7 over its own valid pixels
    raw = 0.5 * s_sub + 0.25 * s_dist + 0.25 * s_veg
    lo, hi = np.nanmin(raw), np.nanmax(raw)
    np.testing.assert_allclose(ld, (raw - lo) / (hi - lo), atol=1e-12, equal_nan=True)
    assert np.isnan(ld[1, 2])
    assert np.nanmin(ld) == 0.0 and np.nanmax(ld) == 1.0
    assert info["direction"] == {
        "subsidence": "higher_is_worse", "distance_to_mine": "lower_is_worse", "cover": "lower_is_worse"
    }
    assert info["max"]["distance_to_mine"] == 1500.0
    assert info["capped"] == ["distance_to_mine"]


def test_degradation_index_cap_makes_far_pixels_zero_and_mask():
    dist = np.array([[0.0, 750.0, 5000.0, 9000.0]])
    sub = np.array([[1.0, 1.0, 1.0, 2.0]])
    mask = np.array([[True, True, True, False]])
    ld, info = ahp.degradation_index(
        {"distance_to_mine": dist, "sub": sub}, {"distance_to_mine": 1.0, "sub": 0.0 + 1e-300},
        influence_distance=1500.0, mask=np.array([[True, True, True, True]]),
    )
    # with 'sub' weight ~0, LD is the capped, inverted distance: 1, 0.5, 0, 0
    np.testing.assert_allclose(ld, [[1.0, 0.5, 0.0, 0.0]], atol=1e-12)
    with pytest.raises(AhpError, match="'sub' has no variance"):
        ahp.degradation_index({"distance_to_mine": dist, "sub": sub}, {"distance_to_mine": 1, "sub": 1}, mask=mask)
    ld2, _ = ahp.degradation_index({"distance_to_mine": dist}, {"distance_to_mine": 1.0}, mask=mask)
    assert np.isnan(ld2[0, 3])
    np.testing.assert_allclose(ld2[0, :3], [1.0, 0.5, 0.0])


def test_degradation_index_errors():
    x = np.array([[1.0, 2.0]])
    with pytest.raises(AhpError, match="no weight for \\['b'\\]"):
        ahp.degradation_index({"a": x, "b": x}, {"a": 1.0})
    with pytest.raises(AhpError, match="no raster for \\['c'\\]"):
        ahp.degradation_index({"a": x}, {"a": 1.0, "c": 1.0})
    with pytest.raises(AhpError, match="use 'higher_is_worse' or 'lower_is_worse'"):
        ahp.degradation_index({"a": x}, {"a": 1.0}, direction={"a": "worse"})
    with pytest.raises(AhpError, match="at least 1500 from a mine"):
        ahp.degradation_index({"distance_to_mine": np.array([[2000.0, 3000.0]])}, {"distance_to_mine": 1.0})
    with pytest.raises(AhpError, match="shape"):
        ahp.degradation_index({"a": x, "b": np.ones((2, 2))}, {"a": 1.0, "b": 1.0})
