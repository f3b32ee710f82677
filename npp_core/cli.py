"""Command-line interface: a thin layer over the library.

::

    python -m npp_core sample OUTDIR [--seed N]
    python -m npp_core check DATASET [--stages fusion,casa,...]
    python -m npp_core run DATASET --out OUT [--config params.toml] [--set section.key=value ...]
                                   [--only STAGES] [--cache DIR] [--scheduler ADDRESS]
    python -m npp_core params [--out params.toml]
    python -m npp_core bench-data OUT --pixels N [--seed N]

Exit status: 0 success, 1 problems found or a stage failed, 2 bad usage.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _stages_arg(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [s.strip() for s in text.replace(" ", ",").split(",") if s.strip()]


def cmd_sample(args: argparse.Namespace) -> int:
    from .sample import generate

    t0 = time.perf_counter()
    out = generate(Path(args.outdir), seed=args.seed)
    print(f"sample basin (seed {args.seed}) written to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .dataset import DatasetError, open_dataset

    try:
        ds = open_dataset(args.dataset)
    except (DatasetError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with ds:
        try:
            return _report_check(ds, _stages_arg(args.stages))
        except Exception as exc:  # never a traceback for a user's data
            print(f"error: {ds.name}: could not be checked ({exc.__class__.__name__}: {exc}). "
                  "Report this with the dataset if the message does not say what to fix.", file=sys.stderr)
            return 1


def _report_check(ds: Any, stages: list[str] | None) -> int:
    """Print what was understood of a dataset and every problem; 1 if there are errors."""
    summ = ds.summary()
    g = ds.grid.to_dict()
    print(f"dataset: {ds.name}  ({ds.root})")
    print(f"grid: {g['crs']}  {g['height']} rows × {g['width']} cols  {g['res'][0]:g} × {g['res'][1]:g}  "
          f"bounds {', '.join(f'{b:.1f}' for b in g['bounds'])}")
    for lay in summ.get("layers", []):
        bits = [str(lay.get(k)) for k in ("role", "file") if lay.get(k)]
        extra = []
        if lay.get("bands"):
            extra.append(f"{lay['bands']} band(s)")
        if lay.get("dates"):
            d = lay["dates"]
            if isinstance(d, dict):
                extra.append(f"dates {d.get('first')}..{d.get('last')}")
        if lay.get("units"):
            extra.append(f"units {lay['units']}")
        if lay.get("resampling"):
            extra.append(f"resampled: {lay['resampling']}")
        print("  " + "  ".join(bits) + ("  (" + ", ".join(extra) + ")" if extra else ""))
    problems = ds.check(stages=stages)
    errors = [p for p in problems if p.severity == "error"]
    warns = [p for p in problems if p.severity == "warning"]
    for p in problems:
        print(f"{p.severity}: {p.file}: {p.message}" + (f"\n    fix: {p.fix}" if p.fix else ""))
    print(f"{len(errors)} error(s), {len(warns)} warning(s)")
    return 1 if errors else 0


def cmd_run(args: argparse.Namespace) -> int:
    from . import params as P
    from .dataset import DatasetError, open_dataset
    from .pipeline import run

    try:
        prm = P.load(args.config, (args.set or []) + ([f"run.scheduler={args.scheduler}"] if args.scheduler else []))
    except (P.ParamsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        ds = open_dataset(args.dataset)
    except (DatasetError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    only = _stages_arg(args.only)
    with ds:
        try:
            from .chunked import choose_mode
            from .stages import _n_bands

            mode, _ = choose_mode(ds.grid.shape, 4 * (_n_bands(ds, "climate.temperature") or 12), prm)
            if mode == "chunked":  # the full check reads every raster whole; chunked runs check the manifest
                print("chunked run: pixel-level input checks are skipped (run `python -m npp_core check` on a "
                      "smaller extract to see them).", flush=True)
                errors = [p for p in getattr(ds, "_problems", []) if p.severity == "error"]
            else:
                errors = [p for p in ds.check(stages=only) if p.severity == "error"]
        except Exception as exc:
            print(f"error: {ds.name}: could not be checked ({exc.__class__.__name__}: {exc}).", file=sys.stderr)
            return 1
        if errors:
            for p in errors:
                print(f"error: {p.file}: {p.message}" + (f"\n    fix: {p.fix}" if p.fix else ""), file=sys.stderr)
            print("the dataset has errors; fix them (see `python -m npp_core check`) and run again.", file=sys.stderr)
            return 1
        last = {"stage": None}

        def progress(stage: str, frac: float, msg: str) -> None:
            if stage != last["stage"]:
                last["stage"] = stage
                print(f"[{stage}] {msg}", flush=True)

        try:
            result = run(ds, prm, args.out, only=only, cache_dir=args.cache, progress=progress)
        except Exception as exc:  # stage failures are reported per stage; this is for anything else
            print(f"error: {exc.__class__.__name__ + ': ' if not isinstance(exc, ValueError) else ''}{exc}", file=sys.stderr)
            return 1
    for s in result.stages:
        line = f"{s.name:12s} {s.status:11s} {s.seconds:7.1f} s"
        if s.message:
            line += f"  {s.message}"
        print(line)
    print(f"outputs in {result.out_dir}")
    return 0 if result.ok else 1


def cmd_bench_data(args: argparse.Namespace) -> int:
    from .benchdata import bench_data

    t0 = time.perf_counter()
    out = bench_data(Path(args.out), int(args.pixels), seed=args.seed)
    print(f"synthetic area of about {int(args.pixels):,} pixels written to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    from . import params as P

    text = P.dumps(P.defaults())
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"default settings written to {args.out}")
    else:
        print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m npp_core", description="NPP Driver Explorer command line.")
    sub = ap.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sample", help="write the synthetic sample basin dataset")
    s.add_argument("outdir")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_sample)

    c = sub.add_parser("check", help="print what was understood of a dataset and every problem with its fix")
    c.add_argument("dataset", help="dataset folder or .zip")
    c.add_argument("--stages", help="stages to check inputs for (comma-separated); default all")
    c.set_defaults(func=cmd_check)

    r = sub.add_parser("run", help="run the stages and write the outputs")
    r.add_argument("dataset", help="dataset folder or .zip")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--config", help="params.toml")
    r.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a setting (repeatable)")
    r.add_argument("--only", help="target stages (comma-separated); the stages they need run too")
    r.add_argument("--cache", help="stage cache folder shared with the dashboard")
    r.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler for chunked stages, e.g. tcp://10.0.0.5:8786 (overrides run.scheduler; "
                        "default: a local cluster of 2 worker processes; 'threads': no cluster)")
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("bench-data", help="write a synthetic area of about N pixels (tiled sample basin) for benchmarks")
    b.add_argument("out")
    b.add_argument("--pixels", type=float, required=True, help="approximate number of pixels, e.g. 4e6")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=cmd_bench_data)

    p = sub.add_parser("params", help="print or write the default params.toml")
    p.add_argument("--out")
    p.set_defaults(func=cmd_params)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
