"""Extract an uploaded dataset archive without trusting it.

A .zip from a user may try to write outside the destination (``../`` or
absolute member names, Windows drive letters), plant symbolic links, or expand
to far more data than it claims (a zip bomb). :func:`extract_zip` refuses all
of these before writing anything, then counts the bytes actually written while
extracting, so a lying header cannot get past the limits either.

Out of scope: encrypted archives (refused), nested archives (left as files),
and formats other than zip.
"""
from __future__ import annotations

import io
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

__all__ = ["SafeZipError", "extract_zip", "find_manifest_dir"]

MANIFEST = "dataset.toml"
_CHUNK = 1 << 20
#: Entries smaller than this are not subject to the per-entry ratio check
#: (a small, mostly-nodata raster legitimately compresses very well).
_RATIO_MIN_BYTES = 1 << 20
_IGNORED_PREFIXES = ("__MACOSX/",)


class SafeZipError(ValueError):
    """An archive that was refused, with the member at fault and the fix."""


def _member_problem(name: str) -> str | None:
    """Why a member name is unsafe, or None."""
    if "\x00" in name:
        return "contains a NUL character"
    norm = name.replace("\\", "/")
    if norm.startswith("/"):
        return "is an absolute path"
    if re.match(r"^[A-Za-z]:", norm):
        return "starts with a drive letter"
    parts = PurePosixPath(norm).parts
    if any(p == ".." for p in parts):
        return "climbs out of the archive with '..'"
    return None


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = (info.external_attr >> 16) & 0xFFFF
    return stat.S_ISLNK(mode)


def _is_special(info: zipfile.ZipInfo) -> bool:
    """Device, FIFO or socket entries (unix mode bits set and not a file/dir)."""
    mode = (info.external_attr >> 16) & 0xFFFF
    if mode == 0:
        return False
    fmt = stat.S_IFMT(mode)
    return fmt not in (0, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK)


def find_manifest_dir(root: Path | str) -> Path:
    """The folder holding ``dataset.toml``: ``root`` itself or exactly one sub-folder.

    Raises
    ------
    SafeZipError
        When there is no manifest, or several one folder down.
    """
    root = Path(root)
    if (root / MANIFEST).is_file():
        return root
    found = sorted(p.parent for p in root.glob(f"*/{MANIFEST}") if p.is_file() and not p.parent.name.startswith("__MACOSX"))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise SafeZipError(
            f"archive: several folders hold a {MANIFEST} ({names}). Zip one dataset folder at a time."
        )
    raise SafeZipError(
        f"archive: no {MANIFEST} at the top level or one folder down. Put {MANIFEST} in the dataset "
        "folder (next to the rasters) and zip that folder."
    )


