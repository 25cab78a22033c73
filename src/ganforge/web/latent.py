"""The playground's latent tools: a run's semantic directions as sliders, edits of seeds along them, and real
images projected into the latent space (an upload) and edited with the same sliders.

- Directions are `latent.directions.cached_directions`: computed on first use, stored in RUN_DIR/directions/,
  and kept in memory per generator (a newer checkpoint gets its own). Edits follow `latent.edit`: strengths are
  standard deviations of the latent along each direction, and all sliders at 0 render the unedited latent, so a
  seed's image is `/grid`'s bit for bit.
- A projection is a background job (one per run at a time; a second upload while one runs is refused with 409),
  reporting its progress for the page to poll and stopping at the next step when cancelled. It works on a copy
  of the generator, so seeds, grids and sliders keep answering while it runs; the last `max_projections`
  results are kept in memory by id.
- Uploads are one image each, size-limited while read, and checked from the header (format, pixel count) before
  anything decodes them, so a decompression bomb is refused without being decompressed.
"""

from __future__ import annotations

import copy
import io
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ganforge.errors import UserError, warn
from ganforge.latent.core import Latent, is_style, render
from ganforge.latent.directions import METHODS, Directions, cached_directions
from ganforge.latent.edit import edited_latents, seeds_latent
from ganforge.latent.perceptual import ProjectionLoss, build_network, default_network_name
from ganforge.latent.project import DEFAULT_STEPS, ProjectionCancelled, project
from ganforge.latent.targets import load_targets
from ganforge.web.api import LABEL_FIELDS, LIMITS, ApiError, Fields, json_errors, read_body, read_json, run_of
from ganforge.web.runs import ServedRun, png_bytes

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp")


def projection_api() -> tuple[Any, type[BaseException], Any]:
    """`project`, `ProjectionCancelled` and `load_targets` (one seam: the tests pace the real projection here)."""
    return project, ProjectionCancelled, load_targets


def projection_loss(cfg: dict[str, Any]) -> ProjectionLoss:
    """The loss `ganforge project` uses by default: pixels plus the run's domain network where it has one."""
    return ProjectionLoss(build_network(default_network_name(cfg)))


