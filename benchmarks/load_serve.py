"""Load test of `cae serve`: N colorize requests of a real photo from C concurrent clients.

Starts `cae serve --port 0` in a subprocess (or targets --url, loopback only), sends one
warm-up request (the first loads the model), then the timed ones; prints failures, latency
percentiles, throughput and the server process's peak RSS (VmHWM). Bounded: every request has
a timeout and the whole run a deadline.

    python benchmarks/load_serve.py [--requests 100] [--clients 4] [--photo kodim23.png] [--url URL]
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PHOTO = REPO.parent / "shared" / "datasets" / "kodak-dev" / "kodim23.png"
MODEL = "shipped/colorizer"


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


def post(host: str, port: int, body: bytes, content_type: str, timeout: float) -> tuple[bool, float, str]:
    """One colorize request: (ok, seconds, why not)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/api/colorize", body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        data = response.read()
        ok = response.status == 200 and "result" in json.loads(data)
        return ok, time.perf_counter() - t0, "" if ok else f"HTTP {response.status}: {data[:200]!r}"
    except (OSError, ValueError, http.client.HTTPException) as e:
        return False, time.perf_counter() - t0, f"{type(e).__name__}: {e}"
    finally:
        conn.close()


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
    """What the timed part measured."""

    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    failures: list[str] = field(default_factory=list)
    probes: list[float] = field(default_factory=list)  # seconds, GET /api/models meanwhile
    wall: float = 0.0


def run_load(host: str, port: int, body: bytes, content_type: str, args: argparse.Namespace,
             deadline: float) -> LoadResult:
    """Send the timed requests from `args.clients` threads while probing the page's responsiveness."""
    result = LoadResult()
    latencies, failures = result.latencies, result.failures
    lock = threading.Lock()

    def one(_: int) -> None:
        if time.monotonic() > deadline:
            with lock:
                failures.append("skipped: the run's deadline passed")
            return
        ok, seconds, why = post(host, port, body, content_type, args.timeout)
        with lock:
            if ok:
                latencies.append(seconds)
            else:
                failures.append(why)

    stop = threading.Event()
    prober = threading.Thread(target=probe_page, args=(host, port, stop, result.probes), daemon=True)
    prober.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        list(pool.map(one, range(args.requests)))
    result.wall = time.perf_counter() - t0
    stop.set()
    prober.join(timeout=35)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    p.add_argument("--url", help="a running server (loopback only); default: start one")
    p.add_argument("--pid", type=int, help="with --url: the server's pid, for its peak RSS")
    p.add_argument("--timeout", type=float, default=120, help="seconds per request")
    p.add_argument("--max-seconds", type=float, default=1200, help="deadline of the whole run")
    args = p.parse_args()
    args.requests, args.clients = min(args.requests, 1000), max(1, min(args.clients, 16))  # stay bounded
    deadline = time.monotonic() + args.max_seconds
    proc, url = (None, args.url) if args.url else start_server(deadline)
    pid = args.pid if args.url else proc.pid
    try:
        return report(url, pid, args, deadline)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


def report(url: str, pid: int | None, args: argparse.Namespace, deadline: float) -> int:
    host, port = check_loopback(url if "://" in url else f"http://{url}")
    body, content_type = multipart(args.photo, MODEL)
    ok, warm, why = post(host, port, body, content_type, args.timeout)  # loads the model
    if not ok:
        raise SystemExit(f"warm-up request failed: {why}")
    r = run_load(host, port, body, content_type, args, deadline)
    rss = peak_rss_mb(pid)
    print(f"server      {url} (pid {pid})\ncpu         {cpu_summary()}")
    print(f"photo       {args.photo.name} ({len(body) / 1e6:.2f} MB request)")
    print(f"warm-up     {warm:.2f} s (first request: loads the model)")
    print(f"requests    {args.requests} from {args.clients} concurrent clients in {r.wall:.1f} s "
          f"({len(r.latencies) / r.wall:.2f} req/s)")
    print(f"failures    {len(r.failures)}" + (f" (first: {r.failures[0]})" if r.failures else ""))
    print(f"latency     p50 {percentile(r.latencies, 0.5):.2f} s, p95 {percentile(r.latencies, 0.95):.2f} s, "
          f"max {max(r.latencies, default=float('nan')):.2f} s")
    print(f"page list   GET /api/models during the load: p50 {percentile(r.probes, 0.5) * 1000:.0f} ms, "
          f"max {max(r.probes, default=float('nan')) * 1000:.0f} ms ({len(r.probes)} probes)")
    print(f"peak RSS    {rss:.0f} MB (server process VmHWM)" if rss else "peak RSS    unknown (pass --pid)")
    return 1 if r.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
