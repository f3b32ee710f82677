"""Comparison of two run-summary fragments (memory vs chunked runs), shared by the chunked tests."""
from __future__ import annotations

from typing import Any


def close(a: float, b: float, rel: float) -> bool:
    """Equal to ``rel`` relative (absolute below 1), or both NaN."""
    return (a != a and b != b) or abs(a - b) <= rel * max(1.0, abs(a))


def differences(u: Any, v: Any, *, rel: float = 1e-6, same_keys: bool = False, path: str = "") -> list[str]:
    """Every number of fragment ``u`` equals ``v`` to ``rel``; returns the differences.

    With ``same_keys`` the dicts must have the same keys, else ``v`` may hold more.
    """
    bad: list[str] = []
    if isinstance(u, dict):
        if not isinstance(v, dict) or (same_keys and set(u) != set(v)):
            return [f"{path}: keys {sorted(u)} != {sorted(v) if isinstance(v, dict) else v!r}"]
        for k in u:
            bad += [f"{path}/{k}: missing"] if k not in v else \
                differences(u[k], v[k], rel=rel, same_keys=same_keys, path=f"{path}/{k}")
    elif isinstance(u, list):
        if not isinstance(v, list) or len(u) != len(v):
            return [f"{path}: {u!r} != {v!r}"]
        for i, (a, b) in enumerate(zip(u, v)):
            bad += differences(a, b, rel=rel, same_keys=same_keys, path=f"{path}[{i}]")
    elif isinstance(u, float) and isinstance(v, (float, int)):
        if not close(u, float(v), rel):
            bad.append(f"{path}: {u} != {v}")
    elif u != v:
        bad.append(f"{path}: {u!r} != {v!r}")
    return bad
