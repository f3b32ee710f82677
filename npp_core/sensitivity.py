"""Sensitivity of the results to the settings: one-at-a-time sweeps, 2-D grids, thresholds, AHP.

A sweep runs the pipeline once per setting value, each point into its own
output folder but all points through one shared stage cache
(:mod:`npp_core.cache`). Since a stage's cache key is the content hash of its
inputs and settings, a point only recomputes the stages at and downstream of
the stage the swept setting first affects; everything upstream is restored
from the cache (hard links, no copies). Sweeping ``lcc.window`` therefore
reruns only ``lcc``, sweeping ``rf.n_trees`` reruns ``attribution`` and
``dominance``, and sweeping ``casa.eps_scale`` reruns everything after fusion.

The dominance threshold needs no pipeline run at all: :func:`threshold_sweep`
reclassifies the stored RelCon of one finished run (``relcon.tif``, the
undetermined mask from ``actcon.tif`` and the noise floor in ``summary.json``),
which is how the dominance stage classifies too.

AHP judgements are swept through the ``degradation.ahp_override`` setting
(:func:`perturb_ahp`, :func:`ahp_sweep`): one pairwise judgement scaled by a
factor and its reciprocal kept, so only ``drivers`` and later stages rerun.

Every sweep returns a *tidy* table: ``rows`` is a list of flat dicts, one per
point, with the same keys (``pandas.DataFrame(result["rows"])`` works), e.g.
``npp_mean`` (gC m⁻² yr⁻¹), ``relcon_mean.C`` (%), ``importance.S`` (%),
``share.CS`` (% of analysed pixels), ``class_change`` (% of analysed pixels
whose dominant class differs from the baseline point) and ``dominant`` (path
of that point's ``dominant.tif``).
"""
from __future__ import annotations

import copy
import json
import math
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import params as P
from . import pipeline
from .raster import read_raster

__all__ = [
    "SWEEPABLE",
    "METRIC_STAGES",
    "SensitivityError",
    "first_stage",
    "sweep",
    "sweep_grid",
    "grid_table",
    "threshold_sweep",
    "ahp_sweep",
    "perturb_ahp",
    "class_change",
]


class SensitivityError(ValueError):
    """A sweep that cannot be run as asked; the message names the input and the fix."""


ProgressFn = Callable[[str, float, str], None]

#: Metric groups and the pipeline stage that produces each.
METRIC_STAGES: dict[str, str] = {
    "npp": "casa",
    "pearson": "sampling",
    "lcc": "lcc",
    "attribution": "attribution",
    "classes": "dominance",
}
DEFAULT_METRICS = ("npp", "attribution", "classes")


def first_stage(key: str) -> str:
    """The first pipeline stage (in run order) whose cache key includes a setting.

    Parameters
    ----------
    key : str
        ``"section.key"``, e.g. ``"lcc.window"``.

    Returns
    -------
    str
        A name from :data:`npp_core.pipeline.STAGES`.

    Raises
    ------
    SensitivityError
        The section is read by no stage (e.g. ``run.*``).
    """
    section = key.split(".", 1)[0]
    for stage in pipeline.STAGES:
        if section in pipeline.SETTINGS[stage]:
            return stage
    raise SensitivityError(f"setting {key!r}: no pipeline stage reads [{section}], so sweeping it changes nothing.")


# Range or values offered by default for each sweepable setting, with a short label.
_SWEEP_DEFAULTS: dict[str, tuple[str, list[Any]]] = {
    "casa.eps_scale": ("εmax scaling", [0.8, 0.9, 1.0, 1.1, 1.2]),
    "casa.halving": ("Tε2 halving", [True, False]),
    "casa.pet_zero": ("Wε where PET = 0", ["0.5", "previous", "1"]),
    "casa.ndvi_range": ("NDVI min/max source", ["zhu_table", "percentile"]),
    "casa.fpar_alpha": ("FPAR mix α", [0.3, 0.5, 0.7]),
    "kriging.model": ("Kriging variogram model", ["auto", "spherical", "exponential", "gaussian"]),
    "degradation.influence_distance_m": ("LD influence distance", [500.0, 1000.0, 1500.0, 2000.0, 3000.0]),
    "lcc.window": ("LCC window", [3, 5, 7, 9, 11]),
    "sampling.n_points": ("Sample size", [250, 500, 1000, 2000]),
    "sampling.seed": ("Sample draw seed", [42, 43, 44, 45]),
    "rf.n_trees": ("Trees per forest", [100, 250, 500, 1000]),
    "rf.seed": ("Random-forest seed", [0, 1, 2, 3]),
    "rf.importance": ("Importance measure", ["r_incmse", "raw", "grouped"]),
    "dominance.threshold": ("Dominance threshold", [50.0, 55.0, 60.0, 65.0, 70.0]),
}


