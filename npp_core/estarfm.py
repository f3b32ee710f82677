"""ESTARFM spatio-temporal fusion of fine and coarse images (Zhu et al., 2010).

The Enhanced Spatial and Temporal Adaptive Reflectance Fusion Model predicts
the fine-resolution image at a date t0 from two fine images F1, F2 (dates
t1 < t2), the coarse images C1, C2 of the same dates and the coarse image C0
at t0, every coarse image already resampled onto the fine grid. The algorithm
follows ``specs/estarfm.md`` (the authors' 2018 revision of their code), with
three deliberate differences: NaN / ``nodata`` pixels are honoured in every
image, the valid range is a parameter (NDVI needs ``(-1, 1)``), and the image
is processed as a whole (no 500 × 500 blocks, so no seams; tiles with a
``window // 2`` halo reproduce the whole-image result when they are given the
whole image's :func:`similarity_thresholds` or :func:`series_thresholds`).

Public API
----------
- :func:`fuse` — one prediction date, 2-D (one band) or 3-D (bands, rows, cols);
- :func:`fuse_series` — a coarse time series, each date predicted from its
  bracketing fine pair; the search for similar pixels is done once per pair;
- :func:`monthly_composite` — 16-day (or any) series to calendar months;
- :func:`similarity_thresholds` — the global similarity thresholds (for tiling);
- :func:`series_thresholds` — the same for every pair a series uses (tiling
  ``fuse_series``).

Design of the kernel
--------------------
Everything except C0 depends only on the fine pair: validity, spectral
similarity R, the similar pixels of each centre pixel, their weights, the
conversion coefficient V. The compiled kernel (numba) visits the window of a
centre pixel once for the weights and regression sums, then takes the
weighted sums Σ weight·C0 of every prediction date of the pair (and Σ
weight·C1, Σ weight·C2) at once. A date whose C0 has a missing pixel inside
the window (where the pair itself is valid) changes the similar-pixel set;
such (pixel, date) cases are recomputed alone with the date's own validity,
so a series gives the numbers of date-by-date :func:`fuse`.

Single band (NDVI), the common case, uses a planar layout (one contiguous
array per quantity, C0 date-major): every window pixel is visited along image
rows, masked and branch-free, so the loops vectorise; window rows are padded
to multiples of 8 pixels. Two centres of one image column share the reads of
the C0 planes, and a block of centres keeps its weights in cache while all
dates are summed. Pairs of rows go to the threads one at a time (dynamic
chunks), so a basin mask that leaves rows very unequal does not idle a core.
The reduction loops use fast-math ``reassoc``/``contract`` only (sums
reordered, no NaN/Inf assumptions): results agree with a sequential
summation to ~1e-14, and each centre's arithmetic depends only on its window
— never on its partner, block or tile — so tiles reproduce the whole image to
the bit. Several bands use the pixel-major kernel with compacted lists of
similar pixels. Window means of the coarse images (temporal weights) use
direct sums over the truncated window, separably and in a fixed order, which
makes them independent of tiling to the last bit.
"""
from __future__ import annotations

import datetime as _dt
from functools import lru_cache
from typing import Callable, Mapping, Sequence

import numba
import numpy as np
from numba import njit, prange

__all__ = [
    "EstarfmError",
    "fuse",
    "fuse_series",
    "monthly_composite",
    "series_thresholds",
    "similarity_thresholds",
]

class EstarfmError(ValueError):
    """Invalid ESTARFM input; the message names the input, the problem and the fix."""


# --------------------------------------------------------------------------- #
# input checks and preparation
# --------------------------------------------------------------------------- #
def _as_bands(name: str, a: np.ndarray, nodata: float | None) -> np.ndarray:
    """Return ``a`` as float64 (bands, rows, cols) with NaN for nodata."""
    arr = np.asarray(a)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise EstarfmError(
            f"{name}: expected a 2-D (rows, cols) or 3-D (bands, rows, cols) array, got shape {arr.shape}."
        )
    out = np.array(arr, dtype=np.float64, copy=True)
    if nodata is not None and not np.isnan(nodata):
        out[out == nodata] = np.nan
    out[~np.isfinite(out)] = np.nan
    return out


def _check_settings(window: int, classes: int, valid_range: Sequence[float]) -> tuple[int, float, float]:
    if int(window) != window or window < 3 or window % 2 == 0:
        raise EstarfmError(
            f"window={window}: the moving window must be an odd whole number of fine pixels >= 3 (e.g. 51)."
        )
    if int(classes) != classes or classes < 1:
        raise EstarfmError(f"classes={classes}: the number of classes must be a whole number >= 1 (e.g. 4).")
    try:
        lo, hi = (float(v) for v in valid_range)
    except (TypeError, ValueError):
        raise EstarfmError(
            f"valid_range={valid_range!r}: expected two numbers (min, max), e.g. (-1, 1) for NDVI."
        ) from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise EstarfmError(
            f"valid_range={valid_range!r}: need finite min < max, e.g. (-1, 1) for NDVI or (0, 10000) for "
            "reflectance x 10000."
        )
    return int(window), float(lo), float(hi)


def _check_range(named: Sequence[tuple[str, np.ndarray]], lo: float, hi: float) -> None:
    """Raise when most valid values lie outside the valid range (wrong units)."""
    inside = 0
    total = 0
    vmin, vmax = np.inf, -np.inf
    for _, a in named:
        v = a[np.isfinite(a)]
        if v.size == 0:
            continue
        inside += int(np.count_nonzero((v >= lo) & (v <= hi)))
        total += v.size
        vmin = min(vmin, float(v.min()))
        vmax = max(vmax, float(v.max()))
    if total == 0 or inside >= 0.5 * total:
        return
    names = ", ".join(dict.fromkeys(n for n, _ in named))
    msg = (
        f"valid_range=({lo:g}, {hi:g}) excludes {100.0 * (1 - inside / total):.0f}% of the valid values of "
        f"{names} (data span {vmin:g} .. {vmax:g}): the images and the range are in different units. "
    )
    if hi <= 1.5 and 1.5 < max(abs(vmin), abs(vmax)) <= 15000:
        msg += (
            "The images look like NDVI scaled by 10000: multiply them by 0.0001 (scale 0.0001) or pass "
            "valid_range=(-10000, 10000)."
        )
    else:
        msg += "Pass a valid_range in the images' units, e.g. (-1, 1) for NDVI or (0, 10000) for reflectance x 10000."
    raise EstarfmError(msg)


def similarity_thresholds(
    fine1: np.ndarray, fine2: np.ndarray, *, classes: int = 4, nodata: float | None = None
) -> np.ndarray:
    """Similarity thresholds ``std(image) * 2 / classes`` per band and fine image.

    Parameters
    ----------
    fine1, fine2 : ndarray, shape (rows, cols) or (bands, rows, cols)
        The fine images of the pair. NaN and ``nodata`` are missing.
    classes : int, default 4
        Number of land-cover classes assumed in the scene.
    nodata : float, optional
        Extra missing-value marker.

    Returns
    -------
    ndarray, shape (2 * bands,)
        Thresholds in image units: first the bands of ``fine1``, then those of
        ``fine2``. The standard deviation (ddof = 1) is taken over pixels that
        are valid in every band of both fine images.

    Notes
    -----
    The thresholds are global: pass the whole image's thresholds to
    :func:`fuse` (``thresholds=``) when fusing tiles so that every tile uses
    the same similar-pixel rule.
    """
    f1 = _as_bands("fine1", fine1, nodata)
    f2 = _as_bands("fine2", fine2, nodata)
    if f1.shape != f2.shape:
        raise EstarfmError(f"fine1 {f1.shape} and fine2 {f2.shape}: shapes differ; give images on one grid.")
    ok = np.isfinite(f1).all(axis=0) & np.isfinite(f2).all(axis=0)
    if ok.sum() < 2:
        raise EstarfmError("fine1/fine2: fewer than two pixels are valid in both fine images; nothing to fuse.")
    th = [np.std(f[b][ok], ddof=1) * 2.0 / classes for f in (f1, f2) for b in range(f.shape[0])]
    return np.asarray(th, dtype=np.float64)


