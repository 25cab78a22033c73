"""Make docs/img/playground-latent.png: the playground's "Edit along directions" section on a trained run, with a
real Fashion-MNIST test image uploaded, projected and edited along a class direction.

    PYTHONPATH=src python tools/playground_latent_shot.py RUN_DIR [--out docs/img/playground-latent.png]

The run folder gets its directions cached in RUN_DIR/directions/ (as the playground always does). Needs the
Fashion-MNIST test set (`make data`) and Chromium (`/usr/bin/chromium`).
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_image(index: int, out: Path) -> Path:
    """Fashion-MNIST test image `index`, upscaled 4x, as a PNG (what a user would upload)."""
    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz") as f:
        data = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    Image.fromarray(data[index]).resize((112, 112), Image.NEAREST).save(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/img/playground-latent.png"))
    ap.add_argument("--index", type=int, default=0, help="Fashion-MNIST test image to upload (0: an ankle boot)")
    ap.add_argument("--direction", default="Sneaker", help="the class direction whose slider is moved")
    ap.add_argument("--strength", type=float, default=2.5)
    a = ap.parse_args()

    import uvicorn
    from playwright.sync_api import sync_playwright

    from ganforge.web import create_app

    app = create_app([a.run_dir])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    upload = test_image(a.index, Path(tempfile.mkdtemp()) / "upload.png")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url)
            page.select_option("#dir-method", "classifier")
            page.wait_for_selector(f"#sliders input[aria-label='{a.direction} strength']", timeout=300_000)
            page.set_input_files("#upload", str(upload))
            page.wait_for_function("() => document.getElementById('project-status').textContent"
                                   ".startsWith('projected')", timeout=300_000)
            before = page.get_attribute("#latent-img", "src")
            page.eval_on_selector(f"#sliders input[aria-label='{a.direction} strength']",
                                  f"el => {{ el.value = '{a.strength}'; el.dispatchEvent(new Event('input')); }}")
            page.wait_for_function("""old => { const img = document.getElementById('latent-img');
                return img.src !== old && img.complete && img.naturalWidth > 0; }""", arg=before)
            a.out.parent.mkdir(parents=True, exist_ok=True)
            page.locator("#latent").screenshot(path=str(a.out))
            browser.close()
    finally:
        server.should_exit = True
    print(a.out, file=sys.stderr)


if __name__ == "__main__":
    main()
