"""Latency of the web playground (`ganforge serve`) on the CPU, in one run.

(1) Server side: POST /api/runs/<id>/grid through a real uvicorn server on 127.0.0.1 (one keep-alive HTTP client,
    one request at a time), p50/p95 over --requests requests with a new seed each: a 64-image grid of the demo
    DCGAN (the fashion_mnist_dcgan preset) and a 16-image grid of the fashion_mnist32_stylegan2 preset. The time
    covers JSON parsing, generation, the PNG encoding and the HTTP round trip on loopback.
(2) The page: time from navigation start to the first generated grid drawn (its <img> loaded) in headless
    Chromium, fresh browser context each time (nothing cached), median of --loads page loads per run. The page
    draws 16 images first, and asks for its other sections (interpolation, style mixing) at the same time.

Only the architectures matter for latency, so the runs are trained for --steps steps (real Fashion-MNIST when
/usr/share/datasets/fashion-mnist exists, random images otherwise) in a temporary folder, or reused from --workdir.

    python benchmarks/web_latency.py [--requests 50] [--loads 5] [--steps 20] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import torch

from ganforge.runs.rundir import is_run_dir
from ganforge.training.launch import train
from ganforge.web import create_app

FMNIST = Path("/usr/share/datasets/fashion-mnist")
PRESETS = {"dcgan": ("fashion_mnist_dcgan", 64), "stylegan2": ("fashion_mnist32_stylegan2", 16)}


def random_images(n: int = 512) -> types.SimpleNamespace:
    rng = np.random.default_rng(0)
    return types.SimpleNamespace(images=rng.integers(0, 256, (n, 32, 32, 1), np.uint8), labels=None, classes=None)


def prepare(workdir: Path, steps: int) -> dict[str, Path]:
    data = None if (FMNIST / "train-images-idx3-ubyte.gz").is_file() else random_images()
    runs = {}
    for name, (preset, _) in PRESETS.items():
        path = workdir / name
        if not is_run_dir(path):
            over = [f"train.steps={steps}", "train.eval_every=0", "train.tensorboard=false"]
            train(preset, over, run_dir=path, data=data, quiet=True)
        runs[name] = path
    return runs


@contextmanager
def live_server(app) -> Iterator[str]:  # noqa: ANN001
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation between two requests)."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(np.ceil(q / 100 * len(s))) - 1))]


def server_latency(url: str, run_id: str, n: int, requests: int) -> list[float]:
    times = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for seed in range(-3, requests):  # 3 warm-up requests (first-call allocations), not counted
            t = time.perf_counter()
            r = client.post(f"/api/runs/{run_id}/grid", json={"seed": seed + 3, "n": n})
            elapsed = time.perf_counter() - t
            r.raise_for_status()
            if seed >= 0:
                times.append(elapsed)
    return times


def first_image_ms(url: str, loads: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            for _ in range(loads + 1):  # the first load warms the browser process, not counted
                context = browser.new_context()
                page = context.new_page()
                page.goto(url, wait_until="commit")
                page.wait_for_function(
                    "() => { const i = document.getElementById('grid-img');"
                    " return i && i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0; }",
                    polling="raf",
                )
                out.append(page.evaluate("performance.now()"))  # ms since this page's navigation started
                context.close()
        finally:
            browser.close()
    return out[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workdir", type=Path, help="reuse (or keep) the trained runs here")
    a = ap.parse_args()
    os.environ.setdefault("GANFORGE_CACHE", tempfile.mkdtemp(prefix="ganforge-bench-cache-"))
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="ganforge-bench-web-"))
    runs = prepare(workdir, a.steps)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {platform.machine()}")

    rows = []
    with live_server(create_app(list(runs.values()))) as url:
        for name, (preset, n) in PRESETS.items():
            times = server_latency(url, name, n, a.requests)
            rows.append((preset, n, pct(times, 50) * 1000, pct(times, 95) * 1000, n / statistics.mean(times)))
    print(f"| run (preset) | grid | p50 ms | p95 ms | images/s | ({a.requests} requests each, real HTTP on loopback)")
    print("|---|---|---|---|---|")
    for preset, n, p50, p95, ips in rows:
        print(f"| {preset} | {n} images | {p50:.1f} | {p95:.1f} | {ips:.0f} |")

    print(f"| page opened on | time to first image, median of {a.loads} (min-max) ms | (headless Chromium)")
    print("|---|---|")
    for name, (preset, _) in PRESETS.items():
        with live_server(create_app([runs[name]])) as url:
            ms = first_image_ms(url, a.loads)
        print(f"| {preset} (16-image grid) | {statistics.median(ms):.0f} ({min(ms):.0f}-{max(ms):.0f}) |")


if __name__ == "__main__":
    main()
