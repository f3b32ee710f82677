"""The whole pipeline in run.mode = "chunked" (tiny blocks) writes the same GeoTIFFs as run.mode = "memory".

The area is a small benchmark dataset (:func:`npp_core.benchdata.bench_data`, every input on the grid's
pixels) with rectangular nodata holes punched into the land cover across the block edges, so
the study-area mask, the LCC halos and the per-block predictions all meet NaN at block boundaries.
Per-block work runs on the local threaded scheduler (``run.scheduler = "threads"``); one test wires a
``dask.distributed`` scheduler address through ``run.scheduler``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio

from npp_core import params as P
from npp_core import pipeline
from npp_core.benchdata import bench_data
from npp_core.dataset import open_dataset
from npp_core.raster import read_raster

from conftest import ROOT
from fragments import differences

CHUNK = 64
FAST = ["rf.n_trees=40", "sampling.n_points=300"]
#: holes (row0, row1, col0, col1) straddling the block edges: run.chunk 64 on 213 × 188 pixels gives
#: even blocks of 54 rows (edges 54, 108, 162) and 63 columns (edges 63, 126)
HOLES = [(50, 60, 20, 150), (100, 200, 123, 129), (0, 213, 62, 64), (107, 109, 0, 188)]


@pytest.fixture(scope="module")
def bench_ds(tmp_path_factory) -> Path:
    d = bench_data(tmp_path_factory.mktemp("bench") / "ds", 40_000)
    with rasterio.open(d / "landcover.tif", "r+") as src:
        lc = src.read(1)
        for r0, r1, c0, c1 in HOLES:
            lc[r0:r1, c0:c1] = 0  # the land cover's nodata: outside the study area
        src.write(lc, 1)
    return d


def _run(ds_path: Path, out: Path, mode: str, *extra: str) -> pipeline.RunResult:
    prm = P.load(None, [*FAST, f"run.mode={mode}", f"run.chunk={CHUNK}", "run.scheduler=threads", *extra])
    seen: set[str] = set()
    with open_dataset(ds_path) as ds:
        res = pipeline.run(ds, prm, out, progress=lambda s, f, m: seen.add(f"{s}:{m}"))
    assert res.ok, [(s.name, s.message) for s in res.stages if s.status == "failed"]
    res.summary["_progress"] = seen
    return res


@pytest.fixture(scope="module")
def both_runs(bench_ds, tmp_path_factory):
    base = tmp_path_factory.mktemp("modes")
    return {m: _run(bench_ds, base / m, m) for m in ("memory", "chunked")}


def _compare(u, v, path=""):
    """Every number of summary fragment ``u`` equals ``v`` to rounding; returns the differences."""
    return differences(u, v, rel=1e-6, path=path)


def test_every_geotiff_equals_the_in_memory_run(both_runs):
    m, c = both_runs["memory"].out_dir, both_runs["chunked"].out_dir
    files_m = sorted(p.relative_to(m) for p in m.rglob("*.tif"))
    files_c = sorted(p.relative_to(c) for p in c.rglob("*.tif"))
    assert files_m == files_c
    assert len(files_m) > 30  # NDVI, NPP ×3, 19 drivers, 12 LCC, actcon, relcon, dominant, rgb, ld
    for rel in files_m:
        a, ga, da_ = read_raster(m / rel)
        b, gb, db = read_raster(c / rel)
        assert a.shape == b.shape and ga == gb and da_ == db, rel
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=str(rel))
        if np.isfinite(a).any():
            scale = max(1.0, float(np.nanmax(np.abs(a))))
            assert float(np.nanmax(np.abs(a - b))) <= 1e-6 * scale, rel
    # the holes are nodata everywhere, and there is data on both sides of each hole's block edge
    npp = read_raster(c / "npp_mean.tif")[0][0]
    for r0, r1, c0, c1 in HOLES:
        assert np.isnan(npp[r0:r1, c0:c1]).all()
    assert np.isfinite(npp[40:50, 20:150]).any() and np.isfinite(npp[60:70, 20:150]).any()
    # stored types: the dominant classes keep their colour table; rgb keeps its mask
    with rasterio.open(c / "dominant.tif") as src:
        assert src.dtypes[0] == "uint8" and src.nodata == 0 and len(src.colormap(1)) >= 10
    with rasterio.open(c / "rgb.tif") as src, rasterio.open(m / "rgb.tif") as ref:
        np.testing.assert_array_equal(src.read_masks(1), ref.read_masks(1))


def test_summary_and_modes(both_runs):
    sm, sc = both_runs["memory"].summary, both_runs["chunked"].summary
    skip = {"params", "timings_s", "stages", "versions", "run", "inputs", "_progress"}
    bad = []
    for k in sm:
        if k not in skip:
            bad += _compare(sm[k], sc.get(k), k)
    assert not bad, bad[:10]
    modes = {s: v["mode"] for s, v in sc["run"]["execution"].items()}
    assert modes == {s: "chunked" for s in ("fusion", "casa", "drivers", "sampling", "lcc", "attribution",  # noqa: E501
                                            "dominance")}  # ensemble.members = 0 reads nothing
    assert all(v["mode"] == "memory" for v in sm["run"]["execution"].values())
    # progress is reported per block of the chunked stages
    blocks = {p for p in sc["_progress"] if "block" in p}
    n_blocks = math.ceil(213 / CHUNK) * math.ceil(188 / CHUNK)
    assert any(p.startswith("casa:") and f"block {n_blocks}/" in p for p in blocks)
    assert any(p.startswith("attribution:") for p in blocks)
    # samples drawn from the mask are the same points with the same values
    sm_csv = (both_runs["memory"].out_dir / "samples.csv").read_text()
    assert sm_csv == (both_runs["chunked"].out_dir / "samples.csv").read_text()


def test_layer_dask_equals_in_memory_alignment():
    """Windowed lazy reading = the in-memory aligned layers: exactly for pixel-aligned files, to the
    rounding for a coarse climate series in EPSG:4326 (the sample's), reprojected per block."""
    with open_dataset(ROOT / "sample_data") as ds:
        for role in ("degradation.indicators.subsidence", "degradation.indicators.seeper", "ndvi.fine"):
            lazy, _ = ds.layer_dask(role, 96)
            ref = ds._stack_for(role) if role == "ndvi.fine" else ds._aligned(role)
            np.testing.assert_array_equal(lazy.compute(scheduler="threads"), ref, err_msg=role)
        lazy, months = ds.layer_dask("climate.solar", 96)  # W m-2 in the file: unit conversion per block
        ref, ref_months = ds.climate("solar")
        assert months == ref_months
        got = lazy.compute(scheduler="threads")
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        # reprojected in whole-width strips, so GDAL's approximate transformer sees the same rows
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12, equal_nan=True)
        assert ds.mask.sum() < ds.mask.size and np.isnan(got[:, ~ds.mask]).all()


