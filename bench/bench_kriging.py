"""Benchmark: ordinary kriging of 117 soil samples onto 0.2 M, 1 M and 4 M cells.

Prints wall time and peak traced memory (numpy buffers included, via tracemalloc)
of ``krige_grid`` (shared-matrix fast path, all samples), and the ratio against
PyKrige's own ``OrdinaryKriging.execute("grid")`` (backends "C" and "loop") timed
on a smaller grid in the same process and scaled linearly by cell count.

Run: ``python bench/bench_kriging.py [--quick]`` (target: 1 M cells <= 5 s, <= 1 GB).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npp_core import kriging as K  # noqa: E402


CPU: list[float] = []


def timed(fn, *args, **kw):
    """Run fn; return (result, wall s, peak traced MiB); CPU seconds (all threads) go to CPU[-1]."""
    tracemalloc.start()
    c = time.process_time()
    t = time.perf_counter()
    out = fn(*args, **kw)
    dt = time.perf_counter() - t
    CPU.append(time.process_time() - c)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, dt, peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="only 0.2 M cells")
    args = ap.parse_args()

    rng = np.random.default_rng(42)
    n, side = 117, 30_000.0
    x, y = rng.uniform(0, side, n), rng.uniform(0, side, n)
    z = 12 + 3 * np.sin(x / 4000) + 2 * np.cos(y / 3000) + rng.normal(0, 0.8, n)
    vg = K.fit_variogram(x, y, z, "auto")
    print(f"samples {n}; variogram {vg['model']} nugget={vg['nugget']:.3g} psill={vg['psill']:.3g} "
          f"range={vg['range']:.0f} m")

    def grid(cells: int) -> tuple[np.ndarray, np.ndarray]:
        k = int(round(np.sqrt(cells)))
        return np.linspace(0, side, k), np.linspace(side, 0, k)

    K.krige_grid(x, y, z, *grid(100), vg)  # numba compile / cache load

    # PyKrige reference on a small grid, scaled
    from pykrige.ok import OrdinaryKriging

    ok = OrdinaryKriging(x, y, z, variogram_model=vg["model"], variogram_parameters=K.pykrige_parameters(vg))
    ref_cells = 90_000
    gx, gy = grid(ref_cells)
    ref = {}
    for backend in ("C", "loop"):
        (pp, vv), dt, peak = timed(ok.execute, "grid", gx, gy, backend=backend)
        ref[backend] = dt / (gx.size * gy.size)
        print(f"pykrige execute backend={backend:4s} {gx.size * gy.size / 1e6:.2f} M cells: {dt:6.2f} s "
              f"(cpu {CPU[-1]:.2f} s), "
              f"peak {peak:6.0f} MiB ({ref[backend] * 1e6:.1f} s per M cells)")
        if backend == "C":
            gx, gy = grid(10_000)  # the pure-Python loop is slow: time it on fewer cells
    (p, v), dt, _ = timed(K.krige_grid, x, y, z, gx, gy, vg)
    print(f"  check vs pykrige loop on the same cells: max |dpred| = {np.abs(p - np.asarray(pp)).max():.1e}, "
          f"max |dvar| = {np.abs(v - np.asarray(vv)).max():.1e}")

    print("ratios = PyKrige time scaled to the same cell count / our time (wall clock; the machine is shared, so")
    print("cpu seconds over all threads are printed too)")
    print(f"{'cells':>8s} {'time s':>8s} {'cpu s':>7s} {'peak MiB':>9s} {'vs C':>7s} {'vs loop':>8s}")
    for cells in ([200_000] if args.quick else [200_000, 1_000_000, 4_000_000]):
        gx, gy = grid(cells)
        m = gx.size * gy.size
        (p, v), dt, peak = timed(K.krige_grid, x, y, z, gx, gy, vg)
        print(f"{m / 1e6:7.2f}M {dt:8.2f} {CPU[-1]:7.2f} {peak:9.0f} "
              f"{ref['C'] * m / dt:6.1f}x {ref['loop'] * m / dt:7.1f}x")
        del p, v

    gx, gy = grid(200_000)
    (p, v), dt, peak = timed(K.krige_grid, x, y, z, gx, gy, vg, n_closest=16)
    print(f"n_closest=16 (PyKrige C moving window, chunked) {gx.size * gy.size / 1e6:.2f} M cells: "
          f"{dt:.2f} s, peak {peak:.0f} MiB")
    print(f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
