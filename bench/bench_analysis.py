"""Benchmark of the driver analysis: LCC and the factorial random-forest stage.

Run: ``.venv/bin/python bench/bench_analysis.py [--side 2000] [--drivers 12]
[--pixels 1000000] [--trees 500]``.

Prints
* LCC wall time per driver on a side × side raster at windows 5, 11, 31
  (target ≤ 1 s per driver at 2000², flat in the window), and the speed ratio
  against a naive ``scipy.ndimage.generic_filter`` per-window Pearson on a crop
  (extrapolated per pixel);
* the factorial stage (fit RF_all, RF without each of 3 categories, the noise
  forest RF_all(seed+1); predict every pixel, the noise forest on
  ``--noise-pixels``) on 1000 samples × 12 drivers and ``--pixels`` pixels
  (target ≤ 60 s on 2 cores; wall and CPU time are both printed because the
  machine is shared), and the speed ratio of
  :func:`npp_core.forest.predict_forest` against ``RandomForestRegressor.predict``.

The machine load is printed too: timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import generic_filter, zoom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npp_core import attribution as A  # noqa: E402
from npp_core.forest import flatten_forest, predict_forest  # noqa: E402
from npp_core.lcc import local_correlation  # noqa: E402


def smooth_field(rng: np.random.Generator, side: int, coarse: int) -> np.ndarray:
    """Smooth random field: cubic upsampling of a coarse Gaussian grid, standardised."""
    f = zoom(rng.normal(size=(coarse, coarse)), side / coarse, order=3)[:side, :side]
    return (f - f.mean()) / f.std()


def naive_lcc_crop(x: np.ndarray, y: np.ndarray, window: int) -> np.ndarray:
    """Per-window Pearson r with generic_filter (reference for speed only)."""
    idx = np.arange(x.size, dtype=np.float64).reshape(x.shape)
    xf = x.ravel()
    yf = y.ravel()

    def corr(vals: np.ndarray) -> float:
        k = vals[vals >= 0].astype(np.int64)
        a = xf[k]
        b = yf[k]
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() < 3:
            return np.nan
        a = a[ok] - a[ok].mean()
        b = b[ok] - b[ok].mean()
        d = np.sqrt((a * a).sum() * (b * b).sum())
        return float((a * b).sum() / d) if d > 0 else np.nan

    return generic_filter(idx, corr, size=window, mode="constant", cval=-1.0)


def bench_lcc(side: int, n_drivers: int, rng: np.random.Generator) -> None:
    print(f"\n== LCC: {n_drivers} drivers on {side}x{side} (float64) ==")
    npp = smooth_field(rng, side, 60) + 0.3 * rng.normal(size=(side, side))
    npp[: side // 10, : side // 10] = np.nan  # nodata corner
    drivers = []
    for d in range(n_drivers):
        f = 0.5 * npp + smooth_field(rng, side, 20 + 10 * d)
        if d == n_drivers - 1:
            f[side // 2 :, :] = 0.0  # LD-like: zero over half the area (constant windows)
        drivers.append(f)
    local_correlation(npp[:50, :50], drivers[0][:50, :50], 5)  # compile / load cache
    for window in (5, 11, 31):
        times = []
        cpu = []
        for f in drivers:
            t0, c0 = time.perf_counter(), time.process_time()
            r, p, n = local_correlation(f, npp, window)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        undefined = float(np.isnan(r).mean() * 100)
        print(
            f"window {window:2d}: {np.mean(times):.3f} s/driver wall (min {np.min(times):.3f}, "
            f"CPU {np.mean(cpu):.3f} s), {sum(times):.1f} s for {n_drivers}; last driver undefined {undefined:.1f}%"
        )
    crop = min(100, side // 2)
    o = side // 4
    t0 = time.perf_counter()
    ref = naive_lcc_crop(drivers[0][o:o + crop, o:o + crop], npp[o:o + crop, o:o + crop], 5)
    t_naive = (time.perf_counter() - t0) / crop**2
    t0 = time.perf_counter()
    ours, _, _ = local_correlation(drivers[0], npp, 5)
    t_ours = (time.perf_counter() - t0) / drivers[0].size
    interior = ours[o + 2:o + crop - 2, o + 2:o + crop - 2]
    diff = np.nanmax(np.abs(interior - ref[2:-2, 2:-2]))
    print(
        f"generic_filter reference (window 5, {crop}x{crop} crop): {t_naive * 1e6:.1f} µs/pixel vs ours "
        f"{t_ours * 1e6:.3f} µs/pixel -> ratio {t_naive / t_ours:.0f}x (max |Δr| interior {diff:.1e})"
    )


def bench_factorial(n_pixels: int, n_trees: int, rng: np.random.Generator, noise_pixels: int | None) -> None:
    side = int(np.sqrt(n_pixels))
    names = ["MAT", "MAP", "MAE", "MAS", "CF", "SOC", "TN", "AP", "AK", "pH", "BD", "LD"]
    cats = {"C": names[:4], "S": names[4:11], "M": names[11:]}
    print(f"\n== factorial: 1000 samples x {len(names)} drivers, {side * side} pixels, {n_trees} trees ==")
    layers = np.stack([smooth_field(rng, side, 8 + 4 * j) for j in range(len(names))], axis=-1)
    npp = (
        400
        + 60 * layers[..., 0]
        + 40 * np.tanh(layers[..., 1])
        + 30 * layers[..., 5] * (layers[..., 6] > 0)
        - 50 * np.clip(layers[..., 11], 0, None)
        + 10 * rng.normal(size=(side, side))
    )
    rows, cols = A.sample_points(np.ones((side, side), dtype=bool), n=1000, seed=42)
    Xs = layers[rows, cols]
    ys = npp[rows, cols]
    Xall = layers.reshape(-1, len(names))
    predict_forest(A.fit_forest(Xs[:50], ys[:50], n_trees=2), Xall[:10])  # compile / load cache

    t0, c0 = time.perf_counter(), time.process_time()
    res = A.factorial(Xs, ys, Xall, names, cats, n_trees=n_trees, seed=0, noise_pixels=noise_pixels)
    t_fact = time.perf_counter() - t0
    c_fact = time.process_time() - c0
    what = "all pixels" if noise_pixels is None else f"{noise_pixels} pixels"
    print(
        f"factorial (fit RF_all, 3 x RF_without, noise RF_all(seed+1) on {what}; predict {Xall.shape[0]} px): "
        f"{t_fact:.1f} s wall, {c_fact:.1f} s CPU (= {c_fact / 2:.1f} s on 2 free cores; target ≤ 60 s); "
        f"noise floor {res['noise_floor']:.2f}, undetermined {res['undetermined'].mean() * 100:.1f}%"
    )

    t0 = time.perf_counter()
    m = A.fit_forest(Xs, ys, n_trees=n_trees, seed=0)
    t_fit = time.perf_counter() - t0
    flat = flatten_forest(m)
    t0, c0 = time.perf_counter(), time.process_time()
    ours = predict_forest(flat, Xall)
    t_ours = time.perf_counter() - t0
    c_ours = time.process_time() - c0
    step = max(1, Xall.shape[0] // 50_000)
    sub = Xall[::step]
    t0, c0 = time.perf_counter(), time.process_time()
    ref = m.predict(sub)
    scale = Xall.shape[0] / sub.shape[0]
    t_sk = (time.perf_counter() - t0) * scale
    c_sk = (time.process_time() - c0) * scale
    err = np.max(np.abs(ours[::step] - ref))
    print(
        f"one forest: fit {t_fit:.2f} s; predict {Xall.shape[0]} px: ours {t_ours:.1f} s wall / {c_ours:.1f} s CPU "
        f"({c_ours / Xall.shape[0] * 1e6:.1f} µs/px/core), sklearn n_jobs=2 (extrapolated from {sub.shape[0]} px) "
        f"{t_sk:.1f} s wall / {c_sk:.1f} s CPU -> ratio {t_sk / t_ours:.2f}x wall, {c_sk / c_ours:.2f}x CPU; "
        f"max |Δ| {err:.1e}; mean tree depth {flat.depth.mean():.1f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=2000)
    ap.add_argument("--drivers", type=int, default=12)
    ap.add_argument("--pixels", type=int, default=1_000_000)
    ap.add_argument("--trees", type=int, default=500)
    ap.add_argument("--skip-lcc", action="store_true")
    ap.add_argument("--skip-factorial", action="store_true")
    ap.add_argument("--noise-pixels", type=int, default=200_000, help="0 = noise floor from every pixel")
    args = ap.parse_args()
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()}")
    rng = np.random.default_rng(0)
    if not args.skip_lcc:
        bench_lcc(args.side, args.drivers, rng)
    if not args.skip_factorial:
        bench_factorial(args.pixels, args.trees, rng, args.noise_pixels or None)
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
