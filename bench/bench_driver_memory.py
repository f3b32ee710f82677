"""Driver memory of chunked runs (issue #9): peak RSS of the writing process and of the land-cover scan.

Part 1 – ``chunked.write_many`` writes three outputs of cheap synthetic lazy arrays (24 float32
bands like monthly NPP, 4 float32 bands, a uint8 class map with an internal mask: 113 bytes per
pixel) on grids of 1, 4 and 16 M pixels, with

* ``new``  – write_many as it is (tiles aligned with the blocks -> cache of a few tiles; otherwise
  the row bound),
* ``row``  – the previous bound (one row of blocks: (block rows + 2·256) × width × bytes/px + 32 MiB),
* ``none`` – GDAL's default cache (5 % of RAM),

for blocks of 1024 (aligned with 256-px tiles), 1200 (aligned with 240-px tiles under ``new``,
cut through 256-px tiles before) and 1000 (never aligned: ``new`` falls back to the row bound).
Printed: the peak RSS above the baseline (sampled every 10 ms in a thread), the peak of GDAL's
cache in use, the time and the total file size. Every measurement runs in a fresh process (a
process's RSS high-water mark cannot be reset, and freed heap is not always returned).

Part 2 – the land-cover scan (``Dataset._landcover_scan``) of a 16 M pixel uint8 land cover on
the grid and on another CRS/resolution: peak RSS above the baseline, the strip scan vs the
whole-grid float64 scan it replaces (``Dataset._landcover_scan_whole``), and whether both give the
same arrays, problems and info (SHA-1 of everything).

Usage: ``python bench/bench_driver_memory.py [--quick] [--skip-main]`` (``--quick``: 1 and 4 M
pixels only; ``--skip-main``: only the mask and land-cover parts).
"""
from __future__ import annotations

import ctypes
import glob
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class _Peak:
    """Peak RSS (and GDAL cache in use) sampled in a thread."""

    def __init__(self) -> None:
        import psutil

        self.p = psutil.Process()
        libs = glob.glob(str(Path(sys.modules["rasterio"].__file__).parents[1] / "rasterio.libs" / "libgdal*"))
        self.lib = ctypes.CDLL(libs[0]) if libs else None
        if self.lib is not None:
            self.lib.GDALGetCacheUsed64.restype = ctypes.c_int64
        self.base = self.p.memory_info().rss
        self.peak = self.base
        self.cache = 0
        self._stop = False
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, self.p.memory_info().rss)
            if self.lib is not None:
                self.cache = max(self.cache, int(self.lib.GDALGetCacheUsed64()))
            time.sleep(0.01)

    def __enter__(self) -> "_Peak":
        self.t.start()
        return self

    def __exit__(self, *a: object) -> None:
        self._stop = True
        self.t.join()


def _grid(n: int, res: float = 30.0):
    from affine import Affine
    from rasterio.crs import CRS

    from npp_core.raster import Grid

    return Grid(CRS.from_epsg(32649), Affine(res, 0, 600_000.0, 0, -res, 4_200_000.0), n, n)


def _gen(block_info: dict | None = None) -> np.ndarray:
    (b0, b1), (r0, r1), (c0, c1) = block_info[None]["array-location"]
    r = np.arange(r0, r1)[:, None]
    c = np.arange(c0, c1)[None, :]
    base = (np.sin(r / 37.0).astype(np.float32) + np.cos(c / 53.0).astype(np.float32)
            + ((r * 7 + c * 13) % 11).astype(np.float32) * np.float32(0.01))
    out = np.empty((b1 - b0,) + base.shape, np.float32)
    for b in range(b0, b1):
        np.add(base, np.float32(b * 0.1), out=out[b - b0])
    return out


def _old_row_bound(grid, block_rows, bytes_px, tile=256, **_):  # the previous _write_cache_bytes
    from rasterio.env import get_gdal_config

    need = int((int(block_rows) + 2 * tile) * grid.width * max(int(bytes_px), 1)) + (32 << 20)
    current = int(get_gdal_config("GDAL_CACHEMAX"))
    current = current << 20 if current < 100_000 else current
    return max(min(need, current), 16 << 20)


