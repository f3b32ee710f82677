"""Ordinary kriging of soil samples: variogram fit, prediction, leave-one-out.

Design note
-----------
* **Variogram** – gstat-style: the empirical semivariogram uses a cutoff of one
  third of the sample bounding-box diagonal and 15 equal-width bins; bin ``j``
  holds the pairs with ``j·w <= h < (j+1)·w`` (the last bin is closed at the
  cutoff) and its lag is the mean pair distance in the bin. Empty bins are
  dropped. Models (``gstat`` parameterisation, ``a`` = range, ``h > 0``)::

      spherical    nugget + psill·(1.5 h/a − 0.5 (h/a)³)   (h < a), nugget + psill (h >= a)
      exponential  nugget + psill·(1 − exp(−h/a))
      gaussian     nugget + psill·(1 − exp(−(h/a)²))

  and γ(0) = 0. The fit is weighted least squares with gstat's ``fit.method =
  7`` weights ``N_j / h_j²``. For a fixed range the model is linear in
  ``(nugget, psill)``, so those two come from a non-negative least-squares
  solve and only the range is searched (log-spaced grid, then bounded Brent):
  deterministic and free of the starting-value failures of Gauss–Newton.
* **PyKrige conventions** (checked in PyKrige 1.7.3 ``variogram_models.py``):
  its exponential uses ``exp(−d / (r/3))`` and its Gaussian
  ``exp(−d² / (r·4/7)²)``, so PyKrige's range is ``3·a`` and ``7/4·a``
  respectively (spherical: ``a``). :func:`pykrige_parameters` converts.
* **Kriging system** – the PyKrige form ``[[−Γ, 1], [1ᵀ, 0]]`` with Γ_ii = 0
  and γ(d) including the nugget for d > 0; a target closer than 1e-10 to a
  sample gets γ = 0 (exact interpolation, PyKrige's ``exact_values=True``).
  With every sample in the neighbourhood (``n_closest=0``) the inverse ``B``
  of that matrix is shared by all cells, so a chunk of cells costs one
  matrix–vector product for the prediction (``b·B[z; 0]``) and one matrix
  product for the variance (``−bᵀ B b``). With ``n_closest > 0`` PyKrige's
  own moving-window loop (``backend="C"``) is used chunk by chunk.
* **Leave-one-out** – closed form (Dubrule 1983): with ``B`` as above, the LOO
  residual of sample ``i`` is ``(B[z; 0])_i / B_ii`` and its kriging variance
  ``1 / B_ii``. Residuals are observed − predicted.
* **Log transform** – ``y = ln z`` is kriged and back-transformed with the
  lognormal correction ``exp(ŷ + σ²/2)`` (the simple-kriging form applied to
  the OK estimate; it slightly overestimates far from the data, by the factor
  ``exp(Var(mean estimate))``). The variance returned is the lognormal
  variance ``pred²·(exp(σ²) − 1)`` in squared property units. LOO ME/RMSE/r
  are computed on the back-transformed (original) scale, MSDR on the log
  scale where the kriging variance lives.
* **Samples** – NaN rows are dropped (counted), samples closer than
  1e-8 × the extent are treated as duplicates and **averaged** (reported),
  fewer than 10 samples is an error, samples outside the grid are a warning,
  all outside (or coordinates that look like degrees against a projected
  grid) is an error.

Out of scope: anisotropy, universal kriging / drifts, block kriging.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import scipy.linalg
from numba import njit, prange
from scipy.optimize import minimize_scalar, nnls
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist, squareform

__all__ = [
    "KrigingError",
    "MODELS",
    "MIN_SAMPLES",
    "prepare_samples",
    "reproject_samples",
    "empirical_variogram",
    "fit_wls",
    "fit_variogram",
    "semivariance",
    "pykrige_parameters",
    "kriging_matrix_inverse",
    "krige",
    "krige_grid",
    "loo",
    "krige_property",
]

#: Supported variogram models (gstat names in brackets: Sph, Exp, Gau).
MODELS: tuple[str, ...] = ("spherical", "exponential", "gaussian")
_CODES = {"spherical": 0, "exponential": 1, "gaussian": 2}
#: Fewest samples we agree to krige.
MIN_SAMPLES = 10
#: Distances at or below this are "the same location" for the right-hand side (PyKrige's eps).
_EPS = 1e-10
_N_BINS = 15
#: Largest accepted 1-norm condition number of the kriging matrix.
_MAX_COND = 1e12


class KrigingError(ValueError):
    """Soil samples or a variogram that cannot be kriged; the message names the fix."""


# --------------------------------------------------------------------------- models
def _shape(model: str, h: np.ndarray, a: float) -> np.ndarray:
    """Unit-sill structure f(h/a) of a model (without nugget), h > 0."""
    r = h / a
    if model == "spherical":
        return np.where(r < 1.0, 1.5 * r - 0.5 * r**3, 1.0)
    if model == "exponential":
        return 1.0 - np.exp(-r)
    if model == "gaussian":
        return 1.0 - np.exp(-(r**2))
    raise KrigingError(f"variogram model {model!r} is not supported; use one of {MODELS} or 'auto'")


def semivariance(h: np.ndarray, variogram: dict[str, Any]) -> np.ndarray:
    """Model semivariance γ(h) in gstat's parameterisation.

    Parameters
    ----------
    h : ndarray, any shape
        Lag distances (grid CRS units, usually m), >= 0.
    variogram : dict
        ``model``, ``nugget``, ``psill``, ``range`` (as from :func:`fit_variogram`).

    Returns
    -------
    ndarray, same shape as ``h``
        γ(h) in squared property units; γ(0) = 0 (the nugget is a jump at 0).
    """
    h = np.asarray(h, dtype=np.float64)
    model, nugget, psill, a = _unpack(variogram)
    g = nugget + psill * _shape(model, np.maximum(h, 0.0), a)
    return np.where(h <= _EPS, 0.0, g)


def pykrige_parameters(variogram: dict[str, Any]) -> dict[str, float]:
    """Convert gstat-convention parameters to PyKrige's ``variogram_parameters``.

    PyKrige 1.7.3 writes the exponential model as ``exp(-d/(r/3))`` and the
    Gaussian as ``exp(-d²/(r·4/7)²)``; gstat as ``exp(-h/a)`` and
    ``exp(-(h/a)²)``. Hence ``r = 3a`` (exponential), ``r = 7a/4`` (Gaussian),
    ``r = a`` (spherical).

    Returns
    -------
    dict
        ``{"psill", "range", "nugget"}`` for ``pykrige.ok.OrdinaryKriging``.
    """
    model, nugget, psill, a = _unpack(variogram)
    factor = {"spherical": 1.0, "exponential": 3.0, "gaussian": 7.0 / 4.0}[model]
    return {"psill": psill, "range": a * factor, "nugget": nugget}


def _unpack(variogram: dict[str, Any]) -> tuple[str, float, float, float]:
    try:
        model = str(variogram["model"])
        nugget = float(variogram["nugget"])
        psill = float(variogram["psill"])
        a = float(variogram["range"])
    except (KeyError, TypeError) as exc:
        raise KrigingError(
            f"variogram must be a dict with 'model', 'nugget', 'psill', 'range' (got {variogram!r}); "
            "use the result of fit_variogram()"
        ) from exc
    if model not in _CODES:
        raise KrigingError(f"variogram model {model!r} is not supported; use one of {MODELS}")
    if not (np.isfinite(nugget) and np.isfinite(psill) and np.isfinite(a)) or nugget < 0 or psill < 0 or a <= 0:
        raise KrigingError(
            f"variogram parameters must be finite with nugget >= 0, psill >= 0, range > 0 "
            f"(got nugget={nugget}, psill={psill}, range={a})"
        )
    if nugget + psill <= 0:
        raise KrigingError("variogram has zero sill (nugget + psill = 0): the property is constant, nothing to krige")
    return model, nugget, psill, a


# --------------------------------------------------------------------------- samples
def _as_1d(v: Any, what: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 1:
        raise KrigingError(f"{what} must be a 1-D array of sample values (got shape {a.shape})")
    return a


def _check_xyz(x: Any, y: Any, z: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strict check for the low-level functions: clean, unique, enough samples."""
    x, y, z = _as_1d(x, "x"), _as_1d(y, "y"), _as_1d(z, "z")
    if not (x.size == y.size == z.size):
        raise KrigingError(f"x, y and z must have the same length (got {x.size}, {y.size}, {z.size})")
    bad = ~(np.isfinite(x) & np.isfinite(y) & np.isfinite(z))
    if bad.any():
        raise KrigingError(
            f"{int(bad.sum())} samples have NaN/inf coordinates or values; clean them with prepare_samples() first"
        )
    if x.size < MIN_SAMPLES:
        raise KrigingError(
            f"only {x.size} soil samples; kriging needs at least {MIN_SAMPLES} "
            "(add samples or supply a ready soil raster)"
        )
    groups = _duplicate_groups(x, y)
    if groups:
        raise KrigingError(
            f"{sum(len(g) for g in groups)} samples share {len(groups)} locations (first at x={x[groups[0][0]]}, "
            f"y={y[groups[0][0]]}); the kriging matrix would be singular — merge them with prepare_samples()"
        )
    return x, y, z