def _build_sweepable() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, (label, values) in _SWEEP_DEFAULTS.items():
        sec, name = key.split(".", 1)
        s = P.SCHEMA[sec][name]
        d = s.default
        kind = "bool" if isinstance(d, bool) else "choice" if s.choices else "integer" if isinstance(d, int) else (
            "number" if isinstance(d, float) else "text")
        stage = first_stage(key)
        out[key] = {
            "key": key,
            "label": label,
            "help": s.help,
            "unit": s.unit,
            "kind": kind,
            "default": copy.deepcopy(d),
            "values": list(values),
            "choices": list(s.choices) if s.choices else None,
            "min": s.min,
            "max": s.max,
            "stage": stage,
            "recomputes": pipeline.STAGES[pipeline.STAGES.index(stage):],
        }
    return out


#: Sweepable settings: ``"section.key"`` → label, help, unit, kind
#: ("number" | "integer" | "bool" | "choice"), default, suggested ``values``,
#: ``stage`` (the first stage it affects, from :data:`pipeline.SETTINGS`) and
#: ``recomputes`` (that stage and every later one; only those that actually
#: read it rerun).
SWEEPABLE: dict[str, dict[str, Any]] = _build_sweepable()


# ----------------------------------------------------------------------------- helpers
def _split(key: str) -> tuple[str, str]:
    if not isinstance(key, str) or "." not in key:
        raise SensitivityError(f"setting {key!r}: expected 'section.key', e.g. 'lcc.window'.")
    sec, name = key.split(".", 1)
    if sec not in P.SCHEMA or name not in P.SCHEMA[sec]:
        raise SensitivityError(
            f"setting {key!r} does not exist. Sweepable settings: {', '.join(SWEEPABLE)}."
        )
    return sec, name


def _with_value(params: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    sec, name = _split(key)
    new = copy.deepcopy(params)
    new.setdefault(sec, {})[name] = value
    try:
        return P.validate(new)
    except P.ParamsError as exc:
        raise SensitivityError(f"sweep value {value!r} for {key}: {exc}") from None


def _norm(v: Any) -> Any:
    return float(v) if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) else v


def _targets(metrics: Sequence[str]) -> list[str]:
    unknown = [m for m in metrics if m not in METRIC_STAGES]
    if unknown:
        raise SensitivityError(f"metrics {unknown}: unknown; choose from {', '.join(METRIC_STAGES)}.")
    return sorted({METRIC_STAGES[m] for m in metrics}, key=pipeline.STAGES.index)


def _default_metrics(keys: Iterable[str]) -> list[str]:
    ms = list(DEFAULT_METRICS)
    for k in keys:
        st = first_stage(k)
        if st in ("lcc", "sampling"):
            extra = "lcc" if st == "lcc" else "pearson"
            if extra not in ms:
                ms.append(extra)
    return ms


def _read_codes(path: Path) -> np.ndarray:
    data, _, _ = read_raster(path)
    return np.nan_to_num(data[0], nan=0.0).astype(np.uint8)


def class_change(codes: np.ndarray, baseline: np.ndarray) -> float:
    """Share (percent) of analysed pixels whose dominant class differs from a baseline map.

    Parameters
    ----------
    codes, baseline : ndarray of uint8, shape (rows, cols)
        Dominant-class codes (0 = nodata), same code table.

    Returns
    -------
    float
        100 · #(codes ≠ baseline) / #(analysed in either map); NaN when no pixel
        is analysed in either.
    """
    a, b = np.asarray(codes), np.asarray(baseline)
    if a.shape != b.shape:
        raise SensitivityError(f"class maps: shapes {a.shape} and {b.shape} differ; both must be on the same grid.")
    analysed = (a != 0) | (b != 0)
    n = int(analysed.sum())
    if n == 0:
        return float("nan")
    return 100.0 * float(np.count_nonzero(analysed & (a != b))) / n


