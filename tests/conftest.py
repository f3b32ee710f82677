"""Shared test fixtures and paths."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# numba and BLAS threads: the machine has 2 cores; keep tests deterministic in thread use
os.environ.setdefault("NUMBA_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED} (tests need ../shared beside the repo)")
    return SHARED


#: Settings of the shared sample-basin run (fewer trees and points than the study, to keep tests short).
FAST = ["--set", "rf.n_trees=100", "--set", "sampling.n_points=600"]


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory):
    """One full run of every stage on the shipped sample basin, through the CLI entry point.

    Returns (output folder, stage cache folder).
    """
    from npp_core import cli

    base = tmp_path_factory.mktemp("cli")
    out, cache = base / "out", base / "cache"
    code = cli.main(["run", str(ROOT / "sample_data"), "--out", str(out), "--cache", str(cache), *FAST])
    assert code == 0
    return out, cache
