"""The playground's latent tools (issue 23): directions as sliders (computed once, cached in the run folder),
edits of seeds (all sliders at 0 is `/grid`'s image byte for byte) and of uploaded images projected into the
latent space (upload limits, one projection per run at a time, progress, cancel), through Starlette's
TestClient and in headless Chromium against a real server on 127.0.0.1."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import test_web
import torch
from conftest import displayed_image
from PIL import Image
from starlette.testclient import TestClient
from test_web import decode, expected

import ganforge.latent.directions as directions_module
import ganforge.web.latent as web_latent
from ganforge.generate import sample
from ganforge.images import make_grid, png_bytes
from ganforge.latent.core import Latent, render
from ganforge.latent.directions import Directions
from ganforge.latent.edit import edit, edited_latents, seeds_latent
from ganforge.web import LIMITS, create_app

# the playground's module-scoped fixtures (four 4-step runs, loaded; a TestClient; a uvicorn on 127.0.0.1)
runs, served, client, server_url = test_web.runs, test_web.served, test_web.client, test_web.server_url


def wait_until(condition: Callable[[], object], seconds: float = 60.0) -> object:
    """Poll `condition` until it is truthy (its value is returned); fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting for a condition"
        time.sleep(0.02)


def edit_png(client: TestClient, rid: str, body: dict) -> bytes:
    r = client.post(f"/api/runs/{rid}/edit", json=body)
    assert r.status_code == 200, r.text
    return r.content


def sample_png(G: torch.nn.Module, seed: int) -> bytes:
    """A generator's own sample as an uploaded file would carry it."""
    return png_bytes(make_grid(sample(G, 1, seed=seed), padding=0))


