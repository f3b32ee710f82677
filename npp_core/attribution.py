"""Driver attribution: sampling, Pearson, random-forest importance, factorial RelCon.

Conventions
-----------
* Drivers are columns of ``X`` named by ``names``; categories map a category
  name (e.g. ``"C"``) to its driver names. Nothing here assumes 12 drivers or 3
  categories. Drivers listed in a category but absent from ``names`` are
  ignored; a category with no driver present is skipped and reported under
  ``"empty_categories"``; a driver present in no category (or in two) is an
  error.
* Random forests are scikit-learn ``RandomForestRegressor`` with R
  randomForest's defaults: ``max_features = max(⌊p/3⌋, 1)``,
  ``min_samples_split = 6`` (R's nodesize 5), bootstrap, 500 trees.
* Importance (``measure``):

  - ``"r_incmse"`` (default): R's scaled %IncMSE. For each tree, the increase
    of that tree's out-of-bag MSE when one variable is permuted among the
    tree's OOB rows (a variable the tree never splits on gives exactly 0);
    mean over trees divided by its standard error ``sd/√ntree`` (population
    sd over trees, as R computes it; where the sd is 0 the mean is kept, as R
    does). A z-score.
  - ``"raw"``: the mean increase (target units², unscaled).
  - ``"grouped"``: all drivers of one category permuted together (rows
    permuted jointly, so within-category correlation is kept); mean increase
    per category. Driver percentages for this measure are the ``raw`` ones.

  Percentages: negatives clipped to 0, then normalised to sum to 100.
* The OOB rows of every tree come from the public
  ``RandomForestRegressor.estimators_samples_`` (in-bag indices); rows never
  drawn are OOB. Tests check that they reproduce ``oob_prediction_``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as _stats
from sklearn.ensemble import RandomForestRegressor

from .forest import FastRandomForestRegressor, FlatForest, flatten_forest, predict_forest, predict_trees_permuted

__all__ = [
    "AttributionError",
    "SamplingWarning",
    "valid_in_all",
    "sample_points",
    "pearson",
    "fit_forest",
    "oob_rows",
    "importance",
    "block_cv_r2",
    "factorial",
    "FactorialFit",
    "factorial_fit",
    "factorial_predict",
    "noise_pixel_index",
    "noise_floor",
    "relative_contributions",
    "category_codes",
    "dominant_classes",
    "rgb_composite",
    "class_shares",
    "relcon_mean",
    "undetermined_mask",
    "MEASURES",
]

MEASURES = ("r_incmse", "raw", "grouped")
#: Fewest valid pixels for a sample (below this nothing can be fitted or tested).
MIN_SAMPLES = 20


class AttributionError(ValueError):
    """Invalid input to the attribution, with a message naming the fix."""


class SamplingWarning(UserWarning):
    """Fewer valid pixels than requested sample points: all were taken."""


# --------------------------------------------------------------------------- sampling
def valid_in_all(layers: Sequence[np.ndarray], mask: np.ndarray | None = None) -> np.ndarray:
    """Pixels where every layer is finite (and inside ``mask``).

    Parameters
    ----------
    layers : sequence of ndarray, each (rows, cols)
        NPP and every driver on the same grid (NaN = nodata).
    mask : ndarray of bool, (rows, cols), optional
        Study area.

    Returns
    -------
    ndarray of bool, (rows, cols)
    """
    if len(layers) == 0:
        raise AttributionError("layers: empty; pass NPP and the driver rasters.")
    shape = np.shape(layers[0])
    ok = np.ones(shape, dtype=bool)
    for k, layer in enumerate(layers):
        layer = np.asarray(layer)
        if layer.shape != shape:
            raise AttributionError(
                f"layers[{k}]: shape {layer.shape} differs from {shape}; align to the reference grid."
            )
        ok &= np.isfinite(layer)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != shape:
            raise AttributionError(f"mask: shape {mask.shape} differs from the layers {shape}.")
        ok &= mask
    return ok


def sample_points(
    valid_mask: np.ndarray, n: int = 1000, seed: int = 42, *, return_info: bool = False
):
    """Random pixels, without replacement, among those valid in every layer.

    Parameters
    ----------
    valid_mask : ndarray of bool, shape (rows, cols)
        True where NPP and every driver are defined (and inside the study area).
    n : int, default 1000
        Points wanted.
    seed : int, default 42
        Seed of ``numpy.random.default_rng``.
    return_info : bool, default False
        Also return a dict ``{"requested", "drawn", "n_valid", "warning"}``.

    Returns
    -------
    rows_idx, cols_idx : ndarray of int64, shape (m,)
        Pixel indices, sorted in row-major order; ``m = min(n, n_valid)``.
    info : dict, only if ``return_info``
        ``warning`` is None or a message when fewer than ``n`` were valid
        (a :class:`SamplingWarning` is also issued).

    Raises
    ------
    AttributionError
        Mask not 2-D boolean, ``n < 1``, or fewer than 20 valid pixels.
    """
    valid_mask = np.asarray(valid_mask)
    if valid_mask.ndim != 2 or valid_mask.dtype != bool:
        raise AttributionError(
            f"valid_mask: need a 2-D boolean array (rows, cols); got {valid_mask.dtype} {valid_mask.shape}."
        )
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise AttributionError(f"n={n!r}: number of sample points must be a positive integer (sampling.n_points).")
    flat = np.flatnonzero(valid_mask.ravel())
    n_valid = flat.size
    if n_valid < MIN_SAMPLES:
        raise AttributionError(
            f"valid_mask: only {n_valid} pixels are valid in every layer (need ≥ {MIN_SAMPLES}); "
            "check that the driver rasters overlap NPP and the study area."
        )
    message = None
    if n_valid <= n:
        chosen = flat
        if n_valid < n:
            message = f"only {n_valid} valid pixels for {n} requested sample points; all {n_valid} were taken."
            warnings.warn(message, SamplingWarning, stacklevel=2)
    else:
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(flat, size=int(n), replace=False))
    rows, cols = np.unravel_index(chosen, valid_mask.shape)
    rows = rows.astype(np.int64)
    cols = cols.astype(np.int64)
    if return_info:
        return rows, cols, {"requested": int(n), "drawn": int(rows.size), "n_valid": int(n_valid), "warning": message}
    return rows, cols


def _check_xy(X: np.ndarray, y: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    names = [str(v) for v in names]
    if X.ndim != 2:
        raise AttributionError(f"X: need a 2-D array (n_samples, n_drivers); got shape {X.shape}.")
    if y.shape != (X.shape[0],):
        raise AttributionError(f"y: shape {y.shape} does not match X with {X.shape[0]} rows; need (n_samples,).")
    if len(names) != X.shape[1]:
        raise AttributionError(f"names: {len(names)} names for {X.shape[1]} columns of X; give one name per column.")
    if len(set(names)) != len(names):
        raise AttributionError(f"names: duplicated driver names in {names}; each driver must be unique.")
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise AttributionError(
            "X, y: sample contains NaN or infinite values; sample only pixels valid in every layer (sample_points)."
        )
    return X, y, names


# --------------------------------------------------------------------------- Pearson
def pearson(X: np.ndarray, y: np.ndarray, names: Sequence[str]) -> dict[str, dict]:
    """Global Pearson r and two-sided p of every driver with the response.

    Parameters
    ----------
    X : ndarray, shape (n, p)
        Driver values at the sample points (driver units).
    y : ndarray, shape (n,)
        Response (e.g. NPP, gC m⁻² yr⁻¹) at the same points.
    names : sequence of str, length p

    Returns
    -------
    dict
        ``{name: {"r": float, "p": float}}`` (``scipy.stats.pearsonr``); a
        constant driver (or response) gets ``r = p = NaN`` and a ``"note"``.
    """
    X, y, names = _check_xy(X, y, names)
    if X.shape[0] < 3:
        raise AttributionError(f"X: {X.shape[0]} samples; Pearson p needs at least 3.")
    out: dict[str, dict] = {}
    y_const = bool(np.all(y == y[0]))
    for j, name in enumerate(names):
        col = X[:, j]
        if y_const or np.all(col == col[0]):
            what = "response" if y_const else "driver"
            out[name] = {"r": float("nan"), "p": float("nan"), "note": f"constant {what} in the sample; r undefined"}
            continue
        res = _stats.pearsonr(col, y)
        out[name] = {"r": float(res.statistic), "p": float(res.pvalue)}
    return out


# --------------------------------------------------------------------------- forests
def _max_features(p: int) -> int:
    return max(p // 3, 1)


def fit_forest(
    X: np.ndarray, y: np.ndarray, *, n_trees: int = 500, seed: int = 0, n_jobs: int = 2, oob_score: bool = True
) -> RandomForestRegressor:
    """Fit a random forest with R randomForest's regression defaults.

    Parameters
    ----------
    X : ndarray, shape (n, p)
    y : ndarray, shape (n,)
    n_trees : int, default 500
    seed : int, default 0
        ``random_state`` (fixes bootstrap draws and split candidates).
    n_jobs : int, default 2
    oob_score : bool, default True
        Compute ``oob_score_`` (OOB R²) and ``oob_prediction_``.

    Returns
    -------
    RandomForestRegressor
        Fitted with ``max_features = max(⌊p/3⌋, 1)``, ``min_samples_split = 6``,
        ``bootstrap = True``; a :class:`~npp_core.forest.FastRandomForestRegressor`
        (scikit-learn's forest, bit-identical results, less per-tree overhead).
    """
    X = np.asarray(X, dtype=np.float64)
    if isinstance(n_trees, bool) or int(n_trees) != n_trees or n_trees < 1:
        raise AttributionError(f"n_trees={n_trees!r}: must be a positive integer (rf.n_trees).")
    if X.shape[0] < MIN_SAMPLES:
        raise AttributionError(f"X: {X.shape[0]} samples; a random forest needs at least {MIN_SAMPLES}.")
    model = FastRandomForestRegressor(
        n_estimators=int(n_trees),
        max_features=_max_features(X.shape[1]),
        min_samples_split=6,
        bootstrap=True,
        oob_score=oob_score,
        n_jobs=n_jobs,
        random_state=int(seed),
    )
    with warnings.catch_warnings():
        # "Some inputs do not have OOB scores" with very few trees: harmless here
        warnings.filterwarnings("ignore", message="Some inputs do not have OOB scores")
        model.fit(X, y)
    return model


def oob_rows(model: RandomForestRegressor, n_samples: int) -> list[np.ndarray]:
    """Out-of-bag row indices of every tree of a fitted bootstrap forest.

    Parameters
    ----------
    model : RandomForestRegressor
        Fitted with ``bootstrap=True`` and no ``max_samples`` override.
    n_samples : int
        Rows of the training matrix.

    Returns
    -------
    list of ndarray of int64
        ``out[t]`` = sorted rows never drawn for tree ``t``.
    """
    if not getattr(model, "bootstrap", False):
        raise AttributionError("model: fitted without bootstrap; it has no out-of-bag rows.")
    fitted_rows = getattr(model, "oob_prediction_", None)
    if fitted_rows is not None and len(fitted_rows) != n_samples:
        raise AttributionError(
            f"n_samples={n_samples}: the model was fitted on {len(fitted_rows)} rows; pass the training X."
        )
    out = []
    for inbag in model.estimators_samples_:
        counts = np.bincount(np.asarray(inbag), minlength=n_samples)
        if counts.size != n_samples:
            raise AttributionError(
                f"n_samples={n_samples}: model was fitted on more rows ({counts.size}); pass the training X."
            )
        out.append(np.flatnonzero(counts == 0))
    return out


def _permutation_deltas(
    model: RandomForestRegressor,
    X: np.ndarray,
    y: np.ndarray,
    groups: list[np.ndarray],
    seed: int,
) -> np.ndarray:
    """Per-tree increase of OOB MSE when each group of columns is permuted.

    Returns ndarray (n_trees, n_groups); exactly 0 where the tree uses no
    column of the group (its predictions cannot change).
    """
    rng = np.random.default_rng(seed)
    oob = oob_rows(model, X.shape[0])
    n_trees = len(oob)
    deltas = np.zeros((n_trees, len(groups)))
    # each tree's predictions by the compiled kernel: the same float32 decisions
    # and leaf values as est.predict, without its per-call validation and without
    # materialising the permuted copies
    flat = flatten_forest(model)
    member = np.zeros((len(groups), X.shape[1]), dtype=bool)
    for g, cols in enumerate(groups):
        member[g, np.asarray(cols, dtype=np.int64)] = True
    items: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    for t, est in enumerate(model.estimators_):
        rows = oob[t]
        if rows.size == 0:
            continue
        tree = est.tree_
        used = np.zeros(X.shape[1], dtype=bool)
        used[tree.feature[tree.children_left != -1]] = True
        # One permutation per (tree, group), drawn even when unused so that the
        # random stream does not depend on which variables a tree uses.
        perms = [rng.permutation(rows.size) for _ in groups]
        which = np.array([g for g in range(len(groups)) if (member[g] & used).any()], dtype=np.int64)
        items.append((t, rows, np.array([perms[g] for g in which], dtype=np.int64).reshape(which.size, rows.size), which))
    preds = predict_trees_permuted(
        flat, X, [it[0] for it in items], [it[1] for it in items], [it[2] for it in items], [it[3] for it in items], member
    )
    for (t, rows, _, which), pred in zip(items, preds):
        mse = np.mean((pred - y[rows]) ** 2, axis=1)  # each row as np.mean of that 1-D row
        deltas[t, which] = mse[1:] - mse[0]
    return deltas


def _resolve_categories(
    names: list[str], categories: Mapping[str, Sequence[str]] | None
) -> tuple[dict[str, list[int]], list[str]]:
    """Map each non-empty category to column indices; list the empty ones."""
    if categories is None:
        return {}, []
    index = {n: j for j, n in enumerate(names)}
    seen: dict[str, str] = {}
    resolved: dict[str, list[int]] = {}
    empty: list[str] = []
    for cat, members in categories.items():
        if isinstance(members, str):
            raise AttributionError(f"categories[{cat!r}]: need a list of driver names, got the string {members!r}.")
        cols = []
        for m in members:
            if m in seen and seen[m] != cat:
                raise AttributionError(
                    f"categories: driver {m!r} is in both {seen[m]!r} and {cat!r}; put it in one category."
                )
            seen[m] = cat
            if m in index:
                cols.append(index[m])
        if cols:
            resolved[str(cat)] = sorted(set(cols))
        else:
            empty.append(str(cat))
    missing = [n for n in names if n not in seen]
    if missing:
        raise AttributionError(
            f"categories: drivers {missing} belong to no category; add them to one (settings [categories])."
        )
    return resolved, empty


def _percent(values: np.ndarray) -> np.ndarray:
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, None)
    total = v.sum()
    return 100.0 * v / total if total > 0 else np.zeros_like(v)


def importance(
    X: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    measure: str = "r_incmse",
    n_trees: int = 500,
    seed: int = 0,
    categories: Mapping[str, Sequence[str]] | None = None,
    *,
    model: RandomForestRegressor | None = None,
    n_jobs: int = 2,
) -> dict:
    """Random-forest permutation importance of each driver (and category).

    Parameters
    ----------
    X : ndarray, shape (n, p)
        Drivers at the sample points.
    y : ndarray, shape (n,)
        Response at the sample points.
    names : sequence of str, length p
    measure : {"r_incmse", "raw", "grouped"}, default "r_incmse"
        See the module docstring.
    n_trees, seed : int
        Forest size and seed (the permutations use ``seed`` too).
    categories : mapping str -> list of str, optional
        E.g. ``{"C": [...], "S": [...], "M": [...]}``; enables category totals.
    model : RandomForestRegressor, optional
        A forest already fitted on exactly (X, y) with :func:`fit_forest`;
        avoids refitting.
    n_jobs : int, default 2

    Returns
    -------
    dict
        ``measure``; ``driver_measure`` (the measure behind ``drivers``:
        "raw" for grouped); ``drivers`` {name: percent} (sum 100 unless every value
        ≤ 0); ``categories`` {cat: percent} (sum of driver percents, or the
        grouped percents for ``"grouped"``; only with ``categories``);
        ``values`` {name: raw importance of ``measure`` (z-score for
        r_incmse, MSE increase otherwise)}; ``mean_increase`` {name: MSE
        increase}; ``category_values`` (grouped only); ``oob_r2``;
        ``empty_categories``; ``note``.
    """
    X, y, names = _check_xy(X, y, names)
    if measure not in MEASURES:
        raise AttributionError(f"measure={measure!r}: choose one of {MEASURES} (rf.importance).")
    cats, empty = _resolve_categories(names, categories)
    if measure == "grouped" and not cats:
        raise AttributionError("measure='grouped' permutes whole categories: pass categories={'C': [...], ...}.")
    if model is None:
        model = fit_forest(X, y, n_trees=n_trees, seed=seed, n_jobs=n_jobs)
    elif getattr(model, "n_features_in_", None) != X.shape[1]:
        raise AttributionError("model: fitted on a different number of drivers than X; refit or pass model=None.")
    p = X.shape[1]
    single = [np.array([j]) for j in range(p)]
    deltas = _permutation_deltas(model, X, y, single, seed)
    n_t = deltas.shape[0]
    mean = deltas.mean(axis=0)
    se = np.sqrt(np.maximum((deltas**2).mean(axis=0) - mean**2, 0.0) / n_t)
    scaled = np.where(se > 0, mean / np.where(se > 0, se, 1.0), mean)
    values = scaled if measure == "r_incmse" else mean
    pct = _percent(values)
    out: dict = {
        "measure": measure,
        "driver_measure": "r_incmse" if measure == "r_incmse" else "raw",
        "drivers": {n: float(v) for n, v in zip(names, pct)},
        "values": {n: float(v) for n, v in zip(names, values)},
        "mean_increase": {n: float(v) for n, v in zip(names, mean)},
        "oob_r2": float(getattr(model, "oob_score_", np.nan)),
        "n_trees": int(len(model.estimators_)),
        "empty_categories": empty,
        "note": None,
    }
    if not (values > 0).any():
        out["note"] = "no driver has a positive importance; percentages are all 0"
    if cats:
        if measure == "grouped":
            gdel = _permutation_deltas(model, X, y, [np.array(c) for c in cats.values()], seed + 1)
            gmean = gdel.mean(axis=0)
            gpct = _percent(gmean)
            out["categories"] = {c: float(v) for c, v in zip(cats, gpct)}
            out["category_values"] = {c: float(v) for c, v in zip(cats, gmean)}
        else:
            out["categories"] = {c: float(sum(pct[j] for j in cols)) for c, cols in cats.items()}
    return out


def block_cv_r2(
    X: np.ndarray,
    y: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    blocks: int = 5,
    *,
    folds: int = 5,
    n_trees: int = 500,
    seed: int = 0,
    n_jobs: int = 2,
) -> float:
    """Spatial block cross-validated R² of the random forest.

    The bounding box of the sample pixels is cut into ``blocks × blocks``
    tiles; tiles are assigned at random (``seed``) to ``folds`` folds, and each
    fold is predicted by a forest fitted on the others. R² = 1 − SSres/SStot
    over all held-out predictions (SStot about the mean of ``y``).

    Parameters
    ----------
    X : ndarray, shape (n, p)
    y : ndarray, shape (n,)
    rows, cols : ndarray of int, shape (n,)
        Pixel position of each sample (from :func:`sample_points`).
    blocks : int, default 5
        Tiles per side (rf.cv_blocks).
    folds : int, default 5
        Folds (≤ number of non-empty tiles).
    n_trees, seed, n_jobs : int

    Returns
    -------
    float
        Block-CV R² (can be negative when the model does not transfer).
    """
    n_cols = np.shape(X)[1] if np.ndim(X) == 2 else 0
    X, y, _ = _check_xy(X, y, [f"column {j}" for j in range(n_cols)])
    rows = np.asarray(rows)
    cols = np.asarray(cols)
    if rows.shape != y.shape or cols.shape != y.shape:
        raise AttributionError(f"rows, cols: need shape {y.shape} (one pixel position per sample).")
    if isinstance(blocks, bool) or int(blocks) != blocks or blocks < 1:
        raise AttributionError(f"blocks={blocks!r}: tiles per side must be a positive integer (rf.cv_blocks).")

    def _bin(v: np.ndarray) -> np.ndarray:
        lo, hi = v.min(), v.max()
        return np.minimum(((v - lo) * blocks) // max(hi - lo + 1, 1), blocks - 1).astype(np.int64)

    tile = _bin(rows) * blocks + _bin(cols)
    present = np.unique(tile)
    k = min(int(folds), present.size)
    if k < 2:
        raise AttributionError(
            f"rows, cols: the samples fall in {present.size} spatial tile(s); block CV needs ≥ 2 — use more blocks."
        )
    rng = np.random.default_rng(seed)
    fold_of_tile = dict(zip(rng.permutation(present).tolist(), (np.arange(present.size) % k).tolist()))
    fold = np.array([fold_of_tile[t] for t in tile.tolist()])
    pred = np.empty_like(y)
    for f in range(k):
        test = fold == f
        train = ~test
        if train.sum() < MIN_SAMPLES:
            raise AttributionError(
                f"block CV: fold {f} leaves {int(train.sum())} training samples; use fewer folds or more samples."
            )
        m = fit_forest(X[train], y[train], n_trees=n_trees, seed=seed, n_jobs=n_jobs, oob_score=False)
        pred[test] = predict_forest(m, X[test])
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        return float("nan")
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot


# --------------------------------------------------------------------------- factorial
@dataclass
class FactorialFit:
    """The fitted forests of the factorial experiments, ready to predict any block of pixels.

    Fitted once on the driver (:func:`factorial_fit`) and applied per block of
    pixels (:func:`factorial_predict`, :func:`noise_floor`,
    :func:`relative_contributions`); :func:`factorial` is their composition.
    Picklable; the forests are held as :class:`~npp_core.forest.FlatForest`
    node arrays (a few MB per 500-tree forest). Ship :meth:`without_model` to
    workers (drops the scikit-learn ``model_all``).

    Attributes
    ----------
    categories : list of str
        Used categories (at least one driver present), in input order (k).
    empty_categories : list of str
        Categories with no driver in ``names`` (skipped).
    names : list of str
        Driver names, the column order of ``X`` (p).
    keep_cols : dict str -> ndarray of int64
        Per category, the columns of ``X`` kept when it is removed (the
        features of ``flat_without[cat]``, ascending).
    flat_all : FlatForest
        RF_all (every driver, ``seed``).
    flat_without : dict str -> FlatForest or None
        RF without each category (``seed``); None when no driver is left (it
        predicts ``y_mean``).
    flat_noise : FlatForest
        RF_all refitted with ``seed + 1`` (seed-to-seed noise floor).
    y_mean : float
        Mean of the sample response (target units).
    models : dict
        ``{"all" | "without_<g>": {"oob_r2": float, "drivers": list of str}}``.
    model_all : RandomForestRegressor or None
        The fitted RF_all (only with ``keep_model=True``), for
        :func:`importance` ``model=``.
    """

    categories: list[str]
    empty_categories: list[str]
    names: list[str]
    keep_cols: dict[str, np.ndarray]
    flat_all: FlatForest
    flat_without: dict[str, FlatForest | None]
    flat_noise: FlatForest
    y_mean: float
    models: dict[str, dict]
    model_all: RandomForestRegressor | None = None

    @property
    def n_features(self) -> int:
        """Number of driver columns (p)."""
        return len(self.names)

    def without_model(self) -> "FactorialFit":
        """A copy without the scikit-learn ``model_all`` (small, for shipping to workers)."""
        return replace(self, model_all=None)


def factorial_fit(
    X_sample: np.ndarray,
    y_sample: np.ndarray,
    names: Sequence[str],
    categories: Mapping[str, Sequence[str]],
    *,
    n_trees: int = 500,
    seed: int = 0,
    n_jobs: int = 2,
    keep_model: bool = False,
) -> FactorialFit:
    """Fit RF_all, RF without each category and the noise forest on the sample.

    Parameters
    ----------
    X_sample : ndarray, shape (n, p)
        Drivers at the sample points (driver units).
    y_sample : ndarray, shape (n,)
        Response at the sample points (e.g. NPP, gC m⁻² yr⁻¹).
    names : sequence of str, length p
    categories : mapping str -> list of str
        Category → driver names (order = category order used for codes).
    n_trees, seed, n_jobs : int
        ``RF_all`` and every ``RF_without_g`` use ``seed``; the noise forest
        uses ``seed + 1``.
    keep_model : bool, default False
        Keep the scikit-learn RF_all in ``model_all``.

    Returns
    -------
    FactorialFit
    """
    X, y, names = _check_xy(X_sample, y_sample, names)
    cats, empty = _resolve_categories(names, categories)
    if not cats:
        raise AttributionError("categories: no category has a driver present; nothing to attribute.")
    all_cols = np.arange(X.shape[1])
    models: dict[str, dict] = {}
    rf_all = fit_forest(X, y, n_trees=n_trees, seed=seed, n_jobs=n_jobs)
    flat_all = flatten_forest(rf_all)
    models["all"] = {"oob_r2": float(rf_all.oob_score_), "drivers": list(names)}
    model_all = rf_all if keep_model else None
    del rf_all
    keep_cols: dict[str, np.ndarray] = {}
    flat_without: dict[str, FlatForest | None] = {}
    for cat, cols in cats.items():
        keep = np.setdiff1d(all_cols, cols).astype(np.int64)
        keep_cols[cat] = keep
        if keep.size == 0:
            # without its only category the model knows nothing: predict the sample mean
            flat_without[cat] = None
            models[f"without_{cat}"] = {"oob_r2": 0.0, "drivers": []}
        else:
            m = fit_forest(X[:, keep], y, n_trees=n_trees, seed=seed, n_jobs=n_jobs)
            flat_without[cat] = flatten_forest(m)
            models[f"without_{cat}"] = {"oob_r2": float(m.oob_score_), "drivers": [names[j] for j in keep]}
            del m
    rf_b = fit_forest(X, y, n_trees=n_trees, seed=seed + 1, n_jobs=n_jobs, oob_score=False)
    flat_noise = flatten_forest(rf_b)
    del rf_b
    return FactorialFit(
        categories=list(cats),
        empty_categories=empty,
        names=list(names),
        keep_cols=keep_cols,
        flat_all=flat_all,
        flat_without=flat_without,
        flat_noise=flat_noise,
        y_mean=float(y.mean()),
        models=models,
        model_all=model_all,
    )


def _check_pixels(fit: FactorialFit, X_pixels: np.ndarray, what: str = "X_pixels") -> np.ndarray:
    Xa = np.asarray(X_pixels, dtype=np.float64)
    if Xa.ndim != 2 or Xa.shape[1] != fit.n_features:
        raise AttributionError(
            f"{what}: shape {Xa.shape}; need (n_pixels, {fit.n_features}) with the columns of the "
            f"sample ({', '.join(fit.names)})."
        )
    return Xa


def factorial_predict(fit: FactorialFit, X_pixels: np.ndarray) -> dict[str, np.ndarray]:
    """RF_all and the signed contribution of every category for one block of pixels.

    Pure per block: the result of a row depends only on that row, so blocks of
    any size (e.g. Dask chunks) can be predicted independently.

    Parameters
    ----------
    fit : FactorialFit
        From :func:`factorial_fit`.
    X_pixels : ndarray, shape (m, p)
        Drivers at the pixels (columns in ``fit.names`` order, driver units).
        Rows with a non-finite value get NaN outputs.

    Returns
    -------
    dict
        ``rf_all`` ndarray (m,) RF_all prediction (target units); ``actcon``
        ndarray (k, m) RF_all − RF_without_g (target units), in
        ``fit.categories`` order.
    """
    Xa = _check_pixels(fit, X_pixels)
    pred_all = predict_forest(fit.flat_all, Xa)
    actcon = np.empty((len(fit.categories), Xa.shape[0]))
    for g, cat in enumerate(fit.categories):
        flat = fit.flat_without[cat]
        if flat is None:
            pred = np.where(np.isfinite(pred_all), fit.y_mean, np.nan)
        else:
            pred = predict_forest(flat, Xa[:, fit.keep_cols[cat]])
        actcon[g] = pred_all - pred
    return {"rf_all": pred_all, "actcon": actcon}


def noise_pixel_index(finite_index: np.ndarray, noise_pixels: int | None, seed: int) -> np.ndarray:
    """The pixels on which :func:`factorial` estimates the noise floor.

    Parameters
    ----------
    finite_index : ndarray of int, shape (n_finite,)
        Ascending indices (e.g. flat indices into the list of analysed
        pixels) of the pixels with a finite RF_all prediction.
    noise_pixels : int or None
        Pixels wanted; None (or ``n_finite ≤ noise_pixels``) = all of them.
    seed : int
        The factorial ``seed`` (``numpy.random.default_rng(seed)``).

    Returns
    -------
    ndarray of int, shape (min(n_finite, noise_pixels),)
        Sorted subset of ``finite_index`` (the same one :func:`factorial` uses).
    """
    finite_index = np.asarray(finite_index)
    if noise_pixels is not None and finite_index.size > noise_pixels:
        return np.sort(np.random.default_rng(seed).choice(finite_index, size=int(noise_pixels), replace=False))
    return finite_index


def noise_floor(fit: FactorialFit, X_pixels: np.ndarray, rf_all: np.ndarray | None = None) -> float:
    """Seed-to-seed noise floor of RF_all over the given pixels.

    Parameters
    ----------
    fit : FactorialFit
    X_pixels : ndarray, shape (m, p)
        Drivers at the chosen pixels (see :func:`noise_pixel_index`); rows
        with a non-finite value are ignored.
    rf_all : ndarray, shape (m,), optional
        RF_all at these pixels if already predicted (saves one prediction).

    Returns
    -------
    float
        95th percentile of |RF_all(seed) − RF_all(seed+1)| (target units);
        NaN when no pixel is finite.
    """
    Xa = _check_pixels(fit, X_pixels)
    if rf_all is None:
        rf_all = predict_forest(fit.flat_all, Xa)
    rf_all = np.asarray(rf_all, dtype=np.float64)
    if rf_all.shape != (Xa.shape[0],):
        raise AttributionError(f"rf_all: shape {rf_all.shape}; need ({Xa.shape[0]},), one value per row of X_pixels.")
    ok = np.isfinite(rf_all)
    if not ok.all():
        Xa, rf_all = Xa[ok], rf_all[ok]
    if rf_all.size == 0:
        return float("nan")
    diff = np.abs(rf_all - predict_forest(fit.flat_noise, Xa))
    return float(np.percentile(diff, 95))


def relative_contributions(
    actcon: np.ndarray, noise_floor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relative contributions and the undetermined mask from signed contributions.

    Parameters
    ----------
    actcon : ndarray, shape (k, ...)
        Signed contributions RF_all − RF_without_g (target units).
    noise_floor : float
        From :func:`noise_floor` (NaN = no floor, only Σ = 0 is undetermined).

    Returns
    -------
    relcon : ndarray, shape (k, ...)
        |ActCon_g| / Σ|ActCon| · 100 (percent; NaN where the sum is 0 or undefined).
    sum_abs : ndarray, shape (...)
        Σ|ActCon| (target units).
    undetermined : ndarray of bool, shape (...)
        Σ|ActCon| finite and below ``noise_floor`` or 0.
    """
    actcon = np.asarray(actcon, dtype=np.float64)
    sum_abs = np.abs(actcon).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        relcon = np.where(sum_abs > 0, np.abs(actcon) / sum_abs * 100.0, np.nan)
        undetermined = np.isfinite(sum_abs) & ((sum_abs < noise_floor) | (sum_abs == 0))
    return relcon, sum_abs, undetermined


def factorial(
    X_sample: np.ndarray,
    y_sample: np.ndarray,
    X_all_pixels: np.ndarray,
    names: Sequence[str],
    categories: Mapping[str, Sequence[str]],
    *,
    n_trees: int = 500,
    seed: int = 0,
    n_jobs: int = 2,
    noise_pixels: int | None = 200_000,
    keep_model: bool = False,
) -> dict:
    """Factorial experiments: RF with all drivers vs RF without each category.

    In-memory composition of :func:`factorial_fit`, :func:`factorial_predict`,
    :func:`noise_pixel_index`, :func:`noise_floor` and
    :func:`relative_contributions` (use those for chunked execution).

    Parameters
    ----------
    X_sample : ndarray, shape (n, p)
        Drivers at the sample points.
    y_sample : ndarray, shape (n,)
        Response at the sample points.
    X_all_pixels : ndarray, shape (m, p)
        Drivers at every pixel to map (same column order); rows with a
        non-finite value get NaN outputs.
    names : sequence of str, length p
    categories : mapping str -> list of str
        Category → driver names (order = category order used for codes).
    n_trees, seed, n_jobs : int
        ``RF_all`` and every ``RF_without_g`` use ``seed``; the noise forest
        uses ``seed + 1``.
    noise_pixels : int or None, default 200 000
        Estimate the noise floor from this many randomly chosen (``seed``)
        pixels instead of all of them (the 95th percentile of 2·10⁵ draws is
        within ~0.1 % of the full one; saves one full-raster prediction);
        None = every pixel.
    keep_model : bool, default False
        Also return the fitted RF_all under ``"model_all"`` (pass it to
        :func:`importance` as ``model=`` to avoid refitting the same forest).

    Returns
    -------
    dict
        ``categories`` list of used category names (k, in input order);
        ``empty_categories``; ``actcon`` ndarray (k, m) signed RF_all −
        RF_without_g (target units); ``relcon`` ndarray (k, m) percent,
        |ActCon_g| / Σ|ActCon| · 100 (NaN where the sum is 0 or undefined);
        ``sum_abs`` (m,); ``rf_all`` (m,) prediction; ``noise_floor`` float
        (95th percentile of |RF_all(seed) − RF_all(seed+1)|);
        ``undetermined`` bool (m,) where Σ|ActCon| < noise floor or = 0;
        ``models`` {"all" | "without_<g>": {"oob_r2", "drivers"}}.
    """
    n_cols = np.shape(X_sample)[1] if np.ndim(X_sample) == 2 else None
    Xa = np.asarray(X_all_pixels, dtype=np.float64)
    if n_cols is not None and (Xa.ndim != 2 or Xa.shape[1] != n_cols):
        raise AttributionError(
            f"X_all_pixels: shape {Xa.shape}; need (n_pixels, {n_cols}) with the columns of X_sample."
        )
    fit = factorial_fit(
        X_sample, y_sample, names, categories, n_trees=n_trees, seed=seed, n_jobs=n_jobs, keep_model=keep_model
    )
    pred = factorial_predict(fit, Xa)
    pred_all, actcon = pred["rf_all"], pred["actcon"]
    idx = noise_pixel_index(np.flatnonzero(np.isfinite(pred_all)), noise_pixels, seed)
    noise = noise_floor(fit, Xa[idx], rf_all=pred_all[idx])
    relcon, sum_abs, undetermined = relative_contributions(actcon, noise)
    return {
        "categories": list(fit.categories),
        "empty_categories": list(fit.empty_categories),
        "actcon": actcon,
        "relcon": relcon,
        "sum_abs": sum_abs,
        "rf_all": pred_all,
        "noise_floor": noise,
        "undetermined": undetermined,
        "models": fit.models,
        **({"model_all": fit.model_all} if keep_model else {}),
    }


def category_codes(category_names: Sequence[str]) -> dict[int, str]:
    """Stable code → label table of the dominant classes for k categories.

    0 ``"nodata"``; 1..k single categories in the given order; then for each
    pair (i < j) in order the two labels "ij", "ji" (for C, S, M: CS, SC, CM,
    MC, SM, MS); last ``"undetermined"``. Labels concatenate the names when
    every name is one character, else join them with "+".
    """
    names = [str(c) for c in category_names]
    if not names or len(set(names)) != len(names):
        raise AttributionError(f"category_names: need distinct names, got {names}.")
    sep = "" if all(len(c) == 1 for c in names) else "+"
    labels = {0: "nodata"}
    code = 1
    for c in names:
        labels[code] = c
        code += 1
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            labels[code] = names[i] + sep + names[j]
            labels[code + 1] = names[j] + sep + names[i]
            code += 2
    labels[code] = "undetermined"
    if code > 255:
        raise AttributionError(f"category_names: {len(names)} categories give {code} classes; uint8 holds ≤ 255.")
    return labels


def dominant_classes(
    relcon: np.ndarray,
    category_names: Sequence[str],
    threshold: float = 60.0,
    undetermined_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Dominant category (or ordered pair) per pixel from stored RelCon.

    A pure function of its inputs: changing ``threshold`` reclassifies stored
    RelCon without refitting anything.

    Parameters
    ----------
    relcon : ndarray, shape (k, ...)
        Relative contributions (percent) in ``category_names`` order; NaN =
        undefined.
    category_names : sequence of str, length k
    threshold : float, default 60.0
        A single category dominates when its RelCon is strictly greater.
    undetermined_mask : ndarray of bool, shape relcon.shape[1:], optional
        Pixels where Σ|ActCon| is below the noise floor (from :func:`factorial`).

    Returns
    -------
    codes : ndarray of uint8, shape relcon.shape[1:]
        See :func:`category_codes`; 0 where RelCon is NaN and not undetermined.
    labels : dict int -> str
        The code table.

    Notes
    -----
    Ranking is by RelCon, ties broken by category order (C > S > M for the
    default order). With fewer than two categories only single classes exist.
    """
    relcon = np.asarray(relcon, dtype=np.float64)
    names = [str(c) for c in category_names]
    if relcon.ndim < 1 or relcon.shape[0] != len(names):
        raise AttributionError(
            f"relcon: first axis has {relcon.shape[0] if relcon.ndim else 0} layers for {len(names)} "
            "category names; pass relcon with one layer per category, in the same order."
        )
    if not (0.0 <= float(threshold) <= 100.0):
        raise AttributionError(f"threshold={threshold!r}: must be a percentage in [0, 100] (dominance.threshold).")
    labels = category_codes(names)
    k = len(names)
    spatial = relcon.shape[1:]
    rc = relcon.reshape(k, -1)
    undefined = ~np.isfinite(rc).all(axis=0)
    ranked = np.argsort(-np.where(np.isfinite(rc), rc, -np.inf), axis=0, kind="stable")
    top1 = ranked[0]
    top_val = np.take_along_axis(rc, top1[None, :], axis=0)[0]
    codes = np.zeros(rc.shape[1], dtype=np.uint8)
    with np.errstate(invalid="ignore"):
        single = top_val > threshold
    if k == 1:
        codes[:] = 1
    else:
        pair_code = np.zeros((k, k), dtype=np.uint8)
        code = k + 1
        for i in range(k):
            for j in range(i + 1, k):
                pair_code[i, j] = code
                pair_code[j, i] = code + 1
                code += 2
        top2 = ranked[1]
        codes[:] = pair_code[top1, top2]
        codes[single] = (top1[single] + 1).astype(np.uint8)
    codes[undefined] = 0
    if undetermined_mask is not None:
        und = np.asarray(undetermined_mask, dtype=bool)
        if und.shape != spatial:
            raise AttributionError(
                f"undetermined_mask: shape {und.shape}; need {spatial} (relcon without its first axis)."
            )
        codes[und.ravel()] = max(labels)
    return codes.reshape(spatial), labels


def rgb_composite(
    relcon: np.ndarray,
    order: Sequence[str] = ("S", "M", "C"),
    category_names: Sequence[str] = ("C", "S", "M"),
) -> np.ndarray:
    """RGB composite of relative contributions (study: R = soil, G = mining, B = climate).

    Parameters
    ----------
    relcon : ndarray, shape (k, rows, cols)
        Percent, in ``category_names`` order.
    order : sequence of 3 str
        Category shown in R, G, B; a name not in ``category_names`` gives a 0
        channel.
    category_names : sequence of str, length k

    Returns
    -------
    ndarray of uint8, shape (3, rows, cols)
        RelCon · 2.55 rounded half up, clipped to 0..255; 0 where RelCon is NaN.
    """
    relcon = np.asarray(relcon, dtype=np.float64)
    names = [str(c) for c in category_names]
    if relcon.shape[0] != len(names):
        raise AttributionError(f"relcon: {relcon.shape[0]} layers for category_names {names}.")
    if len(order) != 3:
        raise AttributionError(f"order={order!r}: need exactly three category names (R, G, B).")
    out = np.zeros((3,) + relcon.shape[1:], dtype=np.uint8)
    for b, cat in enumerate(order):
        if cat in names:
            v = relcon[names.index(cat)]
            out[b] = np.clip(np.floor(np.nan_to_num(v, nan=0.0) * 255.0 / 100.0 + 0.5), 0, 255).astype(np.uint8)
    return out


def class_shares(codes: np.ndarray, labels: Mapping[int, str], mask: np.ndarray | None = None) -> dict[str, float]:
    """Area share (percent) of every dominant class over the analysed pixels.

    Parameters
    ----------
    codes : ndarray of uint8
        From :func:`dominant_classes`.
    labels : mapping int -> str
        Its code table.
    mask : ndarray of bool, same shape, optional
        Study area. Analysed = inside ``mask`` and code ≠ 0.

    Returns
    -------
    dict
        {label: percent} for every label except "nodata" (absent ones 0.0);
        sums to 100 (all 0.0 when nothing was analysed).
    """
    codes = np.asarray(codes)
    analysed = codes != 0
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != codes.shape:
            raise AttributionError(f"mask: shape {mask.shape} differs from codes {codes.shape}.")
        analysed &= mask
    n = int(analysed.sum())
    counts = np.bincount(codes[analysed].ravel().astype(np.int64), minlength=max(labels) + 1)
    return {lab: (100.0 * counts[c] / n if n else 0.0) for c, lab in sorted(labels.items()) if c != 0}


def relcon_mean(
    relcon: np.ndarray, category_names: Sequence[str], mask: np.ndarray | None = None
) -> dict[str, float]:
    """Mean RelCon (percent) of each category over pixels with a defined RelCon.

    Parameters
    ----------
    relcon : ndarray, shape (k, ...)
    category_names : sequence of str, length k
    mask : ndarray of bool, shape relcon.shape[1:], optional
        Pixels to include (e.g. study area and not undetermined).

    Returns
    -------
    dict
        {category: mean percent}; the means sum to 100 (NaN when no pixel).
    """
    relcon = np.asarray(relcon, dtype=np.float64)
    names = [str(c) for c in category_names]
    if relcon.shape[0] != len(names):
        raise AttributionError(f"relcon: {relcon.shape[0]} layers for category_names {names}.")
    ok = np.isfinite(relcon).all(axis=0)
    if mask is not None:
        ok &= np.asarray(mask, dtype=bool)
    if not ok.any():
        return {c: float("nan") for c in names}
    return {c: float(relcon[i][ok].mean()) for i, c in enumerate(names)}


def undetermined_mask(actcon: np.ndarray, noise_floor: float | None) -> np.ndarray:
    """Pixels whose Σ|ActCon| is 0 or below the seed-to-seed noise floor ("undetermined").

    Parameters
    ----------
    actcon : ndarray, shape (k, rows, cols)
        Signed actual contributions (``actcon.tif``), NPP units.
    noise_floor : float or None
        ``summary["attribution"]["noise_floor"]`` (from :func:`factorial`); None = only Σ = 0.

    Returns
    -------
    ndarray of bool, shape (rows, cols)
        False where any category's ActCon is NaN.
    """
    a = np.asarray(actcon, dtype=np.float64)
    valid = np.all(np.isfinite(a), axis=0)
    s = np.abs(np.where(valid[None], a, 0.0)).sum(axis=0)
    und = valid & (s == 0)
    if noise_floor is not None and np.isfinite(float(noise_floor)):
        und |= valid & (s < float(noise_floor))
    return und
