"""Scaling of the chunked stages (CASA, kriging, climate means, RF prediction, LCC) with area.

For each size N (default 1 M and 4 M pixels; add 16e6 when there is time) a benchmark area is
tiled from the sample basin (:func:`npp_core.benchdata.bench_data`, 2 years of months, not
timed), then every chunked stage runs on a local ``dask.distributed`` cluster (2 worker
processes × 1 thread by default, or ``--scheduler ADDRESS``) with the default settings, writing
its GeoTIFFs block by block. Printed per stage: seconds, seconds per million pixels, peak RSS of
every process (this one, the nannies and the workers; sampled every 0.2 s) and of their sum. At
the end: time per pixel of the largest size against the smallest (target ≤ 1.3×) and the peak
memory (target ≤ 6 GB at 16 M pixels on 2 cores / 24 GB).

Reference: for sizes ≤ ``--reference-max`` the in-memory kernels (whole arrays) run in this
process on the same data; their time and peak RSS are printed beside the chunked ones, with the
largest difference between the two outputs.

    python bench/bench_scale.py [--pixels 1e6 4e6 16e6] [--chunk 1024] [--workers 2]
                                [--scheduler ADDRESS] [--data /tmp/npp-bench] [--reference-max 1.1e6]
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dask.array as da  # noqa: E402

from npp_core import attribution, casa, chunked, forest, kriging, lcc, units  # noqa: E402
from npp_core import params as P  # noqa: E402
from npp_core.benchdata import bench_data, bench_shape  # noqa: E402
from npp_core.dataset import open_dataset  # noqa: E402
from npp_core.raster import read_raster, write_raster  # noqa: E402

SOIL = ("CF", "SOC", "TN", "AP", "AK", "pH", "BD")
LD = ("subsidence_m", "crack_density", "seeper", "goaf", "slope_change", "dist_mine_m")
LCC_DRIVERS = ("MAT", "MAP", "SOC", "subsidence_m")


class Memory:
    """Peak RSS of this process and all its descendants (nannies, workers), sampled in a thread."""

    def __init__(self, extra_pids: list[int] | None = None, every: float = 0.2):
        self.me = psutil.Process()
        self.extra = [psutil.Process(p) for p in (extra_pids or [])]
        self.every = every
        self.peak_total = 0
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _procs(self) -> list[psutil.Process]:
        out = [self.me, *self.extra]
        try:
            out += self.me.children(recursive=True)
        except psutil.Error:
            pass
        seen, uniq = set(), []
        for p in out:
            if p.pid not in seen:
                seen.add(p.pid)
                uniq.append(p)
        return uniq

    def _run(self) -> None:
        while not self._stop.is_set():
            tot = 0
            for p in self._procs():
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                tot += rss
                key = "this" if p.pid == self.me.pid else f"{p.name()}[{p.pid}]"
                self.peak[key] = max(self.peak.get(key, 0), rss)
            self.peak_total = max(self.peak_total, tot)
            self._stop.wait(self.every)

    def __enter__(self) -> "Memory":
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()


def gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB"


@contextmanager
def stage(name: str, rows: list[dict], npix: int, size_label: str) -> Iterator[None]:
    t0 = time.perf_counter()
    with Memory() as mem:
        yield
    dt = time.perf_counter() - t0
    procs = ", ".join(f"{k} {v / 1e9:.2f}" for k, v in sorted(mem.peak.items(), key=lambda kv: -kv[1])[:4])
    rows.append({"size": size_label, "stage": name, "s": dt, "s_per_mpx": dt / (npix / 1e6),
                 "peak_total": mem.peak_total, "peak_this": mem.peak.get("this", 0), "procs": procs})
    print(f"  {name:22s} {dt:8.1f} s  {dt / (npix / 1e6):7.2f} s/Mpx  peak sum {gb(mem.peak_total)}  [{procs}]",
          flush=True)


def month_seconds(months: list[str]) -> np.ndarray:
    return units.month_days(months) * 86400.0


def class_block(codes: np.ndarray, classes: dict, casa_type: dict, eps_table: dict) -> np.ndarray:
    cp = casa.class_parameters(codes[0], classes, casa_type, eps_max_table=eps_table)
    return np.stack([cp["eps_max"], cp["ndvi_min"], cp["ndvi_max"], cp["sr_min"], cp["sr_max"]])


def annual_block(npp: np.ndarray) -> np.ndarray:
    tot, _ = casa.annual(npp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels outside the study area
        mean = np.nanmean(tot, axis=0) if tot.shape[0] > 1 else tot[0]
    return np.concatenate([tot, mean[None]])


def warm_up() -> float:
    """Compile / load every numba kernel once in this process (run on each worker before timing)."""
    from sklearn.ensemble import RandomForestRegressor

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    x = rng.random((20, 20))
    lcc.local_correlation(x, x + rng.random((20, 20)), 5)
    nd = rng.uniform(0.1, 0.8, (12, 4, 4))
    t = np.linspace(-5, 25, 12)[:, None, None] + np.zeros((12, 4, 4))
    casa.npp_monthly(nd, t, np.full((12, 4, 4), 50.0), np.full((12, 4, 4), 400.0), 0.5, 0.023, 0.7, threads=1)
    rf = RandomForestRegressor(n_estimators=3, random_state=0).fit(rng.random((30, 2)), rng.random(30))
    forest.predict_forest(forest.flatten_forest(rf), rng.random((10, 2)))
    sx, sy = rng.random(12) * 1000, rng.random(12) * 1000
    kriging.krige(sx, sy, rng.random(12), rng.random(5) * 1000, rng.random(5) * 1000,
                  {"model": "spherical", "nugget": 0.1, "psill": 1.0, "range": 500.0})
    return time.perf_counter() - t0


def run_size(pixels: int, args: argparse.Namespace, client: Any, prm: dict, rows: list[dict]) -> None:
    rr, cc = bench_shape(pixels)
    npix = rr * cc
    label = f"{npix / 1e6:.1f}M"
    data = Path(args.data) / f"px{pixels}"
    t0 = time.perf_counter()
    if not (data / "dataset.toml").exists():
        bench_data(data, pixels, seed=0, years=2)
        print(f"\n== {label} pixels ({rr} x {cc}): data written in {time.perf_counter() - t0:.0f} s (not timed)")
    else:
        print(f"\n== {label} pixels ({rr} x {cc}): reusing {data}")
    out = data / "out"
    out.mkdir(exist_ok=True)
    ch = int(args.chunk)
    ds = open_dataset(data)
    classes, casa_type = ds.manifest["landcover"]["classes"], ds.manifest["landcover"]["casa_type"]
    classes = {int(k): v for k, v in classes.items()}
    cp = prm["casa"]
    eps_table = {k: float(v) * float(cp["eps_scale"]) for k, v in cp["eps_max"].items()}

    lc, grid, _ = chunked.open_dask(data / "landcover.tif", ch)
    ndvi, _, months = chunked.open_dask(data / "ndvi_monthly.tif", ch)
    months = [str(m) for m in months]
    T, _, _ = chunked.open_dask(data / "climate/tmean_monthly.tif", ch)
    Pr, _, _ = chunked.open_dask(data / "climate/prec_monthly.tif", ch)
    Sw, _, _ = chunked.open_dask(data / "climate/srad_monthly.tif", ch)
    S = Sw * (month_seconds(months) / 1e6)[:, None, None]  # W m-2 monthly mean -> MJ m-2 month-1
    valid_lc = da.isfinite(lc[0])
    ny = len(months) // 12

    # ---------------------------------------------------------------- CASA
    with stage("casa", rows, npix, label):
        par = da.map_blocks(class_block, lc, classes, casa_type, eps_table, dtype=np.float64,
                            chunks=((5,),) + lc.chunks[1:])
        npp = chunked.casa_chunked(ndvi, T, Pr, S, par[0], par[1], par[2], sr_min=par[3], sr_max=par[4], chunk=ch,
                                   halving=bool(cp["halving"]), teps2_coef=float(cp["teps2_coef"]),
                                   fpar_alpha=float(cp["fpar_alpha"]), w_clip=tuple(cp["w_clip"]),
                                   pet_zero=str(cp["pet_zero"]), cold_limit=float(cp["cold_limit"]))
        nonveg = valid_lc & ~da.isfinite(par[0])
        npp = da.where(nonveg[None], 0.0, npp)
        npp = da.where(valid_lc[None], npp, np.nan)
        ann = da.map_blocks(annual_block, npp, dtype=np.float64, chunks=((ny + 1,),) + npp.chunks[1:])
        chunked.write_many([
            (out / "npp_monthly.tif", npp, {"band_names": months}),
            (out / "npp_annual.tif", ann[:ny], {"band_names": [m[:4] for m in months[::12]]}),
            (out / "npp_mean.tif", ann[ny], {"band_names": ["npp_mean"]}),
        ], grid, client=client)

    # ---------------------------------------------------------------- climate means
    with stage("climate means", rows, npix, label):
        mat = T.mean(axis=0)
        mp = Pr.sum(axis=0) / ny
        mas = S.sum(axis=0) / ny
        chunked.write_many([(out / f"drivers/{n}.tif", da.where(valid_lc, a, np.nan), {"band_names": [n]})
                            for n, a in (("MAT", mat), ("MAP", mp), ("MAS", mas))], grid, client=client)

    # ---------------------------------------------------------------- kriging
    soil = ds.soil_samples()
    gx, gy = grid.xy()
    fits = {}
    with stage("kriging fit (driver)", rows, npix, label):
        for name in SOIL:
            x, y, z, _ = kriging.prepare_samples(soil["x"], soil["y"], soil["values"][name], grid_x=gx, grid_y=gy,
                                                 name=name)
            fits[name] = (x, y, z, kriging.fit_variogram(x, y, z, prm["kriging"]["model"]))
    with stage("kriging", rows, npix, label):
        items = []
        for name, (x, y, z, vg) in fits.items():
            k = chunked.krige_chunked(x, y, z, vg, grid, chunk=ch, mask=valid_lc, client=client)
            items.append((out / f"drivers/{name}.tif", k[0], {"band_names": [name]}))
            items.append((out / f"drivers/{name}_variance.tif", k[1], {"band_names": [f"{name} variance"]}))
        chunked.write_many(items, grid, client=client)

    # ---------------------------------------------------------------- sampling + fit (driver)
    names = ["MAT", "MAP", "MAS", *SOIL, *LD]
    paths = [out / f"drivers/{n}.tif" for n in names[:10]] + [data / f"ld/{n}.tif" for n in LD]
    stack = da.concatenate([chunked.open_dask(p, ch)[0] for p in paths], axis=0)
    nppm = chunked.open_dask(out / "npp_mean.tif", ch)[0][0]
    n_trees = int(prm["rf"]["n_trees"])
    with stage("sampling + RF fit", rows, npix, label):
        valid = (da.isfinite(nppm) & da.isfinite(stack).all(axis=0)).compute()
        sr, sc = attribution.sample_points(valid, n=int(prm["sampling"]["n_points"]), seed=int(prm["sampling"]["seed"]))
        del valid
        order = np.argsort(sr * cc + sc)
        sr, sc = sr[order], sc[order]
        X = np.stack([stack[j].vindex[sr, sc].compute() for j in range(len(names))], axis=1)
        yv = nppm.vindex[sr, sc].compute()
        rf = attribution.fit_forest(X, yv, n_trees=n_trees, seed=int(prm["rf"]["seed"]), n_jobs=2, oob_score=False)
        flat = forest.flatten_forest(rf)
        del rf
    with stage(f"RF predict ({n_trees} trees)", rows, npix, label):
        pred = chunked.predict_chunked(flat, stack, chunk=ch, client=client)
        chunked.write_blocks(out / "rf_all.tif", pred, grid, client=client)

    # ---------------------------------------------------------------- LCC
    w, mv = int(prm["lcc"]["window"]), int(prm["lcc"]["min_valid"])
    with stage(f"LCC ({len(LCC_DRIVERS)} drivers)", rows, npix, label):
        items = []
        for n in LCC_DRIVERS:
            drv = stack[names.index(n)]
            items.append((out / f"lcc/{n}.tif", chunked.lcc_chunked(drv, nppm, w, mv, ch), {"band_names": ["r", "p", "n"]}))
        chunked.write_many(items, grid, client=client)

    if npix <= args.reference_max:
        reference(data, out, grid, months, classes, casa_type, eps_table, cp, fits, flat, names, paths, w, mv,
                  rows, npix, label)


def reference(data, out, grid, months, classes, casa_type, eps_table, cp, fits, flat, names, paths, w, mv,
              rows, npix, label) -> None:
    """The in-memory kernels on whole arrays, in this process (time, peak RSS, max difference)."""
    print(f"  -- in-memory reference ({label}): whole arrays in this process, same outputs written")
    ref = out.parent / "ref"
    ref.mkdir(exist_ok=True)
    lc = read_raster(data / "landcover.tif")[0][0]
    valid_lc = np.isfinite(lc)
    with stage("REF casa", rows, npix, label):
        nd = read_raster(data / "ndvi_monthly.tif")[0]
        T = read_raster(data / "climate/tmean_monthly.tif")[0]
        Pr = read_raster(data / "climate/prec_monthly.tif")[0]
        S = read_raster(data / "climate/srad_monthly.tif")[0] * (month_seconds(months) / 1e6)[:, None, None]
        par = casa.class_parameters(np.where(valid_lc, lc, -1), classes, casa_type, eps_max_table=eps_table)
        npp = casa.npp_monthly(nd, T, Pr, S, par["eps_max"], par["ndvi_min"], par["ndvi_max"], sr_min=par["sr_min"],
                               sr_max=par["sr_max"], halving=bool(cp["halving"]), teps2_coef=float(cp["teps2_coef"]),
                               fpar_alpha=float(cp["fpar_alpha"]), w_clip=tuple(cp["w_clip"]),
                               pet_zero=str(cp["pet_zero"]), cold_limit=float(cp["cold_limit"]))
        del nd, T, Pr, S
        npp = np.where((valid_lc & ~np.isfinite(par["eps_max"]))[None], 0.0, npp)
        npp = np.where(valid_lc[None], npp, np.nan)
        tot, _ = casa.annual(npp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(tot, axis=0)
        write_raster(ref / "npp_monthly.tif", npp, grid, band_names=months)
        write_raster(ref / "npp_annual.tif", tot, grid)
        write_raster(ref / "npp_mean.tif", mean, grid)
    chk = read_raster(out / "npp_mean.tif")[0][0]
    print(f"     npp_mean max |chunked - memory| = {np.nanmax(np.abs(chk - mean.astype(np.float32))):.3g}"
          f"  (NaN patterns equal: {np.array_equal(np.isnan(chk), np.isnan(mean))})")
    del npp
    gx, gy = grid.xy()
    with stage("REF kriging", rows, npix, label):
        res = {n: kriging.krige_grid(x, y, z, gx, gy, vg, mask=valid_lc) for n, (x, y, z, vg) in fits.items()}
        for n, (pr, vr) in res.items():
            write_raster(ref / f"{n}.tif", pr, grid)
            write_raster(ref / f"{n}_variance.tif", vr, grid)
    chk = read_raster(out / "drivers/SOC.tif")[0][0]
    print(f"     SOC max |chunked - memory| = {np.nanmax(np.abs(chk - res['SOC'][0].astype(np.float32))):.3g}")
    del res
    stack = np.stack([read_raster(p)[0][0] for p in paths])
    with stage("REF RF predict", rows, npix, label):
        X = stack.reshape(stack.shape[0], -1).T
        pred = forest.predict_forest(flat, X).reshape(grid.shape)
        del X
        write_raster(ref / "rf_all.tif", pred, grid)
    chk = read_raster(out / "rf_all.tif")[0][0]
    print(f"     RF max |chunked - memory| = {np.nanmax(np.abs(chk - pred.astype(np.float32))):.3g}")
    nppf = read_raster(out / "npp_mean.tif")[0][0]  # the chunked LCC read the stored (float32) NPP
    with stage(f"REF LCC ({len(LCC_DRIVERS)} drivers)", rows, npix, label):
        res = {n: lcc.local_correlation(stack[names.index(n)], nppf, w, mv) for n in LCC_DRIVERS}
        for n, (r_, p_, n_) in res.items():
            write_raster(ref / f"lcc_{n}.tif", np.stack([r_, p_, n_.astype(float)]), grid)
    chk = read_raster(out / "lcc/SOC.tif")[0]
    print(f"     LCC SOC max |r chunked - memory| = {np.nanmax(np.abs(chk[0] - res['SOC'][0].astype(np.float32))):.3g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pixels", nargs="+", type=float, default=[1e6, 4e6])
    ap.add_argument("--chunk", type=int, default=None, help="block side (default run.chunk)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scheduler", default=None, help="address of an existing dask.distributed scheduler")
    ap.add_argument("--data", default="/tmp/npp-bench")
    ap.add_argument("--reference-max", type=float, default=1.1e6)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    prm = P.load(None, args.set)
    args.chunk = args.chunk or int(prm["run"]["chunk"])
    from distributed import Client, LocalCluster

    os.environ.setdefault("NUMBA_NUM_THREADS", "2")
    if args.scheduler:
        cluster = None
        client = Client(args.scheduler)
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0")
        client = Client(cluster)
    print(f"cluster: {client.nthreads()}  chunk {args.chunk}  cpu {os.cpu_count()}  "
          f"settings: lcc.window={prm['lcc']['window']} rf.n_trees={prm['rf']['n_trees']} "
          f"sampling.n_points={prm['sampling']['n_points']} kriging.model={prm['kriging']['model']}")
    t0 = time.perf_counter()
    w_here = warm_up()
    w_workers = client.run(warm_up)
    print(f"warm-up (numba kernels loaded/compiled once per process, not timed): this {w_here:.1f} s, workers "
          + ", ".join(f"{v:.1f} s" for v in w_workers.values()) + f"; wall {time.perf_counter() - t0:.1f} s")
    rows: list[dict] = []
    try:
        for px in args.pixels:
            run_size(int(px), args, client, prm, rows)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    # summary
    sizes = sorted({r["size"] for r in rows}, key=lambda s: float(s[:-1]))
    print("\nstage                     " + "".join(f"{s:>18s}" for s in sizes) + "   ratio s/Mpx last/first")
    stages = [s for s in dict.fromkeys(r["stage"] for r in rows) if not s.startswith("REF")]
    tot = {s: 0.0 for s in sizes}
    for st in stages:
        vals = {r["size"]: r for r in rows if r["stage"] == st}
        line = f"{st:26s}" + "".join(f"{vals[s]['s_per_mpx']:11.2f} s/Mpx" if s in vals else " " * 18 for s in sizes)
        if sizes[0] in vals and sizes[-1] in vals:
            line += f"   {vals[sizes[-1]]['s_per_mpx'] / vals[sizes[0]]['s_per_mpx']:.2f}x"
        for s in sizes:
            if s in vals:
                tot[s] += vals[s]["s"]
        print(line)
    npx = {s: float(s[:-1]) for s in sizes}
    print(f"{'TOTAL':26s}" + "".join(f"{tot[s] / npx[s]:11.2f} s/Mpx" for s in sizes)
          + f"   {(tot[sizes[-1]] / npx[sizes[-1]]) / (tot[sizes[0]] / npx[sizes[0]]):.2f}x  (target <= 1.3x)")
    for s in sizes:
        pk = max(r["peak_total"] for r in rows if r["size"] == s and not r["stage"].startswith("REF"))
        ref = [r for r in rows if r["size"] == s and r["stage"].startswith("REF")]
        extra = ""
        if ref:
            rt = sum(r["s"] for r in ref)
            ct = sum(r["s"] for r in rows if r["size"] == s and r["stage"] in
                     ("casa", "kriging", f"RF predict ({prm['rf']['n_trees']} trees)", f"LCC ({len(LCC_DRIVERS)} drivers)"))
            extra = (f"; in-memory reference: {rt:.1f} s for the 4 kernels vs chunked {ct:.1f} s "
                     f"(ratio chunked/memory {ct / rt:.2f}), peak of this process {gb(max(r['peak_this'] for r in ref))}")
        print(f"peak memory (sum of all processes) at {s}: {gb(pk)}{extra}")


if __name__ == "__main__":
    main()
