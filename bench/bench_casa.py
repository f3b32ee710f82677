"""Benchmark of the CASA kernel (npp_core.casa.npp_monthly).

Prints throughput in pixel-months per second on PIXELS pixels × MONTHS months,
the ratio against the bare cost of reading the four inputs once (summing them),
the numpy kernel as a reference in the same process, and peak memory above the
inputs (tracemalloc) against the input size.

    python bench/bench_casa.py [--pixels 1000000] [--months 72] [--dtype float32] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npp_core.casa import npp_monthly  # noqa: E402


def make_inputs(pixels: int, months: int, dtype: str, seed: int = 0):
    rows = max(1, int(round(np.sqrt(pixels))))
    cols = pixels // rows
    shape = (months, rows, cols)
    rng = np.random.default_rng(seed)
    season = np.cos((np.arange(months) % 12 - 6.5) / 12 * 2 * np.pi)[:, None, None]  # warm mid-year
    t = (season * -16 + 8 + rng.standard_normal(shape, dtype=np.float32) * 2).astype(dtype)
    nd = (0.45 - 0.25 * season + rng.random(shape, dtype=np.float32) * 0.2).astype(dtype)
    p = (60 - 50 * season + rng.random(shape, dtype=np.float32) * 40).astype(dtype)
    s = (450 - 200 * season + rng.random(shape, dtype=np.float32) * 50).astype(dtype)
    eps = np.where(rng.random((rows, cols)) < 0.05, np.nan, 0.542)  # 5 % non-vegetated
    return nd, t, p, s, eps, (months, rows, cols)


def timed(fn, repeat: int = 1):
    """Best wall time over ``repeat`` runs (and that run's CPU time in ``timed.cpu``)."""
    best = np.inf
    out = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, timed.cpu = wall, time.process_time() - c0
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pixels", type=int, default=1_000_000)
    ap.add_argument("--months", type=int, default=72)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--threads", type=int, default=0, help="kernel threads (0 = every core)")
    ap.add_argument("--skip-numpy", action="store_true", help="skip the numpy reference kernel")
    a = ap.parse_args()

    import os

    threads = a.threads or os.cpu_count() or 1
    nd, t, p, s, eps, (m, r, c) = make_inputs(a.pixels, a.months, a.dtype)
    n = m * r * c
    in_bytes = sum(x.nbytes for x in (nd, t, p, s))
    print(f"CASA benchmark: {r}×{c} = {r * c:,} pixels × {m} months = {n / 1e6:.1f} M pixel-months, "
          f"{a.dtype} inputs {in_bytes / 2**20:.0f} MiB, {threads} thread(s)")

    # compile (cached on disk after the first run)
    tc, _ = timed(lambda: npp_monthly(nd[:12, :2], t[:12, :2], p[:12, :2], s[:12, :2], eps[:2], 0.023, 0.634))
    print(f"  warm-up / compile        {tc:8.3f} s")

    t_read, _ = timed(lambda: sum(float(x.sum(dtype=np.float64)) for x in (nd, t, p, s)), repeat=3)
    print(f"  read inputs once (sum)   {t_read:8.3f} s   {n / t_read / 1e6:8.1f} M pixel-months/s")

    tracemalloc.start()
    t_nb, out = timed(lambda: npp_monthly(nd, t, p, s, eps, 0.023, 0.634, sr_min=1.05, sr_max=4.46, threads=threads))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rate = n / t_nb / 1e6
    cpu_nb = timed.cpu
    print(f"  npp_monthly (numba)      {t_nb:8.3f} s   {rate:8.1f} M pixel-months/s   "
          f"{t_nb / t_read:5.1f}× the read cost   target ≥ 20 M/s: {'OK' if rate >= 20 else 'MISSED'}")
    print(f"      CPU time {cpu_nb:.3f} s = {n / cpu_nb / 1e6:.1f} M pixel-months per CPU-second "
          f"(wall/CPU {t_nb / cpu_nb:.2f}; on a shared machine wall time depends on the other load)")
    total_peak = in_bytes + peak
    print(f"  peak memory              inputs {in_bytes / 2**20:.0f} MiB + {peak / 2**20:.0f} MiB allocated "
          f"(output {out.nbytes / 2**20:.0f} MiB) = {total_peak / in_bytes:.2f}× input   target ≤ 3×: "
          f"{'OK' if total_peak <= 3 * in_bytes else 'MISSED'}")

    if not a.skip_numpy:
        tracemalloc.start()
        t_np, ref = timed(lambda: npp_monthly(nd, t, p, s, eps, 0.023, 0.634, sr_min=1.05, sr_max=4.46, engine="numpy"))
        _, peak_np = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        ok = np.isfinite(ref)
        diff = float(np.max(np.abs(out[ok] - ref[ok]) / np.maximum(np.abs(ref[ok]), 1e-12))) if ok.any() else 0.0
        same_nan = bool(np.array_equal(ok, np.isfinite(out)))
        print(f"  npp_monthly (numpy ref)  {t_np:8.3f} s   {n / t_np / 1e6:8.1f} M pixel-months/s   "
              f"numba speed-up {t_np / t_nb:5.1f}×   peak {(in_bytes + peak_np) / in_bytes:.2f}× input   "
              f"max rel diff {diff:.1e}, NaN pattern equal: {same_nan}")
    print(f"  mean NPP {np.nanmean(out):.2f} gC m-2 month-1 (sanity)")


if __name__ == "__main__":
    main()
