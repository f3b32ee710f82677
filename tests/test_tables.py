"""Tests of npp_core.tables.read_csv: separators, BOM, decimal commas, whitespace, and clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from npp_core.tables import TableError, read_csv


def test_comma_and_semicolon_with_bom_and_whitespace(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_bytes("\ufeff id , x ,y\n a ,1.5, 2\nb,3,4e1\n\n".encode("utf-8"))
    df = read_csv(p, required=["id", "x", "y"], numeric=["x", "y"])
    assert list(df.columns) == ["id", "x", "y"] and list(df["id"]) == ["a", "b"]
    assert df["x"].tolist() == [1.5, 3.0] and df["y"].tolist() == [2.0, 40.0] and df.attrs["sep"] == ","
    df = read_csv("id;x\nq;1,5\nr;-0,25\ns;\nt;NA\n".encode(), numeric=["x"], name="up.csv")
    assert df["x"].tolist()[:2] == [1.5, -0.25] and np.isnan(df["x"].iloc[2]) and np.isnan(df["x"].iloc[3])
    assert df.attrs["decimal_comma"] and df.attrs["sep"] == ";" and df.attrs["file"] == "up.csv"


def test_missing_column_names_file_column_and_found(tmp_path: Path) -> None:
    p = tmp_path / "soil.csv"
    p.write_text("x,y,SOC\n1,2,3\n")
    with pytest.raises(TableError) as e:
        read_csv(p, required=["x", "y", "soc"])
    msg = str(e.value)
    assert msg.startswith("soil.csv:") and "'soc'" in msg and "'SOC'" in msg and "columns found" in msg


def test_text_in_numeric_column_names_lines(tmp_path: Path) -> None:
    p = tmp_path / "s.csv"
    p.write_text("x,v\n1,2\n2,abc\n3,4\n4,n.d.\n")
    with pytest.raises(TableError, match=r"s.csv: column 'v' .* line\(s\) 3, 5 .*'abc'"):
        read_csv(p, numeric=["v"])
    # a decimal comma with ',' as separator cannot be told from two cells: refused with the fix
    q = tmp_path / "q.csv"
    q.write_text('x,v\n1,"1,5"\n')
    with pytest.raises(TableError, match="Decimal commas need ';'"):
        read_csv(q, numeric=["v"])


def test_structural_errors(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="empty"):
        read_csv(b"  \n", name="e.csv")
    with pytest.raises(TableError, match="appear more than once"):
        read_csv(b"a,a\n1,2\n", name="d.csv")
    with pytest.raises(TableError, match="line\\(s\\) 3 have more cells"):
        read_csv(b"a,b\n1,2\n1,2,3\n", name="w.csv")
    with pytest.raises(TableError, match="not found"):
        read_csv(tmp_path / "nope.csv")
    df = read_csv(b"a;b;\n1;2;\n", numeric=["a", "b"])  # trailing separator
    assert list(df.columns) == ["a", "b"] and df["b"].iloc[0] == 2


def test_no_eval_of_cell_content() -> None:
    df = read_csv(b"a,b\n__import__('os').system('echo hi'),2\n", numeric=["b"])
    assert df["a"].iloc[0] == "__import__('os').system('echo hi')"
    with pytest.raises(TableError):
        read_csv(b"a\n1+1\n", numeric=["a"])
