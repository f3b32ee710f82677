"""GeoTIFF I/O: CRS, transform, nodata and band dates survive; writes are atomic; size limits hold."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from npp_core import raster
from npp_core.raster import Grid, RasterError, read_raster, write_raster

GRID = Grid(CRS.from_epsg(32649), Affine(30.0, 0, 500000.0, 0, -30.0, 3930000.0), 7, 5)


def test_grid_geometry_by_hand():
    x, y = GRID.xy()
    assert x[0] == 500015.0 and x[-1] == 500000 + 6.5 * 30
    assert y[0] == 3929985.0 and y[-1] == 3930000 - 4.5 * 30
    assert GRID.bounds == (500000.0, 3930000.0 - 150, 500000.0 + 210, 3930000.0)
    r, c = GRID.index(np.array([500015.0, 500209.0, 499999.0]), np.array([3929985.0, 3929851.0, 3930001.0]))
    assert r.tolist() == [0, 4, -1] and c.tolist() == [0, 6, -1]


def test_round_trip_keeps_crs_transform_nodata_dates(tmp_path):
    data = np.arange(2 * 5 * 7, dtype=float).reshape(2, 5, 7)
    data[1, 2, 3] = np.nan
    p = write_raster(tmp_path / "a.tif", data, GRID, nodata=-9999.0, band_names=["2010-01", "2010-02-17"])
    with rasterio.open(p) as ds:
        assert ds.crs == CRS.from_epsg(32649)
        assert ds.transform == GRID.transform
        assert ds.nodata == -9999.0
        assert ds.tags(2)["DATE"] == "2010-02-17"
        assert ds.read(2)[2, 3] == -9999.0
    back, g, dates = read_raster(p)
    assert g.same_as(GRID)
    assert dates == ["2010-01", "2010-02-17"]
    assert np.isnan(back[1, 2, 3]) and np.isnan(back).sum() == 1
    np.testing.assert_array_equal(back[0], data[0])


def test_integer_output_needs_nodata_for_nan(tmp_path):
    with pytest.raises(ValueError, match="nodata"):
        write_raster(tmp_path / "c.tif", np.array([[np.nan, 1.0]]), Grid(GRID.crs, GRID.transform, 2, 1), dtype="uint8")


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(raster.rasterio, "open", boom)
    with pytest.raises(OSError):
        write_raster(tmp_path / "x.tif", np.zeros((5, 7)), GRID)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_and_fake_tifs_give_clear_errors(tmp_path):
    fake = tmp_path / "fake.tif"
    fake.write_text("this is not a tiff")
    with pytest.raises(RasterError, match="fake.tif: not a readable raster"):
        read_raster(fake)
    good = write_raster(tmp_path / "good.tif", np.random.default_rng(0).random((5, 7)), GRID)
    trunc = tmp_path / "trunc.tif"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(RasterError, match="trunc.tif"):
        read_raster(trunc)
    with pytest.raises(RasterError, match="not found"):
        read_raster(tmp_path / "missing.tif")


def test_huge_claimed_dimensions_refused(tmp_path, monkeypatch):
    p = write_raster(tmp_path / "s.tif", np.zeros((5, 7)), GRID)
    monkeypatch.setattr(raster, "MAX_PIXELS", 20)
    with pytest.raises(RasterError, match="more than the limit"):
        read_raster(p)


def test_internal_mask_marks_invalid_pixels(tmp_path):
    rgb = np.full((3, 5, 7), 7, np.uint8)
    valid = np.ones((5, 7), bool)
    valid[0, 0] = False
    p = write_raster(tmp_path / "rgb.tif", rgb, GRID, dtype="uint8", mask=valid)
    with rasterio.open(p) as ds:
        assert ds.read_masks(1)[0, 0] == 0 and ds.read_masks(1)[1, 1] == 255
    back, _, _ = read_raster(p)
    assert np.isnan(back[:, 0, 0]).all() and back[0, 1, 1] == 7
