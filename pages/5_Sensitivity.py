"""Sensitivity page: how the results move when a setting changes.

* one setting at a time, or a small grid over two settings (each point a
  pipeline run sharing the stage cache, so only the stages the setting
  affects recompute), with response curves and maps of where the class changes;
* the dominance threshold, instantly, from the stored RelCon of the last run;
* seed / sample-draw ensembles: modal class, agreement map and 5–95 % intervals.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from npp_core import params as P
from npp_core import render, report
from pages import _common as C

C.setup("Sensitivity")

MODES = ["One setting", "Two settings (grid)", "Dominance threshold (instant)", "Ensemble (seeds / sample draws)"]


def _parse_values(text: str, info: dict[str, Any]) -> list[Any]:
    """Comma-separated values of a sweepable setting, typed by its kind (ValueError names the bad one)."""
    out: list[Any] = []
    for raw in [t.strip() for t in text.split(",") if t.strip()]:
        kind = info["kind"]
        try:
            if kind == "bool":
                low = raw.lower()
                if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError
                out.append(low in ("true", "1", "yes", "on"))
            elif kind == "integer":
                f = float(raw)
                if f != int(f):
                    raise ValueError
                out.append(int(f))
            elif kind == "number":
                out.append(float(raw))
            else:
                if info.get("choices") and raw not in info["choices"]:
                    raise ValueError
                out.append(raw)
        except ValueError:
            allowed = f" (one of {', '.join(map(str, info['choices']))})" if info.get("choices") else ""
            raise ValueError(f"{info['label']}: {raw!r} is not a valid {kind}{allowed}.") from None
    if not out:
        raise ValueError(f"{info['label']}: give at least one value, separated by commas.")
    if len(set(map(str, out))) != len(out):
        raise ValueError(f"{info['label']}: a value is listed twice.")
    return out


def _fmt_values(vals: list[Any]) -> str:
    return ", ".join(str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v) for v in vals)


def _progress_panel(job: C.Job, label: str) -> None:
    """Poll a background job until it ends, then rerun the page to show its result."""
    status = st.status(f"{label}…", expanded=True)
    with status:
        bar = st.progress(0.0, text="starting")

    def _cancel() -> None:
        job.cancel.set()

    st.button("Cancel", on_click=_cancel, key=f"cancel_{job.kind}", disabled=job.cancel.is_set())
    while job.alive():
        frac = float(job.progress.get("fraction", 0.0))
        bar.progress(min(max(frac, 0.0), 1.0), text=str(job.progress.get("message", ""))[:160])
        status.update(label=f"{label}… {time.time() - job.started:.0f} s")
        time.sleep(0.3)
    status.update(label="Finished", state="complete")
    st.rerun()


def _progress_fn(job: C.Job):
    def progress(point: str, fraction: float, message: str) -> None:
        job.progress["fraction"] = float(fraction)
        job.progress["message"] = f"{point} · {message}"

    return progress


@st.cache_data(max_entries=16, show_spinner=False)
def _class_maps(paths: tuple[str, ...], shas: tuple[str, ...], baseline: str | None) -> dict[str, Any]:
    """Per-pixel agreement of the points' dominant classes and how many points differ from the baseline."""
    from npp_core.ensemble import EnsembleReducer
    from npp_core.raster import read_raster

    stack = []
    grid = None
    for p in paths:
        data, grid, _ = read_raster(p)
        stack.append(np.nan_to_num(data[0], nan=0.0).astype(np.uint8))
    codes = np.stack(stack)
    red = EnsembleReducer(int(codes.max()) + 1 if codes.size else 1, codes.shape[1:], [])
    for c in codes:
        red.add(c)
    _mode, agreement = red.modal()
    if baseline is not None:
        base = np.nan_to_num(read_raster(baseline)[0][0], nan=0.0).astype(np.uint8)
    else:
        base = codes[0]
    analysed = np.any(codes > 0, axis=0) | (base > 0)
    changed = np.where(analysed, (codes != base[None]).sum(axis=0).astype(float), np.nan)
    return {"agreement": agreement, "changed": changed, "grid": grid, "n": len(paths)}


