"""Session state and small UI helpers shared by the pages (a package, so not a page itself).

Streamlit 1.67 turns every ``pages/*.py`` into a page (a leading underscore does
not hide it), so these helpers live in the ``pages/_common/`` package. Every page
starts with :func:`setup`, which initialises the session and draws the sidebar
status (dataset, results up to date or stale).

Everything a session owns lives in ``st.session_state`` as small values (paths,
keys, dicts of settings); arrays are read from per-session files and cached on
full content hashes. Each browser session gets its own temporary folders for
uploads and run outputs; nothing a user brings is written under a name they
chose.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from npp_core import params as P

ROOT = Path(__file__).resolve().parents[2]
#: The dataset a new session opens on (an administrator may point it elsewhere with NPP_SAMPLE_DIR).
SAMPLE_DIR = Path(os.environ.get("NPP_SAMPLE_DIR") or ROOT / "sample_data")
#: Largest upload we accept (MB); keep ``server.maxUploadSize`` in .streamlit/config.toml at or above it.
MAX_UPLOAD_MB = 200
#: Shared stage cache (content-hash keyed, so identical inputs + settings only).
CACHE_DIR = Path(tempfile.gettempdir()) / "npp_explorer_stage_cache"
TMP_PREFIX = "npp_session_"


# ----------------------------------------------------------------- optional modules


def dataset_module() -> Any | None:
    """``npp_core.dataset`` or None while it is not available."""
    try:
        from npp_core import dataset
    except ImportError:
        return None
    return dataset


def pipeline_module() -> Any | None:
    """``npp_core.pipeline`` or None while it is not available."""
    try:
        from npp_core import pipeline
    except ImportError:
        return None
    return pipeline


# ----------------------------------------------------------------- session


def init_session() -> None:
    """Create the session's defaults once (sample dataset, default settings)."""
    ss = st.session_state
    if "session_dir" not in ss:
        ss.session_dir = tempfile.mkdtemp(prefix=TMP_PREFIX)
    ss.setdefault("ds_path", str(SAMPLE_DIR))
    ss.setdefault("ds_origin", "sample")
    ss.setdefault("ds_error", "")
    ss.setdefault("params", P.defaults())
    ss.setdefault("extra", {})  # UI-side settings not (yet) in the params schema
    ss.setdefault("run", None)  # dict describing the last finished run
    ss.setdefault("job", None)  # RunJob while a run is going


def session_dir() -> Path:
    """This session's private temporary folder."""
    p = Path(st.session_state.session_dir)
    p.mkdir(parents=True, exist_ok=True)
    return p


def new_private_dir(kind: str) -> Path:
    """A fresh folder with a generated name inside the session folder."""
    return Path(tempfile.mkdtemp(prefix=f"{kind}_", dir=session_dir()))


def remove_private(path: str | Path | None) -> None:
    """Delete a folder, but only if it lives in this session's folder."""
    if not path:
        return
    p = Path(path).resolve()
    base = session_dir().resolve()
    if base in p.parents:
        shutil.rmtree(p, ignore_errors=True)


def params_hash(params: dict[str, Any]) -> str:
    """Stable hash of the settings."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------- dataset


@st.cache_resource(max_entries=8, show_spinner=False)
def _open_cached(path: str, signature: str) -> Any:
    mod = dataset_module()
    return mod.open_dataset(path)


def _signature(path: Path) -> str:
    """Cheap change signature of a dataset folder (names, sizes, mtimes)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            s = p.stat()
            h.update(f"{p.relative_to(path)}|{s.st_size}|{s.st_mtime_ns}".encode())
    return h.hexdigest()


def current_dataset() -> tuple[Any | None, str]:
    """The session's dataset (shared read-only object) or None with a message."""
    mod = dataset_module()
    if mod is None:
        return None, "The dataset reader is not available in this version yet."
    path = Path(st.session_state.ds_path)
    if not (path / "dataset.toml").exists() and not path.suffix == ".zip":
        if st.session_state.ds_origin == "sample":
            return None, (
                "The bundled sample basin is not in this installation (sample_data/dataset.toml missing). "
                "Upload a dataset on the Data page."
            )
        return None, f"The dataset folder has no dataset.toml. Upload it again on the Data page."
    try:
        return _open_cached(str(path), _signature(path)), ""
    except ValueError as exc:  # DatasetError and friends are ValueErrors with a user-facing message
        return None, str(exc)
    except Exception as exc:  # pragma: no cover - unexpected reader failure
        return None, f"The dataset could not be opened ({exc.__class__.__name__}: {exc})."


@st.cache_resource(max_entries=8, show_spinner=False)
def _inspection(path: str, signature: str) -> threading.Thread:
    """Start reading and checking every layer of a dataset once per process (shared, read-only)."""
    ds = _open_cached(path, signature)

    def work() -> None:
        try:
            ds.check()
            ds.summary()
        except Exception:  # the page reports problems when it asks again
            pass

    t = threading.Thread(target=work, name="npp-inspect", daemon=True)
    t.start()
    return t


