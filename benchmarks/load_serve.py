"""Load test of `cae serve`: N colorize requests of a real photo from C concurrent clients, then
B clients each sending one big photo (48 megapixels) at the same time.

Starts `cae serve --port 0` in a subprocess (or targets --url, loopback only), sends one
warm-up request (the first loads the model), then the timed ones; prints the answers' status
counts (200, and the documented refusals 413 and 503; anything else is a failure), latency
percentiles, throughput and the server process's peak RSS (VmHWM) after each phase. Each big
photo's full-resolution download is fetched and its size checked. The big JPEG is made with
Pillow (the Kodak photo upscaled) in a temporary folder, and removed. Bounded: every request
has a timeout, the whole run a deadline, the counts a cap.

    python benchmarks/load_serve.py [--requests 100] [--clients 4] [--big 4] [--big-size 8000x6000]
                                    [--photo kodim23.png] [--url URL --pid PID]
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PHOTO = REPO.parent / "shared" / "datasets" / "kodak-dev" / "kodim23.png"
MODEL = "shipped/colorizer"
DOCUMENTED = (200, 413, 503)  # served, too large, busy: every other answer is a failure


def multipart(photo: Path, model: str) -> tuple[bytes, str]:
    """The request body (model field + photo file) and its content type."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{photo.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def check_loopback(url: str) -> tuple[str, int]:
    """(host, port) of `url`; anything but a loopback address is refused."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    loopback = host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)
    if not loopback:
        raise SystemExit(f"refusing {url}: this load test only targets loopback addresses")
    return host, parts.port or 80


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def start_server(deadline: float) -> tuple[subprocess.Popen, str]:
    """`cae serve --port 0` in a subprocess, and the URL it printed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cae", "serve", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "http://" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
            return proc, line.split("http://", 1)[1].split()[0].rstrip("/")
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("cae serve did not start")


@dataclass
class Answer:
    """One colorize request as the client saw it."""

    status: int  # HTTP status, 0 when the connection failed
    seconds: float
    why: str = ""  # for a failure
    size: tuple[int, int] | None = None  # the downloaded full-resolution PNG's size, when fetched
    answer_bytes: int = 0  # the JSON answer's length


