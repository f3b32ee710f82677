"""Benchmark of the compiled forest prediction (npp_core.forest) against scikit-learn.

A 500-tree ``RandomForestRegressor`` with the project's R-like defaults
(``max_features = p/3``, ``min_samples_split = 6``) is fitted on 1000 synthetic
samples x 12 smooth drivers (like the sample basin's), then 200 k and 1 M pixels
are predicted by ``predict_forest`` and by ``model.predict`` (``n_jobs=2``) in
the same process. Wall and CPU time (``time.process_time``, all threads) are
printed for every repeat, with the ratio sklearn/ours and the max |difference|.
The machine may be shared: compare the CPU ratio when the load average is high.

Usage: ``python bench/bench_forest.py [--pixels 200000 1000000] [--repeats 2]``
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

from npp_core.forest import flatten_forest, predict_forest  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixels", type=int, nargs="+", default=[200_000, 1_000_000])
    ap.add_argument("--trees", type=int, default=500)
    ap.add_argument("--features", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
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
