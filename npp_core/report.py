"""Charts and the self-contained offline HTML report of a run.

The chart builders return plotly figures from ``summary.json`` fragments and
are shared by the dashboard's Explore page and the report. The report is one
HTML file: maps as base64 PNG, plotly.js inlined once, tables as HTML; it
opens from disk without a network.
"""
from __future__ import annotations

import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from npp_core import render
from npp_core.raster import read_raster

__all__ = [
    "fig_npp_histogram",
    "fig_pearson",
    "fig_importance",
    "fig_lcc_shares",
    "fig_relcon_means",
    "fig_class_shares",
    "fig_validation",
    "fig_timeseries",
    "npp_class_table",
    "pearson_table",
    "build_report",
    "LCC_CLASSES",
]

#: LCC significance classes in summary["lcc"][driver], in display order, with colours.
LCC_CLASSES: list[tuple[str, str, str]] = [
    ("pos_p01", "positive, p < 0.01", "#b2182b"),
    ("pos_p05", "positive, p < 0.05", "#ef8a62"),
    ("insignificant", "not significant", "#d9d9d9"),
    ("neg_p05", "negative, p < 0.05", "#67a9cf"),
    ("neg_p01", "negative, p < 0.01", "#2166ac"),
]
CATEGORY_COLOURS = {"C": "#4285f4", "S": "#db4437", "M": "#0f9d58"}


def _f(v: Any) -> float:
    """float, with None / non-numbers as NaN (summary values may be null)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _go():
    import plotly.graph_objects as go

    return go


def _layout(fig: Any, title: str, height: int = 340) -> Any:
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white")
    return fig


def fig_npp_histogram(npp_mean: np.ndarray, bins: int = 40) -> Any:
    """Histogram of the finite pixels of the mean annual NPP (gC m⁻² yr⁻¹)."""
    go = _go()
    v = np.asarray(npp_mean, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    fig = go.Figure(go.Histogram(x=v, nbinsx=bins, marker_color="#2e7d32"))
    fig.update_xaxes(title="NPP (gC m⁻² yr⁻¹)")
    fig.update_yaxes(title="pixels")
    return _layout(fig, "Mean annual NPP")


def fig_timeseries(labels: list[str], values: list[float], title: str = "NPP at the clicked pixel") -> Any:
    """Line chart of one pixel's NPP series."""
    go = _go()
    fig = go.Figure(go.Scatter(x=list(labels), y=list(values), mode="lines+markers", line_color="#2e7d32"))
    fig.update_yaxes(title="NPP (gC m⁻²)")
    return _layout(fig, title, 280)


def fig_pearson(pearson: Mapping[str, Mapping[str, float]]) -> Any:
    """Bar chart of Pearson r per driver, darker when p < 0.05."""
    go = _go()
    names = list(pearson)
    r = [_f(pearson[n].get("r", np.nan)) for n in names]
    p = [_f(pearson[n].get("p", np.nan)) for n in names]
    colours = ["#1b5e20" if (pi < 0.05) else "#a5d6a7" for pi in p]  # NaN p: light
    fig = go.Figure(go.Bar(x=names, y=r, marker_color=colours, customdata=p,
                           hovertemplate="%{x}: r = %{y:.3f}, p = %{customdata:.3g}<extra></extra>"))
    fig.update_yaxes(title="Pearson r with NPP", range=[-1, 1])
    return _layout(fig, "Pearson correlation (dark: p < 0.05)")


def fig_importance(importance: Mapping[str, Any], categories: Mapping[str, Sequence[str]] | None = None) -> Any:
    """Driver importance bars coloured by category, plus category totals.

    ``categories`` (category → driver names, as in the settings) colours each driver.
    """
    go = _go()
    from plotly.subplots import make_subplots

    drivers = importance.get("drivers", {}) or {}
    cats = importance.get("categories", {}) or {}
    members = categories or importance.get("members", {}) or {}
    cat_of = {d: c for c, ds in members.items() for d in ds} if members else {}
    fig = make_subplots(rows=1, cols=2, column_widths=[0.7, 0.3], subplot_titles=("drivers", "categories"))
    names = sorted(drivers, key=lambda d: -_f(drivers[d]))
    fig.add_bar(x=names, y=[_f(drivers[d]) for d in names], row=1, col=1, showlegend=False,
                marker_color=[CATEGORY_COLOURS.get(cat_of.get(d, ""), "#757575") for d in names])
    fig.add_bar(x=list(cats), y=[_f(v) for v in cats.values()], row=1, col=2, showlegend=False,
                marker_color=[CATEGORY_COLOURS.get(c, "#757575") for c in cats])
    fig.update_yaxes(title=f"importance (%, {importance.get('measure', '')})", row=1, col=1)
    return _layout(fig, "Random-forest importance")


