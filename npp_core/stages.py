"""Stage implementations: glue between the dataset, the science modules and the output files.

Each function takes a :class:`npp_core.pipeline.Context`, writes its files
into the output folder (recording them with ``ctx.wrote``) and returns its
fragment of ``summary.json``. No science lives here: every formula is in the
module named for it (:mod:`estarfm`, :mod:`casa`, :mod:`drivers`,
:mod:`kriging`, :mod:`ahp`, :mod:`lcc`, :mod:`attribution`).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from .outputs import write_csv
from .pipeline import Context, StageError
from .raster import read_raster, write_raster

__all__ = ["STAGE_FUNCS"]


# ---------------------------------------------------------------- fusion
def stage_fusion(ctx: Context) -> dict[str, Any]:
    """ESTARFM series (or the ready fine series) → ``ndvi_fused.tif``, ``ndvi_monthly.tif``."""
    from . import estarfm

    ds, p = ctx.ds, ctx.params["estarfm"]
    grid = ds.grid
    if ds.npp_ready() is not None and ds.ndvi_series() is None and ds.ndvi_fine() is None:
        return {"fusion": {"source": "skipped: ready NPP supplied"}, "_message": "skipped: ready NPP supplied"}
    series = ds.ndvi_series()
    info: dict[str, Any]
    if series is not None:
        stack, dates = series
        info = {"source": "fine_series", "n_dates": len(dates)}
    else:
        fine, coarse = ds.ndvi_fine(), ds.ndvi_coarse()
        if fine is None or coarse is None:
            raise StageError(
                "fusion needs [ndvi] fine images and a coarse series (or a ready fine_series) in dataset.toml."
            )
        window = int(p["window"])
        stack, pairs = estarfm.fuse_series(
            fine[0],
            fine[1],
            coarse[0],
            coarse[1],
            window=window,
            classes=int(p["classes"]),
            valid_range=(-1.0, 1.0),
            max_pair_gap_days=int(p["max_pair_gap_days"]),
            extrapolate=bool(p["extrapolate"]),
            progress=lambda f, m="": ctx.progress(0.9 * f, m),
        )
        dates = list(coarse[1])
        stack = np.where(ds.mask[None], stack, np.nan)
        write_raster(ctx.path("ndvi_fused.tif"), stack, grid, band_names=[d.isoformat() for d in dates])
        ctx.wrote("ndvi_fused.tif")
        info = {"source": "estarfm", "n_dates": len(dates), "pairs": pairs}
    how = str(ds.manifest.get("ndvi", {}).get("composite", "max"))
    monthly, months = estarfm.monthly_composite(stack, dates, how=how)
    monthly = np.where(ds.mask[None], monthly, np.nan)
    write_raster(ctx.path("ndvi_monthly.tif"), monthly, grid, band_names=list(months))
    ctx.wrote("ndvi_monthly.tif")
    info.update(months=[months[0], months[-1]], n_months=len(months), composite=how)
    return {"fusion": info}


def execution_mode(ctx: Context, n_layers: int) -> str:
    """In-memory or chunked execution for a stage (``run.mode``, ``run.memory_gb``); recorded in the summary."""
    from .chunked import choose_mode

    mode, reason = choose_mode(ctx.ds.grid.shape, max(int(n_layers), 1), ctx.params)
    ctx.fragments.setdefault("_run", {})[ctx.stage] = {"mode": mode, "reason": reason}
    return mode


# ---------------------------------------------------------------- casa
def _whole_years(labels: list[str]) -> list[str]:
    years: dict[str, int] = {}
    for m in labels:
        years[m[:4]] = years.get(m[:4], 0) + 1
    return [y for y, n in years.items() if n == 12]


def stage_casa(ctx: Context) -> dict[str, Any]:
    """CASA monthly NPP → ``npp_monthly.tif``, ``npp_annual.tif``, ``npp_mean.tif`` + statistics."""
    from . import casa

    ds, p = ctx.ds, ctx.params["casa"]
    grid, mask = ds.grid, ds.mask
    codes, classes, casa_type = ds.landcover()
    ready = ds.npp_ready()
    info: dict[str, Any] = {}
    if ready is not None:
        annual, years = ready
        annual = np.where(mask[None], annual, np.nan)
        info["source"] = "ready NPP supplied"
    else:
        ndvi, months = ctx.read("ndvi_monthly.tif")
        months = [str(m) for m in months]
        clim = {}
        for var in ("temperature", "precipitation", "solar"):
            c = ds.climate(var)
            if c is None:
                raise StageError(f"CASA needs [climate] {var} in dataset.toml (monthly series).")
            clim[var] = dict(zip(c[1], c[0]))
        common = [m for m in months if all(m in clim[v] for v in clim)]
        years_ok = _whole_years(common)
        if not years_ok:
            raise StageError(
                f"NDVI months ({months[0]}..{months[-1]}) and climate months share no whole calendar year; "
                "supply climate for the same years as the NDVI series."
            )
        use = [m for m in common if m[:4] in years_ok]
        idx = [months.index(m) for m in use]
        nd = ndvi[idx]
        T = np.stack([clim["temperature"][m] for m in use])
        P = np.stack([clim["precipitation"][m] for m in use])
        S = np.stack([clim["solar"][m] for m in use])
        ctx.progress(0.1, "class parameters")
        eps_table = {k: float(v) * float(p["eps_scale"]) for k, v in p["eps_max"].items()}
        cp = casa.class_parameters(
            codes,
            classes,
            casa_type,
            eps_max_table=eps_table,
            ndvi_range=p["ndvi_range"],
            ndvi=nd,
            overrides=p.get("overrides") or None,
        )
        ctx.progress(0.2, "monthly NPP")
        npp_fn = casa.npp_monthly
        if execution_mode(ctx, 4 * len(use)) == "chunked":
            from .chunked import casa_chunked

            def npp_fn(*a: Any, **k: Any) -> np.ndarray:
                return np.asarray(casa_chunked(*a, chunk=int(ctx.params["run"]["chunk"]), **k).compute())
        npp = npp_fn(
            nd,
            T,
            P,
            S,
            cp["eps_max"],
            cp["ndvi_min"],
            cp["ndvi_max"],
            halving=bool(p["halving"]),
            teps2_coef=float(p["teps2_coef"]),
            fpar_alpha=float(p["fpar_alpha"]),
            w_clip=tuple(p["w_clip"]),
            pet_zero=str(p["pet_zero"]),
            cold_limit=float(p["cold_limit"]),
            sr_min=cp.get("sr_min"),
            sr_max=cp.get("sr_max"),
        )
        nonveg = mask & ~np.isfinite(cp["eps_max"])
        fill = 0.0 if p["nonveg"] == "zero" else np.nan
        npp = np.where(nonveg[None], fill, npp)
        npp = np.where(mask[None], npp, np.nan)
        write_raster(ctx.path("npp_monthly.tif"), npp, grid, band_names=use)
        ctx.wrote("npp_monthly.tif")
        ctx.progress(0.8, "annual sums")
        annual, valid_months = casa.annual(npp)
        years = [int(y) for y in years_ok]
        info.update(
            source="casa",
            months=[use[0], use[-1]],
            class_parameters=cp.get("table"),
            valid_months={"min": _nanint(np.nanmin(np.where(mask, valid_months, np.nan))),
                          "max": _nanint(np.nanmax(np.where(mask, valid_months, np.nan)))},
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels outside the study area
        mean = np.nanmean(annual, axis=0) if annual.shape[0] > 1 else annual[0]
    mean = np.where(mask, mean, np.nan)
    write_raster(ctx.path("npp_annual.tif"), annual, grid, band_names=[str(y) for y in years])
    write_raster(ctx.path("npp_mean.tif"), mean, grid, band_names=["npp_mean"], tags={"units": "gC m-2 yr-1"})
    ctx.wrote("npp_annual.tif", "npp_mean.tif")
    stats = casa.summary_stats(mean, codes, classes)
    stats["by_year"] = {str(y): float(np.nanmean(a)) for y, a in zip(years, annual)}
    validation: dict[str, Any] = {"plots": [], "by_class": {}}
    plots = ds.validation_plots()
    if plots:
        validation["plots"] = casa.validate_plots(mean, grid.transform, plots)
    ref = ds.reference_npp()
    if ref is not None:
        validation["by_class"] = casa.compare_reference(mean, ref, codes, classes)
    return {"npp": stats, "validation": validation, "casa": info}


def _nanint(v: float) -> int | None:
    return None if not np.isfinite(v) else int(v)


# ---------------------------------------------------------------- drivers
def stage_drivers(ctx: Context) -> dict[str, Any]:
    """Climate means, kriged soil, land degradation → ``drivers/<NAME>.tif``."""
    from . import drivers

    result = drivers.build_drivers(ctx.ds, ctx.params, progress=ctx.progress)
    grid = ctx.ds.grid
    for name, arr in result["layers"].items():
        rel = f"drivers/{name}.tif"
        write_raster(ctx.path(rel), arr, grid, band_names=[name])
        ctx.wrote(rel)
    for name, arr in result["variances"].items():
        rel = f"drivers/{name}_variance.tif"
        write_raster(ctx.path(rel), arr, grid, band_names=[f"{name} kriging variance"])
        ctx.wrote(rel)
    if "LD" in result["layers"]:
        write_raster(ctx.path("ld.tif"), result["layers"]["LD"], grid, band_names=["LD"])
        ctx.wrote("ld.tif")
    return {k: v for k, v in result.items() if k not in ("layers", "variances")}


def _driver_stack(ctx: Context) -> tuple[list[str], np.ndarray, dict[str, list[str]]]:
    """Driver names, stack (p, rows, cols) and categories from the drivers stage."""
    info = ctx.fragments.get("drivers", {}).get("drivers", {})
    if not info:
        raise StageError("no driver layers: the drivers stage did not run or produced nothing.")
    names = list(info)
    layers = [ctx.read(f"drivers/{n}.tif")[0][0] for n in names]
    cats: dict[str, list[str]] = {}
    for n in names:
        cats.setdefault(info[n]["category"], []).append(n)
    return names, np.stack(layers), cats


# ---------------------------------------------------------------- sampling
def stage_sampling(ctx: Context) -> dict[str, Any]:
    """Random sample points valid in every layer → ``samples.csv`` + Pearson r/p per driver."""
    from . import attribution

    ds, p = ctx.ds, ctx.params["sampling"]
    npp = ctx.read("npp_mean.tif")[0][0]
    names, stack, cats = _driver_stack(ctx)
    valid = ds.mask & np.isfinite(npp) & np.all(np.isfinite(stack), axis=0)
    rows, cols = attribution.sample_points(valid, n=int(p["n_points"]), seed=int(p["seed"]))
    x, y = ds.grid.xy()
    codes, classes, _ = ds.landcover()
    X = stack[:, rows, cols].T
    table: dict[str, Any] = {
        "x": x[cols],
        "y": y[rows],
        "row": rows,
        "col": cols,
        "landcover": [classes.get(int(c), str(int(c))) for c in codes[rows, cols]],
        "NPP": npp[rows, cols],
    }
    for j, n in enumerate(names):
        table[n] = X[:, j]
    write_csv(ctx.path("samples.csv"), table)
    ctx.wrote("samples.csv")
    pear = attribution.pearson(X, npp[rows, cols], names)
    return {"pearson": pear, "sampling": {"n_points": int(len(rows)), "n_valid_pixels": int(valid.sum()), "seed": int(p["seed"])}}


# ---------------------------------------------------------------- lcc
def stage_lcc(ctx: Context) -> dict[str, Any]:
    """Local correlation of NPP with every driver → ``lcc/<NAME>.tif`` + area shares."""
    from . import lcc

    p = ctx.params["lcc"]
    npp = ctx.read("npp_mean.tif")[0][0]
    names, stack, _ = _driver_stack(ctx)
    mask = ctx.ds.mask & np.isfinite(npp)
    mode = execution_mode(ctx, 2 + 3)
    shares = {}
    for j, n in enumerate(names):
        ctx.progress(j / len(names), f"LCC {n}")
        drv = np.where(mask, stack[j], np.nan)
        yy = np.where(mask, npp, np.nan)
        if mode == "chunked":
            from .chunked import lcc_chunked

            rpn = np.asarray(lcc_chunked(drv, yy, int(p["window"]), int(p["min_valid"]),
                                         chunk=int(ctx.params["run"]["chunk"])).compute())
            r, pv, cnt = rpn[0], rpn[1], rpn[2]
        else:
            r, pv, cnt = lcc.local_correlation(drv, yy, int(p["window"]), min_valid=int(p["min_valid"]))
        rel = f"lcc/{n}.tif"
        write_raster(ctx.path(rel), np.stack([r, pv, cnt.astype(float)]), ctx.ds.grid, band_names=["r", "p", "n"])
        ctx.wrote(rel)
        shares[n] = lcc.area_shares(r, pv, mask)
    return {"lcc": shares, "_message": f"{mode} execution"}


# ---------------------------------------------------------------- attribution
#: Pixels (random, seeded) on which the seed-to-seed noise floor of RF_all is estimated.
NOISE_PIXELS = 20_000

def _read_samples(ctx: Context, names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import csv

    with open(ctx.out / "samples.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    X = np.array([[float(r[n]) for n in names] for r in rows])
    y = np.array([float(r["NPP"]) for r in rows])
    rr = np.array([int(r["row"]) for r in rows])
    cc = np.array([int(r["col"]) for r in rows])
    return X, y, rr, cc


def stage_attribution(ctx: Context) -> dict[str, Any]:
    """RF importance, model skill and factorial experiments → ``actcon.tif``, ``relcon.tif``."""
    from . import attribution

    p = ctx.params["rf"]
    names, stack, cats = _driver_stack(ctx)
    categories = _categories(ctx, cats)
    X, y, rr, cc = _read_samples(ctx, names)
    n_trees, seed = int(p["n_trees"]), int(p["seed"])
    valid = ctx.ds.mask & np.all(np.isfinite(stack), axis=0)
    ctx.progress(0.05, "factorial experiments")
    fac = attribution.factorial(
        X, y, stack[:, valid].T, names, categories, n_trees=n_trees, seed=seed, keep_model=True, noise_pixels=NOISE_PIXELS
    )
    ctx.progress(0.6, "importance")
    imp = attribution.importance(
        X, y, names, measure=p["importance"], n_trees=n_trees, seed=seed, categories=categories, model=fac.pop("model_all")
    )
    ctx.progress(0.8, "spatial block cross-validation")
    models = fac["models"]
    models["all"]["cv_r2"] = attribution.block_cv_r2(X, y, rr, cc, blocks=int(p["cv_blocks"]), n_trees=n_trees, seed=seed)
    cat_names = list(fac["categories"])
    act = _to_raster(fac["actcon"], valid)
    rel = _to_raster(fac["relcon"], valid)
    write_raster(ctx.path("actcon.tif"), act, ctx.ds.grid, band_names=cat_names)
    write_raster(ctx.path("relcon.tif"), rel, ctx.ds.grid, band_names=cat_names)
    ctx.wrote("actcon.tif", "relcon.tif")
    return {
        "importance": imp,
        "models": models,
        "relcon_mean": attribution.relcon_mean(rel, cat_names, valid & ~_to_raster(fac["undetermined"][None], valid, False)[0]),
        "attribution": {
            "categories": cat_names,
            "noise_floor": fac["noise_floor"],
            "empty_categories": fac.get("empty_categories", []),
            "n_trees": n_trees,
            "seed": seed,
        },
    }


def _categories(ctx: Context, cats: dict[str, list[str]]) -> dict[str, list[str]]:
    order = [c for c in ctx.params["categories"] if c in cats] + [c for c in cats if c not in ctx.params["categories"]]
    return {c: cats[c] for c in order}


def _to_raster(values: np.ndarray, valid: np.ndarray, fill: Any = np.nan) -> np.ndarray:
    """Scatter (k, n_valid) pixel values back onto (k, rows, cols)."""
    values = np.asarray(values)
    out = np.full((values.shape[0],) + valid.shape, fill, dtype=values.dtype if fill is False else float)
    out[:, valid] = values
    return out


# ---------------------------------------------------------------- ensemble
def stage_ensemble(ctx: Context) -> dict[str, Any]:
    """Repeat the factorial attribution over seeds and/or sample draws (``ensemble.members`` > 0).

    Stores every member's RelCon and undetermined mask (``ensemble/relcon.tif``,
    bands member-major) so the dominance stage can reclassify all members for
    any threshold without refitting.
    """
    from . import attribution

    ep = ctx.params["ensemble"]
    k_members = int(ep["members"])
    if k_members <= 0:
        return {"ensemble": {"members": 0}, "_message": "single run (ensemble.members = 0)"}
    vary = str(ep["vary"])
    rp, sp = ctx.params["rf"], ctx.params["sampling"]
    names, stack, cats = _driver_stack(ctx)
    categories = _categories(ctx, cats)
    npp = ctx.read("npp_mean.tif")[0][0]
    valid_all = ctx.ds.mask & np.isfinite(npp) & np.all(np.isfinite(stack), axis=0)
    valid = ctx.ds.mask & np.all(np.isfinite(stack), axis=0)
    X_all = stack[:, valid].T
    k_cats = sum(1 for c in categories if categories[c])
    bands = np.full((k_members * (k_cats + 1),) + valid.shape, np.nan, dtype=np.float32)
    band_names: list[str] = []
    members: list[dict[str, Any]] = []
    cat_names: list[str] = []
    for i in range(k_members):
        ctx.progress(i / k_members, f"member {i + 1}/{k_members}")
        rf_seed = int(rp["seed"]) + (1000 * i if vary in ("seed", "both") else 0)
        s_seed = int(sp["seed"]) + (i if vary in ("sample", "both") else 0)
        rows, cols = attribution.sample_points(valid_all, n=int(sp["n_points"]), seed=s_seed)
        X = stack[:, rows, cols].T
        y = npp[rows, cols]
        fac = attribution.factorial(X, y, X_all, names, categories, n_trees=int(rp["n_trees"]), seed=rf_seed,
                                    keep_model=True, noise_pixels=NOISE_PIXELS)
        imp = attribution.importance(
            X, y, names, measure=rp["importance"], n_trees=int(rp["n_trees"]), seed=rf_seed, categories=categories,
            model=fac.pop("model_all"),
        )
        cat_names = list(fac["categories"])
        rel = _to_raster(fac["relcon"], valid)
        und = np.zeros(valid.shape, bool)
        und[valid] = fac["undetermined"]
        base = i * (len(cat_names) + 1)
        for g, c in enumerate(cat_names):
            bands[base + g] = rel[g]
            band_names.append(f"m{i:03d}_{c}")
        bands[base + len(cat_names)] = np.where(valid, und.astype(np.float32), np.nan)
        band_names.append(f"m{i:03d}_undetermined")
        members.append({
            "rf_seed": rf_seed,
            "sample_seed": s_seed,
            "importance_categories": imp.get("categories", {}),
            "relcon_mean": attribution.relcon_mean(rel, cat_names, valid & ~und),
        })
        del fac, rel
    write_raster(ctx.path("ensemble/relcon.tif"), bands[: len(band_names)], ctx.ds.grid, band_names=band_names)
    ctx.wrote("ensemble/relcon.tif")
    return {"ensemble": {"members": k_members, "vary": vary, "categories": cat_names, "member_runs": members}}


# ---------------------------------------------------------------- dominance
def class_colours(labels: dict[int, str]) -> dict[int, tuple[int, int, int, int]]:
    """GeoTIFF colour table of dominant-class codes: the dashboard's palette, code 0 transparent."""
    from .render import dominant_colours

    out: dict[int, tuple[int, int, int, int]] = {0: (0, 0, 0, 0)}
    for code, rgb in dominant_colours(labels).items():
        out[int(code)] = (*rgb, 255)
    return out


