"""Synthetic sample basin modelled on the Changhe Basin coal-mining area (Jincheng, Shanxi).

:func:`generate` writes a complete study-area dataset (``dataset.toml`` and every file it names,
in the dataset format documented in the project README); :func:`planted_truth` returns the hidden fields the
data were drawn from, so tests can check that an analysis recovers them. Everything is a
deterministic function of ``seed``: the same seed gives the same bytes.

Study area
----------
An irregular basin of 113 km² (UTM 49N, EPSG:32649, 30 m pixels, 440 × 500 grid centred near
112.70°E 35.565°N). The basin shape, the river course and the terrain layout are fixed (they
stand for the real basin); textures, mine sites, villages, soils and weather vary with the seed.

Planted structure (what the data were built from)
--------------------------------------------------
Terrain
    ``dem = 780 m − 6 m/km southward tilt + 90 m · (1 − exp(−d_river / 2 km)) + 260 m · h(ρ)``
    plus smooth noise, where ρ is the radial position from the basin centre (0) to the boundary (1)
    and ``h(ρ) = ρ^2.5`` inside: a valley along the north–south river, rims up to ~1150 m.
Land cover (uint8 codes)
    1 forest on the high rims, 2 grassland on mid slopes, 3 farmland in the valley (thresholds on
    elevation + coherent noise), 4 construction around the mine sites and villages, 5 water (the
    river channel); 0 outside the boundary.
Climate (2010–2015, 72 monthly bands on a 0.005° EPSG:4326 grid)
    temperature = Jincheng climatology (basin mean 10.6 °C, Jan ≈ −3.5 °C, Jul ≈ 23.5 °C)
    + yearly and monthly anomalies − 0.6 °C per 100 m above the basin-mean elevation;
    precipitation = 575 mm/yr basin mean with a July–August peak, yearly factors (sd ≈ 15 %)
    and monthly noise, + 6 % per 100 m of elevation; solar radiation 200–600 MJ m⁻² month⁻¹
    (stored as W m⁻² monthly mean), dimmed in wet months.
Land degradation (11 mines west of the river)
    2–3 longwall goaf panels per mine; subsidence = Gaussian-smoothed panels × 1–3.2 m; cracks
    ∝ subsidence gradient; seeper where subsidence > 0.8 m (patchy); slope change = tilt of the
    subsidence bowl (deg); distance to the nearest mine. The planted LD is exactly the AHP
    index the pipeline computes: principal-eigenvector weights of ``ld/ahp_matrix.csv``, min–max
    scaling inside the basin, distance capped at 1500 m (lower is worse), re-scaled to [0, 1].
Soil (7 properties, 117 samples)
    a fertility field ``F`` = standardised (0.9 · tanh(east-of-river distance / 2.5 km) + 0.55 ·
    smooth noise with ~2.5 km correlation): SOC, TN and AK rise with F (better soils in the east);
    AP, clay, pH and BD are mostly independent smooth fields; samples = field + nugget noise.
Vegetation vigour (0..1)
    ``v = v0(class) · (1 − 0.75 · LD) · (1 + 0.45 · w_S · s) · (1 + 0.40 · w_C · c) · texture``
    (clipped to [0.02, 1])
    with ``s`` the soil quality (mean z-score of SOC, TN, AK), ``c`` the climate index
    (standardised smooth elevation: cooler and wetter uplands), ``w_S`` = east weight
    (logistic in the distance east of the river) and ``w_C`` = rim weight (ρ from 0.55 to 0.9).
    Mining dominates in the west near mines, soil in the east, climate on the rims.
NDVI
    16-day truth ``NDVI = base(class) + amp(class) · v · y(year) · phenology(doy)`` (double
    logistic; green-up later and senescence earlier at altitude; ``y`` follows the year's
    precipitation anomaly). Landsat images (two per year, spring and late summer, dated on MODIS
    composite dates) are the truth + 0.008 noise, one with a cloud hole; the MODIS series (23
    composites a year, sinusoidal 231.66 m) is the truth averaged onto MODIS pixels + 0.015 noise,
    stored as int16 × 10000.
NPP
    CASA (:func:`npp_core.casa.npp_monthly`, Zhu table: forest = deciduous broadleaf, grassland,
    farmland = cropland, construction = other, water = none → 0) on the monthly maximum-value
    composite of the truth and the climate resampled bilinearly to 30 m. Validation plots A and B
    are the planted NPP in a 45 m radius (near 248 and 276 gC m⁻² yr⁻¹) + 0.6 % noise; ``validation/mod17a3.tif`` is the planted
    NPP × class bias (forest 0.94, grassland 0.93, farmland 1.07, construction 1.04) averaged on
    the MODIS 463 m grid + 4 % noise.

Measured with seed 0 (CASA on the truth): basin NPP mean ≈ 292, SD ≈ 104 gC m⁻² yr⁻¹; forest ≈ 429,
grassland ≈ 280, farmland ≈ 240, construction ≈ 170, water 0 (study: 290 ± 110; 429, 287, 244, 168).
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import Resampling, reproject
from scipy.ndimage import gaussian_filter, maximum_filter, minimum_filter, sobel, uniform_filter

from npp_core.raster import Grid, write_raster

__all__ = ["generate", "planted_truth", "SampleError", "GRID", "YEARS", "CLASSES", "CASA_TYPE", "INDICATORS"]


class SampleError(ValueError):
    """Bad arguments to the sample generator."""


# --------------------------------------------------------------------------------------------
# Fixed layout
# --------------------------------------------------------------------------------------------
_UTM = CRS.from_epsg(32649)
_WGS84 = CRS.from_epsg(4326)
_SINU = CRS.from_proj4("+proj=sinu +R=6371007.181 +units=m +no_defs")
_RES = 30.0
_W, _H = 440, 500
_LEFT, _TOP = 647460.0, 3944520.0
#: The stored reference grid (UTM 49N, 30 m).
GRID = Grid(crs=_UTM, transform=Affine(_RES, 0.0, _LEFT, 0.0, -_RES, _TOP), width=_W, height=_H)
_PAD = 20  # internal padding (pixels) so that MODIS pixels at the edge see real vegetation
_XC, _YC = 654060.0, 3937020.0  # basin centre
_AREA_KM2 = 113.0
YEARS = tuple(range(2010, 2016))
CLASSES = {1: "forest", 2: "grassland", 3: "farmland", 4: "construction", 5: "water"}
CASA_TYPE = {"forest": "deciduous_broadleaf", "grassland": "grassland", "farmland": "cropland",
             "construction": "other", "water": "none"}
# Zhu et al. (2007) parameters of those CASA types: (εmax, NDVImax); NDVImin 0.023
_ZHU = {1: (0.692, 0.747), 2: (0.542, 0.634), 3: (0.542, 0.634), 4: (0.542, 0.634)}
INDICATORS = ("subsidence", "cracks", "seeper", "goaf", "slope_change", "distance_to_mine")
_INFLUENCE_M = 1500.0
# Saaty judgements (row over column), reciprocal; CR ≈ 0.01
_AHP = np.array(
    [
        [1, 2, 3, 2, 4, 3],
        [1 / 2, 1, 2, 1, 3, 2],
        [1 / 3, 1 / 2, 1, 1 / 2, 2, 1],
        [1 / 2, 1, 2, 1, 2, 2],
        [1 / 4, 1 / 3, 1 / 2, 1 / 2, 1, 1 / 2],
        [1 / 3, 1 / 2, 1, 1 / 2, 2, 1],
    ]
)
_N_MINES = 11
_N_SOIL = 117
# Climatology at the basin-mean elevation
_T_CLIM = np.array([-3.2, -0.2, 5.4, 12.2, 17.8, 21.8, 23.8, 22.2, 17.2, 11.4, 4.2, -1.5])
_T_CLIM = _T_CLIM - _T_CLIM.mean() + 10.6
_P_CLIM = np.array([6, 10, 20, 32, 50, 70, 130, 115, 65, 35, 15, 6], dtype=float)
_P_CLIM = _P_CLIM / _P_CLIM.sum() * 575.0
_S_CLIM = np.array([280, 310, 400, 480, 560, 560, 520, 480, 390, 340, 270, 250], dtype=float)
# NDVI curve per class: (winter base, amplitude, base vigour v0, green-up DOY, senescence DOY)
_PHEN = {
    1: (0.152, 0.445, 0.58, 118.0, 285.0),
    2: (0.111, 0.37, 0.65, 122.0, 280.0),
    3: (0.088, 0.43, 0.65, 135.0, 272.0),
    4: (0.08, 0.42, 0.50, 125.0, 278.0),
    5: (-0.08, 0.06, 1.00, 130.0, 270.0),
}
_MODIS_PIX = 231.65635826395825
_MODIS_X0, _MODIS_Y0 = -20015109.354, 10007554.677
_CLIM_RES = 0.005
_LAPSE = 0.006  # °C per m
_P_GRAD = 0.0006  # relative precipitation increase per m
_S_GRAD = 0.00005  # relative solar increase per m
_CLIM_BOUNDS = (112.58, 35.45, 112.82, 35.69)  # lon/lat box of the climate grid
_PLOT_TARGETS = {"A": (2, 248.0), "B": (3, 276.0)}  # class, planted NPP near the study's plots
_REF_BIAS = {1: 0.94, 2: 0.93, 3: 1.07, 4: 1.04, 5: 1.0}


@dataclass(frozen=True)
class _Pad:
    grid: Grid
    x: np.ndarray  # (rows, cols) pixel-centre eastings
    y: np.ndarray

    def crop(self, a: np.ndarray) -> np.ndarray:
        return a[..., _PAD:-_PAD, _PAD:-_PAD]


def _padded() -> _Pad:
    g = Grid(
        crs=_UTM,
        transform=Affine(_RES, 0.0, _LEFT - _PAD * _RES, 0.0, -_RES, _TOP + _PAD * _RES),
        width=_W + 2 * _PAD,
        height=_H + 2 * _PAD,
    )
    xs, ys = g.xy()
    x, y = np.meshgrid(xs, ys)
    return _Pad(g, x, y)


# --------------------------------------------------------------------------------------------
# Fixed geometry: boundary radius, river, smooth terrain
# --------------------------------------------------------------------------------------------
_HARM = ((2, 0.06, 0.4), (3, 0.07, 1.9), (4, 0.05, 0.3), (5, 0.035, 2.6), (7, 0.02, 4.0), (9, 0.012, 1.1))


def _radius_raw(theta: np.ndarray) -> np.ndarray:
    a, b = 5600.0, 6600.0  # semi-axes east-west, north-south (m)
    r = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
    f = 1.0
    for k, amp, ph in _HARM:
        f = f + amp * np.cos(k * theta + ph)
    return r * f


def _radius_scale() -> float:
    th = np.linspace(0, 2 * np.pi, 4096, endpoint=False)
    r = _radius_raw(th)
    area = 0.5 * np.sum(r**2) * (2 * np.pi / th.size) / 1e6
    return math.sqrt(_AREA_KM2 / area)


_RSCALE = _radius_scale()


def _radius(theta: np.ndarray) -> np.ndarray:
    return _radius_raw(theta) * _RSCALE


def _rho(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Radial position: 0 at the basin centre, 1 on the boundary."""
    u, v = x - _XC, y - _YC
    return np.hypot(u, v) / _radius(np.arctan2(v, u))


