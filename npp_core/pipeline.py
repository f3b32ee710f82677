"""The stages of a run, in the order data flows, with a content-hash cache.

``fusion → casa → drivers → sampling → lcc → attribution → ensemble → dominance``

Each stage reads the dataset and the files earlier stages wrote into the
output folder, writes its own files there and returns a fragment of
``summary.json``. A stage's cache key is the content hash of its dataset
inputs, the keys of the stages it reads and its own settings, so changing the
dominance threshold recomputes only ``dominance`` and a rerun with nothing
changed restores every stage from the cache.

Downstream stages always read what upstream stages stored (float32 GeoTIFFs),
so a cached rerun and a fresh run give identical results.

Execution: each stage runs in memory or chunked (``run.mode``: "auto" picks from
the grid size and ``run.memory_gb``; the choice and its reason are in
``summary["run"]["execution"]``). Chunked stages read inputs window by window,
run per-block work on a Dask client (:meth:`Context.client`: a local cluster of
2 worker processes started on first use and closed when the run ends, a running
scheduler given by ``run.scheduler`` / ``--scheduler``, or "threads") and write
their GeoTIFFs block by block; their outputs equal the in-memory ones to
floating-point rounding.
"""
from __future__ import annotations

import importlib
import json
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import __version__
from .cache import StageCache, make_key, restore
from .outputs import to_jsonable, write_json
from .raster import read_raster

__all__ = [
    "STAGES",
    "DEPENDS",
    "run",
    "RunResult",
    "StageStatus",
    "StageError",
    "Cancelled",
    "available_stages",
    "stage_modules",
]

STAGES = ["fusion", "casa", "drivers", "sampling", "lcc", "attribution", "ensemble", "dominance"]

#: Upstream stages each stage reads.
DEPENDS: dict[str, list[str]] = {
    "fusion": [],
    "casa": ["fusion"],
    "drivers": [],
    "sampling": ["casa", "drivers"],
    "lcc": ["casa", "drivers"],
    "attribution": ["sampling", "drivers"],
    "ensemble": ["casa", "drivers"],
    "dominance": ["attribution", "ensemble"],
}

#: Settings sections each stage depends on.
SETTINGS: dict[str, list[str]] = {
    "fusion": ["estarfm"],
    "casa": ["casa"],
    "drivers": ["kriging", "degradation", "categories"],
    "sampling": ["sampling", "categories"],
    "lcc": ["lcc"],
    "attribution": ["rf", "categories"],
    "ensemble": ["ensemble", "rf", "sampling", "categories"],
    "dominance": ["dominance"],
}

#: Dataset roles (manifest sections) each stage reads.
ROLES: dict[str, list[str]] = {
    "fusion": ["grid", "boundary", "landcover", "ndvi", "npp"],
    "casa": ["grid", "boundary", "landcover", "climate", "npp", "validation"],
    "drivers": ["grid", "boundary", "landcover", "climate", "soil", "degradation", "drivers"],
    "sampling": ["landcover"],
    "lcc": [],
    "attribution": [],
    "ensemble": [],
    "dominance": [],
}

#: Module each stage needs (a stage whose module has not landed is "unavailable").
stage_modules: dict[str, list[str]] = {
    "fusion": ["npp_core.estarfm"],
    "casa": ["npp_core.casa"],
    "drivers": ["npp_core.kriging", "npp_core.ahp", "npp_core.casa"],
    "sampling": ["npp_core.attribution"],
    "lcc": ["npp_core.lcc"],
    "attribution": ["npp_core.attribution"],
    "ensemble": ["npp_core.attribution"],
    "dominance": ["npp_core.attribution"],
}

#: Bump a stage's version when its code changes what it writes.
VERSIONS = {s: "1" for s in STAGES}


class StageError(RuntimeError):
    """A stage could not run; the message says what to supply or change."""


class Cancelled(RuntimeError):
    """The user cancelled the run."""


@dataclass
class StageStatus:
    """How a stage ended: done, cached, skipped, failed or unavailable."""

    name: str
    status: str
    seconds: float = 0.0
    message: str = ""


