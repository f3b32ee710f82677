"""NPP Driver Explorer — Streamlit entry point and home page.

Run with ``streamlit run app.py``. The pages in ``pages/`` (Streamlit's
multipage folder convention; numbered in the order a planner works) each start
with ``pages._common.setup``, which initialises the session and shows in the
sidebar which dataset is loaded and whether the results are current. Pages only
talk to ``npp_core`` and never import each other.
"""
from __future__ import annotations

import streamlit as st

from pages import _common as C

C.setup("Home")
st.title("NPP Driver Explorer")
st.write(
    "Estimate vegetation net primary productivity (NPP) in a coal-mining basin and find out whether "
    "**climate (C)**, **soil (S)** or **mining (M)** drives it, pixel by pixel."
)
ds, msg = C.current_dataset()
if ds is not None:
    origin = "the bundled sample basin" if st.session_state.ds_origin == "sample" else "your dataset"
    st.success(f"Loaded: **{ds.name}** ({origin}). Its layers are listed and drawn on the **Data** page.")
else:
    st.warning(msg)
st.markdown(
    """
Work through the pages in the sidebar, in order:

1. **Data** — check the loaded dataset (the sample basin is loaded for you) or bring your own.
2. **Parameters** — CASA, kriging, land-degradation weights (AHP), local correlation, random forest, dominance threshold.
3. **Run** — compute the stages; only what changed is recomputed.
4. **Explore** — maps and charts of NPP, drivers, correlations and contributions.
5. **Sensitivity** — how results move when a setting changes.
6. **Export** — GeoTIFFs, tables, the settings file and an offline HTML report.
"""
)
pipe = C.pipeline_module()
if pipe is not None:
    avail = pipe.available_stages()
    st.caption(
        "Stages in this version: "
        + ", ".join(f"{s} {'✅' if ok else '⏳ not available yet'}" for s, ok in avail.items())
    )
else:
    st.caption("The analysis pipeline is not available in this version yet.")