def fig_lcc_shares(lcc: Mapping[str, Mapping[str, float]]) -> Any:
    """Stacked bars of LCC significance-class area shares (%) per driver."""
    go = _go()
    names = list(lcc)
    fig = go.Figure()
    for key, label, colour in LCC_CLASSES:
        fig.add_bar(x=names, y=[_f(lcc[n].get(key, 0.0)) for n in names], name=label, marker_color=colour)
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title="share of defined pixels (%)", range=[0, 100])
    return _layout(fig, "Local correlation: area shares")


def fig_relcon_means(relcon_mean: Mapping[str, float]) -> Any:
    """Bars of the mean relative contribution (%) of each category."""
    go = _go()
    cats = list(relcon_mean)
    fig = go.Figure(go.Bar(x=cats, y=[_f(relcon_mean[c]) for c in cats],
                           marker_color=[CATEGORY_COLOURS.get(c, "#757575") for c in cats]))
    fig.update_yaxes(title="mean RelCon (%)")
    return _layout(fig, "Mean relative contribution")


def fig_class_shares(area_share: Mapping[str, float]) -> Any:
    """Bars of the dominant-driver class area shares (%)."""
    go = _go()
    labels = list(area_share)
    pal = render.dominant_colours(dict(enumerate(labels, 1)))
    colours = ["rgb(%d,%d,%d)" % pal.get(i, (150, 150, 150)) for i in range(1, len(labels) + 1)]
    fig = go.Figure(go.Bar(x=labels, y=[_f(area_share[l]) for l in labels], marker_color=colours))
    fig.update_yaxes(title="area share (%)")
    return _layout(fig, "Dominant-driver classes")


def fig_response(
    rows: Sequence[Mapping[str, Any]], x: str, columns: Sequence[str], *, title: str, x_title: str, y_title: str
) -> Any:
    """Response curves of a sensitivity sweep: one line per column against the swept setting.

    Parameters
    ----------
    rows : sequence of dict
        One per sweep point (``npp_core.sensitivity`` rows), in sweep order.
    x : str
        Column holding the setting's value (numbers give a numeric axis, anything else a categorical one).
    columns : sequence of str
        Metric columns to draw, e.g. ``["share.C", "share.S"]``; the part after the first "." names the line.
    title, x_title, y_title : str
    """
    go = _go()
    xs = [r.get(x) for r in rows]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
    xv = [float(v) for v in xs] if numeric else [str(v) for v in xs]
    fig = go.Figure()
    shares = [c.split(".", 1)[1] for c in columns if c.startswith(("share.", "modal_share."))]
    pal = render.dominant_colours(dict(enumerate(shares, 1)), [s for s in shares if len(s) == 1] or ["C", "S", "M"])
    share_rgb = {lab: pal.get(i) for i, lab in enumerate(shares, 1)}
    for c in columns:
        name = c.split(".", 1)[1] if "." in c else c
        colour = CATEGORY_COLOURS.get(name)
        if colour is None and share_rgb.get(name):
            colour = "rgb(%d,%d,%d)" % share_rgb[name]
        fig.add_scatter(x=xv, y=[_f(r.get(c)) for r in rows], mode="lines+markers", name=name,
                        line_color=colour)
    fig.update_xaxes(title=x_title, type="linear" if numeric else "category")
    fig.update_yaxes(title=y_title)
    return _layout(fig, title)


def fig_grid(table: np.ndarray, values1: Sequence[Any], values2: Sequence[Any], *, title: str,
             x_title: str, y_title: str, z_title: str) -> Any:
    """Heat map of one metric over a 2-setting grid (``table`` shape (len(values1), len(values2)))."""
    go = _go()
    fig = go.Figure(go.Heatmap(z=np.asarray(table, dtype=float).tolist(), x=[str(v) for v in values2],
                               y=[str(v) for v in values1], colorscale="Viridis", colorbar=dict(title=z_title),
                               text=np.round(np.asarray(table, dtype=float), 3).astype(str).tolist(),
                               texttemplate="%{text}"))
    fig.update_xaxes(title=x_title, type="category")
    fig.update_yaxes(title=y_title, type="category")
    return _layout(fig, title, height=360)


