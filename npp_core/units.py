"""Units of the monthly climate inputs: conversion to the CASA units and plausibility checks.

CASA works in MJ m⁻² month⁻¹ (solar), °C (temperature) and mm month⁻¹
(precipitation). :func:`convert` brings a declared unit to these; the
dataset loader applies ``value × scale + offset`` first, then
:func:`convert`, then :func:`check_plausible` on the converted values, which
returns human-readable warnings naming the file and the likely fix (the
commonest mistakes: solar in W m⁻² or per day, temperature in kelvin,
precipitation per day, NDVI scaled by 10 000).
"""
from __future__ import annotations

import calendar
from typing import Sequence

import numpy as np

__all__ = ["UnitsError", "UNITS", "CANONICAL", "convert", "month_days", "check_plausible", "normalise_units"]


class UnitsError(ValueError):
    """An unknown quantity or unit, or month labels that cannot be read."""


#: Canonical (CASA) unit of each quantity.
CANONICAL: dict[str, str] = {
    "solar": "MJ m-2 month-1",
    "temperature": "degC",
    "precipitation": "mm month-1",
}

#: Known units per quantity -> (multiplier per day of month, constant multiplier, offset):
#: canonical = value × (days if per-day else 1) × factor + offset.
UNITS: dict[str, dict[str, tuple[bool, float, float]]] = {
    "solar": {
        "MJ m-2 month-1": (False, 1.0, 0.0),
        "MJ m-2 d-1": (True, 1.0, 0.0),
        "kJ m-2 d-1": (True, 1e-3, 0.0),
        "W m-2": (True, 86400.0 / 1e6, 0.0),  # monthly mean flux
        "J m-2": (False, 1e-6, 0.0),  # monthly total
    },
    "temperature": {
        "degC": (False, 1.0, 0.0),
        "K": (False, 1.0, -273.15),
    },
    "precipitation": {
        "mm month-1": (False, 1.0, 0.0),
        "mm d-1": (True, 1.0, 0.0),
    },
}

_ALIASES: dict[str, dict[str, str]] = {
    "temperature": {"°c": "degC", "c": "degC", "celsius": "degC", "deg c": "degC", "kelvin": "K"},
    "solar": {
        "mj/m2/month": "MJ m-2 month-1",
        "mj m-2 mon-1": "MJ m-2 month-1",
        "mj/m2/d": "MJ m-2 d-1",
        "mj/m2/day": "MJ m-2 d-1",
        "mj m-2 day-1": "MJ m-2 d-1",
        "kj/m2/d": "kJ m-2 d-1",
        "kj/m2/day": "kJ m-2 d-1",
        "kj m-2 day-1": "kJ m-2 d-1",
        "w/m2": "W m-2",
        "w/m^2": "W m-2",
        "j/m2": "J m-2",
    },
    "precipitation": {
        "mm": "mm month-1",
        "mm/month": "mm month-1",
        "mm mon-1": "mm month-1",
        "mm/d": "mm d-1",
        "mm/day": "mm d-1",
        "mm day-1": "mm d-1",
    },
}


def normalise_units(quantity: str, units: str | None) -> str:
    """The canonical spelling of ``units`` for ``quantity`` (``None`` → the CASA unit).

    Raises
    ------
    UnitsError
        Unknown quantity or unit, listing the known ones.
    """
    if quantity not in UNITS:
        raise UnitsError(f"unknown quantity {quantity!r}; known: {', '.join(UNITS)}.")
    if units is None:
        return CANONICAL[quantity]
    u = " ".join(str(units).split())
    for known in UNITS[quantity]:
        if u.lower() == known.lower():
            return known
    alias = _ALIASES[quantity].get(u.lower())
    if alias is not None:
        return alias
    raise UnitsError(
        f"{quantity}: unknown units {units!r}; known units: "
        + ", ".join(f'"{k}"' for k in UNITS[quantity])
        + "."
    )