def check_type(content_type: str) -> None:
    """An upload is sent as the raw body with its image/* Content-Type (what `fetch(url, {body: file})` does)."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype not in IMAGE_TYPES:
        raise ApiError(415, f"upload an image (PNG, JPEG, WebP, GIF or BMP) as the request body with its image/* "
                            f"Content-Type; got {ctype or 'no Content-Type'}")


def check_upload(data: bytes) -> None:
    """Refuse what is not one image of a sane size before decoding it: the header gives format and size."""
    if not data:
        raise ApiError(422, "the upload is empty; choose an image file")
    most = LIMITS["max_upload_pixels"]
    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            w, h = im.size
    except Image.DecompressionBombError as e:
        raise ApiError(413, f"the image is too large to decode ({e}); at most {most} pixels") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a file that is not an image
        raise ApiError(422, f"the upload is not an image PIL can read ({type(e).__name__}); upload a PNG or "
                            "JPEG file") from None
    if w * h > most:
        raise ApiError(413, f"the image is {w}x{h} pixels; at most {most} pixels (e.g. 4096x4096): downscale it")


@dataclass
class Job:
    """One projection: what the page polls. `state` is running, done, cancelled or failed."""

    id: str
    total: int
    step: int = 0
    state: str = "running"
    error: str | None = None
    projection: str | None = None
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def info(self) -> dict[str, Any]:
        seconds = (self.ended or time.monotonic()) - self.started
        return {"id": self.id, "state": self.state, "step": self.step, "total": self.total, "error": self.error,
                "projection": self.projection, "notes": self.notes, "seconds": round(seconds, 2),
                "cancelling": self.state == "running" and self.cancel.is_set()}


@dataclass
class Projected:
    """A finished projection: its latent, the target as the run sees it, and the checkpoint step it belongs to."""

    latent: Latent
    target: torch.Tensor
    step: int | None


class RunLatents:
    """One run's directions cache, projection job and projections (the run's lock guards its generator)."""

    def __init__(self, run: ServedRun) -> None:
        self.run = run
        self._dirs: dict[str, tuple[torch.nn.Module, Directions]] = {}
        self._dirs_lock = threading.Lock()  # one computation of a method at a time
        self.lock = threading.Lock()  # guards job and projections
        self.job: Job | None = None
        self.projections: OrderedDict[str, Projected] = OrderedDict()

    def directions(self, method: str) -> Directions:
        """The run's directions of `method` for its current generator (computed and cached on first use)."""
        if method not in METHODS.names():
            raise ApiError(422, f"method must be one of {', '.join(METHODS.names())}, got {method!r}")
        with self._dirs_lock:
            G = self.run.G
            hit = self._dirs.get(method)
            if hit is not None and hit[0] is G:
                return hit[1]
            with self.run.lock:
                dirs = cached_directions(self.run.path, G, method)
            self._dirs[method] = (G, dirs)
            return dirs

    def latent(self, seed: int | None, projection: str | None, cls: str | None, attrs: list[str] | None) -> Latent:
        if projection is None:
            labels = self.run.labels(1, cls, attrs, default_class=True)
            return seeds_latent(self.run.G, [0 if seed is None else seed], labels)
        with self.lock:
            found = self.projections.get(projection)
        if found is None:
            raise ApiError(404, f"no projection {projection!r}: the playground keeps the last "
                                f"{LIMITS['max_projections']} per run; upload the image again")
        if found.step != self.run.step:
            raise ApiError(409, f"the run moved on to step {self.run.step} since this image was projected (at step "
                                f"{found.step}); upload it again to project it into the new generator")
        return found.latent

    def edit(self, method: str, strengths: list[float], latent_of: dict[str, Any]) -> bytes:
        """The image of a seed or projection moved by every slider at once: the strength-weighted sum of the
        directions is one direction of strength 1, edited as `latent.edit` edits; all zero is the plain image."""
        dirs = self.directions(method)
        if len(strengths) > len(dirs):
            raise ApiError(422, f"{len(strengths)} strengths for {len(dirs)} {method} directions; give at most "
                                f"{len(dirs)}")
        latent = self.latent(**latent_of)  # before the run's lock: `start` takes self.lock, then the run's
        with self.run.lock:
            G = self.run.G
            if any(strengths):
                s = torch.tensor(strengths, dtype=torch.float64) * dirs.scale[: len(strengths)].double()
                delta = (s[:, None] * dirs.vectors[: len(strengths)].double()).sum(0)
                size = float(delta.norm())
                combined = replace(dirs, vectors=(delta / max(size, 1e-30)).float()[None], names=["sliders"],
                                   importance=torch.ones(1), scale=torch.tensor([size]))
                latent = edited_latents(G, latent, combined, 0, [1.0])
            x = render(G, latent, batch_size=1 if is_style(G) else 64)
        return png_bytes(x)

    def start(self, data: bytes, steps: int | None) -> Job:
        """Start projecting one uploaded image (already checked by `check_upload`) in a background thread."""
        run_project, cancelled, read_targets = projection_api()
        self.refuse_if_busy()
        targets, notes = read_targets([data], self.run.cfg)  # a bad image is a one-line UserError (422)
        kind = "attributes" if self.run.label_kind == "attributes" else "class"
        kwargs = {"loss": projection_loss(self.run.cfg), "label_kind": kind}
        if steps is not None:
            kwargs["steps"] = steps
        with self.lock:
            self.refuse_if_busy()
            with self.run.lock:  # a private copy: the job never holds the run's lock, so the page stays live
                G, step = copy.deepcopy(self.run.G), self.run.step
            job = Job(uuid.uuid4().hex[:12], steps or DEFAULT_STEPS, notes=[str(n) for n in notes])
            self.job = job

        def progress(done: int, total: int) -> bool:
            job.step, job.total = done, total
            return not job.cancel.is_set()

        def work() -> None:
            try:
                result = run_project(G, targets, callback=progress, **kwargs)
                with self.lock:
                    self.projections[job.id] = Projected(result.latent, targets[0].cpu(), step)
                    while len(self.projections) > LIMITS["max_projections"]:
                        self.projections.popitem(last=False)
                job.projection, job.state = job.id, "done"
            except cancelled:
                job.state = "cancelled"
            except UserError as e:
                job.error, job.state = str(e), "failed"
            except Exception as e:  # noqa: BLE001 - the page must hear of it, not wait forever
                job.error, job.state = f"the projection failed ({type(e).__name__}: {e})", "failed"
                warn(f"{self.run.path}: projection {job.id} failed: {type(e).__name__}: {e}")
            finally:
                job.ended = time.monotonic()

        threading.Thread(target=work, name=f"project-{self.run.id}", daemon=True).start()
        return job

    def refuse_if_busy(self) -> None:
        job = self.job
        if job is not None and job.state == "running":
            raise ApiError(409, f"a projection is already running for this run (step {job.step}/{job.total}); "
                                "wait for it to finish or cancel it, one runs at a time")

    def cancel(self) -> Job:
        job = self.job
        if job is None or job.state != "running":
            raise ApiError(409, "no projection is running for this run; there is nothing to cancel")
        job.cancel.set()
        return job

    def target_png(self, projection: str) -> bytes:
        with self.lock:
            found = self.projections.get(projection)
        if found is None:
            raise ApiError(404, f"no projection {projection!r}; upload the image again")
        return png_bytes(found.target[None])


