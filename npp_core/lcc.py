"""Local correlation coefficient (LCC) between two rasters in a moving window.

For every pixel the Pearson correlation of the valid (x, y) pairs inside a
``window × window`` neighbourhood is computed, with its two-sided p-value.

Algorithm (O(N), cost independent of the window side):

1. ``valid`` = both values finite (and inside ``mask``). Each raster is centred
   on, and scaled by, its global mean / standard deviation over the valid pairs
   (float64): window sums of uncentred data lose all precision where the local
   variance is small compared with the squared mean.
2. Window sums of 1, x, y, x², y², xy are running sums (add the entering row /
   column, subtract the leaving one) that are restarted from scratch every few
   rows and columns, so rounding error cannot accumulate over the raster.
   Windows are truncated at the raster edges (no padding values enter).
3. ``Cxy = Sxy − Sx·Sy/n`` (likewise ``Cxx``, ``Cyy``); ``r = Cxy/√(Cxx·Cyy)``
   clipped to [−1, 1]. ``r`` is NaN where ``n < min_valid`` or where a window
   variance is ~0 relative to its own sum of squares and the global variance
   (``Cxx ≤ rtol·(Sxx + n)`` in standardised units): a constant window gives
   NaN, never ±1 or 0.
4. ``t = r·√((n − 2)/(1 − r²))`` with ``n − 2`` degrees of freedom; the
   two-sided p-value ``P(|T| ≥ |t|)`` equals the regularised incomplete beta
   ``I_{1−r²}((n−2)/2, 1/2)``, evaluated by a compiled continued fraction
   (identical to ``scipy.stats.pearsonr`` to ~1e-13).

A pixel whose own x or y is missing (or is outside ``mask``) gets r = p = NaN
even if its window holds enough valid pairs; its ``n`` is still reported.

Chunked execution: pass the same :class:`GlobalStats` (from
:func:`global_stats` on the whole raster) to every block and overlap blocks by
``window // 2``; the result then equals the in-memory one.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange
from scipy.special import betaln

__all__ = [
    "LCCError",
    "GlobalStats",
    "global_stats",
    "local_correlation",
    "classify",
    "area_shares",
    "LCC_CLASSES",
    "SHARE_KEYS",
]

#: uint8 codes written by :func:`classify` (0 = outside the analysed area).
LCC_CLASSES: dict[int, str] = {
    0: "outside",
    1: "pos_p01",
    2: "pos_p05",
    3: "insignificant",
    4: "neg_p05",
    5: "neg_p01",
    6: "undefined",
}
#: Keys of :func:`area_shares` (the first five sum to 100 over defined pixels).
SHARE_KEYS = ("pos_p01", "pos_p05", "insignificant", "neg_p05", "neg_p01", "undefined")

_ROW_RESTART = 32  # rows between exact restarts of the vertical running sums
_COL_RESTART = 64  # columns between exact restarts of the horizontal running sums


class LCCError(ValueError):
    """Invalid input to the local correlation, with a message naming the fix."""


class GlobalStats(NamedTuple):
    """Global centring/scaling of x and y (means and standard deviations, input units)."""

    mean_x: float
    mean_y: float
    sd_x: float
    sd_y: float


def _check_pair(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2:
        raise LCCError(f"x, y: need 2-D rasters (rows, cols); got shapes {x.shape} and {y.shape}.")
    if x.shape != y.shape:
        raise LCCError(
            f"x, y: shapes differ ({x.shape} vs {y.shape}); align both rasters to the reference grid first."
        )
    valid = np.isfinite(x) & np.isfinite(y)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != x.shape or mask.dtype != bool:
            raise LCCError(
                f"mask: need a boolean array of shape {x.shape}; got {mask.dtype} {mask.shape}."
            )
        valid &= mask
    return x, y, valid


def global_stats(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> GlobalStats:
    """Means and standard deviations of x and y over the pixels where both are valid.

    Parameters
    ----------
    x, y : ndarray, shape (rows, cols)
        Rasters (any units; NaN = nodata).
    mask : ndarray of bool, shape (rows, cols), optional
        Study area; pixels outside are ignored.

    Returns
    -------
    GlobalStats
        ``sd`` is 0 when a raster is constant over the valid pairs, NaN when
        there is no valid pair.
    """
    x, y, valid = _check_pair(x, y, mask)
    if not valid.any():
        return GlobalStats(math.nan, math.nan, math.nan, math.nan)
    xv = x[valid]
    yv = y[valid]
    mx = float(xv.mean())
    my = float(yv.mean())
    return GlobalStats(mx, my, float(np.sqrt(np.mean((xv - mx) ** 2))), float(np.sqrt(np.mean((yv - my) ** 2))))


@njit(cache=True, nogil=True)
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta (modified Lentz), converges for x < (a+1)/(a+b+2)."""
    tiny = 1e-300
    qab = a + b
    qap = a + 1.0
    qam = a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < tiny:
        d = tiny
    d = 1.0 / d
    h = d
    for m in range(1, 2000):
        m2 = 2.0 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        if abs(d) < tiny:
            d = tiny
        c = 1.0 + aa / c
        if abs(c) < tiny:
            c = tiny
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        if abs(d) < tiny:
            d = tiny
        c = 1.0 + aa / c
        if abs(c) < tiny:
            c = tiny
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 4e-16:
            break
    return h


