"""Tests of input unit conversion and plausibility checks (npp_core.units)."""
from __future__ import annotations

import numpy as np
import pytest

from npp_core.units import UnitsError, check_plausible, convert, month_days


def test_w_m2_over_31_days():
    out = convert(np.array([200.0]), "solar", "W m-2", [31])
    assert out[0] == pytest.approx(535.68, rel=1e-12)


def test_solar_units_per_band_days():
    days = month_days(["2012-01", "2012-02", "2011-02"])
    np.testing.assert_array_equal(days, [31, 29, 28])
    v = np.array([10.0, 10.0, 10.0])[:, None, None] * np.ones((3, 2, 2))
    np.testing.assert_allclose(convert(v, "solar", "MJ m-2 d-1", days)[:, 0, 0], [310, 290, 280])
    np.testing.assert_allclose(convert(v * 1000, "solar", "kJ m-2 d-1", days)[:, 1, 1], [310, 290, 280])
    np.testing.assert_allclose(convert(v * 1e6, "solar", "J m-2"), v)
    np.testing.assert_allclose(convert(v, "solar", "MJ m-2 month-1"), v)
    np.testing.assert_allclose(convert(v, "solar", None), v)


def test_temperature_and_precipitation():
    np.testing.assert_allclose(convert(np.array([273.15, 300.0]), "temperature", "K"), [0.0, 26.85])
    np.testing.assert_allclose(convert(np.array([5.0]), "temperature", "°C"), [5.0])
    np.testing.assert_allclose(convert(np.array([2.0, 2.0]), "precipitation", "mm d-1", month_days(["2000-02", "2100-02"])),
                               [58.0, 56.0])
    np.testing.assert_array_equal(convert(np.array([np.nan, 3.0]), "precipitation", "mm/day", [30, 31]), [np.nan, 93.0])


def test_month_days_leap_rules_and_errors():
    np.testing.assert_array_equal(month_days(["2000-02", "1900-02", "2024-02-15", "2023-04"]), [29, 28, 29, 30])
    with pytest.raises(UnitsError, match="YYYY-MM"):
        month_days(["Jan 2010"])
    with pytest.raises(UnitsError, match="YYYY-MM"):
        month_days(["2010-13"])


def test_unit_errors():
    with pytest.raises(UnitsError, match='"MJ m-2 month-1".*"W m-2"'):
        convert(np.ones(2), "solar", "langley", [31, 28])
    with pytest.raises(UnitsError, match="days of each month"):
        convert(np.ones(2), "solar", "W m-2", None)
    with pytest.raises(UnitsError, match="one length per band"):
        convert(np.ones(3), "precipitation", "mm d-1", [31, 28])
    with pytest.raises(UnitsError, match="unknown quantity"):
        convert(np.ones(2), "wind", "m s-1")


def _series(monthly_values, shape=(3, 4)):
    v = np.asarray(monthly_values, dtype=float)
    return np.broadcast_to(v[:, None, None], (v.size,) + shape).copy()


SOL_MJ_MONTH = [200, 260, 380, 480, 580, 600, 560, 520, 420, 320, 230, 190]  # ≈ 4700 MJ m-2 yr-1
T_C = [-8, -4, 3, 11, 17, 22, 24, 22, 16, 9, 1, -6]
P_MM = [3, 6, 15, 30, 45, 70, 130, 120, 60, 30, 10, 3]


def test_plausible_inputs_raise_nothing():
    assert check_plausible(_series(SOL_MJ_MONTH), "solar", "srad.tif") == []
    assert check_plausible(_series(T_C), "temperature", "tmean.tif") == []
    assert check_plausible(_series(P_MM), "precipitation", "prec.tif") == []
    assert check_plausible(_series([0.1, 0.8, -0.05]), "ndvi", "ndvi.tif") == []


def test_kelvin_detected():
    msgs = check_plausible(_series(np.array(T_C) + 273.15), "temperature", "tmean.tif")
    assert len(msgs) == 1 and "tmean.tif" in msgs[0] and "kelvin" in msgs[0] and 'units = "K"' in msgs[0]
    back = check_plausible(_series(np.array(T_C) - 273.15), "temperature", "t.tif", units="K")
    assert len(back) == 1 and "declared as kelvin" in back[0]
    assert "scale = 0.1" in check_plausible(_series(np.array(T_C) * 10), "temperature", "t.tif")[0]


def test_solar_in_wrong_units_detected():
    days = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    wm2 = np.array(SOL_MJ_MONTH) / (86400 * days / 1e6)          # same sun as a mean flux
    assert 'units = "W m-2"' in check_plausible(_series(wm2), "solar", "srad.tif")[0]
    per_day = np.array(SOL_MJ_MONTH) / days
    assert 'units = "MJ m-2 d-1"' in check_plausible(_series(per_day), "solar", "srad.tif")[0]
    assert 'units = "kJ m-2 d-1"' in check_plausible(_series(per_day * 1000), "solar", "srad.tif")[0]
    assert 'units = "J m-2"' in check_plausible(_series(np.array(SOL_MJ_MONTH) * 1e6), "solar", "srad.tif")[0]
    # after the right declaration the converted values pass
    assert check_plausible(_series(convert(wm2, "solar", "W m-2", days)), "solar", "srad.tif", units="W m-2") == []


def test_precipitation_checks():
    days = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    msgs = check_plausible(_series(np.array(P_MM) / days), "precipitation", "prec.tif")
    assert len(msgs) == 1 and 'units = "mm d-1"' in msgs[0]
    neg = _series(P_MM)
    neg[0, 0, 0] = -9999
    msgs = check_plausible(neg, "precipitation", "prec.tif")
    assert any("negative" in m and "nodata" in m for m in msgs)


def test_ndvi_scaled_detected():
    msgs = check_plausible(_series([1200, 8000, -500]), "ndvi", "ndvi.tif")
    assert msgs == ["ndvi.tif: NDVI values -500–8000 look scaled by 10000; declare scale = 0.0001."]
    assert "scale" in check_plausible(_series([12, 80]), "ndvi", "n.tif")[0]


def test_all_nodata_reported():
    assert "no valid values" in check_plausible(np.full((12, 2, 2), np.nan), "solar", "s.tif")[0]