def extract_zip(
    zip_path_or_bytes: Path | str | bytes | bytearray | memoryview,
    dest: Path | str,
    *,
    max_total_bytes: int = 2_000_000_000,
    max_files: int = 5000,
    max_ratio: float = 200,
) -> Path:
    """Safely extract a dataset archive and return the folder holding ``dataset.toml``.

    Parameters
    ----------
    zip_path_or_bytes : path-like or bytes
        The archive, on disk or in memory (an upload).
    dest : path-like
        Destination folder (created if needed). Files written before a refusal
        discovered during extraction are removed again.
    max_total_bytes : int
        Largest total uncompressed size, declared or actually written.
    max_files : int
        Largest number of members.
    max_ratio : float
        Largest uncompressed/compressed ratio, per member (members over 1 MiB)
        and for the whole archive (when over 10 MiB uncompressed).

    Returns
    -------
    Path
        ``dest`` or the single sub-folder of it that holds ``dataset.toml``.

    Raises
    ------
    SafeZipError
        Path traversal, absolute paths, drive letters, symbolic links or
        special files, encrypted members, duplicate names, too many members,
        too many bytes, a suspicious compression ratio, a corrupt archive, or
        no ``dataset.toml``.
    """
    label = "archive"
    if isinstance(zip_path_or_bytes, (bytes, bytearray, memoryview)):
        src: object = io.BytesIO(bytes(zip_path_or_bytes))
    else:
        src = Path(zip_path_or_bytes)
        label = Path(zip_path_or_bytes).name
        if not Path(zip_path_or_bytes).is_file():
            raise SafeZipError(f"{label}: file not found. Check the path to the .zip.")
    try:
        zf = zipfile.ZipFile(src)  # type: ignore[arg-type]
    except Exception as exc:  # BadZipFile, OSError, ValueError, NotImplementedError, struct/zlib errors …
        raise SafeZipError(f"{label}: not a readable zip archive ({exc}). Create the archive again.") from None

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest_resolved = dest.resolve()
    with zf:
        infos = [i for i in zf.infolist() if not i.filename.replace("\\", "/").startswith(_IGNORED_PREFIXES)]
        if len(infos) > max_files:
            raise SafeZipError(
                f"{label}: holds {len(infos)} members, more than the limit of {max_files}. "
                "Zip only the dataset folder, or merge monthly files into multi-band rasters."
            )
        seen: set[str] = set()
        declared = 0
        compressed = 0
        plan: list[tuple[zipfile.ZipInfo, Path]] = []
        for info in infos:
            name = info.filename
            why = _member_problem(name)
            if why:
                raise SafeZipError(f"{label}: member '{name}' {why}; refused. Zip the dataset folder with relative paths.")
            if _is_symlink(info):
                raise SafeZipError(
                    f"{label}: member '{name}' is a symbolic link; refused. Zip the real files instead of links."
                )
            if _is_special(info):
                raise SafeZipError(f"{label}: member '{name}' is not a regular file; refused.")
            if info.flag_bits & 0x1:
                raise SafeZipError(f"{label}: member '{name}' is encrypted. Upload an archive without a password.")
            norm = PurePosixPath(name.replace("\\", "/")).as_posix().rstrip("/")
            if norm in ("", "."):
                continue
            if norm.lower() in seen:
                raise SafeZipError(f"{label}: member '{name}' appears twice. Create the archive again.")
            seen.add(norm.lower())
            target = (dest / norm).resolve()
            if target != dest_resolved and dest_resolved not in target.parents:
                raise SafeZipError(f"{label}: member '{name}' would be written outside the destination; refused.")
            if info.is_dir():
                plan.append((info, target))
                continue
            declared += info.file_size
            compressed += info.compress_size
            if info.file_size >= _RATIO_MIN_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
                raise SafeZipError(
                    f"{label}: member '{name}' expands {info.file_size / max(info.compress_size, 1):.0f}× "
                    f"(limit {max_ratio:g}×), which looks like a zip bomb; refused. Store rasters compressed "
                    "(GeoTIFF deflate) rather than relying on zip compression."
                )
            plan.append((info, target))
        if declared > max_total_bytes:
            raise SafeZipError(
                f"{label}: would expand to {declared:,} bytes, more than the limit of {max_total_bytes:,}. "
                "Clip the rasters to the study area or upload a smaller dataset."
            )
        if declared > 10 * _RATIO_MIN_BYTES and declared > max_ratio * max(compressed, 1):
            raise SafeZipError(
                f"{label}: expands {declared / max(compressed, 1):.0f}× overall (limit {max_ratio:g}×), "
                "which looks like a zip bomb; refused."
            )

        written = 0
        created: list[Path] = []
        try:
            for info, target in plan:
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                n = 0
                created.append(target)
                with zf.open(info) as fin, open(target, "wb") as fout:
                    while True:
                        chunk = fin.read(_CHUNK)
                        if not chunk:
                            break
                        n += len(chunk)
                        written += len(chunk)
                        if n > info.file_size or written > max_total_bytes:
                            raise SafeZipError(
                                f"{label}: member '{info.filename}' expands beyond its declared size "
                                f"or the limit of {max_total_bytes:,} bytes; refused."
                            )
                        fout.write(chunk)
        except SafeZipError:
            _cleanup(created)
            raise
        except Exception as exc:  # BadZipFile, zlib.error, EOFError, ValueError (bad offsets), CRC errors …
            _cleanup(created)
            raise SafeZipError(f"{label}: corrupt archive ({exc.__class__.__name__}: {str(exc)[:160]}). "
                               "Create the archive again.") from None
    return find_manifest_dir(dest)


def _cleanup(paths: list[Path]) -> None:
    for p in paths:
        try:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        except OSError:  # pragma: no cover
            pass
