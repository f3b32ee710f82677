"""Export page: every output (zip), the settings file and the offline HTML report."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pandas as pd
import streamlit as st

from npp_core import params as P
from pages import _common as C

C.setup("Export")


def _page() -> None:
    st.title("6 · Export")
    ss = st.session_state

    st.download_button(
        "Settings (params.toml)",
        P.dumps(ss.params).encode("utf-8"),
        file_name="params.toml",
        mime="application/toml",
        key="export_params",
    )

    out = C.out_dir()
    if out is None:
        st.info("No results yet. Open **Run** first; then every output file and the report can be downloaded here.")
        st.stop()

    ds, _msg = C.current_dataset()
    state, reasons = C.results_state(ds)
    if state == "stale":
        st.warning("These results are stale (" + "; ".join(reasons) + "). Run again before exporting if you need them current.")

    files = sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    st.dataframe(
        pd.DataFrame([{"file": str(p.relative_to(out)), "size (kB)": round(p.stat().st_size / 1024, 1)} for p in files]),
        hide_index=True,
        width="stretch",
    )


    @st.cache_data(max_entries=4, show_spinner="Packing the outputs…")
    def _zip(folder: str, signature: str) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            base = Path(folder)
            for p in sorted(base.rglob("*")):
                if p.is_file() and not p.name.startswith("."):
                    z.write(p, p.relative_to(base).as_posix())
            z.writestr("params.toml", P.dumps(ss.params))
        return buf.getvalue()


    @st.cache_data(max_entries=4, show_spinner="Writing the report…")
    def _report(folder: str, signature: str) -> str:
        from npp_core.report import build_report

        return build_report(folder)


    sig = "|".join(f"{p.relative_to(out)}:{C.file_sha(p)}" for p in files)
    c1, c2 = st.columns(2)
    try:
        c1.download_button("All outputs (.zip)", _zip(str(out), sig + C.params_hash(ss.params)),
                           file_name="npp_results.zip", mime="application/zip", key="export_zip")
    except Exception as exc:
        C.show_error(f"The outputs could not be packed: {exc}")
    try:
        c2.download_button("Report (offline HTML)", _report(str(out), sig).encode("utf-8"),
                           file_name="npp_report.html", mime="text/html", key="export_report")
    except Exception as exc:
        C.show_error(f"The report could not be written: {exc}", "Run again; if it persists, export the files instead.")

    with st.expander("Single files"):
        names = [str(p.relative_to(out)) for p in files]
        pick = st.selectbox("File", names, key="export_pick")
        if pick:
            st.download_button(f"Download {pick}", (out / pick).read_bytes(), file_name=Path(pick).name, key="export_file")


C.run_page(_page)
