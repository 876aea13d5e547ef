"""`cae serve`: a local web page to colorize photos and look inside the autoencoders.

Starlette routes the requests and uvicorn serves them; every model call runs in a worker thread
(at most HEAVY_JOBS at once) so the page stays responsive while several people use it.
Uploads are bounded in bytes while they are read and in pixels before they are decoded; a model
or a report is named by an id from the server's own listing, never by a path.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, MutableHeaders, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cae.apps.serve import jobs
from cae.apps.serve.cards import card_answer
from cae.core.photo import MAX_PIXELS, ImageTooLarge
from cae.apps.serve.models import ModelCache
from cae.apps.serve.results import find_reports
from cae.apps.serve.samples import SampleGrid
from cae.errors import CaeError

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
HEAVY_JOBS = 2  # model calls at once; each already spreads over the cores with torch's threads
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")  # the latter: a grid pick, no file
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
# the page loads nothing from elsewhere; result images are data:/blob: URLs
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")
# a report is self-contained: inline CSS and data: figures, nothing to run or fetch
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"
log = logging.getLogger("cae.serve")


class RequestError(Exception):
    """A refused request: its HTTP status and the message the page shows."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(runs_dir: str | Path | None = None, data_dir: str | Path | None = None,
               max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
               allowed_hosts: list[str] | None = None) -> Starlette:
    """The web app. `allowed_hosts` guards against DNS rebinding (default: loopback names only)."""
    cfg = jobs.ServeConfig(Path(runs_dir) if runs_dir else None, ModelCache(), SampleGrid(data_dir),
                           max_bytes, max_pixels)
    routes = [
        Route("/", index), Route("/api/models", api_models), Route("/api/samples", api_samples),
        Route("/api/colorize", api_colorize, methods=["POST"]),
        Route("/api/reconstruct", api_reconstruct, methods=["POST"]),
        Route("/report", report), Route("/report/{name}", report),
        Route("/api/card", api_card),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS),
                  Middleware(SecurityHeaders)]
    handlers: dict[Any, Callable] = {RequestError: on_request_error, CaeError: on_user_error,
                                     HTTPException: on_http_error, Exception: on_bug}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=lifespan)
    app.state.cfg = cfg
    app.state.limiter = None  # set at startup: an anyio limiter belongs to the running event loop
    return app


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.limiter = anyio.CapacityLimiter(HEAVY_JOBS)
    yield


