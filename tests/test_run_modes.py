"""run.mode: the chunked path of the pipeline's CASA and LCC stages equals the in-memory path on the sample.

The sample's climate is a coarse EPSG:4326 series, so this also checks that the chunked stages' windowed
reprojection (Dataset.layer_dask) reproduces the in-memory alignment.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import ROOT
from npp_core import params as P
from npp_core import pipeline, stages
from npp_core.dataset import open_dataset
from npp_core.raster import read_raster


def _run_stage(ds, out, stage, mode, summary):
    prm = P.load(None, [f"run.mode={mode}", "run.chunk=128", "run.scheduler=threads"])
    ctx = pipeline.Context(ds, prm, out, lambda *a: None, None)
    ctx.fragments["drivers"] = {"drivers": summary["drivers"]}
    ctx.stage = stage
    frag = stages.STAGE_FUNCS[stage](ctx)
    return frag, ctx.fragments["_run"][stage]


def test_chunked_stages_equal_in_memory(sample_run, tmp_path):
    out, _ = sample_run
    summary = json.loads((out / "summary.json").read_text())
    results = {}
    with open_dataset(ROOT / "sample_data") as ds:
        for mode in ("memory", "chunked"):
            d = tmp_path / mode
            shutil.copytree(out, d)
            for f in ("npp_monthly.tif", "lcc/SOC.tif", "lcc/LD.tif"):
                (d / f).unlink()
            frag_c, info_c = _run_stage(ds, d, "casa", mode, summary)
            frag, info_l = _run_stage(ds, d, "lcc", mode, summary)
            assert info_c["mode"] == mode and info_l["mode"] == mode and "forced" in info_l["reason"]
            results[mode] = {f: read_raster(d / f)[0] for f in ("npp_monthly.tif", "lcc/SOC.tif", "lcc/LD.tif")}
            results[mode]["shares"] = frag["lcc"]
            results[mode]["casa"] = frag_c
    m, c = results["memory"], results["chunked"]
    np.testing.assert_allclose(c["npp_monthly.tif"], m["npp_monthly.tif"], rtol=1e-6, equal_nan=True)
    for f in ("lcc/SOC.tif", "lcc/LD.tif"):
        np.testing.assert_array_equal(np.isnan(c[f][0]), np.isnan(m[f][0]))
        np.testing.assert_allclose(c[f][0], m[f][0], atol=1e-5, equal_nan=True)  # r (float32 storage)
        np.testing.assert_array_equal(c[f][2], m[f][2])  # valid-pair counts exactly
    # statistics, plots and the reference comparison (chunked: from the stored float32 npp_mean.tif)
    for key in ("mean", "sd", "min", "max", "n"):
        assert c["casa"]["npp"][key] == pytest.approx(m["casa"]["npp"][key], rel=1e-6), key
    for cls, v in m["casa"]["npp"]["by_class"].items():
        assert c["casa"]["npp"]["by_class"][cls] == pytest.approx(v, rel=1e-6, nan_ok=True), cls
    plots_m, plots_c = m["casa"]["validation"]["plots"], c["casa"]["validation"]["plots"]
    assert len(plots_m) == len(plots_c) > 0
    for a, b in zip(plots_m, plots_c):
        assert (a["id"], a["n_pixels"]) == (b["id"], b["n_pixels"])
        assert (a["simulated"] is None) == (b["simulated"] is None)
        if a["simulated"] is not None:
            assert b["simulated"] == pytest.approx(a["simulated"], rel=1e-6)
    for cls, v in m["casa"]["validation"]["by_class"].items():
        w = c["casa"]["validation"]["by_class"][cls]
        assert w["n"] == v["n"] and (v["n"] == 0 or w["reference"] == pytest.approx(v["reference"], rel=1e-9))
    for drv, sh in m["shares"].items():
        for k, v in sh.items():
            assert abs(c["shares"][drv][k] - v) < 0.05, (drv, k)
    # the in-memory LCC equals what the full run wrote
    np.testing.assert_array_equal(m["lcc/SOC.tif"], read_raster(out / "lcc" / "SOC.tif")[0])
