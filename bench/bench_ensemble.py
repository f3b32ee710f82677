"""Ensemble of the attribution on the sample basin: time per member and peak memory.

Runs the upstream stages once (or restores them from ``--cache``), then the
single-run ``attribution`` stage (the reference: RF importance, the four
factorial forests, the noise forest and spatial block CV) and an ensemble of
``--members`` members (``ensemble`` + ``dominance`` stages). Prints the
ensemble time, the time per member, its ratio to the single-run attribution
stage, the dominance (reduction) time, and the peak RSS of this process during
each phase (sampled every 50 ms) next to the RSS before it.

    python bench/bench_ensemble.py [DATASET] [--members 20] [--vary seed|sample|both]
                                   [--cache DIR] [--set section.key=value ...]

Defaults are the study settings (500 trees, 1000 points). Target: 20 members
in ≤ 5 min on 2 cores with memory bounded. With fewer members the 20-member
time is extrapolated (members × per-member time + dominance) and labelled so.
The CPU time of the ensemble run is printed too: on a shared machine it gives
the load-independent lower bound (CPU s / 2 cores) of the wall time.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npp_core import params as P  # noqa: E402
from npp_core.dataset import open_dataset  # noqa: E402
from npp_core.pipeline import Context, run  # noqa: E402
from npp_core.stages import STAGE_FUNCS  # noqa: E402


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled)."""

    def __init__(self, every: float = 0.05) -> None:
        self.proc = psutil.Process()
        self.every = every
        self.peak = 0
        self.start = 0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = self.proc.memory_info().rss
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(self.every)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _secs(result, stage: str) -> float:
    return next((s.seconds for s in result.stages if s.name == stage), float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", nargs="?", default=str(Path(__file__).resolve().parents[1] / "sample_data"))
    ap.add_argument("--members", type=int, default=20)
    ap.add_argument("--vary", default="seed", choices=["seed", "sample", "both"])
    ap.add_argument("--cache", default=None, help="stage cache to reuse (upstream stages restored from it)")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    prm = P.load(None, args.set)
    mb = 1e6
    with tempfile.TemporaryDirectory() as tmp, open_dataset(args.dataset) as ds:
        tmp = Path(tmp)
        cache = Path(args.cache) if args.cache else tmp / "cache"
        t0 = time.perf_counter()
        up = run(ds, prm, tmp / "single", only=["attribution"], cache_dir=cache)
        print(f"upstream + attribution: {time.perf_counter() - t0:.1f} s "
              f"[{', '.join(f'{s.name} {s.status}' for s in up.stages)}]")
        assert up.ok, [(s.name, s.message) for s in up.stages if s.status == "failed"]

        # reference: the single-run attribution stage, computed (rerun directly when it came from the cache)
        att = _secs(up, "attribution")
        m1 = None
        if next(st.status for st in up.stages if st.name == "attribution") != "done":
            ctx = Context(ds, prm, tmp / "single", lambda *a: None, None)
            ctx.fragments["drivers"] = {"drivers": up.summary["drivers"]}
            ctx.stage = "attribution"
            with PeakRSS() as m1:
                t0 = time.perf_counter()
                STAGE_FUNCS["attribution"](ctx)
                att = time.perf_counter() - t0
        print(f"single-run attribution stage: {att:.1f} s  (n_trees={prm['rf']['n_trees']}, "
              f"n_points={prm['sampling']['n_points']})"
              + (f"; RSS {m1.start / mb:.0f} → peak {m1.peak / mb:.0f} MB" if m1 else ""))

        k = int(args.members)
        eprm = P.set_value(P.set_value(prm, f"ensemble.members={k}"), f"ensemble.vary={args.vary}")
        proc = psutil.Process()
        with PeakRSS() as m2:
            c0 = sum(proc.cpu_times()[:2])
            t0 = time.perf_counter()
            ens = run(ds, eprm, tmp / "single", only=["dominance"], cache_dir=cache)
            wall = time.perf_counter() - t0
            cpu = sum(proc.cpu_times()[:2]) - c0
        assert ens.ok, [(s.name, s.message) for s in ens.stages if s.status == "failed"]
        e_s, d_s = _secs(ens, "ensemble"), _secs(ens, "dominance")
        per = e_s / k
        print(f"ensemble stage, {k} members (vary={args.vary}): {e_s:.1f} s  → {per:.1f} s per member; "
              f"ratio per member / single attribution = {per / att:.2f}")
        print(f"dominance stage (reclassify + reduce {k} members, modal map, intervals): {d_s:.2f} s")
        print(f"ensemble run wall {wall:.1f} s; RSS {m2.start / mb:.0f} → peak {m2.peak / mb:.0f} MB "
              f"(+{(m2.peak - m2.start) / mb:.0f} MB; stored member stack "
              f"{(tmp / 'single' / 'ensemble' / 'relcon.tif').stat().st_size / mb:.1f} MB on disk)")
        print(f"CPU time (user+sys, all threads) of the ensemble run: {cpu:.1f} s → {cpu / k:.1f} CPU s per member; "
              f"on 2 idle cores a member needs ≥ {cpu / k / 2:.1f} s wall (20 members ≥ {20 * cpu / k / 2:.0f} s)")
        total20 = 20 * per + d_s * 20 / k
        label = "measured" if k == 20 else f"extrapolated from {k} members"
        verdict = "within" if total20 <= 300 else "over"
        print(f"20-member ensemble + dominance: {total20:.0f} s ({label}); target 300 s → {verdict} target")
        ag = ens.summary.get("ensemble", {})
        print(f"mean agreement {ag.get('mean_agreement', float('nan')):.3f}; "
              f"relcon_mean.C interval {ag.get('intervals', {}).get('relcon_mean.C')}")
        print(f"load average during the bench: {', '.join(f'{x:.1f}' for x in psutil.getloadavg())} "
              f"on {psutil.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
