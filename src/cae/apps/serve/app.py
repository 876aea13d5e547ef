"""`cae serve`: a local web page to colorize photos and look inside the autoencoders.

Starlette routes the requests and uvicorn serves them; every model call runs in a worker thread
(at most HEAVY_JOBS at once) so the page stays responsive while several people use it.
Uploads are bounded in bytes while they are read and in pixels before they are decoded; at most
QUEUE_LENGTH more wait for a job slot (beyond: 503), and the jobs in flight share one memory
budget (`jobs`). A POST from another origin is refused (403). A model, a report or a result is
named by an id from the server's own listing, never by a path; an error shown on the page
names no server path (the log has the full message).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import socket
from urllib.parse import urlsplit
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, Headers, MutableHeaders, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cae.apps.serve import guide, jobs
from cae.apps.serve.cards import card_answer
from cae.apps.serve.models import ModelCache, RunsIndex
from cae.apps.serve.samples import SampleGrid
from cae.apps.serve.store import MemoryBudget, ResultStore
from cae.core.photo import MAX_PIXELS, ImageTooLarge
from cae.errors import CaeError

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
HEAVY_JOBS = 2  # model calls at once; each already spreads over the cores with torch's threads
QUEUE_LENGTH = 8  # POSTs waiting for a job slot beyond the running ones; more are answered 503
RETRY_SECONDS = 10  # the Retry-After of a 503
MEMORY_BUDGET = MAX_PIXELS * jobs.CHROMA_BYTES_PER_PIXEL  # bytes the jobs in flight hold together
HINTS_BYTES = 2**20  # a Guide-mode request's JSON body (hints) at most
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")  # requests that change nothing and start no work
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")  # the latter: a grid pick, no file
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
# the page loads nothing from elsewhere; previews are data: URLs, the download is a route of its own
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")
# a report is self-contained: inline CSS and data: figures, nothing to run or fetch
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"
log = logging.getLogger("cae.serve")


class RequestError(Exception):
    """A refused request: its HTTP status and the message the page shows."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def create_app(runs_dir: str | Path | None = None, data_dir: str | Path | None = None,
               max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
               allowed_hosts: list[str] | None = None, queue_length: int = QUEUE_LENGTH,
               memory_budget: int = MEMORY_BUDGET, index: RunsIndex | None = None) -> Starlette:
    """The web app. `allowed_hosts` guards against DNS rebinding (default: loopback names only)."""
    # an absolute --runs: a path in a message is then always recognisable, and redacted
    index = index or RunsIndex(Path(runs_dir).resolve() if runs_dir else None)
    cfg = jobs.ServeConfig(index, ModelCache(), SampleGrid(data_dir), max_bytes, max_pixels,
                           ResultStore(), MemoryBudget(memory_budget))
    routes = [
        Route("/", index_page), Route("/api/models", api_models), Route("/api/samples", api_samples),
        Route("/api/colorize", api_colorize, methods=["POST"]),
        Route("/api/reconstruct", api_reconstruct, methods=["POST"]),
        Route("/api/result/{key}", api_result),
        Route("/api/guide/photo", api_guide_photo, methods=["POST"]),
        Route("/api/guide/{key}", api_guide_preview, methods=["POST"]),
        Route("/api/guide/{key}/suggest", api_guide_suggest, methods=["POST"]),
        Route("/api/guide/{key}/render", api_guide_render, methods=["POST"]),
        Route("/report", report), Route("/report/{name}", report),
        Route("/api/card", api_card),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS),
                  Middleware(SecurityHeaders), Middleware(SameOriginPosts)]
    handlers: dict[Any, Callable] = {RequestError: on_request_error, CaeError: on_user_error,
                                     HTTPException: on_http_error, Exception: on_bug}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=lifespan)
    app.state.cfg = cfg
    app.state.photos = guide.PhotoStore()  # the Guide mode's photos, bounded (`guide`)
    app.state.limiter = None  # set at startup: an anyio limiter belongs to the running event loop
    app.state.pending, app.state.max_pending = 0, HEAVY_JOBS + queue_length  # POSTs admitted, at most
    return app


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.limiter = anyio.CapacityLimiter(HEAVY_JOBS)
    try:
        yield
    finally:
        app.state.cfg.store.close()  # the full-resolution results on disk


@contextlib.asynccontextmanager
async def admitted(request: Request) -> AsyncIterator[None]:
    """A slot among the running and waiting jobs, or 503 when HEAVY_JOBS + queue_length are taken.

    The counter lives on the event loop (one thread), so it needs no lock. A refused request's
    body is read and dropped first: closing on a client still sending would reset its connection
    and lose the 503."""
    state = request.app.state
    if state.pending >= state.max_pending:
        await drain(request, state.cfg.max_bytes)
        raise RequestError(503, f"the server is busy ({state.pending} jobs running or waiting); retry in "
                                f"{RETRY_SECONDS} s", headers={"Retry-After": str(RETRY_SECONDS)})
    state.pending += 1
    try:
        yield
    finally:
        state.pending -= 1


async def drain(request: Request, max_bytes: int) -> None:
    """Read and drop a request's body, up to `max_bytes` (past that the connection may be cut)."""
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > max_bytes:
            break