@lru_cache(maxsize=8)
def _f_critical(max_df: int) -> np.ndarray:
    """Critical F(1, df) values at the 5 % level, index = df (index 0 unused: +inf)."""
    from scipy.stats import f as f_dist

    df = np.arange(1, max_df + 1, dtype=np.float64)
    out = np.empty(max_df + 1)
    out[0] = np.inf
    out[1:] = f_dist.isf(0.05, 1, df)
    return out


@lru_cache(maxsize=8)
def _distance_table(w: int) -> np.ndarray:
    """Relative distance 1 + sqrt(dx² + dy²) / w for offsets -w..w, shape (2w+1, 2w+1)."""
    off = np.arange(-w, w + 1, dtype=np.float64)
    return 1.0 + np.sqrt(off[:, None] ** 2 + off[None, :] ** 2) / float(w)


def _spectral_similarity(f1: np.ndarray, f2: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """Per-pixel spectral similarity R between fine and coarse values, shape (rows, cols).

    One band: 1 - (|(F1-C1)/(F1+C1)| + |(F2-C2)/(F2+C2)|) / 2; several bands:
    the correlation between the pixel's fine and coarse values over all bands
    and both dates. NaN (undefined) becomes 0.5.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        if f1.shape[0] == 1:
            r = 1.0 - 0.5 * (np.abs((f1[0] - c1[0]) / (f1[0] + c1[0])) + np.abs((f2[0] - c2[0]) / (f2[0] + c2[0])))
        else:
            x = np.concatenate([f1, f2], axis=0)
            y = np.concatenate([c1, c2], axis=0)
            xm = x - x.mean(axis=0)
            ym = y - y.mean(axis=0)
            r = (xm * ym).sum(axis=0) / np.sqrt((xm * xm).sum(axis=0) * (ym * ym).sum(axis=0))
    r[np.isnan(r)] = 0.5
    return r


# --------------------------------------------------------------------------- #
# compiled kernels
# --------------------------------------------------------------------------- #
@njit(parallel=True, cache=True, nogil=True)
def _window_sum(a: np.ndarray, w: int) -> np.ndarray:  # pragma: no cover - numba
    """Sum of each plane of ``a`` (m, rows, cols) over the (2w+1)² window truncated at the edges.

    Direct sums, first down the columns (rows in ascending order) and then
    along the row (columns in ascending order), each starting from 0.0: a
    pixel's result depends only on its window, to the last bit (tiling-safe).
    The loops run across columns, so they vectorise without reordering any sum.
    """
    m, rows, cols = a.shape
    out = np.empty_like(a)
    for i in prange(m * rows):
        k = i // rows
        r = i - k * rows
        r0 = max(0, r - w)
        r1 = min(rows, r + w + 1)
        tmp = np.zeros(cols)
        for rr in range(r0, r1):
            src = a[k, rr]
            for c in range(cols):
                tmp[c] += src[c]
        o = out[k, r]
        for c in range(cols):
            o[c] = 0.0
        for d in range(-w, w + 1):
            # out[c] += tmp[c + d] for every c whose truncated window holds c + d
            lo_c = max(0, -d)
            hi_c = min(cols, cols - d)
            if hi_c <= lo_c:
                continue
            dst = o[lo_c:hi_c]
            src = tmp[lo_c + d:hi_c + d]
            for c in range(hi_c - lo_c):
                dst[c] += src[c]
    return out


# fast-math flags of the reduction loops: reorder sums and fuse multiply-adds
# only (no assumption about NaN / Inf, whose handling the kernel relies on)
_FM = {"reassoc", "contract"}
# padding (elements) around the planar arrays: window rows are processed in
# whole multiples of 8 pixels, the pixels past the window masked out
_PAD = 8


@njit(cache=True, nogil=True, fastmath=_FM)
def _similar_sums_1(r, c, w, cols, r0, r1, c0, c1, F1, F2, X1, X2, OMR, ta, tb, dtab, wbuf, sums):  # pragma: no cover
    """Weights and regression sums over the similar pixels of centre (r, c), single band.

    The window is rows ``r0:r1``, columns ``c0:c1`` (truncated at the image
    edges), processed in rows of ``m`` = (c1 - c0) rounded up to a multiple
    of 8. A window pixel q is similar when |F1[q]-F1[p]| < ta and
    |F2[q]-F2[p]| < tb (``F1``/``F2`` are NaN where q is not valid, which
    fails the test). Its weight 1/((1-R)·d + 1e-7) goes to ``wbuf`` (rows of
    ``m``, 0 for every other pixel) and ``sums`` gets Σw, Σdx1, Σdx2,
    Σ(dy1+dy2), Σ(dx1²+dx2²), Σ(dx1·dy1+dx2·dy2), Σ(dy1²+dy2²), with dx, dy the
    coarse / fine values minus the centre's C1 / F1. Returns the number of
    similar pixels.

    Every window pixel is visited (masked, branch-free) along image rows, so
    the loop vectorises; its sums are reordered (fast-math ``reassoc`` and
    ``contract`` only: NaN handling unchanged). The arithmetic depends only on
    the window, so tiles with a halo reproduce the whole image to the bit.
    """
    win = 2 * w + 1
    p = r * cols + c
    wc = c1 - c0
    m = ((wc + 7) >> 3) << 3
    fa = F1[p]
    fb = F2[p]
    xc = X1[p]
    cnt = 0.0
    stot = 0.0
    ux1 = 0.0
    ux2 = 0.0
    uy = 0.0
    sxx = 0.0
    sxy = 0.0
    syy = 0.0
    for rr in range(r0, r1):
        # row slices indexed from 0 (no negative-index handling, so the loop vectorises)
        base = rr * cols + c0
        drow = (rr - r + w) * win + c0 - c + w
        g1 = F1[base:base + m]
        g2 = F2[base:base + m]
        y1 = X1[base:base + m]
        y2 = X2[base:base + m]
        om = OMR[base:base + m]
        dd = dtab[drow:drow + m]
        wb = wbuf[(rr - r0) * m:(rr - r0 + 1) * m]
        for i in range(m):
            f1 = g1[i]
            f2 = g2[i]
            ok = (abs(f1 - fa) < ta) & (abs(f2 - fb) < tb) & (i < wc)
            one = 1.0 if ok else 0.0
            wj = one / (om[i] * dd[i] + 1e-7)
            wb[i] = wj
            cnt += one
            stot += wj
            dx1 = (y1[i] - xc) if ok else 0.0
            dx2 = (y2[i] - xc) if ok else 0.0
            dy1 = (f1 - fa) if ok else 0.0
            dy2 = (f2 - fa) if ok else 0.0
            ux1 += dx1
            ux2 += dx2
            uy += dy1 + dy2
            sxx += dx1 * dx1 + dx2 * dx2
            sxy += dx1 * dy1 + dx2 * dy2
            syy += dy1 * dy1 + dy2 * dy2
    sums[0] = stot
    sums[1] = ux1
    sums[2] = ux2
    sums[3] = uy
    sums[4] = sxx
    sums[5] = sxy
    sums[6] = syy
    return int(cnt)


@njit(cache=True, nogil=True, fastmath=_FM)
def _plane_sums(m, cols, u, P, sel, ns, ra0, ra1, wba, acca, rb0, rb1, wbb, accb, zero):  # pragma: no cover
    """Weighted window sums of planes of ``P`` for two centres of one image column at once.

    acca[k] = Σ wba·P[sel[k]] over the window of centre a: rows ``ra0:ra1``,
    columns ``u:u+m`` (``m`` weights per row in ``wba``, as written by
    :func:`_similar_sums_1`, 0 past the window); likewise ``accb`` for centre
    b, the centre below (rows ``rb0:rb1``, same columns). Every image row is
    read once for both centres; a row outside a centre's window counts with
    the weights ``zero`` (all 0), which leaves its sums unchanged to the bit,
    so a centre's sums do not depend on its partner (give b = a for a single
    centre). ``P`` holds finite planes (0 where not valid) followed by
    ``_PAD`` elements. Four planes at a time, so each weight is loaded once
    per four planes.
    """
    q0 = min(ra0, rb0)
    q1 = max(ra1, rb1)
    k = 0
    while k < ns:
        nk = min(4, ns - k)
        # a short block repeats its last plane (same sum, stored twice)
        i0 = sel[k]
        i1 = sel[k + min(1, nk - 1)]
        i2 = sel[k + min(2, nk - 1)]
        i3 = sel[k + nk - 1]
        sa0 = 0.0
        sa1 = 0.0
        sa2 = 0.0
        sa3 = 0.0
        sb0 = 0.0
        sb1 = 0.0
        sb2 = 0.0
        sb3 = 0.0
        for rr in range(q0, q1):
            if ra0 <= rr < ra1:
                wa = wba[(rr - ra0) * m:(rr - ra0 + 1) * m]
            else:
                wa = zero[:m]
            if rb0 <= rr < rb1:
                wb = wbb[(rr - rb0) * m:(rr - rb0 + 1) * m]
            else:
                wb = zero[:m]
            base = rr * cols + u
            y0 = P[i0, base:base + m]
            y1 = P[i1, base:base + m]
            y2 = P[i2, base:base + m]
            y3 = P[i3, base:base + m]
            for i in range(m):
                sa0 += wa[i] * y0[i]
                sa1 += wa[i] * y1[i]
                sa2 += wa[i] * y2[i]
                sa3 += wa[i] * y3[i]
                sb0 += wb[i] * y0[i]
                sb1 += wb[i] * y1[i]
                sb2 += wb[i] * y2[i]
                sb3 += wb[i] * y3[i]
        acca[k] = sa0
        acca[k + min(1, nk - 1)] = sa1
        acca[k + min(2, nk - 1)] = sa2
        acca[k + nk - 1] = sa3
        accb[k] = sb0
        accb[k + min(1, nk - 1)] = sb1
        accb[k + min(2, nk - 1)] = sb2
        accb[k + nk - 1] = sb3
        k += nk


@njit(cache=True, nogil=True, error_model="numpy")
def _finish_pixel_1(
    p, n, sums, acc, dates, nd, tsel, m0s, m1, m2, fa, fb, M0T, fcrit, lo, hi, change_thr,
    r0, r1, m, cols, u, P, sel, wbuf, out,
):  # pragma: no cover - numba
    """Prediction of pixel ``p`` for ``dates[:nd]`` from its sums (single band).

    ``acc[:nd]`` = Σw·C0 of the dates, ``acc[nd]``/``acc[nd+1]`` = Σw·C1,
    Σw·C2 (needed only when ``n > 5``). Σw·F1, Σw·F2 are summed here only
    when a prediction falls outside (lo, hi). ``tsel >= 0``: the single date
    ``tsel`` with its own window means ``m0s``, ``m1``, ``m2``.
    """
    nt = M0T.shape[0]
    stot = sums[0]
    if n > 5 and stot > 0.0 and np.isfinite(stot):
        wc1 = acc[nd]
        wc2 = acc[nd + 1]
        ux1 = sums[1]
        ux2 = sums[2]
        uy = sums[3]
        sxx = sums[4]
        sxy = sums[5]
        syy = sums[6]
        nn = 2.0 * n
        v = 1.0
        change = abs(ux1 - ux2) / n
        if change >= change_thr:
            sx = ux1 + ux2
            sxx_c = sxx - sx * sx / nn
            sxy_c = sxy - sx * uy / nn
            syy_c = syy - uy * uy / nn
            if sxx_c > 0.0 and syy_c > 1e-12 * syy:
                slope = sxy_c / sxx_c
                r2 = sxy_c * sxy_c / (sxx_c * syy_c)
                if r2 >= 1.0:
                    fstat = np.inf
                else:
                    fstat = (nn - 2.0) * r2 / (1.0 - r2)
                if fstat >= fcrit[2 * n - 2] and slope > 0.0 and slope <= 5.0:
                    v = slope
        wf1 = np.nan  # Σw·F1, Σw·F2: only for an out-of-range prediction (rare)
        wf2 = np.nan
        for d in range(nd):
            t = dates[d]
            m0 = m0s if tsel >= 0 else M0T[t, p]
            d1 = abs(m0 - m1) + 1e-10
            d2 = abs(m0 - m2) + 1e-10
            t1 = (1.0 / d1) / (1.0 / d1 + 1.0 / d2)
            t2 = (1.0 / d2) / (1.0 / d1 + 1.0 / d2)
            p1 = fa + v * (acc[d] - wc1) / stot
            p2 = fb + v * (acc[d] - wc2) / stot
            pred = t1 * p1 + t2 * p2
            if pred <= lo or pred >= hi:
                if np.isnan(wf1):
                    s2 = sel[nd + 2:]
                    a2 = acc[nd + 2:]
                    s2[0] = nt + 3
                    s2[1] = nt + 4
                    _plane_sums(m, cols, u, P, s2, 2, r0, r1, wbuf, a2, r0, r1, wbuf, a2, wbuf)
                    wf1 = a2[0]
                    wf2 = a2[1]
                pred = t1 * (wf1 / stot) + t2 * (wf2 / stot)
            out[t, p] = pred
    else:
        for d in range(nd):
            t = dates[d]
            m0 = m0s if tsel >= 0 else M0T[t, p]
            e1 = m0 - m1 + 1e-10
            e2 = m0 - m2 + 1e-10
            a1 = abs(e1)
            a2_ = abs(e2)
            t1 = (1.0 / a1) / (1.0 / a1 + 1.0 / a2_)
            t2 = (1.0 / a2_) / (1.0 / a1 + 1.0 / a2_)
            out[t, p] = t1 * (fa + e1) + t2 * (fb + e2)


@njit(cache=True, nogil=True)
def _needs_planes(n, sums):  # pragma: no cover - numba
    """True when the pixel takes the similar-pixel branch (and so needs Σw·C sums)."""
    return n > 5 and sums[0] > 0.0 and np.isfinite(sums[0])


# centres handled as a block of _BLOCK columns × 2 rows: their weights stay in
# cache while the plane sums of every date are taken for the whole block
_BLOCK = 4


@njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _fuse_kernel_1(
    rows, cols, w, F1, F2, FT1, FT2, tmap, OMR, vb, P, V0T, M0T, M1, M2, dirty, ta, tb, dtab, fcrit,
    lo, hi, change_thr, out,
):  # pragma: no cover - numba
    """Fill ``out`` (n_dates, rows*cols), single band, planar inputs; pairs of rows in parallel.

    Planes of ``P``: 0..nt-1 C0, nt C1, nt+1 C2, nt+2 count, nt+3 F1, nt+4 F2.
    Two image rows are done together in blocks of ``_BLOCK`` columns: first
    the weights of every centre of the block (kept), then the plane sums four
    planes at a time, the two centres of a column together (they share the
    plane data), then the predictions. A (pixel, date) whose C0 is missing
    somewhere in the window where the pair is valid is recomputed alone with
    ``FT1``/``FT2`` row ``tmap[t]`` (F1/F2 also masked by that C0) and its
    own window means. Row pairs are handed out one at a time (see
    :func:`_fuse_pair_1`), so the threads stay busy when the valid pixels are
    unevenly spread over the rows.
    """
    nt = M0T.shape[0]
    win = 2 * w + 1
    X1 = P[nt]
    X2 = P[nt + 1]
    ns = nt + 2
    for rp in prange((rows + 1) // 2):
        nbuf = 2 * _BLOCK
        wst = np.empty((nbuf, win * (win + 8)))
        sst = np.empty((nbuf, 8))
        ast = np.empty((nbuf, nt + 4))
        nst = np.empty(nbuf, np.int64)
        ust = np.empty(nbuf, np.int64)
        mst = np.empty(nbuf, np.int64)
        rlo = np.empty(nbuf, np.int64)
        rhi = np.empty(nbuf, np.int64)
        state = np.empty(nbuf, np.int64)  # 0 done, 1 clean without plane sums, 2 clean with plane sums
        zero = np.zeros(win + 8)
        wba = np.empty(win * (win + 8))
        sa = np.empty(8)
        acca = np.empty(nt + 4)
        sel = np.empty(nt + 4, np.int64)
        dates = np.empty(nt, np.int64)
        alld = np.arange(nt)
        one = np.empty(1, np.int64)
        for cb in range(0, cols, _BLOCK):
            nbk = min(cols, cb + _BLOCK) - cb
            # ---- weights of the clean centres; the others are done here alone
            for h in range(2):
                r = 2 * rp + h
                r0 = max(0, r - w)
                r1 = min(rows, r + w + 1)
                for j in range(nbk):
                    s = h * _BLOCK + j
                    state[s] = 0
                    if r >= rows:
                        continue
                    c = cb + j
                    p = r * cols + c
                    if not vb[p]:
                        for t in range(nt):
                            out[t, p] = np.nan
                        continue
                    ca0 = max(0, c - w)
                    ca1 = min(cols, c + w + 1)
                    ma = ((ca1 - ca0 + 7) >> 3) << 3
                    nd = 0
                    for t in range(nt):
                        if not dirty[t, p]:
                            dates[nd] = t
                            nd += 1
                    if nd == nt:
                        n = _similar_sums_1(r, c, w, cols, r0, r1, ca0, ca1, F1, F2, X1, X2, OMR, ta, tb, dtab,
                                            wst[s], sst[s])
                        nst[s] = n
                        ust[s] = ca0
                        mst[s] = ma
                        rlo[s] = r0
                        rhi[s] = r1
                        state[s] = 2 if _needs_planes(n, sst[s]) else 1
                        continue
                    if nd > 0:
                        na = _similar_sums_1(r, c, w, cols, r0, r1, ca0, ca1, F1, F2, X1, X2, OMR, ta, tb, dtab,
                                             wba, sa)
                        if _needs_planes(na, sa):
                            for d in range(nd):
                                sel[d] = dates[d]
                            sel[nd] = nt
                            sel[nd + 1] = nt + 1
                            _plane_sums(ma, cols, ca0, P, sel, nd + 2, r0, r1, wba, acca, r0, r1, wba, acca, zero)
                        _finish_pixel_1(p, na, sa, acca, dates, nd, -1, 0.0, M1[p], M2[p], F1[p], F2[p], M0T,
                                        fcrit, lo, hi, change_thr, r0, r1, ma, cols, ca0, P, sel, wba, out)
                    for t in range(nt):
                        if not dirty[t, p]:
                            continue
                        if not V0T[t, p]:
                            out[t, p] = np.nan
                            continue
                        # window means over the pixels valid for this date, in window order
                        s0 = 0.0
                        s1 = 0.0
                        s2 = 0.0
                        cnt = 0
                        for rr in range(r0, r1):
                            for cc in range(ca0, ca1):
                                q = rr * cols + cc
                                if V0T[t, q]:
                                    cnt += 1
                                    s0 += P[t, q]
                                    s1 += X1[q]
                                    s2 += X2[q]
                        k = tmap[t]
                        na = _similar_sums_1(r, c, w, cols, r0, r1, ca0, ca1, FT1[k], FT2[k], X1, X2, OMR, ta, tb,
                                             dtab, wba, sa)
                        one[0] = t
                        if _needs_planes(na, sa):
                            sel[0] = t
                            sel[1] = nt
                            sel[2] = nt + 1
                            _plane_sums(ma, cols, ca0, P, sel, 3, r0, r1, wba, acca, r0, r1, wba, acca, zero)
                        _finish_pixel_1(p, na, sa, acca, one, 1, t, s0 / cnt, s1 / cnt, s2 / cnt, F1[p], F2[p],
                                        M0T, fcrit, lo, hi, change_thr, r0, r1, ma, cols, ca0, P, sel, wba, out)
            # ---- plane sums (every date, C1, C2) of the clean centres, a column's two centres together
            for t in range(nt):
                sel[t] = t
            sel[nt] = nt
            sel[nt + 1] = nt + 1
            for g in range(0, ns, 4):
                gk = min(4, ns - g)
                sg = sel[g:]
                for j in range(nbk):
                    a = j
                    b = _BLOCK + j
                    if state[a] == 2 and state[b] == 2:
                        _plane_sums(mst[a], cols, ust[a], P, sg, gk, rlo[a], rhi[a], wst[a], ast[a, g:], rlo[b],
                                    rhi[b], wst[b], ast[b, g:], zero)
                    elif state[a] == 2:
                        _plane_sums(mst[a], cols, ust[a], P, sg, gk, rlo[a], rhi[a], wst[a], ast[a, g:], rlo[a],
                                    rhi[a], wst[a], ast[a, g:], zero)
                    elif state[b] == 2:
                        _plane_sums(mst[b], cols, ust[b], P, sg, gk, rlo[b], rhi[b], wst[b], ast[b, g:], rlo[b],
                                    rhi[b], wst[b], ast[b, g:], zero)
            # ---- predictions of the clean centres
            for h in range(2):
                for j in range(nbk):
                    s = h * _BLOCK + j
                    if state[s] == 0:
                        continue
                    p = (2 * rp + h) * cols + cb + j
                    _finish_pixel_1(p, nst[s], sst[s], ast[s], alld, nt, -1, 0.0, M1[p], M2[p], F1[p], F2[p], M0T,
                                    fcrit, lo, hi, change_thr, rlo[s], rhi[s], mst[s], cols, ust[s], P, sel, wst[s],
                                    out)


@njit(cache=True, nogil=True, error_model="numpy")
def _predict_pixel(
    r, c, rows, cols, w, dates, nd, tsel, F, C12, OMR, vb, C0, V0, M0, M12,
    th, dtab, fcrit, lo, hi, change_thr, idx, didx, wk, acc, out,
):  # pragma: no cover - numba
    """Predict one centre pixel for ``nd`` dates (indices ``dates[:nd]``).

    ``tsel < 0``: shared pass, validity = the pair's validity (``F`` is NaN
    elsewhere) and the window means come from ``M0``/``M12``. ``tsel >= 0``: a
    single date whose C0 is missing somewhere in the window; validity also
    requires ``V0[:, tsel]`` and the window means are summed here.
    ``OMR`` is 1 - R (spectral similarity), 0 where invalid.
    """
    nb2 = F.shape[1]
    nb = nb2 // 2
    win = 2 * w + 1
    p = r * cols + c
    if tsel >= 0 and not V0[p, tsel]:
        for b in range(nb):
            out[tsel, b, p] = np.nan
        return
    r0 = max(0, r - w)
    r1 = min(rows, r + w + 1)
    c0 = max(0, c - w)
    c1 = min(cols, c + w + 1)
    # ---- search: similar pixels (branch-free compaction into idx/didx)
    n = 0
    for rr in range(r0, r1):
        base = rr * cols
        doff = (rr - r + w) * win - c + w
        for cc in range(c0, c1):
            q = base + cc
            ok = True
            for k in range(nb2):
                ok = ok & (abs(F[q, k] - F[p, k]) < th[k])
            if tsel >= 0:
                ok = ok & V0[q, tsel]
            idx[n] = q
            didx[n] = doff + cc
            n += ok

    # ---- window means of the coarse images (temporal weights): wk rows 0..2
    if tsel >= 0:
        for b in range(nb):
            wk[0, b] = 0.0
            wk[1, b] = 0.0
            wk[2, b] = 0.0
        cnt = 0
        for rr in range(r0, r1):
            for cc in range(c0, c1):
                q = rr * cols + cc
                if vb[q] and V0[q, tsel]:
                    cnt += 1
                    for b in range(nb):
                        wk[0, b] += C0[q, tsel * nb + b]
                        wk[1, b] += C12[q, b]
                        wk[2, b] += C12[q, nb + b]
        for b in range(nb):
            wk[0, b] /= cnt
            wk[1, b] /= cnt
            wk[2, b] /= cnt
    else:
        for b in range(nb):
            wk[1, b] = M12[p, b]
            wk[2, b] = M12[p, nb + b]

    stot = 0.0
    if n > 5:
        # ---- one pass over the similar pixels
        # wk rows: 3 wf1, 4 wf2, 5 wc1, 6 wc2, 7 ux1, 8 ux2, 9 uy, 10 sxx, 11 sxy, 12 syy
        for k in range(3, 13):
            for b in range(nb):
                wk[k, b] = 0.0
        nacc = nd * nb
        for k in range(nacc):
            acc[k] = 0.0
        contiguous = tsel < 0 and nacc == C0.shape[1]
        for j in range(n):
            q = idx[j]
            wj = 1.0 / (OMR[q] * dtab[didx[j]] + 1e-7)
            stot += wj
            for b in range(nb):
                f1 = F[q, b]
                f2 = F[q, nb + b]
                x1 = C12[q, b]
                x2 = C12[q, nb + b]
                wk[3, b] += wj * f1
                wk[4, b] += wj * f2
                wk[5, b] += wj * x1
                wk[6, b] += wj * x2
                dx1 = x1 - C12[p, b]
                dx2 = x2 - C12[p, b]
                dy1 = f1 - F[p, b]
                dy2 = f2 - F[p, b]
                wk[7, b] += dx1
                wk[8, b] += dx2
                wk[9, b] += dy1 + dy2
                wk[10, b] += dx1 * dx1 + dx2 * dx2
                wk[11, b] += dx1 * dy1 + dx2 * dy2
                wk[12, b] += dy1 * dy1 + dy2 * dy2
            if contiguous:
                for k in range(nacc):
                    acc[k] += wj * C0[q, k]
            elif tsel >= 0:
                for b in range(nb):
                    acc[b] += wj * C0[q, tsel * nb + b]
            else:
                for d in range(nd):
                    o = dates[d] * nb
                    for b in range(nb):
                        acc[d * nb + b] += wj * C0[q, o + b]

    if n > 5 and stot > 0.0 and np.isfinite(stot):
        nn = 2.0 * n
        for b in range(nb):
            v = 1.0
            change = abs(wk[7, b] - wk[8, b]) / n
            if change >= change_thr:
                sx = wk[7, b] + wk[8, b]
                sy = wk[9, b]
                sxx = wk[10, b] - sx * sx / nn
                sxy = wk[11, b] - sx * sy / nn
                syy = wk[12, b] - sy * sy / nn
                if sxx > 0.0 and syy > 1e-12 * wk[12, b]:
                    slope = sxy / sxx
                    r2 = sxy * sxy / (sxx * syy)
                    if r2 >= 1.0:
                        fstat = np.inf
                    else:
                        fstat = (nn - 2.0) * r2 / (1.0 - r2)
                    if fstat >= fcrit[2 * n - 2] and slope > 0.0 and slope <= 5.0:
                        v = slope
            f1c = F[p, b]
            f2c = F[p, nb + b]
            for d in range(nd):
                if tsel >= 0:
                    t = tsel
                    m0 = wk[0, b]
                else:
                    t = dates[d]
                    m0 = M0[p, t * nb + b]
                d1 = abs(m0 - wk[1, b]) + 1e-10
                d2 = abs(m0 - wk[2, b]) + 1e-10
                t1 = (1.0 / d1) / (1.0 / d1 + 1.0 / d2)
                t2 = (1.0 / d2) / (1.0 / d1 + 1.0 / d2)
                a0 = acc[d * nb + b]
                p1 = f1c + v * (a0 - wk[5, b]) / stot
                p2 = f2c + v * (a0 - wk[6, b]) / stot
                pred = t1 * p1 + t2 * p2
                if pred <= lo or pred >= hi:
                    pred = t1 * (wk[3, b] / stot) + t2 * (wk[4, b] / stot)
                out[t, b, p] = pred
    else:
        for b in range(nb):
            for d in range(nd):
                if tsel >= 0:
                    t = tsel
                    m0 = wk[0, b]
                else:
                    t = dates[d]
                    m0 = M0[p, t * nb + b]
                e1 = m0 - wk[1, b] + 1e-10
                e2 = m0 - wk[2, b] + 1e-10
                a1 = abs(e1)
                a2 = abs(e2)
                t1 = (1.0 / a1) / (1.0 / a1 + 1.0 / a2)
                t2 = (1.0 / a2) / (1.0 / a1 + 1.0 / a2)
                out[t, b, p] = t1 * (F[p, b] + e1) + t2 * (F[p, nb + b] + e2)


@njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _fuse_kernel(
    rows, cols, w, F, C12, OMR, vb, C0, V0, M0, M12, dirty, th, dtab, fcrit, lo, hi, change_thr, out,
):  # pragma: no cover - numba
    """Fill ``out`` (n_dates, bands, rows*cols) for every pixel, several bands; rows in parallel."""
    nt = dirty.shape[1]
    nb = out.shape[1]
    win = 2 * w + 1
    for r in prange(rows):
        idx = np.empty(win * win, np.int64)
        didx = np.empty(win * win, np.int64)
        wk = np.empty((13, nb))
        acc = np.empty(nt * nb)
        dates = np.empty(nt, np.int64)
        one = np.empty(1, np.int64)
        for c in range(cols):
            p = r * cols + c
            if not vb[p]:
                for t in range(nt):
                    for b in range(nb):
                        out[t, b, p] = np.nan
                continue
            nd = 0
            for t in range(nt):
                if not dirty[p, t]:
                    dates[nd] = t
                    nd += 1
            if nd > 0:
                _predict_pixel(r, c, rows, cols, w, dates[:nd], nd, -1, F, C12, OMR, vb, C0, V0, M0, M12,
                               th, dtab, fcrit, lo, hi, change_thr, idx, didx, wk, acc, out)
            if nd < nt:
                for t in range(nt):
                    if dirty[p, t]:
                        one[0] = t
                        _predict_pixel(r, c, rows, cols, w, one, 1, t, F, C12, OMR, vb, C0, V0, M0, M12,
                                       th, dtab, fcrit, lo, hi, change_thr, idx, didx, wk, acc, out)


# --------------------------------------------------------------------------- #
# the pair driver shared by fuse and fuse_series
# --------------------------------------------------------------------------- #
# rows (row pairs in the single-band kernel) handed to a thread at a time:
# small, so that rows of very unequal work (a basin mask leaves some rows
# empty) balance over the threads
_ROW_CHUNK = 1


def _fuse_pair(
    f1: np.ndarray,
    c1: np.ndarray,
    f2: np.ndarray,
    c2: np.ndarray,
    c0s: Sequence[np.ndarray],
    *,
    w: int,
    lo: float,
    hi: float,
    th: np.ndarray,
) -> np.ndarray:
    """Predict every C0 in ``c0s`` from one pair; arrays (bands, rows, cols) float64 with NaN.

    Returns (n_dates, bands, rows, cols) float64.
    """
    nb, rows, cols = f1.shape
    if nb == 1:
        return _fuse_pair_1(f1[0], c1[0], f2[0], c2[0], [c0[0] for c0 in c0s], w=w, lo=lo, hi=hi, th=th)[:, None]
    npx = rows * cols
    nt = len(c0s)
    vb = (
        np.isfinite(f1).all(axis=0)
        & np.isfinite(f2).all(axis=0)
        & np.isfinite(c1).all(axis=0)
        & np.isfinite(c2).all(axis=0)
    ).ravel()
    OMR = 1.0 - _spectral_similarity(f1, f2, c1, c2).ravel()
    OMR[~vb] = 0.0
    F = np.ascontiguousarray(np.concatenate([f1, f2], axis=0).reshape(2 * nb, npx).T)
    C12 = np.ascontiguousarray(np.concatenate([c1, c2], axis=0).reshape(2 * nb, npx).T)
    F[~vb] = np.nan
    C12[~vb] = 0.0
    C0 = np.empty((npx, nt * nb))
    for t, c0 in enumerate(c0s):
        C0[:, t * nb:(t + 1) * nb] = c0.reshape(nb, npx).T
    V0 = np.ascontiguousarray(np.isfinite(C0).reshape(npx, nt, nb).all(axis=2) & vb[:, None])  # (npx, nt)
    C0[~np.isfinite(C0)] = 0.0
    # window sums over the pair's validity: C0 per date, C1, C2, count, and
    # the count of pixels valid for the pair but missing in C0 (-> recompute)
    vbf = vb.astype(np.float64)[:, None]
    chans = np.concatenate(
        [
            C0 * np.repeat(V0, nb, axis=1),
            C12 * vbf,
            vbf,
            (vb[:, None] & ~V0).astype(np.float64),
        ],
        axis=1,
    )
    sums = _window_sum(np.ascontiguousarray(chans.T).reshape(-1, rows, cols), w).reshape(-1, npx).T
    cnt = sums[:, nt * nb + 2 * nb][:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        M0 = np.ascontiguousarray(sums[:, : nt * nb] / cnt)
        M12 = np.ascontiguousarray(sums[:, nt * nb: nt * nb + 2 * nb] / cnt)
    dirty = np.ascontiguousarray(sums[:, nt * nb + 2 * nb + 1:] > 0.5)
    out = np.empty((nt, nb, npx))
    fcrit = _f_critical(2 * (2 * w + 1) ** 2)
    with numba.parallel_chunksize(_ROW_CHUNK):
        _fuse_kernel(
            rows, cols, w, F, C12, OMR, vb, C0, V0, M0, M12, dirty, np.asarray(th, np.float64),
            _distance_table(w).ravel(), fcrit, lo, hi, 0.02 * hi, out,
        )
    return out.reshape(nt, nb, rows, cols)


def _fuse_pair_1(
    f1: np.ndarray,
    c1: np.ndarray,
    f2: np.ndarray,
    c2: np.ndarray,
    c0s: Sequence[np.ndarray],
    *,
    w: int,
    lo: float,
    hi: float,
    th: np.ndarray,
) -> np.ndarray:
    """Single-band :func:`_fuse_pair`: images (rows, cols) float64 with NaN; returns (n_dates, rows, cols).

    Planar layout (one contiguous array per quantity, C0 date-major, each
    followed by ``_PAD`` elements) so that the window loops of the kernel run
    along image rows and vectorise.
    """
    rows, cols = f1.shape
    npx = rows * cols
    nt = len(c0s)
    vb = (np.isfinite(f1) & np.isfinite(f2) & np.isfinite(c1) & np.isfinite(c2)).ravel()
    OMR = np.zeros(npx + _PAD)
    OMR[:npx] = 1.0 - _spectral_similarity(f1[None], f2[None], c1[None], c2[None]).ravel()
    OMR[:npx][~vb] = 0.0
    F1 = np.full(npx + _PAD, np.nan)
    F2 = np.full(npx + _PAD, np.nan)
    F1[:npx][vb] = f1.ravel()[vb]
    F2[:npx][vb] = f2.ravel()[vb]
    # planes: C0 per date, C1, C2, count of valid pixels, F1, F2 (0 where not valid)
    P = np.zeros((nt + 5, npx + _PAD))
    for t, c0 in enumerate(c0s):
        P[t, :npx] = c0.ravel()
    V0T = np.isfinite(P[:nt, :npx])
    V0T &= vb
    P[:nt, :npx][~V0T] = 0.0
    for k, a in ((nt, c1), (nt + 1, c2), (nt + 3, f1), (nt + 4, f2)):
        P[k, :npx][vb] = a.ravel()[vb]
    P[nt + 2, :npx] = vb
    # window sums of the C0s, C1, C2 and the count (the temporal weights) and,
    # for dates with a pixel valid for the pair but missing in C0, the count of
    # such pixels (> 0: that pixel is recomputed alone for that date)
    miss = [t for t in range(nt) if not np.array_equal(V0T[t], vb)]
    planes = P[:nt + 3, :npx]
    if miss:
        planes = np.concatenate([planes, (vb & ~V0T[miss]).astype(np.float64)])
    sums = _window_sum(np.ascontiguousarray(planes).reshape(-1, rows, cols), w).reshape(-1, npx)
    cnt = sums[nt + 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        M0T = sums[:nt] / cnt
        M1 = sums[nt] / cnt
        M2 = sums[nt + 1] / cnt
    dirty = np.zeros((nt, npx), dtype=np.bool_)
    tmap = np.full(nt, -1, dtype=np.int64)
    FT1 = np.empty((len(miss), npx + _PAD))
    FT2 = np.empty((len(miss), npx + _PAD))
    if miss:
        dirty[miss] = sums[nt + 3:] > 0.5
        for k, t in enumerate(miss):
            tmap[t] = k
            FT1[k] = F1
            FT2[k] = F2
            FT1[k, :npx][~V0T[t]] = np.nan
            FT2[k, :npx][~V0T[t]] = np.nan
    dtab = np.ones((2 * w + 1) ** 2 + 2 * (2 * w + 1) + _PAD)
    dtab[:(2 * w + 1) ** 2] = _distance_table(w).ravel()
    out = np.empty((nt, npx))
    fcrit = _f_critical(2 * (2 * w + 1) ** 2)
    th = np.asarray(th, np.float64)
    with numba.parallel_chunksize(_ROW_CHUNK):
        _fuse_kernel_1(
            rows, cols, w, F1, F2, FT1, FT2, tmap, OMR, vb, P, V0T, M0T, M1, M2, dirty,
            float(th[0]), float(th[1]), dtab, fcrit, lo, hi, 0.02 * hi, out,
        )
    return out.reshape(nt, rows, cols)


# --------------------------------------------------------------------------- #
# public API
# --------------------------------------------------------------------------- #
def fuse(
    fine1: np.ndarray,
    coarse1: np.ndarray,
    fine2: np.ndarray,
    coarse2: np.ndarray,
    coarse0: np.ndarray,
    *,
    window: int = 51,
    classes: int = 4,
    valid_range: tuple[float, float] = (-1.0, 1.0),
    nodata: float | None = None,
    thresholds: np.ndarray | None = None,
) -> np.ndarray:
    """Predict the fine image at the date of ``coarse0`` with ESTARFM.

    Parameters
    ----------
    fine1, coarse1 : ndarray, shape (rows, cols) or (bands, rows, cols)
        Fine image and coarse image (resampled to the fine grid) at t1.
    fine2, coarse2 : ndarray, same shape
        Fine and coarse images at t2.
    coarse0 : ndarray, same shape
        Coarse image (on the fine grid) at the prediction date t0.
    window : int, default 51
        Side of the moving window in fine pixels (odd); half window w = window // 2.
    classes : int, default 4
        Number of land-cover classes; similarity threshold = std × 2 / classes.
    valid_range : (float, float), default (-1, 1)
        (DN_min, DN_max) in image units: (-1, 1) for NDVI, (-10000, 10000) for
        NDVI × 10000, (0, 10000) for reflectance × 10000. A prediction outside
        the open interval is replaced by the weighted mean of the similar fine
        pixels; 0.02 × DN_max is the coarse change needed to fit V.
    nodata : float, optional
        Value marking missing pixels (NaN is always missing).
    thresholds : ndarray, shape (2 * bands,), optional
        Similarity thresholds from :func:`similarity_thresholds` of the whole
        image; give them when fusing tiles (with a ``window // 2`` halo) so the
        tiles reproduce the whole-image result. Default: from these images.

    Returns
    -------
    ndarray, float64, shape of the inputs
        The predicted fine image, in image units. NaN where a pixel is missing
        in any of the five images (any band).

    Raises
    ------
    EstarfmError
        Shapes that differ, bad settings, or a valid range that excludes most
        of the data (wrong units).
    """
    w, lo, hi = _check_settings(window, classes, valid_range)
    names = ("fine1", "coarse1", "fine2", "coarse2", "coarse0")
    arrs = [_as_bands(n, a, nodata) for n, a in zip(names, (fine1, coarse1, fine2, coarse2, coarse0))]
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1:
        desc = ", ".join(f"{n} {np.shape(a)}" for n, a in zip(names, (fine1, coarse1, fine2, coarse2, coarse0)))
        raise EstarfmError(f"input shapes differ ({desc}): resample every coarse image onto the fine grid first.")
    f1, c1, f2, c2, c0 = arrs
    _check_range(list(zip(names, arrs)), lo, hi)
    if thresholds is None:
        th = similarity_thresholds(f1, f2, classes=classes)
    else:
        th = np.asarray(thresholds, dtype=np.float64).ravel()
        if th.shape != (2 * f1.shape[0],) or not np.all(np.isfinite(th)):
            raise EstarfmError(
                f"thresholds: expected {2 * f1.shape[0]} finite values (bands of fine1 then fine2), got "
                f"{np.shape(thresholds)}; compute them with similarity_thresholds(fine1, fine2)."
            )
    out = _fuse_pair(f1, c1, f2, c2, [c0], w=w // 2, lo=lo, hi=hi, th=th)[0]
    return out[0] if np.ndim(fine1) == 2 else out


def _check_dates(name: str, dates: Sequence[_dt.date], n: int) -> list[_dt.date]:
    ds = list(dates)
    if len(ds) != n:
        raise EstarfmError(f"{name}: {len(ds)} dates for {n} images; give one datetime.date per image.")
    for d in ds:
        if not isinstance(d, _dt.date):
            raise EstarfmError(f"{name}: {d!r} is not a datetime.date; convert the dates first.")
    if len(set(ds)) != len(ds):
        dup = sorted({d for d in ds if ds.count(d) > 1})
        raise EstarfmError(f"{name}: duplicate dates {[d.isoformat() for d in dup]}; keep one image per date.")
    return ds


def _choose_pair(t0: _dt.date, fd: list[_dt.date], extrapolate: bool) -> tuple[int, int, bool]:
    """Indices (into the sorted fine dates) of the pair used for ``t0`` and whether it extrapolates."""
    best = None
    for k in range(len(fd) - 1):
        if fd[k] <= t0 <= fd[k + 1]:
            span = (fd[k + 1] - fd[k]).days
            if best is None or span < best[0]:
                best = (span, k)
    if best is not None:
        return best[1], best[1] + 1, False
    if not extrapolate:
        raise EstarfmError(
            f"coarse date {t0.isoformat()} lies outside the fine images ({fd[0].isoformat()} .. "
            f"{fd[-1].isoformat()}) and extrapolate=False: add a fine image beyond it, drop that coarse "
            "date, or allow extrapolate=True (predict from the nearest two fine images)."
        )
    if t0 < fd[0]:
        return 0, 1, True
    return len(fd) - 2, len(fd) - 1, True


def _plan_series(
    fd: list[_dt.date], cd: list[_dt.date], max_pair_gap_days: int, extrapolate: bool
) -> tuple[dict[int, int], dict[tuple[int, int], list[int]], list[dict]]:
    """Coarse partner of every fine image, coarse dates grouped by fine pair, and the info records.

    Returns ``partner`` (fine index -> coarse index), ``groups`` ((i1, i2)
    fine indices, i1 the earlier date -> coarse indices predicted from that
    pair) and ``info`` (one dict per coarse date, without ``nodata_pixels``).
    """
    partner: dict[int, int] = {}
    for i, d in enumerate(fd):
        gaps = [(abs((c - d).days), c, j) for j, c in enumerate(cd)]
        gaps = [g for g in gaps if g[0] <= max_pair_gap_days]
        if not gaps:
            raise EstarfmError(
                f"fine image of {d.isoformat()} has no coarse image within {max_pair_gap_days} days: add the "
                "coarse image of that date, raise max_pair_gap_days, or drop that fine image."
            )
        partner[i] = min(gaps)[2]
    order = sorted(range(len(fd)), key=lambda i: fd[i])
    sfd = [fd[i] for i in order]
    groups: dict[tuple[int, int], list[int]] = {}
    info: list[dict] = [{} for _ in cd]
    for j, t0 in enumerate(cd):
        a, b, ext = _choose_pair(t0, sfd, extrapolate)
        groups.setdefault((order[a], order[b]), []).append(j)
        info[j] = {"date": t0, "pair": [fd[order[a]], fd[order[b]]], "extrapolated": ext}
    return partner, groups, info


def _fine_images(fine_stack: np.ndarray, fine_dates: Sequence[_dt.date], nodata: float | None):
    """Checked fine stack as a list of (bands, rows, cols) float64 images with NaN, and its dates."""
    fs = np.asarray(fine_stack)
    if fs.ndim not in (3, 4):
        raise EstarfmError(
            f"fine_stack {fs.shape}: expected an (n, rows, cols) stack (or (n, bands, rows, cols))."
        )
    if fs.shape[0] < 2:
        raise EstarfmError(
            f"fine_stack: {fs.shape[0]} fine image(s); ESTARFM needs at least two fine dates (a pair)."
        )
    fd = _check_dates("fine_dates", fine_dates, fs.shape[0])
    return [_as_bands("stack", fs[i], nodata) for i in range(fs.shape[0])], fd


def series_thresholds(
    fine_stack: np.ndarray,
    fine_dates: Sequence[_dt.date],
    coarse_dates: Sequence[_dt.date],
    *,
    classes: int = 4,
    max_pair_gap_days: int = 8,
    extrapolate: bool = True,
    nodata: float | None = None,
) -> dict[tuple[_dt.date, _dt.date], np.ndarray]:
    """Similarity thresholds of every fine pair that :func:`fuse_series` uses.

    Give the result to ``fuse_series(..., thresholds=)`` when fusing tiles of
    the image (each with a ``window // 2`` halo): every tile then uses the
    whole image's similar-pixel rule and the tiles reproduce the whole-image
    result exactly.

    Parameters
    ----------
    fine_stack : ndarray, shape (n_fine, rows, cols) or (n_fine, bands, rows, cols)
        The whole image's fine images (as given to :func:`fuse_series`).
    fine_dates : sequence of datetime.date, length n_fine
        Their dates (any order, no duplicates).
    coarse_dates : sequence of datetime.date
        Dates of the coarse series: they decide which pairs are used.
    classes, max_pair_gap_days, extrapolate, nodata
        As in :func:`fuse_series` (use the same values).

    Returns
    -------
    dict
        ``{(d1, d2): thresholds}`` for every pair used, d1 < d2 the pair's fine
        dates; ``thresholds`` is an ndarray, shape (2 * bands,), in image
        units, exactly :func:`similarity_thresholds` of the two fine images.

    Raises
    ------
    EstarfmError
        As :func:`fuse_series` for the dates, the stack and the settings.
    """
    if int(classes) != classes or classes < 1:
        raise EstarfmError(f"classes={classes}: the number of classes must be a whole number >= 1 (e.g. 4).")
    fine, fd = _fine_images(fine_stack, fine_dates, nodata)
    cdl = list(coarse_dates)
    cd = _check_dates("coarse_dates", cdl, len(cdl))
    _, groups, _ = _plan_series(fd, cd, max_pair_gap_days, extrapolate)
    return {
        (fd[i1], fd[i2]): similarity_thresholds(fine[i1], fine[i2], classes=classes)
        for (i1, i2) in sorted(groups, key=lambda k: fd[k[0]])
    }


def _given_thresholds(
    thresholds: Mapping[tuple[_dt.date, _dt.date], np.ndarray], d1: _dt.date, d2: _dt.date, nb: int
) -> np.ndarray:
    """The thresholds of pair (d1, d2) from a ``series_thresholds`` mapping, checked."""
    key = (d1, d2)
    if key not in thresholds:
        raise EstarfmError(
            f"thresholds: no entry for the fine pair ({d1.isoformat()}, {d2.isoformat()}); compute the mapping "
            "with series_thresholds() on the whole image with the same dates and settings."
        )
    th = np.asarray(thresholds[key], dtype=np.float64).ravel()
    if th.shape != (2 * nb,) or not np.all(np.isfinite(th)):
        raise EstarfmError(
            f"thresholds[({d1.isoformat()}, {d2.isoformat()})]: expected {2 * nb} finite values (bands of the "
            f"first fine image, then the second), got {np.shape(thresholds[key])}; use series_thresholds()."
        )
    return th


def fuse_series(
    fine_stack: np.ndarray,
    fine_dates: Sequence[_dt.date],
    coarse_stack: np.ndarray,
    coarse_dates: Sequence[_dt.date],
    *,
    window: int = 51,
    classes: int = 4,
    valid_range: tuple[float, float] = (-1.0, 1.0),
    nodata: float | None = None,
    max_pair_gap_days: int = 8,
    extrapolate: bool = True,
    progress: Callable[[float, str], None] | None = None,
    thresholds: Mapping[tuple[_dt.date, _dt.date], np.ndarray] | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Fuse a coarse time series with fine images: one fine image per coarse date.

    Each fine image is paired with the coarse image of the same date, or the
    nearest one within ``max_pair_gap_days``. Each coarse date t0 is predicted
    by :func:`fuse` from the consecutive fine pair that brackets it (when t0
    equals a fine date and two pairs bracket it, the shorter one; ties: the
    earlier), or from the nearest two fine images when none brackets it and
    ``extrapolate`` is True. The result equals calling :func:`fuse` date by
    date, but the similar-pixel search is done once per pair.

    Parameters
    ----------
    fine_stack : ndarray, shape (n_fine, rows, cols)
        Fine images (e.g. Landsat NDVI), n_fine >= 2. A 4-D (n_fine, bands,
        rows, cols) stack is also accepted.
    fine_dates : sequence of datetime.date, length n_fine
        Acquisition dates of the fine images (any order, no duplicates).
    coarse_stack : ndarray, shape (n_coarse, rows, cols)
        Coarse images already resampled onto the fine grid (4-D like
        ``fine_stack`` if that is 4-D).
    coarse_dates : sequence of datetime.date, length n_coarse
        Dates of the coarse images (any order, no duplicates).
    window, classes, valid_range, nodata
        As in :func:`fuse`.
    max_pair_gap_days : int, default 8
        Largest gap in days between a fine image and its coarse partner.
    extrapolate : bool, default True
        Predict coarse dates outside the fine dates from the nearest two fine
        images; False makes such a date an error.
    progress : callable(fraction, message), optional
        Called after each pair with the fraction of coarse dates done (0..1]
        and a short message.
    thresholds : mapping {(d1, d2): ndarray of shape (2 * bands,)}, optional
        Similarity thresholds per fine pair (d1 < d2 its fine dates) to use
        instead of computing them from these images, as ``fuse(...,
        thresholds=)``: give :func:`series_thresholds` of the whole image when
        fusing tiles with a ``window // 2`` halo, so that the tiles reproduce
        the whole-image result. Default: from these images.

    Returns
    -------
    fused : ndarray, float64, shape (n_coarse, rows, cols)
        Predicted fine images at the coarse dates, in the order of
        ``coarse_dates``; NaN where undefined.
    info : list of dict, one per coarse date (same order)
        ``{"date": date, "pair": [d1, d2], "extrapolated": bool,
        "nodata_pixels": int}`` where ``nodata_pixels`` counts NaN output
        pixels (any band) of that date.

    Raises
    ------
    EstarfmError
        Fewer than two fine dates, shapes or date counts that differ, a fine
        image without a coarse partner (named), a coarse date outside the
        fine dates with ``extrapolate=False``, bad settings or units, a pair
        missing from ``thresholds`` or thresholds of the wrong size.
    """
    w, lo, hi = _check_settings(window, classes, valid_range)
    fs = np.asarray(fine_stack)
    cs = np.asarray(coarse_stack)
    if fs.ndim not in (3, 4) or cs.ndim != fs.ndim:
        raise EstarfmError(
            f"fine_stack {fs.shape} / coarse_stack {cs.shape}: expected (n, rows, cols) stacks "
            "(or both (n, bands, rows, cols))."
        )
    if fs.shape[0] < 2:
        raise EstarfmError(
            f"fine_stack: {fs.shape[0]} fine image(s); ESTARFM needs at least two fine dates (a pair)."
        )
    if fs.shape[1:] != cs.shape[1:]:
        raise EstarfmError(
            f"fine_stack images {fs.shape[1:]} and coarse_stack images {cs.shape[1:]} differ in shape: "
            "resample the coarse series onto the fine grid first."
        )
    fd = _check_dates("fine_dates", fine_dates, fs.shape[0])
    cd = _check_dates("coarse_dates", coarse_dates, cs.shape[0])
    if len(fd) < 2:
        raise EstarfmError("fine_dates: ESTARFM needs at least two fine dates.")

    def prep(a: np.ndarray) -> np.ndarray:
        return _as_bands("stack", a, nodata)

    fine = [prep(fs[i]) for i in range(fs.shape[0])]
    coarse = [prep(cs[i]) for i in range(cs.shape[0])]
    _check_range([("fine_stack", a) for a in fine] + [("coarse_stack", a) for a in coarse], lo, hi)

    partner, groups, info = _plan_series(fd, cd, max_pair_gap_days, extrapolate)

    nb, rows, cols = fine[0].shape
    fused = np.empty((len(cd), nb, rows, cols))
    done = 0
    for (i1, i2), js in sorted(groups.items(), key=lambda kv: fd[kv[0][0]]):
        f1, f2 = fine[i1], fine[i2]
        c1, c2 = coarse[partner[i1]], coarse[partner[i2]]
        if thresholds is None:
            th = similarity_thresholds(f1, f2, classes=classes)
        else:
            th = _given_thresholds(thresholds, fd[i1], fd[i2], nb)
        res = _fuse_pair(f1, c1, f2, c2, [coarse[j] for j in js], w=w // 2, lo=lo, hi=hi, th=th)
        for k, j in enumerate(js):
            fused[j] = res[k]
            info[j]["nodata_pixels"] = int(np.count_nonzero(np.isnan(res[k]).any(axis=0)))
        done += len(js)
        if progress is not None:
            progress(done / len(cd), f"ESTARFM pair {fd[i1].isoformat()} / {fd[i2].isoformat()}: "
                     f"{len(js)} date(s)")
    if fs.ndim == 3:
        fused = fused[:, 0]
    return fused, info


def monthly_composite(
    stack: np.ndarray, dates: Sequence[_dt.date], how: str = "max"
) -> tuple[np.ndarray, list[str]]:
    """Composite a dated series to calendar months.

    Parameters
    ----------
    stack : ndarray, shape (n, rows, cols)
        Images (e.g. fused NDVI), NaN where missing.
    dates : sequence of datetime.date, length n
        Date of each image (any order).
    how : {"max", "mean"}, default "max"
        "max": maximum-value composite; "mean": mean of the valid values.
        NaN values are ignored.

    Returns
    -------
    monthly : ndarray, float64, shape (n_months, rows, cols)
        One image per calendar month from the month of the first date to that
        of the last date, inclusive; NaN where a month has no valid value
        (including months with no image at all).
    months : list of str
        ``"YYYY-MM"`` label of each month.
    """
    arr = np.asarray(stack, dtype=np.float64)
    if arr.ndim != 3:
        raise EstarfmError(f"stack: expected (n, rows, cols), got shape {arr.shape}.")
    ds = list(dates)
    if len(ds) != arr.shape[0] or len(ds) == 0:
        raise EstarfmError(f"dates: {len(ds)} dates for {arr.shape[0]} images; give one date per image.")
    if how not in ("max", "mean"):
        raise EstarfmError(f"how={how!r}: use 'max' (maximum-value composite) or 'mean'.")
    key = [d.year * 12 + d.month - 1 for d in ds]
    k0, k1 = min(key), max(key)
    months = [f"{k // 12:04d}-{k % 12 + 1:02d}" for k in range(k0, k1 + 1)]
    out = np.full((len(months),) + arr.shape[1:], np.nan)
    for m in range(len(months)):
        sel = [i for i, k in enumerate(key) if k == k0 + m]
        if not sel:
            continue
        sub = arr[sel]
        ok = np.isfinite(sub)
        n = ok.sum(axis=0)
        if how == "max":
            val = np.where(ok, sub, -np.inf).max(axis=0)
        else:
            val = np.where(ok, sub, 0.0).sum(axis=0) / np.maximum(n, 1)
        out[m] = np.where(n > 0, val, np.nan)
    return out, months
