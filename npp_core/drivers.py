"""Driver layers on the NPP grid: climate means, kriged soil properties, land degradation.

Climate (category C): MAT mean annual temperature (°C), MAP mean annual
precipitation (mm yr⁻¹), MAS mean annual solar radiation (MJ m⁻² yr⁻¹) and
MAE mean annual evapotranspiration (mm yr⁻¹; from an ET raster when given,
else the CASA water balance's annual EET). Soil (S): every property of the
manifest kriged from the field samples (:mod:`npp_core.kriging`), or ready
rasters. Mining (M): LD from AHP-weighted degradation indicators
(:mod:`npp_core.ahp`) or a ready LD raster. Users may add drivers in any
category (``[drivers]`` in the manifest).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["climate_means", "build_drivers", "ahp_setup", "categorise", "DriverError"]


class DriverError(ValueError):
    """A driver layer that cannot be built, with what to supply or change."""


def _by_year(stack: np.ndarray, months: list[str]) -> dict[str, np.ndarray]:
    years: dict[str, list[int]] = {}
    for i, m in enumerate(months):
        years.setdefault(m[:4], []).append(i)
    return {y: stack[idx] for y, idx in years.items() if len(idx) == 12}


def climate_means(
    temperature: tuple[np.ndarray, list[str]] | None,
    precipitation: tuple[np.ndarray, list[str]] | None,
    solar: tuple[np.ndarray, list[str]] | None,
    evapotranspiration: tuple[np.ndarray, list[str]] | None = None,
) -> dict[str, np.ndarray]:
    """Multi-year climate means over whole calendar years.

    Parameters
    ----------
    temperature, precipitation, solar, evapotranspiration : (stack, months) or None
        Monthly stacks shaped (months, rows, cols) in °C, mm month⁻¹,
        MJ m⁻² month⁻¹ and mm month⁻¹, with "YYYY-MM" labels.

    Returns
    -------
    dict
        ``MAT`` (°C, mean of the annual means), ``MAP`` (mm yr⁻¹), ``MAS``
        (MJ m⁻² yr⁻¹), ``MAE`` (mm yr⁻¹); each (rows, cols). MAE comes from the
        ET series when given, else from the CASA water balance (needs
        temperature and precipitation).
    """
    out: dict[str, np.ndarray] = {}

    def years_of(item: tuple[np.ndarray, list[str]], what: str) -> dict[str, np.ndarray]:
        ys = _by_year(item[0], list(item[1]))
        if not ys:
            raise DriverError(f"{what}: no whole calendar year (12 months) in the series; supply whole years.")
        return ys

    if temperature is not None:
        ys = years_of(temperature, "temperature")
        out["MAT"] = np.mean([a.mean(axis=0) for a in ys.values()], axis=0)
    if precipitation is not None:
        ys = years_of(precipitation, "precipitation")
        out["MAP"] = np.mean([a.sum(axis=0) for a in ys.values()], axis=0)
    if solar is not None:
        ys = years_of(solar, "solar")
        out["MAS"] = np.mean([a.sum(axis=0) for a in ys.values()], axis=0)
    if evapotranspiration is not None:
        ys = years_of(evapotranspiration, "evapotranspiration")
        out["MAE"] = np.mean([a.sum(axis=0) for a in ys.values()], axis=0)
    elif temperature is not None and precipitation is not None:
        from .casa import annual_eet

        tm = dict(zip(temperature[1], range(len(temperature[1]))))
        pm = dict(zip(precipitation[1], range(len(precipitation[1]))))
        common = [m for m in temperature[1] if m in pm]
        yrs: dict[str, list[str]] = {}
        for m in common:
            yrs.setdefault(m[:4], []).append(m)
        use = [m for y, ms in yrs.items() if len(ms) == 12 for m in ms]
        if use:
            T = temperature[0][[tm[m] for m in use]]
            P = precipitation[0][[pm[m] for m in use]]
            out["MAE"] = np.mean(annual_eet(T, P), axis=0)
    return out


def build_drivers(
    ds: Any,
    params: dict[str, Any],
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Every driver layer of a dataset on its grid.

    Parameters
    ----------
    ds : npp_core.dataset.Dataset
    params : dict
        Validated settings (``kriging``, ``degradation``, ``categories``).
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    dict
        ``layers`` {name: (rows, cols) float64}, ``variances`` {name: (rows, cols)}
        for kriged properties, ``drivers`` {name: {"category", "source"}},
        ``kriging`` {property: report}, ``ahp`` {"weights", "cr", ...} and
        ``empty_categories``.
    """
    prog = progress or (lambda f, m="": None)
    mask = ds.mask
    layers: dict[str, np.ndarray] = {}
    variances: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    out: dict[str, Any] = {}

    # climate
    prog(0.02, "climate means")
    clim = {v: ds.climate(v) for v in ("temperature", "precipitation", "solar", "evapotranspiration")}
    for name, arr in climate_means(clim["temperature"], clim["precipitation"], clim["solar"], clim["evapotranspiration"]).items():
        layers[name] = arr
        source[name] = "evapotranspiration raster" if name == "MAE" and clim["evapotranspiration"] is not None else (
            "CASA water balance (annual EET)" if name == "MAE" else "climate series"
        )

    # soil
    ready_soil = ds.soil_rasters() or {}
    for name, arr in ready_soil.items():
        layers[name] = arr
        source[name] = "supplied raster"
    samples = ds.soil_samples()
    if samples is not None:
        from .kriging import krige_property

        kp = params["kriging"]
        gx, gy = ds.grid.xy()
        reports = {}
        props = [n for n in samples["values"] if n not in ready_soil]
        for i, name in enumerate(props):
            prog(0.1 + 0.6 * i / max(len(props), 1), f"kriging {name}")
            pred, var, rep = krige_property(
                samples["x"], samples["y"], samples["values"][name], gx, gy,
                model=kp["model"], log=name in kp["log_transform"], name=name,
                n_closest=int(kp["n_closest"]), mask=mask,
            )
            layers[name] = pred
            variances[name] = var
            source[name] = f"ordinary kriging ({rep.get('model')})"
            reports[name] = rep
        out["kriging"] = reports

    # mining
    prog(0.75, "land degradation")
    ld = ds.ld_raster()
    if ld is not None:
        layers["LD"] = ld
        source["LD"] = "supplied raster"
    else:
        deg = ds.degradation()
        if deg is not None:
            from . import ahp

            deg, names, info = ahp_setup(deg, params["degradation"])
            dp = params["degradation"]
            ld, ld_info = ahp.degradation_index(
                {n: deg["indicators"][n] for n in names},
                info["weights"],
                direction=deg.get("direction") or {},
                influence_distance=float(dp["influence_distance_m"]),
                mask=mask,
            )
            info.update(ld_info or {})
            out["ahp"] = info
            layers["LD"] = ld
            source["LD"] = "AHP-weighted degradation indicators"

    # extra user drivers
    cats: dict[str, list[str]] = {c: list(v) for c, v in params["categories"].items()}
    extra = ds.extra_drivers() if hasattr(ds, "extra_drivers") else {}
    for name, (cat, arr) in (extra or {}).items():
        layers[name] = arr
        source[name] = "supplied raster"
        for members in cats.values():
            if name in members:
                members.remove(name)
        cats.setdefault(cat, []).append(name)

    drivers, empty = categorise(layers, source, cats)
    for name in list(layers):
        layers[name] = np.where(mask, layers[name], np.nan)
    for name in list(variances):
        variances[name] = np.where(mask, variances[name], np.nan)
    out.update(layers=layers, variances=variances, drivers=drivers, empty_categories=empty)
    prog(1.0, "drivers done")
    return out


