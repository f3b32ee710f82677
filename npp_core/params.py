"""The one settings schema (``params.toml``) shared by the CLI and the dashboard.

Every key has a default that reproduces the study. :data:`SCHEMA` documents
each key (type, default, unit, help text); :func:`load` merges a TOML file and
``section.key=value`` overrides onto the defaults and validates the result.
"""
from __future__ import annotations

import copy
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA", "defaults", "load", "loads", "dumps", "set_value", "validate", "ParamsError", "Setting"]


class ParamsError(ValueError):
    """A setting that cannot be used, with the key and the allowed values."""


@dataclass(frozen=True)
class Setting:
    """One documented setting."""

    default: Any
    help: str
    unit: str = ""
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None


#: εmax per CASA vegetation type, gC MJ⁻¹ (Zhu et al. 2006).
EPS_MAX_DEFAULT = {
    "evergreen_needleleaf": 0.389,
    "evergreen_broadleaf": 0.985,
    "deciduous_needleleaf": 0.485,
    "deciduous_broadleaf": 0.692,
    "mixed_forest": 0.475,
    "shrub": 0.429,
    "grassland": 0.542,
    "cropland": 0.542,
    "other": 0.542,
}

SCHEMA: dict[str, dict[str, Setting]] = {
    "estarfm": {
        "window": Setting(51, "Moving-window side in fine pixels (odd).", "pixels", min=3, max=201),
        "classes": Setting(4, "Number of land-cover classes used for the similarity threshold.", min=1, max=20),
        "max_pair_gap_days": Setting(8, "Largest gap between a fine image and its coarse partner.", "days", min=0, max=60),
        "extrapolate": Setting(
            True, "Predict coarse dates outside the span of the fine images from the nearest two fine images."
        ),
    },
    "casa": {
        "eps_max": Setting(dict(EPS_MAX_DEFAULT), "Maximum light-use efficiency per CASA vegetation type.", "gC MJ-1"),
        "eps_scale": Setting(1.0, "Multiplier applied to every εmax (for sensitivity sweeps).", min=0.0, max=5.0),
        "ndvi_range": Setting(
            "zhu_table",
            "Source of NDVImin/NDVImax: the Zhu 2007 table, or the 5th/95th percentiles of each class's own NDVI "
            "pooled over all months.",
            choices=("zhu_table", "percentile"),
        ),
        "halving": Setting(True, "Halve Tε2 when T > Topt + 10 °C or T < Topt − 13 °C."),
        "pet_zero": Setting(
            "0.5",
            "Wε where PET = 0 (frozen months): 0.5, carry the previous month, 1, 0 or NaN.",
            choices=("0.5", "previous", "1", "0", "nan"),
        ),
        "teps2_coef": Setting(1.1814, "Numerator of the Tε2 scalar.", min=0.0, max=3.0),
        "fpar_alpha": Setting(0.5, "Weight of FPAR_NDVI in the FPAR mix (1 − α for FPAR_SR).", min=0.0, max=1.0),
        "cold_limit": Setting(-10.0, "Tε1 = 0 in a month whose mean temperature is at or below this.", "°C"),
        "w_clip": Setting([0.5, 1.0], "Clip range of the water scalar Wε."),
        "nonveg": Setting("zero", "NPP of non-vegetated classes: 0 or nodata.", choices=("zero", "nodata")),
        "overrides": Setting(
            {}, "Per land-cover class overrides: class = { eps_max = …, ndvi_min = …, ndvi_max = … }."
        ),
    },
    "kriging": {
        "model": Setting(
            "auto",
            "Variogram model for every soil property; auto = best leave-one-out RMSE.",
            choices=("auto", "spherical", "exponential", "gaussian"),
        ),
        "log_transform": Setting([], "Soil properties kriged on log scale (back-transformed with the lognormal bias correction)."),
        "n_closest": Setting(0, "Kriging neighbourhood (0 = all samples).", "points", min=0, max=10000),
    },
    "degradation": {
        "influence_distance_m": Setting(
            1500.0, "Distance-type indicators are capped at this distance before scaling.", "m", min=0.0
        ),
        "accept_inconsistent": Setting(False, "Continue when the AHP consistency ratio is ≥ 0.1."),
        "ahp_override": Setting(
            {},
            "AHP pairwise matrix edited by the user: { names = [...], matrix = [[...], ...] }; empty = the dataset's.",
        ),
    },
    "lcc": {
        "window": Setting(5, "Local-correlation moving-window side (odd).", "pixels", min=3, max=201),
        "min_valid": Setting(3, "Fewest valid pairs for a defined local r.", "pairs", min=3),
    },
    "sampling": {
        "n_points": Setting(1000, "Random sample points for Pearson and the random forests.", "points", min=20, max=1_000_000),
        "seed": Setting(42, "Seed of the sample draw."),
    },
    "rf": {
        "n_trees": Setting(500, "Trees per random forest.", "trees", min=10, max=5000),
        "seed": Setting(0, "Random-forest seed."),
        "importance": Setting(
            "r_incmse",
            "Importance measure: R randomForest's scaled %IncMSE, raw mean increase, or whole categories permuted.",
            choices=("r_incmse", "raw", "grouped"),
        ),
        "cv_blocks": Setting(5, "Spatial blocks per side for block cross-validation.", min=2, max=20),
    },
    "dominance": {
        "threshold": Setting(60.0, "A single category dominates when its RelCon exceeds this.", "%", min=0.0, max=100.0),
    },
    "ensemble": {
        "members": Setting(0, "Repeat the attribution this many times (0 = single run).", min=0, max=200),
        "vary": Setting("seed", "What changes between members.", choices=("seed", "sample", "both")),
    },
    "run": {
        "mode": Setting("auto", "In-memory or chunked execution.", choices=("auto", "memory", "chunked")),
        "chunk": Setting(1024, "Block side for chunked execution (multiples of 256 keep the writer's memory lowest).", "pixels", min=64, max=16384),
        "memory_gb": Setting(4.0, "Memory budget for automatic mode selection.", "GB", min=0.5),
        "scheduler": Setting(
            "", "Dask scheduler of chunked runs: empty = a local cluster of 2 worker processes (1 thread each) "
            "started for the run; 'threads' = threads of this process (no cluster); else the address of a "
            "running dask.distributed scheduler, e.g. tcp://10.0.0.5:8786."
        ),
        "cog": Setting(False, "Write the GeoTIFFs of chunked stages as Cloud-Optimized GeoTIFFs."),
    },
    "categories": {
        "C": Setting(["MAT", "MAP", "MAE", "MAS"], "Climate drivers."),
        "S": Setting(["CF", "SOC", "TN", "AP", "AK", "pH", "BD"], "Soil drivers."),
        "M": Setting(["LD"], "Mining drivers."),
    },
}


