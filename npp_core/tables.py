"""Reading the small CSV tables a user brings (soil samples, AHP matrix, plots).

Spreadsheets export CSV in many dialects. :func:`read_csv` accepts comma,
semicolon or tab separators, a UTF-8 byte-order mark, surrounding whitespace,
and decimal commas (``"1,5"`` → 1.5) when the separator is not a comma. Every
failure is a :class:`TableError` naming the file, the column or rows, and the
fix. Nothing read from a table is ever evaluated as code.
"""
from __future__ import annotations

import csv
import difflib
import io
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

__all__ = ["TableError", "read_csv", "MAX_TABLE_BYTES"]

#: Largest CSV we read (a sample table is kilobytes; this guards uploads).
MAX_TABLE_BYTES = 200_000_000

_NA_TOKENS = {"", "na", "n/a", "nan", "null", "none", "-", "--", "#n/a", "nodata"}
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+([eE][+-]?\d+)?$")


class TableError(ValueError):
    """A table that cannot be used, with the file, the column/row and the fix.

    ``str(exc)`` is the whole message; ``problem`` and ``fix`` hold its two parts.
    """

    def __init__(self, message: str, *, problem: str = "", fix: str = ""):
        super().__init__(message)
        self.problem = problem or message
        self.fix = fix


def _err(label: str, problem: str, fix: str) -> TableError:
    return TableError(f"{label}: {problem} {fix}", problem=problem, fix=fix)


def _decode(raw: bytes, name: str) -> tuple[str, str]:
    for enc in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(enc), enc
        except UnicodeDecodeError:
            continue
    raise _err(name, "not UTF-8 text.", "Save the table as 'CSV UTF-8'.")  # pragma: no cover


def _sniff_sep(text: str) -> str:
    header = ""
    for line in text.splitlines():
        if line.strip():
            header = line
            break
    counts = {sep: header.count(sep) for sep in (";", "\t", ",")}
    if not any(counts.values()):
        # a one-column table: no separator splits it, so a comma in its values can only be a decimal comma
        return ";"
    if counts[";"] and counts[";"] >= counts[","]:
        return ";"
    if counts["\t"] and counts["\t"] >= counts[","]:
        return "\t"
    return ","