def test_scheduler_address_is_used(bench_ds, tmp_path):
    """run.scheduler = an address: the chunked stages run on that cluster, which stays up afterwards."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as lc, \
            distributed.Client(lc) as client:
        prm = P.load(None, [*FAST, "run.mode=chunked", f"run.chunk={CHUNK}", f"run.scheduler={lc.scheduler_address}"])
        with distributed.get_task_stream(client) as ts, open_dataset(bench_ds) as ds:
            res = pipeline.run(ds, prm, tmp_path, only=["casa"])
        assert res.ok, [(s.name, s.message) for s in res.stages]
        assert len(ts.data) >= 12  # the blocks of the fusion and CASA stages ran on that cluster
        assert client.status == "running"
    m = read_raster(tmp_path / "npp_mean.tif")[0]
    assert np.isfinite(m).sum() > 1000


def test_run_bounds_gdals_cache_on_every_worker(tmp_path):
    """The client of a chunked run sets GDAL's block cache of every worker process to RUN_CACHE_BYTES
    (GDAL's default, 5 % of RAM, fills with the tiles of files kept open while blocks are read)."""
    distributed = pytest.importorskip("distributed")
    from npp_core.chunked import RUN_CACHE_BYTES

    def cache_of_this_process() -> int:
        from rasterio.env import get_gdal_config

        v = get_gdal_config("GDAL_CACHEMAX")
        return -1 if v is None else int(v)

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        with distributed.Client(lc) as other:
            before = set(other.run(cache_of_this_process).values())
        assert before != {RUN_CACHE_BYTES}  # GDAL's default (5 % of RAM) before the run
        ctx = pipeline.Context(None, P.load(None, [f"run.scheduler={lc.scheduler_address}"]), tmp_path,
                               lambda *a: None, None)
        try:
            assert set(ctx.client().run(cache_of_this_process).values()) == {RUN_CACHE_BYTES}
        finally:
            ctx.close()


def test_cli_scheduler_flag_overrides_the_setting(monkeypatch, tmp_path):
    from npp_core import cli

    seen = {}

    def fake_run(ds, prm, out, **kw):
        seen.update(prm["run"])
        raise RuntimeError("stop here")

    monkeypatch.setattr(pipeline, "run", fake_run)
    code = cli.main(["run", str(ROOT / "sample_data"), "--out", str(tmp_path), "--set", "run.scheduler=threads",
                     "--set", "run.mode=chunked", "--scheduler", "tcp://10.1.2.3:8786"])
    assert code == 1 and seen["scheduler"] == "tcp://10.1.2.3:8786"
