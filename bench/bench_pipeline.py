"""Whole pipeline on the sample basin: cold run, cached rerun, threshold change.

Prints per-stage seconds for a cold run (empty cache), the time of a rerun
with nothing changed (every stage restored from the cache) and of a run that
only changes ``dominance.threshold`` (only the class map recomputes), and the
ratio of each against the cold run. Peak memory (RSS) of this process too.

    python bench/bench_pipeline.py [DATASET] [--set section.key=value ...]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npp_core import params as P  # noqa: E402
from npp_core.dataset import open_dataset  # noqa: E402
from npp_core.pipeline import run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", nargs="?", default=str(Path(__file__).resolve().parents[1] / "sample_data"))
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    prm = P.load(None, args.set)
    proc = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp, open_dataset(args.dataset) as ds:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        r1 = run(ds, prm, tmp / "o1", cache_dir=tmp / "cache")
        cold = time.perf_counter() - t0
        print(f"cold run: {cold:.1f} s  (peak RSS {proc.memory_info().rss / 1e6:.0f} MB)")
        for s in r1.stages:
            print(f"  {s.name:12s} {s.status:10s} {s.seconds:7.2f} s  {s.message[:80]}")
        t0 = time.perf_counter()
        r2 = run(ds, prm, tmp / "o2", cache_dir=tmp / "cache")
        cached = time.perf_counter() - t0
        print(f"cached rerun: {cached:.2f} s  ratio vs cold {cached / cold:.4f}  "
              f"statuses {sorted(set(s.status for s in r2.stages))}")
        prm2 = P.set_value(prm, f"dominance.threshold={prm['dominance']['threshold'] - 10}")
        t0 = time.perf_counter()
        r3 = run(ds, prm2, tmp / "o2", cache_dir=tmp / "cache")
        thr = time.perf_counter() - t0
        recomputed = [s.name for s in r3.stages if s.status == "done"]
        print(f"threshold change: {thr:.2f} s  ratio vs cold {thr / cold:.4f}  recomputed {recomputed}")


if __name__ == "__main__":
    main()