def _maps_of_points(rows: list[dict[str, Any]], baseline: dict[str, Any] | None, key: str) -> None:
    """Agreement across the sweep points and where the class differs from the baseline point."""
    paths = [r["dominant"] for r in rows if isinstance(r.get("dominant"), str) and Path(r["dominant"]).exists()]
    if len(paths) < 2:
        st.caption("Class maps need at least two finished points with the dominance stage.")
        return
    base = baseline.get("dominant") if baseline and isinstance(baseline.get("dominant"), str) else None
    base = base if base and Path(base).exists() else None
    m = _class_maps(tuple(paths), tuple(C.file_sha(Path(p)) for p in paths), base)
    n = m["n"]
    which = st.radio("Map", ["Where the class changes", "Agreement between the points"], horizontal=True,
                     key=f"{key}_map_pick")
    if which.startswith("Where"):
        o = render.web_overlay(m["changed"], m["grid"], "points differing from the baseline", cmap="magma_r",
                               vmin=0.0, vmax=float(n))
        leg = render.legend_continuous("Points whose dominant class differs from the baseline", "magma_r", 0.0,
                                       float(n), "points")
        share = float(np.nanmean(m["changed"] > 0)) * 100.0 if np.isfinite(m["changed"]).any() else float("nan")
        st.caption(f"{share:.1f} % of the analysed pixels change class at least once across the {n} points.")
    else:
        o = render.web_overlay(m["agreement"], m["grid"], "agreement", cmap="viridis", vmin=0.0, vmax=1.0)
        leg = render.legend_continuous("Share of points agreeing with the most frequent class", "viridis", 0.0, 1.0)
        st.caption(f"Mean agreement {float(np.nanmean(m['agreement'])):.3f} over {n} points.")
    from streamlit_folium import st_folium

    st_folium(render.make_map([o]), height=420, use_container_width=True, returned_objects=[], key=f"{key}_map")
    C.legend(leg)


def _curves(rows: list[dict[str, Any]], x: str, x_title: str, key: str) -> None:
    """Response curves: mean NPP, category contributions, class areas and class change vs the setting."""
    cols = list(rows[0]) if rows else []
    a, b = st.columns(2)
    if "npp_mean" in cols:
        a.plotly_chart(report.fig_response(rows, x, ["npp_mean"], title="Mean NPP", x_title=x_title,
                                           y_title="gC m⁻² yr⁻¹"), width="stretch", key=f"{key}_npp")
    rel = [c for c in cols if c.startswith("relcon_mean.")]
    if rel:
        b.plotly_chart(report.fig_response(rows, x, rel, title="Mean relative contribution per category",
                                           x_title=x_title, y_title="RelCon (%)"), width="stretch", key=f"{key}_rel")
    a, b = st.columns(2)
    share = [c for c in cols if c.startswith("share.")]
    if share:
        a.plotly_chart(report.fig_response(rows, x, share, title="Dominant-class areas", x_title=x_title,
                                           y_title="area share (%)"), width="stretch", key=f"{key}_share")
    if "class_change" in cols:
        b.plotly_chart(report.fig_response(rows, x, ["class_change"], title="Pixels whose class differs from the baseline",
                                           x_title=x_title, y_title="% of analysed pixels"), width="stretch",
                       key=f"{key}_change")
    lcc = [c for c in cols if c.startswith("lcc_significant.")]
    if lcc:
        st.plotly_chart(report.fig_response(rows, x, lcc, title="Pixels with significant local correlation",
                                            x_title=x_title, y_title="% of pixels"), width="stretch", key=f"{key}_lcc")


def _table(rows: list[dict[str, Any]]) -> None:
    hide = {"out_dir", "dominant", "stages", "error", "ok"}
    df = pd.DataFrame([{k: (", ".join(v) if isinstance(v, list) else v) for k, v in r.items() if k not in hide} for r in rows])
    st.dataframe(df, hide_index=True, width="stretch")
    failed = [r for r in rows if not r.get("ok", True)]
    for r in failed:
        st.error(f"Point failed: {r.get('error')}")


