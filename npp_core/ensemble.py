"""Ensembles of the attribution: how stable is the dominant-driver map?

Members (attribution runs that differ by random-forest seed, sample draw or
both) are reduced on the fly by :class:`EnsembleReducer`: per pixel it keeps
only a vote count per class and running sums of RelCon, so memory does not
grow with the number of members. Scalars per member (mean RelCon per category,
class area shares, category importance) are kept, since they are small, and
summarised as mean and 5–95 % interval.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["EnsembleReducer", "interval"]


def interval(values: list[float] | np.ndarray, lo: float = 5.0, hi: float = 95.0) -> dict[str, float]:
    """Mean and percentile interval of member values.

    Parameters
    ----------
    values : sequence of float, shape (members,)

    Returns
    -------
    dict
        ``mean``, ``p05``, ``p95`` (named for the default percentiles), ``min``, ``max``, ``n``.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": float("nan"), "p05": float("nan"), "p95": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {
        "mean": float(v.mean()),
        "p05": float(np.percentile(v, lo)),
        "p95": float(np.percentile(v, hi)),
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }


class EnsembleReducer:
    """Reduce ensemble members one at a time.

    Parameters
    ----------
    n_classes : int
        Largest class code + 1 (code 0 = nodata, never voted).
    shape : tuple of int
        Raster shape (rows, cols).
    categories : list of str
        Category names, the band order of RelCon.
    """

    def __init__(self, n_classes: int, shape: tuple[int, int], categories: list[str]) -> None:
        self.n_classes = int(n_classes)
        self.shape = tuple(shape)
        self.categories = list(categories)
        self.votes = np.zeros((self.n_classes,) + self.shape, dtype=np.uint16)
        self.relcon_sum = np.zeros((len(categories),) + self.shape, dtype=np.float64)
        self.relcon_n = np.zeros(self.shape, dtype=np.uint16)
        self.scalars: dict[str, list[float]] = {}
        self.members = 0

    def add(self, codes: np.ndarray, relcon: np.ndarray | None = None, scalars: dict[str, float] | None = None) -> None:
        """Add one member.

        Parameters
        ----------
        codes : ndarray of uint8, shape (rows, cols)
            Dominant-class codes (0 = nodata).
        relcon : ndarray, shape (categories, rows, cols), optional
            RelCon in percent (NaN where undefined).
        scalars : dict, optional
            Named member-level numbers (e.g. ``"relcon_mean.C"``, ``"share.CS"``).
        """
        c = np.asarray(codes)
        if c.shape != self.shape:
            raise ValueError(f"member class map shape {c.shape} does not match the ensemble's {self.shape}")
        if c.size and int(c.max()) >= self.n_classes:
            raise ValueError(f"class code {int(c.max())} is outside 0..{self.n_classes - 1}")
        valid = c > 0
        for k in np.unique(c[valid]):
            self.votes[int(k)] += (c == k)
        if relcon is not None:
            r = np.asarray(relcon, dtype=np.float64)
            ok = np.all(np.isfinite(r), axis=0)
            self.relcon_sum += np.where(ok[None], r, 0.0)
            self.relcon_n += ok
        for k, v in (scalars or {}).items():
            self.scalars.setdefault(k, []).append(float(v))
        self.members += 1

    def modal(self) -> tuple[np.ndarray, np.ndarray]:
        """Modal class and agreement.

        Returns
        -------
        mode : ndarray of uint8, shape (rows, cols)
            The class most members chose (ties: the lowest code); 0 where no member voted.
        agreement : ndarray of float64, shape (rows, cols)
            Share (0–1) of members that chose the modal class; NaN where no member voted.
        """
        total = self.votes.sum(axis=0)
        mode = np.argmax(self.votes, axis=0).astype(np.uint8)
        top = np.take_along_axis(self.votes, mode[None].astype(np.intp), axis=0)[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            agreement = np.where(total > 0, top / np.maximum(total, 1), np.nan)
        mode = np.where(total > 0, mode, 0).astype(np.uint8)
        return mode, agreement

    def relcon_mean(self) -> np.ndarray:
        """Per-pixel mean RelCon over members, shape (categories, rows, cols)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.relcon_n > 0, self.relcon_sum / np.maximum(self.relcon_n, 1), np.nan)

    def intervals(self) -> dict[str, Any]:
        """Mean and 5–95 % interval of every member-level scalar."""
        return {k: interval(v) for k, v in self.scalars.items()}
