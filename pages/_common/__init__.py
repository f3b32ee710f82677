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
import hmac
import json
import os
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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
#: Parent of every session's private folder (uploads, run outputs, sweeps); swept for abandoned folders.
SESSION_ROOT = Path(os.environ.get("NPP_TMP_ROOT") or Path(tempfile.gettempdir()) / "npp_explorer_sessions")
#: A session folder not touched for this many hours is removed by :func:`sweep_stale_sessions`.
SESSION_MAX_AGE_H = float(os.environ.get("NPP_SESSION_MAX_AGE_H") or 12.0)
#: Environment variable holding the shared password of a hosted instance (unset = no password).
PASSWORD_ENV = "NPP_APP_PASSWORD"
#: Environment variable naming the only server folder whose sub-folders the Data page may open.
DATA_ROOT_ENV = "NPP_DATA_ROOT"
_HEARTBEAT = ".last_seen"


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


# ----------------------------------------------------------------- session folders


class SessionFolder:
    """Owner of one session's private temporary folder.

    Stored in ``st.session_state``; when Streamlit discards the session (the tab
    closed and ``server.disconnectedSessionTTL`` passed) the object is garbage
    collected and its ``weakref.finalize`` removes the folder with every upload
    and result in it. :func:`sweep_stale_sessions` catches what a crash or a
    kill leaves behind.
    """

    def __init__(self, root: Path | None = None) -> None:
        base = Path(root) if root is not None else SESSION_ROOT
        base.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=base))
        self.touch()
        #: Cancel events of this session's background runs: set when the session ends.
        self.cancels: list[threading.Event] = []
        self._finalizer = weakref.finalize(self, _end_session, str(self.path), self.cancels)

    def touch(self) -> None:
        """Record that the session is alive (the stale-folder sweep reads this time)."""
        try:
            (self.path / _HEARTBEAT).touch()
        except OSError:
            pass

    def remove(self) -> None:
        """Delete the folder now (idempotent)."""
        self._finalizer()

    def __repr__(self) -> str:  # never shows in the UI, but keep it short in logs
        return f"SessionFolder({self.path.name})"


def _end_session(path: str, cancels: list[threading.Event]) -> None:
    """Stop the session's background runs and delete its folder (runs when the session object is collected)."""
    for ev in cancels:
        ev.set()
    shutil.rmtree(path, ignore_errors=True)


def _register_cancel(ev: threading.Event) -> None:
    folder = st.session_state.get("session_folder")
    if folder is not None:
        folder.cancels[:] = [e for e in folder.cancels if not e.is_set()] + [ev]


def sweep_stale_sessions(root: Path | None = None, max_age_h: float | None = None, now: float | None = None) -> list[Path]:
    """Remove session folders under ``root`` whose heartbeat is older than ``max_age_h`` hours.

    Parameters
    ----------
    root : Path, optional
        Default :data:`SESSION_ROOT`.
    max_age_h : float, optional
        Default :data:`SESSION_MAX_AGE_H`.
    now : float, optional
        Current time (seconds since the epoch; for tests).

    Returns
    -------
    list of Path
        The folders removed. Only folders named like session folders are touched.
    """
    base = Path(root) if root is not None else SESSION_ROOT
    limit = (SESSION_MAX_AGE_H if max_age_h is None else float(max_age_h)) * 3600.0
    t = time.time() if now is None else float(now)
    removed: list[Path] = []
    if not base.is_dir():
        return removed
    for d in base.iterdir():
        if not (d.is_dir() and d.name.startswith(TMP_PREFIX)) or d.is_symlink():
            continue
        hb = d / _HEARTBEAT
        try:
            seen = hb.stat().st_mtime if hb.exists() else d.stat().st_mtime
        except OSError:
            continue
        if t - seen > limit:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


#: Seconds between the janitor's rounds (collect dropped sessions so their folders go; sweep stale ones).
JANITOR_S = float(os.environ.get("NPP_JANITOR_S") or 120.0)
_janitor: list[threading.Thread] = []
_janitor_lock = threading.Lock()


