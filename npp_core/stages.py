"""Stage implementations: glue between the dataset, the science modules and the output files.

Each function takes a :class:`npp_core.pipeline.Context`, writes its files
into the output folder (recording them with ``ctx.wrote``) and returns its
fragment of ``summary.json``. No science lives here: every formula is in the
module named for it (:mod:`estarfm`, :mod:`casa`, :mod:`drivers`,
:mod:`kriging`, :mod:`ahp`, :mod:`lcc`, :mod:`attribution`).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np

from .outputs import write_csv
from .pipeline import Context, StageError
from .raster import read_raster, write_raster


def _bounded_cache(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a chunked stage with GDAL's block cache of this process bounded (:func:`chunked.bounded_gdal_cache`)."""
    import functools

    @functools.wraps(fn)
    def run(*args: Any, **kw: Any) -> Any:
        from .chunked import bounded_gdal_cache

        with bounded_gdal_cache():
            return fn(*args, **kw)

    return run

__all__ = ["STAGE_FUNCS"]


# ---------------------------------------------------------------- fusion
def stage_fusion(ctx: Context) -> dict[str, Any]:
    """ESTARFM series (or the ready fine series) → ``ndvi_fused.tif``, ``ndvi_monthly.tif``."""
    from . import estarfm

    ds, p = ctx.ds, ctx.params["estarfm"]
    grid = ds.grid
    roles = getattr(ds, "_roles", {})
    n_dates = _n_bands(ds, "ndvi.fine_series") or _n_bands(ds, "ndvi.coarse")
    if execution_mode(ctx, 2 * max(n_dates, 1)) == "chunked":
        if "npp.annual" in roles and "ndvi.fine_series" not in roles and "ndvi.fine" not in roles:
            return {"fusion": {"source": "skipped: ready NPP supplied"}, "_message": "skipped: ready NPP supplied"}
        frag = _fusion_chunked(ctx)
        if frag is not None:
            return frag
        ctx.fragments["_run"][ctx.stage] = {
            "mode": "memory", "reason": "no NDVI input to fuse chunked: the in-memory path reports what is missing"}
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


def _n_bands(ds: Any, role: str) -> int:
    """Bands of a raster role from the file headers (no pixel read); 0 when absent."""
    import rasterio

    n = 0
    for e in (getattr(ds, "_roles", {}) or {}).get(role, []):
        try:
            with rasterio.open(ds.root / e.path) as src:
                n += src.count
        except Exception:
            continue
    return n


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


def _shared_months(months: list[str], climate_months: list[set[str]]) -> list[str]:
    """NDVI months ("YYYY-MM") of the whole calendar years every climate variable also covers."""
    common = [m for m in months if all(m in c for c in climate_months)]
    years_ok = _whole_years(common)
    if not years_ok:
        raise StageError(
            f"NDVI months ({months[0]}..{months[-1]}) and climate months share no whole calendar year; "
            "supply climate for the same years as the NDVI series."
        )
    return [m for m in common if m[:4] in years_ok]