def _river_raw(y: np.ndarray) -> np.ndarray:
    v = np.asarray(y, dtype=float) - _YC
    return _XC + 350.0 + 520.0 * np.sin(2 * np.pi * v / 8200.0 + 0.7) + 230.0 * np.sin(2 * np.pi * v / 3100.0 + 2.1)


def _river_fit() -> tuple[float, float]:
    """Linear correction so the river enters at the northern tip and leaves at the southern tip."""
    th = np.linspace(0, 2 * np.pi, 7200, endpoint=False)
    r = _radius(th)
    x, y = _XC + r * np.cos(th), _YC + r * np.sin(th)
    n, s = int(np.argmax(y)), int(np.argmin(y))
    dn = x[n] - float(_river_raw(np.array(y[n])))
    ds = x[s] - float(_river_raw(np.array(y[s])))
    b = (dn - ds) / (y[n] - y[s])
    return dn - b * (y[n] - _YC), b


_RIVER_A, _RIVER_B = _river_fit()


def _river_x(y: np.ndarray) -> np.ndarray:
    """Easting of the river centre line at northing ``y`` (the river runs north–south, tip to tip)."""
    y = np.asarray(y, dtype=float)
    return _river_raw(y) + _RIVER_A + _RIVER_B * (y - _YC)


