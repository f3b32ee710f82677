"""Dashboard benchmark: the sample basin in the app (AppTest), cached rerun, threshold redraw, memory per session.

Run: ``.venv/bin/python bench/bench_app.py [--dataset sample_data] [--sessions 3]``

Targets (issue 10): cold run of the sample basin ≤ 60 s, cached rerun ≤ 1 s,
threshold change → redrawn class map + overlay PNG ≤ 0.3 s, memory ≤ 150 MB per
extra session beyond the shared caches. Each figure is printed with a ratio
against a reference measured in the same process: the cold run for the cached
rerun, a dominance-stage rerun through the pipeline for the threshold redraw.
Not a test; uses its own stage cache (cold at start) under a temporary folder.
"""
from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def app_run(at, timeout: float = 1800) -> tuple[float, list[dict]]:
    """Click Run on the Run page; seconds until the run is finished and shown."""
    at.switch_page("pages/3_Run.py").run()
    t0 = time.perf_counter()
    at.button(key="run_start").click()
    at.run(timeout=timeout)
    dt = time.perf_counter() - t0
    assert not at.exception, [e.value for e in at.exception]
    last = at.session_state["last_job"]
    assert last["error"] == "", last["error"]
    return dt, last["stages"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=str(ROOT / "sample_data"))
    ap.add_argument("--sessions", type=int, default=3, help="extra AppTest sessions for the memory figure")
    args = ap.parse_args()

    from streamlit.testing.v1 import AppTest

    from pages import _common as C

    tmp = Path(tempfile.mkdtemp(prefix="bench_app_"))
    C.CACHE_DIR = tmp / "stage_cache"  # cold cache for this benchmark
    print(f"dataset {args.dataset}; load average {psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} cores")
    rss0 = rss_mb()

    def new_session() -> AppTest:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=1800)
        at.session_state["ds_path"] = args.dataset
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    try:
        # 1. cold run of the whole pipeline, through the Run page
        at = new_session()
        cold, stages = app_run(at)
        print(f"cold run (Run page, all stages)     {cold:8.2f} s   target ≤ 60 s   {'OK' if cold <= 60 else 'OVER'}")
        for s in stages:
            print(f"    {s['name']:<12} {s['status']:<8} {s['seconds']:7.2f} s")
        rss_after_first = rss_mb()

        # 2. cached rerun with nothing changed (every stage restored from the cache)
        at.switch_page("pages/3_Run.py").run()
        warm, stages = app_run(at)
        assert all(s["status"] == "cached" for s in stages), stages
        from npp_core import params as P
        from npp_core import pipeline

        from npp_core.dataset import open_dataset

        dso = open_dataset(args.dataset)
        t0 = time.perf_counter()
        pipeline.run(dso, P.defaults(), tmp / "direct", cache_dir=C.CACHE_DIR)
        direct = time.perf_counter() - t0
        print(f"cached rerun (Run page incl. redraw) {warm:8.2f} s   target ≤ 1 s    {'OK' if warm <= 1 else 'OVER'}"
              f"   ×{cold / warm:.0f} faster than cold")
        print(f"cached rerun (pipeline.run only)     {direct:8.2f} s   (fresh Dataset object: includes re-hashing inputs)")

        # 3. threshold change → class map + overlay PNG (what Explore's fragment does), vs a dominance-stage rerun
        from npp_core import attribution, render
        from npp_core.raster import read_raster
        import json

        out = Path(at.session_state["run"]["out_dir"])
        summ = json.loads((out / "summary.json").read_text())
        rel, grid, _ = read_raster(out / "relcon.tif")
        act = read_raster(out / "actcon.tif")[0]
        cats = summ["attribution"]["categories"]
        floor = summ["attribution"].get("noise_floor")
        valid = np.all(np.isfinite(rel), axis=0)
        und = attribution.undetermined_mask(act, float(floor)) & valid if floor is not None else None
        times = []
        for thr in (50.0, 55.0, 65.0, 70.0, 75.0):
            t0 = time.perf_counter()
            codes, labels = attribution.dominant_classes(rel, cats, threshold=thr, undetermined_mask=und)
            colours = render.dominant_colours(labels, cats)
            o = render.web_overlay(np.where(valid, codes, np.nan), grid, "Dominant driver", kind="classes", colours=colours)
            m = render.make_map([o])
            m.get_root().render()
            times.append(time.perf_counter() - t0)
        redraw = float(np.median(times))
        prm = P.defaults()
        prm["dominance"]["threshold"] = 65.0
        t0 = time.perf_counter()
        pipeline.run(dso, prm, tmp / "direct", only=["dominance"], cache_dir=C.CACHE_DIR)
        stage_rerun = time.perf_counter() - t0
        print(f"threshold → class map + PNG + map    {redraw:8.3f} s   target ≤ 0.3 s  {'OK' if redraw <= 0.3 else 'OVER'}"
              f"   (median of 5; {o.meta['size'][1]}×{o.meta['size'][0]} px overlay)")
        print(f"  reference: dominance-stage rerun   {stage_rerun:8.3f} s   ×{stage_rerun / redraw:.1f} slower than the live redraw")

        # 4. memory per extra session: each opens the dataset, runs (cached) and draws Explore
        at.switch_page("pages/4_Explore.py").run()
        base = rss_mb()
        sessions = []
        for _ in range(args.sessions):
            s = new_session()
            app_run(s)
            s.switch_page("pages/4_Explore.py").run()
            s.radio(key="explore_view").set_value("Dominant driver (threshold)").run()
            sessions.append(s)
        grown = rss_mb() - base
        per = grown / max(args.sessions, 1)
        print(f"RSS: start {rss0:.0f} MB, after first session+run {rss_after_first:.0f} MB, before extra sessions {base:.0f} MB")
        print(f"memory per extra session             {per:8.1f} MB  target ≤ 150 MB {'OK' if per <= 150 else 'OVER'}"
              f"   ({args.sessions} sessions, +{grown:.0f} MB total)")
        folders = [Path(s.session_state["session_dir"]) for s in sessions + [at]]
        del sessions, at, s
        gc.collect()
        left = [f for f in folders if f.exists()]
        print(f"session folders left after the sessions were dropped: {len(left)} of {len(folders)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