@njit(cache=True, nogil=True)
def _pvalue(r: float, df: float, lbeta: float) -> float:
    """Two-sided p of Pearson r with df = n − 2: I_{1−r²}(df/2, 1/2); lbeta = ln B(df/2, 1/2)."""
    a = 0.5 * df
    b = 0.5
    ar = abs(r)
    if ar >= 1.0:
        return 0.0
    if ar == 0.0:
        return 1.0
    x = (1.0 - ar) * (1.0 + ar)  # 1 − r², without cancellation near |r| = 1
    lx = math.log(x)
    l1x = 2.0 * math.log(ar)  # ln(1 − x) = ln r²
    front = math.exp(a * lx + b * l1x - lbeta)
    if x < (a + 1.0) / (a + b + 2.0):
        p = front * _betacf(a, b, x) / a
    else:
        p = 1.0 - front * _betacf(b, a, 1.0 - x) / b
    if p < 0.0:
        p = 0.0
    elif p > 1.0:
        p = 1.0
    return p


@njit(cache=True, nogil=True)
def _add_row(V, xs, ys, vs, i, sign):
    cols = xs.shape[1]
    for j in range(cols):
        if vs[i, j]:
            xv = xs[i, j]
            yv = ys[i, j]
            V[0, j] += sign
            V[1, j] += sign * xv
            V[2, j] += sign * yv
            V[3, j] += sign * xv * xv
            V[4, j] += sign * yv * yv
            V[5, j] += sign * xv * yv


@njit(cache=True, nogil=True, parallel=True)
def _lcc_kernel(xs, ys, vs, h, min_valid, rtol, lbeta, r_out, p_out, n_out):
    rows, cols = xs.shape
    n_blocks = (rows + _ROW_RESTART - 1) // _ROW_RESTART
    for blk in prange(n_blocks):
        i0 = blk * _ROW_RESTART
        i1 = min(rows, i0 + _ROW_RESTART)
        V = np.zeros((6, cols), dtype=np.float64)
        S = np.zeros(6, dtype=np.float64)
        for i in range(i0, i1):
            if i == i0:
                for ii in range(max(0, i - h), min(rows, i + h + 1)):
                    _add_row(V, xs, ys, vs, ii, 1.0)
            else:
                if i + h < rows:
                    _add_row(V, xs, ys, vs, i + h, 1.0)
                if i - h - 1 >= 0:
                    _add_row(V, xs, ys, vs, i - h - 1, -1.0)
            for j in range(cols):
                if j % _COL_RESTART == 0:
                    for q in range(6):
                        S[q] = 0.0
                    for jj in range(max(0, j - h), min(cols, j + h + 1)):
                        for q in range(6):
                            S[q] += V[q, jj]
                else:
                    if j + h < cols:
                        for q in range(6):
                            S[q] += V[q, j + h]
                    if j - h - 1 >= 0:
                        for q in range(6):
                            S[q] -= V[q, j - h - 1]
                n = S[0]
                n_out[i, j] = np.int32(n + 0.5)
                r = np.nan
                p = np.nan
                if vs[i, j] and n >= min_valid:
                    cxx = S[3] - S[1] * S[1] / n
                    cyy = S[4] - S[2] * S[2] / n
                    cxy = S[5] - S[1] * S[2] / n
                    if cxx > rtol * (S[3] + n) and cyy > rtol * (S[4] + n):
                        r = cxy / math.sqrt(cxx * cyy)
                        if r > 1.0:
                            r = 1.0
                        elif r < -1.0:
                            r = -1.0
                        k = int(n + 0.5)
                        p = _pvalue(r, n - 2.0, lbeta[k])
                r_out[i, j] = r
                p_out[i, j] = p


