"""Analytic hierarchy process (AHP) weights and the land-degradation (LD) index.

Design note
-----------
* **Weights** – principal (Perron) eigenvector of the pairwise comparison
  matrix A (Saaty 1–9 scale, reciprocal), normalised to sum 1; λmax is its
  eigenvalue, CI = (λmax − n)/(n − 1), CR = CI / RI(n) with Saaty's (1980)
  random indices for n = 1..10. n <= 2 is always consistent (CR = 0). CR >= 0.1
  is inconsistent: :func:`evaluate` flags it and :func:`disagreements` names the
  judgements a_ij that differ most from the ratio w_i/w_j the weights imply
  (largest |ln(a_ij · w_j / w_i)|).
* **Reciprocity tolerance** – judgements typed with two decimals (0.33 for 1/3,
  0.13 for 1/8) are accepted: |a_ij · a_ji − 1| <= ``tol`` (default 0.05).
* **LD index** – distance-type indicators are capped at the influence distance
  (otherwise min–max scaling makes LD non-zero everywhere); each indicator is
  min–max scaled over its valid pixels (inside ``mask`` and finite) with its
  direction (``higher_is_worse`` default; distance-type indicators default to
  ``lower_is_worse``: near a mine is worse); LD = Σ w·scaled, rescaled to
  [0, 1] over valid pixels (optionally after clipping to percentiles). A pixel
  where any indicator is NaN, or outside ``mask``, is NaN.

Out of scope: reading the matrix CSV (dataset module), group decisions,
hierarchies deeper than one level.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "AhpError",
    "RANDOM_INDEX",
    "check_matrix",
    "weights",
    "consistency",
    "disagreements",
    "evaluate",
    "degradation_index",
]

#: Saaty (1980) random consistency index RI(n) for n = 1..10.
RANDOM_INDEX: dict[int, float] = {
    1: 0.0, 2: 0.0, 3: 0.58, 4: 0.90, 5: 1.12, 6: 1.24, 7: 1.32, 8: 1.41, 9: 1.45, 10: 1.49,
}

_DIRECTIONS = ("higher_is_worse", "lower_is_worse")


class AhpError(ValueError):
    """An AHP matrix or LD input that cannot be used; the message names the fix."""


def check_matrix(matrix: Any, names: Sequence[str] | None = None, *, tol: float = 0.05) -> np.ndarray:
    """Validate a pairwise comparison matrix.

    Parameters
    ----------
    matrix : array_like, shape (n, n)
        a_ij = importance of indicator i over j (Saaty 1–9 scale).
    names : sequence of str, optional
        Indicator names (length n) used in messages; default ``"#1".."#n"``.
    tol : float
        Accepted reciprocity error |a_ij·a_ji − 1| (two-decimal typing).

    Returns
    -------
    ndarray, shape (n, n), float64
        The matrix.

    Raises
    ------
    AhpError
        Not square, wrong number of names, more than 10 indicators, a
        non-finite or non-positive entry, diagonal != 1, or a_ji != 1/a_ij.
    """
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise AhpError(
            f"the AHP matrix must be square (n × n) with the indicators as header and index; got shape {a.shape}"
        )
    n = a.shape[0]
    if names is None:
        names = [f"#{i + 1}" for i in range(n)]
    names = list(names)
    if len(names) != n:
        raise AhpError(f"the AHP matrix is {n} × {n} but {len(names)} indicator names were given ({names})")
    if n > 10:
        raise AhpError(
            f"the AHP matrix has {n} indicators; Saaty's random index (and reliable judgements) stop at 10 — "
            "group the indicators or drop some"
        )
    bad = ~np.isfinite(a) | (a <= 0)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise AhpError(
            f"AHP matrix entry ({names[i]}, {names[j]}) = {a[i, j]} is not a positive number; "
            "use Saaty's scale 1/9 … 9"
        )
    d = np.diag(a)
    if np.any(np.abs(d - 1.0) > tol):
        i = int(np.argmax(np.abs(d - 1.0)))
        raise AhpError(f"AHP matrix diagonal entry ({names[i]}, {names[i]}) = {d[i]}; it must be 1")
    prod = a * a.T
    err = np.abs(prod - 1.0)
    if np.any(err > tol):
        i, j = np.unravel_index(int(np.argmax(err)), err.shape)
        i, j = min(i, j), max(i, j)
        raise AhpError(
            f"AHP matrix is not reciprocal: ({names[i]}, {names[j]}) = {a[i, j]:g} but ({names[j]}, {names[i]}) = "
            f"{a[j, i]:g}; it should be 1/{a[i, j]:g} = {1.0 / a[i, j]:.4g}"
        )
    return a


def _principal(a: np.ndarray) -> tuple[np.ndarray, float]:
    vals, vecs = np.linalg.eig(a)
    k = int(np.argmax(vals.real))
    lam = float(vals[k].real)
    v = np.abs(vecs[:, k].real)
    return v / v.sum(), lam


def consistency(matrix: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Weights and consistency statistics of a pairwise comparison matrix.

    Returns
    -------
    dict
        ``weights`` (ndarray (n,), sum 1), ``lambda_max``, ``ci``, ``ri``, ``cr``.
    """
    a = check_matrix(matrix, names)
    n = a.shape[0]
    w, lam = _principal(a)
    ri = RANDOM_INDEX[n]
    ci = (lam - n) / (n - 1) if n > 1 else 0.0
    cr = ci / ri if ri > 0 else 0.0
    return {"weights": w, "lambda_max": lam, "ci": float(ci), "ri": ri, "cr": float(max(cr, 0.0))}