def _rows_text(rows: Iterable[int], limit: int = 10) -> str:
    rows = list(rows)
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def read_csv(
    path_or_bytes: Path | str | bytes | bytearray,
    *,
    required: Iterable[str] = (),
    numeric: Iterable[str] = (),
    name: str | None = None,
) -> pd.DataFrame:
    """Read a CSV table robustly.

    Parameters
    ----------
    path_or_bytes : path-like or bytes
        The file, or its content (an upload).
    required : iterable of str
        Columns that must exist (after stripping whitespace around header names).
    numeric : iterable of str
        Columns converted to float64; empty cells and NA tokens become NaN, any
        other text is an error naming the rows.
    name : str, optional
        Name used in messages (default: the file name, or ``"table"``).

    Returns
    -------
    pandas.DataFrame
        Text columns as stripped ``str``, ``numeric`` columns as float64. ``attrs``
        holds ``file``, ``sep``, ``encoding`` and ``decimal_comma`` (bool).
        Row ``i`` of the frame is line ``i + 2`` of the file (line 1 = header)
        when there are no blank lines.

    Raises
    ------
    TableError
        Unreadable file, empty table, duplicate or missing columns, text in a
        numeric column.
    """
    if isinstance(path_or_bytes, (bytes, bytearray)):
        raw = bytes(path_or_bytes)
        label = name or "table"
    else:
        p = Path(path_or_bytes)
        label = name or p.name
        if not p.is_file():
            raise _err(label, f"file not found at {p}.", "Check the path in the manifest.")
        if p.stat().st_size > MAX_TABLE_BYTES:
            raise _err(label, f"larger than {MAX_TABLE_BYTES:,} bytes; is it really a sample table?",
                       "Give only the table of points (a small CSV).")
        raw = p.read_bytes()
    if len(raw) > MAX_TABLE_BYTES:
        raise _err(label, f"larger than {MAX_TABLE_BYTES:,} bytes; is it really a sample table?",
                       "Give only the table of points (a small CSV).")
    text, enc = _decode(raw, label)
    if not text.strip():
        raise _err(label, "the table is empty.", "Export it again with a header row and data rows.")
    sep = _sniff_sep(text)
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=sep))
    except csv.Error as exc:
        raise _err(label, f"not a readable CSV ({exc}).", "Export it again as CSV.") from None
    # keep the file line of every data row for messages; drop blank lines
    lines = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    if not lines:
        raise _err(label, "the table is empty.", "Export it again with a header row and data rows.")
    header = [c.strip().lstrip("\ufeff").strip() for c in lines[0][1]]
    # trailing empty header cells from a trailing separator
    while header and header[-1] == "" and all(len(r) < len(header) or not r[len(header) - 1].strip() for _, r in lines[1:]):
        header.pop()
    if any(h == "" for h in header):
        pos = [str(k + 1) for k, h in enumerate(header) if h == ""]
        raise _err(label, f"header cell(s) {', '.join(pos)} are empty.", "Give every column a name.")
    dups = sorted({h for h in header if header.count(h) > 1})
    if dups:
        raise _err(label, f"column(s) {', '.join(dups)} appear more than once.", "Rename them.")
    data_lines = lines[1:]
    bad_width = [ln for ln, r in data_lines if len([c for c in r[len(header):] if c.strip()]) > 0]
    if bad_width:
        raise _err(
            label,
            f"line(s) {_rows_text(bad_width)} have more cells than the {len(header)} header columns "
            f"(separator '{sep}').",
            "Quote values that contain the separator, or fix those lines.",
        )
    body = [[(r[k].strip() if k < len(r) else "") for k in range(len(header))] for _, r in data_lines]
    df = pd.DataFrame(body, columns=header, dtype=object)
    file_lines = np.array([ln for ln, _ in data_lines], dtype=np.int64)

    required = [str(c) for c in required]
    missing = [c for c in required if c not in header]
    if missing:
        hints = []
        for c in missing:
            close = difflib.get_close_matches(c, [h for h in header if h not in required], n=1, cutoff=0.6)
            lower = [h for h in header if h.lower() == c.lower()]
            cl = c.lower()
            prefix = [h for h in header if len(h) >= 2 and h not in required
                      and (cl.startswith(h.lower()) or h.lower().startswith(cl))]
            if lower:
                hints.append(f"'{c}' → '{lower[0]}'?")
            elif prefix:  # 'soc' for 'soc_g_kg' (a unit suffix dropped or added)
                hints.append(f"'{c}' → '{prefix[0]}'?")
            elif close:
                hints.append(f"'{c}' → '{close[0]}'?")
        hint = f" Did you mean {'; '.join(hints)}" if hints else ""
        raise _err(
            label,
            f"missing column(s) {', '.join(repr(c) for c in missing)}; columns found: "
            f"{', '.join(repr(h) for h in header)}.{hint}",
            "Rename the column in the file or set the column name in the manifest.",
        )

    decimal_comma = False
    for col in numeric:
        if col not in df.columns:
            continue
        vals = df[col].astype(str)
        is_na = vals.str.lower().isin(_NA_TOKENS)
        work = vals.copy()
        comma = work.str.match(_DECIMAL_COMMA) & ~is_na
        if comma.any():
            if sep == ",":  # only possible inside quotes; ambiguous (thousands?) → reject below
                pass
            else:
                work = work.where(~comma, work.str.replace(",", ".", regex=False))
                decimal_comma = True
        num = pd.to_numeric(work.where(~is_na, None), errors="coerce").astype(np.float64)
        bad = num.isna().to_numpy() & ~is_na.to_numpy()
        if bad.any():
            idx = np.flatnonzero(bad)
            examples = ", ".join(repr(v) for v in vals.iloc[idx[:3]])
            fix = "Use numbers only (leave the cell empty for a missing value)"
            if comma.to_numpy()[idx].any() and sep == ",":
                fix = "Decimal commas need ';' as the separator: export with ';' or use '.' for decimals"
            raise _err(
                label,
                f"column '{col}' has text where numbers are expected on line(s) "
                f"{_rows_text(file_lines[idx])} ({examples}).",
                f"{fix}.",
            )
        df[col] = num.to_numpy(dtype=np.float64)
    for col in df.columns:
        if df[col].dtype == object:
            df[col] = df[col].astype(str)
    df.attrs.update(file=label, sep=sep, encoding=enc, decimal_comma=decimal_comma, lines=file_lines.tolist())
    return df