class LatentTools:
    """The latent tools of the served runs: their state by run id (`app.state.latent`) and their routes."""

    def __init__(self, runs: dict[str, ServedRun]) -> None:
        self.served = runs
        self.runs = {rid: RunLatents(run) for rid, run in runs.items()}

    def routes(self) -> list[Route]:
        """The routes, added to the app's by `create_app`."""
        return latent_routes(self)


def latent_routes(tools: LatentTools) -> list[Route]:
    def of(request: Request) -> RunLatents:
        return tools.runs[run_of(tools.served, request).id]

    def png(data: bytes) -> Response:
        return Response(data, media_type="image/png", headers={"cache-control": "no-store"})

    def no_store(data: dict[str, Any], status: int = 200) -> JSONResponse:
        return JSONResponse(data, status_code=status, headers={"cache-control": "no-store"})

    @json_errors
    async def directions(request: Request) -> Response:
        lat = of(request)
        await run_in_threadpool(lat.run.refresh)
        dirs = await run_in_threadpool(lat.directions, request.path_params["method"])
        k = min(len(dirs), LIMITS["max_sliders"])
        return no_store({"method": dirs.method, "space": dirs.space, "count": len(dirs), "names": dirs.names[:k],
                         "importance": dirs.importance[:k].tolist(), "scale": dirs.scale[:k].tolist()})

    @json_errors
    async def edit(request: Request) -> Response:
        lat = of(request)
        await run_in_threadpool(lat.run.refresh)
        f = Fields(await read_json(request), {"method", "strengths", "seed", "projection"} | LABEL_FIELDS - {"psi"})
        method = f.choice("method", "sefa", tuple(METHODS.names()))
        strengths = f.data.get("strengths", [])
        top = LIMITS["max_strength"]
        ok = isinstance(strengths, list) and len(strengths) <= LIMITS["max_sliders"]
        if not ok or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and abs(s) <= top
                             for s in strengths):
            raise ApiError(422, f"strengths must be a list of at most {LIMITS['max_sliders']} numbers from -{top:g} "
                                f"to {top:g} (standard deviations along each direction)")
        if "seed" in f.data and "projection" in f.data:
            raise ApiError(422, "give either seed (a sample) or projection (an uploaded image's id), not both")
        seed = f.integer("seed", 0, 0, LIMITS["max_seed"])
        projection = f.data.get("projection")
        if projection is not None and (not isinstance(projection, str) or not projection.isalnum()):
            raise ApiError(422, "projection must be the id a finished projection reported")
        cls, attrs = f.label()
        latent_of = {"seed": seed, "projection": projection, "cls": cls, "attrs": attrs}
        return png(await run_in_threadpool(lat.edit, method, [float(s) for s in strengths], latent_of))

    @json_errors
    async def start(request: Request) -> Response:
        lat = of(request)
        lat.refuse_if_busy()  # before reading a body that would only be refused
        raw = request.query_params.get("steps")
        steps = None
        if raw is not None:
            most = LIMITS["max_projection_steps"]
            if not raw.isdigit() or not 1 <= int(raw) <= most:
                raise ApiError(422, f"steps must be an integer from 1 to {most}, got {raw!r}")
            steps = int(raw)
        check_type(request.headers.get("content-type", ""))  # before reading the body
        data = await read_body(request, LIMITS["max_upload_bytes"], "upload")
        check_upload(data)
        await run_in_threadpool(lat.run.refresh)
        job = await run_in_threadpool(lat.start, data, steps)
        return no_store({"job": job.info()}, 202)

    @json_errors
    async def status(request: Request) -> Response:
        job = of(request).job
        return no_store({"job": None if job is None else job.info()})

    @json_errors
    async def cancel(request: Request) -> Response:
        return no_store({"job": of(request).cancel().info()})

    @json_errors
    async def target(request: Request) -> Response:
        return png(await run_in_threadpool(of(request).target_png, request.path_params["projection"]))

    return [
        Route("/api/runs/{run_id}/directions/{method}", directions),
        Route("/api/runs/{run_id}/edit", edit, methods=["POST"]),
        Route("/api/runs/{run_id}/project", start, methods=["POST"]),
        Route("/api/runs/{run_id}/project", status, methods=["GET"]),
        Route("/api/runs/{run_id}/project", cancel, methods=["DELETE"]),
        Route("/api/runs/{run_id}/projections/{projection}/target", target),
    ]
