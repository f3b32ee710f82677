"""Ordinary kriging: variogram, predictions, LOO, against references written here or PyKrige."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from npp_core import kriging as K
from npp_core.kriging import KrigingError


# ----------------------------------------------------------------- independent references
def gamma_ref(model, h, nugget, psill, a):
    """gstat-convention variogram written out here (γ(0) = 0)."""
    h = np.asarray(h, dtype=float)
    r = h / a
    if model == "spherical":
        f = np.where(r < 1, 1.5 * r - 0.5 * r**3, 1.0)
    elif model == "exponential":
        f = 1 - np.exp(-r)
    else:
        f = 1 - np.exp(-(r**2))
    return np.where(h > 1e-10, nugget + psill * f, 0.0)


def ok_direct(x, y, z, xi, yi, vg):
    """Textbook ordinary kriging: solve [[Γ, 1], [1ᵀ, 0]] [λ; μ] = [γ0; 1] per target."""
    p = (vg["model"], vg["nugget"], vg["psill"], vg["range"])
    xy = np.c_[x, y]
    n = len(x)
    A = np.ones((n + 1, n + 1))
    A[:n, :n] = gamma_ref(p[0], cdist(xy, xy), *p[1:])
    A[n, n] = 0.0
    pred, var = [], []
    for a, b in zip(xi, yi):
        g0 = gamma_ref(p[0], np.hypot(x - a, y - b), *p[1:])
        sol = np.linalg.solve(A, np.r_[g0, 1.0])
        lam, mu = sol[:n], sol[n]
        pred.append(lam @ z)
        var.append(lam @ g0 + mu)
    return np.array(pred), np.array(var)


def wls_ref(model, lags, gamma, npairs, nugget, psill, a):
    w = npairs / lags**2
    return float(np.sum(w * (gamma - gamma_ref(model, lags, nugget, psill, a)) ** 2))


def samples(n=40, seed=1, scale=1000.0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, scale, n)
    y = rng.uniform(0, 0.8 * scale, n)
    z = 10 + np.sin(x / (0.2 * scale)) + np.cos(y / (0.15 * scale)) + rng.normal(0, 0.3, n)
    return x, y, z


def field(n=150, seed=5, a=30.0):
    """Gaussian random field with a spherical covariance (nugget 0.1, psill 1, range a) on 100 × 100."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 100, n), rng.uniform(0, 100, n)
    d = cdist(np.c_[x, y], np.c_[x, y])
    r = d / a
    cov = np.where(r < 1, 1 - 1.5 * r + 0.5 * r**3, 0.0) + 0.1 * (d == 0)
    return x, y, np.linalg.cholesky(cov + 1e-10 * np.eye(n)) @ rng.normal(size=n) + 5


VG = {
    "spherical": {"model": "spherical", "nugget": 0.05, "psill": 1.0, "range": 400.0},
    "exponential": {"model": "exponential", "nugget": 0.1, "psill": 0.9, "range": 150.0},
    "gaussian": {"model": "gaussian", "nugget": 0.08, "psill": 1.1, "range": 200.0},
}


