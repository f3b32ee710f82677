"""Scaling of the whole pipeline (``pipeline.run``) in chunked mode with the area.

For each size N (default 1 M and 4 M pixels; add 16e6 when there is time) a benchmark area is tiled
from the sample basin (:func:`npp_core.benchdata.bench_data`, 2 years of months, every input on the
grid's pixels, written once and reused), then ``pipeline.run`` runs every stage with
``run.mode = "chunked"`` on a local ``dask.distributed`` cluster of 2 worker processes × 1 thread (or
``--scheduler ADDRESS``), with the study settings (500 trees per forest, 1000 sample points, LCC
window 5, all-sample kriging, ``run.chunk`` = ``--chunk``). Each run is a fresh subprocess; before the
timed run a tiny area goes through the same cluster once so that compiled kernels are loaded in every
process (the cluster's start-up, ~3 s, is not timed).

Printed per size: seconds per stage and in total, seconds per million pixels, the peak RSS of every
process (driver, nanny, workers; sampled every 0.2 s) during each stage and of their sum, and at the end
the ratio of time per pixel of the largest size to the smallest (target ≤ 1.3) and the peak memory
(target ≤ 6 GB at 16 M pixels on 2 cores / 24 GB). Reference: sizes ≤ ``--memory-max`` also run with
``run.mode = "memory"`` (whole arrays, no cluster) in another subprocess.

    python bench/bench_scale.py [--pixels 1e6 4e6 16e6] [--chunk 1024] [--scheduler ADDRESS]
                                [--data /tmp/npp-bench] [--memory-max 1.1e6]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npp_core import params as P  # noqa: E402
from npp_core import pipeline  # noqa: E402
from npp_core.benchdata import bench_data, bench_shape  # noqa: E402
from npp_core.dataset import open_dataset  # noqa: E402


class Memory:
    """Peak RSS per process and of their sum, per stage label, sampled in a thread."""

    def __init__(self, every: float = 0.2):
        self.me = psutil.Process()
        self.every = every
        self.label = "start"
        self.peak: dict[str, dict[str, int]] = {}
        self.peak_total: dict[str, int] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            procs = [self.me]
            try:
                procs += self.me.children(recursive=True)
            except psutil.Error:
                pass
            tot = 0
            lab = self.label
            pk = self.peak.setdefault(lab, {})
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    name = "driver" if p.pid == self.me.pid else f"{p.name()}[{p.pid}]"
                except psutil.Error:
                    continue
                tot += rss
                pk[name] = max(pk.get(name, 0), rss)
            self.peak_total[lab] = max(self.peak_total.get(lab, 0), tot)
            self._stop.wait(self.every)

    def __enter__(self) -> "Memory":
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()


def settings(mode: str, chunk: int, scheduler: str) -> list[str]:
    return [f"run.mode={mode}", f"run.chunk={chunk}", f"run.scheduler={scheduler}"]


def one(data: str, mode: str, chunk: int, scheduler: str, warm: str) -> dict[str, Any]:
    """One timed run in this (fresh) process; returns per-stage seconds and peaks."""
    cluster = None
    if mode == "chunked" and not scheduler:
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=40)
        scheduler = cluster.scheduler_address
    sched = scheduler if mode == "chunked" else "threads"
    with tempfile.TemporaryDirectory(prefix="npp-scale-") as td:
        with open_dataset(warm) as ds:  # load compiled kernels in every process
            pipeline.run(ds, P.load(None, settings(mode, 256, sched)), Path(td) / "warm")
        mem = Memory()

        def progress(stage: str, frac: float, msg: str) -> None:
            mem.label = stage

        with mem, open_dataset(data) as ds:
            t0 = time.perf_counter()
            res = pipeline.run(ds, P.load(None, settings(mode, chunk, sched)), Path(td) / "out", progress=progress)
            total = time.perf_counter() - t0
    if cluster is not None:
        cluster.close()
    return {"ok": res.ok, "total": total, "stages": {s.name: [s.status, s.seconds, s.message[:200]] for s in res.stages},
            "peak": mem.peak, "peak_total": mem.peak_total}


def spawn(data: Path, mode: str, args: argparse.Namespace, warm: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", str(data), mode, str(args.chunk), args.scheduler or "", str(warm)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    for line in out.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"run failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")


def gb(b: float) -> str:
    return f"{b / 1e9:.2f}"


def report(label: str, npix: int, r: dict[str, Any]) -> None:
    mpx = npix / 1e6
    print(f"\n{label}: {npix:,} pixels — total {r['total']:.1f} s = {r['total'] / mpx:.1f} s per Mpx"
          + ("" if r["ok"] else "  (A STAGE FAILED)"))
    print(f"  {'stage':12s} {'s':>8s} {'s/Mpx':>7s} {'peak sum GB':>11s}  peak RSS per process (GB)")
    for name, (status, secs, msg) in r["stages"].items():
        pk = r["peak"].get(name, {})
        procs = ", ".join(f"{k} {gb(v)}" for k, v in sorted(pk.items(), key=lambda kv: -kv[1]))
        print(f"  {name:12s} {secs:8.1f} {secs / mpx:7.2f} {gb(r['peak_total'].get(name, 0)):>11s}  {procs}"
              + (f"  [{status}: {msg}]" if status not in ("done",) else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pixels", type=float, nargs="+", default=[1e6, 4e6])
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--scheduler", default="", help="address of a running Dask scheduler (default: a local cluster)")
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "npp-bench"))
    ap.add_argument("--memory-max", type=float, default=1.1e6, help="largest size also run in memory mode")
    ap.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        data, mode, chunk, sched, warm = args.one
        print(json.dumps(one(data, mode, int(chunk), sched, warm)), flush=True)
        return
    base = Path(args.data)
    warm = base / "warm"
    if not (warm / "dataset.toml").exists():
        bench_data(warm, 40_000)
    print(f"settings: study defaults (rf.n_trees 500, sampling.n_points 1000, lcc.window 5, kriging all samples), "
          f"2 years of months, run.chunk {args.chunk}, "
          f"{'scheduler ' + args.scheduler if args.scheduler else 'local cluster 2 workers x 1 thread'}; "
          f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 1e9:.0f} GB")
    results = []
    for n in args.pixels:
        npix_want = int(n)
        rows, cols = bench_shape(npix_want)
        d = base / f"area_{npix_want}"
        if not (d / "dataset.toml").exists():
            t0 = time.perf_counter()
            bench_data(d, npix_want)
            print(f"(wrote {d} in {time.perf_counter() - t0:.0f} s)", flush=True)
        npix = rows * cols
        r = spawn(d, "chunked", args, warm)
        report(f"chunked {rows} x {cols}", npix, r)
        results.append((npix, r))
        if n <= args.memory_max:
            rm = spawn(d, "memory", args, warm)
            report(f"memory  {rows} x {cols} (reference, no cluster)", npix, rm)
            print(f"  chunked / memory time: {r['total'] / rm['total']:.2f}; peak sum chunked "
                  f"{gb(max(r['peak_total'].values()))} GB vs memory {gb(max(rm['peak_total'].values()))} GB")
    if len(results) > 1:
        (n0, r0), (n1, r1) = results[0], results[-1]
        ratio = (r1["total"] / n1) / (r0["total"] / n0)
        print(f"\ntime per pixel {n1 / 1e6:.0f} M vs {n0 / 1e6:.0f} M: {ratio:.2f}x (target <= 1.3)")
    for npix, r in results:
        print(f"peak memory (sum of processes) at {npix / 1e6:.1f} M pixels: {gb(max(r['peak_total'].values()))} GB "
              f"(target <= 6 GB at 16 M)")


if __name__ == "__main__":
    main()