async def run_heavy(request: Request, fn: Callable[..., dict], *args: Any) -> dict:
    """Run a model job in a worker thread, at most HEAVY_JOBS at a time (more would only share cores)."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=request.app.state.limiter)


async def index_page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html")


async def api_models(request: Request) -> Response:
    # scanning --runs reads files: off the event loop too
    return JSONResponse(await run_in_threadpool(jobs.models_answer, request.app.state.cfg))


async def api_samples(request: Request) -> Response:
    return JSONResponse(await run_heavy(request, jobs.samples_answer, request.app.state.cfg))


async def api_colorize(request: Request) -> Response:
    cfg: jobs.ServeConfig = request.app.state.cfg
    async with admitted(request):
        form = await read_form(request, cfg.max_bytes)
        try:  # the upload stays in the form's spool file until the job reads it
            model_id = text_field(form, "model")
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise RequestError(400, "no photo in the request; choose or drop an image file")
            answer = await run_heavy(request, jobs.colorize_answer, cfg, model_id, upload.file, upload.filename or "")
        finally:
            await form.close()
    return JSONResponse(answer)


async def api_reconstruct(request: Request) -> Response:
    cfg: jobs.ServeConfig = request.app.state.cfg
    async with admitted(request):
        form = await read_form(request, cfg.max_bytes)
        try:
            model_id = text_field(form, "model")
            position = form.get("sample")  # a grid position, or a photo in 'file'
            upload = form.get("file")
            file, name = (upload.file, upload.filename or "") if isinstance(upload, UploadFile) else (None, "")
            answer = await run_heavy(request, jobs.reconstruct_answer, cfg, model_id,
                                     position if isinstance(position, str) else None, file, name)
        finally:
            await form.close()
    return JSONResponse(answer)


async def api_result(request: Request) -> Response:
    """A full-resolution result, by the id its colorize answer gave; gone after the store's bounds."""
    stored = request.app.state.cfg.store.get(request.path_params["key"])
    if stored is None:
        raise RequestError(404, "no such result (results are kept for an hour); colorize the photo again")
    return FileResponse(stored.path, media_type="image/png", filename=stored.filename)


async def api_guide_photo(request: Request) -> Response:
    """Keep a photo for the Guide mode: its id, sizes and the preview without hints."""
    cfg: jobs.ServeConfig = request.app.state.cfg
    async with admitted(request):
        form = await read_form(request, cfg.max_bytes)
        try:
            model_id = text_field(form, "model")
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise RequestError(400, "no photo in the request; choose or drop an image file")
            data = await upload.read()
            answer = await run_heavy(request, guide.upload_answer, cfg, request.app.state.photos, model_id, data,
                                     upload.filename or "")
        finally:
            await form.close()
    return JSONResponse(answer)


async def guide_job(request: Request, fn: Callable[..., dict]) -> Response:
    """A Guide-mode job on a kept photo with the JSON body (hints), in a job slot."""
    async with admitted(request):
        body = guide.hints_json(await read_json(request, HINTS_BYTES))
        answer = await run_heavy(request, fn, request.app.state.cfg, request.app.state.photos,
                                 request.path_params["key"], body)
    return JSONResponse(answer)


async def api_guide_preview(request: Request) -> Response:
    return await guide_job(request, guide.preview_answer)


async def api_guide_suggest(request: Request) -> Response:
    return await guide_job(request, guide.suggest_answer)


async def api_guide_render(request: Request) -> Response:
    return await guide_job(request, guide.render_answer)


async def read_json(request: Request, max_bytes: int) -> bytes:
    """A JSON request's body, refused with 413 past `max_bytes` (while it is read)."""
    too_large = RequestError(413, f"the request is larger than the limit of {size_text(max_bytes)}")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        await drain(request, max_bytes)
        raise too_large
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return body


async def api_card(request: Request) -> Response:
    """The model card of ?model=ID (an id of the page's selects), rendered for the page's panel."""
    return JSONResponse(await run_in_threadpool(card_answer, request.query_params.get("model", "")))


async def report(request: Request) -> Response:
    """A listed report.html, read-only; the name is looked up in the listing, not joined to a path."""
    cfg: jobs.ServeConfig = request.app.state.cfg
    reports = await run_in_threadpool(cfg.index.reports)
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


class SameOriginPosts:
    """Refuses (403) a state-changing request (not GET/HEAD/OPTIONS) whose `Origin` is not the
    server itself, so a web page the user visits cannot make the local server run jobs. A request
    without `Origin` (curl, scripts, the CLI) passes: browsers always send it with such requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not same_origin(origin, scope["scheme"], headers.get("host", "")):
                response = error_response(403, "refused: a request from another web site (Origin "
                                               f"{origin[:100]}); use the page this server serves")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def same_origin(origin: str, scheme: str, host: str) -> bool:
    """Whether `origin` (scheme://host[:port]) is the server as the request addressed it (`Host`)."""
    default = {"http": 80, "https": 443}
    try:
        o, h = urlsplit(origin), urlsplit(f"{scheme}://{host}")
        return (o.scheme == scheme and o.hostname is not None and o.hostname == h.hostname
                and (o.port or default.get(o.scheme)) == (h.port or default.get(scheme))
                and not o.path and not o.query and not o.username)
    except ValueError:  # a malformed port or bracket
        return False


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def on_request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return error_response(exc.status, exc.message, exc.headers)


async def on_user_error(request: Request, exc: Exception) -> Response:
    # a model's or the data's message may name server files: the page gets it without them
    status = 413 if isinstance(exc, ImageTooLarge) else 404 if isinstance(exc, guide.UnknownPhoto) else 400
    return error_response(status, jobs.public_text(str(exc)))


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


@contextlib.contextmanager
def running(app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """`app` served by uvicorn in a thread of this process (port 0: one the OS picks); yields its
    base URL and stops it on exit. For scripts and tests that drive the page in a browser."""
    import threading
    import time

    import uvicorn

    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        if not server.started:
            raise CaeError("the web server did not start within 30 s")
        name = f"[{host.strip('[]')}]" if ":" in host else host
        yield f"http://{name}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


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