def _metrics(summary: dict[str, Any], metrics: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    if "npp" in metrics:
        row["npp_mean"] = _num(summary.get("npp", {}).get("mean"))
    if "attribution" in metrics:
        for c, v in (summary.get("relcon_mean") or {}).items():
            row[f"relcon_mean.{c}"] = _num(v)
        for c, v in (summary.get("importance") or {}).get("categories", {}).items():
            row[f"importance.{c}"] = _num(v)
        row["oob_r2"] = _num((summary.get("models") or {}).get("all", {}).get("oob_r2"))
    if "classes" in metrics:
        for lab, v in (summary.get("dominant") or {}).get("area_share", {}).items():
            row[f"share.{lab}"] = _num(v)
        ens = summary.get("ensemble") or {}
        if ens.get("members", 0) and "mean_agreement" in ens:
            row["agreement_mean"] = _num(ens["mean_agreement"])
    if "lcc" in metrics:
        for drv, sh in (summary.get("lcc") or {}).items():
            ins = _num(sh.get("insignificant"))
            row[f"lcc_significant.{drv}"] = 100.0 - ins if math.isfinite(ins) else float("nan")
            row[f"lcc_undefined.{drv}"] = _num(sh.get("undefined"))
    if "pearson" in metrics:
        for drv, rp in (summary.get("pearson") or {}).items():
            row[f"pearson_r.{drv}"] = _num(rp.get("r"))
    return row


def _num(v: Any) -> float:
    try:
        return float(v) if v is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _slug(v: Any) -> str:
    s = str(v).replace(" ", "_")
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in s)[:40]


def _run_points(
    points: list[tuple[dict[str, Any], Any, dict[str, Any], str]],
    *,
    targets: list[str],
    metrics: Sequence[str],
    cache_dir: Path | str,
    progress: ProgressFn | None,
    cancel: threading.Event | None,
    baseline_index: int | None,
) -> tuple[list[dict[str, Any]], bool]:
    """Run every point (labels, dataset, params, folder) and collect its table row."""
    prog = progress or (lambda s, f, m: None)
    rows: list[dict[str, Any]] = []
    n = len(points)
    cancelled = False
    for i, (labels, ds, prm, folder) in enumerate(points):
        if cancel is not None and cancel.is_set():
            cancelled = True
            break
        tag = ", ".join(f"{k}={v}" for k, v in labels.items())

        def _p(stage: str, frac: float, msg: str, _i: int = i, _tag: str = tag) -> None:
            done = pipeline.STAGES.index(stage) + frac if stage in pipeline.STAGES else frac
            prog(f"point {_i + 1}/{n}", (_i + done / len(pipeline.STAGES)) / n, f"{_tag}: {stage} {msg}".strip())

        res = pipeline.run(ds, prm, folder, only=targets, cache_dir=cache_dir, progress=_p, cancel=cancel)
        statuses = {s.name: s.status for s in res.stages}
        row: dict[str, Any] = dict(labels)
        row["out_dir"] = str(res.out_dir)
        row["ok"] = res.ok
        row["error"] = "; ".join(f"{s.name}: {s.message}" for s in res.stages if s.status == "failed") or None
        row["recomputed"] = [s.name for s in res.stages if s.status == "done"]
        row["stages"] = statuses
        row["seconds"] = round(sum(s.seconds for s in res.stages), 3)
        row.update(_metrics(res.summary, metrics) if res.ok else {})
        dom = res.out_dir / "dominant.tif"
        row["dominant"] = str(dom) if "classes" in metrics and res.ok and dom.exists() else None
        rows.append(row)
        if any(s.message == "cancelled by the user" for s in res.stages):
            cancelled = True
            break
    # fill every row with the same columns, then compare class maps with the baseline
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    for r in rows:
        for k in cols:
            r.setdefault(k, float("nan"))
    if "classes" in metrics:
        base = rows[baseline_index] if baseline_index is not None and baseline_index < len(rows) else None
        base_codes = _read_codes(Path(base["dominant"])) if base and base.get("dominant") else None
        for r in rows:
            r["class_change"] = (
                class_change(_read_codes(Path(r["dominant"])), base_codes)
                if base_codes is not None and r.get("dominant") else float("nan")
            )
    prog("sweep", 1.0, "cancelled" if cancelled else "done")
    return rows, cancelled


