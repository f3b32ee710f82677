"""Explore page: interactive maps and charts of the last run."""
from __future__ import annotations


import numpy as np
import pandas as pd
import streamlit as st

from npp_core import render, report
from pages import _common as C

C.setup("Explore")


def _page() -> None:
    st.title("4 · Explore")
    ss = st.session_state

    ds, msg = C.current_dataset()
    out = C.out_dir()
    if out is None:
        st.info("No results yet. Open **Run** to compute them (the sample basin is ready to go).")
        st.stop()
    state, reasons = C.results_state(ds)
    if state == "stale":
        st.warning("These results are stale (" + "; ".join(reasons) + "). Run again to update them.")
    summ = C.summary()


    # ------------------------------------------------------------------ layer catalogue
    def catalogue() -> dict[str, dict]:
        """Display name → how to draw it, for every output present."""
        cat: dict[str, dict] = {}
        if (out / "npp_mean.tif").exists():
            cat["NPP · multi-year mean"] = dict(rel="npp_mean.tif", band=1, cmap="YlGn", unit="gC m⁻² yr⁻¹")
        for i, d in enumerate(C.band_labels("npp_annual.tif")):
            cat[f"NPP · year {d}"] = dict(rel="npp_annual.tif", band=i + 1, cmap="YlGn", unit="gC m⁻² yr⁻¹")
        for i, d in enumerate(C.band_labels("npp_monthly.tif")):
            cat[f"NPP · month {d}"] = dict(rel="npp_monthly.tif", band=i + 1, cmap="YlGn", unit="gC m⁻² month⁻¹")
        for p in sorted((out / "drivers").glob("*.tif")) if (out / "drivers").is_dir() else []:
            if not p.stem.endswith("_variance"):
                cat[f"Driver · {p.stem}"] = dict(rel=f"drivers/{p.name}", band=1, cmap="viridis", unit="")
        for p in sorted((out / "lcc").glob("*.tif")) if (out / "lcc").is_dir() else []:
            cat[f"LCC r · {p.stem}"] = dict(rel=f"lcc/{p.name}", band=1, cmap="RdBu_r", unit="r", lcc=True, vmin=-1.0, vmax=1.0)
        if (out / "rgb.tif").exists():
            cat["RelCon RGB composite"] = dict(rel="rgb.tif", kind="rgb")
        if (out / "relcon.tif").exists():
            cats = (summ.get("attribution") or {}).get("categories") or ["C", "S", "M"]
            for i in range(len(C.band_labels("relcon.tif"))):
                name = cats[i] if i < len(cats) else str(i + 1)
                cat[f"RelCon · {name}"] = dict(rel="relcon.tif", band=i + 1, cmap="magma", unit="%", vmin=0.0, vmax=100.0)
        if (out / "dominant.tif").exists():
            cat["Dominant driver (as run)"] = dict(rel="dominant.tif", kind="dominant")
        return cat


    @st.cache_data(max_entries=128, show_spinner=False)
    def _overlay(rel: str, sha: str, band: int, kind: str, cmap: str, vmin, vmax, sig: float | None) -> tuple[bytes, tuple, float, float]:
        if kind == "rgb":
            data, grid, _dates = C.read_output(rel, (1, 2, 3))
            o = render.web_overlay(data, grid, rel, kind="rgb")
            return o.png, o.bounds, 0.0, 255.0
        if kind == "dominant":
            data, grid, _dates = C.read_output(rel, (1,))
            codes = {int(k): v for k, v in ((summ.get("dominant") or {}).get("codes") or {}).items()}
            colours = render.dominant_colours(codes)
            o = render.web_overlay(data[0], grid, rel, kind="classes", colours=colours)
            return o.png, o.bounds, 0.0, 0.0
        if sig is not None:
            data, grid, _dates = C.read_output(rel, (1, 2))
            a = np.where(data[1] < sig, data[0], np.nan)
        else:
            data, grid, _dates = C.read_output(rel, (band,))
            a = data[0]
        o = render.web_overlay(a, grid, rel, cmap=cmap, vmin=vmin, vmax=vmax)
        return o.png, o.bounds, float(o.meta["vmin"]), float(o.meta["vmax"])


    def overlay_for(name: str, spec: dict, opacity: float, sig: float | None = None) -> tuple[render.Overlay, str]:
        kind = spec.get("kind", "continuous")
        p = out / spec["rel"]
        png, bounds, lo, hi = _overlay(spec["rel"], C.file_sha(p), int(spec.get("band", 1)), kind, spec.get("cmap", "viridis"),
                                       spec.get("vmin"), spec.get("vmax"), sig if spec.get("lcc") else None)
        if kind == "rgb":
            leg = '<div style="font:12px sans-serif"><b>RelCon composite</b> (R = soil, G = mining, B = climate)</div>' + render.ternary_legend_svg(140)
        elif kind == "dominant":
            dom = summ.get("dominant") or {}
            codes = {int(k): v for k, v in (dom.get("codes") or {}).items()}
            leg = render.legend_classes("Dominant driver", [(codes[k], c) for k, c in render.dominant_colours(codes).items()],
                                        dom.get("area_share"))
        else:
            title = name + (f" (shown where p < {sig:g})" if spec.get("lcc") and sig is not None else "")
            leg = render.legend_continuous(title, spec.get("cmap", "viridis"), lo, hi, spec.get("unit", ""))
        return render.Overlay(name, png, bounds, opacity=opacity), leg


    @st.cache_data(max_entries=16, show_spinner=False)
    def _landcover_overlay(key: str, _ds) -> tuple[bytes, tuple, list]:
        codes, classes, _ct = _ds.landcover()
        items = classes.items() if isinstance(classes, dict) else enumerate(classes, 1)
        colours = {int(k): render.LANDCOVER_COLOURS.get(str(v).lower(), (128, 128, 128)) for k, v in items}
        o = render.web_overlay(np.asarray(codes, dtype=float), _ds.grid, "Land cover", kind="classes", colours=colours)
        return o.png, o.bounds, [(str(classes[k]) if isinstance(classes, dict) else str(k), c) for k, c in colours.items()]


    def pixel_report(lat: float, lon: float) -> None:
        """Every value at a clicked pixel, and its NPP series."""
        first = next(iter(cat.values()), None)
        if first is None:
            return
        grid = C.read_output(first["rel"], (1,))[1]
        rc = render.latlon_to_rowcol(grid, lat, lon)
        if rc is None:
            st.caption("The clicked point is outside the study area.")
            return
        r, c = rc
        rows = []
        codes = (summ.get("dominant") or {}).get("codes") or {}
        for name, spec in cat.items():
            if spec.get("kind") == "rgb" or name.startswith(("NPP · month", "NPP · year")):
                continue
            vals = C.pixel_values(spec["rel"], r, c)
            if vals is None:
                continue
            v = vals[int(spec.get("band", 1)) - 1]
            if spec.get("kind") == "dominant":
                rows.append({"layer": name, "value": codes.get(str(int(v)), "—") if np.isfinite(v) else "no data"})
            else:
                rows.append({"layer": name, "value": f"{v:.4g}" if np.isfinite(v) else "no data"})
            if spec.get("lcc") and vals.size >= 2:
                rows.append({"layer": name.replace("LCC r", "LCC p"), "value": f"{vals[1]:.3g}" if np.isfinite(vals[1]) else "no data"})
        st.markdown(f"**Pixel** row {r}, column {c} (lat {lat:.5f}, lon {lon:.5f})")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", height=min(420, 36 * (len(rows) + 1)))
        for rel, unit in (("npp_monthly.tif", "month"), ("npp_annual.tif", "year")):
            vals = C.pixel_values(rel, r, c)
            if vals is not None:
                st.plotly_chart(report.fig_timeseries(C.band_labels(rel), [float(x) for x in vals],
                                                      title=f"NPP per {unit} at this pixel"), width="stretch", key=f"ts_{unit}")
                break


    cat = catalogue()
    # Only the chosen view is built (a Leaflet map drawn in a hidden tab opens at the wrong zoom).
    VIEWS = ["Maps", "Dominant driver (threshold)", "Charts"]
    view = st.radio("View", VIEWS, horizontal=True, key="explore_view", label_visibility="collapsed")


    # ------------------------------------------------------------------ maps
    if view == VIEWS[0]:
        if not cat:
            st.info("This run produced no map layers yet (later stages are not available in this version).")
        else:
            c1, c2, c3 = st.columns([3, 1, 1])
            name = c1.selectbox("Layer", list(cat), key="explore_layer")
            opacity = c2.slider("Opacity", 0.0, 1.0, 0.8, 0.05, key="explore_opacity")
            sig = None
            if cat[name].get("lcc"):
                sig = c3.selectbox("Show LCC where p <", [0.05, 0.01, 1.0], key="explore_sig",
                                   format_func=lambda v: "all pixels" if v >= 1 else f"p < {v}")
                sig = None if sig >= 1 else sig
            basemap = c3.toggle("Basemap (internet)", value=False, key="explore_basemap")

            @st.fragment
            def map_fragment() -> None:
                ov, leg = overlay_for(name, cat[name], opacity, sig)
                overlays = [ov]
                lc_leg = ""
                if ds is not None:
                    try:
                        png, b, items = _landcover_overlay(C.dataset_hash(ds), ds)
                        overlays.append(render.Overlay("Land cover", png, b, opacity=0.6, show=False))
                    except Exception:
                        pass
                click = ss.get("explore_click")
                m = render.make_map(overlays, basemap=basemap, marker=click)
                from streamlit_folium import st_folium

                left, right = st.columns([3, 2])
                with left:
                    res = st_folium(m, height=520, use_container_width=True, returned_objects=["last_clicked"], key="explore_map")
                    C.legend(leg)
                if res and res.get("last_clicked"):
                    pt = (float(res["last_clicked"]["lat"]), float(res["last_clicked"]["lng"]))
                    if pt != click:
                        ss.explore_click = pt
                        st.rerun(scope="fragment")
                with right:
                    if click:
                        pixel_report(*click)
                    else:
                        st.caption("Click the map to see every value at that pixel and its NPP time series.")

            map_fragment()

    # ------------------------------------------------------------------ dominant classes with live threshold
    if view == VIEWS[1]:
        try:
            from npp_core import attribution
        except ImportError:
            attribution = None
        rel = C.read_output("relcon.tif")
        if attribution is None or rel is None:
            C.stage_unavailable("Dominant-driver classes",
                                "They need the attribution stage; the map will recolour instantly as the threshold moves.")
        else:

            @st.fragment
            def dominance_fragment() -> None:
                thr = st.slider("Dominance threshold (%)", 0.0, 100.0,
                                float(ss.params["dominance"]["threshold"]), 1.0, key="explore_threshold",
                                help="A category dominates a pixel when its relative contribution exceeds this.")
                data, grid, _ = rel
                cats = (summ.get("attribution") or {}).get("categories") or ["C", "S", "M"]
                floor = (summ.get("attribution") or {}).get("noise_floor")
                valid = np.all(np.isfinite(data), axis=0)
                codes, labels = _classes(C.file_sha(out / "relcon.tif"), thr, cats, floor)
                colours = render.dominant_colours(labels, cats)
                o = render.web_overlay(np.where(valid, codes, np.nan), grid, "Dominant driver", kind="classes", colours=colours)
                n = max(int(valid.sum()), 1)
                shares = {v: 100.0 * float(((codes == k) & valid).sum()) / n for k, v in labels.items() if k != 0}
                m = render.make_map([o])
                from streamlit_folium import st_folium

                a, b = st.columns([3, 2])
                with a:
                    st_folium(m, height=460, use_container_width=True, returned_objects=[], key="dominant_map")
                with b:
                    C.legend(render.legend_classes(f"Dominant driver at {thr:.0f} %", [(labels[k], c) for k, c in colours.items()], shares))
                    st.plotly_chart(report.fig_class_shares(shares), width="stretch", key="dom_shares")

            @st.cache_data(max_entries=32, show_spinner=False)
            def _classes(sha: str, thr: float, cats: list[str], floor) -> tuple[np.ndarray, dict]:
                data, _grid, _ = C.read_output("relcon.tif")
                act = C.read_output("actcon.tif")
                valid = np.all(np.isfinite(data), axis=0)
                und = render.undetermined_mask(act[0], float(floor)) & valid if (floor is not None and act is not None) else None
                codes, labels = attribution.dominant_classes(data, list(cats), threshold=float(thr), undetermined_mask=und)
                return np.asarray(codes), {int(k): v for k, v in labels.items()}

            dominance_fragment()

    # ------------------------------------------------------------------ charts
    def _chart(fn, *args, key: str, where=st) -> None:
        """Draw one plotly chart; a chart that cannot be drawn says so instead of breaking the page."""
        try:
            where.plotly_chart(fn(*args), width="stretch", key=key)
        except Exception as exc:
            where.caption(f"This chart could not be drawn from the run's summary ({exc.__class__.__name__}: {exc}).")


    if view == VIEWS[2]:
        shown = 0
        npp = C.read_output("npp_mean.tif")
        if npp is not None:
            a, b = st.columns(2)
            _chart(report.fig_npp_histogram, npp[0][0], key="c_hist", where=a)
            with b:
                st.markdown("**NPP by land-cover class** (with the reference product where supplied)")
                st.dataframe(pd.DataFrame(report.npp_class_table(summ)), hide_index=True, width="stretch")
                s = summ.get("npp") or {}
                if s:
                    st.caption(" · ".join(f"{k} {report._f(s[k]):.4g}" for k in ("mean", "sd", "cv", "min", "max") if k in s))
            shown += 1
        plots = (summ.get("validation") or {}).get("plots") or []
        if plots:
            _chart(report.fig_validation, plots, key="c_val")
        if summ.get("pearson"):
            a, b = st.columns([2, 1])
            _chart(report.fig_pearson, summ["pearson"], key="c_pearson", where=a)
            b.dataframe(pd.DataFrame(report.pearson_table(summ["pearson"])), hide_index=True, width="stretch",
                        column_config={"r": st.column_config.NumberColumn(format="%.3f"),
                                       "p": st.column_config.NumberColumn(format="%.2e")})
            shown += 1
        if summ.get("lcc"):
            _chart(report.fig_lcc_shares, summ["lcc"], key="c_lcc")
            shown += 1
        if summ.get("importance"):
            _chart(report.fig_importance, summ["importance"], (summ.get("params") or {}).get("categories"), key="c_imp")
            shown += 1
        if summ.get("relcon_mean"):
            _chart(report.fig_relcon_means, summ["relcon_mean"], key="c_relcon")
            shown += 1
        if (summ.get("dominant") or {}).get("area_share"):
            _chart(report.fig_class_shares, summ["dominant"]["area_share"], key="c_classes")
            shown += 1
        missing = [n for n, k in (("Pearson table", "pearson"), ("LCC shares", "lcc"), ("importance", "importance"),
                                  ("RelCon means", "relcon_mean"), ("class shares", "dominant")) if not summ.get(k)]
        if missing:
            st.caption("Not available from this run yet: " + ", ".join(missing) + ".")


C.run_page(_page)