def weights(matrix: Any) -> tuple[np.ndarray, float]:
    """AHP weights (principal eigenvector) and Saaty's consistency ratio.

    Parameters
    ----------
    matrix : array_like, shape (n, n)
        Reciprocal pairwise comparison matrix, n <= 10.

    Returns
    -------
    weights : ndarray, shape (n,)
        Non-negative, summing to 1.
    cr : float
        CI / RI(n); >= 0.1 means inconsistent judgements. 0 for n <= 2.
    """
    c = consistency(matrix)
    return c["weights"], c["cr"]


def disagreements(
    matrix: Any, weights: Any, names: Sequence[str] | None = None, top: int = 3
) -> list[dict[str, Any]]:
    """The judgements that disagree most with the weights.

    Parameters
    ----------
    matrix : array_like, shape (n, n)
        Pairwise comparison matrix.
    weights : array_like, shape (n,)
        AHP weights (from :func:`weights`).
    names : sequence of str, optional
        Indicator names.
    top : int
        How many to return.

    Returns
    -------
    list of dict, sorted by ``log_ratio`` descending
        ``row``, ``col`` (names), ``i``, ``j``, ``judgement`` (a_ij),
        ``implied`` (w_i / w_j), ``log_ratio`` (|ln(a_ij / (w_i/w_j))|), for i < j.
    """
    a = check_matrix(matrix, names)
    n = a.shape[0]
    names = list(names) if names is not None else [f"#{i + 1}" for i in range(n)]
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or np.any(~np.isfinite(w)) or np.any(w <= 0):
        raise AhpError(f"weights must be {n} positive numbers (got {w})")
    out = []
    for i in range(n):
        for j in range(i + 1, n):
            implied = w[i] / w[j]
            out.append(
                {
                    "row": names[i], "col": names[j], "i": i, "j": j,
                    "judgement": float(a[i, j]), "implied": float(implied),
                    "log_ratio": float(abs(np.log(a[i, j] / implied))),
                }
            )
    out.sort(key=lambda d: -d["log_ratio"])
    return out[: max(int(top), 0)]


def evaluate(matrix: Any, names: Sequence[str], *, threshold: float = 0.1, top: int = 3) -> dict[str, Any]:
    """Weights by name, consistency, and (when inconsistent) a readable message.

    Returns
    -------
    dict
        ``weights`` ({name: w}), ``cr``, ``lambda_max``, ``ci``, ``consistent``
        (CR < threshold), ``disagreements`` (list, see :func:`disagreements`),
        ``message`` (str; empty when consistent).
    """
    c = consistency(matrix, names)
    names = list(names)
    dis = disagreements(matrix, c["weights"], names, top=top)
    ok = c["cr"] < threshold
    msg = ""
    if not ok:
        parts = [
            f"{d['row']} vs {d['col']}: judged {d['judgement']:.3g}, the weights imply {d['implied']:.3g}" for d in dis
        ]
        msg = (
            f"AHP consistency ratio {c['cr']:.3f} >= {threshold}: the judgements contradict each other. "
            f"Most disagreeing: {'; '.join(parts)}. Revise these (or set degradation.accept_inconsistent = true)."
        )
    return {
        "weights": {nm: float(wi) for nm, wi in zip(names, c["weights"])},
        "cr": c["cr"], "lambda_max": c["lambda_max"], "ci": c["ci"],
        "consistent": ok, "disagreements": dis, "message": msg,
    }


