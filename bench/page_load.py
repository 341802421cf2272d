"""Page load to the first analysis on screen, in Chromium, and the app's start time.

Starts ``app.py`` (bundled models) on loopback in a subprocess and times, over ``--runs`` fresh pages each:
1. app start: process start -> the server answers (the imports, the app built, the models not yet loaded);
2. ``/``: navigation -> the status line says the text was analysed and its tokens are on screen (Tokens tab);
3. ``/?tab=attention``: navigation -> the attention heatmap is drawn (the first figure of the lesson path);
and, as a baseline measured in the same run, a bare page of the same server (``/config``) fetched in the
browser, so the ratio separates our work from the machine's speed. The first page of a run also loads the
model (cold); later ones find it in the pool (warm); both are printed. The page's main-thread CPU time up to
the same moment (Chromium's ``ThreadTime`` metric) is printed too: on a machine shared with other work it
moves much less than the wall-clock time, since waiting for a CPU is not counted.

    python bench/page_load.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
STATUS = ".prose.explorer-status"
FIGURE = """() => [...document.querySelectorAll('[role=tabpanel] .js-plotly-plot')]
    .some((el) => el.offsetParent && (el.data || []).length)"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int) -> tuple[subprocess.Popen, float]:
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=1).read()
            return proc, time.perf_counter() - start
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the app exited before answering") from None
            time.sleep(0.1)


def timed(page, url: str, ready) -> tuple[float, float]:
    """Seconds from navigation to ``ready``, and the page's main-thread CPU seconds by then."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    start = time.perf_counter()
    page.goto(url)
    ready(page)
    elapsed = time.perf_counter() - start
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return elapsed, metrics.get("ThreadTime", float("nan"))


def analysed(page) -> None:
    page.locator(STATUS).get_by_text("layers ×").wait_for(timeout=120_000)
    page.locator("[role=tabpanel]:visible").first.get_by_text("tiger").first.wait_for(timeout=120_000)


def figure_drawn(page) -> None:
    page.wait_for_function(FIGURE, timeout=120_000)


def config_fetched(page) -> None:
    page.wait_for_load_state("load")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    port = free_port()
    proc, started = start_app(port)
    url = f"http://127.0.0.1:{port}/"
    times: dict[str, list[float]] = {"bare page (/config)": [], "/ -> analysis on screen": [],
                                     "/?tab=attention -> first figure": []}  # fmt: skip
    cpu: dict[str, list[float]] = {name: [] for name in times}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"))
            for _ in range(args.runs):
                for name, path, ready in (("bare page (/config)", "config", config_fetched),
                                          ("/ -> analysis on screen", "", analysed),
                                          ("/?tab=attention -> first figure", "?tab=attention", figure_drawn)):  # fmt: skip
                    context = browser.new_context(viewport={"width": 1280, "height": 720})
                    elapsed, thread = timed(context.new_page(), url + path, ready)
                    times[name].append(elapsed)
                    cpu[name].append(thread)
                    context.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    base = statistics.median(times["bare page (/config)"])
    print(f"app start (process -> server answers): {started:.2f} s")
    print(f"{'':34} {'cold (1st)':>10} {'warm median':>12} {'× bare page':>12} {'main-thread CPU':>16}")
    for name, values in times.items():
        warm = statistics.median(values[1:] or values)
        thread = statistics.median(cpu[name][1:] or cpu[name])
        print(f"{name:34} {values[0]:>9.2f}s {warm:>11.2f}s {warm / base:>11.1f}× {thread:>15.2f}s")


if __name__ == "__main__":
    main()