def warm_dataset() -> None:
    """Begin inspecting the session's dataset in the background (the first check of a large
    dataset reads and aligns every layer; later calls are memoised by the Dataset object)."""
    path = Path(st.session_state.ds_path)
    if dataset_module() is None or not (path / "dataset.toml").exists():
        return
    try:
        _inspection(str(path), _signature(path))
    except Exception:
        pass


def wait_for_inspection() -> None:
    """Block (with a spinner) until the background inspection of the dataset has finished."""
    path = Path(st.session_state.ds_path)
    if dataset_module() is None or not (path / "dataset.toml").exists():
        return
    t = _inspection(str(path), _signature(path))
    if t.is_alive():
        with st.spinner("Reading and checking every layer of the dataset (first time only)…"):
            t.join()


def dataset_hash(ds: Any) -> str:
    """Content hash of the whole dataset (cached per object)."""
    try:
        return str(ds.content_hash())
    except Exception:
        return "?"


# ----------------------------------------------------------------- results state


def effective_params() -> dict[str, Any]:
    """Settings sent to the pipeline (session params + UI extras the schema knows)."""
    p = copy.deepcopy(st.session_state.params)
    extra = st.session_state.get("extra", {})
    if extra.get("casa_overrides"):
        p["casa"]["overrides"] = copy.deepcopy(extra["casa_overrides"])
    return p


def results_state(ds: Any | None) -> tuple[str, list[str]]:
    """("none" | "running" | "fresh" | "stale", reasons)."""
    job = st.session_state.get("job")
    if job is not None and job.alive():
        return "running", []
    run = st.session_state.get("run")
    if not run:
        return "none", []
    reasons = []
    if ds is None or run.get("ds_path") != st.session_state.ds_path or run.get("ds_hash") != dataset_hash(ds):
        reasons.append("the dataset changed")
    now = effective_params()
    if run.get("params_hash") != params_hash(now):
        changed = [
            sec
            for sec in now
            if json.dumps(now.get(sec), sort_keys=True, default=str)
            != json.dumps(run.get("params", {}).get(sec), sort_keys=True, default=str)
        ]
        reasons.append("settings changed" + (f" ({', '.join(changed)})" if changed else ""))
    return ("stale" if reasons else "fresh"), reasons


def out_dir() -> Path | None:
    """Output folder of the last run of this session."""
    run = st.session_state.get("run")
    if run and Path(run["out_dir"]).exists():
        return Path(run["out_dir"])
    return None