@dataclass
class RunResult:
    """What a run produced."""

    out_dir: Path
    summary: dict[str, Any]
    stages: list[StageStatus] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no stage failed."""
        return all(s.status != "failed" for s in self.stages)


def available_stages() -> dict[str, bool]:
    """Which stages have their science module installed."""
    out = {}
    for s in STAGES:
        ok = True
        for m in stage_modules[s]:
            try:
                importlib.import_module(m)
            except ImportError:
                ok = False
        out[s] = ok
    return out


def _closure(targets: list[str]) -> list[str]:
    need: set[str] = set()

    def add(s: str) -> None:
        if s in need:
            return
        need.add(s)
        for d in DEPENDS[s]:
            add(d)

    for t in targets:
        if t not in STAGES:
            raise StageError(f"unknown stage {t!r}; stages are: {', '.join(STAGES)}.")
        add(t)
    return [s for s in STAGES if s in need]


ProgressFn = Callable[[str, float, str], None]


class Context:
    """What a stage sees: the dataset, the settings, the output folder, progress."""

    def __init__(self, dataset: Any, params: dict[str, Any], out_dir: Path, progress: ProgressFn, cancel: threading.Event | None):
        self.ds = dataset
        self.params = params
        self.out = out_dir
        self._progress = progress
        self._cancel = cancel
        self.stage = ""
        self.fragments: dict[str, dict[str, Any]] = {}
        self.files: dict[str, list[str]] = {}
        self._client: Any = None
        self._cluster: Any = None

    def client(self) -> Any:
        """The ``dask.distributed`` client of chunked stages, started on first use; None = local threads.

        ``run.scheduler``: "" starts a local cluster of 2 worker processes × 1 thread
        for this run (closed when the run ends); "threads" (or "synchronous") uses
        threads of this process and no cluster; anything else is the address of a
        running scheduler (``tcp://host:8786``). While the run lasts the client is
        Dask's default, so reductions (``dask.compute``) run there too. In-memory
        stages never call this, so they pay no cluster start-up.
        """
        sched = str((self.params.get("run") or {}).get("scheduler", "") or "").strip()
        if sched in ("threads", "synchronous"):
            return None
        if self._client is None:
            from distributed import Client, LocalCluster

            if sched:
                try:
                    self._client = Client(sched, set_as_default=True, timeout="20s")
                except Exception as exc:
                    raise StageError(
                        f"run.scheduler = {sched!r}: cannot connect to a Dask scheduler there ({exc}). Start one "
                        "(dask scheduler; dask worker ADDRESS on each machine), check the address, or set "
                        "run.scheduler = \"\" for a local cluster."
                    ) from None
            else:
                self._cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                             dashboard_address=None, silence_logs=40)
                self._client = Client(self._cluster, set_as_default=True)
            from .chunked import set_gdal_cache

            try:  # GDAL's block cache of every worker bounded, as this process's during chunked stages
                self._client.run(set_gdal_cache)
            except Exception:  # pragma: no cover - a worker without rasterio fails on the first block anyway
                pass
        return self._client

    def close(self) -> None:
        """Close the client and the local cluster this run started (an external scheduler stays up)."""
        for obj in (self._client, self._cluster):
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # pragma: no cover - best effort at shutdown
                    pass
        self._client = self._cluster = None

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress of the current stage; raises :class:`Cancelled` when cancelled."""
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled("run cancelled")
        self._progress(self.stage, float(min(max(fraction, 0.0), 1.0)), message)

    def wrote(self, *rel: str) -> None:
        """Record output files (relative to the output folder) of the current stage."""
        self.files.setdefault(self.stage, []).extend(rel)

    def path(self, rel: str) -> Path:
        p = self.out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def read(self, rel: str) -> tuple[np.ndarray, list[str | None]]:
        """Read an output raster written by an earlier stage (float64, NaN nodata)."""
        p = self.out / rel
        if not p.exists():
            raise StageError(f"{rel} is missing from the output folder; run the stage that writes it first.")
        data, _grid, dates = read_raster(p)
        return data, dates


def run(
    dataset: Any,
    params: dict[str, Any],
    out_dir: Path | str,
    *,
    only: list[str] | None = None,
    cache_dir: Path | str | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> RunResult:
    """Run the stages on a dataset and write the outputs.

    Parameters
    ----------
    dataset : npp_core.dataset.Dataset
        An opened dataset.
    params : dict
        Validated settings (:func:`npp_core.params.load`).
    out_dir : path-like
        Output folder (created).
    only : list of str, optional
        Target stages; the stages they read are run (or restored from the
        cache) too, later stages are not. Default: every stage.
    cache_dir : path-like, optional
        Shared stage cache (:class:`npp_core.cache.StageCache`).
    progress : callable, optional
        ``progress(stage, fraction, message)``.
    cancel : threading.Event, optional
        Set it to stop the run at the next progress report.

    Returns
    -------
    RunResult
        Stage statuses with timings, the summary (also written as
        ``summary.json``) and the written files. A failed stage is reported
        in its status; stages after it that need it are skipped, and the
        outputs of earlier stages stay in place.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prog: ProgressFn = progress or (lambda s, f, m: None)
    cache = StageCache(cache_dir) if cache_dir is not None else None
    targets = _closure(list(only) if only else list(STAGES))
    ctx = Context(dataset, params, out, prog, cancel)
    avail = available_stages()
    statuses: list[StageStatus] = []
    keys: dict[str, str] = {}
    failed: set[str] = set()
    timings: dict[str, float] = {}
    prev = _read_previous_summary(out)

    try:
        _run_stages(ctx, dataset, params, targets, cache, avail, statuses, keys, failed, timings, prog, out)
    finally:
        ctx.close()

    summary = _assemble_summary(ctx, params, dataset, statuses, timings, prev)
    write_json(out / "summary.json", summary)
    files = {}
    for s in STAGES:
        for rel in ctx.files.get(s, []):
            files[rel] = out / rel
    files["summary.json"] = out / "summary.json"
    return RunResult(out_dir=out, summary=summary, stages=statuses, files=files)


def _run_stages(ctx: Context, dataset: Any, params: dict[str, Any], targets: list[str], cache: Any,
                avail: dict[str, bool], statuses: list[StageStatus], keys: dict[str, str], failed: set[str],
                timings: dict[str, float], prog: ProgressFn, out: Path) -> None:
    from .stages import STAGE_FUNCS  # late import: science modules load only when needed

    for stage in targets:
        ctx.stage = stage
        blocked = [d for d in DEPENDS[stage] if d in failed]
        if blocked:
            statuses.append(StageStatus(stage, "skipped", 0.0, f"needs {', '.join(blocked)}, which did not complete"))
            failed.add(stage)
            continue
        if not avail[stage]:
            statuses.append(StageStatus(stage, "unavailable", 0.0, "this stage is not available in this version yet"))
            failed.add(stage)
            continue
        t0 = time.perf_counter()
        try:
            key = make_key(
                stage,
                VERSIONS[stage],
                {
                    "data": _dataset_hash(dataset, ROLES[stage]),
                    "upstream": {d: keys[d] for d in DEPENDS[stage]},
                    "settings": {s: params.get(s) for s in SETTINGS[stage]},
                },
            )
            keys[stage] = key
            hit = cache.get(key) if cache is not None else None
            if hit is not None:
                result, files_dir = hit
                rels = result.pop("_files", [])
                restore(files_dir, rels, out)
                ctx.fragments[stage] = result
                ctx.files[stage] = list(rels)
                prog(stage, 1.0, "restored from cache")
                statuses.append(StageStatus(stage, "cached", time.perf_counter() - t0, "restored from cache"))
                continue
            prog(stage, 0.0, "starting")
            fragment = STAGE_FUNCS[stage](ctx) or {}
            msg = str(fragment.pop("_message", ""))
            ctx.fragments[stage] = fragment
            secs = time.perf_counter() - t0
            timings[stage] = secs
            if cache is not None:
                cache.put(key, fragment, [(out / r, r) for r in ctx.files.get(stage, [])])
            prog(stage, 1.0, "done")
            statuses.append(StageStatus(stage, "done", secs, msg))
        except Cancelled:
            statuses.append(StageStatus(stage, "failed", time.perf_counter() - t0, "cancelled by the user"))
            failed.add(stage)
            for s in targets[targets.index(stage) + 1 :]:
                statuses.append(StageStatus(s, "skipped", 0.0, "run cancelled"))
                failed.add(s)
            break
        except Exception as exc:  # a stage failure must not lose earlier results
            statuses.append(StageStatus(stage, "failed", time.perf_counter() - t0, _user_message(exc)))
            failed.add(stage)


def _user_message(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    if isinstance(exc, (ValueError, StageError, OSError)):
        return text
    return f"{exc.__class__.__name__}: {text}"


def _dataset_hash(dataset: Any, roles: list[str]) -> str:
    if not roles:
        return ""
    try:
        return dataset.content_hash(*roles)
    except Exception:
        return dataset.content_hash()


def _read_previous_summary(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def _versions() -> dict[str, str]:
    v = {"npp_core": __version__, "python": platform.python_version()}
    for mod in ("numpy", "scipy", "rasterio", "sklearn", "pykrige", "numba"):
        try:
            v[mod] = importlib.import_module(mod).__version__
        except Exception:  # pragma: no cover
            pass
    return v


def _assemble_summary(
    ctx: Context,
    params: dict[str, Any],
    dataset: Any,
    statuses: list[StageStatus],
    timings: dict[str, float],
    prev: dict[str, Any],
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    # keep what an earlier run in this folder produced for stages not run now
    for k, v in prev.items():
        if k not in ("params", "inputs", "timings_s", "versions", "stages"):
            summary[k] = v
    for stage in STAGES:
        frag = ctx.fragments.get(stage)
        if frag:
            for k, v in frag.items():
                if not k.startswith("_"):
                    summary[k] = v
    if ctx.fragments.get("_run"):
        summary["run"] = {"execution": ctx.fragments["_run"]}
    summary["params"] = params
    try:
        summary["inputs"] = {"dataset": dataset.name, "grid": dataset.grid.to_dict(), "hash": dataset.content_hash()}
    except Exception:
        summary["inputs"] = {}
    summary["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    summary["stages"] = {s.name: {"status": s.status, "seconds": round(s.seconds, 3), "message": s.message} for s in statuses}
    summary["versions"] = _versions()
    return to_jsonable(summary)
