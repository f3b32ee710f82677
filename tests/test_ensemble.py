"""Ensemble reduction: modal class, agreement and intervals, checked against brute force."""
from __future__ import annotations

import numpy as np
import pytest

from npp_core.ensemble import EnsembleReducer, interval


def test_identical_members_agree_everywhere():
    rng = np.random.default_rng(1)
    codes = rng.integers(1, 10, size=(6, 5)).astype(np.uint8)
    codes[0, 0] = 0  # nodata
    red = EnsembleReducer(11, codes.shape, ["C", "S", "M"])
    for _ in range(4):
        red.add(codes)
    mode, agree = red.modal()
    np.testing.assert_array_equal(mode, codes)
    assert np.isnan(agree[0, 0])
    assert np.all(agree[codes > 0] == 1.0)


def test_mode_and_agreement_match_brute_force():
    rng = np.random.default_rng(7)
    members = rng.integers(1, 4, size=(9, 8, 7)).astype(np.uint8)
    red = EnsembleReducer(4, (8, 7), ["C", "S", "M"])
    for m in members:
        red.add(m)
    mode, agree = red.modal()
    for i in range(8):
        for j in range(7):
            counts = np.bincount(members[:, i, j], minlength=4)
            best = int(np.argmax(counts))  # lowest code on ties
            assert mode[i, j] == best
            assert agree[i, j] == pytest.approx(counts[best] / 9)


def test_agreement_drops_where_members_disagree():
    stable = np.full((4, 4), 2, np.uint8)
    red = EnsembleReducer(5, (4, 4), ["C", "S", "M"])
    for k in range(10):
        m = stable.copy()
        m[:, 2:] = 1 + (k % 3)  # ambiguous zone: three classes in turn
        red.add(m)
    _, agree = red.modal()
    assert np.all(agree[:, :2] == 1.0)
    assert np.all(agree[:, 2:] == pytest.approx(0.4))


def test_relcon_mean_and_intervals():
    red = EnsembleReducer(3, (2, 2), ["C", "S"])
    vals = [10.0, 20.0, 30.0, 40.0]
    for v in vals:
        rel = np.stack([np.full((2, 2), v), np.full((2, 2), 100 - v)])
        rel[:, 0, 0] = np.nan if v == 40.0 else rel[:, 0, 0]
        red.add(np.ones((2, 2), np.uint8), rel, {"relcon_mean.C": v})
    m = red.relcon_mean()
    assert m[0, 1, 1] == pytest.approx(25.0)
    assert m[0, 0, 0] == pytest.approx(20.0)  # the NaN member is left out
    iv = red.intervals()["relcon_mean.C"]
    assert iv["mean"] == pytest.approx(25.0)
    assert iv["p05"] == pytest.approx(np.percentile(vals, 5))
    assert iv["p05"] <= 10.0 + 1.5 and iv["p95"] >= 38.0
    assert interval([])["n"] == 0


def test_bad_member_rejected():
    red = EnsembleReducer(3, (2, 2), ["C"])
    with pytest.raises(ValueError, match="shape"):
        red.add(np.ones((3, 2), np.uint8))
    with pytest.raises(ValueError, match="outside"):
        red.add(np.full((2, 2), 5, np.uint8))
