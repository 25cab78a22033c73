"""The web playground (`ganforge serve`): its JSON API through Starlette's TestClient (images equal `sample`,
limits and malformed requests refused with 4xx JSON, unknown runs 404, concurrent requests unmixed), the
`serve` command, and the page itself in headless Chromium against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import torch
from conftest import FAST, displayed_image, need_extra, synthetic_data, tiny_runs
from PIL import Image
from starlette.testclient import TestClient

from ganforge.cli import main
from ganforge.generate import load_generator, make_labels, sample, seed_latents, style_mix
from ganforge.images import make_grid
from ganforge.training.launch import train
from ganforge.web import LIMITS, create_app
from ganforge.web.app import LOOPBACK_NAMES
from ganforge.web.runs import load_runs

STATIC = Path(__file__).resolve().parents[1] / "src" / "ganforge" / "web" / "static"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return tiny_runs(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def served(runs):
    """The loaded runs, style model first (the page opens on it), with a w_avg that makes truncation visible."""
    loaded = load_runs([runs["stylegan2"], runs["dcgan"], runs["classes"], runs["attrs"]])
    loaded["stylegan2"].G.w_avg.copy_(torch.randn_like(loaded["stylegan2"].G.w_avg))
    return loaded


@pytest.fixture(scope="module")
def client(served) -> TestClient:
    return TestClient(create_app(runs=served))


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
        return np.asarray(im)


def expected(x: torch.Tensor, nrow: int | None = None) -> np.ndarray:
    return make_grid(x, nrow, padding=2 if len(x) > 1 else 0)[..., 0]


def post(client: TestClient, path: str, body: dict) -> httpx.Response:
    return client.post(f"/api/runs/{path}", json=body)


# --- the API ------------------------------------------------------------------------------------------------------
def test_run_list_shows_model_step_and_latest_fid(client, runs):
    with open(runs["dcgan"] / "eval.jsonl", "w") as f:
        f.write(json.dumps({"step": 2, "fid": 88.0}) + "\n{cut short\n")
        f.write(json.dumps({"step": 4, "fid": 61.25, "kid": 0.1}) + "\n" + json.dumps({"step": 4, "is": 2.0}) + "\n")
    body = client.get("/api/runs").json()
    by_id = {r["id"]: r for r in body["runs"]}
    assert list(by_id) == ["stylegan2", "dcgan", "classes", "attrs"]
    assert by_id["dcgan"]["model"] == "dcgan" and by_id["stylegan2"]["model"] == "stylegan2"
    assert (by_id["dcgan"]["step"], by_id["dcgan"]["fid"], by_id["dcgan"]["fid_step"]) == (4, 61.25, 4)
    assert by_id["stylegan2"]["fid"] is None and by_id["stylegan2"]["styled"] is True
    assert by_id["classes"]["label_kind"] == "class" and by_id["classes"]["label_names"][:3] == ["0", "1", "2"]
    assert by_id["attrs"]["label_names"] == ["Smiling", "Male"]
    assert "path" not in json.dumps(body) and str(runs["dcgan"]) not in json.dumps(body)  # no paths leak out
    assert body["limits"]["max_images"] == LIMITS["max_images"]


def test_a_run_still_training_is_followed_to_its_newest_checkpoint(tmp_path, capsys):
    """Serving a run while it trains: a newer checkpoint replaces the generator at the next request; one that
    cannot be loaded keeps the current generator and is reported once, not retried on every request."""
    data = synthetic_data(n=64)
    run, _ = train("fashion_mnist_dcgan", FAST + ["train.steps=4"], run_dir=tmp_path / "live", data=data, quiet=True)
    client = TestClient(create_app([run.path]))
    assert client.get("/api/runs").json()["runs"][0]["step"] == 4
    before = post(client, "live/grid", {"seed": 3, "n": 4}).content
    train(None, ["train.steps=8"], resume=run.path, data=data, quiet=True)
    after = post(client, "live/grid", {"seed": 3, "n": 4}).content
    G8, _ = load_generator(run.path)
    assert np.array_equal(decode(after), expected(sample(G8, 4, seed=3))) and after != before
    assert client.get("/api/runs").json()["runs"][0]["step"] == 8
    damaged = run.checkpoints / "step-00000012.json"  # e.g. a disk that filled up while it was written
    damaged.write_text((run.checkpoints / "step-00000008.json").read_text())
    damaged.with_suffix(".safetensors").write_bytes(b"cut short")
    for _ in range(2):
        assert post(client, "live/grid", {"seed": 3, "n": 4}).content == after
    assert client.get("/api/runs").json()["runs"][0]["step"] == 8
    assert capsys.readouterr().err.count("still serving step 8") == 1


def test_grid_is_the_sample_of_that_seed(client, served):
    r = post(client, "dcgan/grid", {"seed": 7, "n": 12})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert np.array_equal(decode(r.content), expected(sample(served["dcgan"].G, 12, seed=7)))
    assert r.content == post(client, "dcgan/grid", {"seed": 7, "n": 12}).content
    assert r.content != post(client, "dcgan/grid", {"seed": 8, "n": 12}).content


def test_truncation_interpolation_and_style_mixing(client, served):
    G = served["stylegan2"].G
    r = post(client, "stylegan2/grid", {"seed": 3, "n": 4, "psi": 0.5})
    assert np.array_equal(decode(r.content), expected(sample(G, 4, seed=3, truncation_psi=0.5)))
    assert r.content != post(client, "stylegan2/grid", {"seed": 3, "n": 4}).content
    for t, seed in [(0.0, 11), (1.0, 12)]:  # the slider's ends are the two seeds' images
        img = decode(post(client, "stylegan2/interpolate", {"seeds": [11, 12], "t": t, "space": "w"}).content)
        assert np.array_equal(img, expected(sample(G, 1, seed=seed)))
    mid = decode(post(client, "stylegan2/interpolate", {"seeds": [11, 12], "t": 0.5}).content)
    a, b = seed_latents(G, [11, 12])  # the default: slerp in z, written out here
    omega = torch.arccos((a / a.norm()) @ (b / b.norm()))
    z = (torch.sin(0.5 * omega) * (a + b) / torch.sin(omega))[None]
    with torch.no_grad():
        want = G.synthesis(G.mapping(z, None), noise_mode="const").clamp(-1, 1)
    assert np.abs(mid.astype(int) - expected(want)).max() <= 1
    assert not np.array_equal(mid, expected(sample(G, 1, seed=11)))
    r = post(client, "stylegan2/style-mix", {"rows": [1, 2], "cols": [3, 4, 5], "layers": "middle", "psi": 0.8})
    want = style_mix(G, [1, 2], [3, 4, 5], "middle", 0.8)
    assert np.array_equal(decode(r.content), expected(want, 4))


def test_conditional_runs_take_a_class_or_attributes(client, served):
    cls = served["classes"]
    r = post(client, "classes/grid", {"seed": 1, "n": 4, "class": "3"})
    assert np.array_equal(decode(r.content), expected(sample(cls.G, 4, seed=1, labels=torch.full((4,), 3))))
    every = post(client, "classes/grid", {"seed": 1, "n": 20})  # no class: every class in turn, one per column
    want = expected(sample(cls.G, 20, seed=1, labels=torch.arange(20) % 10), 10)
    assert want.shape == (2 * 34 + 2, 10 * 34 + 2) and np.array_equal(decode(every.content), want)
    r = post(client, "classes/grid", {"class": "cat"})
    assert r.status_code == 422 and "unknown class 'cat'; choose one of: 0, 1" in r.json()["error"]
    att = served["attrs"]
    r = post(client, "attrs/grid", {"seed": 2, "n": 3, "attrs": ["Smiling"]})
    labels = make_labels(att.cfg, 3, attrs="Smiling=1")
    assert np.array_equal(decode(r.content), expected(sample(att.G, 3, seed=2, labels=labels)))
    assert post(client, "attrs/grid", {"attrs": ["Bald"]}).status_code == 422


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("dcgan/grid", {"n": LIMITS["max_images"] + 1}, 422, "n must be an integer from 1 to 64, got 65"),
        ("dcgan/grid", {"n": 0}, 422, "n must be an integer from 1 to 64"),
        ("dcgan/grid", {"seed": -1}, 422, "seed must be an integer from 0 to 4294967295"),
        ("dcgan/grid", {"seed": "1"}, 422, 'seed must be an integer from 0 to 4294967295, got "1"'),
        ("dcgan/grid", {"seed": True}, 422, "seed must be an integer"),
        ("dcgan/grid", {"seed": 1.5}, 422, "seed must be an integer"),
        ("stylegan2/grid", {"psi": 2.5}, 422, "psi must be a number from -1 to 2, got 2.5"),
        ("dcgan/grid", {"psi": 0.5}, 422, "truncation needs a style-based model"),
        ("dcgan/grid", {"sed": 1}, 422, "unknown field(s) sed; this endpoint takes attrs, class, n, psi, seed"),
        ("stylegan2/interpolate", {"seeds": [1, 2, 3]}, 422, "seeds must be a list of 2 to 2 integer seeds"),
        ("stylegan2/interpolate", {"t": 1.01}, 422, "t must be a number from 0 to 1"),
        ("stylegan2/interpolate", {"space": "x"}, 422, 'space must be one of z, w, got "x"'),
        ("dcgan/interpolate", {"space": "w"}, 422, "interpolation in w (--space w) needs a style-based model"),
        ("stylegan2/style-mix", {"rows": list(range(9))}, 422, "rows must be a list of 1 to 8 integer seeds"),
        ("stylegan2/style-mix", {"layers": "../x"}, 422, "layers must be one of coarse, middle, fine"),
        ("dcgan/style-mix", {}, 422, "style mixing needs a style-based model"),
        ("nope/grid", {}, 404, "unknown run 'nope'"),
        ("%2E%2E/grid", {}, 404, "unknown run '..'"),
        ("..%2F..%2Fetc%2Fpasswd/grid", {}, 404, "Not Found"),
    ],
)
def test_bad_requests_get_clear_4xx_json(client, path, body, status, message):
    r = post(client, path, body)
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    assert message in r.json()["error"]


def test_malformed_oversized_and_non_json_bodies_are_refused(client):
    url, js = "/api/runs/dcgan/grid", {"content-type": "application/json"}
    for body, status, message in [
        (b"{bad", 400, "malformed JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"psi": NaN}', 400, "NaN is not a JSON number"),
        (b"\xff\xfe", 400, "malformed JSON"),
        (json.dumps({"seed": 1, "pad": "x" * 5000}).encode(), 413, "request body too large: at most 4096 bytes"),
    ]:
        r = client.post(url, content=body, headers=js)
        assert (r.status_code, message in r.json()["error"]) == (status, True), body[:20]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit still holds while reading
        yield b'{"seed": 1, "pad": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    r = client.post(url, content=chunks(), headers=js)
    assert r.status_code == 413
    r = client.post(url, content=b'{"seed": 1}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "Content-Type: application/json" in r.json()["error"]
    r = client.get(url)
    assert r.status_code == 405 and r.json()["error"] == "Method Not Allowed"
    assert client.get("/api/nothing").status_code == 404
    assert client.get("/static/../runs.py").status_code == 404


def test_page_is_self_contained_and_locked_down(client):
    r = client.get("/")
    assert r.status_code == 200 and "ganforge playground" in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    for f in ["index.html", "app.js", "style.css"]:
        text = (STATIC / f).read_text()
        assert client.get(f"/static/{f}").text == text
        assert not re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f  # no other host named


def test_host_header_check_when_bound_to_loopback(served):
    app = create_app(runs=served, allowed_hosts=LOOPBACK_NAMES)
    assert TestClient(app, base_url="http://127.0.0.1:7860").get("/api/runs").status_code == 200
    assert TestClient(app, base_url="http://localhost:7860").get("/api/runs").status_code == 200
    assert TestClient(app, base_url="http://attacker.example").get("/api/runs").status_code == 400  # DNS rebinding


# --- a real server ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """uvicorn on 127.0.0.1 and a free port, in a background thread (it installs no signal handlers there)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def server_url(served) -> Iterator[str]:
    with live_server(create_app(runs=served, allowed_hosts=LOOPBACK_NAMES)) as url:
        yield url


