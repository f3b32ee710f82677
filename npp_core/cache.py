"""A bounded, content-addressed cache of stage results on disk.

Each entry is a folder named by a key (sha256 of the stage name, its code
version, the content hashes of its inputs and its own settings) holding the
stage's output files and a ``result.json`` with its summary fragment. The CLI
(``--cache DIR``) and the dashboard share it. Deleting the folder is always
safe: entries are written to a temporary folder and renamed into place, and a
missing or damaged entry is simply a miss.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

__all__ = ["StageCache", "make_key", "hash_file"]


def hash_file(path: Path | str, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def make_key(stage: str, version: str, inputs: dict[str, Any]) -> str:
    """Cache key of a stage: sha256 of a canonical JSON of its identity and inputs."""
    blob = json.dumps({"stage": stage, "version": version, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class StageCache:
    """Stage results stored under content-hash keys, bounded in total size.

    Parameters
    ----------
    root : path-like
        Cache folder (created when needed).
    max_bytes : int
        Oldest entries (by last use) are removed beyond this total size.
    """

    def __init__(self, root: Path | str, max_bytes: int = 4 * 1024**3) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> tuple[dict[str, Any], Path] | None:
        """The stored (result, folder) of a key, or None on a miss."""
        d = self._entry(key)
        meta = d / "result.json"
        try:
            result = json.loads(meta.read_text())
        except (OSError, ValueError):
            return None
        for rel in result.get("_files", []):
            if not (d / "files" / rel).is_file():
                return None
        try:
            os.utime(d)
        except OSError:
            pass
        return result, d / "files"

    def put(self, key: str, result: dict[str, Any], files: Iterable[tuple[Path, str]]) -> None:
        """Store a stage result and copies of its files (source path, relative name)."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self._entry(key)
        if final.exists():
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
        try:
            rels = []
            for src, rel in files:
                dst = tmp / "files" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(Path(src), dst)
                rels.append(rel)
            meta = dict(result)
            meta["_files"] = rels
            (tmp / "result.json").write_text(json.dumps(meta, default=str))
            try:
                os.replace(tmp, final)
            except OSError:  # another process stored it first
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.prune()

    def size(self) -> int:
        """Total bytes stored."""
        total = 0
        for p in self.root.rglob("*"):
            if p.is_file():
                total += p.stat().st_size
        return total

    def prune(self) -> None:
        """Remove least recently used entries until the cache fits ``max_bytes``."""
        if not self.root.exists():
            return
        entries = []
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for e in sub.iterdir():
                if e.is_dir() and not e.name.startswith(".tmp-"):
                    size = sum(p.stat().st_size for p in e.rglob("*") if p.is_file())
                    entries.append((e.stat().st_mtime, size, e))
        total = sum(s for _, s, _ in entries)
        for _, s, e in sorted(entries, key=lambda t: t[0]):
            if total <= self.max_bytes:
                break
            shutil.rmtree(e, ignore_errors=True)
            total -= s

    def clear(self) -> None:
        """Delete every entry."""
        shutil.rmtree(self.root, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def restore(files_dir: Path, rels: Iterable[str], out_dir: Path) -> list[Path]:
    """Copy cached files into an output folder (atomic per file)."""
    written = []
    for rel in rels:
        dst = out_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{time.time_ns()}.part")
        try:
            _link_or_copy(files_dir / rel, tmp)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(dst)
    return written