def fig_validation(plots: list[Mapping[str, Any]]) -> Any:
    """Measured vs simulated NPP at validation plots with the 1:1 line."""
    go = _go()
    m = [_f(p.get("measured", np.nan)) for p in plots]
    s = [_f(p.get("simulated", np.nan)) for p in plots]
    fin = [v for v in m + s if np.isfinite(v)]
    lo, hi = (min(fin), max(fin)) if fin else (0, 1)
    fig = go.Figure()
    fig.add_scatter(x=m, y=s, mode="markers", name="plots", text=[str(p.get("id", "")) for p in plots])
    fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="1:1", line=dict(dash="dash", color="#888"))
    fig.update_xaxes(title="measured (gC m⁻² yr⁻¹)")
    fig.update_yaxes(title="simulated (gC m⁻² yr⁻¹)")
    return _layout(fig, "Validation plots")


def npp_class_table(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows (class, simulated mean NPP, reference NPP) from the summary."""
    by_class = (summary.get("npp") or {}).get("by_class") or {}
    ref = (summary.get("validation") or {}).get("by_class") or {}
    rows = []
    for c in sorted(set(by_class) | set(ref)):
        v = by_class.get(c)
        sim = v.get("mean") if isinstance(v, Mapping) else v
        r = ref.get(c, {})
        rows.append({
            "class": c,
            "mean NPP (gC m⁻² yr⁻¹)": None if sim is None else _f(sim),
            "reference NPP": r.get("reference") if isinstance(r, Mapping) else None,
        })
    return rows


def pearson_table(pearson: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """Rows (driver, r, p) of the Pearson results."""
    return [{"driver": d, "r": _f(v.get("r", np.nan)), "p": _f(v.get("p", np.nan))} for d, v in pearson.items()]


# --------------------------------------------------------------------------- report


def _table_html(rows: list[Mapping[str, Any]]) -> str:
    if not rows:
        return "<p><i>none</i></p>"
    cols = list(rows[0])

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "–" if not np.isfinite(v) else f"{v:.4g}"
        return html.escape("–" if v is None else str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{render.data_url(png)}"/>'


def _map_block(path: Path, title: str, *, kind: str = "continuous", cmap: str = "viridis",
               colours: Mapping[int, tuple[int, int, int]] | None = None, legend: str = "", unit: str = "",
               max_size: int = 480) -> str:
    data, _grid, _dates = read_raster(path)
    if kind == "rgb":
        png = render.thumbnail_png(data[:3], kind="rgb", max_size=max_size)
    elif kind == "classes":
        png = render.thumbnail_png(data[0], kind="classes", colours=colours, max_size=max_size)
    else:
        lo, hi = render.robust_range(data[0])
        png = render.thumbnail_png(data[0], cmap=cmap, max_size=max_size)
        legend = legend or render.legend_continuous(title, cmap, lo, hi, unit)
    return f'<figure><figcaption>{html.escape(title)}</figcaption>{_img(png, title)}{legend}</figure>'


def build_report(out_dir: Path | str, summary: Mapping[str, Any] | None = None, *, title: str = "NPP Driver Explorer report") -> str:
    """A self-contained HTML report of a run's outputs.

    Parameters
    ----------
    out_dir : path-like
        The run's output folder (``summary.json`` and rasters as written by the pipeline).
    summary : mapping, optional
        Default: ``out_dir/summary.json``.
    title : str

    Returns
    -------
    str
        HTML with plotly.js inlined once, maps as base64 PNG and no external URL.
    """
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    out = Path(out_dir)
    if summary is None:
        try:
            summary = json.loads((out / "summary.json").read_text())
        except (OSError, ValueError):
            summary = {}
    parts: list[str] = []
    name = (summary.get("inputs") or {}).get("dataset", "")
    parts.append(f"<h1>{html.escape(title)}</h1>")
    parts.append(f"<p>Dataset: <b>{html.escape(str(name))}</b> · generated {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC</p>")

    figs: list[tuple[str, Any]] = []
    maps: list[str] = []
    if (out / "npp_mean.tif").exists():
        maps.append(_map_block(out / "npp_mean.tif", "Mean annual NPP", cmap="YlGn", unit="gC m⁻² yr⁻¹"))
        data, _g, _d = read_raster(out / "npp_mean.tif")
        figs.append(("NPP", fig_npp_histogram(data[0])))
    if (out / "rgb.tif").exists():
        maps.append(_map_block(out / "rgb.tif", "RelCon composite (R = S, G = M, B = C)", kind="rgb",
                               legend=render.ternary_legend_svg(120)))
    dom = summary.get("dominant") or {}
    if (out / "dominant.tif").exists() and dom.get("codes"):
        codes = {int(k): v for k, v in dom["codes"].items()}
        colours = render.dominant_colours(codes)
        leg = render.legend_classes("Dominant driver", [(codes[k], c) for k, c in colours.items()], dom.get("area_share"))
        maps.append(_map_block(out / "dominant.tif", f"Dominant driver (threshold {dom.get('threshold', '')} %)",
                               kind="classes", colours=colours, legend=leg))
    drv = out / "drivers"
    if drv.is_dir():
        for p in sorted(drv.glob("*.tif")):
            if not p.stem.endswith("_variance"):
                maps.append(_map_block(p, f"Driver {p.stem}", cmap="viridis", max_size=240))

    if summary.get("pearson"):
        figs.append(("Pearson", fig_pearson(summary["pearson"])))
    if summary.get("lcc"):
        figs.append(("LCC", fig_lcc_shares(summary["lcc"])))
    if summary.get("importance"):
        figs.append(("Importance", fig_importance(summary["importance"], (summary.get("params") or {}).get("categories"))))
    if summary.get("relcon_mean"):
        figs.append(("RelCon", fig_relcon_means(summary["relcon_mean"])))
    if dom.get("area_share"):
        figs.append(("Classes", fig_class_shares(dom["area_share"])))
    plots = (summary.get("validation") or {}).get("plots") or []
    if plots:
        figs.append(("Validation", fig_validation(plots)))

    parts.append("<h2>Maps</h2>")
    parts.append('<div class="maps">' + ("".join(maps) or "<p><i>No maps in this run.</i></p>") + "</div>")
    parts.append("<h2>Charts</h2>")
    for _name, f in figs:
        parts.append(pio.to_html(f, full_html=False, include_plotlyjs=False, config={"displaylogo": False}))
    parts.append("<h2>Tables</h2>")
    parts.append("<h3>NPP by land-cover class</h3>" + _table_html(npp_class_table(summary)))
    if summary.get("npp"):
        s = summary["npp"]
        parts.append(_table_html([{k: s.get(k) for k in ("mean", "sd", "cv", "min", "max") if k in s}]))
    if summary.get("pearson"):
        parts.append("<h3>Pearson correlation</h3>" + _table_html(pearson_table(summary["pearson"])))
    if summary.get("models"):
        parts.append("<h3>Random-forest models</h3>" + _table_html(
            [{"model": k, **{kk: vv for kk, vv in v.items()}} for k, v in summary["models"].items()]))
    if summary.get("kriging"):
        parts.append("<h3>Kriging</h3>" + _table_html(
            [{"property": k, **{kk: v.get(kk) for kk in ("model", "nugget", "psill", "range", "loo_rmse", "msdr")}}
             for k, v in summary["kriging"].items() if isinstance(v, Mapping)]))
    if summary.get("ahp"):
        a = summary["ahp"]
        parts.append(f"<h3>AHP (CR = {_f(a.get('cr', np.nan)):.3f})</h3>" + _table_html(
            [{"indicator": k, "weight": _f(w)} for k, w in (a.get("weights") or {}).items()]))
    stages = summary.get("stages") or {}
    if stages:
        parts.append("<h3>Stages</h3>" + _table_html([{"stage": k, **v} for k, v in stages.items()]))
    parts.append("<h3>Settings</h3><pre>" + html.escape(json.dumps(summary.get("params", {}), indent=1)) + "</pre>")

    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "th{background:#f1f5f1}.maps{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}"
        "figure img{image-rendering:pixelated;border:1px solid #ccc;max-width:100%}"
    )
    plotly_js = get_plotlyjs() if figs else ""
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title>"
        f"<style>{style}</style>"
        + (f"<script type='text/javascript'>{plotly_js}</script>" if plotly_js else "")
        + "</head><body>" + "\n".join(parts) + "</body></html>"
    )