def huge_png(width: int, height: int) -> bytes:
    """A tiny file whose header claims width x height pixels (a decompression bomb's shape, never decoded)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    b = bytearray(buf.getvalue())
    b[16:24] = struct.pack(">II", width, height)  # IHDR's data starts after the signature, length and type
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    return bytes(b)


@pytest.fixture
def gate(monkeypatch) -> Iterator[threading.Event]:
    """The real projection, paced by the test: after each step it waits until the event is set, so a job is
    reliably still running while the test sends a second upload or a cancel."""
    real = web_latent.projection_api
    event = threading.Event()

    def paced_api():
        project, cancelled, load_targets = real()

        def paced(G, targets, *, callback, **kw):
            def step(done: int, total: int) -> bool | None:
                assert event.wait(60), "the test never opened the gate"
                return callback(done, total)

            return project(G, targets, callback=step, **kw)

        return paced, cancelled, load_targets

    monkeypatch.setattr(web_latent, "projection_api", paced_api)
    yield event
    event.set()  # never leave a job thread waiting


def upload(client: TestClient, rid: str, data: bytes, ctype: str = "image/png", steps: int | None = 20):
    query = "" if steps is None else f"?steps={steps}"
    return client.post(f"/api/runs/{rid}/project{query}", content=data, headers={"content-type": ctype})


def finished(client: TestClient, rid: str) -> dict:
    return wait_until(lambda: (j := client.get(f"/api/runs/{rid}/project").json()["job"])["state"] != "running" and j)


# --- directions ---------------------------------------------------------------------------------------------------
def test_directions_are_computed_on_first_use_and_cached_in_the_run_folder(client, runs, served, monkeypatch):
    calls: list[str] = []
    real = directions_module.compute_directions
    monkeypatch.setattr(directions_module, "compute_directions", lambda G, m, s=None: calls.append(m) or real(G, m, s))
    cache = runs["dcgan"] / "directions" / "sefa.npz"
    cache.unlink(missing_ok=True)
    body = client.get("/api/runs/dcgan/directions/sefa").json()
    assert calls == ["sefa"] and cache.is_file()
    on_disk = Directions.load(cache, served["dcgan"].G)
    assert body["count"] == len(on_disk) and body["space"] == "z" and body["method"] == "sefa"
    assert body["names"] == on_disk.names[: LIMITS["max_sliders"]] and len(body["names"]) == LIMITS["max_sliders"]
    assert np.allclose(body["scale"], on_disk.scale[: LIMITS["max_sliders"]].numpy())
    assert body["importance"] == sorted(body["importance"], reverse=True)
    stamp = cache.stat().st_mtime_ns
    assert client.get("/api/runs/dcgan/directions/sefa").json() == body  # from memory
    fresh = TestClient(create_app(runs={"dcgan": served["dcgan"]}))  # a new server reads the run folder's file
    assert fresh.get("/api/runs/dcgan/directions/sefa").json() == body
    assert calls == ["sefa"] and cache.stat().st_mtime_ns == stamp
    r = client.get("/api/runs/dcgan/directions/ica")
    assert r.status_code == 422 and r.json()["error"] == "method must be one of classifier, pca, sefa, got 'ica'"


def test_classifier_directions_are_named_after_the_classes(client):
    body = client.get("/api/runs/stylegan2/directions/classifier").json()
    assert body["space"] == "w" and "Sneaker" in body["names"] and len(body["names"]) == 10


# --- edits --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("rid", "label"), [("dcgan", {}), ("stylegan2", {}), ("classes", {"class": "3"})])
def test_sliders_at_zero_are_the_seed_sample_byte_for_byte(client, rid, label):
    grid = client.post(f"/api/runs/{rid}/grid", json={"seed": 9, "n": 1, **label}).content
    assert edit_png(client, rid, {"seed": 9, "method": "pca", "strengths": [0.0] * 10, **label}) == grid
    assert edit_png(client, rid, {"seed": 9, "method": "sefa", "strengths": [], **label}) == grid
    assert edit_png(client, rid, {"seed": 9, "method": "sefa", "strengths": [0, 1.5], **label}) != grid


def test_one_slider_is_latent_edit_and_several_add_up(client, served):
    """One slider moves the seed as `latent.edit.edit` does (the CLI's edit); two move it by the sum."""
    for rid in ["dcgan", "stylegan2"]:
        G = served[rid].G
        assert client.get(f"/api/runs/{rid}/directions/sefa").status_code == 200  # computed and cached
        dirs = Directions.load(served[rid].path / "directions" / "sefa.npz", G)
        got = decode(edit_png(client, rid, {"seed": 4, "method": "sefa", "strengths": [0, 2.5]}))
        want = expected(edit(G, [4], dirs, 1, [2.5]))
        assert np.abs(got.astype(int) - want).max() <= 1 and (got != expected(sample(G, 1, seed=4))).any()
        both = decode(edit_png(client, rid, {"seed": 4, "method": "sefa", "strengths": [-2, 2.5]}))
        moved = edited_latents(G, edited_latents(G, seeds_latent(G, [4]), dirs, 0, [-2.0]), dirs, 1, [2.5])
        assert np.abs(both.astype(int) - expected(render(G, moved))).max() <= 1 and not np.array_equal(both, got)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"strengths": [0] * 11}, "strengths must be a list of at most 10 numbers from -5 to 5"),
        ({"strengths": [5.5]}, "strengths must be a list of at most 10 numbers from -5 to 5"),
        ({"strengths": ["1"]}, "strengths must be a list"),
        ({"strengths": [True]}, "strengths must be a list"),
        ({"method": "ica"}, "method must be one of classifier, pca, sefa"),
        ({"seed": 1, "projection": "abc"}, "give either seed (a sample) or projection"),
        ({"projection": "../x"}, "projection must be the id a finished projection reported"),
        ({"psi": 0.5}, "unknown field(s) psi"),
    ],
)
def test_bad_edits_get_one_line_4xx_json(client, body, message):
    r = client.post("/api/runs/stylegan2/edit", json={"method": "sefa", **body})
    assert r.status_code == 422 and message in r.json()["error"] and "\n" not in r.json()["error"]


def test_unknown_projection_and_run(client):
    r = client.post("/api/runs/dcgan/edit", json={"projection": "feedbeef0000"})
    assert r.status_code == 404 and "no projection 'feedbeef0000'" in r.json()["error"]
    assert client.get("/api/runs/nope/directions/sefa").status_code == 404
    assert client.get("/api/runs/nope/project").status_code == 404