def test_concurrent_requests_do_not_crash_or_mix(server_url, client):
    jobs = [("dcgan", s) for s in range(8)] + [("stylegan2", s) for s in range(8)]
    want = {job: post(client, f"{job[0]}/grid", {"seed": job[1], "n": 6}).content for job in jobs}

    def fetch(job: tuple[str, int]) -> bytes:
        r = httpx.post(f"{server_url}/api/runs/{job[0]}/grid", json={"seed": job[1], "n": 6}, timeout=60)
        assert r.status_code == 200
        return r.content

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(fetch, jobs * 2))
    assert got == [want[j] for j in jobs * 2]
    assert len(set(got)) == len(jobs)


@pytest.mark.slow
def test_page_in_headless_chromium(server_url, served, tmp_path):
    """Load the page, change seed and truncation (the image changes and is the right one), download it, see a
    refusal in the page, and check that nothing but 127.0.0.1 was ever contacted."""
    sync_playwright = need_extra("playwright.sync_api", "test").sync_playwright

    G = served["stylegan2"].G
    outside: list[str] = []
    local: list[str] = []

    def guard(route) -> None:
        url = route.request.url
        if urlparse(url).hostname == "127.0.0.1":
            local.append(url)
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    def shown(page, old_src: str | None) -> tuple[str, np.ndarray]:
        """The grid image the page displays once it replaced `old_src`: its blob URL and its pixels (gray)."""
        return displayed_image(page, "grid-img", old_src)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            context = browser.new_context(accept_downloads=True)
            context.route("**/*", guard)
            page = context.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(server_url)
            src0, img0 = shown(page, None)
            assert np.array_equal(img0, expected(sample(G, 16, seed=0)))  # the first run (a style model), seed 0
            assert "stylegan2" in page.inner_text("#run-info") and "step 4" in page.inner_text("#run-info")

            page.fill("#seed", "5")
            src1, img1 = shown(page, src0)
            assert np.array_equal(img1, expected(sample(G, 16, seed=5))) and not np.array_equal(img1, img0)

            assert page.is_visible("#psi")
            page.eval_on_selector("#psi", "el => { el.value = '0.5'; el.dispatchEvent(new Event('input')); }")
            src2, img2 = shown(page, src1)
            assert np.array_equal(img2, expected(sample(G, 16, seed=5, truncation_psi=0.5)))
            assert not np.array_equal(img2, img1) and page.inner_text("#psi-value") == "0.50"
            # the download link follows the shown grid (waiting on that condition, not on a fixed sleep)
            page.wait_for_function("src => document.querySelector('#grid-download').getAttribute('href') === src",
                                   arg=src2, timeout=10_000)
            with page.expect_download() as dl:
                page.click("#grid-download")
            assert dl.value.suggested_filename == "stylegan2-seed5-n16.png"
            saved = tmp_path / "download.png"
            dl.value.save_as(saved)
            assert np.array_equal(decode(saved.read_bytes()), img2)

            page.fill("#count", "500")  # past the limit: the page shows the server's refusal
            page.wait_for_selector("#samples .error:not([hidden])")
            assert "n must be an integer from 1 to 64, got 500" in page.inner_text("#samples .error")
            statuses = page.evaluate("""async () => {
                const post = (body) => fetch('/api/runs/stylegan2/grid', {method: 'POST', body,
                    headers: {'Content-Type': 'application/json'}}).then((r) => r.status);
                return [await post('{"seed": 1, "pad": "' + 'x'.repeat(10000) + '"}'), await post('{bad')];
            }""")
            assert statuses == [413, 400]
            assert page.is_visible("#mix-img") and page.get_attribute("#mix-img", "src").startswith("blob:")
            assert not page_errors
        finally:
            browser.close()
    assert outside == []
    assert any(u.endswith("/static/app.js") for u in local) and any("/api/runs" in u for u in local)