def summary() -> dict[str, Any]:
    """summary.json of the last run ({} when none)."""
    d = out_dir()
    if d is None:
        return {}
    try:
        return json.loads((d / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------- runs


@dataclass
class RunJob:
    """A pipeline run in a background thread of this session."""

    out_dir: str
    ds_path: str
    ds_hash: str
    params: dict[str, Any]
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: dict[str, tuple[float, str]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    thread: threading.Thread | None = None

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


def start_run(ds: Any, only: list[str] | None = None) -> RunJob | None:
    """Start the pipeline on the session's dataset and settings in a thread."""
    pipe = pipeline_module()
    if pipe is None:
        st.error("The analysis pipeline is not available in this version yet.")
        return None
    try:
        P.validate(st.session_state.params)
    except P.ParamsError as exc:
        st.error(f"The settings cannot be used: {exc} Fix it on the Parameters page.")
        return None
    prm = effective_params()
    out = new_private_dir("run")
    job = RunJob(out_dir=str(out), ds_path=st.session_state.ds_path, ds_hash=dataset_hash(ds), params=prm)

    def progress(stage: str, fraction: float, message: str) -> None:
        job.progress[stage] = (float(fraction), str(message))

    path = Path(st.session_state.ds_path)
    inspection = _inspection(str(path), _signature(path)) if (path / "dataset.toml").exists() else None

    def work() -> None:
        try:
            if inspection is not None:
                inspection.join()  # never read the shared Dataset from two threads at once
            res = pipe.run(ds, prm, out, only=only, cache_dir=CACHE_DIR, progress=progress, cancel=job.cancel)
            job.stages = [
                {"name": s.name, "status": s.status, "seconds": float(s.seconds), "message": s.message}
                for s in res.stages
            ]
        except Exception as exc:  # never let a traceback reach the page
            job.error = f"{exc.__class__.__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
        finally:
            job.finished = time.time()

    job.thread = threading.Thread(target=work, name="npp-run", daemon=True)
    st.session_state.job = job
    job.thread.start()
    return job


def finish_run_if_done() -> None:
    """Move a finished job into ``run`` (keeping the previous results if it produced nothing)."""
    job: RunJob | None = st.session_state.get("job")
    if job is None or job.alive():
        return
    st.session_state.job = None
    produced = any(s["status"] in ("done", "cached") for s in job.stages)
    st.session_state.last_job = {
        "stages": job.stages,
        "error": job.error,
        "seconds": (job.finished or time.time()) - job.started,
        "cancelled": job.cancel.is_set(),
    }
    if produced and not job.error:
        old = st.session_state.get("run")
        st.session_state.run = {
            "out_dir": job.out_dir,
            "ds_path": job.ds_path,
            "ds_hash": job.ds_hash,
            "params": job.params,
            "params_hash": params_hash(job.params),
            "stages": job.stages,
            "finished": job.finished,
        }
        if old and old.get("out_dir") != job.out_dir:
            remove_private(old["out_dir"])
    else:
        remove_private(job.out_dir)


# ----------------------------------------------------------------- cached raster rendering


def file_sha(path: Path) -> str:
    """sha256 of a file's bytes (the cache key of anything derived from it)."""
    return _file_sha(str(path), path.stat().st_mtime_ns, path.stat().st_size)


@st.cache_data(max_entries=512, show_spinner=False)
def _file_sha(path: str, mtime: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@st.cache_data(max_entries=48, show_spinner=False)
def _read_cached(path: str, sha: str, bands: tuple[int, ...] | None) -> tuple[np.ndarray, Any, list[Any]]:
    from npp_core.raster import read_raster

    return read_raster(path, bands=list(bands) if bands else None)


def read_output(rel: str, bands: tuple[int, ...] | None = None) -> tuple[np.ndarray, Any, list[Any]] | None:
    """(data (bands, rows, cols), grid, dates) of an output raster of the last run, or None.

    Parameters
    ----------
    rel : str
        Path relative to the run folder.
    bands : tuple of int, optional
        1-based bands to read (default all; pass them for long series).
    """
    d = out_dir()
    if d is None or not (d / rel).exists():
        return None
    p = d / rel
    return _read_cached(str(p), file_sha(p), tuple(bands) if bands else None)


@st.cache_data(max_entries=128, show_spinner=False)
def _labels(path: str, sha: str) -> list[str]:
    import rasterio

    with rasterio.open(path) as src:
        return [str(src.tags(b).get("DATE") or src.descriptions[b - 1] or b) for b in range(1, src.count + 1)]


def band_labels(rel: str) -> list[str]:
    """Band dates/names of an output raster (metadata only), [] when absent."""
    d = out_dir()
    if d is None or not (d / rel).exists():
        return []
    return _labels(str(d / rel), file_sha(d / rel))


def pixel_values(rel: str, row: int, col: int) -> np.ndarray | None:
    """Every band's value at one pixel (a 1×1 window read; NaN for nodata)."""
    import rasterio
    from rasterio.windows import Window

    d = out_dir()
    if d is None or not (d / rel).exists():
        return None
    with rasterio.open(d / rel) as src:
        v = src.read(window=Window(col, row, 1, 1)).astype(np.float64)[:, 0, 0]
        if src.nodata is not None and not np.isnan(src.nodata):
            v[v == src.nodata] = np.nan
    return v


# ----------------------------------------------------------------- small widgets


def stage_unavailable(what: str, detail: str = "") -> None:
    """An info box for a feature whose science module has not landed."""
    st.info(f"**{what}: not available yet.** {detail}".strip())


def show_error(exc: BaseException | str, todo: str = "") -> None:
    """A user-facing error box (never a traceback)."""
    msg = str(exc)
    st.error(msg + (f"  \n**What to do:** {todo}" if todo else ""))


def legend(html_text: str) -> None:
    """Render a plain-HTML legend."""
    st.html(html_text)


# ----------------------------------------------------------------- page frame


def setup(title: str) -> None:
    """Page config, session defaults, finished-run bookkeeping and the sidebar status."""
    st.set_page_config(page_title=f"{title} · NPP Driver Explorer", page_icon="🌿", layout="wide")
    init_session()
    finish_run_if_done()
    warm_dataset()
    ds, _msg = current_dataset()
    state, reasons = results_state(ds)
    with st.sidebar:
        st.markdown(f"**You are on:** {title}")
        st.markdown(f"**Dataset:** {ds.name if ds is not None else '— none loaded —'}")
        if state == "none":
            st.markdown("**Results:** not computed yet — open *Run*.")
        elif state == "running":
            st.markdown("**Results:** ⏳ a run is in progress.")
        elif state == "fresh":
            st.markdown("**Results:** ✅ up to date.")
        else:
            st.markdown("**Results:** ⚠️ stale — " + "; ".join(reasons) + ". Run again to update.")


def run_page(body: Any) -> None:
    """Run a page's body; an unexpected failure becomes a message with what to do, never a traceback.

    Streamlit's own control flow (``st.stop``, ``st.rerun``) passes through: it
    does not derive from :class:`Exception`.
    """
    try:
        body()
    except Exception as exc:  # noqa: BLE001 - the last line of defence of a page
        st.error(
            f"This page hit an unexpected problem: {exc.__class__.__name__}: {str(exc)[:300]}  \n"
            "**What to do:** reload the page; if it persists, check the dataset on the Data page or reset the "
            "settings on the Parameters page. Your dataset and results are kept."
        )
