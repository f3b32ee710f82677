"""Benchmark of ESTARFM (npp_core.estarfm): fuse() and fuse_series().

Prints wall and CPU times and ratios against references run in the same
process: a straightforward per-pixel numpy implementation (on a crop, scaled
by pixel count), the previous kernel (npp_core/estarfm.py as of commit
4b908b6, read from git when the repository has it: compacted similar-pixel
lists, pixel-major arrays) and date-by-date fuse():

1. the authors' 400 × 400 NDVI test case (window 51), when ../shared is present
   (otherwise a synthetic 400 × 400 scene), vs the per-pixel reference and the
   previous kernel;
2. a 1000 × 1000 case made by tiling the same image;
3. the sample basin's series (sample_data: 500 × 440 pixels, 138 coarse dates,
   12 fine images, basin mask) vs the previous kernel, with the largest
   difference between the two;
4. a synthetic series of the sample-basin size against date-by-date fuse()
   (timed on a few dates, scaled).

    python bench/bench_estarfm.py [--threads 2] [--skip-series] [--skip-1000] [--skip-previous]
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from npp_core.estarfm import fuse, fuse_series, similarity_thresholds  # noqa: E402

ZHU = ROOT.parent / "shared" / "data" / "estarfm_zhu_testdata"
SAMPLE = ROOT / "sample_data"
PREVIOUS_COMMIT = "4b908b6"  # the kernel before the vectorised planar rewrite (issue #7)
_TMP = tempfile.TemporaryDirectory(prefix="bench_estarfm_")


def previous_kernel():
    """npp_core/estarfm.py of PREVIOUS_COMMIT as a module (read-only ``git show``), or None."""
    try:
        src = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{PREVIOUS_COMMIT}:npp_core/estarfm.py"],
            capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(_TMP.name) / "estarfm_previous.py"
    path.write_text(src)
    sys.path.insert(0, _TMP.name)  # a real module name, so numba can cache it
    spec = importlib.util.spec_from_file_location("estarfm_previous", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["estarfm_previous"] = mod
    spec.loader.exec_module(mod)
    return mod


def timed(fn, *args, **kw):
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t, time.process_time() - c


# --------------------------------------------------------------------------- #
# the per-pixel reference (numpy on each window; one centre pixel at a time)
# --------------------------------------------------------------------------- #
def reference_pixels(f1, c1, f2, c2, c0, centres, window=51, classes=4, valid_range=(-1.0, 1.0)):
    """Single-band ESTARFM for the given centre pixels, one window at a time."""
    from scipy import stats

    lo, hi = valid_range
    w = window // 2
    rows, cols = f1.shape
    valid = np.isfinite(f1) & np.isfinite(f2) & np.isfinite(c1) & np.isfinite(c2) & np.isfinite(c0)
    ok = np.isfinite(f1) & np.isfinite(f2)
    th1 = np.std(f1[ok], ddof=1) * 2 / classes
    th2 = np.std(f2[ok], ddof=1) * 2 / classes
    out = []
    for i, j in centres:
        if not valid[i, j]:
            out.append(np.nan)
            continue
        a0, a1, b0, b1 = max(0, i - w), min(rows, i + w + 1), max(0, j - w), min(cols, j + w + 1)
        v = valid[a0:a1, b0:b1]
        W = [x[a0:a1, b0:b1] for x in (f1, c1, f2, c2, c0)]
        sim = v & (np.abs(W[0] - f1[i, j]) < th1) & (np.abs(W[2] - f2[i, j]) < th2)
        m0, m1, m2 = W[4][v].mean(), W[1][v].mean(), W[3][v].mean()
        if sim.sum() > 5:
            g1, s1, g2, s2, s0 = (x[sim] for x in W)
            with np.errstate(all="ignore"):
                r = 1 - 0.5 * (np.abs((g1 - s1) / (g1 + s1)) + np.abs((g2 - s2) / (g2 + s2)))
            r[np.isnan(r)] = 0.5
            yy, xx = np.nonzero(sim)
            d = 1 + np.hypot(yy + a0 - i, xx + b0 - j) / w
            wt = 1 / ((1 - r) * d + 1e-7)
            wt /= wt.sum()
            V = 1.0
            if abs(s1.mean() - s2.mean()) >= 0.02 * hi:
                lr = stats.linregress(np.concatenate([s1, s2]), np.concatenate([g1, g2]))
                if lr.pvalue <= 0.05 and 0 < lr.slope <= 5:
                    V = lr.slope
            d1, d2 = abs(m0 - m1) + 1e-10, abs(m0 - m2) + 1e-10
            t1, t2 = (1 / d1) / (1 / d1 + 1 / d2), (1 / d2) / (1 / d1 + 1 / d2)
            p = t1 * (f1[i, j] + np.sum(wt * V * (s0 - s1))) + t2 * (f2[i, j] + np.sum(wt * V * (s0 - s2)))
            if p <= lo or p >= hi:
                p = t1 * np.sum(wt * g1) + t2 * np.sum(wt * g2)
        else:
            e1, e2 = m0 - m1 + 1e-10, m0 - m2 + 1e-10
            t1 = (1 / abs(e1)) / (1 / abs(e1) + 1 / abs(e2))
            p = t1 * (f1[i, j] + e1) + (1 - t1) * (f2[i, j] + e2)
        out.append(p)
    return np.array(out)


def load_ndvi():
    if ZHU.is_dir():
        import rasterio

        out = []
        for n in ("tm0524", "modis0524", "tm0812", "modis0812", "modis0711"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with rasterio.open(ZHU / n) as src:
                    a = src.read().astype(np.float64)
            out.append(np.clip((a[2] - a[1]) / (a[2] + a[1]), -1, 1))
        return out, "authors' test data (NDVI)"
    f1, c1, f2, c2, c0 = (a[0] for a in synthetic(400, 400, 1))
    return [f1, c1, f2, c2, c0], "synthetic (../shared absent)"


def synthetic(rows, cols, n, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    base = np.array([0.15, 0.35, 0.55, 0.75])[((xx // 23) + (yy // 31)) % 4]
    return [base[None] + 0.1 * k + 0.04 * rng.standard_normal((1, rows, cols)) for k in range(5)]


def series_case(rows=480, cols=420, n_coarse=138, n_fine=12, factor=8, seed=0):
    """NDVI-like 16-day coarse series (bilinear from 8× coarser cells) and fine images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    cls = ((xx // 37) + 2 * (yy // 29) + (xx * yy // 5000)) % 5
    amp = np.array([0.1, 0.45, 0.35, 0.05, 0.0])[cls]
    off = np.array([0.2, 0.25, 0.2, 0.1, -0.1])[cls]
    cdates = [dt.date(2010, 1, 1) + dt.timedelta(days=16 * k) for k in range(n_coarse)]
    phase = np.array([np.sin(2 * np.pi * (d.timetuple().tm_yday - 100) / 365) for d in cdates])
    from scipy.ndimage import zoom

    coarse = np.empty((n_coarse, rows, cols))
    for k in range(n_coarse):
        truth = off + amp * max(phase[k], 0) + 0.03 * rng.standard_normal((rows, cols))
        pr, pc = -(-rows // factor) * factor, -(-cols // factor) * factor
        truth = np.pad(truth, ((0, pr - rows), (0, pc - cols)), mode="edge")
        cells = truth.reshape(pr // factor, factor, pc // factor, factor).mean(axis=(1, 3))
        coarse[k] = zoom(cells, factor, order=1, mode="nearest")[:rows, :cols]
    fidx = np.linspace(3, n_coarse - 4, n_fine).round().astype(int)
    fine = np.array([off + amp * max(phase[k], 0) + 0.03 * rng.standard_normal((rows, cols)) for k in fidx])
    fdates = [cdates[k] for k in fidx]
    return fine, fdates, coarse, cdates, fidx


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-series", action="store_true")
    ap.add_argument("--skip-1000", action="store_true")
    ap.add_argument("--skip-previous", action="store_true", help="do not run the previous kernel")
    ap.add_argument("--ref-pixels", type=int, default=300, help="centre pixels for the per-pixel reference")
    args = ap.parse_args()
    import numba

    if args.threads:
        numba.set_num_threads(args.threads)
    nthr = numba.get_num_threads()
    imgs, what = load_ndvi()
    fuse(*[a[:60, :60] for a in imgs], window=11)  # compile / load the cache
    prev = None if args.skip_previous else previous_kernel()
    if prev is not None:
        prev.fuse(*[a[:60, :60] for a in imgs], window=11)
    elif not args.skip_previous:
        print(f"[prev] previous kernel (commit {PREVIOUS_COMMIT}) not available: comparisons with it skipped")

    # 1. 400 x 400 NDVI
    pred, wall, cpu = timed(fuse, *imgs, window=51)
    rows, cols = imgs[0].shape
    print(f"[fuse] {rows}x{cols} NDVI, {what}, window 51, {nthr} threads: wall {wall:.2f} s, cpu {cpu:.2f} s")
    if prev is not None:
        ppred, pwall, pcpu = timed(prev.fuse, *imgs, window=51)
        print(f"[prev] previous kernel: wall {pwall:.2f} s, cpu {pcpu:.2f} s; ratio wall {pwall / wall:.2f}x, "
              f"cpu {pcpu / cpu:.2f}x; max |new - previous| = {np.nanmax(np.abs(pred - ppred)):.1e}")

    # per-pixel reference on a few centres, checked against the kernel, scaled by pixel count
    rng = np.random.default_rng(1)
    centres = list(zip(rng.integers(0, rows, args.ref_pixels), rng.integers(0, cols, args.ref_pixels)))
    ref, rwall, _ = timed(reference_pixels, *imgs, centres)
    got = np.array([pred[i, j] for i, j in centres])
    maxdiff = np.nanmax(np.abs(ref - got))
    per_px = rwall / len(centres)
    print(f"[ref ] per-pixel numpy reference: {per_px * 1e3:.2f} ms/pixel -> {per_px * rows * cols:.0f} s for "
          f"{rows}x{cols} (ratio {per_px * rows * cols / wall:.0f}x); max |kernel - reference| on "
          f"{len(centres)} pixels = {maxdiff:.1e}")

    # 2. 1000 x 1000 by tiling the image
    if not args.skip_1000:
        big = [np.tile(a, (3, 3))[:1000, :1000] for a in imgs]
        th = similarity_thresholds(imgs[0], imgs[2])
        _, bwall, bcpu = timed(fuse, *big, window=51, thresholds=th)
        print(f"[fuse] 1000x1000 (tiled), {nthr} threads: wall {bwall:.2f} s, cpu {bcpu:.2f} s; "
              f"time per pixel vs {rows}x{cols} (1 = linear): wall {bwall / 1e6 / (wall / (rows * cols)):.2f}x, "
              f"cpu {bcpu / 1e6 / (cpu / (rows * cols)):.2f}x; reference estimate {per_px * 1e6:.0f} s "
              f"(ratio {per_px * 1e6 / bwall:.0f}x)")

    # 3. the sample basin's series, against the previous kernel
    if not args.skip_series and (SAMPLE / "dataset.toml").is_file():
        from npp_core.dataset import open_dataset

        with open_dataset(SAMPLE) as ds:
            fine, coarse = ds.ndvi_fine(), ds.ndvi_coarse()
            if fine is not None and coarse is not None:
                fine = (np.array(fine[0], dtype=np.float64), list(fine[1]))
                coarse = (np.array(coarse[0], dtype=np.float64), list(coarse[1]))
        if fine is not None and coarse is not None:
            sub = (slice(None), slice(200, 260), slice(200, 260))
            fuse_series(fine[0][sub], fine[1], coarse[0][sub], coarse[1], window=11)  # compile
            (sfused, sinfo), swall, scpu = timed(fuse_series, fine[0], fine[1], coarse[0], coarse[1], window=51)
            n, r, c = coarse[0].shape
            valid = np.isfinite(fine[0][0]).mean()
            pairs = len({tuple(x["pair"]) for x in sinfo})
            print(f"[sample] series {r}x{c} ({100 * valid:.0f}% valid), {n} coarse dates, {len(fine[1])} fine "
                  f"images ({pairs} pairs), window 51, {nthr} threads: wall {swall:.2f} s, cpu {scpu:.2f} s")
            if prev is not None:
                prev.fuse_series(fine[0][sub], fine[1], coarse[0][sub], coarse[1], window=11)
                (pfused, _), pwall, pcpu = timed(prev.fuse_series, fine[0], fine[1], coarse[0], coarse[1],
                                                 window=51)
                same_nan = np.array_equal(np.isnan(pfused), np.isnan(sfused))
                print(f"[sample] previous kernel: wall {pwall:.2f} s, cpu {pcpu:.2f} s; ratio wall "
                      f"{pwall / swall:.2f}x, cpu {pcpu / scpu:.2f}x; max |new - previous| = "
                      f"{np.nanmax(np.abs(sfused - pfused)):.1e}, same NaN pixels: {same_nan}")

    # 4. a synthetic series, against date-by-date fuse
    if not args.skip_series:
        fine, fdates, coarse, cdates, fidx = series_case()
        n, r, c = coarse.shape
        (fused, info), swall, scpu = timed(fuse_series, fine, fdates, coarse, cdates, window=51)
        pairs = len({tuple(x["pair"]) for x in info})
        print(f"[series] {r}x{c}, {n} coarse dates, {len(fdates)} fine images ({pairs} pairs used), "
              f"{nthr} threads: wall {swall:.2f} s, cpu {scpu:.2f} s")
        # date by date, on a few dates, scaled
        pos = {d: i for i, d in enumerate(fdates)}
        sample = [0, n // 2, n - 1]
        t_dates = c_dates = 0.0
        maxdiff = 0.0
        for k in sample:
            i1, i2 = (pos[d] for d in info[k]["pair"])
            one, w1, c1 = timed(fuse, fine[i1], coarse[fidx[i1]], fine[i2], coarse[fidx[i2]], coarse[k], window=51)
            t_dates += w1
            c_dates += c1
            maxdiff = max(maxdiff, float(np.nanmax(np.abs(one - fused[k]))))
        est, cest = t_dates / len(sample) * n, c_dates / len(sample) * n
        print(f"[series] date-by-date fuse: {t_dates / len(sample):.2f} s/date (cpu {c_dates / len(sample):.2f}) "
              f"-> {est:.0f} s for {n} dates (cpu {cest:.0f} s); ratio wall {est / swall:.1f}x, "
              f"cpu {cest / scpu:.1f}x; max |series - fuse| on {len(sample)} dates = {maxdiff:.1e}")


if __name__ == "__main__":
    main()