def _janitor_loop() -> None:
    """Per server process: every JANITOR_S seconds run the garbage collector, so sessions Streamlit has
    dropped (their state objects sit in reference cycles) are freed and their SessionFolder finalizers
    delete the folders; every 10 minutes also sweep folders whose heartbeat is too old."""
    import gc

    last_sweep = 0.0
    while True:
        time.sleep(JANITOR_S)
        try:
            gc.collect()
            if time.time() - last_sweep >= 600:
                last_sweep = time.time()
                sweep_stale_sessions()
        except Exception:  # housekeeping must never stop
            pass


def _maybe_sweep() -> None:
    """Start the janitor thread once per server process (and sweep stale folders right away)."""
    with _janitor_lock:
        if _janitor and _janitor[0].is_alive():
            return
        t = threading.Thread(target=_janitor_loop, name="npp-janitor", daemon=True)
        _janitor[:] = [t]
        t.start()
    try:
        sweep_stale_sessions()
    except Exception:  # housekeeping must never break a page
        pass


# ----------------------------------------------------------------- session


def init_session() -> None:
    """Create the session's defaults once (sample dataset, default settings)."""
    ss = st.session_state
    if "session_folder" not in ss:
        ss.session_folder = SessionFolder()
        ss.session_dir = str(ss.session_folder.path)
    else:
        ss.session_folder.touch()
    ss.setdefault("ds_path", str(SAMPLE_DIR))
    ss.setdefault("ds_origin", "sample")
    ss.setdefault("ds_error", "")
    ss.setdefault("params", P.defaults())
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
    """Settings sent to the pipeline: the session's params (every setting lives in the schema)."""
    return copy.deepcopy(st.session_state.params)


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
    _register_cancel(job.cancel)
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


# ----------------------------------------------------------------- hosting: access and server folders


class FolderAccessError(ValueError):
    """A server-side folder outside the configured data root (or none configured)."""


def data_root() -> Path | None:
    """The configured server data root (``NPP_DATA_ROOT``), resolved; None when reading server folders is off."""
    root = os.environ.get(DATA_ROOT_ENV, "").strip()
    return Path(root).resolve() if root else None


def resolve_data_folder(name: str, root: Path | str | None = None) -> Path:
    """A dataset folder inside the data root, refusing anything that leaves it.

    Parameters
    ----------
    name : str
        Relative path of the folder under the root (as listed on the Data page).
    root : path-like, optional
        Default :func:`data_root`.

    Raises
    ------
    FolderAccessError
        No root configured, an absolute path, ``..`` parts, or a path (after
        resolving symbolic links) outside the root, or no ``dataset.toml`` there.
    """
    base = Path(root).resolve() if root is not None else data_root()
    if base is None:
        raise FolderAccessError(
            f"Reading folders on the server is switched off; an administrator can set {DATA_ROOT_ENV} to allow it."
        )
    raw = str(name or "").strip()
    if not raw or Path(raw).is_absolute() or raw.startswith(("/", "\\", "~")) or ":" in raw[:3]:
        raise FolderAccessError(f"Folder {raw!r}: give a folder inside the data root, not an absolute path.")
    parts = Path(raw.replace("\\", "/")).parts
    if any(p == ".." for p in parts):
        raise FolderAccessError(f"Folder {raw!r}: '..' is not allowed; pick a folder listed under the data root.")
    target = (base / raw).resolve()
    if target != base and base not in target.parents:
        raise FolderAccessError(f"Folder {raw!r} leads outside the data root (a link?); it cannot be opened.")
    if not (target / "dataset.toml").is_file():
        raise FolderAccessError(f"Folder {raw!r} has no dataset.toml; pick a dataset folder under the data root.")
    return target


def _password() -> str:
    return os.environ.get(PASSWORD_ENV, "")