# --- `ganforge serve` ---------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_binds_loopback_and_warns_otherwise(runs, monkeypatch, capsys):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    port = free_port()
    assert main(["serve", str(runs["dcgan"]), str(runs["stylegan2"]), "--port", str(port)]) == 0
    out, err = capsys.readouterr()
    assert f"http://127.0.0.1:{port}/" in out and "warning" not in err
    app, kw = calls[-1]
    assert kw["host"] == "127.0.0.1" and kw["port"] == port
    assert TestClient(app, base_url="http://evil.example").get("/").status_code == 400
    assert main(["serve", str(runs["dcgan"]), "--host", "0.0.0.0", "--port", str(free_port())]) == 0
    err = capsys.readouterr().err
    assert "ganforge: warning: --host 0.0.0.0 makes the playground reachable from other machines" in err
    assert TestClient(calls[-1][0], base_url="http://192.0.2.1").get("/").status_code == 200


def test_serve_command_errors(runs, tmp_path, capsys):
    assert main(["serve", str(tmp_path)]) == 2
    assert "is not a ganforge run directory" in capsys.readouterr().err
    assert main(["serve", str(runs["dcgan"]), str(runs["dcgan"]), "--port", str(free_port())]) == 2
    assert "is given twice" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", str(runs["dcgan"]), "--port", str(busy.getsockname()[1])]) == 2
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err
    assert main(["serve", str(runs["dcgan"]), "--port", "70000"]) == 2