def stage_dominance(ctx: Context) -> dict[str, Any]:
    """Dominant-driver classes by the threshold rule → ``dominant.tif``, ``rgb.tif``;
    with an ensemble also the modal class and ``dominant_agreement.tif``."""
    from . import attribution
    from .ensemble import EnsembleReducer

    thr = float(ctx.params["dominance"]["threshold"])
    info = ctx.fragments.get("attribution", {}).get("attribution", {})
    cat_names = list(info.get("categories", []))
    rel, _ = ctx.read("relcon.tif")
    act, _ = ctx.read("actcon.tif")
    valid = np.all(np.isfinite(act), axis=0)
    und = attribution.undetermined_mask(act, info.get("noise_floor"))
    codes, labels = attribution.dominant_classes(rel, cat_names, threshold=thr, undetermined_mask=und)
    codes = np.where(valid, codes, 0).astype(np.uint8)
    write_raster(ctx.path("dominant.tif"), codes, ctx.ds.grid, dtype="uint8", nodata=0,
                 colormap=class_colours(labels), band_names=["dominant"])
    ctx.wrote("dominant.tif")
    if {"S", "M", "C"}.issubset(cat_names):
        rgb = attribution.rgb_composite(rel, ("S", "M", "C"), cat_names)
        write_raster(ctx.path("rgb.tif"), np.where(valid[None], rgb, 0), ctx.ds.grid, dtype="uint8",
                     band_names=["R soil", "G mining", "B climate"], mask=valid)
        ctx.wrote("rgb.tif")
    shares = attribution.class_shares(codes, labels, valid)
    out: dict[str, Any] = {"dominant": {"threshold": thr, "codes": {str(k): v for k, v in labels.items()}, "area_share": shares}}
    ens = ctx.fragments.get("ensemble", {}).get("ensemble", {})
    if not ens.get("members", 0):
        for stale in ("dominant_modal.tif", "dominant_agreement.tif", "ensemble/relcon.tif", "ensemble/relcon_mean.tif"):
            (ctx.out / stale).unlink(missing_ok=True)
    else:
        k = len(ens["categories"])
        red = EnsembleReducer(max(labels) + 1, codes.shape, list(ens["categories"]))
        member_file = ctx.out / "ensemble/relcon.tif"
        for i, mrun in enumerate(ens["member_runs"]):
            block = read_raster(member_file, bands=list(range(i * (k + 1) + 1, (i + 1) * (k + 1) + 1)))[0]
            mrel, mund = block[:k], block[k] == 1
            mcodes, _ = attribution.dominant_classes(mrel, ens["categories"], threshold=thr, undetermined_mask=mund)
            mcodes = np.where(valid, mcodes, 0).astype(np.uint8)
            sc = {f"share.{lab}": v for lab, v in attribution.class_shares(mcodes, labels, valid).items()}
            sc.update({f"relcon_mean.{c}": v for c, v in mrun["relcon_mean"].items()})
            sc.update({f"importance.{c}": v for c, v in mrun["importance_categories"].items()})
            red.add(mcodes, mrel, sc)
        mode, agreement = red.modal()
        write_raster(ctx.path("ensemble/relcon_mean.tif"), np.where(valid[None], red.relcon_mean(), np.nan),
                     ctx.ds.grid, band_names=list(ens["categories"]))
        ctx.wrote("ensemble/relcon_mean.tif")
        write_raster(ctx.path("dominant_modal.tif"), mode, ctx.ds.grid, dtype="uint8", nodata=0,
                     colormap=class_colours(labels), band_names=["modal dominant class"])
        write_raster(ctx.path("dominant_agreement.tif"), np.where(valid, agreement, np.nan), ctx.ds.grid,
                     band_names=["agreement"])
        ctx.wrote("dominant_modal.tif", "dominant_agreement.tif")
        iv = red.intervals()
        out["ensemble"] = {
            **ens,
            "mean_agreement": float(np.nanmean(np.where(valid, agreement, np.nan))),
            "modal_area_share": attribution.class_shares(mode, labels, valid),
            "intervals": iv,
        }
    return out


STAGE_FUNCS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "fusion": stage_fusion,
    "casa": stage_casa,
    "drivers": stage_drivers,
    "sampling": stage_sampling,
    "lcc": stage_lcc,
    "attribution": stage_attribution,
    "ensemble": stage_ensemble,
    "dominance": stage_dominance,
}