def _oidc_config() -> dict[str, Any] | None:
    """The ``[auth]`` section of .streamlit/secrets.toml, or None (no secrets file / no section)."""
    try:
        if "auth" not in st.secrets:
            return None
        return dict(st.secrets["auth"])
    except Exception:  # no secrets.toml at all
        return None


def access_gate() -> None:
    """Stop the page until the visitor is allowed in (hosted instances only).

    * ``[auth]`` in ``.streamlit/secrets.toml``: Streamlit's OIDC login (``st.login``).
    * ``NPP_APP_PASSWORD`` set: one shared password, compared in constant time.
    * neither (local use): open.
    """
    ss = st.session_state
    auth = _oidc_config()
    if auth is not None:
        try:
            logged_in = bool(st.user.is_logged_in)
        except Exception:
            logged_in = False
        if not logged_in:
            st.title("NPP Driver Explorer")
            import importlib.util

            if importlib.util.find_spec("authlib") is None:
                st.error("Single sign-on is configured ([auth] in .streamlit/secrets.toml) but the Authlib package is "
                         "not installed.  \n**What to do (administrator):** `pip install \"Authlib>=1.3.2\"` and restart.")
                st.stop()
            st.info("This instance is shared by a team: sign in to continue.")
            providers = [k for k, v in auth.items() if hasattr(v, "keys")]
            if "client_id" in auth or not providers:
                st.button("Sign in", on_click=st.login, type="primary", key="auth_login")
            else:
                for prov in providers:
                    st.button(f"Sign in with {prov}", on_click=st.login, args=(prov,), key=f"auth_login_{prov}")
            st.stop()
        with st.sidebar:
            st.button("Sign out", on_click=st.logout, key="auth_logout")
        return
    expected = _password()
    if not expected or ss.get("auth_ok") == _pw_tag(expected):
        return
    st.title("NPP Driver Explorer")
    with st.form("auth_form"):
        pw = st.text_input("Password", type="password", key="auth_password",
                           help="This instance is shared by a team; ask its administrator for the password.")
        ok = st.form_submit_button("Enter", type="primary")
    if ok:
        if hmac.compare_digest(pw.encode("utf-8"), expected.encode("utf-8")):
            ss.auth_ok = _pw_tag(expected)
            ss.pop("auth_password", None)
            st.rerun()
        time.sleep(1.0)  # slow down guessing
        st.error("Wrong password.")
    st.stop()


def _pw_tag(pw: str) -> str:
    """What the session keeps after a correct password (changes when the password changes)."""
    return hashlib.sha256(b"npp-explorer|" + pw.encode("utf-8")).hexdigest()[:16]


# ----------------------------------------------------------------- background jobs (sweeps, ensembles)


@dataclass
class Job:
    """A long computation of this session in a background thread (progress polled by the page)."""

    kind: str
    work_dir: str
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: dict[str, Any] = field(default_factory=lambda: {"fraction": 0.0, "message": "starting"})
    started: float = field(default_factory=time.time)
    finished: float | None = None
    result: Any = None
    error: str = ""
    thread: threading.Thread | None = None

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


def start_job(kind: str, fn: Callable[[Job], Any], state_key: str) -> Job:
    """Run ``fn(job)`` in a thread; ``job.result`` is what it returns, ``job.error`` a message if it raised.

    The job is kept in ``st.session_state[state_key]``; a previous job's folder
    under the same key is removed first.
    """
    old = st.session_state.get(state_key)
    if old is not None:
        old.cancel.set()
        if not old.alive():
            remove_private(old.work_dir)
    job = Job(kind=kind, work_dir=str(new_private_dir(kind)))
    path = Path(st.session_state.ds_path)
    inspection = _inspection(str(path), _signature(path)) if (path / "dataset.toml").exists() else None

    def work() -> None:
        try:
            if inspection is not None:
                inspection.join()  # never read the shared Dataset from two threads at once
            job.result = fn(job)
        except Exception as exc:
            job.error = str(exc) if isinstance(exc, ValueError) else f"{exc.__class__.__name__}: {exc}"
        finally:
            job.finished = time.time()

    job.thread = threading.Thread(target=work, name=f"npp-{kind}", daemon=True)
    st.session_state[state_key] = job
    _register_cancel(job.cancel)
    job.thread.start()
    return job