# --- uploads and projection ---------------------------------------------------------------------------------------
def test_upload_limits(client):
    most = LIMITS["max_upload_bytes"]
    cases = [
        (upload(client, "dcgan", b"hello", "text/plain"), 415, "upload an image (PNG, JPEG, WebP, GIF or BMP)"),
        (upload(client, "dcgan", b"", "image/png"), 422, "the upload is empty"),
        (upload(client, "dcgan", b"not a png at all", "image/png"), 422, "the upload is not an image PIL can read"),
        (upload(client, "dcgan", b"\x89PNG" + b"\0" * most, "image/png"), 413, f"upload too large: at most {most}"),
        (upload(client, "dcgan", huge_png(5000, 5000)), 413, "the image is 5000x5000 pixels; at most 16777216"),
        (upload(client, "dcgan", huge_png(100_000, 100_000)), 413, "the image is too large to decode"),
        (upload(client, "dcgan", huge_png(8, 8), steps=0), 422, "steps must be an integer from 1 to 1000"),
        (upload(client, "dcgan", huge_png(8, 8), steps=5000), 422, "steps must be an integer from 1 to 1000"),
    ]
    for r, status, message in cases:
        assert (r.status_code, r.headers["content-type"]) == (status, "application/json"), r.text
        assert message in r.json()["error"] and "\n" not in r.json()["error"], r.json()
    assert client.get("/api/runs/dcgan/project").json() == {"job": None}  # none of them started a job


def test_a_projection_runs_one_at_a_time_and_can_be_cancelled(client, served, gate):
    target = sample_png(served["dcgan"].G, 5)
    r = upload(client, "dcgan", target, steps=30)
    assert r.status_code == 202 and r.json()["job"]["state"] == "running"
    wait_until(lambda: client.get("/api/runs/dcgan/project").json()["job"]["total"] == 30)
    second = upload(client, "dcgan", target)
    assert second.status_code == 409
    assert second.json()["error"].startswith("a projection is already running for this run (step 0/30); wait")
    assert upload(client, "stylegan2", sample_png(served["stylegan2"].G, 1), steps=2).status_code == 202  # per run
    r = client.delete("/api/runs/dcgan/project")
    assert r.status_code == 200 and r.json()["job"]["cancelling"] is True
    gate.set()
    job = finished(client, "dcgan")
    assert (job["state"], job["step"], job["projection"]) == ("cancelled", 1, None)  # stopped after the next step
    r = client.delete("/api/runs/dcgan/project")
    assert r.status_code == 409 and "no projection is running" in r.json()["error"]
    assert finished(client, "stylegan2")["state"] == "done"


@pytest.mark.slow
def test_an_uploaded_image_is_projected_then_edited_with_the_sliders(client, served):
    G = served["dcgan"].G
    r = upload(client, "dcgan", sample_png(G, 5), steps=40)
    assert r.status_code == 202
    job = finished(client, "dcgan")
    assert (job["state"], job["step"], job["total"]) == ("done", 40, 40) and job["projection"] == job["id"]
    pid = job["projection"]
    target = client.get(f"/api/runs/dcgan/projections/{pid}/target")
    assert np.array_equal(decode(target.content), expected(sample(G, 1, seed=5)))  # the upload, as the run sees it
    latent = client.app.state.latent.runs["dcgan"].projections[pid].latent
    plain = edit_png(client, "dcgan", {"projection": pid, "method": "sefa", "strengths": [0, 0]})
    assert np.array_equal(decode(plain), expected(render(G, latent)))  # sliders at 0: the projection's image
    moved = edit_png(client, "dcgan", {"projection": pid, "method": "sefa", "strengths": [3]})
    dirs = Directions.load(served["dcgan"].path / "directions" / "sefa.npz", G)
    want = expected(edit(G, Latent(latent.values, "z", latent.labels), dirs, 0, [3.0]))
    assert np.abs(decode(moved).astype(int) - want).max() <= 1 and moved != plain


@pytest.mark.parametrize("rid", ["classes", "attrs"])
def test_conditional_runs_project_their_label_too(client, served, rid):
    """A conditional run's projection carries its (optimised) label, and the sliders edit it with that label."""
    G = served[rid].G
    assert upload(client, rid, sample_png(served["dcgan"].G, 2), steps=3).status_code == 202
    job = finished(client, rid)
    assert job["state"] == "done", job
    latent = client.app.state.latent.runs[rid].projections[job["projection"]].latent
    assert latent.labels is not None and len(latent.labels) == 1
    plain = edit_png(client, rid, {"projection": job["projection"], "method": "sefa", "strengths": [0]})
    assert np.array_equal(decode(plain), expected(render(G, latent)))


def test_only_the_last_projections_are_kept(client, served, monkeypatch):
    monkeypatch.setitem(LIMITS, "max_projections", 2)
    ids = []
    for seed in range(3):
        assert upload(client, "dcgan", sample_png(served["dcgan"].G, seed), steps=1).status_code == 202
        ids.append(finished(client, "dcgan")["projection"])
    assert list(client.app.state.latent.runs["dcgan"].projections) == ids[1:]
    r = client.post("/api/runs/dcgan/edit", json={"projection": ids[0]})
    assert r.status_code == 404 and "keeps the last 2 per run; upload the image again" in r.json()["error"]
    assert edit_png(client, "dcgan", {"projection": ids[2]})


