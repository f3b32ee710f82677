"""run.mode: the chunked path of the pipeline's CASA and LCC stages equals the in-memory path on the sample."""
from __future__ import annotations

import json
import shutil

import numpy as np

from conftest import ROOT
from npp_core import params as P
from npp_core import pipeline, stages
from npp_core.dataset import open_dataset
from npp_core.raster import read_raster


def _run_stage(ds, out, stage, mode, summary):
    prm = P.load(None, [f"run.mode={mode}", "run.chunk=128"])
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
            _, info_c = _run_stage(ds, d, "casa", mode, summary)
            frag, info_l = _run_stage(ds, d, "lcc", mode, summary)
            assert info_c["mode"] == mode and info_l["mode"] == mode and "forced" in info_l["reason"]
            results[mode] = {f: read_raster(d / f)[0] for f in ("npp_monthly.tif", "lcc/SOC.tif", "lcc/LD.tif")}
            results[mode]["shares"] = frag["lcc"]
    m, c = results["memory"], results["chunked"]
    np.testing.assert_allclose(c["npp_monthly.tif"], m["npp_monthly.tif"], rtol=1e-6, equal_nan=True)
    for f in ("lcc/SOC.tif", "lcc/LD.tif"):
        np.testing.assert_array_equal(np.isnan(c[f][0]), np.isnan(m[f][0]))
        np.testing.assert_allclose(c[f][0], m[f][0], atol=1e-5, equal_nan=True)  # r (float32 storage)
        np.testing.assert_array_equal(c[f][2], m[f][2])  # valid-pair counts exactly
    for drv, sh in m["shares"].items():
        for k, v in sh.items():
            assert abs(c["shares"][drv][k] - v) < 0.05, (drv, k)
    # the in-memory LCC equals what the full run wrote
    np.testing.assert_array_equal(m["lcc/SOC.tif"], read_raster(out / "lcc" / "SOC.tif")[0])
