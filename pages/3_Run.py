"""Run page: compute the stages with progress, per-stage status and timing, and cancel."""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from pages import _common as C

C.setup("Run")


def _page() -> None:
    st.title("3 · Run")
    ss = st.session_state

    pipe = C.pipeline_module()
    ds, msg = C.current_dataset()
    if pipe is None:
        C.stage_unavailable("The analysis pipeline", "It will run fusion, CASA, drivers, correlation and attribution.")
        st.stop()
    if ds is None:
        st.warning(msg)
        st.stop()

    avail = pipe.available_stages()
    STATUS_ICON = {"done": "✅", "cached": "♻️", "skipped": "⏭️", "failed": "⛔", "unavailable": "⏳"}

    st.markdown(f"Dataset **{ds.name}**. Stages run in order; a stage whose inputs and settings did not change "
                "is restored from the cache instead of recomputed.")
    st.dataframe(
        pd.DataFrame(
            [{"stage": s, "available": "yes" if ok else "not available yet", "reads": ", ".join(pipe.DEPENDS.get(s, [])) or "dataset"}
             for s, ok in avail.items()]
        ),
        hide_index=True,
        width="stretch",
    )

    state, reasons = C.results_state(ds)
    job = ss.get("job")


    def _start() -> None:
        if ss.get("job") is None or not ss.job.alive():
            C.start_run(ds)


    def _cancel() -> None:
        j = ss.get("job")
        if j is not None:
            j.cancel.set()


    if job is None:
        label = "Run the analysis" if state == "none" else "Run again" if state == "stale" else "Run again (results are up to date)"
        st.button(label, type="primary", on_click=_start, key="run_start", disabled=not any(avail.values()))
        if state == "stale":
            st.warning("Results are stale: " + "; ".join(reasons) + ".")


    def _progress_panel(j) -> None:
        """Poll the background run until it ends. A click on Cancel (or leaving the page) interrupts this loop
        at the next update; the run itself goes on in its thread until cancelled or finished."""
        status = st.status("Running…", expanded=True)
        with status:
            bars = {s: st.progress(0.0, text=f"{s}: waiting") for s in pipe.STAGES}
        st.button("Cancel the run", on_click=_cancel, key="run_cancel", disabled=j.cancel.is_set())
        note = st.empty()
        while j.alive():
            for s, bar in bars.items():
                frac, text = j.progress.get(s, (0.0, "waiting" if avail.get(s) else "not available yet"))
                bar.progress(min(max(frac, 0.0), 1.0), text=f"{s}: {text}")
            status.update(label=f"Running… {time.time() - j.started:.0f} s")
            if j.cancel.is_set():
                note.caption("Cancelling at the next checkpoint…")
            time.sleep(0.3)
        status.update(label="Finished", state="complete")
        C.finish_run_if_done()
        st.rerun()


    if job is not None:
        _progress_panel(job)

    last = ss.get("last_job")
    if last and job is None:
        st.markdown("#### Last run")
        if last.get("error"):
            C.show_error(f"The run stopped: {last['error']}", "Check the Data page for problems, fix them and run again.")
        elif last.get("cancelled"):
            st.info("The run was cancelled; the previous results (if any) are kept.")
        rows = [
            {"": STATUS_ICON.get(s["status"], ""), "stage": s["name"], "status": s["status"],
             "seconds": round(s["seconds"], 2), "message": s["message"]}
            for s in last.get("stages", [])
        ]
        if rows:
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
            st.caption(f"Total {last.get('seconds', 0):.1f} s.")
        failed = [s for s in last.get("stages", []) if s["status"] == "failed"]
        for s in failed:
            st.error(f"Stage **{s['name']}** failed: {s['message']}")
        if any(s["status"] in ("done", "cached") for s in last.get("stages", [])):
            st.success("Results are ready: open **Explore** or **Export**.")


C.run_page(_page)