def post(host: str, port: int, body: bytes, content_type: str, timeout: float, download: bool = False) -> Answer:
    """One colorize request (and, with `download`, the fetch of its full-resolution PNG)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/api/colorize", body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        data = response.read()
        answer = json.loads(data)
        if response.status != 200:
            why = "" if response.status in DOCUMENTED else f"HTTP {response.status}: {data[:200]!r}"
            return Answer(response.status, time.perf_counter() - t0, why, answer_bytes=len(data))
        if "result" not in answer:
            return Answer(0, time.perf_counter() - t0, f"no result in {data[:200]!r}")
        size = fetch_png_size(conn, answer["download"]) if download else None
        return Answer(200, time.perf_counter() - t0, size=size, answer_bytes=len(data))
    except (OSError, ValueError, http.client.HTTPException) as e:
        return Answer(0, time.perf_counter() - t0, f"{type(e).__name__}: {e}")
    finally:
        conn.close()


def fetch_png_size(conn: http.client.HTTPConnection, route: str) -> tuple[int, int]:
    """(width, height) of the PNG at `route`, from its header; the body is read through and dropped."""
    conn.request("GET", route)
    response = conn.getresponse()
    head = response.read(24)
    while response.read(1 << 20):
        pass
    if response.status != 200 or head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"download {route}: HTTP {response.status}, not a PNG")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def make_big_jpeg(photo: Path, size: tuple[int, int], folder: Path) -> Path:
    """The photo upscaled (bicubic) to `size` and saved as a JPEG (quality 90) in `folder`."""
    from PIL import Image

    path = folder / f"big-{size[0]}x{size[1]}.jpg"
    with Image.open(photo) as img:
        img.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(path, quality=90)
    return path


def probe_page(host: str, port: int, stop: threading.Event, out: list[float]) -> None:
    """GET /api/models every 0.5 s while the load runs: answered quickly = the event loop is free."""
    while not stop.wait(0.5):
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.request("GET", "/api/models")
            if conn.getresponse().status == 200:
                out.append(time.perf_counter() - t0)
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))] if s else float("nan")


def peak_rss_mb(pid: int | None) -> float | None:
    """VmHWM (peak resident set) of a process, from /proc (Linux)."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_summary() -> str:
    """lscpu's model name and which of avx512f / avx512_bf16 / amx_* the CPU flags list."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown CPU"
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = set(info.get("Flags", "").split())
    has = {f: f in flags for f in ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")}
    return f"{info.get('Model name', '?').strip()}; " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in has.items())


@dataclass
class LoadResult:
    """What one timed phase measured."""

    answers: list[Answer] = field(default_factory=list)
    probes: list[float] = field(default_factory=list)  # seconds, GET /api/models meanwhile
    wall: float = 0.0

    @property
    def latencies(self) -> list[float]:
        return [a.seconds for a in self.answers if a.status == 200]

    @property
    def failures(self) -> list[str]:
        return [a.why for a in self.answers if a.why]


def run_load(host: str, port: int, body: bytes, content_type: str, requests: int, clients: int,
             args: argparse.Namespace, deadline: float, download: bool = False) -> LoadResult:
    """Send `requests` from `clients` threads while probing the page's responsiveness."""
    result = LoadResult()
    lock = threading.Lock()

    def one(_: int) -> None:
        answer = Answer(0, 0.0, "skipped: the run's deadline passed") if time.monotonic() > deadline else \
            post(host, port, body, content_type, args.timeout, download)
        with lock:
            result.answers.append(answer)

    stop = threading.Event()
    prober = threading.Thread(target=probe_page, args=(host, port, stop, result.probes), daemon=True)
    prober.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(requests)))
    result.wall = time.perf_counter() - t0
    stop.set()
    prober.join(timeout=35)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    p.add_argument("--big", type=int, default=4, help="clients each sending one big photo at once (0: none)")
    p.add_argument("--big-size", default="8000x6000", help="the big photo's WIDTHxHEIGHT")
    p.add_argument("--url", help="a running server (loopback only); default: start one")
    p.add_argument("--pid", type=int, help="with --url: the server's pid, for its peak RSS")
    p.add_argument("--timeout", type=float, default=900, help="seconds per request")
    p.add_argument("--max-seconds", type=float, default=2400, help="deadline of the whole run")
    args = p.parse_args()
    args.requests, args.clients = min(args.requests, 1000), max(1, min(args.clients, 16))  # stay bounded
    args.big = max(0, min(args.big, 16))
    if not args.photo.is_file():
        raise SystemExit(f"no photo at {args.photo}; pass --photo")
    deadline = time.monotonic() + args.max_seconds
    proc, url = (None, args.url) if args.url else start_server(deadline)
    pid = args.pid if args.url else proc.pid
    try:
        return report(url, pid, args, deadline)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def report(url: str, pid: int | None, args: argparse.Namespace, deadline: float) -> int:
    host, port = check_loopback(url if "://" in url else f"http://{url}")
    body, content_type = multipart(args.photo, MODEL)
    warm = post(host, port, body, content_type, args.timeout)  # loads the model
    if warm.status != 200:
        raise SystemExit(f"warm-up request failed: HTTP {warm.status} {warm.why}")
    print(f"server      {url} (pid {pid})\ncpu         {cpu_summary()}")
    print(f"warm-up     {warm.seconds:.2f} s (first request: loads the model); "
          f"peak RSS {peak_rss_mb(pid) or float('nan'):.0f} MB")
    r = run_load(host, port, body, content_type, args.requests, args.clients, args, deadline)
    print_phase(f"{args.photo.name} ({len(body) / 1e6:.2f} MB request)", r, args.clients, pid)
    results = [r]
    if args.big:
        w, h = (int(v) for v in args.big_size.lower().split("x"))
        with tempfile.TemporaryDirectory(prefix="cae-load-") as tmp:
            big = make_big_jpeg(args.photo, (w, h), Path(tmp))
            big_body, big_type = multipart(big, MODEL)
        rb = run_load(host, port, big_body, big_type, args.big, args.big, args, deadline, download=True)
        print_phase(f"{big.name} ({w * h / 1e6:.0f} megapixels, {len(big_body) / 1e6:.2f} MB request)", rb, args.big,
                    pid)
        sizes = Counter(a.size for a in rb.answers if a.status == 200)
        print(f"downloads   {dict(sizes)} (full-resolution PNG sizes); JSON answers "
              f"{max((a.answer_bytes for a in rb.answers), default=0) / 1e6:.2f} MB at most")
        results.append(rb)
        if any(a.size != (w, h) for a in rb.answers if a.status == 200):
            print("failure     a download is not the photo's full size")
            return 1
    return 1 if any(x.failures for x in results) else 0


def print_phase(what: str, r: LoadResult, clients: int, pid: int | None) -> None:
    """One phase's status counts, latencies, page probes and the server's peak RSS so far."""
    statuses = Counter(a.status for a in r.answers)
    print(f"\nphase       {len(r.answers)} x {what} from {clients} concurrent clients in {r.wall:.1f} s "
          f"({len(r.latencies) / r.wall:.2f} answers 200/s)")
    print(f"statuses    {dict(sorted(statuses.items()))} (0 = no HTTP answer)")
    print(f"failures    {len(r.failures)}" + (f" (first: {r.failures[0]})" if r.failures else "")
          + " (anything but 200, 413, 503)")
    print(f"latency     p50 {percentile(r.latencies, 0.5):.2f} s, p95 {percentile(r.latencies, 0.95):.2f} s, "
          f"max {max(r.latencies, default=float('nan')):.2f} s")
    print(f"page list   GET /api/models during the load: p50 {percentile(r.probes, 0.5) * 1000:.0f} ms, "
          f"max {max(r.probes, default=float('nan')) * 1000:.0f} ms ({len(r.probes)} probes)")
    rss = peak_rss_mb(pid)
    print(f"peak RSS    {rss:.0f} MB (server process VmHWM, since it started)" if rss else
          "peak RSS    unknown (pass --pid)")


if __name__ == "__main__":
    raise SystemExit(main())