# ----------------------------------------------------------------------------- sweeps
def sweep(
    dataset: Any,
    params: dict[str, Any],
    key: str,
    values: Sequence[Any] | None = None,
    *,
    cache_dir: Path | str,
    work_dir: Path | str,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    metrics: Sequence[str] | None = None,
    baseline: str = "current",
) -> dict[str, Any]:
    """One-at-a-time sweep of one setting, reusing every unchanged stage from the cache.

    Parameters
    ----------
    dataset : npp_core.dataset.Dataset
        An opened dataset.
    params : dict
        Validated settings (:func:`npp_core.params.load`); every other setting
        stays as given.
    key : str
        ``"section.key"`` of any setting in :data:`npp_core.params.SCHEMA`
        (:data:`SWEEPABLE` lists the usual ones with suggested values).
    values : sequence, optional
        Values to try (default: ``SWEEPABLE[key]["values"]``). All are
        validated before anything runs.
    cache_dir : path-like
        Stage cache shared by all points (and ideally with the main run, so
        the upstream stages are restored, not recomputed).
    work_dir : path-like
        Each point writes its full output folder to ``work_dir/<i>_<value>``.
    progress : callable, optional
        ``progress(point_label, overall_fraction, message)``.
    cancel : threading.Event, optional
        Set it to stop; the points finished so far are returned.
    metrics : sequence of str, optional
        Groups from :data:`METRIC_STAGES`: ``"npp"`` (mean NPP), ``"attribution"``
        (mean RelCon and importance per category, OOB R²), ``"classes"``
        (class area shares, ``class_change``, ``dominant`` path), ``"lcc"``
        (share of significant local r per driver), ``"pearson"`` (global r).
        Only the stages that produce them (and their upstream) run. Default:
        npp, attribution, classes, plus lcc (or pearson) when ``key`` affects
        that stage.
    baseline : {"current", "first"}
        Point against which ``class_change`` is measured: the one equal to the
        current setting (run as an extra point, ``result["baseline"]``, when
        it is not among ``values``) or the first value.

    Returns
    -------
    dict
        ``key``, ``label``, ``unit``, ``stage`` (first affected stage),
        ``values``, ``metrics``, ``rows`` (one flat dict per value: ``value``,
        the metric columns, ``class_change`` in % of analysed pixels,
        ``dominant``, ``out_dir``, ``stages`` {stage: status}, ``recomputed``,
        ``seconds``, ``ok``, ``error``, ``is_baseline``), ``baseline`` (the
        baseline row), ``cancelled``.

    Raises
    ------
    SensitivityError
        Unknown key or metric, an invalid value, or an empty ``values``.
    """
    sec, name = _split(key)
    info = SWEEPABLE.get(key) or {"label": key, "unit": P.SCHEMA[sec][name].unit}
    vals = list(values) if values is not None else list(SWEEPABLE.get(key, {}).get("values") or [])
    if not vals:
        raise SensitivityError(f"sweep of {key}: no values given; pass values=[...].")
    if baseline not in ("current", "first"):
        raise SensitivityError(f"baseline={baseline!r}: use 'current' or 'first'.")
    ms = list(metrics) if metrics is not None else _default_metrics([key])
    targets = _targets(ms)
    prms = [_with_value(params, key, v) for v in vals]  # validate all before running any
    clean = [p[sec][name] for p in prms]
    current = P.validate(copy.deepcopy(params))[sec][name]
    work = Path(work_dir)
    points = [({"value": v}, dataset, p, str(work / f"{i:02d}_{_slug(v)}")) for i, (v, p) in enumerate(zip(clean, prms))]
    if baseline == "first":
        b_idx: int | None = 0
    else:
        match = [i for i, v in enumerate(clean) if _norm(v) == _norm(current)]
        if match:
            b_idx = match[0]
        else:
            points.append(({"value": current}, dataset, _with_value(params, key, current), str(work / "baseline")))
            b_idx = len(points) - 1
    rows, cancelled = _run_points(points, targets=targets, metrics=ms, cache_dir=cache_dir, progress=progress,
                                  cancel=cancel, baseline_index=b_idx)
    for i, r in enumerate(rows):
        r["is_baseline"] = i == b_idx
    base_row = rows[b_idx] if b_idx is not None and b_idx < len(rows) else None
    rows = rows[: len(vals)]
    return {
        "key": key,
        "label": info.get("label", key),
        "unit": info.get("unit", ""),
        "stage": first_stage(key),
        "values": clean,
        "metrics": ms,
        "rows": rows,
        "baseline": base_row,
        "cancelled": cancelled,
    }