def stage_casa(ctx: Context) -> dict[str, Any]:
    """CASA monthly NPP → ``npp_monthly.tif``, ``npp_annual.tif``, ``npp_mean.tif`` + statistics."""
    from . import casa

    ds, p = ctx.ds, ctx.params["casa"]
    n_months = _n_bands(ds, "climate.temperature") or 12
    if execution_mode(ctx, 4 * n_months) == "chunked":
        return _casa_chunked(ctx)
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
        use = _shared_months(months, [set(clim[v]) for v in clim])
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
        npp = casa.npp_monthly(
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
        years = sorted({int(m[:4]) for m in use})
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

    if execution_mode(ctx, 3 * (_n_bands(ctx.ds, "climate.temperature") or 12)) == "chunked":
        return _drivers_chunked(ctx)
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
    if execution_mode(ctx, 2 + len(ctx.fragments.get("drivers", {}).get("drivers", {}))) == "chunked":
        return _sampling_chunked(ctx)
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
    n_drv = len(ctx.fragments.get("drivers", {}).get("drivers", {}))
    mode = execution_mode(ctx, 2 + 3 + n_drv)
    if mode == "chunked":
        return _lcc_chunked_stage(ctx)
    npp = ctx.read("npp_mean.tif")[0][0]
    names, stack, _ = _driver_stack(ctx)
    mask = ctx.ds.mask & np.isfinite(npp)
    shares = {}
    for j, n in enumerate(names):
        ctx.progress(j / len(names), f"LCC {n}")
        drv = np.where(mask, stack[j], np.nan)
        yy = np.where(mask, npp, np.nan)
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
    if execution_mode(ctx, 8 + 2 * len(ctx.fragments.get("drivers", {}).get("drivers", {}))) == "chunked":
        return _attribution_chunked(ctx)
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
    any threshold without refitting. Chunked (:func:`_ensemble_chunked`): the
    members are fitted here on the same sample points and predicted together in
    one pass over the driver blocks.
    """
    from . import attribution

    ep = ctx.params["ensemble"]
    k_members = int(ep["members"])
    if k_members <= 0:
        return {"ensemble": {"members": 0}, "_message": "single run (ensemble.members = 0)"}
    if execution_mode(ctx, 4 * k_members + 2 * len(ctx.fragments.get("drivers", {}).get("drivers", {}))) == "chunked":
        return _ensemble_chunked(ctx, k_members)
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
        rf_seed, s_seed = _member_seeds(ctx, i)
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


def _member_seeds(ctx: Context, i: int) -> tuple[int, int]:
    """(rf_seed, sample_seed) of ensemble member ``i`` (0-based) under ``ensemble.vary``."""
    vary = str(ctx.params["ensemble"]["vary"])
    rf_seed = int(ctx.params["rf"]["seed"]) + (1000 * i if vary in ("seed", "both") else 0)
    s_seed = int(ctx.params["sampling"]["seed"]) + (i if vary in ("sample", "both") else 0)
    return rf_seed, s_seed


#: Points (sample + noise-floor pixels) of the members whose driver values are read in one pass.
_ENSEMBLE_POINTS_PER_READ = 1_000_000


def _ensemble_block(*blocks: np.ndarray, fits: list[Any], noises: list[float]) -> np.ndarray:
    """Every member's RelCon and undetermined flag on one block.

    ``blocks``: the driver blocks (1, h, w) each, then the study-area mask (h, w). Returns
    (members × (k + 1), h, w) float32 (the stored type: a block of a large ensemble is many
    bands), member-major: k RelCon bands (percent) then the undetermined flag (0/1); NaN
    outside the study area or where a driver is not finite.
    """
    from . import attribution
    from .chunked import _numba_threads

    mask = blocks[-1].astype(bool)
    stack = np.concatenate([b[:1] for b in blocks[:-1]], axis=0)
    valid = mask & np.all(np.isfinite(stack), axis=0)
    k = len(fits[0].categories)
    out = np.full((len(fits) * (k + 1),) + valid.shape, np.nan, dtype=np.float32)
    if valid.any():
        Xp = stack[:, valid].T
        with _numba_threads(1):
            for i, (fit, noise) in enumerate(zip(fits, noises)):
                pred = attribution.factorial_predict(fit, Xp)
                rel, _, und = attribution.relative_contributions(pred["actcon"], noise)
                b = i * (k + 1)
                out[b:b + k, valid] = rel
                out[b + k, valid] = und
    return out


def _member_relcon_sums(mem: np.ndarray, k: int) -> np.ndarray:
    """Per member, Σ RelCon per category and the pixel count over defined, determined pixels of
    one block of ``ensemble/relcon.tif``: shape (members × (k + 1), 1, 1)."""
    n = mem.shape[0] // (k + 1)
    out = np.zeros((n * (k + 1), 1, 1))
    for i in range(n):
        b = i * (k + 1)
        rel = mem[b:b + k]
        ok = (mem[b + k] == 0) & np.all(np.isfinite(rel), axis=0)  # NaN flag = outside; 1 = undetermined
        out[b:b + k, 0, 0] = rel[:, ok].sum(axis=1)
        out[b + k, 0, 0] = np.count_nonzero(ok)
    return out


@_bounded_cache
def _ensemble_chunked(ctx: Context, k_members: int) -> dict[str, Any]:
    """:func:`stage_ensemble` block by block.

    Per member: the in-memory sample points (:func:`_sample_points` on study area & finite NPP &
    finite drivers, the member's sample seed) and noise-floor pixels (``NOISE_PIXELS`` of the
    study area & finite drivers, drawn with the member's RF seed, as :func:`attribution.factorial`),
    their driver values read window by window (:func:`chunked.values_at`, several members per read),
    :func:`attribution.factorial_fit`, :func:`attribution.noise_floor` and the importance with the
    fitted RF_all. Then one pass over the driver blocks predicts every member (forests shipped to
    the workers once) and writes ``ensemble/relcon.tif``; the members' mean RelCon is summed per
    block from the written file.
    """
    import dataclasses

    import dask
    import dask.array as da

    from . import attribution
    from .chunked import values_at

    ep, rp, sp = ctx.params["ensemble"], ctx.params["rf"], ctx.params["sampling"]
    n_trees, n_points = int(rp["n_trees"]), int(sp["n_points"])
    names, cats = _driver_names(ctx)
    categories = _categories(ctx, cats)
    rels = [f"drivers/{n}.tif" for n in names]
    ctx.progress(0.01, "valid pixels")
    valid = _valid_mask(ctx, rels)  # mask & finite drivers: the pixels every member predicts
    valid_all = valid & _valid_mask(ctx, ["npp_mean.tif"])  # ... & finite NPP: where members sample
    n_valid = int(np.count_nonzero(valid))
    seeds = [_member_seeds(ctx, i) for i in range(k_members)]
    ch = max(_ch(ctx))
    fits: list[Any] = []
    noises: list[float] = []
    members: list[dict[str, Any]] = []
    per_read = max(1, _ENSEMBLE_POINTS_PER_READ // (n_points + NOISE_PIXELS))
    for g0 in range(0, k_members, per_read):
        group = list(range(g0, min(k_members, g0 + per_read)))
        pts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for i in group:
            rf_seed, s_seed = seeds[i]
            rows, cols = _sample_points(valid_all, n_points, s_seed)
            # attribution.noise_pixel_index over the valid pixels, without the index array
            idx = np.sort(np.random.default_rng(rf_seed).choice(n_valid, size=NOISE_PIXELS, replace=False)) \
                if n_valid > NOISE_PIXELS else np.arange(n_valid)
            nr, nc = _nth_valid(valid, idx)
            pts.append((rows, cols, nr, nc))
        ctx.progress(0.02 + 0.2 * g0 / k_members, f"driver values at the points of members {group[0] + 1}–{group[-1] + 1}")
        all_r = np.concatenate([np.concatenate([p[0], p[2]]) for p in pts])
        all_c = np.concatenate([np.concatenate([p[1], p[3]]) for p in pts])
        V = np.stack([values_at(ctx.out / r, all_r, all_c, chunk=ch, bands=[1])[0] for r in rels], axis=1)
        npp_at = values_at(ctx.out / "npp_mean.tif", all_r, all_c, chunk=ch, bands=[1])[0]
        off = 0
        for i, (rows, _, nr, _) in zip(group, pts):
            rf_seed, s_seed = seeds[i]
            ctx.progress(0.02 + 0.2 * i / k_members, f"member {i + 1}/{k_members}: fitting the factorial forests")
            X, y = V[off:off + rows.size], npp_at[off:off + rows.size]
            Xn = V[off + rows.size:off + rows.size + nr.size]
            off += rows.size + nr.size
            fit = attribution.factorial_fit(X, y, names, categories, n_trees=n_trees, seed=rf_seed, keep_model=True)
            noises.append(attribution.noise_floor(fit, Xn))
            imp = attribution.importance(X, y, names, measure=rp["importance"], n_trees=n_trees, seed=rf_seed,
                                         categories=categories, model=fit.model_all)
            fits.append(dataclasses.replace(fit, model_all=None))
            members.append({"rf_seed": rf_seed, "sample_seed": s_seed,
                            "importance_categories": imp.get("categories", {})})
        del V, npp_at, pts
    del valid, valid_all
    cat_names = list(fits[0].categories)
    k = len(cat_names)
    client = ctx.client()
    handle = client.scatter([fits], broadcast=True, hash=True)[0] if client is not None else \
        dask.delayed(fits, pure=True, traverse=False)
    md = _mask_dask(ctx)
    res = da.map_blocks(_ensemble_block, *[_lazy(ctx, r) for r in rels], md, fits=handle, noises=noises,
                        chunks=((k_members * (k + 1),),) + md.chunks, dtype=np.float32,
                        meta=np.empty((0, 0, 0), dtype=np.float32))
    band_names = [f"m{i:03d}_{c}" for i in range(k_members) for c in [*cat_names, "undetermined"]]
    _write(ctx, [("ensemble/relcon.tif", res, {"band_names": band_names})], 0.25, 0.9,
           f"factorial prediction of {k_members} members")
    ctx.progress(0.92, "mean RelCon of every member")
    mem = _lazy(ctx, "ensemble/relcon.tif")
    nb = tuple((1,) * len(c) for c in mem.chunks[1:])
    sums = np.asarray(da.map_blocks(_member_relcon_sums, mem, k, chunks=((mem.shape[0],),) + nb, dtype=np.float64,
                                    meta=np.empty((0, 0, 0))).sum(axis=(1, 2)).compute())
    for i, m in enumerate(members):
        s, n = sums[i * (k + 1): i * (k + 1) + k], sums[i * (k + 1) + k]
        m["relcon_mean"] = {c: (float(s[g] / n) if n else float("nan")) for g, c in enumerate(cat_names)}
    return {"ensemble": {"members": k_members, "vary": str(ep["vary"]), "categories": cat_names, "member_runs": members},
            "_message": "chunked execution"}


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
    with an ensemble also the modal class and ``dominant_agreement.tif``.

    Only reclassifies stored RelCon (``relcon.tif``, ``ensemble/relcon.tif``): a new
    threshold never refits. Chunked: :func:`_dominance_chunked`."""
    from . import attribution
    from .ensemble import EnsembleReducer

    ens_frag = ctx.fragments.get("ensemble", {}).get("ensemble", {})
    ens_members = int(ens_frag.get("members", 0) or 0)
    # with an ensemble: + the member's k + 1 bands, the RelCon sums (k) and the votes
    n_layers = 10 + (3 * len(ens_frag.get("categories", [])) + 4 if ens_members else 0)
    if execution_mode(ctx, n_layers) == "chunked":
        return _dominance_chunked(ctx)
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


# ================================================================ chunked execution
# The same stages block by block (run.mode = "chunked", or "auto" beyond run.memory_gb): inputs are
# read window by window (Dataset.layer_dask, chunked.open_dask), every output is written block by
# block (chunked.write_many), sampling and model fitting stay in this process, per-block work runs
# on the Dask client of the run (ctx.client(): a local cluster, an external scheduler, or threads).

def _ch(ctx: Context) -> tuple[int, int]:
    """Block sides (rows, cols): at most ``run.chunk``, with the blocks of each axis of equal size
    (1066 rows at run.chunk 1024 → 2 × 533, not 1024 + 42), so the workers get even shares."""
    c = int(ctx.params["run"]["chunk"])
    return tuple(-(-n // -(-n // c)) for n in ctx.ds.grid.shape)  # type: ignore[return-value]


def _block_progress(ctx: Context, lo: float, hi: float, what: str) -> Callable[[float, str], None]:
    return lambda f, m="": ctx.progress(lo + (hi - lo) * f, f"{what}: {m}")


def _write(ctx: Context, items: list[tuple[str, Any, dict[str, Any]]], lo: float, hi: float, what: str) -> None:
    """Compute lazy arrays and write them block by block (tiled deflate GeoTIFFs; COG with run.cog)."""
    from .chunked import write_many

    cog = bool(ctx.params["run"].get("cog", False))
    write_many([(ctx.path(rel), arr, {"cog": cog, **opt}) for rel, arr, opt in items], ctx.ds.grid,
               client=ctx.client(), progress=_block_progress(ctx, lo, hi, what), chunk=_ch(ctx))
    ctx.wrote(*[rel for rel, _, _ in items])


def _lazy(ctx: Context, rel: str) -> Any:
    """An output raster of an earlier stage as a lazy (bands, rows, cols) float64 Dask array."""
    from .chunked import open_dask

    p = ctx.out / rel
    if not p.exists():
        raise StageError(f"{rel} is missing from the output folder; run the stage that writes it first.")
    return open_dask(p, _ch(ctx))[0]


def _np_dask(ctx: Context, name: str, arr: np.ndarray) -> Any:
    """A full-size in-memory array (mask, land-cover codes) as a Dask array of the run's blocks.

    On a cluster the array is scattered to the workers once and blocks are cut there, so task
    graphs refer to it by key instead of carrying a copy in every submission.
    """
    import dask.array as da

    cache = ctx.__dict__.setdefault("_np_dask", {})
    key = (name, _ch(ctx))
    if key not in cache:
        ch = _ch(ctx)
        client = ctx.client()
        if client is None:
            cache[key] = da.from_array(arr, chunks=ch)
        else:
            fut = client.scatter(arr, broadcast=True, hash=True)
            cache[key] = da.from_delayed(fut, shape=arr.shape, dtype=arr.dtype,
                                         meta=np.empty((0,) * arr.ndim, dtype=arr.dtype)).rechunk(ch)
    return cache[key]


def _mask_dask(ctx: Context) -> Any:
    return _np_dask(ctx, "mask", ctx.ds.mask)


def _layer(ctx: Context, role: str) -> tuple[Any, list[Any] | None]:
    """A dataset role read lazily on the run's blocks, masked with the run's (scattered) mask."""
    return ctx.ds.layer_dask(role, _ch(ctx), mask=_mask_dask(ctx))


def _blocks(ctx: Context) -> Any:
    from .chunked import windows

    return windows(ctx.ds.grid.shape, _ch(ctx))


def _read_win(ctx: Context, rel: str, r0: int, r1: int, c0: int, c1: int, bands: list[int] | None = None) -> np.ndarray:
    from .chunked import read_window

    return read_window(ctx.out / rel, r0, r1, c0, c1, bands=bands)


# ---------------------------------------------------------------- fusion (chunked)
def _composite_block(b: np.ndarray, dates: list[Any], how: str) -> np.ndarray:
    from .estarfm import monthly_composite

    return monthly_composite(b, dates, how=how)[0]


@_bounded_cache
def _fusion_chunked(ctx: Context) -> dict[str, Any] | None:
    """Fusion block by block: ESTARFM (fine + coarse roles) with ``window // 2`` halos, or the ready
    fine series; then the monthly composite per block. None = no NDVI input to fuse (the caller decides)."""
    import dask.array as da

    from .chunked import fuse_series_chunked
    from .estarfm import monthly_composite

    ds = ctx.ds
    roles = getattr(ds, "_roles", {})
    how = str(ds.manifest.get("ndvi", {}).get("composite", "max"))
    if "ndvi.fine_series" in roles:
        stack, dates = _layer(ctx, "ndvi.fine_series")
        source: dict[str, Any] = {"source": "fine_series", "n_dates": len(dates)}
        items: list[tuple[str, Any, dict[str, Any]]] = []
    elif "ndvi.fine" in roles and "ndvi.coarse" in roles:
        p = ctx.params["estarfm"]
        ctx.client()  # the run's Dask client (if any) is the default for the threshold passes too
        fine, fine_dates = _layer(ctx, "ndvi.fine")
        coarse, dates = _layer(ctx, "ndvi.coarse")
        ctx.progress(0.02, "ESTARFM: global similarity thresholds of the fine pairs")
        fused, pairs = fuse_series_chunked(
            fine, fine_dates, coarse, dates, window=int(p["window"]), classes=int(p["classes"]),
            valid_range=(-1.0, 1.0), max_pair_gap_days=int(p["max_pair_gap_days"]),
            extrapolate=bool(p["extrapolate"]), chunk=_ch(ctx))
        stack = da.where(_mask_dask(ctx)[None], fused, np.nan)
        source = {"source": "estarfm", "n_dates": len(dates), "pairs": pairs}
        items = [("ndvi_fused.tif", stack, {"band_names": [d.isoformat() for d in dates]})]
    else:
        return None
    _, months = monthly_composite(np.zeros((len(dates), 1, 1)), dates, how=how)
    monthly = stack.map_blocks(_composite_block, dates, how, chunks=((len(months),),) + stack.chunks[1:],
                               dtype=np.float64, meta=np.empty((0, 0, 0)))
    items.append(("ndvi_monthly.tif", monthly, {"band_names": list(months)}))
    # one pass: the fused blocks feed both files and are computed once
    _write(ctx, items, 0.05, 0.95, "ESTARFM fusion" if items[0][0] == "ndvi_fused.tif" else "monthly composite")
    if source["source"] == "estarfm":
        # the in-memory summary counts NaN pixels per fused date; read them back from the written file
        from .chunked import open_dask

        nan = da.isnan(open_dask(ctx.path("ndvi_fused.tif"), _ch(ctx))[0]).sum(axis=(1, 2)).compute()
        for rec, n in zip(source["pairs"], nan):
            rec["nodata_pixels"] = int(n)
    source.update(months=[months[0], months[-1]], n_months=len(months), composite=how)
    return {"fusion": source, "_message": "chunked execution"}


# ---------------------------------------------------------------- casa (chunked)
def _class_param_block(codes: np.ndarray, classes: dict, casa_type: dict, eps_table: dict, overrides: Any) -> np.ndarray:
    from .casa import class_parameters

    cp = class_parameters(codes, classes, casa_type, eps_max_table=eps_table, ndvi_range="zhu_table",
                          overrides=overrides)
    return np.stack([cp[k] for k in ("eps_max", "ndvi_min", "ndvi_max", "sr_min", "sr_max")])


def _casa_post(npp: np.ndarray, eps: np.ndarray, mask: np.ndarray, fill: float) -> np.ndarray:
    nonveg = mask & ~np.isfinite(eps)
    out = np.where(nonveg[None], fill, npp)
    return np.where(mask[None], out, np.nan)


def _annual_block(npp: np.ndarray) -> np.ndarray:
    from .casa import annual

    return annual(npp)[0]


def _mean_block(annual: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(annual, axis=0) if annual.shape[0] > 1 else annual[0]
    return np.where(mask, mean, np.nan)[None]


def _npp_stats_chunked(ctx: Context, codes: np.ndarray, classes: dict[int, str], years: list[int]) -> dict[str, Any]:
    """:func:`casa.summary_stats` of ``npp_mean.tif`` plus the yearly means, from windowed reads (two passes)."""
    from .casa import _class_codes, _fin

    cc = _class_codes(codes, classes)
    n = 0
    s = 0.0
    lo, hi = np.inf, -np.inf
    per: dict[int, list[float]] = {c: [0, 0.0] for c in cc}
    ys = np.zeros((len(years), 2))
    for r0, r1, c0, c1 in _blocks(ctx):
        x = _read_win(ctx, "npp_mean.tif", r0, r1, c0, c1)[0]
        ok = np.isfinite(x)
        v = x[ok]
        if v.size:
            n += v.size
            s += float(v.sum())
            lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
        lc = codes[r0:r1, c0:c1]
        for c in cc:
            sel = x[(lc == c) & ok]
            per[c][0] += sel.size
            per[c][1] += float(sel.sum())
        a = _read_win(ctx, "npp_annual.tif", r0, r1, c0, c1)
        for i in range(len(years)):
            f = np.isfinite(a[i])
            ys[i] += (f.sum(), a[i][f].sum())
    mean = s / n if n else np.nan
    ss = 0.0
    if n > 1:
        for r0, r1, c0, c1 in _blocks(ctx):
            x = _read_win(ctx, "npp_mean.tif", r0, r1, c0, c1)[0]
            v = x[np.isfinite(x)]
            ss += float(((v - mean) ** 2).sum())
    sd = float(np.sqrt(ss / (n - 1))) if n > 1 else np.nan
    cv = sd / mean * 100.0 if n > 1 and mean != 0 else np.nan
    res: dict[str, Any] = {"mean": _fin(mean), "sd": _fin(sd), "cv": _fin(cv), "min": _fin(lo) if n else None,
                           "max": _fin(hi) if n else None, "n": n, "by_class": {}, "count_by_class": {}}
    for c, (k, t) in per.items():
        res["by_class"][cc[c]] = _fin(t / k) if k else None
        res["count_by_class"][cc[c]] = int(k)
    res["by_year"] = {str(y): (float(t / k) if k else float("nan")) for y, (k, t) in zip(years, ys)}
    return res


def _validation_chunked(ctx: Context, codes: np.ndarray, classes: dict[int, str]) -> dict[str, Any]:
    """Plots (windowed reads around each plot) and the per-class reference comparison (blockwise)."""
    from affine import Affine

    from . import casa
    from .casa import _class_codes

    ds, grid = ctx.ds, ctx.ds.grid
    validation: dict[str, Any] = {"plots": [], "by_class": {}}
    plots = ds.validation_plots()
    if plots:
        t = grid.transform
        inv = ~t
        px = (abs(t.a) + abs(t.e)) / 2.0
        for pl in plots:
            col_f, row_f = inv @ (float(pl["x"]), float(pl["y"]))
            rad = pl.get("radius_m")
            span = int(np.ceil(float(rad) / px)) + 2 if rad is not None and np.isfinite(float(rad)) else 2
            r0, c0 = int(np.floor(row_f)), int(np.floor(col_f))
            a0, a1 = max(r0 - span, 0), min(r0 + span + 1, grid.height)
            b0, b1 = max(c0 - span, 0), min(c0 + span + 1, grid.width)
            if a1 > a0 and b1 > b0:
                win = _read_win(ctx, "npp_mean.tif", a0, a1, b0, b1)[0]
                # the plot's pixels inside a window that reaches the raster edges where the raster does
                res = casa.validate_plots(win, t @ Affine.translation(b0, a0), [pl])[0]
                if not (0 <= r0 < grid.height and 0 <= c0 < grid.width) and res["n_pixels"] == 0:
                    res["simulated"] = None
            else:
                res = casa.validate_plots(np.full((1, 1), np.nan), t @ Affine.translation(-10, -10), [pl])[0]
            validation["plots"].append(res)
    if "validation.reference_npp" in ds._roles:
        ref = _layer(ctx, "validation.reference_npp")[0][0]
        cc = _class_codes(codes, classes)
        acc = {c: [0, 0.0, 0.0] for c in cc}
        for r0, r1, c0, c1 in _blocks(ctx):
            s = _read_win(ctx, "npp_mean.tif", r0, r1, c0, c1)[0]
            r = np.asarray(ref[r0:r1, c0:c1].compute())
            ok = np.isfinite(s) & np.isfinite(r)
            lc = codes[r0:r1, c0:c1]
            for c in cc:
                sel = (lc == c) & ok
                acc[c][0] += int(sel.sum())
                acc[c][1] += float(s[sel].sum())
                acc[c][2] += float(r[sel].sum())
        validation["by_class"] = {cc[c]: {"simulated": (a[1] / a[0] if a[0] else None),
                                          "reference": (a[2] / a[0] if a[0] else None), "n": a[0]}
                                  for c, a in acc.items()}
    return validation


def _code_counts(codes: np.ndarray, minlength: int) -> np.ndarray:
    """Pixels per land-cover code ≥ 0 (``np.bincount`` of the codes), strip by strip (no int64 copy)."""
    counts = np.zeros(max(int(minlength), 1), dtype=np.int64)
    step = max(1, 1_000_000 // max(codes.shape[-1], 1))
    for r0 in range(0, codes.shape[0], step):
        c = codes[r0:r0 + step]
        b = np.bincount(c[c >= 0].astype(np.int64), minlength=counts.size)
        if b.size > counts.size:
            counts = np.concatenate([counts, np.zeros(b.size - counts.size, dtype=np.int64)])
        counts[:b.size] += b
    return counts


@_bounded_cache
def _casa_chunked(ctx: Context) -> dict[str, Any]:
    import dask.array as da

    from . import casa
    from .chunked import casa_chunked

    ds, p = ctx.ds, ctx.params["casa"]
    ch = _ch(ctx)
    codes, classes, casa_type = ds.landcover()
    md = _mask_dask(ctx)
    info: dict[str, Any] = {}
    if "npp.annual" in ds._roles:
        annual, ydates = _layer(ctx, "npp.annual")
        years = [d.year for d in ydates]
        info["source"] = "ready NPP supplied"
        items: list[tuple[str, Any, dict[str, Any]]] = []
    else:
        if p["ndvi_range"] != "zhu_table":
            raise StageError(
                f"casa.ndvi_range = {p['ndvi_range']!r} takes NDVI percentiles over every pixel of a class at once, "
                "which chunked execution does not do; set casa.ndvi_range = \"zhu_table\" or run.mode = \"memory\"."
            )
        import rasterio

        with rasterio.open(ctx.out / "ndvi_monthly.tif") as src:
            months = [src.tags(b).get("DATE") or src.descriptions[b - 1] for b in range(1, src.count + 1)]
        months = [str(m) for m in months]
        clim: dict[str, tuple[Any, list[str]]] = {}
        for var in ("temperature", "precipitation", "solar"):
            if f"climate.{var}" not in ds._roles:
                raise StageError(f"CASA needs [climate] {var} in dataset.toml (monthly series).")
            clim[var] = _layer(ctx, f"climate.{var}")
        use = _shared_months(months, [set(clim[v][1]) for v in clim])
        nd = _lazy(ctx, "ndvi_monthly.tif")[[months.index(m) for m in use]]
        T, P, S = (clim[v][0][[clim[v][1].index(m) for m in use]] for v in ("temperature", "precipitation", "solar"))
        eps_table = {k: float(v) * float(p["eps_scale"]) for k, v in p["eps_max"].items()}
        overrides = p.get("overrides") or None
        table = casa.class_parameters(np.array(sorted(classes), dtype=np.int64)[None], classes, casa_type,
                                      eps_max_table=eps_table, ndvi_range="zhu_table", overrides=overrides)["table"]
        counts = _code_counts(codes, max(classes) + 1)
        for row in table:  # pixel counts of the whole grid (the table above was built on one pixel per class)
            if "pixels" in row and "code" in row:
                row["pixels"] = int(counts[int(row["code"])]) if 0 <= int(row["code"]) < counts.size else 0
        cd = _np_dask(ctx, "landcover", codes)
        cp = cd.map_blocks(_class_param_block, classes, casa_type, eps_table, overrides, new_axis=0,
                           chunks=((5,),) + cd.chunks, dtype=np.float64, meta=np.empty((0, 0, 0)))
        ctx.progress(0.1, "monthly NPP per block")
        npp = casa_chunked(nd, T, P, S, cp[0], cp[1], cp[2], chunk=ch, halving=bool(p["halving"]),
                           teps2_coef=float(p["teps2_coef"]), fpar_alpha=float(p["fpar_alpha"]),
                           w_clip=tuple(p["w_clip"]), pet_zero=str(p["pet_zero"]), cold_limit=float(p["cold_limit"]),
                           sr_min=cp[3], sr_max=cp[4])
        fill = 0.0 if p["nonveg"] == "zero" else np.nan
        npp = da.map_blocks(_casa_post, npp, cp[0].rechunk(npp.chunks[1:]), md.rechunk(npp.chunks[1:]), fill,
                            dtype=np.float64)
        annual = npp.map_blocks(_annual_block, chunks=((len(use) // 12,),) + npp.chunks[1:], dtype=np.float64)
        years = sorted({int(m[:4]) for m in use})
        items = [("npp_monthly.tif", npp, {"band_names": use})]
        info.update(source="casa", months=[use[0], use[-1]], class_parameters=table)
    mean = da.map_blocks(_mean_block, annual, md.rechunk(annual.chunks[1:]), dtype=np.float64,
                         chunks=((1,),) + annual.chunks[1:])
    items += [("npp_annual.tif", annual, {"band_names": [str(y) for y in years]}),
              ("npp_mean.tif", mean, {"band_names": ["npp_mean"], "tags": {"units": "gC m-2 yr-1"}})]
    _write(ctx, items, 0.1, 0.85, "NPP")
    if info.get("source") == "casa":
        lo, hi = 255, -1
        for r0, r1, c0, c1 in _blocks(ctx):
            a = _read_win(ctx, "npp_monthly.tif", r0, r1, c0, c1)
            m = ds.mask[r0:r1, c0:c1]
            if m.any():
                vm = np.isfinite(a).reshape(len(use) // 12, 12, *a.shape[1:]).sum(axis=1)[:, m]
                lo, hi = min(lo, int(vm.min())), max(hi, int(vm.max()))
        info["valid_months"] = {"min": lo if hi >= 0 else None, "max": hi if hi >= 0 else None}
    ctx.progress(0.9, "statistics")
    stats = _npp_stats_chunked(ctx, codes, classes, years)
    validation = _validation_chunked(ctx, codes, classes)
    return {"npp": stats, "validation": validation, "casa": info, "_message": "chunked execution"}


# ---------------------------------------------------------------- drivers (chunked)
def _climate_block(cube: np.ndarray, labels: tuple[tuple[str, ...], ...], roles: tuple[str, ...],
                   names: tuple[str, ...]) -> np.ndarray:
    from . import drivers

    bounds = np.cumsum([0] + [len(lab) for lab in labels])
    items = {r: (cube[bounds[i]:bounds[i + 1]], list(lab)) for i, (r, lab) in enumerate(zip(roles, labels))}
    res = drivers.climate_means(items.get("temperature"), items.get("precipitation"), items.get("solar"),
                                items.get("evapotranspiration"))
    return np.stack([res[n] for n in names])


def _backtransform_block(pv: np.ndarray, log: bool, mask: np.ndarray) -> np.ndarray:
    out = pv.copy()
    if log:
        out[0] = np.exp(pv[0] + pv[1] / 2.0)
        out[1] = out[0] ** 2 * np.expm1(pv[1])
    out[:, ~mask] = np.nan
    return out


def _krige_report(x: Any, y: Any, z: Any, gx: np.ndarray, gy: np.ndarray, *, model: str, log: bool,
                  name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any], dict[str, Any]]:
    """The fitting part of :func:`kriging.krige_property` (samples, variogram, LOO, report)."""
    from . import kriging as K

    x, y, z, info = K.prepare_samples(x, y, z, grid_x=gx, grid_y=gy, name=name)
    if log:
        if np.any(z <= 0):
            raise K.KrigingError(
                f"{name}: the log transform needs positive values but {int((z <= 0).sum())} samples are <= 0; "
                f"remove {name} from kriging.log_transform or fix the values")
        zk = np.log(z)
    else:
        zk = z
    if np.ptp(zk) == 0:
        raise K.KrigingError(f"{name}: all {zk.size} sample values are equal ({z[0]}); nothing to krige — use a "
                             "constant raster")
    vg = K.fit_variogram(x, y, zk, model)
    cv = K.loo(x, y, zk, vg)
    if log:
        pz = np.exp(cv["prediction"] + cv["variance"] / 2.0)
        res = z - pz
        st = K._loo_stats(z, pz, res, np.ones_like(res))
        st["msdr"] = cv["msdr"]
    else:
        st = {k: cv[k] for k in ("me", "rmse", "r", "msdr")}
    sill = vg["nugget"] + vg["psill"]
    report: dict[str, Any] = {
        "name": name, "model": vg["model"], "nugget": vg["nugget"], "psill": vg["psill"], "range": vg["range"],
        "pykrige_range": vg["pykrige"]["range"], "loo_me": st["me"], "loo_rmse": st["rmse"], "loo_r": st["r"],
        "msdr": st["msdr"], "nugget_sill_ratio": vg["nugget"] / sill, "n": int(z.size),
        "n_dropped_nan": info["n_dropped_nan"], "n_duplicates": info["n_duplicates"], "n_outside": info["n_outside"],
        "back_transform": "exp(y + s2/2) (lognormal)" if log else "none", "range_at_bound": vg["range_at_bound"],
        "warnings": list(info["warnings"]),
        "variogram": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vg.items() if k != "candidates"},
    }
    if vg["range_at_bound"]:
        report["warnings"].append(f"{name}: the fitted range hit its search bound; the variogram shows no clear sill")
    if "candidates" in vg:
        report["candidates"] = vg["candidates"]
    return x, y, zk, vg, report


@_bounded_cache
def _drivers_chunked(ctx: Context) -> dict[str, Any]:
    import dask.array as da

    from .chunked import degradation_chunked, krige_chunked
    from .drivers import ahp_setup, categorise

    ds, params = ctx.ds, ctx.params
    ch = _ch(ctx)
    grid = ds.grid
    md = _mask_dask(ctx)
    layers: dict[str, Any] = {}
    variances: dict[str, Any] = {}
    source: dict[str, str] = {}
    out: dict[str, Any] = {}
    ctx.progress(0.02, "climate means")
    roles = tuple(v for v in ("temperature", "precipitation", "solar", "evapotranspiration")
                  if f"climate.{v}" in ds._roles)
    if roles:
        from .drivers import climate_means

        cl = {v: _layer(ctx, f"climate.{v}") for v in roles}
        probe = {v: (np.zeros((len(cl[v][1]), 1, 1)), cl[v][1]) for v in roles}
        names = tuple(climate_means(probe.get("temperature"), probe.get("precipitation"), probe.get("solar"),
                                    probe.get("evapotranspiration")))
        if names:
            cube = da.concatenate([cl[v][0] for v in roles], axis=0).rechunk({0: -1})
            stack = da.map_blocks(_climate_block, cube, labels=tuple(tuple(cl[v][1]) for v in roles),
                                  roles=roles, names=names, chunks=((len(names),),) + cl[roles[0]][0].chunks[1:],
                                  dtype=np.float64, meta=np.empty((0, 0, 0)))
            for i, n in enumerate(names):
                layers[n] = stack[i]
                source[n] = "evapotranspiration raster" if n == "MAE" and "evapotranspiration" in roles else (
                    "CASA water balance (annual EET)" if n == "MAE" else "climate series")
    ready_soil = [r.split(".", 2)[2] for r in ds._roles if r.startswith("soil.rasters.")]
    for n in ready_soil:
        layers[n] = _layer(ctx, f"soil.rasters.{n}")[0][0]
        source[n] = "supplied raster"
    samples = ds.soil_samples()
    if samples is not None:
        kp = params["kriging"]
        gx, gy = grid.xy()
        reports = {}
        props = [n for n in samples["values"] if n not in ready_soil]
        for i, name in enumerate(props):
            ctx.progress(0.05 + 0.15 * i / max(len(props), 1), f"variogram {name}")
            log = name in kp["log_transform"]
            x, y, zk, vg, rep = _krige_report(samples["x"], samples["y"], samples["values"][name], gx, gy,
                                              model=kp["model"], log=log, name=name)
            pv = krige_chunked(x, y, zk, vg, grid, chunk=ch, mask=md, n_closest=int(kp["n_closest"]),
                               client=ctx.client())
            pv = da.map_blocks(_backtransform_block, pv, log, md.rechunk(pv.chunks[1:]), dtype=np.float64)
            layers[name], variances[name] = pv[0], pv[1]
            source[name] = f"ordinary kriging ({rep.get('model')})"
            reports[name] = rep
        out["kriging"] = reports
    ctx.progress(0.2, "land degradation")
    if "degradation.raster" in ds._roles:
        layers["LD"] = _layer(ctx, "degradation.raster")[0][0]
        source["LD"] = "supplied raster"
    else:
        deg = ds.degradation_lazy(ch, mask=md)
        if deg is not None:
            dp = params["degradation"]
            deg, names_, info = ahp_setup(deg, dp)
            ld, ld_info = degradation_chunked({n: deg["indicators"][n] for n in names_}, info["weights"], md,
                                              direction=deg.get("direction") or {},
                                              influence_distance=float(dp["influence_distance_m"]), chunk=ch)
            info.update(ld_info or {})
            out["ahp"] = info
            layers["LD"] = ld
            source["LD"] = "AHP-weighted degradation indicators"
    cats: dict[str, list[str]] = {c: list(v) for c, v in params["categories"].items()}
    for r in ds._roles:
        if r.startswith("drivers."):
            name = r.split(".", 1)[1]
            layers[name] = _layer(ctx, r)[0][0]
            source[name] = "supplied raster"
            for members in cats.values():
                if name in members:
                    members.remove(name)
            cats.setdefault(ds._roles[r][0].category or "M", []).append(name)
    drv, empty = categorise(layers, source, cats)
    items: list[tuple[str, Any, dict[str, Any]]] = []
    for name, arr in layers.items():
        items.append((f"drivers/{name}.tif", da.where(md, arr, np.nan), {"band_names": [name]}))
    for name, arr in variances.items():
        items.append((f"drivers/{name}_variance.tif", da.where(md, arr, np.nan),
                      {"band_names": [f"{name} kriging variance"]}))
    if "LD" in layers:
        items.append(("ld.tif", da.where(md, layers["LD"], np.nan), {"band_names": ["LD"]}))
    _write(ctx, items, 0.25, 1.0, "driver layers")
    out.update(drivers=drv, empty_categories=empty, _message="chunked execution")
    return out


# ---------------------------------------------------------------- sampling (chunked)
def _driver_names(ctx: Context) -> tuple[list[str], dict[str, list[str]]]:
    info = ctx.fragments.get("drivers", {}).get("drivers", {})
    if not info:
        raise StageError("no driver layers: the drivers stage did not run or produced nothing.")
    names = list(info)
    cats: dict[str, list[str]] = {}
    for n in names:
        cats.setdefault(info[n]["category"], []).append(n)
    return names, cats


def _valid_block(*blocks: np.ndarray) -> np.ndarray:
    ok = blocks[-1].astype(bool)
    for b in blocks[:-1]:
        ok = ok & np.isfinite(b[0])
    return ok


def _valid_mask(ctx: Context, rels: list[str]) -> np.ndarray:
    """Study-area mask & finite in every listed raster, computed block by block (bool, rows × cols)."""
    import dask.array as da

    md = _mask_dask(ctx)
    arrs = [_lazy(ctx, r)[:1] for r in rels]
    v = da.map_blocks(_valid_block, *arrs, md, dtype=bool, drop_axis=0, chunks=md.chunks,
                      meta=np.empty((0, 0), dtype=bool))
    return np.asarray(v.compute())


def _nth_valid(valid: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the ``idx``-th True pixels of ``valid`` in row-major order.

    Equals ``np.unravel_index(np.flatnonzero(valid)[idx], valid.shape)`` without the
    full-size index array (8 bytes per valid pixel): per-row counts locate the rows, and
    only the rows holding a wanted pixel are scanned.

    Parameters
    ----------
    valid : ndarray of bool, shape (rows, cols)
    idx : ndarray of int, shape (m,)
        Ascending positions among the True pixels (0 ≤ idx < valid.sum()).

    Returns
    -------
    rows, cols : ndarray of int64, shape (m,)
    """
    idx = np.asarray(idx, dtype=np.int64)
    cum = np.concatenate([[0], np.cumsum(np.count_nonzero(valid, axis=1), dtype=np.int64)])
    rows = (np.searchsorted(cum, idx, side="right") - 1).astype(np.int64)
    cols = np.empty(idx.size, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if idx.size else np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:], idx.size]
    for a, b in zip(starts.tolist(), ends.tolist()):
        r = int(rows[a])
        cols[a:b] = np.flatnonzero(valid[r])[idx[a:b] - cum[r]]
    return rows, cols


def _sample_points(valid: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`attribution.sample_points` (same points, errors and warnings) without its full-size
    index array when more pixels are valid than points are wanted."""
    from . import attribution

    n_valid = int(np.count_nonzero(valid))
    if n_valid <= max(int(n), attribution.MIN_SAMPLES) or valid.ndim != 2 or valid.dtype != bool:
        return attribution.sample_points(valid, n=n, seed=seed)
    # sample_points draws sort(rng.choice(flat, n)) = flat[sort(rng.choice(n_valid, n))] (flat ascending)
    idx = np.sort(np.random.default_rng(seed).choice(n_valid, size=int(n), replace=False))
    return _nth_valid(valid, idx)


@_bounded_cache
def _sampling_chunked(ctx: Context) -> dict[str, Any]:
    from . import attribution
    from .chunked import values_at

    ds, p = ctx.ds, ctx.params["sampling"]
    names, _ = _driver_names(ctx)
    rels = ["npp_mean.tif"] + [f"drivers/{n}.tif" for n in names]
    ctx.progress(0.05, "valid pixels")
    valid = _valid_mask(ctx, rels)
    rows, cols = _sample_points(valid, int(p["n_points"]), int(p["seed"]))
    ctx.progress(0.6, "values at the points")
    vals = {r: values_at(ctx.out / r, rows, cols, chunk=max(_ch(ctx)), bands=[1])[0] for r in rels}
    x, y = ds.grid.xy()
    codes, classes, _ = ds.landcover()
    X = np.stack([vals[f"drivers/{n}.tif"] for n in names], axis=1)
    npp = vals["npp_mean.tif"]
    table: dict[str, Any] = {"x": x[cols], "y": y[rows], "row": rows, "col": cols,
                             "landcover": [classes.get(int(c), str(int(c))) for c in codes[rows, cols]], "NPP": npp}
    for j, n in enumerate(names):
        table[n] = X[:, j]
    write_csv(ctx.path("samples.csv"), table)
    ctx.wrote("samples.csv")
    pear = attribution.pearson(X, npp, names)
    return {"pearson": pear, "sampling": {"n_points": int(len(rows)), "n_valid_pixels": int(valid.sum()),
                                          "seed": int(p["seed"])}, "_message": "chunked execution"}


# ---------------------------------------------------------------- lcc (chunked)
def _masked_pair(d: np.ndarray, y: np.ndarray, m: np.ndarray) -> np.ndarray:
    mm = m & np.isfinite(y[0])
    return np.stack([np.where(mm, d[0], np.nan), np.where(mm, y[0], np.nan)])


def _global_stats_many(pairs: list[tuple[Any, Any]]) -> list[Any]:
    """:func:`chunked.global_stats_chunked` of several (x, y) pairs in two passes over all of them."""
    import dask
    import dask.array as da

    from .lcc import GlobalStats

    first = []
    for x, y in pairs:
        v = da.isfinite(x) & da.isfinite(y)
        first += [v.sum(dtype=np.float64), da.where(v, x, 0.0).sum(), da.where(v, y, 0.0).sum()]
    sums = dask.compute(*first)
    second, means = [], []
    for i, (x, y) in enumerate(pairs):
        n, sx, sy = sums[3 * i: 3 * i + 3]
        mx, my = (float(sx / n), float(sy / n)) if n else (0.0, 0.0)
        means.append((n, mx, my))
        v = da.isfinite(x) & da.isfinite(y)
        second += [(da.where(v, x - mx, 0.0) ** 2).sum(), (da.where(v, y - my, 0.0) ** 2).sum()]
    ss = dask.compute(*second)
    out = []
    for i, (n, mx, my) in enumerate(means):
        if n == 0:
            out.append(GlobalStats(math.nan, math.nan, math.nan, math.nan))
        else:
            out.append(GlobalStats(mx, my, float(np.sqrt(ss[2 * i] / n)), float(np.sqrt(ss[2 * i + 1] / n))))
    return out


@_bounded_cache
def _lcc_chunked_stage(ctx: Context) -> dict[str, Any]:
    import dask.array as da

    from . import lcc
    from .chunked import lcc_chunked

    p = ctx.params["lcc"]
    names, _ = _driver_names(ctx)
    md = _mask_dask(ctx)
    npp = _lazy(ctx, "npp_mean.tif")
    pairs = [da.map_blocks(_masked_pair, _lazy(ctx, f"drivers/{n}.tif"), npp, md, dtype=np.float64,
                           chunks=((2,),) + md.chunks, meta=np.empty((0, 0, 0))) for n in names]
    ctx.progress(0.02, "global centring of every driver")
    stats = _global_stats_many([(pr[0], pr[1]) for pr in pairs])
    items = [(f"lcc/{n}.tif", lcc_chunked(pr[0], pr[1], int(p["window"]), int(p["min_valid"]), chunk=_ch(ctx),
                                          stats=st), {"band_names": ["r", "p", "n"]})
             for n, pr, st in zip(names, pairs, stats)]
    _write(ctx, items, 0.1, 0.9, f"LCC of {len(names)} drivers")
    counts = {n: np.zeros(7, dtype=np.int64) for n in names}
    for r0, r1, c0, c1 in _blocks(ctx):
        y = _read_win(ctx, "npp_mean.tif", r0, r1, c0, c1)[0]
        m = ctx.ds.mask[r0:r1, c0:c1] & np.isfinite(y)
        for n in names:
            a = _read_win(ctx, f"lcc/{n}.tif", r0, r1, c0, c1, bands=[1, 2])
            codes = lcc.classify(a[0], a[1], m)
            counts[n] += np.bincount(codes[codes != 0].ravel(), minlength=7)[:7]
    shares = {}
    for n in names:
        c = counts[n]
        n_all, n_def = int(c[1:].sum()), int(c[1:6].sum())
        sh = {k: (100.0 * c[i] / n_def if n_def else 0.0) for i, k in zip(range(1, 6), lcc.SHARE_KEYS[:5])}
        sh["undefined"] = 100.0 * c[6] / n_all if n_all else 0.0
        shares[n] = sh
    return {"lcc": shares, "_message": "chunked execution"}


# ---------------------------------------------------------------- attribution (chunked)
def _factorial_block(*blocks: np.ndarray, fit: Any, noise: float) -> np.ndarray:
    from . import attribution

    mask = blocks[-1].astype(bool)
    stack = np.concatenate([b[:1] for b in blocks[:-1]], axis=0)
    p, h, w = stack.shape
    k = len(fit.categories)
    out = np.full((2 * k, h, w), np.nan)
    valid = mask & np.all(np.isfinite(stack), axis=0)
    if valid.any():
        from .chunked import _numba_threads

        with _numba_threads(1):
            pred = attribution.factorial_predict(fit, stack[:, valid].T)
        rel, _, _ = attribution.relative_contributions(pred["actcon"], noise)
        out[:k, valid] = pred["actcon"]
        out[k:, valid] = rel
    return out


@_bounded_cache
def _attribution_chunked(ctx: Context) -> dict[str, Any]:
    import dataclasses

    import dask
    import dask.array as da

    from . import attribution
    from .chunked import values_at

    p = ctx.params["rf"]
    names, cats = _driver_names(ctx)
    categories = _categories(ctx, cats)
    X, y, rr, cc = _read_samples(ctx, names)
    n_trees, seed = int(p["n_trees"]), int(p["seed"])
    ctx.progress(0.02, "fitting the factorial forests")
    fit = attribution.factorial_fit(X, y, names, categories, n_trees=n_trees, seed=seed, keep_model=True)
    rels = [f"drivers/{n}.tif" for n in names]
    ctx.progress(0.2, "noise floor")
    valid = _valid_mask(ctx, rels)
    n_valid = int(np.count_nonzero(valid))
    # attribution.noise_pixel_index(np.arange(n_valid), NOISE_PIXELS, seed) without the index array:
    # Generator.choice draws the same positions from n as from np.arange(n)
    idx = np.sort(np.random.default_rng(seed).choice(n_valid, size=NOISE_PIXELS, replace=False)) \
        if n_valid > NOISE_PIXELS else np.arange(n_valid)
    nr, nc = _nth_valid(valid, idx)
    del valid
    Xn = np.stack([values_at(ctx.out / r, nr, nc, chunk=max(_ch(ctx)), bands=[1])[0] for r in rels], axis=1)
    noise = attribution.noise_floor(fit, Xn)
    light = dataclasses.replace(fit, model_all=None)
    client = ctx.client()
    handle = client.scatter(light, broadcast=True, hash=True) if client is not None else \
        dask.delayed(light, pure=True, traverse=False)
    k = len(fit.categories)
    md = _mask_dask(ctx)
    res = da.map_blocks(_factorial_block, *[_lazy(ctx, r) for r in rels], md, fit=handle, noise=noise,
                        chunks=((2 * k,),) + md.chunks, dtype=np.float64, meta=np.empty((0, 0, 0)))
    cat_names = list(fit.categories)
    _write(ctx, [("actcon.tif", res[:k], {"band_names": cat_names}), ("relcon.tif", res[k:], {"band_names": cat_names})],
           0.25, 0.85, "factorial prediction")
    ctx.progress(0.86, "importance")
    imp = attribution.importance(X, y, names, measure=p["importance"], n_trees=n_trees, seed=seed,
                                 categories=categories, model=fit.model_all)
    ctx.progress(0.92, "spatial block cross-validation")
    models = fit.models
    models["all"]["cv_r2"] = attribution.block_cv_r2(X, y, rr, cc, blocks=int(p["cv_blocks"]), n_trees=n_trees, seed=seed)
    sums, n = np.zeros(k), 0
    for r0, r1, c0, c1 in _blocks(ctx):
        act = _read_win(ctx, "actcon.tif", r0, r1, c0, c1)
        rel = _read_win(ctx, "relcon.tif", r0, r1, c0, c1)
        ok = np.isfinite(act).all(axis=0) & ~attribution.undetermined_mask(act, noise) & np.isfinite(rel).all(axis=0)
        sums += rel[:, ok].sum(axis=1)
        n += int(ok.sum())
    rmean = {c: (float(sums[i] / n) if n else float("nan")) for i, c in enumerate(cat_names)}
    return {
        "importance": imp,
        "models": models,
        "relcon_mean": rmean,
        "attribution": {"categories": cat_names, "noise_floor": noise, "empty_categories": list(fit.empty_categories),
                        "n_trees": n_trees, "seed": seed},
        "_message": "chunked execution",
    }


# ---------------------------------------------------------------- dominance (chunked)
def _dominance_block(rel: np.ndarray, act: np.ndarray, cat_names: list[str], thr: float, noise: Any) -> np.ndarray:
    from . import attribution

    valid = np.all(np.isfinite(act), axis=0)
    und = attribution.undetermined_mask(act, noise)
    codes, _ = attribution.dominant_classes(rel, cat_names, threshold=thr, undetermined_mask=und)
    codes = np.where(valid, codes, 0).astype(np.float64)
    if {"S", "M", "C"}.issubset(cat_names):
        rgb = attribution.rgb_composite(rel, ("S", "M", "C"), cat_names)
        rgb = np.where(valid[None], rgb, 0).astype(np.float64)
    else:
        rgb = np.zeros((3,) + valid.shape)
    return np.concatenate([codes[None], rgb, valid[None].astype(np.float64)])


@_bounded_cache
def _dominance_chunked(ctx: Context) -> dict[str, Any]:
    """:func:`stage_dominance` block by block; with an ensemble also its part
    (:func:`_ensemble_dominance_chunked`)."""
    import dask.array as da

    from . import attribution

    thr = float(ctx.params["dominance"]["threshold"])
    info = ctx.fragments.get("attribution", {}).get("attribution", {})
    cat_names = list(info.get("categories", []))
    labels = attribution.category_codes(cat_names)
    rel, act = _lazy(ctx, "relcon.tif"), _lazy(ctx, "actcon.tif")
    res = da.map_blocks(_dominance_block, rel, act, cat_names, thr, info.get("noise_floor"),
                        chunks=((5,),) + rel.chunks[1:], dtype=np.float64, meta=np.empty((0, 0, 0)))
    items: list[tuple[str, Any, dict[str, Any]]] = [
        ("dominant.tif", res[0], {"dtype": "uint8", "nodata": 0, "colormap": class_colours(labels),
                                  "band_names": ["dominant"]})]
    if {"S", "M", "C"}.issubset(cat_names):
        items.append(("rgb.tif", res[1:4], {"dtype": "uint8", "band_names": ["R soil", "G mining", "B climate"],
                                            "mask": res[4] > 0}))
    ens = ctx.fragments.get("ensemble", {}).get("ensemble", {})
    _write(ctx, items, 0.05, 0.45 if ens.get("members", 0) else 0.9, "dominant classes")
    counts = np.zeros(max(labels) + 1, dtype=np.int64)
    for r0, r1, c0, c1 in _blocks(ctx):
        codes = _read_win(ctx, "dominant.tif", r0, r1, c0, c1)[0]
        codes = np.where(np.isfinite(codes), codes, 0).astype(np.int64)
        counts += np.bincount(codes[codes != 0].ravel(), minlength=max(labels) + 1)[: max(labels) + 1]
    n = int(counts.sum())
    shares = {lab: (100.0 * counts[c] / n if n else 0.0) for c, lab in sorted(labels.items()) if c != 0}
    out: dict[str, Any] = {
        "dominant": {"threshold": thr, "codes": {str(k): v for k, v in labels.items()}, "area_share": shares},
        "_message": "chunked execution"}
    if ens.get("members", 0):
        out["ensemble"] = _ensemble_dominance_chunked(ctx, ens, labels, thr)
    else:
        for stale in ("dominant_modal.tif", "dominant_agreement.tif", "ensemble/relcon.tif", "ensemble/relcon_mean.tif"):
            (ctx.out / stale).unlink(missing_ok=True)
    return out


def _ensemble_dominance_block(act: np.ndarray, mem: np.ndarray, *, cats: list[str], thr: float, n_classes: int,
                              stats: bool = False) -> np.ndarray:
    """The ensemble part of the dominance stage on one block.

    ``act``: ``actcon.tif`` (k, h, w) (its finite pixels are the analysed ones); ``mem``:
    ``ensemble/relcon.tif`` (members × (k + 1), h, w). Every member is reclassified at ``thr``
    and reduced (:class:`ensemble.EnsembleReducer`). Returns (k + 2, h, w): mean RelCon (k
    bands, NaN outside), modal class (0 = none), agreement (NaN outside); with ``stats`` the
    block's counts instead, shape (members × n + n + 2, 1, 1) with n = ``n_classes``: every
    member's analysed pixels per class, the modal ones per class, Σ agreement and its pixels.
    """
    from . import attribution
    from .ensemble import EnsembleReducer

    k = len(cats)
    n_members = mem.shape[0] // (k + 1)
    valid = np.all(np.isfinite(act), axis=0)
    red = EnsembleReducer(n_classes, valid.shape, cats)
    member_counts = []
    for i in range(n_members):
        b = i * (k + 1)
        mrel, mund = mem[b:b + k], mem[b + k] == 1
        mcodes, _ = attribution.dominant_classes(mrel, cats, threshold=thr, undetermined_mask=mund)
        mcodes = np.where(valid, mcodes, 0).astype(np.uint8)
        if stats:
            member_counts.append(np.bincount(mcodes[mcodes != 0].ravel(), minlength=n_classes)[:n_classes])
        red.add(mcodes, mrel)
    mode, agreement = red.modal()
    agreement = np.where(valid, agreement, np.nan)
    if stats:
        ok = np.isfinite(agreement)
        modal = np.bincount(mode[valid & (mode != 0)].ravel(), minlength=n_classes)[:n_classes]
        vec = np.concatenate([*member_counts, modal, [agreement[ok].sum(), np.count_nonzero(ok)]])
        return vec.astype(np.float64)[:, None, None]
    rmean = np.where(valid[None], red.relcon_mean(), np.nan)
    return np.concatenate([rmean, mode[None].astype(np.float64), agreement[None]])


def _ensemble_dominance_chunked(ctx: Context, ens: dict[str, Any], labels: dict[int, str], thr: float) -> dict[str, Any]:
    """The ensemble part of :func:`stage_dominance` block by block: writes ``ensemble/relcon_mean.tif``,
    ``dominant_modal.tif`` and ``dominant_agreement.tif``, then sums the members' class counts, the
    modal counts and the agreement per block (a second, reclassification-only pass) for the
    member share intervals, ``modal_area_share`` and ``mean_agreement``."""
    import dask.array as da

    from .ensemble import interval

    cats = list(ens["categories"])
    k, runs = len(cats), list(ens["member_runs"])
    n_members, n_classes = len(runs), max(labels) + 1
    act, mem = _lazy(ctx, "actcon.tif"), _lazy(ctx, "ensemble/relcon.tif")
    if mem.shape[0] != n_members * (k + 1):
        raise StageError(f"ensemble/relcon.tif has {mem.shape[0]} bands, not {n_members} members × {k + 1}: "
                         "it is stale; rerun the ensemble stage.")
    kw = {"cats": cats, "thr": thr, "n_classes": n_classes}
    res = da.map_blocks(_ensemble_dominance_block, act, mem, **kw, chunks=((k + 2,),) + act.chunks[1:],
                        dtype=np.float64, meta=np.empty((0, 0, 0)))
    _write(ctx, [
        ("ensemble/relcon_mean.tif", res[:k], {"band_names": cats}),
        ("dominant_modal.tif", res[k], {"dtype": "uint8", "nodata": 0, "colormap": class_colours(labels),
                                        "band_names": ["modal dominant class"]}),
        ("dominant_agreement.tif", res[k + 1], {"band_names": ["agreement"]}),
    ], 0.5, 0.9, "ensemble modal class")
    ctx.progress(0.92, "ensemble class shares")
    nb = tuple((1,) * len(c) for c in act.chunks[1:])
    n_stat = (n_members + 1) * n_classes + 2
    tot = np.asarray(da.map_blocks(_ensemble_dominance_block, act, mem, **kw, stats=True, chunks=((n_stat,),) + nb,
                                   dtype=np.float64, meta=np.empty((0, 0, 0))).sum(axis=(1, 2)).compute())
    counts = np.rint(tot[:-2]).astype(np.int64).reshape(n_members + 1, n_classes)

    def shares(c: np.ndarray) -> dict[str, float]:  # attribution.class_shares from the counts
        n = int(c.sum())
        return {lab: (100.0 * c[code] / n if n else 0.0) for code, lab in sorted(labels.items()) if code != 0}

    scalars: dict[str, list[float]] = {}
    for i, mrun in enumerate(runs):
        sc = {f"share.{lab}": v for lab, v in shares(counts[i]).items()}
        sc.update({f"relcon_mean.{c}": v for c, v in mrun["relcon_mean"].items()})
        sc.update({f"importance.{c}": v for c, v in mrun["importance_categories"].items()})
        for key, v in sc.items():
            scalars.setdefault(key, []).append(float(v))
    s_agree, n_agree = tot[-2], tot[-1]
    return {
        **ens,
        "mean_agreement": float(s_agree / n_agree) if n_agree else float("nan"),
        "modal_area_share": shares(counts[n_members]),
        "intervals": {key: interval(v) for key, v in scalars.items()},
    }


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
