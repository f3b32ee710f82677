"""Writers for run outputs other than rasters: ``summary.json`` and CSV tables.

All writes are atomic (temporary file in the destination folder, then
``os.replace``). Raster writing lives in :mod:`npp_core.raster`.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .raster import atomic_path

__all__ = ["write_json", "write_csv", "to_jsonable"]


def to_jsonable(obj: Any) -> Any:
    """Recursively turn numpy scalars/arrays and NaN into JSON-safe values (NaN → None)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return obj


def write_json(path: Path | str, data: dict[str, Any]) -> Path:
    """Write JSON atomically (NaN written as null)."""
    tmp, final = atomic_path(path)
    try:
        tmp.write_text(json.dumps(to_jsonable(data), indent=2, allow_nan=False), encoding="utf-8")
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def write_csv(path: Path | str, columns: dict[str, Any]) -> Path:
    """Write a table given as ``{column: 1-D values}`` to CSV atomically (NaN → empty)."""
    import csv

    names = list(columns)
    cols = [np.asarray(columns[n]) for n in names]
    n = len(cols[0]) if cols else 0
    tmp, final = atomic_path(path)
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(names)
            for i in range(n):
                row = []
                for c in cols:
                    v = c[i]
                    if isinstance(v, (float, np.floating)):
                        row.append("" if math.isnan(float(v)) else repr(float(v)))
                    else:
                        row.append(v.item() if hasattr(v, "item") else v)
                w.writerow(row)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final