def sweep_grid(
    dataset: Any,
    params: dict[str, Any],
    key1: str,
    values1: Sequence[Any],
    key2: str,
    values2: Sequence[Any],
    *,
    cache_dir: Path | str,
    work_dir: Path | str,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    metrics: Sequence[str] | None = None,
    max_points: int = 36,
) -> dict[str, Any]:
    """Small 2-D grid over two settings (every combination), reusing cached stages.

    Parameters
    ----------
    dataset, params, cache_dir, work_dir, progress, cancel, metrics
        As in :func:`sweep`.
    key1, key2 : str
        Two different ``"section.key"`` settings.
    values1, values2 : sequence
        Their values; ``len(values1) * len(values2) ≤ max_points``.
    max_points : int, default 36
        Refuse larger grids (each point may be a full attribution run).

    Returns
    -------
    dict
        ``keys`` [key1, key2], ``values`` [values1, values2], ``metrics``,
        ``rows`` (one flat dict per combination, row-major over values1 then
        values2, with columns ``key1`` and ``key2`` holding the two values;
        ``class_change`` vs the first combination), ``cancelled``. Use
        :func:`grid_table` for a (len(values1), len(values2)) array of a metric.
    """
    if key1 == key2:
        raise SensitivityError(f"sweep_grid: key1 and key2 are both {key1!r}; use sweep() for one setting.")
    s1, n1 = _split(key1)
    s2, n2 = _split(key2)
    v1, v2 = list(values1), list(values2)
    if not v1 or not v2:
        raise SensitivityError("sweep_grid: values1 and values2 must both be non-empty.")
    if len(v1) * len(v2) > max_points:
        raise SensitivityError(
            f"sweep_grid: {len(v1)}×{len(v2)} = {len(v1) * len(v2)} points exceeds max_points={max_points}; "
            "use fewer values or raise max_points."
        )
    ms = list(metrics) if metrics is not None else _default_metrics([key1, key2])
    targets = _targets(ms)
    c1 = [_with_value(params, key1, v)[s1][n1] for v in v1]
    c2 = [_with_value(params, key2, v)[s2][n2] for v in v2]
    work = Path(work_dir)
    points = []
    for i, a in enumerate(c1):
        for j, b in enumerate(c2):
            prm = _with_value(_with_value(params, key1, a), key2, b)
            points.append(({key1: a, key2: b}, dataset, prm, str(work / f"{i:02d}_{j:02d}_{_slug(a)}_{_slug(b)}")))
    rows, cancelled = _run_points(points, targets=targets, metrics=ms, cache_dir=cache_dir, progress=progress,
                                  cancel=cancel, baseline_index=0)
    return {"keys": [key1, key2], "values": [c1, c2], "metrics": ms, "rows": rows, "cancelled": cancelled}


def grid_table(result: dict[str, Any], metric: str) -> np.ndarray:
    """One metric of a :func:`sweep_grid` result as an array.

    Returns
    -------
    ndarray of float64, shape (len(values1), len(values2))
        NaN for points not run (cancelled) or without that metric.
    """
    k1, k2 = result["keys"]
    v1, v2 = result["values"]
    out = np.full((len(v1), len(v2)), np.nan)
    for r in result["rows"]:
        i = [_norm(x) for x in v1].index(_norm(r[k1]))
        j = [_norm(x) for x in v2].index(_norm(r[k2]))
        out[i, j] = _num(r.get(metric))
    return out