def degradation_index(
    indicators: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    *,
    direction: Mapping[str, str] | None = None,
    distance_keys: Sequence[str] = ("distance_to_mine",),
    influence_distance: float = 1500.0,
    mask: np.ndarray | None = None,
    clip_percentiles: tuple[float, float] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Land-degradation index from weighted, min–max scaled indicators.

    Parameters
    ----------
    indicators : dict of str -> ndarray, each shape (rows, cols)
        Indicator rasters on the reference grid (NaN = nodata); distances in
        the grid's units (m).
    weights : dict of str -> float
        AHP weight per indicator (same keys as ``indicators``; renormalised to sum 1).
    direction : dict of str -> {"higher_is_worse", "lower_is_worse"}, optional
        Default ``higher_is_worse``, except indicators in ``distance_keys``
        which default to ``lower_is_worse``.
    distance_keys : sequence of str
        Distance-type indicators, capped at ``influence_distance`` before scaling.
    influence_distance : float
        Cap (m); beyond it a distance indicator contributes nothing.
    mask : ndarray of bool, shape (rows, cols), optional
        True inside the study area; min/max are taken there; LD is NaN outside.
    clip_percentiles : (float, float), optional
        Clip the weighted sum to these percentiles (0–100) before the final
        rescale to [0, 1].

    Returns
    -------
    ld : ndarray, shape (rows, cols), float64
        In [0, 1]; NaN where any indicator is NaN or outside ``mask``.
    info : dict
        ``weights`` (normalised), ``direction``, ``min``/``max`` per indicator
        (after capping), ``capped`` (names), ``influence_distance``,
        ``raw_min``/``raw_max`` of the weighted sum, ``n_valid``.

    Raises
    ------
    AhpError
        Missing/extra weights, shape mismatch, unknown direction, negative
        weights, or an indicator with no variance over the valid pixels.
    """
    names = list(indicators)
    if not names:
        raise AhpError("no degradation indicators given; list them in [degradation.indicators]")
    missing = [k for k in names if k not in weights]
    extra = [k for k in weights if k not in indicators]
    if missing or extra:
        raise AhpError(
            f"AHP weights and LD indicators differ: no weight for {missing}, no raster for {extra}; "
            "the AHP matrix header must name exactly the indicators"
        )
    direction = dict(direction or {})
    unknown = [k for k in direction if k not in indicators]
    if unknown:
        raise AhpError(f"[degradation.direction] names unknown indicators {unknown}; indicators are {names}")
    for k, v in direction.items():
        if v not in _DIRECTIONS:
            raise AhpError(f"direction of {k!r} is {v!r}; use 'higher_is_worse' or 'lower_is_worse'")
    if not (np.isfinite(influence_distance) and influence_distance > 0):
        raise AhpError(f"influence_distance must be a positive distance (got {influence_distance})")
    w = np.array([float(weights[k]) for k in names])
    if np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise AhpError(f"AHP weights must be non-negative with a positive sum (got {dict(zip(names, w))})")
    w = w / w.sum()
    shape = np.shape(indicators[names[0]])
    if len(shape) != 2:
        raise AhpError(f"indicator {names[0]!r} must be a 2-D raster (got shape {shape})")
    for k in names:
        if np.shape(indicators[k]) != shape:
            raise AhpError(
                f"indicator {k!r} has shape {np.shape(indicators[k])}, {names[0]!r} has {shape}; align them first"
            )
    if mask is None:
        mask = np.ones(shape, dtype=bool)
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != shape:
            raise AhpError(f"mask has shape {mask.shape}, the indicators {shape}")

    dist = set(distance_keys)
    total = np.zeros(shape)
    valid = mask.copy()
    info: dict[str, Any] = {
        "weights": dict(zip(names, w.tolist())), "direction": {}, "min": {}, "max": {},
        "capped": [k for k in names if k in dist], "influence_distance": float(influence_distance),
    }
    for k, wk in zip(names, w):
        v = np.asarray(indicators[k], dtype=np.float64)
        if k in dist:
            v = np.minimum(v, influence_distance)  # NaN stays NaN
        d = direction.get(k, "lower_is_worse" if k in dist else "higher_is_worse")
        ok = mask & np.isfinite(v)
        if not ok.any():
            raise AhpError(f"indicator {k!r} has no valid pixel inside the study area; check its nodata value")
        lo, hi = float(v[ok].min()), float(v[ok].max())
        if not hi > lo:
            hint = (
                f" (every pixel is at least {influence_distance:g} from a mine; raise degradation.influence_distance_m)"
                if k in dist else ""
            )
            raise AhpError(
                f"indicator {k!r} has no variance (all valid pixels = {lo:g}){hint}; it cannot be min–max scaled — "
                "remove it from the AHP matrix or fix the raster"
            )
        s = (v - lo) / (hi - lo) if d == "higher_is_worse" else (hi - v) / (hi - lo)
        total += wk * np.where(ok, s, 0.0)
        valid &= ok
        info["direction"][k] = d
        info["min"][k], info["max"][k] = lo, hi
    vals = total[valid]
    if vals.size == 0:
        raise AhpError("no pixel has every LD indicator valid; check the indicators' nodata and extent")
    if clip_percentiles is not None:
        p0, p1 = np.percentile(vals, clip_percentiles)
        total = np.clip(total, p0, p1)
        vals = total[valid]
    lo, hi = float(vals.min()), float(vals.max())
    if not hi > lo:
        raise AhpError("the weighted LD sum is constant over the study area (all weights on constant indicators?)")
    ld = np.full(shape, np.nan)
    ld[valid] = (total[valid] - lo) / (hi - lo)
    info.update(raw_min=lo, raw_max=hi, n_valid=int(valid.sum()))
    return ld, info