def _duplicate_groups(x: np.ndarray, y: np.ndarray) -> list[list[int]]:
    """Groups (index lists, len >= 2) of samples closer than 1e-8 × the extent."""
    span = max(float(np.ptp(x)), float(np.ptp(y)), 1.0)
    tol = 1e-8 * span
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(tol, output_type="ndarray")
    if len(pairs) == 0:
        return []
    n = x.size
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    counts = np.bincount(labels)
    return [np.flatnonzero(labels == lab).tolist() for lab in np.flatnonzero(counts > 1)]


def reproject_samples(x: Any, y: Any, src_crs: Any, dst_crs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Reproject sample coordinates (e.g. lon/lat from a CSV) to the grid CRS.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Coordinates in ``src_crs`` (for geographic CRSs: x = longitude, y = latitude, degrees).
    src_crs, dst_crs : anything ``pyproj.CRS.from_user_input`` accepts

    Returns
    -------
    (x, y) : ndarray, shape (n,) each, in ``dst_crs`` units.
    """
    from pyproj import CRS, Transformer

    t = Transformer.from_crs(CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs), always_xy=True)
    xo, yo = t.transform(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return np.asarray(xo, dtype=np.float64), np.asarray(yo, dtype=np.float64)


def _grid_extent(grid_x: np.ndarray, grid_y: np.ndarray) -> tuple[float, float, float, float]:
    dx = abs(float(grid_x[1] - grid_x[0])) if grid_x.size > 1 else 0.0
    dy = abs(float(grid_y[1] - grid_y[0])) if grid_y.size > 1 else 0.0
    return (
        float(grid_x.min()) - dx / 2,
        float(grid_y.min()) - dy / 2,
        float(grid_x.max()) + dx / 2,
        float(grid_y.max()) + dy / 2,
    )


def prepare_samples(
    x: Any,
    y: Any,
    z: Any,
    *,
    grid_x: np.ndarray | None = None,
    grid_y: np.ndarray | None = None,
    name: str = "SOC",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Validate soil samples: drop NaN, average duplicates, check count and extent.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Sample coordinates, already in the grid CRS.
    z : array_like, shape (n,)
        Property values (NaN = not measured; dropped and counted).
    grid_x : ndarray, shape (cols,), optional
        Pixel-centre x of the target grid (enables the extent checks).
    grid_y : ndarray, shape (rows,), optional
        Pixel-centre y of the target grid.
    name : str
        Property name used in messages.

    Returns
    -------
    x, y, z : ndarray, shape (m,)
        Clean samples (m <= n).
    info : dict
        ``n_input``, ``n_dropped_nan``, ``n_duplicates`` (samples merged away),
        ``duplicates`` (up to 5 merged locations ``(x, y, count)``),
        ``n_outside`` (samples outside the grid extent), ``warnings`` (list of str).

    Raises
    ------
    KrigingError
        Fewer than 10 usable samples; coordinates that look like degrees while the
        grid is projected (or vice versa); every sample outside the grid.
    """
    x, y, z = _as_1d(x, f"{name} x"), _as_1d(y, f"{name} y"), _as_1d(z, f"{name} values")
    if not (x.size == y.size == z.size):
        raise KrigingError(f"{name}: x, y and values must have the same length (got {x.size}, {y.size}, {z.size})")
    info: dict[str, Any] = {"n_input": int(x.size), "warnings": []}
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    info["n_dropped_nan"] = int((~ok).sum())
    x, y, z = x[ok], y[ok], z[ok]
    if info["n_dropped_nan"]:
        info["warnings"].append(
            f"{name}: {info['n_dropped_nan']} samples with missing coordinates or values were dropped"
        )

    groups = _duplicate_groups(x, y) if x.size >= 2 else []
    info["n_duplicates"] = int(sum(len(g) - 1 for g in groups))
    info["duplicates"] = [(float(x[g[0]]), float(y[g[0]]), len(g)) for g in groups[:5]]
    if groups:
        drop = np.zeros(x.size, dtype=bool)
        z = z.copy()
        for g in groups:
            z[g[0]] = float(np.mean(z[g]))
            drop[g[1:]] = True
        x, y, z = x[~drop], y[~drop], z[~drop]
        msg = (
            f"{name}: {info['n_duplicates'] + len(groups)} samples share {len(groups)} locations "
            f"(e.g. x={info['duplicates'][0][0]}, y={info['duplicates'][0][1]}); their values were averaged"
        )
        info["warnings"].append(msg)

    if x.size < MIN_SAMPLES:
        raise KrigingError(
            f"{name}: only {x.size} usable soil samples (of {info['n_input']}; {info['n_dropped_nan']} with NaN, "
            f"{info['n_duplicates']} duplicates merged); kriging needs at least {MIN_SAMPLES} — add samples or "
            f"supply a ready {name} raster"
        )

    info["n_outside"] = 0
    if grid_x is not None and grid_y is not None:
        gx, gy = np.asarray(grid_x, dtype=np.float64), np.asarray(grid_y, dtype=np.float64)
        x0, y0, x1, y1 = _grid_extent(gx, gy)
        inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        info["n_outside"] = int((~inside).sum())
        if not inside.any():
            smag = max(float(np.abs(x).max()), float(np.abs(y).max()), 1e-12)
            gmag = max(abs(x0), abs(x1), abs(y0), abs(y1), 1e-12)
            where = (
                f"samples span x [{x.min():.6g}, {x.max():.6g}], y [{y.min():.6g}, {y.max():.6g}] while the grid spans "
                f"x [{x0:.6g}, {x1:.6g}], y [{y0:.6g}, {y1:.6g}]"
            )
            looks_deg = np.all(np.abs(x) <= 180) and np.all(np.abs(y) <= 90)
            if looks_deg and gmag / smag > 100:
                raise KrigingError(
                    f"{name}: the soil CSV coordinates look like degrees (lon/lat) but the grid is projected: {where}. "
                    'Set [soil] crs = "EPSG:4326" in dataset.toml so they are reprojected to the grid CRS'
                )
            if smag / gmag > 100 and np.all(np.abs([x0, x1]) <= 180) and np.all(np.abs([y0, y1]) <= 90):
                raise KrigingError(
                    f"{name}: the soil CSV coordinates look projected but the grid is in degrees: {where}. "
                    "Set [soil] crs in dataset.toml to the CRS of the CSV coordinates (e.g. \"EPSG:32649\")"
                )
            raise KrigingError(
                f"{name}: none of the {x.size} soil samples lies inside the grid: {where}. Check [soil] crs and the "
                "x/y columns in dataset.toml"
            )
        if info["n_outside"]:
            msg = f"{name}: {info['n_outside']} of {x.size} soil samples lie outside the grid extent (kept for kriging)"
            info["warnings"].append(msg)
    for msg in info["warnings"]:
        warnings.warn(msg, stacklevel=2)
    return x, y, z, info


# --------------------------------------------------------------------------- variogram
def empirical_variogram(
    x: Any, y: Any, z: Any, *, n_bins: int = _N_BINS, cutoff: float | None = None
) -> dict[str, Any]:
    """gstat-style empirical semivariogram.

    Parameters
    ----------
    x, y, z : array_like, shape (n,)
        Sample coordinates (projected units) and values.
    n_bins : int
        Number of equal-width distance bins (gstat: 15).
    cutoff : float, optional
        Largest lag; default one third of the bounding-box diagonal.

    Returns
    -------
    dict
        ``lags`` (mean pair distance per non-empty bin), ``gamma``
        (½·mean squared difference), ``npairs`` (int), ``cutoff``, ``width``;
        arrays of shape (k,), k <= n_bins.
    """
    x, y, z = _as_1d(x, "x"), _as_1d(y, "y"), _as_1d(z, "z")
    if cutoff is None:
        cutoff = math.hypot(float(np.ptp(x)), float(np.ptp(y))) / 3.0
    if not cutoff > 0:
        raise KrigingError("all soil samples are at one location: the variogram is undefined")
    width = cutoff / n_bins
    xy = np.column_stack([x - x.mean(), y - y.mean()])
    h = pdist(xy)
    d2 = pdist(z[:, None], "sqeuclidean")
    keep = h <= cutoff
    h, d2 = h[keep], d2[keep]
    idx = np.minimum((h / width).astype(np.int64), n_bins - 1)
    npairs = np.bincount(idx, minlength=n_bins)
    hs = np.bincount(idx, weights=h, minlength=n_bins)
    gs = np.bincount(idx, weights=d2, minlength=n_bins)
    ne = npairs > 0
    return {
        "lags": hs[ne] / npairs[ne],
        "gamma": 0.5 * gs[ne] / npairs[ne],
        "npairs": npairs[ne].astype(np.int64),
        "cutoff": float(cutoff),
        "width": float(width),
    }


def _wls_objective(
    model: str, lags: np.ndarray, gamma: np.ndarray, w: np.ndarray, nugget: float, psill: float, a: float
) -> float:
    r = gamma - (nugget + psill * _shape(model, lags, a))
    return float(np.sum(w * r * r))


def fit_wls(
    lags: np.ndarray,
    gamma: np.ndarray,
    npairs: np.ndarray,
    model: str,
    *,
    range_bounds: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Weighted least-squares fit of one model to an empirical semivariogram.

    Minimises ``Σ_j N_j/h_j² · (γ_j − γ(h_j))²`` over nugget >= 0, psill >= 0 and
    range within ``range_bounds``: exact non-negative least squares for
    (nugget, psill) at each range, and a log-spaced grid + bounded Brent search
    over the range.

    Parameters
    ----------
    lags, gamma, npairs : ndarray, shape (k,)
        Empirical semivariogram (:func:`empirical_variogram`).
    model : {"spherical", "exponential", "gaussian"}
    range_bounds : (float, float), optional
        Search interval for the range (CRS units); default
        ``(lags.max() / 1000, 10 · lags.max())``.

    Returns
    -------
    dict
        ``model``, ``nugget``, ``psill``, ``range`` (gstat convention), ``wls``
        (objective value), ``range_at_bound`` (bool).
    """
    if model not in _CODES:
        raise KrigingError(f"variogram model {model!r} is not supported; use one of {MODELS} or 'auto'")
    lags = np.asarray(lags, dtype=np.float64)
    gamma = np.asarray(gamma, dtype=np.float64)
    npairs = np.asarray(npairs, dtype=np.float64)
    if lags.size < 3:
        raise KrigingError(f"only {lags.size} non-empty variogram bins; at least 3 are needed to fit a model")
    if np.any(lags <= 0):
        raise KrigingError("a variogram lag is 0: duplicate sample locations must be merged first")
    w = npairs / lags**2
    sw = np.sqrt(w)
    hmax = float(lags.max())
    lo, hi = range_bounds if range_bounds is not None else (hmax / 1000.0, 10.0 * hmax)

    def profile(log_a: float) -> tuple[float, np.ndarray]:
        a = math.exp(log_a)
        design = np.column_stack([np.ones_like(lags), _shape(model, lags, a)]) * sw[:, None]
        coef, _ = nnls(design, gamma * sw)
        return _wls_objective(model, lags, gamma, w, coef[0], coef[1], a), coef

    grid = np.linspace(math.log(lo), math.log(hi), 161)
    vals = np.array([profile(g)[0] for g in grid])
    k = int(np.argmin(vals))
    left, right = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    res = minimize_scalar(lambda t: profile(t)[0], bounds=(left, right), method="bounded", options={"xatol": 1e-10})
    best = (float(res.x), *profile(float(res.x))) if res.fun <= vals[k] else (float(grid[k]), *profile(float(grid[k])))
    log_a, obj, coef = best
    a = math.exp(log_a)
    return {
        "model": model,
        "nugget": float(coef[0]),
        "psill": float(coef[1]),
        "range": float(a),
        "wls": float(obj),
        "range_at_bound": bool(abs(log_a - grid[0]) < 1e-6 or abs(log_a - grid[-1]) < 1e-6),
    }


def fit_variogram(x: Any, y: Any, z: Any, model: str = "auto") -> dict[str, Any]:
    """Fit a variogram model gstat-style (empirical bins + WLS with N_j/h_j²).

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Sample coordinates in a projected CRS (m); clean and unique
        (see :func:`prepare_samples`), n >= 10.
    z : array_like, shape (n,)
        Property values.
    model : {"auto", "spherical", "exponential", "gaussian"}
        ``"auto"`` fits all three and keeps the one with the smallest
        leave-one-out RMSE (closed form, :func:`loo`).

    Returns
    -------
    dict
        ``model``, ``nugget``, ``psill``, ``range`` (gstat convention: exponential
        and Gaussian ``a`` in ``exp(-h/a)``, ``exp(-(h/a)²)``), ``sill``,
        ``pykrige`` (parameters in PyKrige's convention), ``wls``,
        ``range_at_bound``, the empirical semivariogram ``lags``, ``gamma``,
        ``npairs``, ``cutoff``, ``width``, and ``candidates``
        (per model: nugget, psill, range, wls, loo_rmse) when ``model="auto"``.
    """
    x, y, z = _check_xyz(x, y, z)
    if np.ptp(z) == 0:
        raise KrigingError(f"all {z.size} sample values are equal ({z[0]}); the variogram is undefined")
    emp = empirical_variogram(x, y, z)
    if model == "auto":
        cands: dict[str, dict[str, Any]] = {}
        for m in MODELS:
            fit = fit_wls(emp["lags"], emp["gamma"], emp["npairs"], m)
            try:
                fit["loo_rmse"] = loo(x, y, z, fit)["rmse"]
            except (KrigingError, np.linalg.LinAlgError):
                fit["loo_rmse"] = float("inf")
            cands[m] = fit
        best = min(MODELS, key=lambda m: cands[m]["loo_rmse"])
        out = dict(cands[best])
        out.pop("loo_rmse")
        out["candidates"] = {m: dict(c) for m, c in cands.items()}
    elif model in _CODES:
        out = fit_wls(emp["lags"], emp["gamma"], emp["npairs"], model)
    else:
        raise KrigingError(f"kriging.model = {model!r} is not supported; use 'auto' or one of {MODELS}")
    out["sill"] = out["nugget"] + out["psill"]
    out["pykrige"] = pykrige_parameters(out)
    out.update(emp)
    return out


# --------------------------------------------------------------------------- kriging
@njit(cache=True, nogil=True, parallel=True)
def _fill_rhs(px, py, sx, sy, code, nugget, psill, a, out):  # pragma: no cover - numba
    """out[i, :n] = −γ(|p_i − s_j|) (0 at coincident points), out[i, n] = 1.

    One loop per model so the inner loop has no model branch.
    """
    m = px.size
    n = sx.size
    for i in prange(m):
        row = out[i]
        if code == 0:
            for j in range(n):
                dx = px[i] - sx[j]
                dy = py[i] - sy[j]
                h = math.sqrt(dx * dx + dy * dy)
                r = h / a
                f = 1.5 * r - 0.5 * r * r * r if r < 1.0 else 1.0
                row[j] = -(nugget + psill * f) if h > 1e-10 else 0.0
        elif code == 1:
            for j in range(n):
                dx = px[i] - sx[j]
                dy = py[i] - sy[j]
                h = math.sqrt(dx * dx + dy * dy)
                row[j] = -(nugget + psill * (1.0 - math.exp(-h / a))) if h > 1e-10 else 0.0
        else:
            for j in range(n):
                dx = px[i] - sx[j]
                dy = py[i] - sy[j]
                h = math.sqrt(dx * dx + dy * dy)
                r = h / a
                row[j] = -(nugget + psill * (1.0 - math.exp(-r * r))) if h > 1e-10 else 0.0
        row[n] = 1.0


@njit(cache=True, nogil=True, parallel=True)
def _rowdot_neg(q, g, out):  # pragma: no cover - numba
    """out[i] = −Σ_j q[i, j]·g[i, j]."""
    for i in prange(q.shape[0]):
        s = 0.0
        for j in range(q.shape[1]):
            s += q[i, j] * g[i, j]
        out[i] = -s


def kriging_matrix_inverse(x: np.ndarray, y: np.ndarray, variogram: dict[str, Any]) -> np.ndarray:
    """Inverse of the ordinary-kriging matrix ``[[−Γ, 1], [1ᵀ, 0]]``.

    Parameters
    ----------
    x, y : ndarray, shape (n,)
        Sample coordinates (unique).
    variogram : dict
        ``model``, ``nugget``, ``psill``, ``range`` (gstat convention).

    Returns
    -------
    ndarray, shape (n + 1, n + 1)
    """
    model, nugget, psill, a = _unpack(variogram)
    n = x.size
    xy = np.column_stack([x - x.mean(), y - y.mean()])
    d = squareform(pdist(xy))
    A = np.zeros((n + 1, n + 1))
    A[:n, :n] = -(nugget + psill * _shape(model, d, a))
    np.fill_diagonal(A, 0.0)
    A[n, :n] = 1.0
    A[:n, n] = 1.0
    try:
        with warnings.catch_warnings():  # conditioning is checked below with a clear message
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            B = scipy.linalg.inv(A)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise KrigingError(
            "the kriging matrix is singular (duplicate samples, or a Gaussian variogram without nugget); "
            "merge duplicates or use another model"
        ) from exc
    if not np.all(np.isfinite(B)):
        raise KrigingError("the kriging matrix could not be inverted (non-finite inverse)")
    cond = float(np.linalg.norm(A, 1) * np.linalg.norm(B, 1))
    if cond > _MAX_COND:
        raise KrigingError(
            f"the {model} kriging matrix is numerically singular (condition number {cond:.1e}), typically a "
            "Gaussian variogram without nugget on close samples; predictions would be noise — use kriging.model = "
            "'auto' or another model"
        )
    return B


def _auto_chunk(n: int) -> int:
    return int(max(1024, min(262_144, 8_000_000 // (n + 1))))


def _krige_fast(
    sx: np.ndarray, sy: np.ndarray, z: np.ndarray, B: np.ndarray, variogram: dict[str, Any],
    px: np.ndarray, py: np.ndarray, chunk: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and variance at points with the shared inverse B (coordinates pre-centred)."""
    model, nugget, psill, a = _unpack(variogram)
    code = _CODES[model]
    n = sx.size
    wz = B[:, :n] @ z  # (n+1,)
    m = px.size
    pred = np.empty(m)
    var = np.empty(m)
    buf = np.empty((min(chunk, max(m, 1)), n + 1))
    for s in range(0, m, chunk):
        e = min(s + chunk, m)
        g = buf[: e - s]
        _fill_rhs(px[s:e], py[s:e], sx, sy, code, nugget, psill, a, g)
        pred[s:e] = g @ wz
        q = g @ B
        _rowdot_neg(q, g, var[s:e])
        del q
    np.maximum(var, 0.0, out=var)
    return pred, var


def _pykrige(x: np.ndarray, y: np.ndarray, z: np.ndarray, variogram: dict[str, Any]) -> Any:
    from pykrige.ok import OrdinaryKriging

    return OrdinaryKriging(
        x, y, z,
        variogram_model=variogram["model"],
        variogram_parameters=pykrige_parameters(variogram),
        exact_values=True,
        enable_statistics=False,
    )


def _krige_window(
    ok: Any, px: np.ndarray, py: np.ndarray, n_closest: int, chunk: int, backend: str
) -> tuple[np.ndarray, np.ndarray]:
    m = px.size
    pred = np.empty(m)
    var = np.empty(m)
    for s in range(0, m, chunk):
        e = min(s + chunk, m)
        p, v = ok.execute("points", px[s:e], py[s:e], backend=backend, n_closest_points=n_closest)
        pred[s:e] = np.asarray(p)
        var[s:e] = np.asarray(v)
    np.maximum(var, 0.0, out=var)
    return pred, var


def krige(
    x: Any, y: Any, z: Any, xi: Any, yi: Any, variogram: dict[str, Any], *, n_closest: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Ordinary kriging at points.

    Parameters
    ----------
    x, y, z : array_like, shape (n,)
        Clean, unique samples (projected coordinates, m) and values.
    xi, yi : array_like, shape (m,)
        Target coordinates.
    variogram : dict
        ``model``, ``nugget``, ``psill``, ``range`` (gstat convention).
    n_closest : int
        0 = every sample (shared-matrix fast path); k > 0 = the k nearest
        samples per target via PyKrige's moving-window loop.

    Returns
    -------
    prediction, variance : ndarray, shape (m,)
        Kriging estimate (property units) and kriging variance (units²).
    """
    x, y, z = _check_xyz(x, y, z)
    xi, yi = _as_1d(xi, "xi"), _as_1d(yi, "yi")
    if xi.size != yi.size:
        raise KrigingError(f"xi and yi must have the same length (got {xi.size}, {yi.size})")
    _unpack(variogram)
    if n_closest and 0 < n_closest < x.size:
        ok = _pykrige(x, y, z, variogram)
        return _krige_window(ok, xi, yi, int(n_closest), _auto_chunk(x.size), _backend())
    x0, y0 = x.mean(), y.mean()
    B = kriging_matrix_inverse(x, y, variogram)
    return _krige_fast(x - x0, y - y0, z, B, variogram, xi - x0, yi - y0, _auto_chunk(x.size))


def _backend() -> str:
    try:
        from pykrige.lib import cok  # noqa: F401

        return "C"
    except ImportError:  # pragma: no cover - depends on the wheel
        return "loop"


def krige_grid(
    x: Any,
    y: Any,
    z: Any,
    grid_x: Any,
    grid_y: Any,
    variogram: dict[str, Any],
    *,
    n_closest: int = 0,
    chunk: int | None = None,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ordinary kriging onto a regular grid, chunked.

    Parameters
    ----------
    x, y, z : array_like, shape (n,)
        Clean, unique samples (grid CRS, m) and values.
    grid_x : array_like, shape (cols,)
        Pixel-centre x coordinates.
    grid_y : array_like, shape (rows,)
        Pixel-centre y coordinates.
    variogram : dict
        ``model``, ``nugget``, ``psill``, ``range`` (gstat convention).
    n_closest : int
        0 = all samples (fast path); k > 0 = k nearest samples (PyKrige, ``backend="C"``).
    chunk : int, optional
        Cells per chunk; default ≈ 8·10⁶ / (n + 1) (≈ 64 MB per work array).
    mask : ndarray of bool, shape (rows, cols), optional
        True where a prediction is wanted (e.g. inside the study area); other
        cells are NaN and cost nothing.

    Returns
    -------
    prediction, variance : ndarray, shape (rows, cols), float64
        NaN where ``mask`` is False.
    """
    x, y, z = _check_xyz(x, y, z)
    gx = _as_1d(grid_x, "grid_x")
    gy = _as_1d(grid_y, "grid_y")
    rows, cols = gy.size, gx.size
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (rows, cols):
            raise KrigingError(f"mask has shape {mask.shape}, the grid is {(rows, cols)} (rows, cols)")
    _unpack(variogram)
    k = int(n_closest or 0)
    if k < 0:
        raise KrigingError(f"n_closest must be >= 0 (got {k})")
    use_window = 0 < k < x.size
    if chunk is None:
        chunk = _auto_chunk(k if use_window else x.size)
    chunk = max(int(chunk), 1)
    pred = np.full((rows, cols), np.nan)
    var = np.full((rows, cols), np.nan)
    x0, y0 = x.mean(), y.mean()
    if use_window:
        ok = _pykrige(x, y, z, variogram)
        backend = _backend()
    else:
        B = kriging_matrix_inverse(x, y, variogram)
        sx, sy = x - x0, y - y0
    rows_per = max(1, chunk // max(cols, 1))
    for r0 in range(0, rows, rows_per):
        r1 = min(r0 + rows_per, rows)
        yy, xx = np.meshgrid(gy[r0:r1], gx, indexing="ij")
        sel = mask[r0:r1] if mask is not None else np.ones((r1 - r0, cols), dtype=bool)
        px, py = xx[sel], yy[sel]
        if px.size == 0:
            continue
        if use_window:
            p, v = _krige_window(ok, px, py, k, chunk, backend)
        else:
            p, v = _krige_fast(sx, sy, z, B, variogram, px - x0, py - y0, chunk)
        pred[r0:r1][sel] = p
        var[r0:r1][sel] = v
    return pred, var


def loo(x: Any, y: Any, z: Any, variogram: dict[str, Any]) -> dict[str, Any]:
    """Leave-one-out cross-validation by the closed form of Dubrule (1983).

    With ``B`` the inverse of the kriging matrix ``[[−Γ, 1], [1ᵀ, 0]]``, the
    residual of sample i kriged from the others is ``(B[z; 0])_i / B_ii`` and
    its kriging variance ``1 / B_ii`` — identical to n refits.

    Parameters
    ----------
    x, y, z : array_like, shape (n,)
        Clean, unique samples and values.
    variogram : dict
        ``model``, ``nugget``, ``psill``, ``range`` (gstat convention).

    Returns
    -------
    dict
        ``residuals`` (observed − predicted, shape (n,)), ``prediction`` (n,),
        ``variance`` (n,), ``me`` (mean residual), ``rmse``, ``r`` (Pearson r of
        observed vs predicted), ``msdr`` (mean of residual²/variance, ≈ 1 when
        the variance is honest).
    """
    x, y, z = _check_xyz(x, y, z)
    B = kriging_matrix_inverse(x, y, variogram)
    n = z.size
    diag = np.diag(B)[:n]
    if np.any(diag <= 0):
        raise KrigingError("leave-one-out failed: the kriging matrix is not conditionally negative definite")
    res = (B[:n, :n] @ z) / diag
    var = 1.0 / diag
    pred = z - res
    return {
        "residuals": res,
        "prediction": pred,
        "variance": var,
        **_loo_stats(z, pred, res, var),
    }


def _loo_stats(z: np.ndarray, pred: np.ndarray, res: np.ndarray, var: np.ndarray) -> dict[str, float]:
    r = float(np.corrcoef(z, pred)[0, 1]) if np.ptp(pred) > 0 else float("nan")
    return {
        "me": float(np.mean(res)),
        "rmse": float(np.sqrt(np.mean(res**2))),
        "r": r,
        "msdr": float(np.mean(res**2 / var)),
    }


def krige_property(
    x: Any,
    y: Any,
    z: Any,
    grid_x: Any,
    grid_y: Any,
    *,
    model: str = "auto",
    log: bool = False,
    name: str = "SOC",
    n_closest: int = 0,
    mask: np.ndarray | None = None,
    chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Validate samples, fit the variogram, cross-validate and krige one soil property.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Sample coordinates in the grid CRS (reproject first, :func:`reproject_samples`).
    z : array_like, shape (n,)
        Property values (NaN dropped and counted; duplicate locations averaged).
    grid_x : array_like, shape (cols,)
        Pixel-centre x coordinates of the grid.
    grid_y : array_like, shape (rows,)
        Pixel-centre y coordinates of the grid.
    model : {"auto", "spherical", "exponential", "gaussian"}
        ``kriging.model``; auto = smallest LOO RMSE on the kriged (log if ``log``) scale.
    log : bool
        Krige ``ln z`` and back-transform with ``exp(ŷ + σ²/2)``; variance
        returned as ``pred²·(exp(σ²) − 1)``.
    name : str
        Property name for messages.
    n_closest : int
        ``kriging.n_closest`` (0 = all samples).
    mask : ndarray of bool, shape (rows, cols), optional
        True where a prediction is wanted.
    chunk : int, optional
        Cells per chunk (see :func:`krige_grid`).

    Returns
    -------
    prediction, variance : ndarray, shape (rows, cols), float64
        NaN outside ``mask``.
    report : dict
        ``name``, ``model``, ``nugget``, ``psill``, ``range`` (gstat convention,
        on the kriged scale), ``pykrige_range``, ``loo_me``, ``loo_rmse``,
        ``loo_r`` (original units), ``msdr`` (kriged scale), ``nugget_sill_ratio``,
        ``n``, ``n_dropped_nan``, ``n_duplicates``, ``n_outside``,
        ``back_transform``, ``range_at_bound``, ``warnings``, ``variogram``
        (the full fit incl. the empirical bins as lists), ``candidates`` (auto
        only). Everything is JSON-serialisable.
    """
    x, y, z, info = prepare_samples(x, y, z, grid_x=grid_x, grid_y=grid_y, name=name)
    if log:
        if np.any(z <= 0):
            raise KrigingError(
                f"{name}: the log transform needs positive values but {int((z <= 0).sum())} samples are <= 0; "
                f"remove {name} from kriging.log_transform or fix the values"
            )
        zk = np.log(z)
    else:
        zk = z
    if np.ptp(zk) == 0:
        raise KrigingError(
            f"{name}: all {zk.size} sample values are equal ({z[0]}); nothing to krige — use a constant raster"
        )
    vg = fit_variogram(x, y, zk, model)
    cv = loo(x, y, zk, vg)
    if log:
        pz = np.exp(cv["prediction"] + cv["variance"] / 2.0)
        res = z - pz
        st = _loo_stats(z, pz, res, np.ones_like(res))
        st["msdr"] = cv["msdr"]
    else:
        st = {k: cv[k] for k in ("me", "rmse", "r", "msdr")}
    pred, var = krige_grid(x, y, zk, grid_x, grid_y, vg, n_closest=n_closest, chunk=chunk, mask=mask)
    if log:
        pred = np.exp(pred + var / 2.0)
        var = pred**2 * np.expm1(var)
    sill = vg["nugget"] + vg["psill"]
    report: dict[str, Any] = {
        "name": name,
        "model": vg["model"],
        "nugget": vg["nugget"],
        "psill": vg["psill"],
        "range": vg["range"],
        "pykrige_range": vg["pykrige"]["range"],
        "loo_me": st["me"],
        "loo_rmse": st["rmse"],
        "loo_r": st["r"],
        "msdr": st["msdr"],
        "nugget_sill_ratio": vg["nugget"] / sill,
        "n": int(z.size),
        "n_dropped_nan": info["n_dropped_nan"],
        "n_duplicates": info["n_duplicates"],
        "n_outside": info["n_outside"],
        "back_transform": "exp(y + s2/2) (lognormal)" if log else "none",
        "range_at_bound": vg["range_at_bound"],
        "warnings": list(info["warnings"]),
        "variogram": {
            k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vg.items() if k != "candidates"
        },
    }
    if vg["range_at_bound"]:
        report["warnings"].append(f"{name}: the fitted range hit its search bound; the variogram shows no clear sill")
    if "candidates" in vg:
        report["candidates"] = vg["candidates"]
    return pred, var, report
