"""Tests of npp_core.safezip: traversal, links, bombs and counts are refused; good archives extract."""
from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from npp_core.safezip import SafeZipError, extract_zip


def _zip(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_extracts_top_level_and_one_folder_down(tmp_path: Path) -> None:
    root = extract_zip(_zip({"dataset.toml": b"name='a'", "x/a.tif": b"123"}), tmp_path / "a")
    assert root == tmp_path / "a" and (root / "x" / "a.tif").read_bytes() == b"123"
    root = extract_zip(_zip({"basin/dataset.toml": b"", "basin/b.csv": b"x", "__MACOSX/basin/._b.csv": b"junk"}),
                       tmp_path / "b")
    assert root == tmp_path / "b" / "basin" and (root / "b.csv").read_bytes() == b"x"
    assert not (tmp_path / "b" / "__MACOSX").exists()
    zp = tmp_path / "c.zip"
    zp.write_bytes(_zip({"dataset.toml": b""}))
    assert extract_zip(zp, tmp_path / "c") == tmp_path / "c"


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/etc/evil", "C:/evil.txt", "\\\\server\\x",
                                  "..\\evil.txt"])
def test_traversal_absolute_and_drive_letters_refused(tmp_path: Path, name: str) -> None:
    data = _zip({"dataset.toml": b"", name: b"x"})
    with pytest.raises(SafeZipError, match="refused"):
        extract_zip(data, tmp_path / "d")
    assert not (tmp_path / "evil.txt").exists()
    assert not any((tmp_path / "d").rglob("*evil*"))


def test_symlink_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("dataset.toml", b"")
        info = zipfile.ZipInfo("link.tif")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(SafeZipError, match="symbolic link"):
        extract_zip(buf.getvalue(), tmp_path / "e")
    assert not (tmp_path / "e" / "link.tif").exists()


def test_bomb_by_ratio_and_declared_size_refused(tmp_path: Path) -> None:
    bomb = _zip({"dataset.toml": b"", "zeros.bin": b"\0" * 5_000_000})  # ~1000:1
    with pytest.raises(SafeZipError, match="zip bomb"):
        extract_zip(bomb, tmp_path / "f")
    with pytest.raises(SafeZipError, match="limit"):
        extract_zip(_zip({"dataset.toml": b"", "a.bin": b"x" * 5000}), tmp_path / "g", max_total_bytes=1000)


def test_lying_header_caught_while_extracting(tmp_path: Path) -> None:
    payload = b"y" * 100_000
    import struct

    data = bytearray(_zip({"dataset.toml": b"", "a.bin": payload}, compression=zipfile.ZIP_STORED))
    # claim 10 bytes for a.bin in its central-directory record (uncompressed size at offset 24)
    pos, patched = 0, 0
    while (pos := bytes(data).find(b"PK\x01\x02", pos)) >= 0:
        nlen = struct.unpack_from("<H", data, pos + 28)[0]
        if bytes(data[pos + 46:pos + 46 + nlen]) == b"a.bin":
            struct.pack_into("<I", data, pos + 24, 10)
            patched += 1
        pos += 4
    assert patched == 1
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        assert zf.getinfo("a.bin").file_size == 10  # the declared sizes pass the up-front checks
    with pytest.raises(SafeZipError, match="declared size|corrupt"):
        extract_zip(bytes(data), tmp_path / "h", max_ratio=1e9)
    assert not (tmp_path / "h" / "a.bin").exists()


def test_too_many_files_and_duplicates_and_garbage(tmp_path: Path) -> None:
    many = {f"f{i}.txt": b"x" for i in range(20)} | {"dataset.toml": b""}
    with pytest.raises(SafeZipError, match="21 members"):
        extract_zip(_zip(many), tmp_path / "i", max_files=10)
    with pytest.raises(SafeZipError, match="not a readable zip"):
        extract_zip(b"PK garbage", tmp_path / "j")
    with pytest.raises(SafeZipError, match="no dataset.toml"):
        extract_zip(_zip({"a.tif": b"1"}), tmp_path / "k")
    with pytest.raises(SafeZipError, match="several folders"):
        extract_zip(_zip({"a/dataset.toml": b"", "b/dataset.toml": b""}), tmp_path / "l")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("dataset.toml", b"")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zf.writestr("dataset.toml", b"again")
    with pytest.raises(SafeZipError, match="twice"):
        extract_zip(buf.getvalue(), tmp_path / "m")
