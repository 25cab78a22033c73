"""HTTP for the playground: one static page, a list of runs, and three POST endpoints that return PNGs (the
latent tools' routes, directions, edits and projections, live in `latent.py`; shared request helpers in `api.py`).

Every request is checked before any work: a JSON object body of at most `LIMITS["max_body_bytes"]`, known
fields only, numbers in range. Refusals are JSON `{"error": "..."}` with a 4xx status (400 malformed, 404 unknown
run, 413 too large, 415 not JSON, 422 a value out of range). Generation runs in the thread pool, so the event
loop keeps answering while a grid renders; each run's generator is used by one request at a time (its lock).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ganforge.errors import UserError, warn
from ganforge.web.api import LABEL_FIELDS, LIMITS, ApiError, Fields, error, read_json, run_of
from ganforge.web.latent import LatentTools
from ganforge.web.runs import ServedRun, load_runs

STATIC = Path(__file__).parent / "static"
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
# the page needs nothing from anywhere else; images are blob: URLs made from fetched PNGs
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "content-security-policy": CSP}


class SecurityHeaders:
    """Adds HEADERS to every response (a pure ASGI middleware: it never buffers image bodies)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in HEADERS.items():
                    if k not in headers:
                        headers[k] = v
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    run_dirs: list[str | Path] | None = None, *, runs: dict[str, ServedRun] | None = None, device: str = "cpu",
    ema: bool = True, allowed_hosts: list[str] | None = None,
) -> Starlette:
    """The playground for `run_dirs` (loaded now) or already loaded `runs`. `allowed_hosts` (the loopback names
    when bound to loopback) refuses other Host headers, so a web page cannot reach the server by DNS rebinding."""
    if runs is None:
        if not run_dirs:
            raise UserError("give at least one run directory to serve")
        runs = load_runs(list(run_dirs), device=device, ema=ema)
    page = (STATIC / "index.html").read_text(encoding="utf-8")

    def endpoint(
        allowed: set[str], work: Callable[[ServedRun, Fields], Callable[[], bytes]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                run = run_of(runs, request)
                await run_in_threadpool(run.refresh)
                render = work(run, Fields(await read_json(request), allowed | LABEL_FIELDS))
                png = await run_in_threadpool(render)
            except ApiError as e:
                return error(e.status, e.message)
            except UserError as e:  # a value that is in range but does not fit this run (a class it lacks)
                return error(422, str(e))
            return Response(png, media_type="image/png", headers={"cache-control": "no-store"})

        return handle

    def grid(run: ServedRun, f: Fields) -> Callable[[], bytes]:
        seed, n = f.integer("seed", 0, 0, LIMITS["max_seed"]), f.integer("n", 16, 1, LIMITS["max_images"])
        psi, (cls, attrs) = f.psi(), f.label()
        return lambda: run.grid(seed, n, psi, cls, attrs)

    def interpolate(run: ServedRun, f: Fields) -> Callable[[], bytes]:
        seeds, t = f.seeds("seeds", [0, 1], 2, 2), f.number("t", 0.5, 0.0, 1.0)
        space, psi, (cls, attrs) = f.choice("space", "z", ("z", "w")), f.psi(), f.label()
        return lambda: run.interpolate(seeds, t, space, psi, cls, attrs)

    def mix(run: ServedRun, f: Fields) -> Callable[[], bytes]:
        most = LIMITS["max_mix_seeds"]
        rows, cols = f.seeds("rows", [1, 2, 3], 1, most), f.seeds("cols", [4, 5, 6], 1, most)
        layers, psi, (cls, attrs) = f.choice("layers", "coarse", ("coarse", "middle", "fine")), f.psi(), f.label()
        return lambda: run.style_mix(rows, cols, layers, psi, cls, attrs)

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"cache-control": "no-store"})

    async def list_runs(request: Request) -> Response:
        for run in runs.values():
            await run_in_threadpool(run.refresh)
        return JSONResponse({"runs": [r.info() for r in runs.values()], "limits": LIMITS})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error(exc.status_code, str(exc.detail))

    latent = LatentTools(runs)
    routes = [
        Route("/", index),
        Route("/api/runs", list_runs),
        Route("/api/runs/{run_id}/grid", endpoint({"seed", "n"}, grid), methods=["POST"]),
        Route("/api/runs/{run_id}/interpolate", endpoint({"seeds", "t", "space"}, interpolate), methods=["POST"]),
        Route("/api/runs/{run_id}/style-mix", endpoint({"rows", "cols", "layers"}, mix), methods=["POST"]),
        *latent.routes(),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error})
    app.state.latent = latent  # projections and directions by run id
    return app


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    run_dirs: list[str | Path], *, host: str = "127.0.0.1", port: int = 7860, device: str = "cpu", ema: bool = True
) -> None:
    """`ganforge serve`: load the runs, then serve until Ctrl+C. Binding another address than loopback is allowed
    (a warning says so): the playground has no login, so anyone who can reach the address can use it."""
    import uvicorn

    loopback = is_loopback(host)
    if not loopback:
        warn(f"--host {host} makes the playground reachable from other machines; it has no login, so anyone "
             f"who can reach {host}:{port} can use it (and this CPU). Use --host 127.0.0.1 to keep it local")
    try:  # a port in use is a one-line error before the (slow) model loading, not a traceback after it
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host.strip("[]"), port))
    except OSError as e:
        raise UserError(
            f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port or --host"
        ) from None
    app = create_app(run_dirs, device=device, ema=ema, allowed_hosts=LOOPBACK_NAMES if loopback else None)
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    print(f"ganforge playground: http://{shown}:{port}/  ({len(run_dirs)} run(s); Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=host.strip("[]"), port=port, log_level="warning")