def month_days(months: Sequence[str]) -> np.ndarray:
    """Number of days of each month.

    Parameters
    ----------
    months : sequence of str
        Labels ``"YYYY-MM"`` (or ``"YYYY-MM-DD"``; the day is ignored).

    Returns
    -------
    ndarray of int, shape (len(months),)
        28–31 (leap years handled).
    """
    out = np.empty(len(months), dtype=np.int64)
    for i, s in enumerate(months):
        txt = str(s).strip()
        try:
            if len(txt) < 7 or txt[4] not in "-_/":
                raise ValueError
            y, m = int(txt[:4]), int(txt[5:7])
            if not 1 <= m <= 12:
                raise ValueError
        except ValueError:
            raise UnitsError(f"month label {s!r} is not 'YYYY-MM'; label each band with its month.") from None
        out[i] = calendar.monthrange(y, m)[1]
    return out


def convert(
    values: np.ndarray,
    quantity: str,
    units: str | None,
    month_days: np.ndarray | Sequence[int] | None = None,
) -> np.ndarray:
    """Convert a monthly series to the CASA unit of its quantity.

    Parameters
    ----------
    values : ndarray, shape (months, ...)
        The series in ``units`` (scale and offset already applied).
    quantity : {"solar", "temperature", "precipitation"}
    units : str or None
        Declared units (None = already in the CASA unit). Solar:
        "MJ m-2 month-1", "MJ m-2 d-1", "kJ m-2 d-1", "W m-2" (monthly mean
        flux), "J m-2" (monthly total); temperature: "degC", "K";
        precipitation: "mm month-1", "mm d-1".
    month_days : array of int, shape (months,), optional
        Days of each month (see :func:`month_days`); required by per-day units
        and W m-2.

    Returns
    -------
    ndarray of float64, shape like ``values``
        In MJ m⁻² month⁻¹, °C or mm month⁻¹. NaN stays NaN.

    Examples
    --------
    200 W m⁻² over a 31-day month is 200 × 86400 × 31 / 10⁶ = 535.68 MJ m⁻².
    """
    u = normalise_units(quantity, units)
    per_day, factor, offset = UNITS[quantity][u]
    v = np.asarray(values, dtype=np.float64)
    if per_day:
        if month_days is None:
            raise UnitsError(
                f"{quantity}: units {u!r} are per day (or a mean flux); the days of each month are needed — "
                "give the band months (e.g. from the band dates or [climate] start)."
            )
        d = np.asarray(month_days, dtype=np.float64)
        if v.ndim == 0 or d.shape != (v.shape[0],):
            raise UnitsError(
                f"{quantity}: {d.size} month lengths for a series of {v.shape[0] if v.ndim else 0} months; "
                "give one length per band."
            )
        d = d.reshape((-1,) + (1,) * (v.ndim - 1))
        return v * d * factor + offset
    out = v * factor + offset if (factor != 1.0 or offset != 0.0) else v.copy()
    return out


def _annual_total(v: np.ndarray) -> float:
    """Median over pixels of the mean annual total (12 × the mean month when not whole years)."""
    m = v.shape[0] if v.ndim else 1
    flat = v.reshape(m, -1) if v.ndim else v.reshape(1, 1)
    with np.errstate(invalid="ignore"):
        per_pixel = np.nanmean(flat, axis=0) * 12.0 if m else np.array([np.nan])
    per_pixel = per_pixel[np.isfinite(per_pixel)]
    return float(np.median(per_pixel)) if per_pixel.size else float("nan")


