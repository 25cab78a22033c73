"""What every playground route shares: the limits the page is told, request parsing (bodies read no further than
their limit, JSON objects with known, range-checked fields) and refusals as one-line JSON `{"error": "..."}`.

Statuses: 400 malformed, 404 unknown run or item, 409 busy (a projection already running), 413 too large,
415 wrong content type, 422 a value out of range or that does not fit this run.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ganforge.errors import UserError
from ganforge.latent.project import DEFAULT_STEPS
from ganforge.web.runs import ServedRun

LIMITS: dict[str, Any] = {
    "max_images": 64,  # one grid
    "max_mix_seeds": 8,  # rows and columns of a style-mixing grid, each
    "max_seed": 2**32 - 1,
    "psi_min": -1.0,
    "psi_max": 2.0,
    "max_body_bytes": 4096,
    "max_attrs": 64,
    "max_sliders": 10,  # directions shown as sliders (the most important ones)
    "max_strength": 5.0,  # slider range, in standard deviations of the latent along the direction
    "max_upload_bytes": 8 * 2**20,  # one image per upload
    "max_upload_pixels": 4096 * 4096,  # checked from the header before decoding (decompression bombs)
    "max_projection_steps": 1000,
    "projection_steps": DEFAULT_STEPS,  # the page's default, `ganforge project`'s
    "max_projections": 8,  # kept per run (the oldest is dropped), each editable by its id
}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"cache-control": "no-store"})


async def read_body(request: Request, most: int, what: str) -> bytes:
    """The body, refused (413) as soon as it is known to exceed `most` bytes: from Content-Length, or while
    streaming when there is none, so a client cannot make the server buffer more."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > most):
        raise ApiError(413, f"{what} too large: at most {most} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > most:
            raise ApiError(413, f"{what} too large: at most {most} bytes")
    return bytes(body)


def run_of(runs: dict[str, ServedRun], request: Request) -> ServedRun:
    """The run a route's `{run_id}` names (ids, never paths: a request cannot point the server at a folder)."""
    rid = request.path_params["run_id"]
    if rid not in runs:
        raise ApiError(404, f"unknown run {rid!r}; GET /api/runs lists the runs this server offers")
    return runs[rid]


def json_errors(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """A route whose ApiError / UserError (a value in range that does not fit this run) becomes a JSON refusal."""

    @functools.wraps(fn)
    async def handle(request: Request) -> Response:
        try:
            return await fn(request)
        except ApiError as e:
            return error(e.status, e.message)
        except UserError as e:
            return error(422, str(e))

    return handle


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object, read at most max_body_bytes + 1 bytes far (a client cannot make us buffer more)."""
    most = LIMITS["max_body_bytes"]
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "send the request body as JSON with Content-Type: application/json")
    body = await read_body(request, most, "request body")

    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not a JSON number")

    try:
        data = json.loads(body, parse_constant=no_constants)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"malformed JSON: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(400, 'the request body must be a JSON object, e.g. {"seed": 1}')
    return data


class Fields:
    """Typed, range-checked access to a request's fields; unknown fields are refused (a typo is not ignored)."""

    def __init__(self, data: dict[str, Any], allowed: set[str]) -> None:
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ApiError(
                422, f"unknown field(s) {', '.join(unknown)}; this endpoint takes {', '.join(sorted(allowed))}"
            )
        self.data = data

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        v = self.data.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ApiError(422, f"{name} must be an integer from {lo} to {hi}, got {json.dumps(v)}")
        return v

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        v = self.data.get(name, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            raise ApiError(422, f"{name} must be a number from {lo:g} to {hi:g}, got {json.dumps(v)}")
        return float(v)

    def seeds(self, name: str, default: list[int], lo: int, hi: int) -> list[int]:
        v = self.data.get(name, default)
        top = LIMITS["max_seed"]
        ok = isinstance(v, list) and lo <= len(v) <= hi
        if not ok or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= top for s in v):
            raise ApiError(422, f"{name} must be a list of {lo} to {hi} integer seeds from 0 to {top}")
        return list(v)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        v = self.data.get(name, default)
        if v not in choices:
            raise ApiError(422, f"{name} must be one of {', '.join(choices)}, got {json.dumps(v)}")
        return str(v)

    def label(self) -> tuple[str | None, list[str] | None]:
        """`class` (a name or an index) and `attrs` (names of the attributes that are on)."""
        cls, attrs = self.data.get("class"), self.data.get("attrs")
        if cls is not None and (isinstance(cls, bool) or not isinstance(cls, (str, int)) or len(str(cls)) > 100):
            raise ApiError(422, "class must be a class name or index")
        ok = attrs is None or (isinstance(attrs, list) and len(attrs) <= LIMITS["max_attrs"])
        if not ok or not all(isinstance(a, str) and 0 < len(a) <= 100 and "," not in a for a in attrs or []):
            raise ApiError(422, 'attrs must be a list of attribute names that are on, e.g. ["Smiling"]')
        return (None if cls is None else str(cls)), attrs

    def psi(self) -> float:
        return self.number("psi", 1.0, LIMITS["psi_min"], LIMITS["psi_max"])


LABEL_FIELDS = {"psi", "class", "attrs"}
