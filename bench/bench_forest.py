"""Benchmark of npp_core.forest (fitting, prediction, permutation importance) against scikit-learn.

1000 synthetic samples x 12 smooth drivers (like the sample basin's), the
project's R-like defaults (``max_features = p/3``, ``min_samples_split = 6``,
500 trees, ``n_jobs=2``), all in the same process:

* fit: :class:`~npp_core.forest.FastRandomForestRegressor` vs plain
  ``RandomForestRegressor`` with the same settings and ``random_state``
  (with and without ``oob_score``); prints both times, the ratio, and whether
  the forests are identical (every tree's thresholds and values, the bootstrap
  draws, ``oob_prediction_``, ``oob_score_``);
* permutation importance (R's %IncMSE deltas of
  :func:`npp_core.attribution._permutation_deltas`, 12 single-driver groups)
  vs a naive reference that calls ``estimators_[t].predict`` on explicitly
  permuted copies, as the code did before; identical deltas required;
* prediction: 200 k and 1 M pixels by ``predict_forest`` and by
  ``model.predict`` (``n_jobs=2``).

Wall and CPU time (``time.process_time``, all threads) are printed for every
repeat with the ratio sklearn/ours. The machine may be shared: compare the CPU
ratio when the load average is high.

Usage: ``python bench/bench_forest.py [--pixels 200000 1000000] [--repeats 2] [--skip-fit]``
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.ensemble import RandomForestRegressor  # noqa: E402

from npp_core import attribution as A  # noqa: E402
from npp_core.forest import FastRandomForestRegressor, flatten_forest, predict_forest  # noqa: E402


def drivers(rng: np.random.Generator, n: int, p: int) -> np.ndarray:
    """Correlated, skewed driver columns (n, p) in loosely physical ranges."""
    base = rng.normal(size=(n, p))
    mix = base @ (np.eye(p) + 0.3 * rng.normal(size=(p, p)))
    scale = np.linspace(1.0, 500.0, p)
    return mix * scale + np.where(np.arange(p) % 3 == 0, np.exp(0.3 * base), 0.0)


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def same_forest(a, b) -> bool:
    """Bit-identical trees, bootstrap draws and OOB results."""
    if len(a.estimators_) != len(b.estimators_):
        return False
    for ea, eb in zip(a.estimators_, b.estimators_):
        ta, tb = ea.tree_, eb.tree_
        if ea.random_state != eb.random_state or not all(
            np.array_equal(getattr(ta, k), getattr(tb, k)) for k in ("children_left", "feature", "threshold", "value")
        ):
            return False
    if not all(np.array_equal(u, v) for u, v in zip(a.estimators_samples_, b.estimators_samples_)):
        return False
    if hasattr(b, "oob_score_"):
        return a.oob_score_ == b.oob_score_ and np.array_equal(a.oob_prediction_, b.oob_prediction_)
    return True


def naive_permutation_deltas(model, X, y, groups, seed):
    """Reference: per-tree OOB MSE increase with sklearn ``predict`` on permuted copies (same random stream)."""
    rng = np.random.default_rng(seed)
    oob = A.oob_rows(model, X.shape[0])
    deltas = np.zeros((len(oob), len(groups)))
    for t, est in enumerate(model.estimators_):
        rows = oob[t]
        if rows.size == 0:
            continue
        used = set(est.tree_.feature[est.tree_.children_left != -1].tolist())
        Xo, yo = X[rows], y[rows]
        base = np.mean((est.predict(Xo) - yo) ** 2)
        perms = [rng.permutation(rows.size) for _ in groups]
        for g, cols in enumerate(groups):
            if used.intersection(cols.tolist()):
                Xp = Xo.copy()
                Xp[:, cols] = Xo[perms[g]][:, cols]
                deltas[t, g] = np.mean((est.predict(Xp) - yo) ** 2) - base
    return deltas


def bench_fit(Xs: np.ndarray, ys: np.ndarray, trees: int, repeats: int) -> None:
    p = Xs.shape[1]
    kw = dict(n_estimators=trees, max_features=max(p // 3, 1), min_samples_split=6, n_jobs=2, random_state=0)
    FastRandomForestRegressor(**{**kw, "n_estimators": 2}, oob_score=True).fit(Xs[:50], ys[:50])  # numba cache
    for oob in (True, False):
        for r in range(repeats):
            ref, w_s, c_s = timed(lambda: RandomForestRegressor(**kw, oob_score=oob).fit(Xs, ys))
            ours, w_o, c_o = timed(lambda: FastRandomForestRegressor(**kw, oob_score=oob).fit(Xs, ys))
            print(
                f"fit {trees} trees, oob_score={oob!s:5}, run {r + 1}: ours {w_o:5.2f} s wall / {c_o:5.2f} s CPU; "
                f"sklearn {w_s:5.2f} s wall / {c_s:5.2f} s CPU -> ratio {w_s / w_o:.2f}x wall, {c_s / c_o:.2f}x CPU; "
                f"identical {same_forest(ours, ref)}; load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    model = A.fit_forest(Xs, ys, n_trees=trees, seed=0)
    groups = [np.array([j]) for j in range(p)]
    small = A.fit_forest(Xs[:60], ys[:60], n_trees=3)
    A._permutation_deltas(small, Xs[:60], ys[:60], groups, 0)  # compile / load the numba cache
    for r in range(repeats):
        ours, w_o, c_o = timed(lambda: A._permutation_deltas(model, Xs, ys, groups, 0))
        ref, w_s, c_s = timed(lambda: naive_permutation_deltas(model, Xs, ys, groups, 0))
        print(
            f"permutation deltas ({trees} trees x {p} drivers), run {r + 1}: ours {w_o:5.2f} s wall / {c_o:5.2f} s CPU; "
            f"naive per-tree sklearn predict {w_s:5.2f} s wall / {c_s:5.2f} s CPU -> ratio {w_s / w_o:.2f}x wall; "
            f"identical {np.array_equal(ours, ref)}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixels", type=int, nargs="+", default=[200_000, 1_000_000])
    ap.add_argument("--trees", type=int, default=500)
    ap.add_argument("--features", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-fit", action="store_true", help="only the prediction benchmark")
    args = ap.parse_args()
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()}")
    rng = np.random.default_rng(0)
    p = args.features
    Xs = drivers(rng, 1000, p)
    z = (Xs - Xs.mean(0)) / Xs.std(0)
    ys = 400 + 60 * z[:, 0] + 40 * np.tanh(z[:, 1]) + 30 * z[:, 5] * (z[:, 6] > 0) + 10 * rng.normal(size=1000)
    model = RandomForestRegressor(
        args.trees, max_features=max(p // 3, 1), min_samples_split=6, n_jobs=2, random_state=0
    ).fit(Xs, ys)
    if not args.skip_fit:
        bench_fit(Xs, ys, args.trees, args.repeats)
    flat = flatten_forest(model)
    print(
        f"forest: {args.trees} trees, {flat.child.size / args.trees:.0f} nodes/tree, "
        f"depth mean {flat.depth.mean():.1f} max {flat.depth.max()}"
    )
    predict_forest(flat, Xs[:10])  # compile / load the numba cache
    for n in args.pixels:
        X = drivers(rng, n, p)
        X[::997, 3] = np.nan  # some undefined pixels
        finite = np.isfinite(X).all(axis=1)
        for r in range(args.repeats):
            ours, w_o, c_o = timed(lambda: predict_forest(flat, X))
            ref, w_s, c_s = timed(lambda: model.predict(np.where(finite[:, None], X, 0.0)))
            diff = np.max(np.abs(ours[finite] - ref[finite]))
            print(
                f"{n:>8} px, run {r + 1}: ours {w_o:6.2f} s wall / {c_o:6.2f} s CPU; sklearn(n_jobs=2) "
                f"{w_s:6.2f} s wall / {c_s:6.2f} s CPU -> ratio {w_s / w_o:.2f}x wall, {c_s / c_o:.2f}x CPU; "
                f"max |diff| {diff:.1e}; NaN rows ok {bool(np.isnan(ours[~finite]).all())}; "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
