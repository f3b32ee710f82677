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
whole image's :func:`similarity_thresholds`).

Public API
----------
- :func:`fuse` — one prediction date, 2-D (one band) or 3-D (bands, rows, cols);
- :func:`fuse_series` — a coarse time series, each date predicted from its
  bracketing fine pair; the search for similar pixels is done once per pair;
- :func:`monthly_composite` — 16-day (or any) series to calendar months;
- :func:`similarity_thresholds` — the global similarity thresholds (for tiling).

Design of the kernel
--------------------
Everything except C0 depends only on the fine pair: validity, spectral
similarity R, the similar pixels of each centre pixel, their weights, the
conversion coefficient V. The compiled kernel (numba, ``prange`` over rows)
visits the window of each centre pixel once, keeps the similar pixels in a
per-row buffer (no ``pixels × window²`` arrays) and then, for every
prediction date of the pair at once, accumulates Σ weight·C0. A date whose C0
has a missing pixel inside the window (where the pair itself is valid)
changes the similar-pixel set; such (pixel, date) cases are recomputed alone
with the date's own validity, so a series gives exactly the numbers of
date-by-date :func:`fuse`. Window means of the coarse images (temporal
weights) use direct sums over the truncated window, separably, which makes
them independent of tiling to the last bit.
"""
from __future__ import annotations

import datetime as _dt
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
from numba import njit, prange

__all__ = [
    "EstarfmError",
    "fuse",
    "fuse_series",
    "monthly_composite",
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
def _window_sum(a: np.ndarray, rows: int, cols: int, w: int) -> np.ndarray:  # pragma: no cover - numba
    """Sum of each channel over the (2w+1)² window truncated at the edges.

    ``a`` is (rows*cols, m). Direct sums (first down the columns, then along
    the rows) in a fixed order, so a pixel's result depends only on its window.
    """
    m = a.shape[1]
    tmp = np.empty_like(a)
    for r in prange(rows):
        r0 = max(0, r - w)
        r1 = min(rows, r + w + 1)
        s = np.empty(m)
        for c in range(cols):
            s[:] = 0.0
            for rr in range(r0, r1):
                p = rr * cols + c
                for k in range(m):
                    s[k] += a[p, k]
            tmp[r * cols + c, :] = s
    out = np.empty_like(a)
    for r in prange(rows):
        s = np.empty(m)
        for c in range(cols):
            c0 = max(0, c - w)
            c1 = min(cols, c + w + 1)
            s[:] = 0.0
            for cc in range(c0, c1):
                p = r * cols + cc
                for k in range(m):
                    s[k] += tmp[p, k]
            out[r * cols + c, :] = s
    return out


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


@njit(cache=True, nogil=True, error_model="numpy")
def _predict_pixel_1(
    r, c, rows, cols, w, dates, nd, tsel, F, C12, OMR, vb, C0, V0, M0, M12,
    th, dtab, fcrit, lo, hi, change_thr, idx, didx, inv, acc, out,
):  # pragma: no cover - numba
    """Single-band version of :func:`_predict_pixel` with register accumulators.

    Same arithmetic, in the same order, as the multi-band version; kept apart
    only for speed (NDVI is the common case).
    """
    win = 2 * w + 1
    p = r * cols + c
    if tsel >= 0 and not V0[p, tsel]:
        out[tsel, 0, p] = np.nan
        return
    r0 = max(0, r - w)
    r1 = min(rows, r + w + 1)
    c0 = max(0, c - w)
    c1 = min(cols, c + w + 1)
    fa = F[p, 0]
    fb = F[p, 1]
    ta = th[0]
    tb = th[1]
    n = 0
    if tsel < 0:
        for rr in range(r0, r1):
            base = rr * cols
            doff = (rr - r + w) * win - c + w
            for cc in range(c0, c1):
                q = base + cc
                ok = (abs(F[q, 0] - fa) < ta) & (abs(F[q, 1] - fb) < tb)
                idx[n] = q
                didx[n] = doff + cc
                n += ok
        m1 = M12[p, 0]
        m2 = M12[p, 1]
        m0s = 0.0
    else:
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        cnt = 0
        for rr in range(r0, r1):
            base = rr * cols
            doff = (rr - r + w) * win - c + w
            for cc in range(c0, c1):
                q = base + cc
                v = V0[q, tsel]
                ok = (abs(F[q, 0] - fa) < ta) & (abs(F[q, 1] - fb) < tb) & v
                idx[n] = q
                didx[n] = doff + cc
                n += ok
                if v:
                    cnt += 1
                    s0 += C0[q, tsel]
                    s1 += C12[q, 0]
                    s2 += C12[q, 1]
        m0s = s0 / cnt
        m1 = s1 / cnt
        m2 = s2 / cnt

    stot = 0.0
    wf1 = 0.0
    wf2 = 0.0
    wc1 = 0.0
    wc2 = 0.0
    ux1 = 0.0
    ux2 = 0.0
    uy = 0.0
    sxx = 0.0
    sxy = 0.0
    syy = 0.0
    a0 = 0.0
    if n > 5:
        xc = C12[p, 0]
        single = nd == 1
        col0 = tsel if tsel >= 0 else dates[0]
        for j in range(n):
            q = idx[j]
            wj = 1.0 / (OMR[q] * dtab[didx[j]] + 1e-7)
            inv[j] = wj
            f1 = F[q, 0]
            f2 = F[q, 1]
            x1 = C12[q, 0]
            x2 = C12[q, 1]
            stot += wj
            wf1 += wj * f1
            wf2 += wj * f2
            wc1 += wj * x1
            wc2 += wj * x2
            dx1 = x1 - xc
            dx2 = x2 - xc
            dy1 = f1 - fa
            dy2 = f2 - fa
            ux1 += dx1
            ux2 += dx2
            uy += dy1 + dy2
            sxx += dx1 * dx1 + dx2 * dx2
            sxy += dx1 * dy1 + dx2 * dy2
            syy += dy1 * dy1 + dy2 * dy2
            if single:
                a0 += wj * C0[q, col0]
        if not single:
            for k in range(nd):
                acc[k] = 0.0
            if nd == C0.shape[1]:
                for j in range(n):
                    q = idx[j]
                    wj = inv[j]
                    for k in range(nd):
                        acc[k] += wj * C0[q, k]
            else:
                for j in range(n):
                    q = idx[j]
                    wj = inv[j]
                    for k in range(nd):
                        acc[k] += wj * C0[q, dates[k]]
        else:
            acc[0] = a0

    if n > 5 and stot > 0.0 and np.isfinite(stot):
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
        for d in range(nd):
            if tsel >= 0:
                t = tsel
                m0 = m0s
            else:
                t = dates[d]
                m0 = M0[p, t]
            d1 = abs(m0 - m1) + 1e-10
            d2 = abs(m0 - m2) + 1e-10
            t1 = (1.0 / d1) / (1.0 / d1 + 1.0 / d2)
            t2 = (1.0 / d2) / (1.0 / d1 + 1.0 / d2)
            p1 = fa + v * (acc[d] - wc1) / stot
            p2 = fb + v * (acc[d] - wc2) / stot
            pred = t1 * p1 + t2 * p2
            if pred <= lo or pred >= hi:
                pred = t1 * (wf1 / stot) + t2 * (wf2 / stot)
            out[t, 0, p] = pred
    else:
        for d in range(nd):
            if tsel >= 0:
                t = tsel
                m0 = m0s
            else:
                t = dates[d]
                m0 = M0[p, t]
            e1 = m0 - m1 + 1e-10
            e2 = m0 - m2 + 1e-10
            a1 = abs(e1)
            a2 = abs(e2)
            t1 = (1.0 / a1) / (1.0 / a1 + 1.0 / a2)
            t2 = (1.0 / a2) / (1.0 / a1 + 1.0 / a2)
            out[t, 0, p] = t1 * (fa + e1) + t2 * (fb + e2)


@njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _fuse_kernel(
    rows, cols, w, F, C12, OMR, vb, C0, V0, M0, M12, dirty, th, dtab, fcrit, lo, hi, change_thr, out,
):  # pragma: no cover - numba
    """Fill ``out`` (n_dates, bands, rows*cols) for every pixel; rows in parallel."""
    nt = dirty.shape[1]
    nb = out.shape[1]
    win = 2 * w + 1
    for r in prange(rows):
        idx = np.empty(win * win, np.int64)
        didx = np.empty(win * win, np.int64)
        inv = np.empty(win * win, np.float64)
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
                if nb == 1:
                    _predict_pixel_1(r, c, rows, cols, w, dates[:nd], nd, -1, F, C12, OMR, vb, C0, V0, M0, M12,
                                     th, dtab, fcrit, lo, hi, change_thr, idx, didx, inv, acc, out)
                else:
                    _predict_pixel(r, c, rows, cols, w, dates[:nd], nd, -1, F, C12, OMR, vb, C0, V0, M0, M12,
                                   th, dtab, fcrit, lo, hi, change_thr, idx, didx, wk, acc, out)
            if nd < nt:
                for t in range(nt):
                    if dirty[p, t]:
                        one[0] = t
                        if nb == 1:
                            _predict_pixel_1(r, c, rows, cols, w, one, 1, t, F, C12, OMR, vb, C0, V0, M0, M12,
                                             th, dtab, fcrit, lo, hi, change_thr, idx, didx, inv, acc, out)
                        else:
                            _predict_pixel(r, c, rows, cols, w, one, 1, t, F, C12, OMR, vb, C0, V0, M0, M12,
                                           th, dtab, fcrit, lo, hi, change_thr, idx, didx, wk, acc, out)


# --------------------------------------------------------------------------- #
# the pair driver shared by fuse and fuse_series
# --------------------------------------------------------------------------- #
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
    sums = _window_sum(np.ascontiguousarray(chans), rows, cols, w)
    cnt = sums[:, nt * nb + 2 * nb][:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        M0 = np.ascontiguousarray(sums[:, : nt * nb] / cnt)
        M12 = np.ascontiguousarray(sums[:, nt * nb: nt * nb + 2 * nb] / cnt)
    dirty = np.ascontiguousarray(sums[:, nt * nb + 2 * nb + 1:] > 0.5)
    out = np.empty((nt, nb, npx))
    fcrit = _f_critical(2 * (2 * w + 1) ** 2)
    _fuse_kernel(
        rows, cols, w, F, C12, OMR, vb, C0, V0, M0, M12, dirty, np.asarray(th, np.float64),
        _distance_table(w).ravel(), fcrit, lo, hi, 0.02 * hi, out,
    )
    return out.reshape(nt, nb, rows, cols)


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
        fine dates with ``extrapolate=False``, bad settings or units.
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

    # partner coarse image of every fine image
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

    nb, rows, cols = fine[0].shape
    fused = np.empty((len(cd), nb, rows, cols))
    done = 0
    for (i1, i2), js in sorted(groups.items(), key=lambda kv: fd[kv[0][0]]):
        f1, f2 = fine[i1], fine[i2]
        c1, c2 = coarse[partner[i1]], coarse[partner[i2]]
        th = similarity_thresholds(f1, f2, classes=classes)
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