def local_correlation(
    x: np.ndarray,
    y: np.ndarray,
    window: int,
    min_valid: int = 3,
    *,
    mask: np.ndarray | None = None,
    stats: GlobalStats | None = None,
    rtol: float = 1e-10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moving-window Pearson correlation of two rasters with its p-value.

    Parameters
    ----------
    x, y : ndarray, shape (rows, cols)
        Co-registered rasters (any units; NaN = nodata), e.g. a driver and NPP.
    window : int
        Odd window side in pixels (≥ 3). Windows are truncated at the edges.
    min_valid : int, default 3
        Fewest valid pairs in a window for a defined r (≥ 3, so df ≥ 1).
    mask : ndarray of bool, shape (rows, cols), optional
        Study area; pixels outside neither enter windows nor get an r.
    stats : GlobalStats, optional
        Centring/scaling to use (from :func:`global_stats` on the full raster);
        needed for exact chunked == in-memory results. Default: computed here.
    rtol : float, default 1e-10
        Relative tolerance below which a window variance counts as zero.

    Returns
    -------
    r : ndarray of float64, shape (rows, cols)
        Local Pearson r in [−1, 1]; NaN where undefined (pixel missing,
        n < min_valid, or x or y constant in the window).
    p : ndarray of float64, shape (rows, cols)
        Two-sided p-value (t-test with n − 2 df); NaN where r is NaN.
    n : ndarray of int32, shape (rows, cols)
        Number of valid pairs in each (truncated) window.

    Raises
    ------
    LCCError
        Shapes differ, window not an odd integer ≥ 3, min_valid < 3, bad mask.
    """
    x, y, valid = _check_pair(x, y, mask)
    if isinstance(window, bool) or int(window) != window or window < 3 or window % 2 == 0:
        raise LCCError(f"window={window!r}: must be an odd integer ≥ 3 (e.g. 5); set lcc.window.")
    window = int(window)
    if isinstance(min_valid, bool) or int(min_valid) != min_valid or min_valid < 3:
        raise LCCError(f"min_valid={min_valid!r}: must be an integer ≥ 3 (a t-test needs n − 2 ≥ 1).")
    if not (0.0 <= rtol < 1e-3):
        raise LCCError(f"rtol={rtol!r}: must be in [0, 1e-3).")
    rows, cols = x.shape
    r_out = np.full((rows, cols), np.nan)
    p_out = np.full((rows, cols), np.nan)
    n_out = np.zeros((rows, cols), dtype=np.int32)
    if stats is None:
        stats = global_stats(x, y, mask)
    if not valid.any():
        return r_out, p_out, n_out
    if not all(np.isfinite(v) for v in stats):
        raise LCCError(f"stats={stats!r}: means and sds must be finite; compute them with global_stats().")
    sx = stats.sd_x if stats.sd_x > 0 else 1.0
    sy = stats.sd_y if stats.sd_y > 0 else 1.0
    with np.errstate(invalid="ignore"):
        xs = np.where(valid, (x - stats.mean_x) / sx, 0.0)
        ys = np.where(valid, (y - stats.mean_y) / sy, 0.0)
    kmax = window * window
    df = np.arange(kmax + 1, dtype=np.float64) - 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        lbeta = np.where(df > 0, betaln(np.maximum(df, 1.0) / 2.0, 0.5), np.nan)
    _lcc_kernel(xs, ys, valid, window // 2, float(min_valid), float(rtol), lbeta, r_out, p_out, n_out)
    return r_out, p_out, n_out


def classify(r: np.ndarray, p: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Significance classes of a local correlation (codes in :data:`LCC_CLASSES`).

    Parameters
    ----------
    r, p : ndarray, same shape
        Local r and its two-sided p (NaN = undefined).
    mask : ndarray of bool, optional
        Analysed pixels; outside → code 0.

    Returns
    -------
    ndarray of uint8, same shape
        1 r>0 & p<0.01, 2 r>0 & 0.01≤p<0.05, 3 p≥0.05 (insignificant),
        4 r<0 & 0.01≤p<0.05, 5 r<0 & p<0.01, 6 undefined (r or p NaN),
        0 outside ``mask``.
    """
    r = np.asarray(r, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if r.shape != p.shape:
        raise LCCError(f"r, p: shapes differ ({r.shape} vs {p.shape}); pass the two bands of one LCC result.")
    codes = np.full(r.shape, 6, dtype=np.uint8)
    defined = np.isfinite(r) & np.isfinite(p)
    with np.errstate(invalid="ignore"):
        codes[defined & (p >= 0.05)] = 3
        codes[defined & (r > 0) & (p < 0.05)] = 2
        codes[defined & (r > 0) & (p < 0.01)] = 1
        codes[defined & (r < 0) & (p < 0.05)] = 4
        codes[defined & (r < 0) & (p < 0.01)] = 5
        # r == 0 exactly cannot have p < 0.05; keep it insignificant
        codes[defined & (r == 0)] = 3
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != r.shape:
            raise LCCError(f"mask: shape {mask.shape} differs from r {r.shape}.")
        codes[~mask] = 0
    return codes


def area_shares(r: np.ndarray, p: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Area shares (percent) of the LCC significance classes.

    Parameters
    ----------
    r, p : ndarray, same shape
        Local r and p (NaN = undefined).
    mask : ndarray of bool, optional
        Analysed pixels (study area with NPP and the driver defined). Default:
        every pixel.

    Returns
    -------
    dict
        ``pos_p01, pos_p05, insignificant, neg_p05, neg_p01``: percent of the
        *defined* analysed pixels (sum to 100; all 0.0 when none is defined);
        ``undefined``: percent of *all* analysed pixels without a defined r.
    """
    codes = classify(r, p, mask)
    analysed = codes != 0
    n_all = int(analysed.sum())
    counts = np.bincount(codes[analysed].ravel(), minlength=7)
    n_def = int(counts[1:6].sum())
    out: dict[str, float] = {}
    for code, key in zip(range(1, 6), SHARE_KEYS[:5]):
        out[key] = 100.0 * counts[code] / n_def if n_def else 0.0
    out["undefined"] = 100.0 * counts[6] / n_all if n_all else 0.0
    return out