# --- the page -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sliders_and_upload_in_headless_chromium(server_url, served, gate, tmp_path):
    """Move a slider (the edited image changes and is the right one), download it, upload a non-image (the
    refusal shows), upload a real image (progress shows while it runs; cancel it), upload it again (the result
    shows and the sliders edit it), screenshot the page."""
    from playwright.sync_api import sync_playwright

    G = served["stylegan2"].G
    outside: list[str] = []

    def guard(route) -> None:
        if route.request.url.startswith(server_url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    def shown(page, old: str | None) -> tuple[str, np.ndarray]:
        return displayed_image(page, "latent-img", old)

    not_image = tmp_path / "notes.png"
    not_image.write_bytes(b"this is not a picture")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.kron(expected(sample(G, 1, seed=8)), np.ones((4, 4), np.uint8))).save(photo)  # 128 px

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 1000})
            context.route("**/*", guard)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server_url)
            page.wait_for_selector("#sliders input")
            assert page.locator("#sliders input").count() == LIMITS["max_sliders"]
            assert "directions in w" in page.inner_text("#dir-status")
            src0, img0 = shown(page, None)
            assert np.array_equal(img0, expected(sample(G, 1, seed=0)))  # sliders at 0: seed 0's sample

            page.eval_on_selector("#sliders input >> nth=1",
                                  "el => { el.value = '3'; el.dispatchEvent(new Event('input')); }")
            src1, img1 = shown(page, src0)
            dirs = Directions.load(served["stylegan2"].path / "directions" / "sefa.npz", G)
            want = expected(edit(G, [0], dirs, 1, [3.0]))
            assert np.abs(img1.astype(int) - want).max() <= 1 and not np.array_equal(img1, img0)
            assert page.inner_text("#sliders output >> nth=1") == "3.0"
            page.wait_for_function("src => document.getElementById('latent-download').href === src", arg=src1)
            with page.expect_download() as dl:
                page.click("#latent-download")
            assert dl.value.suggested_filename == "stylegan2-sefa-seed0_sefa1+3.png"
            dl.value.save_as(tmp_path / "edit.png")
            assert np.array_equal(decode((tmp_path / "edit.png").read_bytes()), img1)

            page.set_input_files("#upload", str(not_image))
            page.wait_for_selector("#upload-error:not([hidden])")
            assert "the upload is not an image PIL can read" in page.inner_text("#upload-error")

            assert page.input_value("#project-steps") == str(LIMITS["projection_steps"])  # `ganforge project`'s
            page.fill("#project-steps", "12")
            page.set_input_files("#upload", str(photo))
            page.wait_for_selector("#project-row:not([hidden])")
            page.wait_for_function("() => document.getElementById('project-status').textContent.includes('of 12')")
            assert page.is_visible("#project-cancel") and page.is_disabled("#upload")
            assert page.is_hidden("#upload-error")
            page.click("#project-cancel")  # the first try is cancelled ...
            page.wait_for_function("() => document.getElementById('project-status').textContent === 'cancelling...'")
            gate.set()
            page.wait_for_function("() => document.getElementById('project-status').textContent === 'cancelled at step 1'")
            assert page.is_hidden("#project-cancel") and page.input_value("#edit-source") == "seed"
            page.set_input_files("#upload", str(photo))  # ... the second runs to the end
            page.wait_for_function("() => document.getElementById('project-status').textContent.startsWith('projected')")
            src2, img2 = shown(page, src1)
            assert page.input_value("#edit-source") == "projection" and page.is_visible("#target-img")
            page.wait_for_function("() => document.getElementById('recon-img').src.startsWith('blob:')")
            assert page.evaluate("() => document.getElementById('project-progress').value") == 12
            assert not np.array_equal(img2, img1)
            page.click("#reset-sliders")  # the projection itself
            src3, img3 = shown(page, src2)
            assert not np.array_equal(img3, img2) and page.inner_text("#sliders output >> nth=1") == "0.0"
            page.eval_on_selector("#sliders input >> nth=0",
                                  "el => { el.value = '-2.5'; el.dispatchEvent(new Event('input')); }")
            shown(page, src3)
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            page.locator("#latent").screenshot(path=str(tmp_path / "latent.png"))
            assert not errors
        finally:
            browser.close()
    assert outside == []
