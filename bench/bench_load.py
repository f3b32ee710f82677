"""Load benchmark: N concurrent browser sessions against one ``streamlit run`` server (loopback only).

Run: ``.venv/bin/python bench/bench_load.py [--sessions 10] [--trees 50]``

Starts the app on a free 127.0.0.1 port (its own temporary session root and
stage cache, ``server.disconnectedSessionTTL`` 5 s), then opens N Playwright
browser contexts in one headless Chromium (``/usr/bin/chromium``; every
non-loopback request is blocked). Each session loads a small settings file
(fewer trees, so the run is short), uploads its own small dataset zip (a
different basin per session, named after it), runs the analysis and reads the
mean NPP on Explore → Charts. Checks: every session finishes, shows its own
dataset, and its mean NPP equals the value the pipeline computes for that
dataset in this process (the reference). Prints per-session times, the server's
RSS at baseline, at peak and after the contexts closed, and how many session
folders remain. Not a test; bounded by --timeout.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_rss(proc: subprocess.Popen) -> float:
    try:
        p = psutil.Process(proc.pid)
        return (p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))) / 2**20
    except psutil.Error:
        return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--trees", type=int, default=50, help="rf.n_trees in the settings each session loads")
    ap.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} not found (apt install chromium)")
    from playwright.sync_api import sync_playwright

    from npp_core import params as P
    from npp_core import pipeline
    from npp_core.dataset import open_dataset
    from test_app import make_dataset, zip_dir

    tmp = Path(tempfile.mkdtemp(prefix="bench_load_"))
    n = args.sessions
    prm = P.validate({"rf": {"n_trees": args.trees}, "sampling": {"n_points": 300}})
    (tmp / "params.toml").write_text(P.dumps(prm))
    zips, expected = [], []
    for i in range(n):
        d = make_dataset(tmp / "src" / f"basin_{i}", name=f"Load basin {i:02d}", w=24, h=20, seed=100 + i)
        z = tmp / f"basin_{i}.zip"
        z.write_bytes(zip_dir(d))
        zips.append(z)
        r = pipeline.run(open_dataset(d), prm, tmp / "ref" / str(i), only=["casa"])
        expected.append(float(r.summary["npp"]["mean"]))

    port = free_port()
    env = dict(os.environ, NPP_TMP_ROOT=str(tmp / "sessions"), PYTHONUNBUFFERED="1", NPP_JANITOR_S="5",
               TMPDIR=str(tmp))  # the server's stage cache lives under TMPDIR too: cold for this benchmark
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.disconnectedSessionTTL", "5"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.time() + 60
        while time.time() < end:
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read().strip() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            sys.exit("server did not start:\n" + (tmp / "server.log").read_text()[-2000:])
        print(f"{n} sessions, rf.n_trees={args.trees}; load average {psutil.getloadavg()[0]:.1f} on "
              f"{psutil.cpu_count()} cores")
        peak = [0.0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], server_rss(proc))
                time.sleep(0.5)

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            # baseline: one page view, then close
            c0 = browser.new_context()
            pg0 = c0.new_page()
            pg0.goto(url)
            pg0.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=60_000)
            c0.close()
            time.sleep(8)
            base = server_rss(proc)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()

            def guard(route):
                u = route.request.url
                if re.match(r"^(https?|wss?)://127\.0\.0\.1(:\d+)?/", u) or u.startswith(("data:", "blob:", "about:")):
                    route.continue_()
                else:
                    route.abort()

            pages, ctxs = [], []
            for i in range(n):
                c = browser.new_context(viewport={"width": 1300, "height": 1600})
                c.route("**/*", guard)
                pg = c.new_page()
                pg.set_default_timeout(args.timeout * 1000)
                ctxs.append(c)
                pages.append(pg)

            def idle(pg) -> None:
                pg.wait_for_timeout(300)
                pg.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]')

            def nav(pg, name: str) -> None:
                pg.locator('[data-testid="stSidebarNav"] a', has_text=re.compile(rf"^\s*{name}\s*$")).first.click()
                pg.wait_for_url(re.compile(rf"/{name}$"))
                idle(pg)

            # Playwright's sync API is single-threaded: drive the sessions step by step, round-robin, so the
            # server sees all of them at once (uploads in flight together, runs overlapping).
            t_start = time.time()
            for pg in pages:
                pg.goto(url)
            for pg in pages:
                idle(pg)
                nav(pg, "Parameters")
                pg.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(tmp / "params.toml"))
            for pg in pages:
                pg.get_by_text(re.compile("Loaded settings from params.toml")).first.wait_for()
                nav(pg, "Data")
                pg.get_by_text("Upload a dataset (.zip)", exact=True).click()
            for i, pg in enumerate(pages):
                idle(pg)
                pg.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(zips[i]))
            clicked: list[float] = []
            for i, pg in enumerate(pages):
                pg.get_by_text(re.compile(f"Load basin {i:02d}")).first.wait_for()
                idle(pg)
                nav(pg, "Run")
                pg.get_by_role("button", name=re.compile("Run the analysis")).click()
                clicked.append(time.time())
            done_at = []
            for i, pg in enumerate(pages):  # polled in order: a time is an upper bound
                pg.get_by_text(re.compile(r"Last run")).wait_for()
                done_at.append(time.time() - clicked[i])
            got, ok = [], []
            for i, pg in enumerate(pages):
                idle(pg)
                own = pg.get_by_text(re.compile(f"Dataset:.*Load basin {i:02d}")).count() > 0
                others = [j for j in range(n) if j != i and pg.get_by_text(f"Load basin {j:02d}").count()]
                nav(pg, "Explore")
                pg.get_by_text("Charts", exact=True).click()
                cap = pg.get_by_text(re.compile(r"^mean [-\d.e+]+")).first
                cap.wait_for()
                m = float(re.search(r"mean ([-\d.e+]+)", cap.inner_text()).group(1))
                got.append(m)
                ok.append(own and not others and abs(m - expected[i]) <= 5e-4 * abs(expected[i]) + 1e-6)
            total = time.time() - t_start
            peak_rss = peak[0]
            for c in ctxs:
                c.close()
            # Streamlit drops a disconnected session lazily: its TTL cache expires entries when it is next
            # touched. Wait past the TTL, then one new visitor touches it; the janitor collects the rest.
            time.sleep(8)
            c1 = browser.new_context()
            probe = c1.new_page()
            probe.goto(url)
            probe.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=60_000)
            c1.close()
            browser.close()
        stop.set()
        print(f"all {n} sessions finished: run click → results shown {min(done_at):.1f}–{max(done_at):.1f} s "
              f"(upper bounds, polled in order); whole scenario (10 uploads, runs, Explore) {total:.1f} s")
        for i in range(n):
            print(f"  session {i:02d}: run {done_at[i]:6.1f} s  mean NPP {got[i]:9.3f} (reference {expected[i]:9.3f})"
                  f"  {'OK' if ok[i] else 'WRONG'}")
        time.sleep(12)  # the janitor's garbage collection (NPP_JANITOR_S = 5 s)
        after = server_rss(proc)
        left = sorted((tmp / "sessions").glob("npp_session_*")) if (tmp / "sessions").is_dir() else []
        print(f"server RSS: baseline {base:.0f} MB, peak {peak_rss:.0f} MB (+{peak_rss - base:.0f}), "
              f"after the contexts closed (+TTL, one probe visit, janitor) {after:.0f} MB (+{after - base:.0f}); "
              f"per session at peak {(peak_rss - base) / n:.0f} MB")
        print(f"session folders left on disk: {len(left)} (of {n + 2} sessions; the probe's may still be live)")
        print("RESULT:", "all sessions correct" if all(ok) else f"{ok.count(False)} session(s) wrong")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