# ----------------------------------------------------------------------------- threshold
def threshold_sweep(
    out_dir: Path | str, thresholds: Sequence[float], *, reference: float = 60.0
) -> dict[str, Any]:
    """Dominant classes for many thresholds from a finished run's stored RelCon (no refit).

    Parameters
    ----------
    out_dir : path-like
        Output folder of a run that has ``relcon.tif``, ``actcon.tif`` and a
        ``summary.json`` with ``attribution.categories`` and ``noise_floor``.
    thresholds : sequence of float
        Percent, each in [0, 100].
    reference : float, default 60
        Threshold whose class map the others are compared with.

    Returns
    -------
    dict
        ``thresholds``, ``reference``, ``labels`` {code: label}, ``rows``: one
        per threshold with ``threshold``, ``share.<label>`` (% of analysed
        pixels, summing to 100, "undetermined" included) and ``changed`` (% of
        analysed pixels whose class differs from the ``reference`` map).
        With an ensemble in the folder (``ensemble/relcon.tif``) each row also
        has ``agreement_mean`` (mean share of members agreeing with the modal
        class) and ``modal_share.<label>``.

    Raises
    ------
    SensitivityError
        Missing files or a threshold outside [0, 100].
    """
    from . import attribution
    from .attribution import undetermined_mask

    out = Path(out_dir)
    for f in ("relcon.tif", "actcon.tif", "summary.json"):
        if not (out / f).is_file():
            raise SensitivityError(f"{out / f}: missing; run the attribution stage into {out} first.")
    ths = [float(t) for t in thresholds]
    bad = [t for t in ths if not 0.0 <= t <= 100.0]
    if bad or not 0.0 <= float(reference) <= 100.0:
        raise SensitivityError(f"thresholds {bad or [reference]}: must be percentages in [0, 100].")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    att = summary.get("attribution") or {}
    cats = list(att.get("categories") or [])
    if not cats:
        raise SensitivityError(f"{out / 'summary.json'}: no attribution.categories; rerun the attribution stage.")
    rel = read_raster(out / "relcon.tif")[0]
    act = read_raster(out / "actcon.tif")[0]
    valid = np.all(np.isfinite(act), axis=0)
    und = undetermined_mask(act, att.get("noise_floor"))

    def classify(t: float) -> tuple[np.ndarray, dict[int, str]]:
        codes, labels = attribution.dominant_classes(rel, cats, threshold=t, undetermined_mask=und)
        return np.where(valid, codes, 0).astype(np.uint8), labels

    ref_codes, labels = classify(float(reference))
    ens_stack = None
    ens = summary.get("ensemble") or {}
    if ens.get("members", 0) and (out / "ensemble" / "relcon.tif").is_file():
        ens_stack = read_raster(out / "ensemble" / "relcon.tif")[0]
    rows = []
    for t in ths:
        codes, _ = classify(t)
        row: dict[str, Any] = {"threshold": t}
        row.update({f"share.{k}": float(v) for k, v in attribution.class_shares(codes, labels, valid).items()})
        row["changed"] = class_change(codes, ref_codes)
        if ens_stack is not None:
            from .ensemble import EnsembleReducer

            k = len(ens.get("categories") or cats)
            red = EnsembleReducer(max(labels) + 1, codes.shape, cats)
            for i in range(int(ens["members"])):
                block = ens_stack[i * (k + 1): (i + 1) * (k + 1)]
                mc, _ = attribution.dominant_classes(block[:k], cats, threshold=t, undetermined_mask=block[k] == 1)
                red.add(np.where(valid, mc, 0).astype(np.uint8))
            mode, agree = red.modal()
            row["agreement_mean"] = float(np.nanmean(np.where(valid, agree, np.nan)))
            row.update({f"modal_share.{k_}": float(v) for k_, v in attribution.class_shares(mode, labels, valid).items()})
        rows.append(row)
    return {"thresholds": ths, "reference": float(reference), "labels": labels, "rows": rows}


