"""CASA light-use-efficiency model of monthly net primary production.

The "improved CASA" form (Potter et al. 1993; Zhu et al. 2006, 2007 for FPAR
and εmax; Zhou & Zhang 1995 for the water scalar; Thornthwaite 1948 for the
potential evapotranspiration), implemented from the formulas in
``shared/specs/casa.md``::

    NPP  = APAR · ε,   APAR = SOL · FPAR · 0.5,   ε = εmax · Tε1 · Tε2 · Wε

Units: SOL MJ m⁻² month⁻¹, T °C (monthly mean), P mm month⁻¹, εmax gC MJ⁻¹,
NPP gC m⁻² month⁻¹. Every computation is float64.

Design
------
* :func:`npp_monthly` is the model. It works pixel by pixel, so any block of
  rows gives the same numbers as the whole raster. Two interchangeable kernels
  sit behind it: a numba kernel (row blocks on a thread pool — the kernel
  releases the GIL — so both cores, low memory, safe inside Dask threads)
  and a vectorised numpy kernel (also used when the intermediate layers are
  requested). A parity test holds them equal.
* The per-year quantities (heat index ``I``, exponent ``a``, ``Topt``) are
  computed per pixel and per calendar year, so the series must cover whole
  calendar years starting in January.
* :func:`class_parameters` turns a land-cover raster into εmax / NDVImin /
  NDVImax / SRmin / SRmax rasters. Non-vegetated classes (CASA type
  ``"none"``) and codes without a class get NaN: the caller decides whether
  such pixels are NPP 0 or nodata; no default εmax is ever applied to them.
* Small statistics helpers (annual sums, summary statistics, plot
  validation, comparison with a reference NPP product, annual EET for the
  MAE driver) complete the stage.

Out of scope: reading or aligning rasters (``npp_core.dataset``), unit
conversion of inputs (:mod:`npp_core.units`), writing outputs.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

try:  # the compiled kernel is optional; the numpy kernel gives the same numbers
    import numba
except ImportError:  # pragma: no cover
    numba = None

__all__ = [
    "CasaError",
    "CASA_TYPES",
    "ZHU_TABLE",
    "NDVI_MIN_ZHU",
    "SR_MIN_ZHU",
    "PET_ZERO_CHOICES",
    "npp_monthly",
    "class_parameters",
    "annual",
    "annual_eet",
    "summary_stats",
    "validate_plots",
    "compare_reference",
    "heat_index",
    "thornthwaite_exponent",
    "thornthwaite_ep0",
    "net_radiation",
    "eet",
    "teps1",
    "teps2",
    "fpar",
    "optimum_temperature",
]


class CasaError(ValueError):
    """Inputs or parameters CASA cannot use; the message names the input, the problem and the fix."""


#: CASA vegetation types understood by :func:`class_parameters` ("none" = not vegetated).
CASA_TYPES: tuple[str, ...] = (
    "evergreen_needleleaf",
    "evergreen_broadleaf",
    "deciduous_needleleaf",
    "deciduous_broadleaf",
    "mixed_forest",
    "shrub",
    "grassland",
    "cropland",
    "other",
    "none",
)

#: NDVImin and SRmin of every vegetation type in the Zhu et al. (2007) table.
NDVI_MIN_ZHU = 0.023
SR_MIN_ZHU = 1.05

#: Zhu et al. (2007): vegetation type -> (NDVImax, SRmax).
ZHU_TABLE: dict[str, tuple[float, float]] = {
    "evergreen_needleleaf": (0.647, 4.67),
    "evergreen_broadleaf": (0.676, 5.17),
    "deciduous_needleleaf": (0.738, 6.63),
    "deciduous_broadleaf": (0.747, 6.91),
    "mixed_forest": (0.702, 5.72),
    "shrub": (0.636, 4.49),
    "grassland": (0.634, 4.46),
    "cropland": (0.634, 4.46),
    "other": (0.634, 4.46),
}

#: Accepted values of the ``pet_zero`` switch (Wε in months with PET = 0).
PET_ZERO_CHOICES: tuple[str, ...] = ("0.5", "previous", "1", "0", "nan")
_PET_ZERO_CODE = {"0.5": 0, "previous": 1, "1": 2, "0": 3, "nan": 4}

# Thornthwaite and water-balance constants.
_HI_EXP = 1.514
_RN_A = 0.369
_RN_B = 0.598

# ----------------------------------------------------------------------------
# Elementary scalars (vectorised numpy; exposed for tests and for display)
# ----------------------------------------------------------------------------


def heat_index(temperature_year: np.ndarray) -> np.ndarray:
    """Thornthwaite annual heat index.

    Parameters
    ----------
    temperature_year : ndarray, shape (12, ...)
        Monthly mean temperature of one calendar year, °C.

    Returns
    -------
    ndarray, shape (...)
        ``I = Σ (T/5)^1.514`` over the months with T > 0 (dimensionless).
        NaN where any month's temperature is NaN.
    """
    t = np.asarray(temperature_year, dtype=np.float64)
    pos = np.where(t > 0, t, 0.0)
    out = np.sum(np.power(pos / 5.0, _HI_EXP), axis=0)
    return np.where(np.isnan(t).any(axis=0), np.nan, out)


def thornthwaite_exponent(i: np.ndarray) -> np.ndarray:
    """Thornthwaite exponent ``a = 6.75e-7 I³ − 7.71e-5 I² + 1.792e-2 I + 0.49239``."""
    i = np.asarray(i, dtype=np.float64)
    return ((6.75e-7 * i - 7.71e-5) * i + 1.792e-2) * i + 0.49239


def thornthwaite_ep0(temperature: np.ndarray, i: np.ndarray, a: np.ndarray | None = None) -> np.ndarray:
    """Unadjusted Thornthwaite potential evapotranspiration, mm month⁻¹.

    ``Ep0 = 16 (10 T / I)^a`` where T > 0 and I > 0, else 0 (NaN where T or I is NaN).

    Parameters
    ----------
    temperature : ndarray
        Monthly mean temperature, °C.
    i : ndarray
        Heat index of the pixel's year (broadcast against ``temperature``).
    a : ndarray, optional
        Exponent; computed from ``i`` when omitted.
    """
    t = np.asarray(temperature, dtype=np.float64)
    i = np.asarray(i, dtype=np.float64)
    if a is None:
        a = thornthwaite_exponent(i)
    ok = (t > 0) & (i > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        val = 16.0 * np.power(10.0 * t / np.where(ok, i, 1.0), a)
    out = np.where(ok, val, 0.0)
    return np.where(np.isnan(t) | np.isnan(i), np.nan, out)


def net_radiation(precipitation: np.ndarray, ep0: np.ndarray) -> np.ndarray:
    """Zhou & Zhang net-radiation term ``Rn = 0.369 √(Ep0·P) + 0.598 Ep0``, mm month⁻¹."""
    p = np.asarray(precipitation, dtype=np.float64)
    e = np.asarray(ep0, dtype=np.float64)
    return _RN_A * np.sqrt(e * p) + _RN_B * e


def eet(precipitation: np.ndarray, rn: np.ndarray) -> np.ndarray:
    """Estimated actual evapotranspiration (Zhou & Zhang 1995), mm month⁻¹.

    ``EET = P Rn (P² + Rn² + P Rn) / ((P + Rn)(P² + Rn²))``, 0 where ``P·Rn = 0``.
    """
    p = np.asarray(precipitation, dtype=np.float64)
    r = np.asarray(rn, dtype=np.float64)
    pr = p * r
    with np.errstate(divide="ignore", invalid="ignore"):
        val = pr * (p * p + r * r + pr) / ((p + r) * (p * p + r * r))
    return np.where(pr == 0, 0.0, val)


def teps1(topt: np.ndarray) -> np.ndarray:
    """Low/high temperature stress ``Tε1 = 0.8 + 0.02 Topt − 0.0005 Topt²`` (floored at 0).

    The −10 °C rule (Tε1 = 0 in a month with T ≤ −10 °C) depends on the month's
    temperature and is applied by :func:`npp_monthly`. The floor at 0 only
    matters for Topt < −24.7 °C or > 64.7 °C and keeps NPP ≥ 0.
    """
    x = np.asarray(topt, dtype=np.float64)
    return np.maximum(0.8 + 0.02 * x - 0.0005 * x * x, 0.0)


def _teps2_raw(t: np.ndarray, topt: np.ndarray, coef: float) -> np.ndarray:
    return coef / ((1.0 + np.exp(0.2 * (topt - 10.0 - t))) * (1.0 + np.exp(0.3 * (-topt - 10.0 + t))))


def teps2(
    temperature: np.ndarray, topt: np.ndarray, *, coef: float = 1.1814, halving: bool = True
) -> np.ndarray:
    """Temperature scalar for departures from the optimum.

    ``Tε2 = coef / ([1 + exp(0.2 (Topt − 10 − T))] [1 + exp(0.3 (−Topt − 10 + T))])``.
    With ``halving``, where ``T > Topt + 10`` or ``T < Topt − 13`` the value is
    ``½ Tε2(T = Topt)`` (0.495612 with coef 1.1814).
    """
    t = np.asarray(temperature, dtype=np.float64)
    to = np.asarray(topt, dtype=np.float64)
    with np.errstate(over="ignore"):
        val = _teps2_raw(t, to, coef)
    if halving:
        half = 0.5 * coef / ((1.0 + math.exp(-2.0)) * (1.0 + math.exp(-3.0)))
        val = np.where((t > to + 10.0) | (t < to - 13.0), half, val)
    return val


def fpar(
    ndvi: np.ndarray,
    ndvi_min: np.ndarray,
    ndvi_max: np.ndarray,
    sr_min: np.ndarray,
    sr_max: np.ndarray,
    *,
    alpha: float = 0.5,
    fpar_range: tuple[float, float] = (0.001, 0.95),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """FPAR from NDVI and SR (Zhu et al. 2006).

    NDVI is clipped to [NDVImin, NDVImax] first; ``SR = (1 + NDVI)/(1 − NDVI)``.

    Returns
    -------
    (fpar, fpar_ndvi, fpar_sr, sr) : tuple of ndarray
        ``fpar = α·FPAR_NDVI + (1 − α)·FPAR_SR`` clipped to ``fpar_range``.
    """
    lo, hi = fpar_range
    n = np.clip(np.asarray(ndvi, dtype=np.float64), ndvi_min, ndvi_max)
    sr = (1.0 + n) / (1.0 - n)
    f_n = (n - ndvi_min) / (ndvi_max - ndvi_min) * (hi - lo) + lo
    f_s = (sr - sr_min) / (sr_max - sr_min) * (hi - lo) + lo
    f = np.clip(alpha * f_n + (1.0 - alpha) * f_s, lo, hi)
    return f, f_n, f_s, sr


def optimum_temperature(ndvi_year: np.ndarray, temperature_year: np.ndarray) -> np.ndarray:
    """Topt: temperature of the month with the highest NDVI in the year.

    Ties go to the first such month; NaN NDVI months are ignored; NaN where the
    year has no valid NDVI.

    Parameters
    ----------
    ndvi_year, temperature_year : ndarray, shape (12, ...)
    """
    n = np.asarray(ndvi_year, dtype=np.float64)
    t = np.asarray(temperature_year, dtype=np.float64)
    filled = np.where(np.isnan(n), -np.inf, n)
    k = np.argmax(filled, axis=0)
    topt = np.take_along_axis(t, k[None], axis=0)[0]
    return np.where(np.isnan(n).all(axis=0), np.nan, topt)


# ----------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------


def _check_months(months: Sequence[str] | None, n: int) -> None:
    if months is None:
        return
    if len(months) != n:
        raise CasaError(
            f"months: {len(months)} labels for {n} bands; give one 'YYYY-MM' label per band of the monthly series."
        )
    ym = []
    for s in months:
        try:
            y, m = int(str(s)[:4]), int(str(s)[5:7])
        except ValueError:
            raise CasaError(f"months: label {s!r} is not 'YYYY-MM'; label every band with its month.") from None
        ym.append(y * 12 + (m - 1))
    if ym[0] % 12 != 0:
        raise CasaError(
            f"months: the series starts in {months[0]}, not January; CASA computes Topt and the heat index per "
            "calendar year, so drop the leading months or supply the series from January."
        )
    gaps = [months[i + 1] for i in range(n - 1) if ym[i + 1] != ym[i] + 1]
    if gaps:
        raise CasaError(
            f"months: the series is not consecutive (break before {gaps[0]}); supply every month of each year in order."
        )


def _as_param(name: str, value: Any, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(shape, float(arr))
    if arr.shape != shape:
        raise CasaError(
            f"{name}: shape {arr.shape} does not match the (rows, cols) {shape} of the monthly inputs; give a scalar "
            "or a raster on the same grid (see class_parameters)."
        )
    return np.ascontiguousarray(arr)


def _validate(
    ndvi: np.ndarray, temperature: np.ndarray, precipitation: np.ndarray, solar: np.ndarray
) -> tuple[int, int, int]:
    arrays = {"ndvi": ndvi, "temperature": temperature, "precipitation": precipitation, "solar": solar}
    for name, a in arrays.items():
        if a.ndim != 3:
            raise CasaError(
                f"{name}: expected a (months, rows, cols) array, got {a.ndim} dimension(s) {a.shape}; stack the monthly "
                "bands along the first axis."
            )
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise CasaError(f"{name}: dtype {a.dtype} is not numeric.")
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        desc = ", ".join(f"{k} {v}" for k, v in shapes.items())
        raise CasaError(
            f"monthly inputs differ in shape ({desc}); align every input to the reference grid and the same months."
        )
    m, r, c = ndvi.shape
    if m == 0 or m % 12 != 0:
        raise CasaError(
            f"monthly inputs have {m} months; CASA needs whole calendar years starting in January (a multiple of "
            "12 bands): trim or complete the series."
        )
    return m, r, c


def _check_values(ndvi: np.ndarray, precipitation: np.ndarray, solar: np.ndarray) -> None:
    with np.errstate(invalid="ignore"):
        if ndvi.size and np.issubdtype(ndvi.dtype, np.floating):
            hi = np.fmax.reduce(ndvi, axis=None)
            lo = np.fmin.reduce(ndvi, axis=None)
        else:
            hi, lo = (ndvi.max(), ndvi.min()) if ndvi.size else (0, 0)
        # Small overshoots (fusion can predict 1.02) are harmless: NDVI is clipped to the class range.
        if np.isfinite(hi) and hi > 1.5 or np.isfinite(lo) and lo < -1.5:
            hint = " (looks scaled by 10000: declare scale = 0.0001)" if hi > 100 else " (looks scaled)"
            raise CasaError(
                f"ndvi: values range {lo:g}..{hi:g}, far outside [-1, 1]{hint}; give NDVI as a fraction."
            )
        for name, a in (("precipitation", precipitation), ("solar", solar)):
            if not a.size:
                continue
            lo = np.fmin.reduce(a, axis=None) if np.issubdtype(a.dtype, np.floating) else a.min()
            if np.isfinite(lo) and lo < 0:
                n_neg = int(np.count_nonzero(a < 0))
                raise CasaError(
                    f"{name}: {n_neg} negative value(s) (min {lo:g}); a monthly total cannot be negative — check the "
                    "nodata value, scale and offset of this input."
                )


# ----------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------


def npp_monthly(
    ndvi: np.ndarray,
    temperature: np.ndarray,
    precipitation: np.ndarray,
    solar: np.ndarray,
    eps_max: float | np.ndarray,
    ndvi_min: float | np.ndarray,
    ndvi_max: float | np.ndarray,
    *,
    halving: bool = True,
    teps2_coef: float = 1.1814,
    fpar_alpha: float = 0.5,
    w_clip: tuple[float, float] = (0.5, 1.0),
    pet_zero: str = "0.5",
    cold_limit: float | None = -10.0,
    sr_max: float | np.ndarray | None = None,
    sr_min: float | np.ndarray | None = None,
    fpar_range: tuple[float, float] = (0.001, 0.95),
    months: Sequence[str] | None = None,
    return_layers: bool = False,
    engine: str = "auto",
    threads: int | None = None,
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Monthly NPP by the CASA model.

    Parameters
    ----------
    ndvi : ndarray, shape (months, rows, cols)
        Monthly NDVI (fraction, −1..1; small overshoots are clipped to the class
        range like any other value). ``months`` is a multiple of 12 and the
        series starts in January (Topt and the heat index are per calendar year).
    temperature : ndarray, shape (months, rows, cols)
        Monthly mean air temperature, °C.
    precipitation : ndarray, shape (months, rows, cols)
        Monthly precipitation, mm month⁻¹ (≥ 0).
    solar : ndarray, shape (months, rows, cols)
        Monthly total solar radiation, MJ m⁻² month⁻¹ (≥ 0).
    eps_max : float or ndarray, shape (rows, cols)
        Maximum light-use efficiency, gC MJ⁻¹. NaN = not vegetated / nodata →
        NPP NaN there (the caller decides between 0 and nodata).
    ndvi_min, ndvi_max : float or ndarray, shape (rows, cols)
        NDVI range of the pixel's class (NDVI is clipped to it for FPAR).
    halving : bool
        Tε2 = ½ Tε2(T = Topt) where T > Topt + 10 °C or T < Topt − 13 °C.
    teps2_coef : float
        Numerator of Tε2 (1.1814).
    fpar_alpha : float
        Weight of FPAR_NDVI in the FPAR mix (1 − α for FPAR_SR).
    w_clip : (float, float)
        Clip range of Wε.
    pet_zero : {"0.5", "previous", "1", "0", "nan"}
        Wε where PET = 0 (T ≤ 0 °C; numbers 0.5, 1, 0 are accepted too): a constant, NaN, or the previous month's
        Wε ("previous": the last defined Wε of the pixel, carried across years;
        0.5 before the first one).
    cold_limit : float or None
        Tε1 = 0 in a month whose own mean temperature is ≤ this (°C); None disables.
    sr_max, sr_min : float or ndarray (rows, cols), optional
        SR range; derived from NDVImax/NDVImin by ``(1 + NDVI)/(1 − NDVI)`` when omitted.
    fpar_range : (float, float)
        FPAR clamps (0.001, 0.95), also the scale of FPAR_NDVI and FPAR_SR.
    months : sequence of str, optional
        'YYYY-MM' label of each band; when given, checked to be consecutive and to start in January.
    return_layers : bool
        Also return the intermediate layers (uses the numpy kernel; memory ≈ 20× one input).
    engine : {"auto", "numba", "numpy"}
        Kernel; "auto" = numba unless ``return_layers``.
    threads : int, optional
        Threads for the numba kernel (row blocks; default: every core). Use 1
        when the caller already runs blocks in parallel (e.g. Dask).

    Returns
    -------
    npp : ndarray of float64, shape (months, rows, cols)
        gC m⁻² month⁻¹; NaN where any input of the month (or the year's
        temperature / NDVI needed for Topt and I) or a class parameter is NaN.
    layers : dict of ndarray, only with ``return_layers``
        (months, rows, cols): "FPAR", "FPAR_NDVI", "FPAR_SR", "SR", "APAR",
        "Teps1", "Teps2", "Weps", "eps", "Ep0", "Rn", "EET", "PET";
        (years, rows, cols): "Topt", "I", "a".

    Raises
    ------
    CasaError
        Shapes that differ, months not whole years / not from January, NDVI
        beyond ±1.5 (scaled NDVI), negative precipitation or solar, bad parameters.
    """
    ndvi = np.asarray(ndvi)
    temperature = np.asarray(temperature)
    precipitation = np.asarray(precipitation)
    solar = np.asarray(solar)
    m, r, c = _validate(ndvi, temperature, precipitation, solar)
    _check_months(months, m)
    if isinstance(pet_zero, (int, float)) and not isinstance(pet_zero, bool):
        pet_zero = "nan" if pet_zero != pet_zero else f"{pet_zero:g}"
    pet_zero = str(pet_zero).strip().lower()
    if pet_zero not in _PET_ZERO_CODE:
        raise CasaError(f"pet_zero: {pet_zero!r} is not one of {', '.join(PET_ZERO_CHOICES)}.")
    if engine not in ("auto", "numba", "numpy"):
        raise CasaError(f"engine: {engine!r} is not one of auto, numba, numpy.")
    w_lo, w_hi = (float(w_clip[0]), float(w_clip[1]))
    if not w_lo <= w_hi:
        raise CasaError(f"w_clip: {w_clip} must be (low, high) with low ≤ high, e.g. (0.5, 1.0).")
    f_lo, f_hi = (float(fpar_range[0]), float(fpar_range[1]))
    if not 0 <= f_lo < f_hi <= 1:
        raise CasaError(f"fpar_range: {fpar_range} must be (low, high) with 0 ≤ low < high ≤ 1, e.g. (0.001, 0.95).")
    if not 0 <= fpar_alpha <= 1:
        raise CasaError(f"fpar_alpha: {fpar_alpha} must lie in [0, 1] (0.5 mixes FPAR_NDVI and FPAR_SR equally).")
    _check_values(ndvi, precipitation, solar)

    shape2 = (r, c)
    eps = _as_param("eps_max", eps_max, shape2)
    nmin = _as_param("ndvi_min", ndvi_min, shape2)
    nmax = _as_param("ndvi_max", ndvi_max, shape2)
    with np.errstate(invalid="ignore"):
        if np.any(eps < 0):
            raise CasaError("eps_max: negative εmax; give gC MJ-1 (e.g. 0.389–0.985) or NaN for non-vegetated pixels.")
        bad = (nmax <= nmin) | (nmin <= -1) | (nmax >= 1)
    if np.any(bad):
        raise CasaError(
            "ndvi_min/ndvi_max: need -1 < NDVImin < NDVImax < 1 for every vegetated pixel; "
            f"{int(np.count_nonzero(bad))} pixel(s) violate it (check the class table or overrides)."
        )
    srmin = (1.0 + nmin) / (1.0 - nmin) if sr_min is None else _as_param("sr_min", sr_min, shape2)
    srmax = (1.0 + nmax) / (1.0 - nmax) if sr_max is None else _as_param("sr_max", sr_max, shape2)
    with np.errstate(invalid="ignore"):
        if np.any(srmax <= srmin):
            raise CasaError("sr_min/sr_max: need SRmin < SRmax for every vegetated pixel (check the class table).")
    cold = -np.inf if cold_limit is None else float(cold_limit)
    pz = _PET_ZERO_CODE[pet_zero]

    use_numba = engine == "numba" or (engine == "auto" and not return_layers)
    if return_layers and engine == "numba":
        raise CasaError("return_layers=True needs engine='numpy' or 'auto' (the numba kernel keeps no layers).")
    if use_numba and _npp_kernel is None:
        if engine == "numba":
            raise CasaError("engine='numba': numba is not installed; use engine='numpy' or install numba.")
        use_numba = False
    if use_numba:
        dt = np.float32 if all(a.dtype == np.float32 for a in (ndvi, temperature, precipitation, solar)) else np.float64
        ins = [np.ascontiguousarray(a, dtype=dt) for a in (ndvi, temperature, precipitation, solar)]
        out = np.empty((m, r, c), dtype=np.float64)
        args = (*ins, eps, nmin, nmax, srmin, srmax, bool(halving), float(teps2_coef), float(fpar_alpha),
                w_lo, w_hi, pz, cold, f_lo, f_hi, out)
        _run_threaded(_npp_kernel, args, r, threads)
        return out
    return _npp_numpy(
        ndvi, temperature, precipitation, solar, eps, nmin, nmax, srmin, srmax,
        halving=bool(halving), coef=float(teps2_coef), alpha=float(fpar_alpha), w_clip=(w_lo, w_hi),
        pz=pz, cold=cold, fpar_range=(f_lo, f_hi), return_layers=return_layers,
    )


