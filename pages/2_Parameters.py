"""Parameters page: every setting of params.toml, the CASA class table, AHP and variograms."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import streamlit as st

from npp_core import params as P
from pages import _common as C

C.setup("Parameters")


def _page() -> None:
    st.title("2 · Parameters")
    ss = st.session_state
    st.caption("Defaults reproduce the study. Changes mark existing results as stale until you run again.")

    TITLES = {
        "estarfm": "NDVI fusion (ESTARFM)",
        "casa": "CASA model",
        "kriging": "Soil kriging",
        "degradation": "Land degradation (AHP)",
        "lcc": "Local correlation (LCC)",
        "sampling": "Sample points",
        "rf": "Random forest",
        "dominance": "Dominant driver",
        "ensemble": "Ensembles",
        "run": "Execution",
        "categories": "Driver categories",
    }


    # ------------------------------------------------------------------ save / load
    def _load_params() -> None:
        up = ss.get("params_upload")
        if up is None:
            return
        try:
            ss.params = P.loads(up.getvalue().decode("utf-8-sig"), up.name)
            ss.params_msg = ("success", f"Loaded settings from {up.name}.")
            for k in [k for k in ss.keys() if str(k).startswith("p__")]:
                del ss[k]
        except (P.ParamsError, UnicodeDecodeError) as exc:
            ss.params_msg = ("error", f"{exc}  \n**What to do:** fix the file and load it again; your current settings are kept.")


    def _reset() -> None:
        ss.params = P.defaults()
        for k in [k for k in ss.keys() if str(k).startswith("p__")]:
            del ss[k]
        ss.params_msg = ("success", "All settings reset to the study defaults.")


    c1, c2, c3 = st.columns([1, 2, 1])
    c1.download_button(
        "Save settings (params.toml)",
        P.dumps(ss.params).encode("utf-8"),
        file_name="params.toml",
        mime="application/toml",
        key="params_download",
    )
    c2.file_uploader("Load settings", type=["toml"], key="params_upload", on_change=_load_params)
    c3.button("Reset to defaults", on_click=_reset, key="params_reset")
    if ss.get("params_msg"):
        kind, text = ss.params_msg
        (st.success if kind == "success" else st.error)(text)

    # ------------------------------------------------------------------ generic settings
    # edited in their own tables below (the per-class CASA table and the AHP judgements)
    SKIP = {("casa", "eps_max"), ("casa", "overrides"), ("degradation", "ahp_override")}


    def _widget(sec: str, key: str, s: P.Setting, value):
        wkey = f"p__{sec}__{key}"
        label = f"{key}" + (f" [{s.unit}]" if s.unit else "")
        d = s.default
        if isinstance(d, bool):
            if wkey not in ss:
                ss[wkey] = bool(value)
            return st.checkbox(label, key=wkey, help=s.help)
        if s.choices is not None:
            opts = list(s.choices)
            if wkey not in ss:
                ss[wkey] = value if value in opts else opts[0]
            return st.selectbox(label, opts, key=wkey, help=s.help)
        if isinstance(d, int):
            if wkey not in ss:
                ss[wkey] = int(value)
            kw = {}
            if s.min is not None:
                kw["min_value"] = int(s.min)
            if s.max is not None:
                kw["max_value"] = int(s.max)
            step = 2 if key == "window" else 1
            return st.number_input(label, step=step, key=wkey, help=s.help, **kw)
        if isinstance(d, float):
            if wkey not in ss:
                ss[wkey] = float(value)
            kw = {}
            if s.min is not None:
                kw["min_value"] = float(s.min)
            if s.max is not None:
                kw["max_value"] = float(s.max)
            return st.number_input(label, key=wkey, help=s.help, format="%g", **kw)
        if isinstance(d, str):
            if wkey not in ss:
                ss[wkey] = str(value)
            return st.text_input(label, key=wkey, help=s.help)
        # lists / dicts: JSON text
        if wkey not in ss:
            ss[wkey] = json.dumps(value)
        txt = st.text_input(label + " (JSON)", key=wkey, help=s.help)
        try:
            return json.loads(txt)
        except ValueError:
            st.error(f"{sec}.{key}: not valid JSON (e.g. {json.dumps(d)}). The previous value is kept.")
            return value


    new = copy.deepcopy(ss.params)
    tabs = st.tabs([TITLES.get(sec, sec) for sec in P.SCHEMA])
    for tab, (sec, keys) in zip(tabs, P.SCHEMA.items()):
        with tab:
            cols = st.columns(2)
            i = 0
            for key, s in keys.items():
                if (sec, key) in SKIP:
                    continue
                with cols[i % 2]:
                    new[sec][key] = _widget(sec, key, s, ss.params[sec].get(key, s.default))
                i += 1
            if sec == "casa":
                st.markdown("##### εmax per CASA vegetation type [gC MJ⁻¹]")
                s = P.SCHEMA["casa"]["eps_max"]
                st.caption(s.help)
                eps = pd.DataFrame(
                    {"CASA type": list(ss.params["casa"]["eps_max"]), "εmax": list(ss.params["casa"]["eps_max"].values())}
                )
                ed = st.data_editor(
                    eps, hide_index=True, disabled=["CASA type"], key="p__casa__eps_max_table",
                    column_config={"εmax": st.column_config.NumberColumn(min_value=0.01, max_value=4.99, format="%.3f")},
                )
                new["casa"]["eps_max"] = {r["CASA type"]: float(r["εmax"]) for _, r in ed.iterrows() if pd.notna(r["εmax"])}

    try:
        validated = P.validate(new)
    except P.ParamsError as exc:
        C.show_error(exc, "Change the value it names; the last valid settings stay in use.")
    else:
        if validated != ss.params:
            ss.params = validated

    # ------------------------------------------------------------------ CASA per-class table
    st.divider()
    st.subheader("CASA parameters per land-cover class")
    ds, msg = C.current_dataset()
    if ds is None:
        st.info(msg)
    else:
        try:
            from npp_core import casa

            _codes, classes, casa_type = ds.landcover()
            items = classes.items() if isinstance(classes, dict) else enumerate(classes, 1)
            ov = ss.params["casa"].get("overrides") or {}
            rows = []
            for code, name in items:
                t = casa_type.get(name, "other") if isinstance(casa_type, dict) else "other"
                veg = t != "none"
                eps = ss.params["casa"]["eps_max"].get(t, np.nan) * float(ss.params["casa"]["eps_scale"]) if veg else np.nan
                o = ov.get(str(name), {})
                rows.append(
                    {
                        "code": int(code),
                        "class": str(name),
                        "CASA type": t,
                        "εmax": float(o.get("eps_max", eps)),
                        "NDVImin": float(o.get("ndvi_min", casa.NDVI_MIN_ZHU if veg else np.nan)),
                        "NDVImax": float(o.get("ndvi_max", casa.ZHU_TABLE.get(t, (np.nan, np.nan))[0] if veg else np.nan)),
                        "overridden": ", ".join(o) if o else "",
                    }
                )
            base = pd.DataFrame(rows)
            st.caption(
                "Values come from the CASA type (εmax table above × eps_scale, Zhu et al. 2007 NDVI range"
                + (" — with ndvi_range = percentile the NDVI range is computed from the data unless overridden" if
                   ss.params["casa"]["ndvi_range"] == "percentile" else "")
                + "). Edit a cell to override it for that class only (stored as casa.overrides, saved with the "
                "settings; an overridden εmax is used as is, not multiplied by eps_scale). Non-vegetated classes "
                "(type 'none') have NPP = 0."
            )
            edited = st.data_editor(
                base, hide_index=True, disabled=["code", "class", "CASA type", "overridden"], key="p__casa_table",
                column_config={
                    "εmax": st.column_config.NumberColumn("εmax [gC MJ⁻¹]", min_value=0.0, max_value=5.0, format="%.3f"),
                    "NDVImin": st.column_config.NumberColumn(min_value=-1.0, max_value=1.0, format="%.3f"),
                    "NDVImax": st.column_config.NumberColumn(min_value=-1.0, max_value=1.0, format="%.3f"),
                },
            )
            overrides, ignored = C.casa_overrides_from_table(
                base.to_dict("records"), edited.to_dict("records"), ov
            )
            for m in ignored:
                st.error(f"Override not used — {m}.")
            if overrides != ov:
                try:
                    ss.params = P.validate({**ss.params, "casa": {**ss.params["casa"], "overrides": overrides}})
                except P.ParamsError as exc:
                    C.show_error(exc, "Correct the cell; the previous overrides stay in use.")
                else:
                    st.rerun()
            if ov:
                def _clear_overrides() -> None:
                    ss.params = P.validate({**ss.params, "casa": {**ss.params["casa"], "overrides": {}}})
                    ss.pop("p__casa_table", None)

                c1, c2 = st.columns([3, 1])
                c1.caption("Overridden classes: " + ", ".join(f"{c} ({', '.join(v)})" for c, v in sorted(ov.items())))
                c2.button("Clear class overrides", on_click=_clear_overrides, key="casa_clear_overrides")
        except Exception as exc:
            C.show_error(f"The land-cover classes could not be read: {exc}")

    # ------------------------------------------------------------------ AHP editor
    st.divider()
    st.subheader("Land-degradation weights (AHP)")
    try:
        from npp_core import ahp
    except ImportError:
        ahp = None
    if ahp is None:
        C.stage_unavailable("The AHP editor", "It will compute indicator weights and the consistency ratio live.")
    elif ds is None:
        st.info(msg)
    else:
        try:
            ld_ready = ds.ld_raster() is not None if hasattr(ds, "ld_raster") else False
            deg = None if ld_ready else ds.degradation()
        except Exception as exc:
            deg = None
            C.show_error(f"The degradation inputs could not be read: {exc}")
        if not deg or deg.get("ahp_matrix") is None:
            st.info("This dataset has no AHP matrix (it supplies a ready LD raster or no degradation indicators).")
        else:
            names = [str(n) for n in deg["ahp_names"]]
            given = np.asarray(deg["ahp_matrix"], dtype=float)
            cur = ss.params["degradation"].get("ahp_override") or {}

            def _use_dataset_matrix() -> None:
                ss.params = P.validate({**ss.params, "degradation": {**ss.params["degradation"], "ahp_override": {}}})
                for k in [k for k in ss.keys() if str(k).startswith("p__ahp__")]:
                    del ss[k]

            start = given
            if cur:
                if list(cur["names"]) == names:
                    start = np.asarray(cur["matrix"], dtype=float)
                else:
                    st.warning(
                        "The loaded settings hold an AHP matrix for other indicators ("
                        + ", ".join(cur["names"]) + "), not this dataset's (" + ", ".join(names) + "). "
                        "The run would fail on it."
                    )
                    st.button("Use this dataset's matrix", on_click=_use_dataset_matrix, key="ahp_discard")
            st.caption(
                "How much more does the row indicator degrade land than the column one? Saaty scale: 1 equal, "
                "3 moderately, 5 strongly, 7 very strongly, 9 extremely more; below 1 when the second matters more "
                "(1/3 = 0.333). Edits are stored in the settings (degradation.ahp_override) and used by the next run."
            )
            n = len(names)
            pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
            cols = st.columns(3)
            upper: dict[tuple[int, int], float] = {}
            for k, (i, j) in enumerate(pairs):
                wkey = f"p__ahp__{i}__{j}"
                if wkey not in ss:
                    ss[wkey] = float(start[i, j])
                v0 = float(start[i, j])  # widen the Saaty range for a file that goes beyond it
                upper[(i, j)] = cols[k % 3].number_input(
                    f"{names[i]} vs {names[j]}", min_value=min(0.1, v0), max_value=max(9.0, v0), step=1.0,
                    format="%.3f", key=wkey,
                )
            fixed = C.ahp_from_judgements(names, upper, start)
            try:
                w, cr = ahp.weights(fixed)
            except ValueError as exc:
                C.show_error(exc, "Enter positive numbers.")
            else:
                cA, cB = st.columns([2, 1])
                cA.bar_chart(pd.Series(w, index=names, name="weight"))
                cB.metric("Consistency ratio", f"{cr:.3f}", delta="consistent" if cr < 0.1 else "inconsistent (≥ 0.10)",
                          delta_color="normal" if cr < 0.1 else "inverse")
                with cB.expander("Full matrix"):
                    st.dataframe(pd.DataFrame(fixed, index=names, columns=names).round(3), width="stretch")
                if cr >= 0.1 and not ss.params["degradation"]["accept_inconsistent"]:
                    st.warning("CR ≥ 0.10: the run will stop at the drivers stage. Revise the judgements, or allow it "
                               "with degradation.accept_inconsistent (Land degradation tab above).")
                want = {} if np.allclose(fixed, given, rtol=1e-9, atol=1e-12) else {"names": names, "matrix": fixed.tolist()}
                if want != cur and (cur == {} or list(cur.get("names", [])) == names):
                    ss.params = P.validate({**ss.params, "degradation": {**ss.params["degradation"], "ahp_override": want}})
                    st.rerun()
                if want:
                    cB.button("Use the dataset's matrix", on_click=_use_dataset_matrix, key="ahp_reset")
                    cA.caption("Weights from your edited matrix (the dataset's file is unchanged).")

    # ------------------------------------------------------------------ variograms
    st.divider()
    st.subheader("Soil variograms")
    try:
        from npp_core import kriging
    except ImportError:
        kriging = None
    if kriging is None:
        C.stage_unavailable("Variogram fitting", "It will show the fitted variogram and leave-one-out scores per property.")
    elif ds is None:
        st.info(msg)
    else:
        try:
            samples = ds.soil_samples()
        except Exception as exc:
            samples = None
            C.show_error(f"The soil samples could not be read: {exc}")
        if not samples:
            st.info("This dataset has no soil sample table (it supplies ready soil rasters or none).")
        else:
            props = list(samples["values"])
            prop = st.selectbox("Soil property", props, key="vario_prop")
            model = ss.params["kriging"]["model"]

            @st.cache_data(max_entries=32, show_spinner="Fitting the variogram…")
            def _fit(key: str, prop: str, model: str, _samples) -> dict:
                x, y, z, _info = kriging.prepare_samples(_samples["x"], _samples["y"], _samples["values"][prop], name=prop)
                v = kriging.fit_variogram(x, y, z, model)
                l = kriging.loo(x, y, z, v)
                return {
                    "model": v["model"], "nugget": float(v["nugget"]), "psill": float(v["psill"]),
                    "range": float(v["range"]), "lags": np.asarray(v["lags"]).tolist(),
                    "gamma": np.asarray(v["gamma"]).tolist(), "npairs": np.asarray(v["npairs"]).tolist(),
                    "loo_rmse": float(l["rmse"]), "msdr": float(l["msdr"]), "loo_r": float(l["r"]),
                }

            try:
                key = C.dataset_hash(ds) + "|soil"
                v = _fit(key, prop, model, samples)
                import plotly.graph_objects as go

                h = np.linspace(0, max(v["lags"]) * 1.05 if v["lags"] else 1, 100)
                curve = kriging.semivariance(h, v)
                fig = go.Figure()
                fig.add_scatter(x=v["lags"], y=v["gamma"], mode="markers", name="empirical",
                                marker=dict(size=[4 + 10 * n / max(max(v["npairs"]), 1) for n in v["npairs"]]))
                fig.add_scatter(x=h, y=curve, mode="lines", name=f"{v['model']} model")
                fig.update_layout(xaxis_title="lag distance (m)", yaxis_title="semivariance", height=340,
                                  margin=dict(l=10, r=10, t=30, b=10))
                st.plotly_chart(fig, width="stretch")
                m1, m2, m3, m4, m5 = st.columns(5)
                m1.metric("Model", v["model"])
                m2.metric("Nugget", f"{v['nugget']:.3g}")
                m3.metric("Partial sill", f"{v['psill']:.3g}")
                m4.metric("Range (m)", f"{v['range']:.0f}")
                m5.metric("LOO RMSE / MSDR", f"{v['loo_rmse']:.3g} / {v['msdr']:.2f}")
            except ValueError as exc:
                C.show_error(f"{prop}: {exc}")


C.run_page(_page)