# ----------------------------------------------------------------------------- AHP
def _ahp_base(dataset: Any, params: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """Indicator names and the AHP matrix in effect: ``degradation.ahp_override`` or the dataset's."""
    ov = (params.get("degradation") or {}).get("ahp_override") or {}
    if ov:
        return list(ov["names"]), np.asarray(ov["matrix"], dtype=np.float64)
    if getattr(dataset, "ld_raster", lambda: None)() is not None:
        raise SensitivityError("the dataset supplies a ready LD raster; AHP judgements are not used, nothing to sweep.")
    deg = dataset.degradation()
    if deg is None:
        raise SensitivityError("the dataset has no [degradation.indicators]; there is no AHP matrix to sweep.")
    return list(deg["ahp_names"]), np.asarray(deg["ahp_matrix"], dtype=np.float64)


def perturb_ahp(dataset: Any, params: dict[str, Any], row: str, col: str, factor: float) -> dict[str, Any]:
    """Settings with one AHP judgement scaled: a[row, col] · factor and a[col, row] its reciprocal.

    The perturbed matrix goes into ``degradation.ahp_override`` (starting from
    the override already set, else the dataset's matrix), so the stage cache
    reruns ``drivers`` and the stages after it only.

    Parameters
    ----------
    dataset : npp_core.dataset.Dataset
        With degradation indicators and an AHP matrix (not a ready LD raster).
    params : dict
        Validated settings (not modified).
    row, col : str
        Two different indicator names of the matrix.
    factor : float
        > 0; exactly 1 returns the settings unchanged (same cache key).

    Returns
    -------
    dict
        New validated settings.

    Raises
    ------
    SensitivityError
        Unknown indicator, row == col, a non-positive factor, or no AHP matrix.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not (math.isfinite(factor) and factor > 0):
        raise SensitivityError(f"factor={factor!r}: must be a positive number (1 = unchanged judgement).")
    names, a = _ahp_base(dataset, params)
    for n in (row, col):
        if n not in names:
            raise SensitivityError(f"AHP indicator {n!r} is not in the matrix; indicators are: {', '.join(names)}.")
    if row == col:
        raise SensitivityError(f"AHP judgement {row!r} vs itself is always 1; pick two different indicators.")
    if float(factor) == 1.0:
        return P.validate(copy.deepcopy(params))
    a = a.copy()
    i, j = names.index(row), names.index(col)
    a[i, j] *= float(factor)
    a[j, i] = 1.0 / a[i, j]
    return _with_value(params, "degradation.ahp_override", {"names": names, "matrix": a.tolist()})


def ahp_sweep(
    dataset: Any,
    params: dict[str, Any],
    row: str,
    col: str,
    factors: Sequence[float] = (1 / 3, 1 / 2, 1.0, 2.0, 3.0),
    *,
    cache_dir: Path | str,
    work_dir: Path | str,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    metrics: Sequence[str] | None = None,
    accept_inconsistent: bool = True,
) -> dict[str, Any]:
    """Sweep one AHP judgement (scaled by each factor, via ``degradation.ahp_override``) through drivers → classes.

    Parameters
    ----------
    dataset, params, cache_dir, work_dir, progress, cancel, metrics
        As in :func:`sweep`.
    row, col : str
        The judgement a[row, col] (how much worse ``row`` is than ``col``).
    factors : sequence of float
        Multipliers of that judgement (1 = as given; its point is the baseline
        for ``class_change``; added when missing).
    accept_inconsistent : bool, default True
        Points whose perturbed matrix has CR ≥ 0.1 run with
        ``degradation.accept_inconsistent = true`` (their ``cr`` column says so);
        False lets those points fail with the drivers stage's message.

    Returns
    -------
    dict
        As :func:`sweep`, with ``key`` = ``"ahp:<row>/<col>"``, ``rows``
        holding ``factor``, ``judgement`` (the perturbed a[row, col]), ``cr``
        and ``weight.<indicator>`` besides the metrics.
    """
    from . import ahp

    fs = [float(f) for f in factors]
    if not fs:
        raise SensitivityError("ahp_sweep: no factors given.")
    if 1.0 not in fs:
        fs.append(1.0)
    prms = [perturb_ahp(dataset, params, row, col, f) for f in fs]  # validates everything first
    ms = list(metrics) if metrics is not None else list(DEFAULT_METRICS)
    targets = _targets(ms)
    work = Path(work_dir)
    points = []
    extra: list[dict[str, Any]] = []
    for i, (f, prm) in enumerate(zip(fs, prms)):
        names, a = _ahp_base(dataset, prm)
        w, cr = ahp.weights(a)
        if cr >= 0.1 and accept_inconsistent and not prm["degradation"]["accept_inconsistent"]:
            prm = _with_value(prm, "degradation.accept_inconsistent", True)
        points.append(({"factor": f}, dataset, prm, str(work / f"{i:02d}_x{_slug(round(f, 4))}")))
        e = {"judgement": float(a[names.index(row), names.index(col)]), "cr": float(cr)}
        e.update({f"weight.{n}": float(x) for n, x in zip(names, w)})
        extra.append(e)
    b_idx = fs.index(1.0)
    rows, cancelled = _run_points(points, targets=targets, metrics=ms, cache_dir=cache_dir, progress=progress,
                                  cancel=cancel, baseline_index=b_idx)
    for i, r in enumerate(rows):
        r.update(extra[i])
        r["is_baseline"] = i == b_idx
    return {
        "key": f"ahp:{row}/{col}",
        "label": f"AHP judgement {row} vs {col}",
        "unit": "×",
        "stage": "drivers",
        "values": fs,
        "metrics": ms,
        "rows": rows,
        "baseline": rows[b_idx] if b_idx < len(rows) else None,
        "cancelled": cancelled,
    }