# ----------------------------------------------------------------- page frame


def setup(title: str) -> None:
    """Page config, access gate, session defaults, finished-run bookkeeping and the sidebar status."""
    st.set_page_config(page_title=f"{title} · NPP Driver Explorer", page_icon="🌿", layout="wide")
    access_gate()
    _maybe_sweep()
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


# ----------------------------------------------------------------- settings editors (pure helpers, tested directly)

#: CASA table columns and the ``casa.overrides`` key each one writes.
CASA_COLUMNS = (("εmax", "eps_max"), ("NDVImin", "ndvi_min"), ("NDVImax", "ndvi_max"))


def casa_overrides_from_table(
    base: list[dict[str, Any]], edited: list[dict[str, Any]], previous: dict[str, dict[str, float]]
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """New ``casa.overrides`` from the per-class table as shown (``base``) and as edited.

    Parameters
    ----------
    base, edited : list of dict
        Rows with ``class``, ``CASA type`` and the :data:`CASA_COLUMNS` values;
        ``base`` already shows the previous overrides.
    previous : dict
        The current ``casa.overrides`` {class: {eps_max|ndvi_min|ndvi_max: value}}.

    Returns
    -------
    overrides : dict
        Previous overrides updated with every cell that differs from ``base``.
    ignored : list of str
        Messages for edits that cannot be used (non-vegetated classes, NDVImin ≥ NDVImax);
        those classes keep their previous overrides.
    """
    out = {c: dict(v) for c, v in previous.items()}
    ignored: list[str] = []
    for b, e in zip(base, edited):
        cls = str(b["class"])
        changed: dict[str, float] = {}
        for col, key in CASA_COLUMNS:
            ev, bv = e.get(col), b.get(col)
            if ev is None or not np.isfinite(float(ev)):
                continue
            if bv is not None and np.isfinite(float(bv)) and abs(float(ev) - float(bv)) < 1e-9:
                continue
            changed[key] = float(ev)
        if not changed:
            continue
        if str(b.get("CASA type")) == "none":
            ignored.append(f"{cls}: not vegetated (CASA type 'none'), so it has no CASA parameters to override")
            continue
        new = {**out.get(cls, {}), **changed}
        if "ndvi_min" in new or "ndvi_max" in new:
            lo = new.get("ndvi_min", e.get("NDVImin"))
            hi = new.get("ndvi_max", e.get("NDVImax"))
            if lo is not None and hi is not None and not float(lo) < float(hi):
                ignored.append(f"{cls}: NDVImin ({float(lo):g}) must be below NDVImax ({float(hi):g})")
                continue
        out[cls] = new
    return out, ignored


def ahp_from_judgements(names: list[str], upper: dict[tuple[int, int], float], fallback: np.ndarray) -> np.ndarray:
    """Reciprocal AHP matrix from upper-triangle judgements.

    Parameters
    ----------
    names : list of str
        Indicator names (matrix order), length n.
    upper : dict {(i, j): value}
        Judgements a[i, j] for i < j (how much more row i matters than column j);
        a missing, non-finite or non-positive value falls back to ``fallback[i, j]``.
    fallback : ndarray, shape (n, n)

    Returns
    -------
    ndarray of float64, shape (n, n)
        Ones on the diagonal, a[j, i] = 1 / a[i, j].
    """
    n = len(names)
    fb = np.asarray(fallback, dtype=np.float64)
    m = np.ones((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            v = upper.get((i, j))
            v = float(v) if v is not None and np.isfinite(float(v)) and float(v) > 0 else float(fb[i, j])
            m[i, j], m[j, i] = v, 1.0 / v
    return m