def _page() -> None:
    st.title("5 · Sensitivity")
    ss = st.session_state
    ds, msg = C.current_dataset()
    if ds is None:
        st.warning(msg)
        st.stop()
    try:
        from npp_core import sensitivity as S
    except ImportError:
        S = None
    pipe = C.pipeline_module()
    st.caption(
        "How much do the results depend on a setting? Every point is a full run with one setting changed; "
        "stages the setting does not affect come from the cache. The base is your current settings "
        "(Parameters page)."
    )
    mode = st.radio("What to explore", MODES, horizontal=True, key="sens_mode")

    # ------------------------------------------------------------------ one setting / grid
    if mode in MODES[:2]:
        if S is None or pipe is None:
            C.stage_unavailable("Sweeps", "Sweeps are coming: they need npp_core.sensitivity. The threshold sweep "
                                          "and ensembles below already work.")
            st.stop()
        keys = [k for k in S.SWEEPABLE if k != "dominance.threshold"]

        def label(k: str) -> str:
            i = S.SWEEPABLE[k]
            return f"{i['label']} ({k})"

        job = ss.get("sens_job")
        if job is not None and job.alive():
            _progress_panel(job, "Sweeping")
        picks: list[tuple[str, list[Any]]] = []
        ncol = 1 if mode == MODES[0] else 2
        cols = st.columns(ncol)
        bad = False
        for n in range(ncol):
            with cols[n]:
                default = keys.index("casa.eps_scale") if n == 0 else keys.index("lcc.window")
                k = st.selectbox("Setting" if ncol == 1 else f"Setting {n + 1}", keys, index=default,
                                 format_func=label, key=f"sens_key{n}")
                info = S.SWEEPABLE[k]
                st.caption(f"{info['help']} Recomputes: {', '.join(info['recomputes'])} (only those that read it).")
                txt = st.text_input("Values (comma-separated)", _fmt_values(info["values"]), key=f"sens_vals{n}_{k}")
                try:
                    picks.append((k, _parse_values(txt, info)))
                except ValueError as exc:
                    C.show_error(exc, "Correct the list of values.")
                    bad = True
        if ncol == 2 and len(picks) == 2 and picks[0][0] == picks[1][0]:
            C.show_error("Both settings are the same.", "Pick two different settings, or use 'One setting'.")
            bad = True
        if ncol == 2 and not bad and len(picks[0][1]) * len(picks[1][1]) > 36:
            C.show_error(f"{len(picks[0][1])} × {len(picks[1][1])} points is too many (at most 36).",
                         "Use fewer values.")
            bad = True
        n_points = int(np.prod([len(v) for _k, v in picks])) if picks else 0
        st.caption(f"{n_points} points" + (" (+1 baseline run if the current value is not among them)" if ncol == 1 else "")
                   + ". Each point writes its outputs to this session's private folder.")
        try:
            P.validate(ss.params)
        except P.ParamsError as exc:
            C.show_error(f"The current settings cannot be used: {exc}", "Fix them on the Parameters page.")
            bad = True

        def _start() -> None:
            prm = C.effective_params()
            if ncol == 1:
                (k1, v1), = picks
                fn = lambda job: S.sweep(ds, prm, k1, v1, cache_dir=C.CACHE_DIR, work_dir=job.work_dir,  # noqa: E731
                                         progress=_progress_fn(job), cancel=job.cancel)
            else:
                (k1, v1), (k2, v2) = picks
                fn = lambda job: S.sweep_grid(ds, prm, k1, v1, k2, v2, cache_dir=C.CACHE_DIR,  # noqa: E731
                                              work_dir=job.work_dir, progress=_progress_fn(job), cancel=job.cancel)
            C.start_job("sweep", fn, "sens_job")

        st.button("Run the sweep", type="primary", on_click=_start, disabled=bad, key="sens_start")

        job = ss.get("sens_job")
        if job is None or job.alive():
            return
        if job.error:
            C.show_error(f"The sweep stopped: {job.error}", "Check the values and the Data page, then run again.")
            return
        res = job.result or {}
        rows = res.get("rows") or []
        if not rows:
            st.info("The sweep produced no points" + (" (cancelled)." if res.get("cancelled") else "."))
            return
        st.divider()
        if res.get("cancelled"):
            st.warning(f"Cancelled: {len(rows)} point(s) finished; showing those.")
        if "keys" not in res:  # one setting
            info = S.SWEEPABLE.get(res["key"], {"label": res["key"], "unit": ""})
            st.subheader(f"Response to {info['label']}")
            x_title = info["label"] + (f" [{info['unit']}]" if info.get("unit") else "")
            _curves(rows, "value", x_title, "sw")
            _table(rows)
            _maps_of_points(rows, res.get("baseline"), "sw")
        else:
            k1, k2 = res["keys"]
            st.subheader(f"Grid: {k1} × {k2}")
            metric_cols = [c for c in rows[0] if c == "npp_mean" or c.startswith(("share.", "relcon_mean.", "importance."))
                           or c in ("class_change", "oob_r2")]
            if metric_cols:
                mcol = st.selectbox("Metric", metric_cols, key="sens_grid_metric")
                t = S.grid_table(res, mcol)
                st.plotly_chart(report.fig_grid(t, res["values"][0], res["values"][1], title=mcol, x_title=k2,
                                                y_title=k1, z_title=mcol), width="stretch", key="grid_heat")
            _table(rows)
            _maps_of_points(rows, rows[0], "grid")
        return

    # ------------------------------------------------------------------ threshold
    if mode == MODES[2]:
        out = C.out_dir()
        if out is None or not (out / "relcon.tif").exists():
            st.info("The threshold sweep reads the relative contributions of the last run: open **Run** first.")
            st.stop()
        if S is None:
            C.stage_unavailable("The threshold sweep", "It needs npp_core.sensitivity.")
            st.stop()
        cur = float(ss.params["dominance"]["threshold"])
        c1, c2 = st.columns([3, 1])
        lo, hi = c1.slider("Threshold range (%)", 0.0, 100.0, (40.0, 90.0), 1.0, key="sens_thr_range")
        step = c2.number_input("Step (%)", 0.5, 25.0, 5.0, 0.5, key="sens_thr_step")
        ths = [float(x) for x in np.round(np.arange(lo, hi + step / 2, step), 6)]
        if cur not in ths:
            ths = sorted(ths + [cur])

        @st.cache_data(max_entries=16, show_spinner=False)
        def _thr(folder: str, sha: str, ths: tuple[float, ...], ref: float) -> dict[str, Any]:
            return S.threshold_sweep(folder, list(ths), reference=ref)

        try:
            res = _thr(str(out), C.file_sha(out / "relcon.tif") + C.file_sha(out / "summary.json"), tuple(ths), cur)
        except ValueError as exc:
            C.show_error(exc, "Run again so the attribution outputs are complete.")
            st.stop()
        rows = res["rows"]
        st.caption(f"Reference: the current threshold {cur:g} %. Computed from the stored RelCon, no model refit.")
        a, b = st.columns(2)
        share = [c for c in rows[0] if c.startswith("share.")]
        a.plotly_chart(report.fig_response(rows, "threshold", share, title="Dominant-class areas",
                                           x_title="threshold (%)", y_title="area share (%)"), width="stretch",
                       key="thr_share")
        b.plotly_chart(report.fig_response(rows, "threshold", ["changed"], title=f"Pixels changing class vs {cur:g} %",
                                           x_title="threshold (%)", y_title="% of analysed pixels"), width="stretch",
                       key="thr_changed")
        if "agreement_mean" in rows[0]:
            st.plotly_chart(report.fig_response(rows, "threshold", ["agreement_mean"], title="Ensemble agreement",
                                                x_title="threshold (%)", y_title="mean agreement"), width="stretch",
                            key="thr_agree")
        st.dataframe(pd.DataFrame(rows).round(3), hide_index=True, width="stretch")
        st.caption("To use another threshold for the maps and the report, set it on **Parameters** (dominance) or move "
                   "it live on **Explore → Dominant driver**.")
        return

    # ------------------------------------------------------------------ ensemble
    if pipe is None:
        C.stage_unavailable("Ensembles", "They need the analysis pipeline.")
        st.stop()
    st.markdown(
        "Repeat the random-forest attribution with different seeds and/or sample draws and see where the dominant "
        "class is stable. About 20 members give usable 5–95 % intervals."
    )
    c1, c2, c3 = st.columns([1, 1, 2])
    members = c1.number_input("Members", 2, 200, 20, 1, key="ens_members")
    vary = c2.selectbox("Vary", list(P.SCHEMA["ensemble"]["vary"].choices), key="ens_vary",
                        format_func={"seed": "forest seed", "sample": "sample draw", "both": "both"}.get)
    c3.caption(f"Each member refits the forests: about {int(members)} × the attribution time of a normal run. "
               f"Trees per forest: {ss.params['rf']['n_trees']}, sample points: {ss.params['sampling']['n_points']} "
               "(change them on Parameters).")
    job = ss.get("ens_job")
    if job is not None and job.alive():
        _progress_panel(job, "Running the ensemble")

    def _start_ens() -> None:
        prm = C.effective_params()
        prm["ensemble"] = {"members": int(members), "vary": str(vary)}
        prm = P.validate(prm)

        def fn(job: C.Job) -> dict[str, Any]:
            def progress(stage: str, fraction: float, message: str) -> None:
                i = pipe.STAGES.index(stage) if stage in pipe.STAGES else 0
                job.progress["fraction"] = (i + fraction) / len(pipe.STAGES)
                job.progress["message"] = f"{stage}: {message}"

            r = pipe.run(ds, prm, job.work_dir, only=["dominance"], cache_dir=C.CACHE_DIR, progress=progress,
                         cancel=job.cancel)
            failed = [f"{s.name}: {s.message}" for s in r.stages if s.status == "failed"]
            if failed:
                raise ValueError("; ".join(failed))
            return {"out_dir": str(r.out_dir), "members": int(members), "vary": str(vary)}

        C.start_job("ensemble", fn, "ens_job")

    st.button("Run the ensemble", type="primary", on_click=_start_ens, key="ens_start")
    job = ss.get("ens_job")
    ens_dir = None
    if job is not None and not job.alive():
        if job.error:
            C.show_error(f"The ensemble stopped: {job.error}", "Check the settings and the Data page, then run again.")
        elif job.result:
            ens_dir = Path(job.result["out_dir"])
    main = C.out_dir()
    if ens_dir is None and main is not None and (main / "dominant_agreement.tif").exists():
        ens_dir = main
        st.caption("Showing the ensemble of the last main run (ensemble.members > 0 on Parameters).")
    if ens_dir is None or not (ens_dir / "dominant_agreement.tif").exists():
        return
    summ = json.loads((ens_dir / "summary.json").read_text())
    ens = summ.get("ensemble") or {}
    codes = {int(k): v for k, v in ((summ.get("dominant") or {}).get("codes") or {}).items()}
    st.divider()
    st.subheader(f"Ensemble of {ens.get('members')} members (vary: {ens.get('vary')})")
    m1, m2 = st.columns(2)
    m1.metric("Mean agreement", f"{float(ens.get('mean_agreement', float('nan'))):.3f}")
    m2.metric("Threshold", f"{float((summ.get('dominant') or {}).get('threshold', float('nan'))):g} %")

    @st.cache_data(max_entries=8, show_spinner=False)
    def _ens_overlays(folder: str, sha: str) -> tuple[render.Overlay, render.Overlay]:
        from npp_core.raster import read_raster

        mode_, grid, _ = read_raster(Path(folder) / "dominant_modal.tif")
        agree, _g, _ = read_raster(Path(folder) / "dominant_agreement.tif")
        colours = render.dominant_colours(codes)
        o1 = render.web_overlay(mode_[0], grid, "Modal dominant class", kind="classes", colours=colours)
        o2 = render.web_overlay(agree[0], grid, "Agreement", cmap="viridis", vmin=0.0, vmax=1.0, show=False)
        return o1, o2

    o1, o2 = _ens_overlays(str(ens_dir), C.file_sha(ens_dir / "dominant_modal.tif") + C.file_sha(ens_dir / "dominant_agreement.tif"))
    which = st.radio("Map", ["Modal dominant class", "Agreement"], horizontal=True, key="ens_map_pick")
    from streamlit_folium import st_folium

    if which == "Agreement":
        o2 = render.Overlay(o2.name, o2.png, o2.bounds, opacity=0.85, show=True)
        st_folium(render.make_map([o2]), height=420, use_container_width=True, returned_objects=[], key="ens_map_a")
        C.legend(render.legend_continuous("Share of members choosing the modal class", "viridis", 0.0, 1.0))
    else:
        st_folium(render.make_map([o1]), height=420, use_container_width=True, returned_objects=[], key="ens_map_m")
        C.legend(render.legend_classes("Modal dominant class", [(codes[k], c) for k, c in render.dominant_colours(codes).items()],
                                       ens.get("modal_area_share")))
    iv = ens.get("intervals") or {}
    if iv:
        st.markdown("**Member spread** (mean and 5–95 % interval over members)")
        df = pd.DataFrame([{"quantity": k, **{c: v.get(c) for c in ("mean", "p05", "p95", "min", "max", "n")}}
                           for k, v in iv.items()])
        st.dataframe(df.round(3), hide_index=True, width="stretch")


C.run_page(_page)