async def run_heavy(request: Request, fn: Callable[..., dict], *args: Any) -> dict:
    """Run a model job in a worker thread, at most HEAVY_JOBS at a time (more would only share cores)."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=request.app.state.limiter)


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html")


async def api_models(request: Request) -> Response:
    # scanning --runs reads files: off the event loop too
    return JSONResponse(await run_in_threadpool(jobs.models_answer, request.app.state.cfg))


async def api_samples(request: Request) -> Response:
    return JSONResponse(await run_heavy(request, jobs.samples_answer, request.app.state.cfg))


async def api_colorize(request: Request) -> Response:
    cfg: jobs.ServeConfig = request.app.state.cfg
    form = await read_form(request, cfg.max_bytes)
    try:
        model_id = text_field(form, "model")
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise RequestError(400, "no photo in the request; choose or drop an image file")
        data, name = await upload.read(), upload.filename or ""
    finally:
        await form.close()
    return JSONResponse(await run_heavy(request, jobs.colorize_answer, cfg, model_id, data, name))


async def api_reconstruct(request: Request) -> Response:
    cfg: jobs.ServeConfig = request.app.state.cfg
    form = await read_form(request, cfg.max_bytes)
    try:
        model_id = text_field(form, "model")
        position = form.get("sample")  # a grid position, or a photo in 'file'
        upload = form.get("file")
        data, name = (await upload.read(), upload.filename or "") if isinstance(upload, UploadFile) else (None, "")
    finally:
        await form.close()
    answer = await run_heavy(request, jobs.reconstruct_answer, cfg, model_id,
                             position if isinstance(position, str) else None, data, name)
    return JSONResponse(answer)


async def api_card(request: Request) -> Response:
    """The model card of ?model=ID (an id of the page's selects), rendered for the page's panel."""
    return JSONResponse(await run_in_threadpool(card_answer, request.query_params.get("model", "")))


async def report(request: Request) -> Response:
    """A listed report.html, read-only; the name is looked up in the listing, not joined to a path."""
    cfg: jobs.ServeConfig = request.app.state.cfg
    reports = await run_in_threadpool(find_reports, cfg.runs_dir)
    path = reports.get(request.path_params.get("name", ""))
    if path is None:
        raise RequestError(404, "no such report; finished `cae reproduce` reports are listed on the Results tab")
    return FileResponse(path, media_type="text/html")


def text_field(form: FormData, name: str) -> str:
    value = form.get(name)
    if not isinstance(value, str) or not value:
        raise RequestError(400, f"the request lacks the field {name!r}")
    return value


class UploadTooLarge(Exception):
    """Raised by the receive wrapper of `read_form` once the body passes the byte limit."""


async def read_form(request: Request, max_bytes: int) -> FormData:
    """The multipart form, refused with 413 as soon as the body passes `max_bytes` (not after)."""
    too_large = RequestError(413, f"the upload is larger than the limit of {size_text(max_bytes)}")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise too_large
    if not request.headers.get("content-type", "").startswith(FORM_TYPES):
        raise RequestError(400, "send a form: multipart/form-data with the photo in field 'file'")
    bounded = Request(request.scope, bounded_receive(request.receive, max_bytes))
    try:
        return await bounded.form(max_files=1, max_fields=4)
    except UploadTooLarge:
        raise too_large from None


def size_text(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n:,} bytes"


def bounded_receive(receive: Receive, max_bytes: int) -> Callable[[], Awaitable[Message]]:
    """`receive` that counts body bytes and raises UploadTooLarge past `max_bytes`."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                raise UploadTooLarge
        return message

    return counted


class SecurityHeaders:
    """Adds a Content-Security-Policy (no outside content) and nosniff to every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = REPORT_CSP if scope["path"].startswith("/report") else PAGE_CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = csp
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def on_request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return error_response(exc.status, exc.message)


async def on_user_error(request: Request, exc: Exception) -> Response:
    return error_response(413 if isinstance(exc, ImageTooLarge) else 400, str(exc))


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail))


async def on_bug(request: Request, exc: Exception) -> Response:
    log.exception("request %s failed", request.url.path, exc_info=exc)
    return error_response(500, f"internal error ({type(exc).__name__}); the server keeps running")


def allowed_hosts_for(host: str) -> list[str]:
    """Host names a request may carry: loopback ones, or any when bound to every interface."""
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    return LOOPBACK_HOSTS if host in LOOPBACK_HOSTS or host == "::1" else [*LOOPBACK_HOSTS, host]


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a one-line CaeError (port taken, unknown address)."""
    try:
        return socket.create_server((host.strip("[]"), port), family=_family(host), reuse_port=False)
    except OSError as e:
        why = (e.strerror or str(e)).split(" (while attempting")[0]  # create_server's suffix repeats the address
        raise CaeError(f"cannot listen on {host}:{port} ({why}); pick another --port or --host") from None


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve(host: str = "127.0.0.1", port: int = 8000, runs_dir: str | Path | None = None) -> None:
    """Serve the page until Ctrl-C. `port` 0 picks a free port (the URL line says which)."""
    import uvicorn

    if runs_dir is not None and not Path(runs_dir).is_dir():
        raise CaeError(f"--runs {runs_dir}: no such folder; pass the folder holding your run folders")
    sock = bind(host, port)
    app = create_app(runs_dir, allowed_hosts=allowed_hosts_for(host))
    if not is_loopback(host):
        print(f"cae serve: warning: listening on {host}, reachable from other machines; uploads are not "
              "authenticated", flush=True)
    shown = f"[{host}]" if ":" in host else host
    print(f"cae serve: open http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