def defaults() -> dict[str, dict[str, Any]]:
    """A fresh nested dict of every default."""
    return {sec: {k: copy.deepcopy(s.default) for k, s in keys.items()} for sec, keys in SCHEMA.items()}


def _coerce(section: str, key: str, value: Any) -> Any:
    s = SCHEMA.get(section, {}).get(key)
    if s is None:
        return value
    d = s.default
    try:
        if isinstance(d, bool):
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "1", "yes", "on"):
                    return True
                if low in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if isinstance(d, int) and not isinstance(d, bool):
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
        if isinstance(d, float):
            return float(value)
        if isinstance(d, str):
            return str(value)
        if isinstance(d, (list, dict)) and isinstance(value, str):
            return json.loads(value)
    except (TypeError, ValueError):
        raise ParamsError(
            f"setting {section}.{key}: {value!r} is not a valid {type(d).__name__} (default {d!r})."
        ) from None
    return value


def validate(params: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Coerce types and check ranges and choices; return the cleaned params.

    Raises
    ------
    ParamsError
        Naming the key, the bad value and what is allowed.
    """
    out = defaults()
    for sec, keys in params.items():
        if not isinstance(keys, dict):
            raise ParamsError(f"settings: [{sec}] must be a table of keys, got {keys!r}.")
        if sec not in SCHEMA:
            raise ParamsError(f"settings: unknown section [{sec}]. Known sections: {', '.join(SCHEMA)}.")
        for key, value in keys.items():
            if key not in SCHEMA[sec] and sec != "categories":
                raise ParamsError(
                    f"settings: unknown key {sec}.{key}. Known keys in [{sec}]: {', '.join(SCHEMA[sec])}."
                )
            v = _coerce(sec, key, value)
            s = SCHEMA[sec].get(key)
            if s is not None:
                if s.choices is not None and v not in s.choices:
                    raise ParamsError(f"setting {sec}.{key}: {v!r} is not one of {', '.join(map(str, s.choices))}.")
                if s.min is not None and isinstance(v, (int, float)) and v < s.min:
                    raise ParamsError(f"setting {sec}.{key}: {v} is below the minimum {s.min}.")
                if s.max is not None and isinstance(v, (int, float)) and v > s.max:
                    raise ParamsError(f"setting {sec}.{key}: {v} is above the maximum {s.max}.")
            if sec == "casa" and key == "eps_max":
                if not isinstance(v, dict):
                    raise ParamsError("setting casa.eps_max must be a table of vegetation type = εmax (gC MJ-1).")
                merged = dict(EPS_MAX_DEFAULT)
                for t, e in v.items():
                    try:
                        e = float(e)
                    except (TypeError, ValueError):
                        raise ParamsError(f"setting casa.eps_max.{t}: {e!r} is not a number.") from None
                    if not 0 < e < 5:
                        raise ParamsError(f"setting casa.eps_max.{t}: {e} gC MJ-1 is implausible (expected 0–5).")
                    merged[t] = e
                v = merged
            if sec == "casa" and key == "overrides":
                v = _check_overrides(v)
            if sec == "degradation" and key == "ahp_override":
                v = _check_ahp_override(v)
            out[sec][key] = v
    for key in ("window",):
        for sec in ("estarfm", "lcc"):
            if out[sec][key] % 2 == 0:
                raise ParamsError(f"setting {sec}.{key}: {out[sec][key]} must be odd (the window has a centre pixel).")
    return out


def _check_overrides(v: Any) -> dict[str, dict[str, float]]:
    if not isinstance(v, dict):
        raise ParamsError("setting casa.overrides must be a table: class = { eps_max = 0.6, ndvi_max = 0.8 }.")
    out: dict[str, dict[str, float]] = {}
    for cls, vals in v.items():
        if not isinstance(vals, dict):
            raise ParamsError(f"setting casa.overrides.{cls} must be a table of eps_max / ndvi_min / ndvi_max.")
        clean = {}
        for k, x in vals.items():
            if k not in ("eps_max", "ndvi_min", "ndvi_max"):
                raise ParamsError(f"setting casa.overrides.{cls}.{k}: unknown; use eps_max, ndvi_min or ndvi_max.")
            try:
                clean[k] = float(x)
            except (TypeError, ValueError):
                raise ParamsError(f"setting casa.overrides.{cls}.{k}: {x!r} is not a number.") from None
        if "ndvi_min" in clean and "ndvi_max" in clean and not clean["ndvi_min"] < clean["ndvi_max"]:
            raise ParamsError(f"setting casa.overrides.{cls}: ndvi_min must be below ndvi_max.")
        out[str(cls)] = clean
    return out


def _check_ahp_override(v: Any) -> dict[str, Any]:
    if v in ({}, None):
        return {}
    msg = "setting degradation.ahp_override must be { names = [\"a\", \"b\", …], matrix = [[1, 3, …], …] } (square, one row per name)."
    if not isinstance(v, dict) or set(v) != {"names", "matrix"}:
        raise ParamsError(msg)
    names, m = v["names"], v["matrix"]
    if not isinstance(names, list) or not isinstance(m, list) or len(m) != len(names):
        raise ParamsError(msg)
    try:
        rows = [[float(x) for x in row] for row in m]
    except (TypeError, ValueError):
        raise ParamsError(msg) from None
    if any(len(r) != len(names) for r in rows):
        raise ParamsError(msg)
    return {"names": [str(n) for n in names], "matrix": rows}


def set_value(params: dict[str, dict[str, Any]], assignment: str) -> dict[str, dict[str, Any]]:
    """Apply one ``section.key=value`` override (value parsed as TOML when possible)."""
    if "=" not in assignment or "." not in assignment.split("=", 1)[0]:
        raise ParamsError(f"--set {assignment!r}: expected section.key=value, e.g. dominance.threshold=55.")
    lhs, rhs = assignment.split("=", 1)
    sec, key = lhs.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {rhs.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = rhs.strip()
    new = copy.deepcopy(params)
    new.setdefault(sec, {})[key] = value
    return validate(new)


def loads(text: str, source: str = "params.toml") -> dict[str, dict[str, Any]]:
    """Parse TOML text onto the defaults."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ParamsError(f"{source}: not valid TOML ({exc}). Fix the line it names.") from None
    try:
        return validate(raw)
    except ParamsError as exc:
        raise ParamsError(f"{source}: {exc}") from None


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Defaults, then a TOML file, then ``section.key=value`` overrides."""
    params = defaults() if path is None else loads(Path(path).read_text(encoding="utf-8-sig"), Path(path).name)
    for a in overrides or []:
        params = set_value(params, a)
    return params


def _toml_key(k: str) -> str:
    import re

    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }" if v else "{}"
    raise ParamsError(f"cannot write setting value {v!r} to TOML")


def dumps(params: dict[str, dict[str, Any]]) -> str:
    """TOML text of the params, with each key's help (and unit) as a comment."""
    lines = ["# NPP Driver Explorer settings. Defaults reproduce the study.", ""]
    for sec, keys in params.items():
        lines.append(f"[{sec}]")
        for k, v in keys.items():
            s = SCHEMA.get(sec, {}).get(k)
            if s is not None:
                lines.append(f"# {s.help}" + (f" [{s.unit}]" if s.unit else ""))
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)