def _npp_numpy(
    ndvi: np.ndarray,
    temperature: np.ndarray,
    precipitation: np.ndarray,
    solar: np.ndarray,
    eps: np.ndarray,
    nmin: np.ndarray,
    nmax: np.ndarray,
    srmin: np.ndarray,
    srmax: np.ndarray,
    *,
    halving: bool,
    coef: float,
    alpha: float,
    w_clip: tuple[float, float],
    pz: int,
    cold: float,
    fpar_range: tuple[float, float],
    return_layers: bool,
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Vectorised numpy kernel: loops over months, vectorised over pixels."""
    m, r, c = ndvi.shape
    ny = m // 12
    out = np.empty((m, r, c), dtype=np.float64)
    names = ("FPAR", "FPAR_NDVI", "FPAR_SR", "SR", "APAR", "Teps1", "Teps2", "Weps", "eps", "Ep0", "Rn", "EET", "PET")
    layers: dict[str, np.ndarray] = {}
    if return_layers:
        layers = {k: np.empty((m, r, c), dtype=np.float64) for k in names}
        for k in ("Topt", "I", "a"):
            layers[k] = np.empty((ny, r, c), dtype=np.float64)
    const_w = {0: 0.5, 2: 1.0, 3: 0.0, 4: np.nan}.get(pz, 0.5)
    prev_w = np.full((r, c), 0.5)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for y in range(ny):
            sl = slice(12 * y, 12 * y + 12)
            t_year = np.asarray(temperature[sl], dtype=np.float64)
            i = heat_index(t_year)
            a = thornthwaite_exponent(i)
            topt = optimum_temperature(ndvi[sl], t_year)
            te1_base = teps1(topt)
            if return_layers:
                layers["Topt"][y], layers["I"][y], layers["a"][y] = topt, i, a
            for k in range(12):
                mi = 12 * y + k
                t = t_year[k]
                p = np.asarray(precipitation[mi], dtype=np.float64)
                s = np.asarray(solar[mi], dtype=np.float64)
                n = np.asarray(ndvi[mi], dtype=np.float64)
                f, f_n, f_s, sr = fpar(n, nmin, nmax, srmin, srmax, alpha=alpha, fpar_range=fpar_range)
                apar = s * f * 0.5
                te1 = np.where(t <= cold, 0.0, te1_base)
                te2 = teps2(t, topt, coef=coef, halving=halving)
                ep0 = thornthwaite_ep0(t, i, a)
                rn = net_radiation(p, ep0)
                e = eet(p, rn)
                pet = (e + ep0) / 2.0
                w = np.clip(0.5 + 0.5 * e / pet, w_clip[0], w_clip[1])
                frozen = pet == 0
                if pz == 1:
                    w = np.where(frozen, prev_w, w)
                    prev_w = np.where(np.isnan(w), prev_w, w)
                else:
                    w = np.where(frozen, const_w, w)
                w = np.where(np.isnan(pet), np.nan, w)
                ep = eps * te1 * te2 * w
                npp = apar * ep
                out[mi] = npp
                if return_layers:
                    for key, val in zip(names, (f, f_n, f_s, sr, apar, te1, te2, w, ep, ep0, rn, e, pet)):
                        layers[key][mi] = val
    if return_layers:
        return out, layers
    return out


# ----------------------------------------------------------------------------
# numba kernel: one pass per pixel-month over a block of rows (releases the GIL)
# ----------------------------------------------------------------------------

def _run_threaded(kernel: Any, args: tuple, rows: int, threads: int | None) -> None:
    """Run ``kernel(*args, r0, r1)`` on row blocks in a thread pool (the kernel releases the GIL)."""
    n = threads if threads else (os.cpu_count() or 1)
    n = max(1, min(n, rows))
    if n == 1:
        kernel(*args, 0, rows)
        return
    # more blocks than threads balances rows of unequal cost (e.g. non-vegetated stretches)
    edges = np.linspace(0, rows, min(rows, 4 * n) + 1).astype(int)
    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(kernel, *args, int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
        for f in futures:
            f.result()


def _make_numba_kernel():  # pragma: no cover - compiled
    from numba import njit

    @njit(cache=True, nogil=True)
    def kernel(ndvi, tmp, pre, sol, eps, nmin, nmax, srmin, srmax, halving, coef, alpha,
               w_lo, w_hi, pz, cold, f_lo, f_hi, out, r0, r1):
        m, nr, nc = ndvi.shape
        ny = m // 12
        nan = np.nan
        half = 0.5 * coef / ((1.0 + math.exp(-2.0)) * (1.0 + math.exp(-3.0)))
        const_w = 0.5
        if pz == 2:
            const_w = 1.0
        elif pz == 3:
            const_w = 0.0
        elif pz == 4:
            const_w = nan
        fspan = f_hi - f_lo
        log5 = math.log(5.0)
        log10 = math.log(10.0)
        for r in range(r0, r1):
            hi_ = np.empty(nc)
            ex = np.empty(nc)
            topt = np.empty(nc)
            best = np.empty(nc)
            te1b = np.empty(nc)
            k2a = np.empty(nc)
            k2b = np.empty(nc)
            logi = np.empty(nc)
            lt = np.empty((12, nc))  # log T of the year's months (T > 0), shared by I and Ep0
            prev = np.full(nc, 0.5)
            for y in range(ny):
                for c in range(nc):
                    hi_[c] = 0.0
                    best[c] = -np.inf
                    topt[c] = nan
                for k in range(12):
                    mi = 12 * y + k
                    for c in range(nc):
                        tv = np.float64(tmp[mi, r, c])
                        if tv > 0.0:
                            lv = math.log(tv)
                            lt[k, c] = lv
                            hi_[c] += math.exp(1.514 * (lv - log5))
                        elif tv != tv:
                            hi_[c] = nan
                        nv = np.float64(ndvi[mi, r, c])
                        if nv > best[c]:
                            best[c] = nv
                            topt[c] = tv
                for c in range(nc):
                    i = hi_[c]
                    ex[c] = ((6.75e-7 * i - 7.71e-5) * i + 1.792e-2) * i + 0.49239
                    logi[c] = math.log(i) if i > 0.0 else 0.0
                    to = topt[c]
                    v = 0.8 + 0.02 * to - 0.0005 * to * to
                    te1b[c] = v if v > 0.0 else (0.0 if v == v else nan)
                    # Tε2 = coef / ((1 + k2a·u⁻²)(1 + k2b·u³)) with u = exp(0.1 T)
                    k2a[c] = math.exp(0.2 * (to - 10.0))
                    k2b[c] = math.exp(-0.3 * (to + 10.0))
                for k in range(12):
                    mi = 12 * y + k
                    for c in range(nc):
                        e_max = eps[r, c]
                        if e_max != e_max:
                            out[mi, r, c] = nan
                            continue
                        t = np.float64(tmp[mi, r, c])
                        p = np.float64(pre[mi, r, c])
                        i = hi_[c]
                        # water balance
                        if t != t or i != i or p != p:
                            w = nan
                        else:
                            if t > 0.0 and i > 0.0:
                                ep0 = 16.0 * math.exp(ex[c] * (log10 + lt[k, c] - logi[c]))
                            else:
                                ep0 = 0.0
                            rn = 0.369 * math.sqrt(ep0 * p) + 0.598 * ep0
                            pr = p * rn
                            if pr == 0.0:
                                ee = 0.0
                            else:
                                p2r2 = p * p + rn * rn
                                ee = pr * (p2r2 + pr) / ((p + rn) * p2r2)
                            pet = 0.5 * (ee + ep0)
                            if pet == 0.0:
                                if pz == 1:
                                    w = prev[c]
                                else:
                                    w = const_w
                            else:
                                w = 0.5 + 0.5 * ee / pet
                                if w < w_lo:
                                    w = w_lo
                                elif w > w_hi:
                                    w = w_hi
                            if pz == 1 and w == w:
                                prev[c] = w
                        # FPAR
                        lo = nmin[r, c]
                        hi = nmax[r, c]
                        n = np.float64(ndvi[mi, r, c])
                        if n < lo:
                            n = lo
                        elif n > hi:
                            n = hi
                        sr = (1.0 + n) / (1.0 - n)
                        s_lo = srmin[r, c]
                        f_n = (n - lo) / (hi - lo) * fspan + f_lo
                        f_s = (sr - s_lo) / (srmax[r, c] - s_lo) * fspan + f_lo
                        f = alpha * f_n + (1.0 - alpha) * f_s
                        if f < f_lo:
                            f = f_lo
                        elif f > f_hi:
                            f = f_hi
                        # temperature scalars
                        to = topt[c]
                        te1 = 0.0 if t <= cold else te1b[c]
                        if halving and (t > to + 10.0 or t < to - 13.0):
                            te2 = half
                        else:
                            u = math.exp(0.1 * t)
                            te2 = coef / ((1.0 + k2a[c] / (u * u)) * (1.0 + k2b[c] * u * u * u))
                        out[mi, r, c] = np.float64(sol[mi, r, c]) * f * 0.5 * (e_max * te1 * te2 * w)

    return kernel


_npp_kernel = _make_numba_kernel() if numba is not None else None


# ----------------------------------------------------------------------------
# Per-class parameters
# ----------------------------------------------------------------------------

_OVERRIDE_KEYS = ("eps_max", "ndvi_min", "ndvi_max", "sr_min", "sr_max")


def _sr(n: float) -> float:
    return (1.0 + n) / (1.0 - n)


def _class_codes(landcover: np.ndarray, classes: Mapping[Any, str]) -> dict[int, str]:
    codes: dict[int, str] = {}
    for k, name in classes.items():
        try:
            kf = float(k)
        except (TypeError, ValueError):
            raise CasaError(f"landcover classes: code {k!r} (class {name!r}) is not a number; use the raster codes.") from None
        if kf != int(kf):
            raise CasaError(f"landcover classes: code {k!r} (class {name!r}) is not an integer.")
        codes[int(kf)] = str(name)
    return codes


def _class_masks(landcover: np.ndarray, codes: Mapping[int, str]) -> dict[int, np.ndarray]:
    lc = np.asarray(landcover)
    if lc.ndim != 2:
        raise CasaError(f"landcover: expected a (rows, cols) raster, got shape {lc.shape}.")
    if np.issubdtype(lc.dtype, np.floating):
        finite = np.isfinite(lc)
        return {code: finite & (lc == code) for code in codes}
    return {code: lc == code for code in codes}


def class_parameters(
    landcover: np.ndarray,
    classes: Mapping[Any, str],
    casa_type: Mapping[str, str],
    *,
    eps_max_table: Mapping[str, float],
    ndvi_range: str = "zhu_table",
    ndvi: np.ndarray | None = None,
    percentiles: tuple[float, float] = (5.0, 95.0),
    overrides: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """εmax, NDVImin/max and SRmin/max rasters from a land-cover raster.

    Parameters
    ----------
    landcover : ndarray, shape (rows, cols)
        Integer class codes (any code not in ``classes``, e.g. −1, or NaN in a
        float raster, is nodata).
    classes : mapping {code: class name}
        Codes may be ints or numeric strings (as in TOML).
    casa_type : mapping {class name: CASA type}
        One of :data:`CASA_TYPES`; ``"none"`` = not vegetated (parameters NaN).
    eps_max_table : mapping {CASA type: εmax}
        gC MJ⁻¹, e.g. ``params.EPS_MAX_DEFAULT`` (times ``casa.eps_scale``).
    ndvi_range : {"zhu_table", "percentile"}
        "zhu_table": NDVImin 0.023 / SRmin 1.05 and the type's NDVImax / SRmax
        of Zhu et al. (2007). "percentile": NDVImin/max are the
        ``percentiles`` of the class's own NDVI, **pooled over every pixel of
        the class and every month** of ``ndvi`` (NaN ignored); SRmin/max are
        derived from them by ``(1 + NDVI)/(1 − NDVI)``.
    ndvi : ndarray, shape (months, rows, cols), optional
        Required by "percentile".
    percentiles : (float, float)
        Lower and upper percentile for "percentile".
    overrides : mapping {class name: {"eps_max"|"ndvi_min"|"ndvi_max"|"sr_min"|"sr_max": value}}, optional
        Per-class values that replace the table. Overriding NDVImin/max
        without SRmin/max derives the SR bound from the new NDVI bound.

    Returns
    -------
    dict
        "eps_max", "ndvi_min", "ndvi_max", "sr_min", "sr_max": float64 rasters
        (rows, cols), NaN for non-vegetated classes, unknown codes and nodata;
        "table": list of dicts, one per class, with "code", "class",
        "casa_type", "pixels", the five parameters (None when not vegetated)
        and "source".

    Raises
    ------
    CasaError
        Unknown CASA type (listing the known ones), a class without a CASA
        type, a missing εmax, overrides for unknown or non-vegetated classes,
        "percentile" without NDVI or with a class that has no valid NDVI.
    """
    if ndvi_range not in ("zhu_table", "percentile"):
        raise CasaError(f"ndvi_range: {ndvi_range!r} is not one of zhu_table, percentile.")
    lc = np.asarray(landcover)
    codes = _class_codes(lc, classes)
    masks = _class_masks(lc, codes)
    overrides = dict(overrides or {})
    names = set(codes.values())
    for cname, ov in overrides.items():
        if cname not in names:
            raise CasaError(f"overrides: unknown class {cname!r}; classes: {', '.join(sorted(names))}.")
        bad = [k for k in ov if k not in _OVERRIDE_KEYS]
        if bad:
            raise CasaError(f"overrides[{cname!r}]: unknown key(s) {', '.join(bad)}; allowed: {', '.join(_OVERRIDE_KEYS)}.")
    if ndvi_range == "percentile":
        if ndvi is None:
            raise CasaError('ndvi_range="percentile" needs the monthly NDVI series (ndvi=...).')
        ndvi = np.asarray(ndvi)
        if ndvi.ndim != 3 or ndvi.shape[1:] != lc.shape:
            raise CasaError(f"ndvi: shape {ndvi.shape} does not match the landcover grid {lc.shape} (months, rows, cols).")
        p_lo, p_hi = percentiles
        if not 0 <= p_lo < p_hi <= 100:
            raise CasaError(f"percentiles: {percentiles} must satisfy 0 ≤ low < high ≤ 100, e.g. (5, 95).")

    out = {k: np.full(lc.shape, np.nan) for k in _OVERRIDE_KEYS}
    table: list[dict[str, Any]] = []
    for code in sorted(codes):
        cname = codes[code]
        if cname not in casa_type:
            raise CasaError(
                f"casa_type: class {cname!r} (code {code}) has no CASA type; add it to [landcover.casa_type] "
                f"as one of: {', '.join(CASA_TYPES)}."
            )
        ctype = str(casa_type[cname])
        if ctype not in CASA_TYPES:
            raise CasaError(
                f"casa_type: class {cname!r} has unknown CASA type {ctype!r}; known types: {', '.join(CASA_TYPES)}."
            )
        mask = masks[code]
        npx = int(np.count_nonzero(mask))
        row: dict[str, Any] = {"code": code, "class": cname, "casa_type": ctype, "pixels": npx}
        ov = overrides.get(cname, {})
        if ctype == "none":
            if ov:
                raise CasaError(
                    f"overrides[{cname!r}]: the class is not vegetated (casa_type 'none'); give it a CASA vegetation "
                    "type to model its NPP, or drop the override."
                )
            row.update({k: None for k in _OVERRIDE_KEYS})
            row["source"] = "not vegetated"
            table.append(row)
            continue
        if ctype not in eps_max_table and "eps_max" not in ov:
            raise CasaError(
                f"eps_max_table: no εmax for CASA type {ctype!r} (class {cname!r}); add casa.eps_max.{ctype} "
                "or an override."
            )
        eps = float(ov.get("eps_max", eps_max_table.get(ctype, np.nan)))
        source = "zhu_table"
        if ndvi_range == "zhu_table":
            nmin, nmax = NDVI_MIN_ZHU, ZHU_TABLE[ctype][0]
            smin, smax = SR_MIN_ZHU, ZHU_TABLE[ctype][1]
        else:
            source = f"percentile {percentiles[0]:g}/{percentiles[1]:g} pooled over all months"
            if npx == 0:  # class absent from this grid: nothing to parameterise
                row.update({k: None for k in _OVERRIDE_KEYS})
                row["source"] = source + " (class has no pixels)"
                table.append(row)
                continue
            vals = ndvi[:, mask].astype(np.float64, copy=False).ravel()
            vals = vals[np.isfinite(vals)]
            if vals.size == 0 and not ("ndvi_min" in ov and "ndvi_max" in ov):
                raise CasaError(
                    f"class {cname!r}: no valid NDVI for the percentile NDVI range; use ndvi_range = \"zhu_table\" "
                    "or override ndvi_min/ndvi_max for this class."
                )
            if vals.size:
                nmin, nmax = (float(x) for x in np.percentile(vals, [percentiles[0], percentiles[1]]))
            else:
                nmin = nmax = np.nan
            smin, smax = _sr(nmin), _sr(nmax)
        if "ndvi_min" in ov:
            nmin = float(ov["ndvi_min"])
            smin = _sr(nmin)
        if "ndvi_max" in ov:
            nmax = float(ov["ndvi_max"])
            smax = _sr(nmax)
        smin = float(ov.get("sr_min", smin))
        smax = float(ov.get("sr_max", smax))
        if ov:
            source += " + override (" + ", ".join(k for k in _OVERRIDE_KEYS if k in ov) + ")"
        if not (-1 < nmin < nmax < 1):
            raise CasaError(
                f"class {cname!r}: NDVImin {nmin:.4g} / NDVImax {nmax:.4g} ({source}) must satisfy −1 < min < max < 1; "
                "override ndvi_min/ndvi_max for this class or use the zhu_table."
            )
        if not smin < smax:
            raise CasaError(f"class {cname!r}: SRmin {smin:.4g} must be below SRmax {smax:.4g}; fix the override.")
        if not eps >= 0:
            raise CasaError(f"class {cname!r}: εmax {eps} must be ≥ 0 gC MJ-1.")
        for k, v in zip(_OVERRIDE_KEYS, (eps, nmin, nmax, smin, smax)):
            out[k][mask] = v
            row[k] = v
        row["source"] = source
        table.append(row)
    return {**out, "table": table}


# ----------------------------------------------------------------------------
# Statistics helpers
# ----------------------------------------------------------------------------


def annual(npp_monthly: np.ndarray, *, min_valid: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Annual NPP: the sum of each calendar year's 12 months.

    Parameters
    ----------
    npp_monthly : ndarray, shape (months, rows, cols)
        gC m⁻² month⁻¹, months a multiple of 12 from January.
    min_valid : int
        Fewest valid (finite) months for a defined annual value; with the
        default 12 any NaN month makes the year NaN. With fewer, the sum is of
        the valid months only (no gap filling).

    Returns
    -------
    annual : ndarray of float64, shape (years, rows, cols)
        gC m⁻² yr⁻¹.
    valid_months : ndarray of uint8, shape (years, rows, cols)
        Number of finite months in each year.
    """
    a = np.asarray(npp_monthly)
    if a.ndim != 3 or a.shape[0] == 0 or a.shape[0] % 12:
        raise CasaError(
            f"npp_monthly: shape {a.shape}; expected (months, rows, cols) with whole years (a multiple of 12 months)."
        )
    if not 1 <= min_valid <= 12:
        raise CasaError(f"min_valid: {min_valid} must be between 1 and 12 months.")
    ny = a.shape[0] // 12
    tot = np.empty((ny,) + a.shape[1:], dtype=np.float64)
    nval = np.empty((ny,) + a.shape[1:], dtype=np.uint8)
    for y in range(ny):
        blk = np.asarray(a[12 * y: 12 * y + 12], dtype=np.float64)
        ok = np.isfinite(blk)
        nval[y] = ok.sum(axis=0)
        s = np.where(ok, blk, 0.0).sum(axis=0)
        tot[y] = np.where(nval[y] >= min_valid, s, np.nan)
    return tot, nval


def annual_eet(temperature: np.ndarray, precipitation: np.ndarray) -> np.ndarray:
    """Annual estimated actual evapotranspiration of the CASA water balance.

    The MAE driver when no evapotranspiration raster is given.

    Parameters
    ----------
    temperature : ndarray, shape (months, rows, cols)
        °C, whole years from January.
    precipitation : ndarray, shape (months, rows, cols)
        mm month⁻¹.

    Returns
    -------
    ndarray of float64, shape (years, rows, cols)
        Σ EET over each year, mm yr⁻¹ (NaN where any month is NaN).
    """
    t = np.asarray(temperature)
    p = np.asarray(precipitation)
    if t.ndim != 3 or t.shape != p.shape:
        raise CasaError(
            f"temperature {t.shape} and precipitation {p.shape} must be (months, rows, cols) arrays of one shape."
        )
    if t.shape[0] == 0 or t.shape[0] % 12:
        raise CasaError(f"temperature: {t.shape[0]} months; give whole calendar years from January (multiple of 12).")
    ny = t.shape[0] // 12
    out = np.zeros((ny,) + t.shape[1:], dtype=np.float64)
    for y in range(ny):
        ty = np.asarray(t[12 * y: 12 * y + 12], dtype=np.float64)
        i = heat_index(ty)
        a = thornthwaite_exponent(i)
        for k in range(12):
            pk = np.asarray(p[12 * y + k], dtype=np.float64)
            if np.any(pk < 0):
                raise CasaError("precipitation: negative values; check the nodata value, scale and offset.")
            out[y] += eet(pk, net_radiation(pk, thornthwaite_ep0(ty[k], i, a)))
    return out


def _fin(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def summary_stats(
    npp_mean: np.ndarray, landcover: np.ndarray | None = None, classes: Mapping[Any, str] | None = None
) -> dict[str, Any]:
    """Basin statistics of an NPP map (the ``summary.json`` "npp" block).

    Parameters
    ----------
    npp_mean : ndarray, shape (rows, cols)
        gC m⁻² yr⁻¹; NaN pixels are left out.
    landcover : ndarray, shape (rows, cols), optional
    classes : mapping {code: class name}, optional

    Returns
    -------
    dict
        "mean", "sd" (sample SD, ddof = 1), "cv" (%, SD/mean·100), "min",
        "max", "n" (valid pixels) and "by_class" {class: mean} plus
        "count_by_class" {class: valid pixels}. Undefined values are None.
        The pixel-weighted mean of the class means equals "mean" when every
        valid pixel has a class.
    """
    x = np.asarray(npp_mean, dtype=np.float64)
    if x.ndim != 2:
        raise CasaError(f"npp_mean: expected a (rows, cols) raster, got shape {x.shape}.")
    ok = np.isfinite(x)
    v = x[ok]
    n = int(v.size)
    mean = float(v.mean()) if n else np.nan
    sd = float(v.std(ddof=1)) if n > 1 else np.nan
    cv = sd / mean * 100.0 if n > 1 and mean != 0 else np.nan
    res: dict[str, Any] = {
        "mean": _fin(mean),
        "sd": _fin(sd),
        "cv": _fin(cv),
        "min": _fin(v.min()) if n else None,
        "max": _fin(v.max()) if n else None,
        "n": n,
        "by_class": {},
        "count_by_class": {},
    }
    if landcover is not None and classes is not None:
        lc = np.asarray(landcover)
        if lc.shape != x.shape:
            raise CasaError(f"landcover: shape {lc.shape} differs from npp_mean {x.shape}; align them first.")
        codes = _class_codes(lc, classes)
        for code, mask in _class_masks(lc, codes).items():
            sel = x[mask & ok]
            res["by_class"][codes[code]] = _fin(sel.mean()) if sel.size else None
            res["count_by_class"][codes[code]] = int(sel.size)
    return res


def validate_plots(
    npp_mean: np.ndarray,
    transform: Any,
    plots: Iterable[Mapping[str, Any]] | Any,
    *,
    radius_m: float | None = None,
) -> list[dict[str, Any]]:
    """Simulated NPP at field plots.

    Parameters
    ----------
    npp_mean : ndarray, shape (rows, cols)
        gC m⁻² yr⁻¹.
    transform : affine.Affine
        The grid's pixel → map transform (rasterio convention, upper-left corner).
    plots : iterable of mappings, or a pandas DataFrame
        Each with "id", "x", "y" (grid CRS, reproject first) and "measured"
        (or "measured_npp"), gC m⁻² yr⁻¹; optional "radius_m".
    radius_m : float, optional
        Default footprint radius in CRS units (metres on a projected grid).
        A plot's own "radius_m" wins. The footprint is every pixel whose centre
        lies within the radius of (x, y); with no radius, or when no centre is
        that close, the one pixel containing the point.

    Returns
    -------
    list of dict
        {"id", "measured", "simulated", "n_pixels"}; "simulated" is the mean of
        the valid footprint pixels, None when the plot lies outside the grid
        or its footprint has no valid NPP.
    """
    x = np.asarray(npp_mean, dtype=np.float64)
    if x.ndim != 2:
        raise CasaError(f"npp_mean: expected a (rows, cols) raster, got shape {x.shape}.")
    if hasattr(plots, "to_dict"):
        plots = plots.to_dict("records")
    inv = ~transform
    nr, nc = x.shape
    px = (abs(transform.a) + abs(transform.e)) / 2.0
    res = []
    for k, pl in enumerate(plots):
        try:
            px_x, px_y = float(pl["x"]), float(pl["y"])
        except (KeyError, TypeError, ValueError):
            raise CasaError(f"plots: row {k} needs numeric 'x' and 'y' in the grid CRS; got {dict(pl)!r}.") from None
        meas = pl.get("measured", pl.get("measured_npp"))
        if meas is None:
            raise CasaError(f"plots: row {k} has no 'measured' (or 'measured_npp') value.")
        rad = pl.get("radius_m", radius_m)
        rad = None if rad is None or (isinstance(rad, float) and np.isnan(rad)) else float(rad)
        col_f = inv.a * px_x + inv.b * px_y + inv.c
        row_f = inv.d * px_x + inv.e * px_y + inv.f
        r0, c0 = int(np.floor(row_f)), int(np.floor(col_f))
        vals = np.empty(0)
        if rad is not None and rad > 0:
            span = int(np.ceil(rad / px)) + 1
            rr = np.arange(max(r0 - span, 0), min(r0 + span + 1, nr))
            cc = np.arange(max(c0 - span, 0), min(c0 + span + 1, nc))
            if rr.size and cc.size:
                gc, gr = np.meshgrid(cc + 0.5, rr + 0.5)
                xs = transform.a * gc + transform.b * gr + transform.c
                ys = transform.d * gc + transform.e * gr + transform.f
                inside = (xs - px_x) ** 2 + (ys - px_y) ** 2 <= rad * rad
                vals = x[np.ix_(rr, cc)][inside]
        if vals.size == 0 and 0 <= r0 < nr and 0 <= c0 < nc:
            vals = x[r0: r0 + 1, c0: c0 + 1].ravel()
        vals = vals[np.isfinite(vals)]
        res.append({
            "id": pl.get("id", k),
            "measured": float(meas),
            "simulated": float(vals.mean()) if vals.size else None,
            "n_pixels": int(vals.size),
        })
    return res


def compare_reference(
    npp_mean: np.ndarray, reference: np.ndarray, landcover: np.ndarray, classes: Mapping[Any, str]
) -> dict[str, dict[str, float | None]]:
    """Per-class mean of the simulated NPP and of a reference NPP product (e.g. MOD17A3).

    Parameters
    ----------
    npp_mean, reference : ndarray, shape (rows, cols)
        gC m⁻² yr⁻¹ on the same grid (reference already aligned and scaled).
    landcover : ndarray, shape (rows, cols)
    classes : mapping {code: class name}

    Returns
    -------
    dict {class: {"simulated", "reference", "n"}}
        Means over the pixels of the class where both maps are valid
        (None when there are none).
    """
    s = np.asarray(npp_mean, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    lc = np.asarray(landcover)
    if not (s.shape == r.shape == lc.shape) or s.ndim != 2:
        raise CasaError(
            f"npp_mean {s.shape}, reference {r.shape} and landcover {lc.shape} must be (rows, cols) rasters on one "
            "grid; align the reference product first."
        )
    ok = np.isfinite(s) & np.isfinite(r)
    codes = _class_codes(lc, classes)
    out: dict[str, dict[str, float | None]] = {}
    for code, mask in _class_masks(lc, codes).items():
        sel = mask & ok
        n = int(np.count_nonzero(sel))
        out[codes[code]] = {
            "simulated": float(s[sel].mean()) if n else None,
            "reference": float(r[sel].mean()) if n else None,
            "n": n,
        }
    return out
