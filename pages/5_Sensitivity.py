"""Sensitivity page (its own issue): a placeholder that says what it will do."""
from __future__ import annotations

import streamlit as st

from pages import _common as C

C.setup("Sensitivity")
st.title("5 · Sensitivity")
C.stage_unavailable(
    "Sensitivity analysis",
    "This page will sweep one setting — εmax, the LCC window, the dominance threshold, the sample size, "
    "the sample seed or the number of trees — and chart how mean NPP, the category shares and the "
    "dominant-class areas move. It will also run seed/draw ensembles and map where the members agree "
    "on the dominant class.",
)
st.markdown(
    "Meanwhile: the dominance threshold can already be moved live on **Explore → Dominant driver**, and "
    "any setting can be changed on **Parameters** and compared after **Run**."
)
