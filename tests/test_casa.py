"""Tests of the CASA model (npp_core.casa) against hand-computed values and a scalar reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
from affine import Affine

from npp_core import casa
from npp_core.casa import CasaError, npp_monthly
from npp_core.params import EPS_MAX_DEFAULT

ENGINES = ("numba", "numpy")

# --- the worked pixel-month of the spec (deciduous broadleaf, Zhu table, July) ----------------
T_YEAR = [-3.0, 0.5, 6.5, 13.5, 19.5, 23.5, 24.5, 23.0, 18.5, 12.5, 5.0, -1.0]
EXPECTED = {
    "SR": 6.142857, "FPAR_NDVI": 0.914609, "FPAR_SR": 0.825765, "FPAR": 0.870187, "APAR": 226.2486,
    "Teps1": 0.989875, "Teps2": 0.991224, "I": 57.7017, "a": 1.399380, "Ep0": 121.0317, "Rn": 118.6627,
    "EET": 92.9260, "PET": 106.9789, "Weps": 0.934319, "eps": 0.634386, "NPP": 143.529,
}


def _worked_inputs():
    t = np.array(T_YEAR)[:, None, None]
    nd = np.full((12, 1, 1), 0.5)
    nd[6] = 0.72  # July is the NDVI peak -> Topt = 24.5
    p = np.full((12, 1, 1), 130.0)
    s = np.full((12, 1, 1), 520.0)
    return nd, t, p, s


def test_worked_pixel_month_every_column():
    nd, t, p, s = _worked_inputs()
    npp, lay = npp_monthly(nd, t, p, s, 0.692, 0.023, 0.747, sr_min=1.05, sr_max=6.91, return_layers=True)
    got = {k: lay[k][6, 0, 0] for k in EXPECTED if k in lay and lay[k].shape[0] == 12}
    got.update({"I": lay["I"][0, 0, 0], "a": lay["a"][0, 0, 0], "NPP": npp[6, 0, 0]})
    assert lay["Topt"][0, 0, 0] == 24.5
    for k, v in EXPECTED.items():
        assert got[k] == pytest.approx(v, rel=1e-6), k
    fast = npp_monthly(nd, t, p, s, 0.692, 0.023, 0.747, sr_min=1.05, sr_max=6.91, engine="numba")
    assert fast[6, 0, 0] == pytest.approx(EXPECTED["NPP"], rel=1e-6)


def test_worked_pixel_with_class_parameters():
    lc = np.array([[1]])
    prm = casa.class_parameters(lc, {1: "forest"}, {"forest": "deciduous_broadleaf"}, eps_max_table=EPS_MAX_DEFAULT)
    nd, t, p, s = _worked_inputs()
    npp = npp_monthly(nd, t, p, s, prm["eps_max"], prm["ndvi_min"], prm["ndvi_max"],
                      sr_min=prm["sr_min"], sr_max=prm["sr_max"])
    assert npp[6, 0, 0] == pytest.approx(143.529, rel=1e-6)
    # deriving SRmax from NDVImax (no sr_* given) changes FPAR_SR slightly, as the spec notes
    npp2 = npp_monthly(nd, t, p, s, prm["eps_max"], prm["ndvi_min"], prm["ndvi_max"])
    assert npp2[6, 0, 0] != pytest.approx(143.529, rel=1e-6)
    assert npp2[6, 0, 0] == pytest.approx(143.529, rel=2e-3)


# --- constants ------------------------------------------------------------------------------------

def test_teps1_constants():
    assert casa.teps1(20.0) == pytest.approx(1.0, abs=1e-15)
    assert casa.teps1(0.0) == pytest.approx(0.8, abs=1e-15)
    assert casa.teps1(40.0) == pytest.approx(0.8, abs=1e-15)


@pytest.mark.parametrize("topt", [-5.0, 0.0, 12.3, 24.5, 35.0])
def test_teps2_at_topt_and_halving(topt):
    assert casa.teps2(topt, topt) == pytest.approx(0.991224, rel=1e-6)
    half = 0.495612
    assert casa.teps2(topt + 10.01, topt) == pytest.approx(half, rel=1e-5)
    assert casa.teps2(topt - 13.01, topt) == pytest.approx(half, rel=1e-5)
    # boundaries are not halved (strict inequalities); the raw formula applies there
    raw = lambda t: 1.1814 / ((1 + math.exp(0.2 * (topt - 10 - t))) * (1 + math.exp(0.3 * (-topt - 10 + t))))  # noqa: E731
    assert casa.teps2(topt + 10.0, topt) == pytest.approx(raw(topt + 10.0), rel=1e-12)
    assert casa.teps2(topt - 13.0, topt) == pytest.approx(raw(topt - 13.0), rel=1e-12)
    assert casa.teps2(topt + 15.0, topt, halving=False) == pytest.approx(raw(topt + 15.0), rel=1e-12)
    assert casa.teps2(topt, topt, coef=1.0) == pytest.approx(0.991224 / 1.1814, rel=1e-6)


def test_thornthwaite_ep0_is_16_where_10t_equals_i():
    i = np.array([5.0, 30.0, 57.7, 120.0])
    t = i / 10.0
    np.testing.assert_allclose(casa.thornthwaite_ep0(t, i), 16.0, rtol=1e-14)
    assert casa.thornthwaite_ep0(0.0, 30.0) == 0.0
    assert casa.thornthwaite_ep0(-4.0, 30.0) == 0.0
    assert casa.thornthwaite_ep0(3.0, 0.0) == 0.0


def test_heat_index_uses_whole_year_positive_months():
    t = np.array(T_YEAR)
    expected = sum((x / 5) ** 1.514 for x in T_YEAR if x > 0)
    assert casa.heat_index(t) == pytest.approx(expected, rel=1e-14)
    assert casa.heat_index(t) == pytest.approx(57.7017, rel=1e-6)
    t2 = t.copy()
    t2[3] = np.nan
    assert np.isnan(casa.heat_index(t2))


def test_eet_constants():
    for x in (1.0, 37.5, 130.0):
        assert casa.eet(x, x) == pytest.approx(0.75 * x, rel=1e-14)
    assert casa.eet(0.0, 50.0) == 0.0 and casa.eet(50.0, 0.0) == 0.0
    # Rn has no NaN at P = 0
    assert casa.net_radiation(0.0, 100.0) == pytest.approx(59.8, rel=1e-14)


def _one_pixel(t_year, p_year, nd_year=None, s=500.0, years=1):
    t = np.tile(np.asarray(t_year, float), years)[:, None, None]
    p = np.tile(np.asarray(p_year, float), years)[:, None, None]
    nd = np.full_like(t, 0.5) if nd_year is None else np.tile(np.asarray(nd_year, float), years)[:, None, None]
    return nd, t, p, np.full_like(t, s)


@pytest.mark.parametrize("engine", ENGINES)
def test_weps_is_half_without_rain(engine):
    nd, t, p, s = _one_pixel(T_YEAR, [0.0] * 12)
    npp = npp_monthly(nd, t, p, s, 0.5, 0.023, 0.747, engine=engine)
    _, lay = npp_monthly(nd, t, p, s, 0.5, 0.023, 0.747, return_layers=True)
    np.testing.assert_array_equal(lay["Weps"][:, 0, 0], 0.5)
    np.testing.assert_allclose(npp, lay["APAR"] * 0.5 * lay["Teps1"] * lay["Teps2"] * 0.5, rtol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("conv,expect", [("0.5", 0.5), ("1", 1.0), ("0", 0.0), ("nan", np.nan), ("previous", None)])
def test_pet_zero_conventions(engine, conv, expect):
    # months 0, 1 (T <= 0) and 11 are frozen: PET = 0
    t_year = [-3.0, 0.0, 6.5, 13.5, 19.5, 23.5, 24.5, 23.0, 18.5, 12.5, 5.0, -1.0]
    nd, t, p, s = _one_pixel(t_year, [20.0] * 12, years=2)
    npp, lay = npp_monthly(nd, t, p, s, 0.5, 0.023, 0.747, pet_zero=conv, return_layers=True)
    fast = npp_monthly(nd, t, p, s, 0.5, 0.023, 0.747, pet_zero=conv, engine=engine)
    np.testing.assert_allclose(fast, npp, rtol=1e-13, equal_nan=True)
    w = lay["Weps"][:, 0, 0]
    assert np.all(lay["PET"][[0, 1, 11, 12, 13, 23], 0, 0] == 0)
    assert np.all(lay["PET"][[2, 3, 10], 0, 0] > 0)
    if expect is None:  # previous: first January has no predecessor -> 0.5; later carries
        assert w[0] == 0.5 and w[1] == 0.5
        assert w[11] == w[10] and w[12] == w[10] and w[13] == w[10] and w[23] == w[22]
        assert w[10] != 0.5
    elif np.isnan(expect):
        assert np.all(np.isnan(w[[0, 1, 11, 12, 13, 23]])) and np.all(np.isnan(npp[[0, 1, 11], 0, 0]))
        assert np.all(np.isfinite(npp[2:11, 0, 0]))
    else:
        np.testing.assert_array_equal(w[[0, 1, 11, 12, 13, 23]], expect)
    for k in (2, 3, 10):  # unfrozen months unaffected by the convention
        assert 0.5 <= w[k] <= 1.0


@pytest.mark.parametrize("engine", ENGINES)
def test_cold_limit_uses_month_temperature_not_topt(engine):
    # NDVI peaks in a -12 °C month, so Topt = -12 (≤ -10) but other months are warm
    t_year = [-12.0, -10.0, -9.9, 5.0, 15.0, 20.0, 22.0, 21.0, 14.0, 6.0, -2.0, -11.0]
    nd_year = [0.8] + [0.4] * 11
    nd, t, p, s = _one_pixel(t_year, [40.0] * 12, nd_year)
    npp, lay = npp_monthly(nd, t, p, s, 0.5, 0.023, 0.747, return_layers=True)
    fast = npp_monthly(nd, t, p, s, 0.5, 0.023, 0.747, engine=engine)
    np.testing.assert_allclose(fast, npp, rtol=1e-13)
    assert lay["Topt"][0, 0, 0] == -12.0
    te1 = lay["Teps1"][:, 0, 0]
    assert te1[0] == 0 and te1[1] == 0 and te1[11] == 0          # T ≤ -10 in that month
    base = 0.8 + 0.02 * -12 - 0.0005 * 144
    np.testing.assert_allclose(te1[[2, 3, 4, 5, 10]], base, rtol=1e-14)
    assert np.all(npp[[2, 3, 4, 5, 10], 0, 0] > 0)
    assert np.all(npp[[0, 1, 11], 0, 0] == 0)
    # cold_limit=None disables the rule
    _, lay2 = npp_monthly(nd, t, p, s, 0.5, 0.023, 0.747, cold_limit=None, return_layers=True)
    np.testing.assert_allclose(lay2["Teps1"][:, 0, 0], base, rtol=1e-14)


@pytest.mark.parametrize("engine", ENGINES)
def test_ndvi_peak_tie_takes_first_month(engine):
    nd_year = [0.2, 0.3, 0.4, 0.5, 0.7, 0.6, 0.7, 0.5, 0.4, 0.3, 0.2, 0.1]
    nd, t, p, s = _one_pixel(T_YEAR, [60.0] * 12, nd_year)
    npp, lay = npp_monthly(nd, t, p, s, 0.5, 0.023, 0.747, return_layers=True)
    assert lay["Topt"][0, 0, 0] == T_YEAR[4]
    fast = npp_monthly(nd, t, p, s, 0.5, 0.023, 0.747, engine=engine)
    np.testing.assert_allclose(fast, npp, rtol=1e-13)
    # Topt from May (19.5): July (24.5) differs from its own optimum, so Tε2 < 0.991224 there
    assert lay["Teps2"][6, 0, 0] < 0.991224 - 1e-3
    assert lay["Teps2"][4, 0, 0] == pytest.approx(0.991224, rel=1e-6)


def test_halving_switch_in_model():
    t_year = [-20.0, -15.0, 0.0, 10.0, 20.0, 25.0, 30.0, 28.0, 20.0, 10.0, 0.0, -15.0]
    nd_year = [0.1] * 6 + [0.8] + [0.1] * 5  # Topt = 30
    nd, t, p, s = _one_pixel(t_year, [50.0] * 12, nd_year)
    _, on = npp_monthly(nd, t, p, s, 0.5, 0.023, 0.747, return_layers=True)
    _, off = npp_monthly(nd, t, p, s, 0.5, 0.023, 0.747, halving=False, return_layers=True)
    cold = np.array(t_year) < 30 - 13
    np.testing.assert_allclose(on["Teps2"][cold, 0, 0], 0.495612, rtol=1e-5)
    assert not np.allclose(off["Teps2"][cold, 0, 0], 0.495612, rtol=1e-3)
    np.testing.assert_array_equal(on["Teps2"][~cold, 0, 0], off["Teps2"][~cold, 0, 0])


# --- brute-force scalar reference written from the spec ----------------------------------------

def _reference_pixel(nd, t, p, s, eps, nmin, nmax, smin, smax, halving=True, coef=1.1814, alpha=0.5,
                     wclip=(0.5, 1.0), pet_zero="0.5", cold=-10.0):
    out = []
    prev = 0.5
    for y in range(len(t) // 12):
        ts = t[12 * y: 12 * y + 12]
        ns = nd[12 * y: 12 * y + 12]
        if any(math.isnan(x) for x in ts):
            hi = math.nan
        else:
            hi = sum((x / 5.0) ** 1.514 for x in ts if x > 0)
        a = 6.75e-7 * hi ** 3 - 7.71e-5 * hi ** 2 + 1.792e-2 * hi + 0.49239
        best, topt = -math.inf, math.nan
        for k in range(12):
            if not math.isnan(ns[k]) and ns[k] > best:
                best, topt = ns[k], ts[k]
        for k in range(12):
            m = 12 * y + k
            T, P, S, N = t[m], p[m], s[m], nd[m]
            if any(math.isnan(v) for v in (T, P, hi)):  # water balance undefined
                out.append(math.nan)
                continue
            ep0 = 16.0 * (10.0 * T / hi) ** a if (T > 0 and hi > 0) else 0.0
            rn = 0.369 * math.sqrt(ep0 * P) + 0.598 * ep0
            e = 0.0 if P * rn == 0 else P * rn * (P * P + rn * rn + P * rn) / ((P + rn) * (P * P + rn * rn))
            pet = (e + ep0) / 2.0
            if pet == 0:
                w = {"0.5": 0.5, "1": 1.0, "0": 0.0, "nan": math.nan, "previous": prev}[pet_zero]
            else:
                w = min(max(0.5 + 0.5 * e / pet, wclip[0]), wclip[1])
            if not math.isnan(w):
                prev = w
            if any(math.isnan(v) for v in (S, N, eps, topt)):
                out.append(math.nan)
                continue
            n = min(max(N, nmin), nmax)
            sr = (1 + n) / (1 - n)
            fn = (n - nmin) / (nmax - nmin) * (0.95 - 0.001) + 0.001
            fs = (sr - smin) / (smax - smin) * (0.95 - 0.001) + 0.001
            f = min(max(alpha * fn + (1 - alpha) * fs, 0.001), 0.95)
            te1 = 0.0 if T <= cold else max(0.8 + 0.02 * topt - 0.0005 * topt ** 2, 0.0)
            if halving and (T > topt + 10 or T < topt - 13):
                te2 = 0.5 * coef / ((1 + math.exp(-2)) * (1 + math.exp(-3)))
            else:
                te2 = coef / ((1 + math.exp(0.2 * (topt - 10 - T))) * (1 + math.exp(0.3 * (-topt - 10 + T))))
            out.append(S * f * 0.5 * eps * te1 * te2 * w)
    return np.array(out)


def _random_inputs(rng, months=24, rows=7, cols=5, nan=True):
    shape = (months, rows, cols)
    t = rng.uniform(-25, 35, shape)
    nd = rng.uniform(-0.2, 0.95, shape)
    p = rng.uniform(0, 250, shape)
    p[rng.random(shape) < 0.1] = 0.0
    s = rng.uniform(50, 800, shape)
    eps = rng.uniform(0.3, 1.0, (rows, cols))
    nmin = rng.uniform(0.0, 0.1, (rows, cols))
    nmax = rng.uniform(0.6, 0.8, (rows, cols))
    if nan:
        nd[3, 1, 1] = np.nan
        t[14, 2, 2] = np.nan
        p[5, 3, 3] = np.nan
        s[6, 4, 4] = np.nan
        nd[:12, 5, 0] = np.nan  # a whole year without NDVI
        eps[6, 4] = nmin[6, 4] = nmax[6, 4] = np.nan
    return nd, t, p, s, eps, nmin, nmax


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("opts", [
    {},
    {"pet_zero": "previous", "halving": False},
    {"pet_zero": "nan", "teps2_coef": 1.0, "fpar_alpha": 0.3, "w_clip": (0.6, 0.9), "cold_limit": -5.0},
])
def test_matches_scalar_reference(engine, opts):
    rng = np.random.default_rng(7)
    nd, t, p, s, eps, nmin, nmax = _random_inputs(rng)
    got = npp_monthly(nd, t, p, s, eps, nmin, nmax, engine=engine, **opts)
    ref_opts = {"halving": opts.get("halving", True), "coef": opts.get("teps2_coef", 1.1814),
                "alpha": opts.get("fpar_alpha", 0.5), "wclip": opts.get("w_clip", (0.5, 1.0)),
                "pet_zero": opts.get("pet_zero", "0.5"), "cold": opts.get("cold_limit", -10.0)}
    for r in range(nd.shape[1]):
        for c in range(nd.shape[2]):
            smin = (1 + nmin[r, c]) / (1 - nmin[r, c])
            smax = (1 + nmax[r, c]) / (1 - nmax[r, c])
            ref = _reference_pixel(nd[:, r, c], t[:, r, c], p[:, r, c], s[:, r, c], eps[r, c], nmin[r, c],
                                   nmax[r, c], smin, smax, **ref_opts)
            np.testing.assert_allclose(got[:, r, c], ref, rtol=1e-12, atol=1e-12, equal_nan=True,
                                       err_msg=f"pixel {r},{c}")
    if opts.get("pet_zero") == "nan":
        frozen = t <= 0
        assert np.isnan(got[frozen]).all()
        return
    # NaN exactly where undefined, not spread
    assert np.isnan(got[3, 1, 1]) and np.isfinite(got[[2, 4], 1, 1]).all()
    assert np.isnan(got[12:24, 2, 2]).all() and np.isfinite(got[:12, 2, 2]).all()
    assert np.isnan(got[:12, 5, 0]).all() and np.isfinite(got[12:, 5, 0]).all()
    assert np.isnan(got[:, 6, 4]).all()


# --- invariants -----------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_invariants(engine):
    rng = np.random.default_rng(3)
    nd, t, p, s, eps, nmin, nmax = _random_inputs(rng, months=36, rows=9, cols=8, nan=False)
    npp = npp_monthly(nd, t, p, s, eps, nmin, nmax, engine=engine)
    assert npp.dtype == np.float64 and npp.shape == nd.shape
    assert np.all(npp >= 0)
    # linear in SOL and εmax
    np.testing.assert_allclose(npp_monthly(nd, t, p, 2.5 * s, eps, nmin, nmax, engine=engine), 2.5 * npp, rtol=1e-13)
    np.testing.assert_allclose(npp_monthly(nd, t, p, s, 0.3 * eps, nmin, nmax, engine=engine), 0.3 * npp, rtol=1e-13)
    # row-chunked == whole
    parts = [npp_monthly(nd[:, a:b], t[:, a:b], p[:, a:b], s[:, a:b], eps[a:b], nmin[a:b], nmax[a:b], engine=engine)
             for a, b in ((0, 1), (1, 4), (4, 9))]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), npp)
    for threads in (1, 3):
        np.testing.assert_array_equal(npp_monthly(nd, t, p, s, eps, nmin, nmax, engine=engine, threads=threads), npp)
    # annual = Σ monthly
    ann, nval = casa.annual(npp)
    np.testing.assert_allclose(ann, npp.reshape(3, 12, 9, 8).sum(axis=1), rtol=1e-14)
    assert np.all(nval == 12)


def test_float32_inputs_equal_float64_of_same_values():
    rng = np.random.default_rng(5)
    nd, t, p, s, eps, nmin, nmax = _random_inputs(rng, nan=True)
    f32 = [a.astype(np.float32) for a in (nd, t, p, s)]
    f64 = [a.astype(np.float64) for a in f32]
    for engine in ENGINES:
        a = npp_monthly(*f32, eps, nmin, nmax, engine=engine)
        b = npp_monthly(*f64, eps, nmin, nmax, engine=engine)
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-13, equal_nan=True)
    # mixed dtypes too
    c = npp_monthly(f32[0], f64[1], f32[2], f64[3], eps, nmin, nmax)
    np.testing.assert_allclose(c, b, rtol=1e-13, equal_nan=True)


def test_engines_agree_and_layers_consistent():
    rng = np.random.default_rng(11)
    nd, t, p, s, eps, nmin, nmax = _random_inputs(rng)
    fast = npp_monthly(nd, t, p, s, eps, nmin, nmax, engine="numba")
    npp, lay = npp_monthly(nd, t, p, s, eps, nmin, nmax, return_layers=True)
    np.testing.assert_allclose(fast, npp, rtol=1e-13, atol=1e-13, equal_nan=True)
    np.testing.assert_allclose(npp, lay["APAR"] * lay["eps"], rtol=1e-14, equal_nan=True)
    np.testing.assert_allclose(lay["eps"], eps * lay["Teps1"] * lay["Teps2"] * lay["Weps"], rtol=1e-14, equal_nan=True)
    np.testing.assert_allclose(lay["PET"], (lay["EET"] + lay["Ep0"]) / 2, rtol=1e-14, equal_nan=True)
    assert np.nanmin(lay["FPAR"]) >= 0.001 and np.nanmax(lay["FPAR"]) <= 0.95


# --- input checks ---------------------------------------------------------------------------------

def test_input_errors():
    nd, t, p, s = _one_pixel(T_YEAR, [50.0] * 12)
    with pytest.raises(CasaError, match="multiple of 12"):
        npp_monthly(nd[:10], t[:10], p[:10], s[:10], 0.5, 0.02, 0.7)
    with pytest.raises(CasaError, match="differ in shape"):
        npp_monthly(nd, t, p[:, :, :0], s, 0.5, 0.02, 0.7)
    with pytest.raises(CasaError, match="not January"):
        npp_monthly(nd, t, p, s, 0.5, 0.02, 0.7, months=[f"2010-{m:02d}" for m in range(3, 13)] + ["2011-01", "2011-02"])
    with pytest.raises(CasaError, match="not consecutive"):
        npp_monthly(nd, t, p, s, 0.5, 0.02, 0.7, months=[f"2010-{m:02d}" for m in range(1, 12)] + ["2011-12"])
    npp_monthly(nd, t, p, s, 0.5, 0.02, 0.7, months=[f"2010-{m:02d}" for m in range(1, 13)])
    over = nd.copy()
    over[6] = 1.02  # a fusion overshoot is clipped to NDVImax like 0.75 would be
    np.testing.assert_array_equal(npp_monthly(over, t, p, s, 0.5, 0.02, 0.7),
                                  npp_monthly(np.where(over > 0.7, 0.75, over), t, p, s, 0.5, 0.02, 0.7))
    with pytest.raises(CasaError, match="scale = 0.0001"):
        npp_monthly(nd * 10000, t, p, s, 0.5, 0.02, 0.7)
    with pytest.raises(CasaError, match="precipitation.*negative"):
        npp_monthly(nd, t, p - 100, s, 0.5, 0.02, 0.7)
    np.testing.assert_array_equal(npp_monthly(nd, t, p, s, 0.5, 0.02, 0.7, pet_zero=1.0),
                                  npp_monthly(nd, t, p, s, 0.5, 0.02, 0.7, pet_zero="1"))
    with pytest.raises(CasaError, match="pet_zero"):
        npp_monthly(nd, t, p, s, 0.5, 0.02, 0.7, pet_zero="zero")
    with pytest.raises(CasaError, match="eps_max: shape"):
        npp_monthly(nd, t, p, s, np.ones((2, 2)), 0.02, 0.7)
    with pytest.raises(CasaError, match="NDVImin < NDVImax"):
        npp_monthly(nd, t, p, s, 0.5, 0.7, 0.02)
    with pytest.raises(CasaError, match=r"\(months, rows, cols\)"):
        npp_monthly(nd[:, 0], t[:, 0], p[:, 0], s[:, 0], 0.5, 0.02, 0.7)


# --- class parameters -----------------------------------------------------------------------------

CLASSES = {1: "forest", 2: "grassland", 3: "farmland", 4: "construction", 5: "water"}
TYPES = {"forest": "deciduous_broadleaf", "grassland": "grassland", "farmland": "cropland",
         "construction": "other", "water": "none"}


def test_class_parameters_zhu_table():
    lc = np.array([[1, 2, 3], [4, 5, -1], [9, 1, 2]])
    prm = casa.class_parameters(lc, CLASSES, TYPES, eps_max_table=EPS_MAX_DEFAULT)
    assert prm["eps_max"][0, 0] == 0.692 and prm["ndvi_max"][0, 0] == 0.747 and prm["sr_max"][0, 0] == 6.91
    assert prm["eps_max"][0, 1] == 0.542 and prm["ndvi_max"][0, 1] == 0.634 and prm["sr_max"][0, 1] == 4.46
    assert prm["ndvi_min"][0, 2] == 0.023 and prm["sr_min"][1, 0] == 1.05
    for k in ("eps_max", "ndvi_min", "ndvi_max", "sr_min", "sr_max"):
        assert np.isnan(prm[k][1, 1]) and np.isnan(prm[k][1, 2]) and np.isnan(prm[k][2, 0]), k
    rows = {r["class"]: r for r in prm["table"]}
    assert rows["water"]["eps_max"] is None and rows["forest"]["pixels"] == 2
    # float landcover with NaN nodata
    lcf = lc.astype(float)
    lcf[1, 2] = np.nan
    prm2 = casa.class_parameters(lcf, {"1": "forest", "5": "water"}, TYPES, eps_max_table=EPS_MAX_DEFAULT)
    assert prm2["eps_max"][2, 1] == 0.692 and np.isnan(prm2["eps_max"][1, 2]) and np.isnan(prm2["eps_max"][0, 1])


def test_class_parameters_percentile_pooled_over_months():
    lc = np.array([[1, 1], [1, 1]])
    # 4 pixels × 25 months = 100 values k/99·0.9; each month holds a narrow band of them
    vals = (np.arange(100) / 99 * 0.9).reshape(25, 2, 2)
    prm = casa.class_parameters(lc, {1: "forest"}, {"forest": "mixed_forest"}, eps_max_table=EPS_MAX_DEFAULT,
                                ndvi_range="percentile", ndvi=vals)
    assert prm["ndvi_min"][0, 0] == pytest.approx(0.045, abs=1e-12)
    assert prm["ndvi_max"][0, 0] == pytest.approx(0.855, abs=1e-12)
    assert prm["sr_max"][0, 0] == pytest.approx(1.855 / 0.145, rel=1e-12)
    assert prm["eps_max"][0, 0] == 0.475
    assert "pooled over all months" in prm["table"][0]["source"]
    # a class absent from the grid is skipped; a present class without valid NDVI is an error
    prm = casa.class_parameters(lc, {1: "forest", 2: "shrubs"}, {"forest": "mixed_forest", "shrubs": "shrub"},
                                eps_max_table=EPS_MAX_DEFAULT, ndvi_range="percentile", ndvi=vals)
    assert prm["table"][1]["eps_max"] is None and "no pixels" in prm["table"][1]["source"]
    with pytest.raises(CasaError, match="no valid NDVI"):
        casa.class_parameters(lc, {1: "forest"}, {"forest": "mixed_forest"}, eps_max_table=EPS_MAX_DEFAULT,
                              ndvi_range="percentile", ndvi=np.full_like(vals, np.nan))


def test_class_parameters_overrides_and_errors():
    lc = np.array([[1, 2, 5]])
    prm = casa.class_parameters(lc, CLASSES, TYPES, eps_max_table=EPS_MAX_DEFAULT,
                                overrides={"forest": {"eps_max": 1.2, "ndvi_max": 0.8}})
    assert prm["eps_max"][0, 0] == 1.2 and prm["ndvi_max"][0, 0] == 0.8
    assert prm["sr_max"][0, 0] == pytest.approx(9.0)  # derived from the overridden NDVImax
    assert prm["eps_max"][0, 1] == 0.542
    with pytest.raises(CasaError, match="evergreen_needleleaf.*none"):
        casa.class_parameters(lc, CLASSES, {**TYPES, "forest": "broadleaf"}, eps_max_table=EPS_MAX_DEFAULT)
    with pytest.raises(CasaError, match="no CASA type"):
        casa.class_parameters(lc, CLASSES, {k: v for k, v in TYPES.items() if k != "water"},
                              eps_max_table=EPS_MAX_DEFAULT)
    with pytest.raises(CasaError, match="not vegetated"):
        casa.class_parameters(lc, CLASSES, TYPES, eps_max_table=EPS_MAX_DEFAULT, overrides={"water": {"eps_max": 0.4}})
    with pytest.raises(CasaError, match="unknown class"):
        casa.class_parameters(lc, CLASSES, TYPES, eps_max_table=EPS_MAX_DEFAULT, overrides={"wood": {"eps_max": 0.4}})
    with pytest.raises(CasaError, match="no εmax"):
        casa.class_parameters(lc, CLASSES, TYPES, eps_max_table={"grassland": 0.5})
    with pytest.raises(CasaError, match="needs the monthly NDVI"):
        casa.class_parameters(lc, CLASSES, TYPES, eps_max_table=EPS_MAX_DEFAULT, ndvi_range="percentile")


# --- statistics helpers ---------------------------------------------------------------------------

def test_annual_valid_months():
    m = np.ones((24, 1, 2))
    m[3, 0, 0] = np.nan
    ann, nval = casa.annual(m)
    assert np.isnan(ann[0, 0, 0]) and ann[1, 0, 0] == 12 and ann[0, 0, 1] == 12
    assert nval[0, 0, 0] == 11 and nval[1, 0, 0] == 12
    ann2, _ = casa.annual(m, min_valid=10)
    assert ann2[0, 0, 0] == 11
    with pytest.raises(CasaError, match="multiple of 12"):
        casa.annual(m[:13])


def test_summary_stats_by_class_reproduces_mean():
    x = np.array([[100.0, 200.0, 300.0], [400.0, np.nan, 600.0]])
    lc = np.array([[1, 1, 2], [2, 2, 3]])
    st = casa.summary_stats(x, lc, {1: "a", 2: "b", 3: "c", 4: "d"})
    assert st["mean"] == pytest.approx(320.0)
    sd = math.sqrt(sum((v - 320) ** 2 for v in (100, 200, 300, 400, 600)) / 4)
    assert st["sd"] == pytest.approx(sd) and st["cv"] == pytest.approx(sd / 320 * 100)
    assert st["min"] == 100 and st["max"] == 600 and st["n"] == 5
    assert st["by_class"] == {"a": 150.0, "b": 350.0, "c": 600.0, "d": None}
    w = sum(st["by_class"][k] * st["count_by_class"][k] for k in "abc") / st["n"]
    assert w == pytest.approx(st["mean"])


def test_validate_plots_footprint():
    x = np.arange(100, dtype=float).reshape(10, 10)
    tr = Affine(30.0, 0, 500000.0, 0, -30.0, 4000000.0)
    x0, y0 = 500000.0 + 4.5 * 30, 4000000.0 - 3.5 * 30  # centre of row 3, col 4
    res = casa.validate_plots(x, tr, [
        {"id": "p1", "x": x0 + 5, "y": y0 - 5, "measured": 248.96},                  # one pixel
        {"id": "p2", "x": x0, "y": y0, "measured_npp": 275.15, "radius_m": 31.0},   # centre + 4 neighbours
        {"id": "out", "x": 0.0, "y": 0.0, "measured": 1.0},
    ])
    assert res[0] == {"id": "p1", "measured": 248.96, "simulated": 34.0, "n_pixels": 1}
    assert res[1]["simulated"] == pytest.approx((34 + 33 + 35 + 24 + 44) / 5) and res[1]["n_pixels"] == 5
    assert res[2]["simulated"] is None and res[2]["n_pixels"] == 0


def test_compare_reference():
    s = np.array([[1.0, 2.0], [3.0, np.nan]])
    r = np.array([[10.0, np.nan], [30.0, 40.0]])
    lc = np.array([[1, 1], [2, 2]])
    out = casa.compare_reference(s, r, lc, {1: "a", 2: "b"})
    assert out == {"a": {"simulated": 1.0, "reference": 10.0, "n": 1}, "b": {"simulated": 3.0, "reference": 30.0, "n": 1}}


def test_annual_eet_matches_reference():
    rng = np.random.default_rng(2)
    t = rng.uniform(-10, 30, (24, 2, 3))
    p = rng.uniform(0, 150, (24, 2, 3))
    got = casa.annual_eet(t, p)
    assert got.shape == (2, 2, 3)
    for y in range(2):
        for r in range(2):
            for c in range(3):
                ts, ps = t[12 * y:12 * y + 12, r, c], p[12 * y:12 * y + 12, r, c]
                hi = sum((v / 5) ** 1.514 for v in ts if v > 0)
                a = 6.75e-7 * hi ** 3 - 7.71e-5 * hi ** 2 + 1.792e-2 * hi + 0.49239
                tot = 0.0
                for T, P in zip(ts, ps):
                    ep0 = 16 * (10 * T / hi) ** a if T > 0 else 0.0
                    rn = 0.369 * math.sqrt(ep0 * P) + 0.598 * ep0
                    tot += 0 if P * rn == 0 else P * rn * (P * P + rn * rn + P * rn) / ((P + rn) * (P * P + rn * rn))
                assert got[y, r, c] == pytest.approx(tot, rel=1e-12)


def test_fpar_range_and_alpha_endpoints():
    n = np.array([0.023, 0.3, 0.747, 0.9, -0.5])
    f, f_n, f_s, sr = casa.fpar(n, 0.023, 0.747, 1.05, 6.91)
    np.testing.assert_allclose(f_n[[0, 2, 3, 4]], [0.001, 0.95, 0.95, 0.001], rtol=1e-14)  # NDVI clipped first
    assert sr[2] == pytest.approx(1.747 / 0.253, rel=1e-14)
    assert f.min() >= 0.001 and f.max() <= 0.95
    f1, fn1, _, _ = casa.fpar(n, 0.023, 0.747, 1.05, 6.91, alpha=1.0, fpar_range=(0.0, 1.0))
    np.testing.assert_allclose(f1, (np.clip(n, 0.023, 0.747) - 0.023) / (0.747 - 0.023), rtol=1e-14)
    nd, t, p, s = _worked_inputs()
    for engine in ENGINES:
        a = npp_monthly(nd, t, p, s, 0.692, 0.023, 0.747, sr_min=1.05, sr_max=6.91, fpar_alpha=0.0,
                        fpar_range=(0.0, 1.0), engine=engine)
        # July: FPAR = FPAR_SR on a 0..1 scale
        fsr = (1.72 / 0.28 - 1.05) / (6.91 - 1.05)
        assert a[6, 0, 0] == pytest.approx(143.529 / 0.870187 * fsr, rel=1e-5)