def ahp_setup(deg: dict[str, Any], dp: dict[str, Any]) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """AHP weights of the degradation indicators, with the user's edited matrix and the consistency rule.

    Parameters
    ----------
    deg : dict
        ``Dataset.degradation()`` (or its lazy variant): ``ahp_names``, ``ahp_matrix`` (n, n),
        ``indicators`` {name: raster}, optional ``ahp_file``.
    dp : dict
        The ``[degradation]`` settings (``ahp_override``, ``accept_inconsistent``).

    Returns
    -------
    deg : dict
        ``deg`` with the override applied.
    names : list of str
        Indicator names in matrix order.
    info : dict
        ``weights`` {name: weight, sum 1}, ``cr`` (consistency ratio), ``consistent`` (CR < 0.1),
        ``disagreements`` when inconsistent.

    Raises
    ------
    DriverError
        An inconsistent matrix (CR ≥ 0.1) without ``accept_inconsistent``, or a matrix naming an
        indicator with no raster.
    """
    from . import ahp

    if dp.get("ahp_override"):
        deg = dict(deg, ahp_names=dp["ahp_override"]["names"], ahp_matrix=np.asarray(dp["ahp_override"]["matrix"], float),
                   ahp_file="the edited AHP matrix (degradation.ahp_override)")
    names = list(deg["ahp_names"])
    w, cr = ahp.weights(deg["ahp_matrix"])
    info: dict[str, Any] = {"weights": dict(zip(names, map(float, w))), "cr": float(cr), "consistent": bool(cr < 0.1)}
    if cr >= 0.1:
        ev = ahp.evaluate(deg["ahp_matrix"], names)
        info["disagreements"] = ev.get("disagreements")
        if not dp["accept_inconsistent"]:
            raise DriverError(
                f"{deg.get('ahp_file', 'AHP matrix')}: {ev.get('message') or f'inconsistent (CR = {cr:.3f})'} "
                "Revise those judgements, or set degradation.accept_inconsistent = true to use it anyway."
            )
    missing = [n for n in names if n not in deg["indicators"]]
    if missing:
        raise DriverError(
            f"AHP matrix names indicators with no raster: {', '.join(missing)}. "
            "Add them under [degradation.indicators] or remove them from the matrix."
        )
    return deg, names, info


def categorise(
    layers: dict[str, Any], source: dict[str, str], cats: dict[str, list[str]]
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Category and source of every driver layer, and the categories left without a layer.

    Parameters
    ----------
    layers : dict name -> raster (any array type)
    source : dict name -> str
        How each layer was made.
    cats : dict category -> list of driver names

    Returns
    -------
    drivers : dict name -> {"category", "source"}
        Layers no category lists get the category ``"other"``.
    empty : list of str
        Categories none of whose drivers has a layer.
    """
    drivers: dict[str, dict[str, str]] = {}
    for cat, members in cats.items():
        for n in members:
            if n in layers:
                drivers[n] = {"category": cat, "source": source[n]}
    empty = [c for c, members in cats.items() if not any(n in layers for n in members)]
    for name in layers:
        if name not in drivers:
            # a computed layer the categories do not list: keep it, as its own category "other"
            drivers[name] = {"category": "other", "source": source[name]}
    return drivers, empty