def _dem_smooth(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth part of the terrain (m a.s.l.), defined everywhere."""
    rho = _rho(x, y)
    h = np.where(rho <= 1.0, rho**2.5, np.exp(-(((rho - 1.0) / 0.35) ** 2)))
    d = np.abs(x - _river_x(y))
    return 780.0 + 6.0 * (y - _YC) / 1000.0 + 90.0 * (1.0 - np.exp(-d / 2000.0)) + 260.0 * h


# Side valleys: (northing of the confluence relative to the centre, m; side −1 west / +1 east; bearing deg)
_TRIBS = ((4200.0, -1, 20.0), (600.0, -1, -10.0), (-3600.0, -1, -25.0),
          (3000.0, 1, 15.0), (-500.0, 1, 5.0), (-4300.0, 1, -20.0))


def _tributaries() -> list[np.ndarray]:
    """Fixed side-valley centre lines, from the river up to the rim, as (n, 2) point arrays."""
    out = []
    for dy, side, bearing in _TRIBS:
        y0 = _YC + dy
        x0 = float(_river_x(np.array(y0)))
        a = math.radians(bearing)
        pts = []
        t = 0.0
        while True:
            wig = 140.0 * math.sin(2 * math.pi * t / 1700.0)
            x = x0 + side * (t * math.cos(a)) - side * wig * math.sin(a)
            y = y0 + t * math.sin(a) + wig * math.cos(a)
            if _rho(np.array(x), np.array(y)) > 0.97 or t > 9000:
                break
            pts.append((x, y))
            t += 30.0
        out.append(np.array(pts))
    return out


def _valley_depth(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Incision of the side valleys (m, ≥ 0), fading towards the main valley floor."""
    from scipy.spatial import cKDTree

    pts = np.vstack(_tributaries())
    d, _ = cKDTree(pts).query(np.column_stack([x.ravel(), y.ravel()]), distance_upper_bound=2000.0)
    d = np.minimum(d, 2000.0).reshape(x.shape)
    return 55.0 * np.exp(-d / 280.0) * np.clip(_rho(x, y) / 0.35, 0.0, 1.0)


def _boundary_polygon(n: int = 720) -> np.ndarray:
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = _radius(th)
    pts = np.column_stack([_XC + r * np.cos(th), _YC + r * np.sin(th)])
    return np.vstack([pts, pts[:1]])


# --------------------------------------------------------------------------------------------
# Random helpers
# --------------------------------------------------------------------------------------------
def _grf(rng: np.random.Generator, shape: tuple[int, int], corr_px: float) -> np.ndarray:
    """Standardised smooth Gaussian random field (Gaussian spectral filter, correlation ~corr_px)."""
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    sig = corr_px / 2.0
    filt = np.exp(-2.0 * (np.pi * sig) ** 2 * (fx**2 + fy**2))
    f = np.fft.irfft2(np.fft.rfft2(noise) * filt, s=shape)
    return (f - f.mean()) / f.std()


def _z(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    return (a - a[m].mean()) / a[m].std()


def _orthogonal(field: np.ndarray, covariates: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
    """``field`` minus its least-squares fit on ``covariates`` (fitted inside ``mask``), re-standardised."""
    X = np.column_stack(covariates)
    beta, *_ = np.linalg.lstsq(X, field[mask], rcond=None)
    res = field.copy()
    res[mask] = field[mask] - X @ beta
    return (res - res[mask].mean()) / res[mask].std()


def _ahp_weights() -> tuple[np.ndarray, float]:
    vals, vecs = np.linalg.eig(_AHP)
    k = int(np.argmax(vals.real))
    w = np.abs(vecs[:, k].real)
    w = w / w.sum()
    n = _AHP.shape[0]
    ci = (vals[k].real - n) / (n - 1)
    return w, ci / 1.24


# --------------------------------------------------------------------------------------------
# The landscape (cheap fields)
# --------------------------------------------------------------------------------------------
def _landscape(seed: int) -> dict[str, Any]:
    ss = np.random.SeedSequence([20260524, int(seed)])
    r_terrain, r_lc, r_mine, r_soil, r_veg, r_clim = (np.random.default_rng(s) for s in ss.spawn(6))
    P = _padded()
    x, y, shape = P.x, P.y, P.x.shape
    rho = _rho(x, y)
    inside = rho <= 1.0
    xr = _river_x(y)
    east = x - xr
    zs = _dem_smooth(x, y)
    dem = (zs - _valley_depth(x, y) + 16.0 * _grf(r_terrain, shape, 24) + 7.0 * _grf(r_terrain, shape, 8)
           + 2.5 * _grf(r_terrain, shape, 3))
    zref = float(zs[inside].mean())

    # land cover
    t = (dem - 780.0) / 345.0 + 0.13 * _grf(r_lc, shape, 16) + 0.05 * _grf(r_lc, shape, 5)
    lc = np.where(t > 0.72, 1, np.where(t > 0.40, 2, 3)).astype(np.uint8)

    # mines: west of the river, inside, spaced
    mines: list[tuple[float, float]] = []
    tries = 0
    while len(mines) < _N_MINES:
        tries += 1
        if tries > 100000:  # pragma: no cover - geometry guarantees room
            raise SampleError("could not place the mines")
        px = r_mine.uniform(_XC - 6500, _XC + 1000)
        py = r_mine.uniform(_YC - 7000, _YC + 7000)
        if _rho(np.array(px), np.array(py)) > 0.78 or px > _river_x(np.array(py)) - 1300:
            continue
        if all(math.hypot(px - a, py - b) > 1350 for a, b in mines):
            mines.append((round(px / 10) * 10.0, round(py / 10) * 10.0))
    mines.sort(key=lambda p: (-p[1], p[0]))
    mx = np.array([m[0] for m in mines])
    my = np.array([m[1] for m in mines])

    # goaf panels and subsidence
    goaf = np.zeros(shape, dtype=bool)
    smax_map = np.zeros(shape)
    for i in range(_N_MINES):
        for _ in range(int(r_mine.integers(2, 4))):
            ang = r_mine.uniform(0, 2 * np.pi)
            dist = r_mine.uniform(300, 850)
            cx, cy = mx[i] + dist * np.cos(ang), my[i] + dist * np.sin(ang)
            orient = r_mine.uniform(0, np.pi)
            length, width = r_mine.uniform(700, 1300), r_mine.uniform(180, 260)
            du, dv = x - cx, y - cy
            a = du * np.cos(orient) + dv * np.sin(orient)
            b = -du * np.sin(orient) + dv * np.cos(orient)
            panel = (np.abs(a) <= length / 2) & (np.abs(b) <= width / 2)
            goaf |= panel
            smax_map = np.where(panel, np.maximum(smax_map, r_mine.uniform(1.0, 3.2)), smax_map)
    subs = gaussian_filter(smax_map, 4.0) * 1.25
    subs = np.where(subs < 0.02, 0.0, subs)
    gy = sobel(subs, axis=0) / (8 * _RES)
    gx = sobel(subs, axis=1) / (8 * _RES)
    grad = np.hypot(gx, gy)
    tex = np.exp(0.35 * _grf(r_mine, shape, 3))
    cracks = np.where(subs > 0, 2500.0 * grad * tex, 0.0)
    seeper = (subs > 0.8) & (_grf(r_mine, shape, 6) > -0.3)
    slope = np.degrees(np.arctan(grad)) + np.abs(0.01 * r_mine.standard_normal(shape))
    d2 = np.full(shape, np.inf)
    for i in range(_N_MINES):
        d2 = np.minimum(d2, (x - mx[i]) ** 2 + (y - my[i]) ** 2)
    dist_mine = np.sqrt(d2)

    # construction: mine sites, villages, a town; water: the river
    constr = np.zeros(shape, dtype=bool)
    blob = _grf(r_lc, shape, 6)
    for i in range(_N_MINES):
        rad = r_lc.uniform(200, 330)
        constr |= np.hypot(x - mx[i], y - my[i]) + 60 * blob < rad
    nv = 0
    while nv < 18:
        vx, vy = r_lc.uniform(_XC - 6000, _XC + 6000), r_lc.uniform(_YC - 7000, _YC + 7000)
        if _rho(np.array(vx), np.array(vy)) > 0.85 or _dem_smooth(np.array(vx), np.array(vy)) > 900:
            continue
        constr |= np.hypot(x - vx, y - vy) + 50 * blob < r_lc.uniform(120, 280)
        nv += 1
    tx, ty = float(_river_x(np.array(_YC - 5200.0))) + 900.0, _YC - 5200.0
    constr |= np.hypot(x - tx, y - ty) + 80 * blob < 650
    lc = np.where(constr, 4, lc).astype(np.uint8)
    river = np.abs(east) < 45.0
    lc = np.where(river, 5, lc).astype(np.uint8)

    # planted LD (the AHP index as the pipeline computes it)
    w, cr = _ahp_weights()
    ind = {
        "subsidence": subs,
        "cracks": cracks,
        "seeper": seeper.astype(float),
        "goaf": goaf.astype(float),
        "slope_change": slope,
        "distance_to_mine": dist_mine,
    }
    ld = np.zeros(shape)
    for k, name in enumerate(INDICATORS):
        a = ind[name]
        if name == "distance_to_mine":
            a = np.minimum(a, _INFLUENCE_M)
            lo, hi = a[inside].min(), a[inside].max()
            sc = (hi - a) / (hi - lo)
        else:
            lo, hi = a[inside].min(), a[inside].max()
            sc = (a - lo) / (hi - lo)
        ld += w[k] * sc
    ld = (ld - ld[inside].min()) / (ld[inside].max() - ld[inside].min())

    # soil fields
    fert = _z(0.9 * np.tanh(east / 2500.0) + 0.55 * _grf(r_soil, shape, 85), inside)
    soc = np.clip(14.0 + 3.5 * fert + 0.8 * _grf(r_soil, shape, 40), 5.0, 25.0)
    tn = np.clip(0.07 * soc + 0.08 + 0.06 * _grf(r_soil, shape, 50), 0.4, 1.8)
    ak = np.clip(160.0 + 26.0 * fert + 10.0 * _grf(r_soil, shape, 60), 80.0, 250.0)
    # AP and clay are planted as irrelevant to vegetation: smooth fields made orthogonal (inside the
    # basin) to the terrain and fertility that drive the vigour, so they do not correlate with NPP by chance
    drivers = [np.ones(int(inside.sum())), zs[inside], fert[inside], np.abs(east[inside]), rho[inside]]
    ap = np.clip(np.exp(np.log(11.0) + 0.38 * _orthogonal(_grf(r_soil, shape, 70), drivers, inside)), 3.0, 30.0)
    clay = np.clip(20.0 + 3.8 * _orthogonal(_grf(r_soil, shape, 90), drivers, inside), 10.0, 30.0)
    ph = np.clip(7.85 - 0.08 * fert + 0.17 * _grf(r_soil, shape, 80), 7.2, 8.4)
    bd = np.clip(1.36 - 0.03 * fert + 0.06 * _grf(r_soil, shape, 75), 1.15, 1.55)
    soilq = (_z(soc, inside) + _z(tn, inside) + _z(ak, inside)) / 3.0

    # vigour
    w_s = 1.0 / (1.0 + np.exp(-east / 800.0))
    w_c = np.clip((rho - 0.55) / 0.35, 0.0, 1.0)
    clim_i = _z(zs, inside)
    v0 = np.zeros(shape)
    for c, (_, _, vb, _, _) in _PHEN.items():
        v0[lc == c] = vb
    texture = np.exp(0.05 * _grf(r_veg, shape, 3))
    vig = v0 * (1.0 - 0.75 * ld) * (1.0 + 0.45 * w_s * soilq) * (1.0 + 0.40 * w_c * clim_i) * texture
    vig = np.clip(vig, 0.02, 1.0)

    return {
        "P": P, "inside": inside, "rho": rho, "east": east, "dem": dem, "dem_smooth": zs, "zref": zref,
        "landcover": lc, "mines": (mx, my), "goaf": goaf, "subsidence": subs, "cracks": cracks,
        "seeper": seeper, "slope_change": slope, "distance_to_mine": dist_mine, "ld": ld,
        "ahp_weights": w, "ahp_cr": cr,
        "soil": {"CF": clay, "SOC": soc, "TN": tn, "AP": ap, "AK": ak, "pH": ph, "BD": bd},
        "soil_quality": soilq, "fertility": fert, "w_soil": w_s, "w_climate": w_c, "climate_index": clim_i,
        "vigour": vig, "rngs": {"veg": r_veg, "clim": r_clim},
    }


# --------------------------------------------------------------------------------------------
# Climate (coarse EPSG:4326 grid) and its 30 m version
# --------------------------------------------------------------------------------------------
def _clim_grid() -> Grid:
    lon0, lat0, lon1, lat1 = _CLIM_BOUNDS
    w = int(round((lon1 - lon0) / _CLIM_RES))
    h = int(round((lat1 - lat0) / _CLIM_RES))
    return Grid(crs=_WGS84, transform=Affine(_CLIM_RES, 0.0, lon0, 0.0, -_CLIM_RES, lat1), width=w, height=h)


def _months() -> list[str]:
    return [f"{y}-{m:02d}" for y in YEARS for m in range(1, 13)]


def _days_in_month(y: int, m: int) -> int:
    nxt = _dt.date(y + (m == 12), m % 12 + 1, 1)
    return (nxt - _dt.date(y, m, 1)).days


def _climate(L: dict[str, Any]) -> dict[str, Any]:
    """Monthly T (°C), P (mm), SOL (MJ m⁻²) on the coarse grid, shape (72, h, w)."""
    from pyproj import Transformer

    rng: np.random.Generator = L["rngs"]["clim"]
    g = _clim_grid()
    lon, lat = g.xy()
    LON, LAT = np.meshgrid(lon, lat)
    tr = Transformer.from_crs(_WGS84, _UTM, always_xy=True)
    ux, uy = tr.transform(LON, LAT)
    dz = _dem_smooth(ux, uy) - L["zref"]
    ny = len(YEARS)
    t_year = rng.normal(0.0, 0.45, ny)
    t_year -= t_year.mean()
    t_mon = rng.normal(0.0, 0.8, (ny, 12))
    t_mon -= t_mon.mean(axis=0)
    p_year = np.exp(rng.normal(0.0, 0.15, ny))
    p_year /= p_year.mean()
    p_mon = np.exp(rng.normal(0.0, 0.35, (ny, 12)))
    p_mon *= _P_CLIM.sum() / (p_mon * _P_CLIM).sum(axis=1, keepdims=True)
    s_fac = np.clip(1.0 - 0.12 * (p_mon * p_year[:, None] - 1.0), 0.85, 1.12)
    tm = (_T_CLIM[None] + t_year[:, None] + t_mon).reshape(-1)
    pm = (_P_CLIM[None] * p_year[:, None] * p_mon).reshape(-1)
    sm = (_S_CLIM[None] * s_fac).reshape(-1)
    T = tm[:, None, None] - _LAPSE * dz[None]
    P = pm[:, None, None] * (1.0 + _P_GRAD * dz[None])
    S = sm[:, None, None] * (1.0 + _S_GRAD * dz[None])
    days = np.array([_days_in_month(y, m) for y in YEARS for m in range(1, 13)], dtype=float)
    S_wm2 = S * 1e6 / (86400.0 * days[:, None, None])
    return {"grid": g, "T": T, "P": P, "S": S, "S_wm2": S_wm2, "dz": dz, "tm": tm, "pm": pm, "sm": sm, "t_year": t_year, "p_year": p_year}


def _to_grid(a: np.ndarray, src: Grid, dst: Grid, how: Resampling = Resampling.bilinear) -> np.ndarray:
    out = np.full((a.shape[0],) + dst.shape, np.nan, dtype=np.float64)
    reproject(
        source=np.ascontiguousarray(a, dtype=np.float64),
        destination=out,
        src_transform=src.transform,
        src_crs=src.crs,
        src_nodata=np.nan,
        dst_transform=dst.transform,
        dst_crs=dst.crs,
        dst_nodata=np.nan,
        resampling=how,
    )
    return out


# --------------------------------------------------------------------------------------------
# NDVI truth
# --------------------------------------------------------------------------------------------
def _modis_dates() -> list[_dt.date]:
    out = []
    for y in YEARS:
        for k in range(23):
            out.append(_dt.date(y, 1, 1) + _dt.timedelta(days=16 * k))
    return out


def _ndvi_truth(L: dict[str, Any], C: dict[str, Any], dates: list[_dt.date]) -> np.ndarray:
    """Truth NDVI at the given dates, shape (dates, rows, cols) float32, padded grid."""
    lc = L["landcover"]
    dz = L["dem_smooth"] - L["zref"]
    base = np.zeros(lc.shape)
    amp = np.zeros(lc.shape)
    g0 = np.zeros(lc.shape)
    s0 = np.zeros(lc.shape)
    for c, (b, a, _, gu, se) in _PHEN.items():
        m = lc == c
        base[m], amp[m], g0[m], s0[m] = b, a, gu, se
    g0 = g0 + 0.03 * dz
    s0 = s0 - 0.02 * dz
    av = (amp * L["vigour"]).astype(np.float32)
    base, g0, s0 = base.astype(np.float32), g0.astype(np.float32), s0.astype(np.float32)
    yf = {y: float(np.clip(1.0 + 0.3 * (C["p_year"][i] - 1.0), 0.85, 1.12)) for i, y in enumerate(YEARS)}
    ts = {y: float(C["t_year"][i]) for i, y in enumerate(YEARS)}
    out = np.empty((len(dates),) + lc.shape, dtype=np.float32)
    for k, d in enumerate(dates):
        doy = d.timetuple().tm_yday
        sh = -3.0 * ts[d.year]
        ph = 1.0 / (1.0 + np.exp((g0 - np.float32(doy - sh)) / np.float32(7.0)))
        ph -= 1.0 / (1.0 + np.exp((s0 - np.float32(doy + sh)) / np.float32(9.0)))
        out[k] = np.clip(base + av * np.float32(yf[d.year]) * np.clip(ph, 0.0, 1.0), -1.0, 1.0)
    return out


def _monthly_max(ndvi16: np.ndarray, dates: list[_dt.date]) -> np.ndarray:
    months = _months()
    out = np.full((len(months),) + ndvi16.shape[1:], -np.inf, dtype=np.float64)
    for k, d in enumerate(dates):
        i = months.index(f"{d.year}-{d.month:02d}")
        np.maximum(out[i], ndvi16[k], out=out[i])
    return out


def _class_params(lc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    eps = np.full(lc.shape, np.nan)
    nmax = np.full(lc.shape, np.nan)
    for c, (e, nx) in _ZHU.items():
        eps[lc == c] = e
        nmax[lc == c] = nx
    return eps, nmax


def _npp(L: dict[str, Any], C: dict[str, Any], ndvi_m: np.ndarray) -> dict[str, np.ndarray]:
    """Planted CASA NPP on the padded grid: annual (years, rows, cols) and mean, gC m⁻² yr⁻¹."""
    from npp_core.casa import npp_monthly

    P = L["P"]
    lc = L["landcover"]
    eps, nmax = _class_params(lc)
    # The coarse climate is affine in the coarse elevation anomaly per month, so its bilinear
    # resampling is the same affine function of the bilinearly resampled anomaly.
    dz = _to_grid(C["dz"][None], C["grid"], P.grid)[0]
    tm, pm, sm = C["tm"][:, None, None], C["pm"][:, None, None], C["sm"][:, None, None]
    annual = np.empty((len(YEARS),) + lc.shape)
    t_sum = np.zeros(lc.shape)
    p_sum = np.zeros(lc.shape)
    s_sum = np.zeros(lc.shape)
    for i in range(len(YEARS)):
        sl = slice(12 * i, 12 * i + 12)
        Tg = tm[sl] - _LAPSE * dz[None]
        Pg = np.maximum(pm[sl] * (1.0 + _P_GRAD * dz[None]), 0.0)
        Sg = np.maximum(sm[sl] * (1.0 + _S_GRAD * dz[None]), 0.0)
        t_sum += Tg.sum(axis=0)
        p_sum += Pg.sum(axis=0)
        s_sum += Sg.sum(axis=0)
        npp = npp_monthly(ndvi_m[sl], Tg, Pg, Sg, eps, 0.023, nmax, engine="numpy")
        npp = np.where((lc == 5)[None], 0.0, npp)
        annual[i] = npp.sum(axis=0)
    ny = len(YEARS)
    return {"annual": annual, "mean": annual.mean(axis=0), "mat": t_sum / (12 * ny), "map": p_sum / ny,
            "mas": s_sum / ny}


# --------------------------------------------------------------------------------------------
# Assembling everything
# --------------------------------------------------------------------------------------------
def _modis_grid(pixel: float, margin_m: float) -> Grid:
    """MODIS sinusoidal grid (global tiling lattice) covering the reference grid + margin."""
    from rasterio.warp import transform_bounds

    l, b, r, t = GRID.bounds
    sl, sb, sr, st = transform_bounds(_UTM, _SINU, l - margin_m, b - margin_m, r + margin_m, t + margin_m, densify_pts=51)
    c0 = math.floor((sl - _MODIS_X0) / pixel)
    c1 = math.ceil((sr - _MODIS_X0) / pixel)
    r0 = math.floor((_MODIS_Y0 - st) / pixel)
    r1 = math.ceil((_MODIS_Y0 - sb) / pixel)
    tr = Affine(pixel, 0.0, _MODIS_X0 + c0 * pixel, 0.0, -pixel, _MODIS_Y0 - r0 * pixel)
    return Grid(crs=_SINU, transform=tr, width=c1 - c0, height=r1 - r0)


def _landsat_dates(rng: np.random.Generator) -> list[_dt.date]:
    out = []
    for y in YEARS:
        for choices in ((113, 129, 145), (241, 257, 273)):
            doy = int(choices[int(rng.integers(0, 3))])
            out.append(_dt.date(y, 1, 1) + _dt.timedelta(days=doy - 1))
    return out


def _build(seed: int) -> dict[str, Any]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SampleError(f"seed: expected a non-negative integer, got {seed!r}. Pass e.g. seed=0.")
    L = _landscape(int(seed))
    C = _climate(L)
    mdates = _modis_dates()
    nd16 = _ndvi_truth(L, C, mdates)
    monthly = _monthly_max(nd16, mdates)
    N = _npp(L, C, monthly)
    return {"seed": int(seed), "L": L, "C": C, "mdates": mdates, "nd16": nd16, "monthly": monthly, "N": N}


def planted_truth(seed: int = 0) -> dict[str, Any]:
    """The hidden fields the sample dataset of ``seed`` was drawn from, on the reference grid.

    Parameters
    ----------
    seed : int
        Same seed as :func:`generate`.

    Returns
    -------
    dict
        ``grid`` (:class:`~npp_core.raster.Grid`, 500 × 440 UTM 49N 30 m), and arrays of shape
        (500, 440) unless stated:

        - ``inside`` bool, the basin; ``west`` bool, west of the river; ``river_x`` (500,) easting
          of the river centre per row (m);
        - ``zones``: dict of 0..1 weights ``mining`` (= LD), ``soil`` (east weight), ``climate``
          (rim weight);
        - ``dem`` (m), ``dem_smooth`` (m, the part the climate follows), ``landcover`` (uint8);
        - ``ld`` planted land degradation in [0, 1] (NaN outside); indicator arrays under
          ``indicators`` (``subsidence`` m, ``cracks`` m ha⁻¹, ``seeper`` 0/1, ``goaf`` 0/1,
          ``slope_change`` deg, ``distance_to_mine`` m); ``mines`` (11, 2) UTM x, y;
        - ``soil``: dict of planted soil fields CF (%), SOC (g/kg), TN (g/kg), AP (mg/kg),
          AK (mg/kg), pH, BD (g/cm³); ``soil_quality`` (z-score mean of SOC, TN, AK);
        - ``climate_index`` (standardised smooth elevation), ``vigour`` (0..1);
        - ``mat`` (°C), ``map`` (mm/yr), ``mas`` (MJ m⁻² yr⁻¹): 2010–2015 means of the climate
          resampled bilinearly to 30 m;
        - ``ndvi_monthly`` (72, 500, 440) float32, monthly maximum of the 16-day truth;
        - ``npp_annual`` (6, 500, 440) and ``npp_mean`` (gC m⁻² yr⁻¹, NaN outside the basin);
        - ``ahp_weights`` {indicator: weight}, ``ahp_cr``.
    """
    return _truth(_build(seed))


def _truth(B: dict[str, Any]) -> dict[str, Any]:
    L, N = B["L"], B["N"]
    P: _Pad = L["P"]
    ins = P.crop(L["inside"])
    nan_out = lambda a: np.where(ins, P.crop(a), np.nan)  # noqa: E731
    _, ys = GRID.xy()
    npp_annual = np.where(ins[None], P.crop(N["annual"]), np.nan)
    return {
        "grid": GRID,
        "inside": ins,
        "west": P.crop(L["east"]) < 0,
        "river_x": _river_x(ys),
        "zones": {"mining": nan_out(L["ld"]), "soil": P.crop(L["w_soil"]), "climate": P.crop(L["w_climate"])},
        "dem": P.crop(L["dem"]),
        "dem_smooth": P.crop(L["dem_smooth"]),
        "landcover": np.where(ins, P.crop(L["landcover"]), 0).astype(np.uint8),
        "ld": nan_out(L["ld"]),
        "indicators": {k: nan_out(L[k].astype(float)) for k in INDICATORS},
        "mines": np.column_stack(L["mines"]),
        "soil": {k: nan_out(v) for k, v in L["soil"].items()},
        "soil_quality": nan_out(L["soil_quality"]),
        "climate_index": nan_out(L["climate_index"]),
        "vigour": nan_out(L["vigour"]),
        "mat": nan_out(N["mat"]),
        "map": nan_out(N["map"]),
        "mas": nan_out(N["mas"]),
        "ndvi_monthly": P.crop(B["monthly"]).astype(np.float32),
        "npp_annual": npp_annual,
        "npp_mean": npp_annual.mean(axis=0),
        "ahp_weights": dict(zip(INDICATORS, (float(w) for w in L["ahp_weights"]))),
        "ahp_cr": float(L["ahp_cr"]),
    }


_COLORS = {0: (0, 0, 0, 0), 1: (34, 120, 50, 255), 2: (170, 210, 90, 255), 3: (240, 210, 90, 255),
           4: (200, 60, 60, 255), 5: (40, 110, 220, 255)}


def _reproject_to(a: np.ndarray, src: Grid, dst: Grid, how: Resampling) -> np.ndarray:
    out = np.full((a.shape[0],) + dst.shape, np.nan, dtype=np.float32)
    reproject(source=np.ascontiguousarray(a, dtype=np.float32), destination=out,
              src_transform=src.transform, src_crs=src.crs, src_nodata=np.nan,
              dst_transform=dst.transform, dst_crs=dst.crs, dst_nodata=np.nan, resampling=how)
    return out


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue(), encoding="utf-8")


def _colrow(inv: Affine, x: float, y: float) -> tuple[int, int]:
    return int(math.floor(inv.a * x + inv.b * y + inv.c)), int(math.floor(inv.d * x + inv.e * y + inv.f))


def _soil_samples(L: dict[str, Any], rng: np.random.Generator) -> list[list[Any]]:
    from pyproj import Transformer

    P: _Pad = L["P"]
    lc = L["landcover"]
    inv = ~P.grid.transform
    pts: list[tuple[float, float]] = []
    while len(pts) < _N_SOIL:
        x = float(rng.uniform(_XC - 7000, _XC + 7000))
        y = float(rng.uniform(_YC - 8000, _YC + 8000))
        if _rho(np.array(x), np.array(y)) > 0.97:
            continue
        c, r = _colrow(inv, x, y)
        if lc[r, c] in (4, 5):
            continue
        if all((x - a) ** 2 + (y - b) ** 2 > 560.0**2 for a, b in pts):
            pts.append((x, y))
    tr = Transformer.from_crs(_UTM, _WGS84, always_xy=True)
    nug = {"CF": (1.5, 1), "SOC": (1.0, 2), "TN": (0.06, 3), "AP": (0.15, 1), "AK": (10.0, 0),
           "pH": (0.06, 2), "BD": (0.03, 2)}
    lim = {"CF": (10, 30), "SOC": (5, 25), "TN": (0.4, 1.8), "AP": (3, 30), "AK": (80, 250),
           "pH": (7.2, 8.4), "BD": (1.15, 1.55)}
    rows = []
    for i, (x, y) in enumerate(pts):
        c, r = _colrow(inv, x, y)
        lon, lat = tr.transform(x, y)
        row: list[Any] = [f"S{i + 1:03d}", f"{lon:.6f}", f"{lat:.6f}"]
        for k in ("CF", "SOC", "TN", "AP", "AK", "pH", "BD"):
            v = float(L["soil"][k][r, c])
            sd, nd = nug[k]
            v = v * math.exp(sd * rng.standard_normal()) if k == "AP" else v + sd * rng.standard_normal()
            v = min(max(v, lim[k][0]), lim[k][1])
            row.append(f"{v:.{nd}f}")
        rows.append(row)
    return rows


def _plots(npp_mean: np.ndarray, lc: np.ndarray, ins: np.ndarray, rho: np.ndarray,
           rng: np.random.Generator) -> list[list[Any]]:
    m3 = uniform_filter(np.where(ins, npp_mean, 0.0), 3, mode="constant")
    same = (maximum_filter(lc, 3) == minimum_filter(lc, 3)) & (minimum_filter(ins.astype(np.uint8), 3) == 1)
    xs, ys = GRID.xy()
    rows = []
    for pid, (cls, target) in _PLOT_TARGETS.items():
        ok = same & (lc == cls) & (rho < 0.9)
        err = np.where(ok, np.abs(m3 - target), np.inf)
        cand = np.flatnonzero(err.ravel() < 3.0)
        k = int(cand[int(rng.integers(0, cand.size))]) if cand.size else int(np.argmin(err))
        r, c = divmod(k, lc.shape[1])
        meas = m3[r, c] * (1.0 + 0.006 * rng.standard_normal())
        rows.append([pid, f"{xs[c]:.1f}", f"{ys[r]:.1f}", f"{meas:.2f}", "45"])
    return rows


def _fmt(v: float, nd: int = 2) -> str:
    return f"{v:.{nd}f}"


def generate(outdir: str | Path, seed: int = 0) -> Path:
    """Write the synthetic Changhe Basin sample dataset.

    Parameters
    ----------
    outdir : path-like
        Destination folder (created if needed). Files of the dataset are overwritten; other files
        are left alone (old ``landsat/ndvi_*.tif`` images are removed so the folder matches the
        manifest).
    seed : int
        Seed of every random choice; the same seed gives byte-identical files.

    Returns
    -------
    Path
        ``outdir / "dataset.toml"``'s folder, i.e. the dataset path to pass to the pipeline.

    Notes
    -----
    Writes ``dataset.toml``, ``README.md``, ``boundary.geojson``, ``landcover.tif``, ``dem.tif``,
    ``climate/{tmean,prec,srad}_monthly.tif`` (72 bands, EPSG:4326 0.005°; solar in W m⁻²),
    ``landsat/ndvi_YYYY-MM-DD.tif`` (12), ``modis/ndvi_250m_16day.tif`` (138 bands, sinusoidal,
    int16 × 10000, nodata −3000), ``soil/samples.csv`` (117 rows), ``ld/*.tif`` (6 indicators),
    ``ld/ahp_matrix.csv``, ``ld/mines.csv``, ``validation/plots.csv`` and
    ``validation/mod17a3.tif`` (463 m sinusoidal). About 10 MB; a few seconds.
    """
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise SampleError(f"outdir: {out} exists and is not a folder. Choose a folder path.")
    B = _build(seed)
    return _write(out, B)


def _write(out: Path, B: dict[str, Any]) -> Path:
    """Write the files of a build (deterministic: the observation noise is re-seeded here)."""
    out.mkdir(parents=True, exist_ok=True)
    L, C, N = B["L"], B["C"], B["N"]
    rng = np.random.default_rng(np.random.SeedSequence([20260524, B["seed"], 1]))
    ldates = _landsat_dates(rng)
    P: _Pad = L["P"]
    ins = P.crop(L["inside"])
    lc = np.where(ins, P.crop(L["landcover"]), 0).astype(np.uint8)
    masked = lambda a: np.where(ins, P.crop(a.astype(float)), np.nan)  # noqa: E731

    # boundary
    from pyproj import Transformer

    tr = Transformer.from_crs(_UTM, _WGS84, always_xy=True)
    poly = _boundary_polygon()
    lon, lat = tr.transform(poly[:, 0], poly[:, 1])
    ring = [[round(float(a), 7), round(float(b), 7)] for a, b in zip(lon, lat)]
    ring[-1] = ring[0]
    gj = {"type": "FeatureCollection", "features": [{
        "type": "Feature",
        "properties": {"name": "Changhe Basin (synthetic sample)", "area_km2": _AREA_KM2},
        "geometry": {"type": "Polygon", "coordinates": [ring]}}]}
    (out / "boundary.geojson").write_text(json.dumps(gj, separators=(",", ":")) + "\n", encoding="utf-8")

    # land cover, terrain
    write_raster(out / "landcover.tif", lc, GRID, nodata=0, dtype="uint8", band_names=["landcover"],
                 colormap=_COLORS, tags={"classes": json.dumps({str(k): v for k, v in CLASSES.items()})})
    write_raster(out / "dem.tif", np.round(P.crop(L["dem"]), 1), GRID, band_names=["elevation"],
                 tags={"units": "m"})

    # climate
    months = _months()
    cg: Grid = C["grid"]
    write_raster(out / "climate" / "tmean_monthly.tif", np.round(C["T"], 2), cg, band_names=months,
                 tags={"units": "degC"})
    write_raster(out / "climate" / "prec_monthly.tif", np.round(C["P"], 2), cg, band_names=months,
                 tags={"units": "mm month-1"})
    write_raster(out / "climate" / "srad_monthly.tif", np.round(C["S_wm2"], 2), cg, band_names=months,
                 tags={"units": "W m-2 (monthly mean)"})

    # Landsat-like fine NDVI
    ldir = out / "landsat"
    ldir.mkdir(exist_ok=True)
    for old in ldir.glob("ndvi_*.tif"):
        old.unlink()
    xs, ys = GRID.xy()
    X, Y = np.meshgrid(xs, ys)
    fine_names = []
    cloud_k = 6  # 2013 spring image
    for k, d in enumerate(ldates):
        img = P.crop(B["nd16"][B["mdates"].index(d)]).astype(np.float64)
        img = np.clip(img + 0.008 * rng.standard_normal(img.shape), -1.0, 1.0)
        if k == cloud_k:
            cx = float(rng.uniform(_XC - 3000, _XC + 3000))
            cy = float(rng.uniform(_YC - 3000, _YC + 3000))
            img[((X - cx) / 520.0) ** 2 + ((Y - cy) / 360.0) ** 2 < 1.0] = np.nan
        name = f"landsat/ndvi_{d.isoformat()}.tif"
        write_raster(out / name, np.round(img, 4), GRID, band_names=[d.isoformat()],
                     tags={"sensor": "Landsat-like (synthetic)", "cloud_hole": str(k == cloud_k)})
        fine_names.append(name)

    # MODIS-like coarse NDVI
    mg = _modis_grid(_MODIS_PIX, 400.0)
    coarse = _reproject_to(B["nd16"], P.grid, mg, Resampling.average).astype(np.float64)
    coarse = coarse + 0.015 * rng.standard_normal(coarse.shape)
    coarse = np.where(np.isnan(coarse), np.nan, np.round(np.clip(coarse, -0.2, 1.0) * 10000.0))
    write_raster(out / "modis" / "ndvi_250m_16day.tif", coarse, mg, nodata=-3000, dtype="int16",
                 band_names=[d.isoformat() for d in B["mdates"]],
                 tags={"scale_factor": "0.0001", "sensor": "MODIS-like 16-day (synthetic)"})

    # soil
    _write_csv(out / "soil" / "samples.csv",
               ["id", "lon", "lat", "clay_pct", "soc_g_kg", "tn_g_kg", "ap_mg_kg", "ak_mg_kg", "ph", "bd_g_cm3"],
               _soil_samples(L, rng))

    # land degradation
    ld = out / "ld"
    write_raster(ld / "subsidence_m.tif", np.round(masked(L["subsidence"]), 3), GRID,
                 band_names=["subsidence"], tags={"units": "m"})
    write_raster(ld / "crack_density.tif", np.round(masked(L["cracks"]), 2), GRID,
                 band_names=["cracks"], tags={"units": "m ha-1"})
    write_raster(ld / "seeper.tif", masked(L["seeper"]), GRID, nodata=255, dtype="uint8",
                 band_names=["seeper"], tags={"values": "1 seeper/waterlogging, 0 none"})
    write_raster(ld / "goaf.tif", masked(L["goaf"]), GRID, nodata=255, dtype="uint8",
                 band_names=["goaf"], tags={"values": "1 above goaf, 0 none"})
    write_raster(ld / "slope_change.tif", np.round(masked(L["slope_change"]), 3), GRID,
                 band_names=["slope_change"], tags={"units": "deg"})
    write_raster(ld / "dist_mine_m.tif", np.round(masked(L["distance_to_mine"]), 1), GRID,
                 band_names=["distance_to_mine"], tags={"units": "m"})
    _write_csv(ld / "ahp_matrix.csv", ["indicator", *INDICATORS],
               [[n, *(f"{v:.6f}".rstrip("0").rstrip(".") for v in _AHP[i])] for i, n in enumerate(INDICATORS)])
    mx, my = L["mines"]
    _write_csv(ld / "mines.csv", ["id", "x", "y", "name"],
               [[i + 1, f"{mx[i]:.1f}", f"{my[i]:.1f}", f"Mine {i + 1:02d} (synthetic)"] for i in range(_N_MINES)])

    # validation
    npp_mean = P.crop(N["mean"])
    plots = _plots(npp_mean, lc, ins, P.crop(L["rho"]), rng)
    _write_csv(out / "validation" / "plots.csv", ["id", "x", "y", "measured_npp", "radius_m"], plots)
    bias = np.ones(L["landcover"].shape)
    for c, b in _REF_BIAS.items():
        bias[L["landcover"] == c] = b
    ref30 = N["mean"] * bias * (1.0 + 0.05 * rng.standard_normal(bias.shape))
    rg = _modis_grid(2 * _MODIS_PIX, 500.0)
    ref = _reproject_to(ref30[None], P.grid, rg, Resampling.average)[0].astype(np.float64)
    ref = ref * (1.0 + 0.04 * rng.standard_normal(ref.shape))
    write_raster(out / "validation" / "mod17a3.tif", np.round(ref, 2), rg, nodata=-9999,
                 band_names=["npp_2010_2015_mean"], tags={"units": "gC m-2 yr-1"})

    (out / "dataset.toml").write_text(_manifest(fine_names), encoding="utf-8")
    (out / "README.md").write_text(_readme(B["seed"], B, lc, ins, npp_mean, plots), encoding="utf-8")
    return out


#: Manifest sections shared by the sample basin and the benchmark areas built from it.
MANIFEST_LANDCOVER = """[landcover]
raster = "landcover.tif"

[landcover.classes]
1 = "forest"
2 = "grassland"
3 = "farmland"
4 = "construction"
5 = "water"

[landcover.casa_type]
forest = "deciduous_broadleaf"
grassland = "grassland"
farmland = "cropland"
construction = "other"
water = "none"

[terrain]
dem = "dem.tif"
"""
MANIFEST_SOIL_PROPERTIES = """[soil.properties]
CF = "clay_pct"
SOC = "soc_g_kg"
TN = "tn_g_kg"
AP = "ap_mg_kg"
AK = "ak_mg_kg"
pH = "ph"
BD = "bd_g_cm3"
"""
MANIFEST_DEGRADATION_INDICATORS = """[degradation.indicators]
subsidence = "ld/subsidence_m.tif"
cracks = "ld/crack_density.tif"
seeper = { path = "ld/seeper.tif", nodata = 255 }
goaf = { path = "ld/goaf.tif", nodata = 255 }
slope_change = "ld/slope_change.tif"
distance_to_mine = "ld/dist_mine_m.tif"

[degradation.direction]
distance_to_mine = "lower_is_worse"
"""


def _manifest(fine: list[str]) -> str:
    fine_txt = ",\n".join(f'    "{f}"' for f in fine)
    return f'''# Synthetic sample basin written by npp_core.sample.generate (see README.md)
name = "Changhe Basin (sample)"
grid = "landcover.tif"
boundary = "boundary.geojson"

{MANIFEST_LANDCOVER}
[ndvi]
fine = [
{fine_txt},
]
coarse = {{ path = "modis/ndvi_250m_16day.tif", scale = 0.0001, nodata = -3000 }}
composite = "max"

[climate]
temperature = "climate/tmean_monthly.tif"
precipitation = "climate/prec_monthly.tif"
solar = {{ path = "climate/srad_monthly.tif", units = "W m-2" }}

[soil]
samples = "soil/samples.csv"
crs = "EPSG:4326"
x_column = "lon"
y_column = "lat"

{MANIFEST_SOIL_PROPERTIES}
[degradation]
ahp = "ld/ahp_matrix.csv"
mines = "ld/mines.csv"

{MANIFEST_DEGRADATION_INDICATORS}
[validation]
plots = "validation/plots.csv"
crs = "EPSG:32649"
reference_npp = "validation/mod17a3.tif"
'''


def _readme(seed: int, B: dict[str, Any], lc: np.ndarray, ins: np.ndarray, npp: np.ndarray,
            plots: list[list[Any]]) -> str:
    L, N = B["L"], B["N"]
    P: _Pad = L["P"]
    dem = P.crop(L["dem"])
    B_C = B["C"]
    dz = _to_grid(B_C["dz"][None], B_C["grid"], P.grid)[0]
    T = B_C["tm"][:, None] - _LAPSE * P.crop(dz)[ins][None]
    Pr = B_C["pm"][:, None] * (1.0 + _P_GRAD * P.crop(dz)[ins][None])
    v = npp[ins]
    lines = [
        "# Changhe Basin sample dataset (synthetic)",
        "",
        f"Written by `npp_core.sample.generate(outdir, seed={int(seed)})`. Do not edit by hand: regenerate.",
        "Everything here is synthetic, modelled on the Changhe Basin coal-mining area (Jincheng, Shanxi,",
        "about 112.63–112.77°E, 35.50–35.63°N). `npp_core.sample.planted_truth(seed)` returns the hidden",
        "fields the files were drawn from.",
        "",
        "## Files",
        "| file | content |",
        "|---|---|",
        "| `dataset.toml` | the manifest (format: the Datasets section of the project README) |",
        "| `boundary.geojson` | basin polygon, lon/lat (EPSG:4326), 113 km² |",
        "| `landcover.tif` | reference grid: UTM 49N (EPSG:32649), 30 m, 440 × 500; uint8 1 forest, 2 grassland, "
        "3 farmland, 4 construction, 5 water, 0 = outside (nodata) |",
        "| `dem.tif` | elevation, m (optional role `[terrain] dem`) |",
        "| `climate/*_monthly.tif` | 72 monthly bands 2010-01..2015-12 (band descriptions YYYY-MM), EPSG:4326 "
        "0.005°: mean temperature °C, precipitation mm/month, solar radiation as monthly-mean W m⁻² |",
        "| `landsat/ndvi_YYYY-MM-DD.tif` | 12 Landsat-like 30 m NDVI images (float32), spring and late summer; "
        "one has a cloud hole (NaN) |",
        "| `modis/ndvi_250m_16day.tif` | 138 MODIS-like 16-day NDVI composites (band descriptions YYYY-MM-DD), "
        "MODIS sinusoidal 231.66 m, int16 × 10000, nodata −3000 |",
        "| `soil/samples.csv` | 117 soil samples: id, lon, lat, clay_pct, soc_g_kg, tn_g_kg, ap_mg_kg, ak_mg_kg, ph, "
        "bd_g_cm3 |",
        "| `ld/*.tif` | land-degradation indicators: subsidence m, crack density m ha⁻¹, seeper 0/1 (255 nodata), "
        "goaf 0/1 (255 nodata), slope change deg, distance to nearest mine m |",
        "| `ld/ahp_matrix.csv` | 6 × 6 AHP pairwise matrix (Saaty scale) |",
        "| `ld/mines.csv` | the 11 mines: id, x, y (UTM 49N), name |",
        "| `validation/plots.csv` | field plots A and B: id, x, y (UTM), measured_npp gC m⁻² yr⁻¹, radius_m |",
        "| `validation/mod17a3.tif` | MOD17A3-like reference NPP (gC m⁻² yr⁻¹, 2010–2015 mean), sinusoidal 463 m |",
        "",
        "## How the data were made (the planted truth)",
        "",
        "- **Terrain**: valley along a north–south river (it splits the basin into west and east), rims up to",
        "  ~1150 m. Forest on the rims, grassland on mid slopes, farmland in the valley, construction around",
        "  mines and villages, the river as water.",
        "- **Climate**: Jincheng-like seasonality; temperature −0.6 °C per 100 m, precipitation +6 % per 100 m;",
        "  year-to-year variation; solar dimmed in wet months.",
        "- **Mining (west)**: 11 mines west of the river with 2–3 goaf panels each; subsidence bowls, cracks on",
        "  the bowl flanks, seepers where subsidence > 0.8 m. The planted LD is the AHP index of the indicators",
        "  (eigenvector weights, min–max scaling inside the basin, distance capped at 1500 m).",
        "- **Soil**: a fertility field rising towards the east drives SOC, TN and AK; AP, clay, pH and BD are",
        "  mostly independent smooth fields; samples add nugget noise.",
        "- **Vegetation vigour** `v = v0(class) · (1 − 0.75·LD) · (1 + 0.45·w_soil·soil_quality) ·",
        "  (1 + 0.40·w_climate·climate_index) · texture`, with soil_quality the mean z-score of SOC, TN, AK,",
        "  climate_index the standardised (smooth) elevation, w_soil the east-of-river weight and w_climate",
        "  the rim weight. So mining dominates near the western mines, soil in the east, climate on the rims.",
        "- **NDVI**: 16-day truth = base(class) + amplitude(class) · v · year factor · double-logistic",
        "  phenology (later green-up at altitude). Landsat images are the truth at their dates (+0.008 noise);",
        "  the MODIS series is the truth averaged onto MODIS pixels (+0.015 noise).",
        "- **NPP**: CASA (`npp_core.casa.npp_monthly`, Zhu table, εmax forest 0.692 (deciduous broadleaf),",
        "  others 0.542; water 0) on the monthly maximum composite of the truth and the climate resampled",
        "  bilinearly to 30 m. Plots = planted NPP in a 45 m radius + 0.6 % noise; the reference product =",
        "  planted NPP × class bias (forest 0.94, grassland 0.93, farmland 1.07, construction 1.04), averaged",
        "  to 463 m, + 4 % noise.",
        "",
        "## Planted statistics (inside the basin)",
        "",
        f"- area {ins.sum() * _RES * _RES / 1e6:.2f} km²; elevation {dem[ins].min():.0f}–{dem[ins].max():.0f} m "
        f"(mean {dem[ins].mean():.0f} m)",
        f"- mean annual temperature {T.mean():.2f} °C (January {T[0::12].mean():.2f}, July {T[6::12].mean():.2f});"
        f" annual precipitation {Pr.sum(axis=0).mean() / len(YEARS):.1f} mm",
        "- AHP weights: " + ", ".join(f"{n} {w:.4f}" for n, w in zip(INDICATORS, L["ahp_weights"]))
        + f"; CR {L['ahp_cr']:.4f}",
        f"- NPP (2010–2015 mean, gC m⁻² yr⁻¹): mean {v.mean():.2f}, SD {v.std():.2f}, "
        f"min {v.min():.2f}, max {v.max():.2f}",
        "",
        "| class | area % | mean elevation m | planted NPP |",
        "|---|---|---|---|",
    ]
    for c, name in CLASSES.items():
        m = ins & (lc == c)
        lines.append(f"| {name} | {100 * m.sum() / ins.sum():.1f} | {dem[m].mean():.0f} | {npp[m].mean():.2f} |")
    lines += ["", "Validation plots: " + "; ".join(f"{p[0]} measured {p[3]}" for p in plots), ""]
    return "\n".join(lines)