def one_write(n: int, chunk: int, policy: str, out: str, masks_only: bool = False) -> dict:
    import dask.array as da
    import rasterio

    from npp_core import chunked

    if policy == "row":  # previous behaviour: 256-px tiles and the row bound whatever the blocks
        chunked._write_cache_bytes = _old_row_bound
        chunked._aligned_tile = lambda *a, **k: None
    elif policy == "none":
        chunked._write_cache_bytes = lambda *a, **k: int(rasterio.env.get_gdal_config("GDAL_CACHEMAX"))
    g = _grid(n)
    sizes = tuple([chunk] * (n // chunk) + ([n % chunk] if n % chunk else []))

    def lazy(nb: int):
        return da.map_blocks(_gen, chunks=((nb,), sizes, sizes), dtype=np.float32)

    a24, a4 = lazy(24), lazy(4)
    cls = (a4[0] * 2).astype(np.uint8) + 1
    items = [(Path(out) / "a.tif", a24, {}), (Path(out) / "b.tif", a4, {}),
             (Path(out) / "c.tif", cls, {"dtype": "uint8", "nodata": 0, "mask": a4[0] > 0})]
    if masks_only:  # GDAL keeps internal-mask tiles in its cache even when they are complete
        items = [(Path(out) / "c.tif", cls, {"dtype": "uint8", "nodata": 0, "mask": a4[0] > 0})]
    with _Peak() as pk:
        t0 = time.perf_counter()
        paths = chunked.write_many(items, g)
        dt = time.perf_counter() - t0
    with rasterio.open(paths[0]) as src:
        tile = src.block_shapes[0][0]
    return {"peak_mb": (pk.peak - pk.base) / 2**20, "cache_mb": pk.cache / 2**20, "time": dt,
            "size_mb": sum(os.path.getsize(p) for p in paths) / 2**20, "tile": tile}


def _lc_dataset(root: Path, n: int, other_crs: bool) -> None:
    from affine import Affine
    from rasterio.crs import CRS

    from npp_core.raster import Grid, write_raster

    rng = np.random.default_rng(0)
    codes = rng.choice(np.array([1, 2, 3, 5], dtype=np.uint8), size=(n, n), p=[0.5, 0.3, 0.15, 0.05])
    codes[rng.random((n, n)) < 0.03] = 0
    g = _grid(n)
    if other_crs:  # the land cover on WGS84 at ~ the same resolution, the grid given by a boundary-free ref
        write_raster(root / "ref.tif", np.zeros((n, n), np.uint8), g, dtype="uint8", nodata=255)
        from rasterio.warp import transform_bounds

        x0, y0, x1, y1 = transform_bounds(g.crs, "EPSG:4326", *g.bounds, densify_pts=21)
        m = int(n * 1.2)  # ~ the grid's resolution, 5 % margin on each side
        res = 1.1 * max(x1 - x0, y1 - y0) / m
        lg = Grid(CRS.from_epsg(4326), Affine(res, 0, x0 - 0.05 * (x1 - x0), 0, -res, y1 + 0.05 * (y1 - y0)), m, m)
        write_raster(root / "landcover.tif", np.resize(codes, (lg.height, lg.width)), lg, dtype="uint8", nodata=0)
        extra = 'grid = "ref.tif"\n'
    else:
        write_raster(root / "landcover.tif", codes, g, dtype="uint8", nodata=0)
        extra = ""
    (root / "dataset.toml").write_text(
        f'name = "bench"\n{extra}[landcover]\nraster = "landcover.tif"\n'
        '[landcover.classes]\n1 = "forest"\n2 = "grass"\n3 = "crop"\n'
        '[landcover.casa_type]\nforest = "mixed_forest"\ngrass = "grassland"\ncrop = "cropland"\n')


def one_scan(root: str, whole: bool) -> dict:
    import hashlib

    from npp_core.dataset import open_dataset

    with open_dataset(root) as ds:
        ds.grid  # noqa: B018 - open the grid first (not part of the scan)
        fn = ds._landcover_scan_whole if whole else ds._landcover_scan
        with _Peak() as pk:
            t0 = time.perf_counter()
            scan, probs, info = fn()
            dt = time.perf_counter() - t0
        digest = hashlib.sha1()
        for k in ("ok", "codes"):
            digest.update(np.ascontiguousarray(scan[k]).tobytes())
        digest.update(repr([scan["present"], scan["counts"], scan["n_finite"], scan["non_integer"],
                            [str(p) for p in probs], info]).encode())
    return {"peak_mb": (pk.peak - pk.base) / 2**20, "time": dt, "ok": int(scan["ok"].sum()),
            "problems": len(probs), "digest": digest.hexdigest()}


def _child(args: list[str]) -> dict:
    r = subprocess.run([sys.executable, __file__, "--one", json.dumps(args)], capture_output=True, text=True,
                       check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    quick = "--quick" in sys.argv
    sizes = [1000, 2000] if quick else [1000, 2000, 4000]
    print("write_many: 24 + 4 float32 bands + uint8 with mask (113 B/px); peak RSS above baseline (MiB)")
    print(f"{'pixels':>7} {'block':>5} {'policy':>6} {'tile':>4} {'peak':>7} {'gdal cache':>10} {'time s':>7} "
          f"{'files MiB':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in ([] if "--skip-main" in sys.argv else sizes):
            for chunk, policies in ((1024, ("new", "row", "none")), (1200, ("new", "row")), (1000, ("new",))):
                res = {}
                for pol in policies:
                    res[pol] = r = _child(["write", n, chunk, pol, tmp])
                    print(f"{n * n / 1e6:>6.0f}M {chunk:>5} {pol:>6} {r['tile']:>4} {r['peak_mb']:>7.0f} "
                          f"{r['cache_mb']:>10.0f} {r['time']:>7.1f} {r['size_mb']:>9.2f}")
                if "row" in res:
                    print(f"{'':>7} {'':>5} ratio new/row: peak {res['new']['peak_mb'] / res['row']['peak_mb']:.2f}, "
                          f"files {res['new']['size_mb'] / res['row']['size_mb']:.3f}")
        print("\nwrite_many: a uint8 class map with an internal mask only (2 B/px), blocks of 1024")
        for n in ([4000] if quick else [4000, 8000]):
            res = {}
            for pol in ("new", "row"):
                res[pol] = r = _child(["write", n, 1024, pol, tmp, True])
                print(f"{n * n / 1e6:>6.0f}M {1024:>5} {pol:>6} {r['tile']:>4} {r['peak_mb']:>7.0f} "
                      f"{r['cache_mb']:>10.0f} {r['time']:>7.1f} {r['size_mb']:>9.2f}")
            print(f"{'':>7} {'':>5} ratio new/row: peak {res['new']['peak_mb'] / res['row']['peak_mb']:.2f}, "
                  f"files {res['new']['size_mb'] / res['row']['size_mb']:.3f}")
        n = 2000 if quick else 4000
        print(f"\nland-cover scan, {n * n / 1e6:.0f} M px uint8; peak RSS above baseline; kept afterwards: "
              "ok bool + codes int16 = 3 B/px")
        for other in (False, True):
            root = Path(tmp) / f"lc{int(other)}"
            root.mkdir()
            _lc_dataset(root, n, other)
            label = "other CRS" if other else "same grid"
            res = {}
            for name, whole in (("strips", False), ("whole", True)):
                res[name] = r = _child(["scan", str(root), whole])
                print(f"{label:>10} {name:>6}: peak {r['peak_mb']:7.0f} MiB = {r['peak_mb'] * 2**20 / n / n:5.1f} B/px  "
                      f"time {r['time']:5.2f} s  ok px {r['ok']}  problems {r['problems']}")
            print(f"{'':>10} ratio strips/whole: peak {res['strips']['peak_mb'] / res['whole']['peak_mb']:.2f}, time "
                  f"{res['strips']['time'] / res['whole']['time']:.2f}; identical scan, problems and info: "
                  f"{res['strips']['digest'] == res['whole']['digest']}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        a = json.loads(sys.argv[2])
        res = (one_write(int(a[1]), int(a[2]), a[3], a[4], bool(a[5]) if len(a) > 5 else False) if a[0] == "write"
               else one_scan(a[1], bool(a[2])))
        print(json.dumps(res))
    else:
        main()
