"""The stage runner and its content-hash cache, with stand-in stages that count their calls."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from npp_core import params as P
from npp_core import pipeline, stages
from npp_core.cache import StageCache, make_key
from npp_core.raster import Grid, read_raster, write_raster


class FakeDataset:
    name = "fake"

    def __init__(self, content: dict[str, str]):
        self.content = content
        self.grid = Grid(CRS.from_epsg(32649), Affine(30, 0, 0, 0, -30, 300), 10, 10)
        self.mask = np.ones((10, 10), bool)

    def content_hash(self, *roles: str) -> str:
        roles = roles or tuple(sorted(self.content))
        return "|".join(f"{r}={self.content.get(r, '')}" for r in roles)


@pytest.fixture
def counting_stages(monkeypatch):
    calls: list[str] = []

    def make(name):
        def fn(ctx):
            calls.append(name)
            ups = [ctx.read(f"{d}.tif")[0][0, 0, 0] for d in pipeline.DEPENDS[name]]
            value = float(sum(ups)) + len(name) + (ctx.params["dominance"]["threshold"] if name == "dominance" else 0)
            write_raster(ctx.path(f"{name}.tif"), np.full((10, 10), value), ctx.ds.grid)
            ctx.wrote(f"{name}.tif")
            return {name: {"value": value}}

        return fn

    monkeypatch.setattr(stages, "STAGE_FUNCS", {s: make(s) for s in pipeline.STAGES})
    monkeypatch.setattr(pipeline, "available_stages", lambda: {s: True for s in pipeline.STAGES})
    return calls


def test_rerun_is_fully_cached_and_identical(tmp_path, counting_stages):
    ds = FakeDataset({"ndvi": "a", "climate": "b"})
    prm = P.defaults()
    r1 = pipeline.run(ds, prm, tmp_path / "o1", cache_dir=tmp_path / "c")
    assert [s.status for s in r1.stages] == ["done"] * len(pipeline.STAGES)
    assert counting_stages == pipeline.STAGES
    counting_stages.clear()
    r2 = pipeline.run(ds, prm, tmp_path / "o2", cache_dir=tmp_path / "c")
    assert counting_stages == []
    assert [s.status for s in r2.stages] == ["cached"] * len(pipeline.STAGES)
    a, _, _ = read_raster(tmp_path / "o1" / "dominance.tif")
    b, _, _ = read_raster(tmp_path / "o2" / "dominance.tif")
    np.testing.assert_array_equal(a, b)
    assert r2.summary["dominance"] == r1.summary["dominance"]
    assert json.loads((tmp_path / "o2" / "summary.json").read_text())["dominance"]["value"] == r1.summary["dominance"]["value"]


def test_threshold_change_recomputes_only_dominance(tmp_path, counting_stages):
    ds = FakeDataset({"ndvi": "a"})
    pipeline.run(ds, P.defaults(), tmp_path / "o", cache_dir=tmp_path / "c")
    counting_stages.clear()
    r = pipeline.run(ds, P.load(None, ["dominance.threshold=55"]), tmp_path / "o", cache_dir=tmp_path / "c")
    assert counting_stages == ["dominance"]
    assert r.summary["dominance"]["value"] != 0


def test_input_change_recomputes_downstream_only(tmp_path, counting_stages):
    pipeline.run(FakeDataset({"soil": "1", "ndvi": "a"}), P.defaults(), tmp_path / "o", cache_dir=tmp_path / "c")
    counting_stages.clear()
    # the soil samples changed: drivers and everything that reads drivers, but not fusion/casa
    pipeline.run(FakeDataset({"soil": "2", "ndvi": "a"}), P.defaults(), tmp_path / "o", cache_dir=tmp_path / "c")
    assert counting_stages == ["drivers", "sampling", "lcc", "attribution", "ensemble", "dominance"]


def test_only_runs_targets_and_their_upstream(tmp_path, counting_stages):
    r = pipeline.run(FakeDataset({}), P.defaults(), tmp_path / "o", only=["casa"])
    assert counting_stages == ["fusion", "casa"]
    assert [s.name for s in r.stages] == ["fusion", "casa"]
    with pytest.raises(pipeline.StageError, match="unknown stage 'nope'"):
        pipeline.run(FakeDataset({}), P.defaults(), tmp_path / "o", only=["nope"])


def test_failed_stage_keeps_earlier_results_and_skips_dependents(tmp_path, counting_stages, monkeypatch):
    funcs = dict(stages.STAGE_FUNCS)

    def broken(ctx):
        raise ValueError("soil.csv: column 'soc' missing; columns found: a, b")

    funcs["drivers"] = broken
    monkeypatch.setattr(stages, "STAGE_FUNCS", funcs)
    r = pipeline.run(FakeDataset({}), P.defaults(), tmp_path / "o")
    st = {s.name: s for s in r.stages}
    assert st["drivers"].status == "failed" and "column 'soc' missing" in st["drivers"].message
    assert st["casa"].status == "done"
    for s in ("sampling", "lcc", "attribution", "ensemble", "dominance"):
        assert st[s].status == "skipped"
    assert (tmp_path / "o" / "casa.tif").exists()
    assert not r.ok
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["stages"]["drivers"]["status"] == "failed"
    assert "casa" in summary


def test_cancel_stops_the_run(tmp_path, counting_stages):
    ev = threading.Event()

    def progress(stage, frac, msg):
        if stage == "casa":
            ev.set()

    funcs = stages.STAGE_FUNCS

    def slow_casa(ctx):
        ctx.progress(0.5, "working")
        return funcs["casa"](ctx)

    stages.STAGE_FUNCS = {**funcs, "casa": slow_casa}
    try:
        r = pipeline.run(FakeDataset({}), P.defaults(), tmp_path / "o", progress=progress, cancel=ev)
    finally:
        stages.STAGE_FUNCS = funcs
    st = {s.name: s.status for s in r.stages}
    assert st["fusion"] == "done" and st["casa"] == "failed" and st["dominance"] == "skipped"


def test_cache_is_bounded_and_tolerates_damage(tmp_path):
    c = StageCache(tmp_path / "c", max_bytes=3000)
    for i in range(5):
        f = tmp_path / f"f{i}.bin"
        f.write_bytes(b"x" * 1000)
        c.put(make_key("s", "1", {"i": i}), {"i": i}, [(f, "f.bin")])
    assert c.size() <= 3000 + 2000  # result.json files are small
    assert c.get(make_key("s", "1", {"i": 4})) is not None
    assert c.get(make_key("s", "1", {"i": 0})) is None
    # a damaged entry is a miss, not a crash
    key = make_key("s", "1", {"i": 4})
    (c.root / key[:2] / key / "files" / "f.bin").unlink()
    assert c.get(key) is None