def check_plausible(
    values: np.ndarray,
    quantity: str,
    file_name: str,
    *,
    units: str | None = None,
) -> list[str]:
    """Warnings about values that look like the wrong unit or scale, each with the fix.

    Run on the values **after** scale/offset and :func:`convert` (i.e. in the
    CASA unit). An empty list means nothing looked wrong.

    Parameters
    ----------
    values : ndarray, shape (months, rows, cols) (any shape is accepted)
    quantity : {"solar", "temperature", "precipitation", "ndvi"}
    file_name : str
        Named in every message.
    units : str, optional
        The declared units (named in the messages).

    Returns
    -------
    list of str
        E.g. ``'tmean.tif: values 260–305 look like kelvin; declare units = "K"'``.

    Notes
    -----
    Thresholds (converted values): temperature all within 150–350 → kelvin;
    all < −100 → °C declared as K; max 60–600 → °C × 10. Solar: max < 40 → MJ m⁻² d⁻¹;
    max ≤ 450 with annual total < 2500 → W m⁻² monthly mean; max > 1500 →
    kJ m⁻² d⁻¹ or J m⁻². Precipitation: negative → error; median annual total
    < 100 mm → maybe mm d⁻¹ (or a very arid site); any month > 3000 mm →
    wrong scale. NDVI: |values| > 1 → scaled (× 10 000 → scale = 0.0001).
    """
    if quantity not in (*UNITS, "ndvi"):
        raise UnitsError(f"unknown quantity {quantity!r}; known: {', '.join((*UNITS, 'ndvi'))}.")
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    out: list[str] = []
    if finite.size == 0:
        return [f"{file_name}: no valid values (every pixel is nodata); check the nodata value and the extent."]
    lo, hi = float(finite.min()), float(finite.max())
    rng = f"{lo:.4g}–{hi:.4g}"
    decl = f' (declared "{units}")' if units else ""
    if quantity == "temperature":
        if lo > 150 and hi < 350:
            out.append(f'{file_name}: values {rng}{decl} look like kelvin; declare units = "K".')
        elif hi < -100:
            out.append(f'{file_name}: values {rng} °C after conversion{decl} look like °C declared as kelvin; '
                       'remove units = "K" (or declare "degC").')
        elif 60 < hi <= 600 and lo >= -900:
            out.append(f"{file_name}: values {rng} °C{decl} look like °C × 10; declare scale = 0.1.")
        elif hi > 60 or lo < -90:
            out.append(f"{file_name}: values {rng} °C{decl} are outside any monthly mean on Earth; check units, "
                       "scale and the nodata value.")
    elif quantity == "solar":
        if lo < 0:
            out.append(f"{file_name}: {int(np.count_nonzero(finite < 0))} negative value(s) (min {lo:.4g}); solar "
                       "radiation cannot be negative — check the nodata value, scale and offset.")
        annual = _annual_total(v)
        if hi < 40:
            out.append(f'{file_name}: values {rng} MJ m-2 month-1{decl} look like daily totals; declare units = '
                       '"MJ m-2 d-1".')
        elif hi <= 450 and annual < 2500:
            out.append(f'{file_name}: values {rng} MJ m-2 month-1{decl} (annual ≈ {annual:.0f}) look like a mean flux '
                       'in W m-2; declare units = "W m-2".')
        elif hi > 1500:
            if hi < 1e5:
                out.append(f'{file_name}: values {rng}{decl} are too large for MJ m-2 month-1; they look like '
                           'kJ m-2 d-1 — declare units = "kJ m-2 d-1".')
            else:
                out.append(f'{file_name}: values {rng}{decl} are too large for MJ m-2 month-1; they look like a '
                           'monthly total in J m-2 — declare units = "J m-2".')
    elif quantity == "precipitation":
        if lo < 0:
            out.append(f"{file_name}: {int(np.count_nonzero(finite < 0))} negative value(s) (min {lo:.4g}); "
                       "precipitation cannot be negative — check the nodata value, scale and offset.")
        annual = _annual_total(v)
        if hi > 3000:
            out.append(f"{file_name}: a month of {hi:.4g} mm{decl} is implausible; check the scale (e.g. 0.1 mm "
                       "units → scale = 0.1).")
        elif annual < 100:
            out.append(f'{file_name}: the annual total is only ≈ {annual:.3g} mm{decl}; the values may be per day — '
                       'if so declare units = "mm d-1" (ignore for a truly arid site).')
    else:  # ndvi
        if hi > 1.0 or lo < -1.0:
            if hi > 100:
                out.append(f"{file_name}: NDVI values {rng} look scaled by 10000; declare scale = 0.0001.")
            elif hi > 1.5:
                out.append(f"{file_name}: NDVI values {rng} lie outside [-1, 1]; they look scaled (e.g. × 100 → "
                           "scale = 0.01, or 0–255 bytes → check the product's scale and offset).")
            else:
                out.append(f"{file_name}: NDVI values {rng} lie slightly outside [-1, 1]; check the scale, offset "
                           "and nodata value.")
    return out