# ----------------------------------------------------------------- variogram
def test_empirical_variogram_matches_pair_loop():
    x, y, z = samples(35, seed=3)
    emp = K.empirical_variogram(x, y, z)
    cutoff = np.hypot(np.ptp(x), np.ptp(y)) / 3
    w = cutoff / 15
    hs, gs, ns = np.zeros(15), np.zeros(15), np.zeros(15, int)
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            h = np.hypot(x[i] - x[j], y[i] - y[j])
            if h <= cutoff:
                k = min(int(h // w), 14)
                hs[k] += h
                gs[k] += 0.5 * (z[i] - z[j]) ** 2
                ns[k] += 1
    ne = ns > 0
    assert emp["cutoff"] == pytest.approx(cutoff) and emp["width"] == pytest.approx(w)
    np.testing.assert_array_equal(emp["npairs"], ns[ne])
    np.testing.assert_allclose(emp["lags"], hs[ne] / ns[ne], rtol=1e-12)
    np.testing.assert_allclose(emp["gamma"], gs[ne] / ns[ne], rtol=1e-12)


@pytest.mark.parametrize("model", K.MODELS)
def test_fit_wls_recovers_exact_model(model):
    lags = np.linspace(4, 90, 15)
    npairs = np.random.default_rng(0).integers(20, 400, 15)
    gamma = gamma_ref(model, lags, 0.2, 1.3, 30.0)
    fit = K.fit_wls(lags, gamma, npairs, model)
    assert fit["nugget"] == pytest.approx(0.2, abs=1e-5)
    assert fit["psill"] == pytest.approx(1.3, rel=1e-5)
    assert fit["range"] == pytest.approx(30.0, rel=1e-5)
    assert fit["wls"] < 1e-12


@pytest.mark.parametrize("model", K.MODELS)
def test_wls_objective_not_beaten_by_perturbations(model):
    x, y, z = field()
    vg = K.fit_variogram(x, y, z, model)
    assert not vg["range_at_bound"]
    lags, gamma, npairs = vg["lags"], vg["gamma"], vg["npairs"]
    best = wls_ref(model, lags, gamma, npairs, vg["nugget"], vg["psill"], vg["range"])
    assert best == pytest.approx(vg["wls"], rel=1e-10)
    rng = np.random.default_rng(2)
    base = np.array([vg["nugget"], vg["psill"], vg["range"]])
    trials = []
    for k in range(3):
        for f in (0.9, 0.99, 1.01, 1.1):
            p = base.copy()
            p[k] = p[k] * f if p[k] > 0 else (f - 0.9) * 0.05 * vg["sill"]
            trials.append(p)
    trials += [base * np.exp(rng.normal(0, 0.05, 3)) for _ in range(30)]
    for p in trials:
        assert best <= wls_ref(model, lags, gamma, npairs, *p) * (1 + 1e-9)


def test_fit_wls_matches_gstat_published_meuse_fit():
    # gstat's printed empirical variogram of log(zinc) (meuse data, default cutoff/width) and its
    # documented fit.variogram(v, vgm(1, "Sph", 900, 1)): nugget 0.0507, psill 0.5906, range 897.
    npairs = np.array([57, 299, 419, 457, 547, 533, 574, 564, 589, 543, 500, 477, 452, 457, 415])
    dist = np.array([79.29244, 163.97367, 267.36483, 372.73542, 478.47670, 585.34058, 693.14526, 796.18365,
                     903.14650, 1011.29177, 1117.86235, 1221.32810, 1329.16407, 1437.25620, 1543.20248])
    gamma = np.array([0.1234479, 0.2162185, 0.3027859, 0.4121448, 0.4634128, 0.5646933, 0.5689683, 0.6186769,
                      0.6471479, 0.6915705, 0.7033984, 0.6038770, 0.6517158, 0.5665318, 0.5748227])
    fit = K.fit_wls(dist, gamma, npairs, "spherical")
    assert fit["nugget"] == pytest.approx(0.0507, abs=5e-4)
    assert fit["psill"] == pytest.approx(0.5906, abs=5e-4)
    assert fit["range"] == pytest.approx(897.0, abs=1.0)


def test_planted_spherical_field_recovers_parameters():
    # 10 realisations of a field with nugget 0.1, psill 1, range 30 at the same 400 points;
    # their averaged empirical variogram is fitted.
    rng = np.random.default_rng(0)
    n = 400
    x, y = rng.uniform(0, 100, n), rng.uniform(0, 100, n)
    d = cdist(np.c_[x, y], np.c_[x, y])
    r = d / 30.0
    cov = np.where(r < 1, 1 - 1.5 * r + 0.5 * r**3, 0.0) + 0.1 * (d == 0)
    zs = np.linalg.cholesky(cov + 1e-10 * np.eye(n)) @ rng.normal(size=(n, 10)) + 5
    emps = [K.empirical_variogram(x, y, zs[:, k]) for k in range(10)]
    gamma = np.mean([e["gamma"] for e in emps], axis=0)
    fit = K.fit_wls(emps[0]["lags"], gamma, emps[0]["npairs"], "spherical")
    assert fit["range"] == pytest.approx(30.0, rel=0.25)
    assert fit["psill"] == pytest.approx(1.0, rel=0.25)
    assert fit["nugget"] == pytest.approx(0.1, abs=0.05)
    # one realisation end-to-end: right order of magnitude
    one = K.fit_variogram(x, y, zs[:, 0], "spherical")
    assert 15 < one["range"] < 60 and 0.5 < one["sill"] < 2.0


def test_pykrige_parameter_convention():
    from pykrige import variogram_models as vm

    h = np.array([1.0, 10.0, 55.0, 150.0, 400.0])
    funcs = {
        "spherical": vm.spherical_variogram_model,
        "exponential": vm.exponential_variogram_model,
        "gaussian": vm.gaussian_variogram_model,
    }
    for model, vg in VG.items():
        pk = K.pykrige_parameters(vg)
        want = gamma_ref(model, h, vg["nugget"], vg["psill"], vg["range"])
        got = funcs[model]([pk["psill"], pk["range"], pk["nugget"]], h)
        np.testing.assert_allclose(got, want, rtol=1e-12)
        np.testing.assert_allclose(K.semivariance(h, vg), want, rtol=1e-12)
    assert K.pykrige_parameters(VG["exponential"])["range"] == pytest.approx(450.0)
    assert K.pykrige_parameters(VG["gaussian"])["range"] == pytest.approx(350.0)


# ----------------------------------------------------------------- prediction
@pytest.mark.parametrize("model", K.MODELS)
def test_krige_matches_direct_solve(model):
    x, y, z = samples(30, seed=7)
    vg = VG[model]
    xi = np.r_[np.linspace(-100, 1100, 9), x[4]]
    yi = np.r_[np.linspace(900, -50, 9), y[4]]
    p, v = K.krige(x, y, z, xi, yi, vg)
    pr, vr = ok_direct(x, y, z, xi, yi, vg)
    np.testing.assert_allclose(p, pr, atol=1e-9)
    np.testing.assert_allclose(v, vr, atol=1e-9)
    assert p[-1] == pytest.approx(z[4], abs=1e-9) and v[-1] == pytest.approx(0.0, abs=1e-9)
    assert np.all(v[:-1] > vg["nugget"])


@pytest.mark.parametrize("model", K.MODELS)
@pytest.mark.parametrize("backend", ["loop", "C"])
def test_fast_grid_matches_pykrige_execute(model, backend):
    from pykrige.ok import OrdinaryKriging

    x, y, z = samples(45, seed=11)
    vg = K.fit_variogram(x, y, z, model)
    gx = np.linspace(-30, 1030, 16)
    gy = np.linspace(830, -30, 13)
    gx[5], gy[3] = x[0], y[0]  # one cell on a sample
    p, v = K.krige_grid(x, y, z, gx, gy, vg)
    ok = OrdinaryKriging(x, y, z, variogram_model=model, variogram_parameters=K.pykrige_parameters(vg))
    pp, vv = ok.execute("grid", gx, gy, backend=backend)
    np.testing.assert_allclose(p, np.asarray(pp), atol=1e-9, rtol=0)
    np.testing.assert_allclose(v, np.asarray(vv), atol=1e-9, rtol=0)
    assert p[3, 5] == pytest.approx(z[0], abs=1e-9)


def test_grid_chunking_mask_and_neighbourhood():
    from pykrige.ok import OrdinaryKriging

    x, y, z = samples(40, seed=13)
    vg = VG["exponential"]
    gx = np.linspace(0, 1000, 21)
    gy = np.linspace(800, 0, 11)
    p, v = K.krige_grid(x, y, z, gx, gy, vg)
    p2, v2 = K.krige_grid(x, y, z, gx, gy, vg, chunk=17)
    np.testing.assert_allclose(p, p2, atol=1e-12, rtol=0)  # BLAS blocking: last-bit differences only
    np.testing.assert_allclose(v, v2, atol=1e-12, rtol=0)
    mask = np.zeros((11, 21), bool)
    mask[2:9, 3:15] = True
    p3, v3 = K.krige_grid(x, y, z, gx, gy, vg, mask=mask, chunk=29)
    assert np.all(np.isnan(p3[~mask])) and np.all(np.isnan(v3[~mask]))
    np.testing.assert_allclose(p3[mask], p[mask], atol=1e-12)
    # moving neighbourhood: PyKrige's own loop, chunked
    pk, vk = K.krige_grid(x, y, z, gx, gy, vg, n_closest=8, chunk=37)
    ok = OrdinaryKriging(x, y, z, variogram_model="exponential", variogram_parameters=K.pykrige_parameters(vg))
    pp, vv = ok.execute("grid", gx, gy, backend="loop", n_closest_points=8)
    np.testing.assert_allclose(pk, pp, atol=1e-9)
    np.testing.assert_allclose(vk, vv, atol=1e-9)
    # and n_closest >= n falls back to the global system
    pa, _ = K.krige_grid(x, y, z, gx, gy, vg, n_closest=40)
    np.testing.assert_allclose(pa, p, atol=1e-12, rtol=0)


# ----------------------------------------------------------------- leave-one-out
@pytest.mark.parametrize("model", K.MODELS)
def test_loo_closed_form_equals_refits(model):
    x, y, z = samples(25, seed=17)
    vg = VG[model]
    cv = K.loo(x, y, z, vg)
    res, var = [], []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        p, v = ok_direct(x[keep], y[keep], z[keep], x[i : i + 1], y[i : i + 1], vg)
        res.append(z[i] - p[0])
        var.append(v[0])
    res, var = np.array(res), np.array(var)
    np.testing.assert_allclose(cv["residuals"], res, atol=1e-9)
    np.testing.assert_allclose(cv["variance"], var, atol=1e-9)
    assert cv["me"] == pytest.approx(res.mean(), abs=1e-9)
    assert cv["rmse"] == pytest.approx(np.sqrt(np.mean(res**2)), abs=1e-9)
    assert cv["msdr"] == pytest.approx(np.mean(res**2 / var), rel=1e-8)
    assert cv["r"] == pytest.approx(np.corrcoef(z, z - res)[0, 1], abs=1e-9)


def test_auto_picks_smallest_loo_rmse():
    x, y, z = samples(60, seed=19)
    vg = K.fit_variogram(x, y, z, "auto")
    rmse = {}
    for m in K.MODELS:
        fit = K.fit_variogram(x, y, z, m)
        rmse[m] = K.loo(x, y, z, fit)["rmse"]
        assert vg["candidates"][m]["loo_rmse"] == pytest.approx(rmse[m], rel=1e-12)
    assert vg["model"] == min(rmse, key=rmse.get)


# ----------------------------------------------------------------- krige_property and inputs
def _grid():
    return np.arange(5.0, 1000.0, 50.0), np.arange(795.0, 0.0, -50.0)


def test_krige_property_report_and_plain_scale():
    x, y, z = samples(50, seed=23)
    gx, gy = _grid()
    pred, var, rep = K.krige_property(x, y, z, gx, gy, model="spherical", name="TN")
    vg = K.fit_variogram(x, y, z, "spherical")
    cv = K.loo(x, y, z, vg)
    p, v = K.krige_grid(x, y, z, gx, gy, vg)
    np.testing.assert_array_equal(pred, p)
    np.testing.assert_array_equal(var, v)
    assert rep["model"] == "spherical" and rep["n"] == 50 and rep["n_dropped_nan"] == 0
    assert rep["loo_rmse"] == pytest.approx(cv["rmse"]) and rep["msdr"] == pytest.approx(cv["msdr"])
    assert rep["nugget_sill_ratio"] == pytest.approx(vg["nugget"] / (vg["nugget"] + vg["psill"]))
    assert rep["back_transform"] == "none"
    for key in ("nugget", "psill", "range", "loo_me", "loo_r"):
        assert np.isfinite(rep[key])
    json.dumps(rep)  # summary.json-ready


def test_krige_property_log_back_transform():
    x, y, z = samples(50, seed=29)
    z = np.exp(z / 4)
    gx, gy = _grid()
    gx = gx.copy()
    gx[0], gy[0] = x[3], y[3]
    pred, var, rep = K.krige_property(x, y, z, gx, gy, model="exponential", log=True, name="AK")
    assert "exp(y + s2/2)" in rep["back_transform"]
    assert pred[0, 0] == pytest.approx(z[3], rel=1e-9)  # exact at a sample (σ² = 0)
    vg = K.fit_variogram(x, y, np.log(z), "exponential")
    pl, vl = K.krige_grid(x, y, np.log(z), gx, gy, vg)
    np.testing.assert_allclose(pred, np.exp(pl + vl / 2), rtol=1e-12)
    np.testing.assert_allclose(var, np.exp(pl + vl / 2) ** 2 * (np.exp(vl) - 1), rtol=1e-10, atol=1e-14)
    cv = K.loo(x, y, np.log(z), vg)
    back = np.exp(cv["prediction"] + cv["variance"] / 2)
    assert rep["loo_rmse"] == pytest.approx(np.sqrt(np.mean((z - back) ** 2)), rel=1e-12)
    assert rep["msdr"] == pytest.approx(cv["msdr"], rel=1e-12)
    with pytest.raises(KrigingError, match="log transform needs positive values"):
        K.krige_property(x, y, np.r_[z[:-1], 0.0], gx, gy, log=True, name="AK")


def test_too_few_samples():
    x, y, z = samples(12, seed=31)
    z[:4] = np.nan
    with pytest.raises(KrigingError, match=r"only 8 usable soil samples .*4 with NaN.*at least 10"):
        K.prepare_samples(x, y, z, name="SOC")
    with pytest.raises(KrigingError, match="at least 10"):
        K.fit_variogram(x[4:], y[4:], z[4:], "spherical")
    with pytest.raises(KrigingError, match="4 samples have NaN.*prepare_samples"):
        K.loo(x, y, z, VG["spherical"])


def test_nan_dropped_and_duplicates_averaged():
    x, y, z = samples(30, seed=37)
    x = np.r_[x, x[2], x[2]]
    y = np.r_[y, y[2], y[2]]
    z = np.r_[z, 7.0, 9.0]
    z[5] = np.nan
    with pytest.warns(UserWarning) as rec:
        xc, yc, zc, info = K.prepare_samples(x, y, z, name="SOC")
    msgs = " ".join(str(r.message) for r in rec)
    assert "1 samples with missing" in msgs and "3 samples share 1 locations" in msgs
    assert info["n_dropped_nan"] == 1 and info["n_duplicates"] == 2
    assert xc.size == 29
    k = np.flatnonzero((xc == x[2]) & (yc == y[2]))
    assert k.size == 1 and zc[k[0]] == pytest.approx((z[2] + 7.0 + 9.0) / 3)
    with pytest.raises(KrigingError, match="share 1 locations.*prepare_samples"):
        K.loo(x[[i for i in range(32) if i != 5]], y[[i for i in range(32) if i != 5]],
              z[[i for i in range(32) if i != 5]], VG["spherical"])


def test_outside_grid_warning_and_degree_detection():
    x, y, z = samples(20, seed=41)
    gx, gy = _grid()
    x2 = x.copy()
    x2[:3] += 5000
    with pytest.warns(UserWarning, match="3 of 20 soil samples lie outside"):
        _, _, _, info = K.prepare_samples(x2, y, z, grid_x=gx, grid_y=gy)
    assert info["n_outside"] == 3
    # projected grid (UTM-like) vs lon/lat samples
    ux = 500000.0 + np.arange(0, 3000.0, 30.0)
    uy = 4000000.0 - np.arange(0, 3000.0, 30.0)
    lon = 111.0 + x / 1e5
    lat = 36.0 + y / 1e5
    with pytest.raises(KrigingError, match=r'look like degrees.*\[soil\] crs = "EPSG:4326"'):
        K.prepare_samples(lon, lat, z, grid_x=ux, grid_y=uy)
    with pytest.raises(KrigingError, match="none of the 20 soil samples lies inside"):
        K.prepare_samples(x + 1e5, y, z, grid_x=gx, grid_y=gy)


def test_bad_variogram_and_constant_values():
    x, y, z = samples(15, seed=43)
    with pytest.raises(KrigingError, match="not supported"):
        K.fit_variogram(x, y, z, "matern")
    with pytest.raises(KrigingError, match="nugget >= 0"):
        K.krige(x, y, z, x, y, {"model": "spherical", "nugget": -1, "psill": 1, "range": 10})
    xs, ys = np.meshgrid(np.arange(4.0), np.arange(4.0))
    with pytest.raises(KrigingError, match="numerically singular"):
        smooth = {"model": "gaussian", "nugget": 0.0, "psill": 1.0, "range": 50.0}
        K.loo(xs.ravel(), ys.ravel(), np.arange(16.0), smooth)
    with pytest.raises(KrigingError, match="all 15 sample values are equal"):
        K.fit_variogram(x, y, np.ones(15), "spherical")


def test_reproject_samples_roundtrip():
    lon, lat = np.array([111.0, 111.5]), np.array([36.0, 36.2])
    ex, ey = K.reproject_samples(lon, lat, "EPSG:4326", "EPSG:32649")
    assert np.all(ex > 100000) and np.all(ey > 3.9e6)
    bx, by = K.reproject_samples(ex, ey, "EPSG:32649", "EPSG:4326")
    np.testing.assert_allclose(bx, lon, atol=1e-9)
    np.testing.assert_allclose(by, lat, atol=1e-9)
