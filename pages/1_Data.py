"""Data page: choose the dataset and see what was understood of it."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from npp_core import render
from pages import _common as C

C.setup("Data")


#: Roles a single uploaded file can play, with the manifest lines it becomes ({f} = stored file name).
FILE_ROLES: dict[str, str] = {
    "(not used)": "",
    "land cover (class codes) — the reference grid": "",
    "NDVI monthly series": "[ndvi]\nfine_series = \"{f}\"\n",
    "temperature, monthly (°C)": "temperature = \"{f}\"\n",
    "precipitation, monthly (mm)": "precipitation = \"{f}\"\n",
    "solar radiation, monthly (MJ m-2)": "solar = \"{f}\"\n",
    "ready annual NPP (gC m-2 yr-1)": "[npp]\nannual = \"{f}\"\n",
    "ready land degradation LD (0–1)": "[degradation]\nraster = \"{f}\"\n",
    "soil samples (CSV with x, y columns)": "",
}
CASA_CHOICES = ["deciduous_broadleaf", "evergreen_needleleaf", "evergreen_broadleaf", "deciduous_needleleaf",
                "mixed_forest", "shrub", "grassland", "cropland", "other", "none"]


def _assemble_from_files() -> None:
    """Build a dataset from single files: each gets a role, the manifest is written for the user."""
    import re

    import numpy as np
    from rasterio.io import MemoryFile

    ss = st.session_state

    st.caption(
        "Upload GeoTIFFs and CSV files, say what each one is, name the land-cover classes, and the app writes "
        "the `dataset.toml` for you. Monthly series need one band per month; give the first month below if the "
        "bands carry no dates. Files are stored in a private temporary folder under generated names."
    )
    files = st.file_uploader("Files", type=["tif", "tiff", "csv"], accept_multiple_files=True, key="upload_files")
    if not files:
        return
    total = sum(f.size for f in files)
    if total > C.MAX_UPLOAD_MB * 1024 * 1024:
        C.show_error(f"The files add up to {total / 1e6:.0f} MB, more than the {C.MAX_UPLOAD_MB} MB limit.",
                     "Clip the rasters to the study area and upload again.")
        return
    names = [f.name for f in files]
    roles = []
    cols = st.columns(2)
    for i, f in enumerate(files):
        is_csv = f.name.lower().endswith(".csv")
        opts = ["(not used)", "soil samples (CSV with x, y columns)"] if is_csv else [r for r in FILE_ROLES if "CSV" not in r]
        roles.append(cols[i % 2].selectbox(f"{f.name} ({f.size / 1e6:.1f} MB)", opts, key=f"role_{i}_{f.file_id}"))
    lc_idx = [i for i, r in enumerate(roles) if r.startswith("land cover")]
    if len(lc_idx) != 1:
        st.info("Choose exactly one file as the land cover (it defines the grid).")
        return
    lc = files[lc_idx[0]]
    try:
        with MemoryFile(lc.getvalue()) as mem, mem.open() as src:
            band = src.read(1)
            nd = src.nodata
        codes = sorted(int(v) for v in np.unique(band) if (nd is None or v != nd) and v != 0)[:50]
    except Exception as exc:
        C.show_error(f"{lc.name}: not a readable GeoTIFF ({exc}).", "Export it again as a GeoTIFF.")
        return
    st.markdown("**Land-cover classes** (name each code and pick its CASA vegetation type; 'none' = not vegetated)")
    table = pd.DataFrame({"code": codes, "class": [f"class_{c}" for c in codes], "CASA type": ["other"] * len(codes)})
    classes = st.data_editor(
        table, hide_index=True, disabled=["code"], key=f"lc_classes_{lc.file_id}",
        column_config={"CASA type": st.column_config.SelectboxColumn(options=CASA_CHOICES, required=True)},
    )
    c1, c2, c3 = st.columns(3)
    name = c1.text_input("Dataset name", "My study area", key="files_name")
    start = c2.text_input("First month of the series (YYYY-MM), if the bands carry no dates", "", key="files_start")
    soil_crs = c3.text_input("CRS of the soil sample coordinates (empty: the grid's)", "", key="files_soil_crs")
    if not st.button("Build the dataset from these files", type="primary", key="files_build"):
        return
    if start and not re.fullmatch(r"\d{4}-\d{2}", start.strip()):
        C.show_error(f"First month {start!r} is not YYYY-MM.", "Write e.g. 2010-01.")
        return
    bad = [str(n) for n in classes["class"] if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_ -]{0,40}", str(n))]
    if bad:
        C.show_error(f"Class names must be letters, digits, spaces, - or _: {', '.join(bad)}.", "Rename them in the table.")
        return
    target = C.new_private_dir("files")
    folder = target / "data"
    folder.mkdir()
    q = lambda v: '"' + str(v).replace('\\', '').replace('"', "'") + '"'  # noqa: E731
    toml = [f"name = {q(name)}", 'grid = "landcover.tif"', "", "[landcover]", 'raster = "landcover.tif"', "",
            "[landcover.classes]"]
    toml += [f"{int(r.code)} = {q(r['class'])}" for _, r in classes.iterrows()]
    toml += ["", "[landcover.casa_type]"] + [f"{q(r['class'])} = {q(r['CASA type'])}" for _, r in classes.iterrows()]
    toml.append("")
    climate = []
    for i, (f, role) in enumerate(zip(files, roles)):
        if role == "(not used)":
            continue
        if role.startswith("land cover"):
            (folder / "landcover.tif").write_bytes(f.getvalue())
            continue
        stored = f"file_{i}.csv" if f.name.lower().endswith(".csv") else f"file_{i}.tif"
        (folder / stored).write_bytes(f.getvalue())
        if role.startswith("soil samples"):
            header = f.getvalue()[:4096].decode("utf-8-sig", "replace").splitlines()[0]
            sep = ";" if header.count(";") > header.count(",") else ","
            cols_ = [c.strip() for c in header.split(sep)]
            props = [c for c in cols_ if c.lower() not in ("x", "y", "id", "lon", "lat")]
            xcol = "lon" if "lon" in cols_ else "x"
            ycol = "lat" if "lat" in cols_ else "y"
            toml += ["[soil]", f'samples = "{stored}"', f"x_column = {q(xcol)}", f"y_column = {q(ycol)}"]
            if soil_crs.strip():
                toml.append(f"crs = {q(soil_crs.strip())}")
            toml += ["", "[soil.properties]"] + [f"{q(p)} = {q(p)}" for p in props] + [""]
        elif role in ("temperature, monthly (°C)", "precipitation, monthly (mm)", "solar radiation, monthly (MJ m-2)"):
            climate.append(FILE_ROLES[role].format(f=stored))
        else:
            toml.append(FILE_ROLES[role].format(f=stored))
    if climate:
        toml += ["[climate]"] + [c.rstrip() for c in climate] + ([f"start = {q(start.strip())}"] if start.strip() else []) + [""]
    (folder / "dataset.toml").write_text("\n".join(toml) + "\n", encoding="utf-8")
    dsmod = C.dataset_module()
    try:
        dsmod.open_dataset(folder)
    except ValueError as exc:
        C.remove_private(target)
        C.show_error(str(exc), "Check the roles and classes and build again; the previous dataset is kept.")
        return
    old = ss.get("ds_upload_dir")
    ss.ds_path, ss.ds_origin, ss.ds_upload_dir = str(folder), "files", str(target)
    if old and old != str(target):
        C.remove_private(old)
    ss.files_manifest = (folder / "dataset.toml").read_text()
    st.rerun()


def _page() -> None:
    st.title("1 · Data")
    ss = st.session_state

    # ------------------------------------------------------------------ choose the source
    src = st.radio(
        "Where does the study area come from?",
        ["Bundled sample basin", "Upload a dataset (.zip)", "Upload individual files", "Folder on the server"],
        index={"sample": 0, "upload": 1, "files": 2}.get(ss.ds_origin, 3),
        horizontal=True,
        key="data_source",
    )


    def _use_sample() -> None:
        ss.ds_path, ss.ds_origin = str(C.SAMPLE_DIR), "sample"
        C.remove_private(ss.pop("ds_upload_dir", None))


    if src == "Bundled sample basin":
        if ss.ds_origin != "sample":
            st.button("Load the sample basin", on_click=_use_sample, type="primary")
        else:
            st.caption("The sample basin is loaded.")

    elif src == "Upload a dataset (.zip)":
        st.caption(
            f"A .zip of a folder with `dataset.toml` and the files it names (at most {C.MAX_UPLOAD_MB} MB). "
            "Your files stay in a private temporary folder of this browser session."
        )
        up = st.file_uploader("Dataset archive", type=["zip"], key="upload_zip")
        if up is not None and ss.get("last_upload_id") != up.file_id:
            ss.last_upload_id = up.file_id
            ss.upload_error = ""
            dsmod = C.dataset_module()
            if up.size > C.MAX_UPLOAD_MB * 1024 * 1024:
                ss.upload_error = (
                    f"The archive is {up.size / 1e6:.0f} MB, more than the {C.MAX_UPLOAD_MB} MB limit. "
                    "Clip the rasters to the study area or drop unused files, then upload again."
                )
            elif dsmod is None:
                ss.upload_error = "Uploads need the dataset reader, which is not available in this version yet."
            else:
                from npp_core.safezip import extract_zip

                target = C.new_private_dir("upload")
                try:
                    folder = extract_zip(up.getvalue(), target / "data")
                    dsmod.open_dataset(folder)  # validate before switching
                except ValueError as exc:
                    C.remove_private(target)
                    ss.upload_error = f"{up.name}: {exc}"
                except Exception as exc:  # unexpected reader failure: message, not traceback
                    C.remove_private(target)
                    ss.upload_error = f"{up.name}: could not be read ({exc.__class__.__name__}: {exc})."
                else:
                    old = ss.get("ds_upload_dir")
                    ss.ds_path, ss.ds_origin = str(folder), "upload"
                    ss.ds_upload_dir, ss.ds_upload_name = str(target), up.name
                    if old and old != str(target):
                        C.remove_private(old)
                    st.rerun()  # redraw the sidebar (dataset name, results now stale)
        if ss.get("upload_error"):
            C.show_error(
                ss.upload_error,
                "Fix the archive and upload it again. The previously loaded dataset and results are kept.",
            )

    elif src == "Upload individual files":
        _assemble_from_files()
    else:
        base = C.data_root()
        if base is None:
            st.info(
                "Reading folders on the server is switched off. An administrator can allow it by starting the app "
                f"with the environment variable `{C.DATA_ROOT_ENV}` set to the folder that holds the datasets."
            )
        else:
            def _allowed(name: str) -> bool:
                try:
                    C.resolve_data_folder(name, base)
                except C.FolderAccessError:
                    return False
                return True

            found = sorted(p.parent.relative_to(base).as_posix() for p in base.glob("*/dataset.toml"))
            choices = [n for n in found if _allowed(n)]  # links leading out of the root are not listed
            if not choices:
                st.warning("No dataset folders (with dataset.toml) under the configured data root.")
            else:
                pick = st.selectbox("Dataset folder", choices, key="server_folder")
                if st.button("Load this folder", key="server_load"):
                    try:
                        folder = C.resolve_data_folder(pick, base)
                    except C.FolderAccessError as exc:
                        C.show_error(exc, "Pick one of the listed folders.")
                    else:
                        ss.ds_path, ss.ds_origin = str(folder), "server"
                        st.rerun()

    st.divider()

    # ------------------------------------------------------------------ what was understood
    ds, msg = C.current_dataset()
    if ds is None:
        st.warning(msg)
        st.stop()

    st.subheader(ds.name)
    if ss.ds_origin == "files" and ss.get("files_manifest"):
        with st.expander("The dataset.toml written for your files"):
            st.code(ss.files_manifest, language="toml")
    C.wait_for_inspection()
    try:
        summ = ds.summary()
    except Exception as exc:
        summ = {}
        C.show_error(f"The dataset summary could not be built: {exc}")

    g = ds.grid
    try:
        from rasterio.crs import CRS

        crs_txt = CRS.from_user_input(g.crs).to_string()
    except Exception:
        crs_txt = str(g.crs)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Grid", f"{g.width} × {g.height} px")
    c2.metric("Resolution", f"{g.res[0]:g} × {g.res[1]:g}")
    c3.metric("CRS", crs_txt)
    try:
        import numpy as np

        share = 100.0 * (1.0 - float(np.mean(ds.mask)))
        c4.metric("Outside study area", f"{share:.1f} %")
    except Exception:
        pass
    b = g.bounds
    st.caption(f"Extent (left, bottom, right, top): {b[0]:.1f}, {b[1]:.1f}, {b[2]:.1f}, {b[3]:.1f}")

    if summ:
        with st.expander("Everything the reader understood (dates, bands, units, nodata)", expanded=False):
            st.json(summ, expanded=1)

    # ------------------------------------------------------------------ problems
    try:
        problems = ds.check()
    except Exception as exc:
        problems = []
        C.show_error(f"The dataset check failed: {exc}")
    if problems:
        st.markdown("#### Problems found")
        order = {"error": 0, "warning": 1, "info": 2}
        for p in sorted(problems, key=lambda p: order.get(str(p.severity), 3)):
            where = f"**{p.file}**" + (f" ({p.role})" if getattr(p, "role", "") else "")
            text = f"{where}: {p.message}" + (f"  \n**Fix:** {p.fix}" if p.fix else "")
            {"error": st.error, "warning": st.warning}.get(str(p.severity), st.info)(text)
    else:
        st.success("No problems found in the dataset.")

    # ------------------------------------------------------------------ layers
    st.markdown("#### Layers")
    try:
        layers = list(ds.layers())
    except Exception as exc:
        layers = []
        C.show_error(f"The layers could not be listed: {exc}")


    def _is_classes(layer) -> bool:
        return str(getattr(layer, "kind", "")).lower() in ("categorical", "classes", "class", "landcover")


    def _colours_for(layer) -> dict[int, tuple[int, int, int]]:
        try:
            codes, classes, _ct = ds.landcover()
        except Exception:
            classes = {}
        out = {}
        palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                   (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
        items = classes.items() if isinstance(classes, dict) else enumerate(classes, 1)
        for i, (code, name) in enumerate(items):
            out[int(code)] = render.LANDCOVER_COLOURS.get(str(name).lower(), palette[i % len(palette)])
        if not out:
            out = {i: palette[i % len(palette)] for i in range(1, 11)}
        return out


    @st.cache_data(max_entries=256, show_spinner=False)
    def _layer_array(key: str, _layer) -> "np.ndarray":
        import numpy as np

        return np.asarray(_layer.read_aligned(), dtype=np.float64)


    def _layer_key(layer) -> str:
        try:
            h = ds.content_hash(layer.role)
        except Exception:
            h = C.file_sha(Path(layer.path)) if Path(str(layer.path)).exists() else str(layer.path)
        return f"{h}|{layer.role}|{layer.name}"


    @st.cache_data(max_entries=256, show_spinner=False)
    def _thumb(key: str, _layer, classes: bool, _colours) -> bytes:
        a = _layer_array(key, _layer)
        if classes:
            return render.thumbnail_png(a, kind="classes", colours=_colours)
        return render.thumbnail_png(a, cmap="viridis")


    if any(str(l.kind) != "table" for l in layers):
        st.dataframe(
            pd.DataFrame(
                [{"role": l.role, "name": l.name, "kind": l.kind, "file": Path(str(l.path)).name} for l in layers]
            ),
            hide_index=True,
            width="stretch",
        )
        ncol = 6
        cols = st.columns(ncol)
        rasters = [l for l in layers if str(l.kind) != "table"]
        for i, layer in enumerate(rasters):
            label = layer.role if layer.name == layer.role else f"{layer.role}: {layer.name}"
            with cols[i % ncol]:
                try:
                    png = _thumb(_layer_key(layer), layer, _is_classes(layer), _colours_for(layer))
                    st.image(png, caption=label, width="stretch")
                except Exception as exc:
                    st.caption(f"{label} — no preview: {exc}")

        # ------------------------------------------------------------ interactive map
        st.markdown("#### Map")
        names = [l.role if l.name == l.role else f"{l.role}: {l.name}" for l in rasters]
        pick = st.selectbox("Layer on the map", names, key="data_map_layer")
        layer = rasters[names.index(pick)]
        opacity = st.slider("Opacity", 0.0, 1.0, 0.8, 0.05, key="data_map_opacity")

        @st.cache_data(max_entries=64, show_spinner=False)
        def _overlay(key: str, _layer, classes: bool, _colours) -> tuple[bytes, tuple, str]:
            a = _layer_array(key, _layer)
            if classes:
                o = render.web_overlay(a, ds.grid, _layer.name, kind="classes", colours=_colours)
                leg = render.legend_classes(_layer.name, [(str(k), v) for k, v in _colours.items()])
            else:
                o = render.web_overlay(a, ds.grid, _layer.name)
                leg = render.legend_continuous(_layer.name, "viridis", o.meta["vmin"], o.meta["vmax"])
            return o.png, o.bounds, leg

        try:
            colours = _colours_for(layer)
            png, bounds, leg = _overlay(_layer_key(layer), layer, _is_classes(layer), colours)
            if _is_classes(layer):
                try:
                    _codes, classes, _ct = ds.landcover()
                    leg = render.legend_classes(
                        layer.name, [(str(classes.get(k, k)), v) for k, v in colours.items() if k in classes]
                    )
                except Exception:
                    pass
            ov = render.Overlay(layer.name, png, bounds, opacity=opacity)
            basemap = st.toggle("OpenStreetMap basemap (needs internet)", value=False, key="data_basemap")
            m = render.make_map([ov], basemap=basemap)
            from streamlit_folium import st_folium

            st_folium(m, height=480, use_container_width=True, returned_objects=[], key="data_map")
            C.legend(leg)
        except Exception as exc:
            C.show_error(f"The map of {layer.name} could not be drawn: {exc}")
    else:
        st.info("The dataset lists no raster layers.")


C.run_page(_page)
