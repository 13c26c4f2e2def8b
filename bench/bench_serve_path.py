"""The serving path alone: ka-exporter's HTTP server against the C reference serving the same bytes.

No keepalived, no sources, no render: each server holds one already rendered body and answers every
request with it, so what is measured is the bytes out (accept, read the request, write the headers
and the body, close). Servers, each its own process, all on 127.0.0.1:
  - "ka-exporter": ka_exporter.outputs.http.HttpServer with an App whose `cached` returns the body
    (the path of a scrape of a state already rendered: answered on the HTTP loop itself);
  - "ka (render)": the same server, `cached` always missing, `render` returning the body: the hand-off
    to a render thread and back, what a scrape of a moved state pays on top of its render;
  - "baseline" (with --baseline REV): REV's ka_exporter.outputs.http, as "ka-exporter";
  - "C reference": bench/refserver.c built with gcc -O2 (as bench_scrape_cost);
  - "py blocking": a bare blocking Python socket loop (accept, recv, sendall, close): Python's floor.
One client (raw socket: connect, one GET, read to the Content-Length, close; a fresh connection per
request, as bench_scrape_cost) asks them in rotation, so the machine's noise falls on all alike. The
latency is from connect to the body's last byte, in µs; CPU per request is the server process's time
on a CPU (all threads, schedstat, ns) over the requests, divided by their number.

Run: .venv/bin/python bench/bench_serve_path.py [--requests N] [--kib 8,256] [--baseline REV] [--quiet]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import common
from bench_scrape_cost import build_reference, exported_tree
from common import Process, Target

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n"
DEFAULT_REQUESTS = 2000


def make_body(kib: int) -> bytes:
    """About `kib` KiB of exposition text, keepalived-like series."""
    lines = [
        "# HELP keepalived_vrrp_state State of the VRRP instance (0 INIT, 1 BACKUP, 2 MASTER, 3 FAULT).",
        "# TYPE keepalived_vrrp_state gauge",
    ]
    size, k = sum(len(x) + 1 for x in lines), 0
    while size < kib * 1024:
        line = f'keepalived_vrrp_state{{iname="VI_{k}",intf="eth{k // 255}",vrid="{k % 255 + 1}"}} 2.0'
        lines.append(line)
        size += len(line) + 1
        k += 1
    return ("\n".join(lines) + "\n").encode()


# -- the servers (each run as `bench_serve_path.py serve MODE FILE PORT`) ------------------------------


def serve(mode: str, body_file: str, port: int) -> int:
    body = Path(body_file).read_bytes()
    stop = threading.Event()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if mode == "floor":
        return serve_blocking(body, port)
    from ka_exporter.outputs.http import App, HttpServer

    answer = (body, CONTENT_TYPE, None)

    def render(_accept: str, _encoding: str) -> tuple[bytes, str, str | None]:
        return answer

    def cached(_accept: str, _encoding: str) -> tuple[bytes, str, str | None] | None:
        return answer if mode == "ka" else None

    server = HttpServer("127.0.0.1", port, App(render=render, cached=cached))
    server.start()
    print(f"serving {len(body)} bytes on {port} ({mode})", flush=True)
    stop.wait()
    server.stop()
    return 0


def serve_blocking(body: bytes, port: int) -> int:
    """Python's floor: one connection at a time, one request each, headers and body in one sendall."""
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    answer = head + body
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(128)
    print(f"serving {len(body)} bytes on {port} (floor)", flush=True)
    while True:
        conn, _ = srv.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            got = b""
            while b"\r\n\r\n" not in got:
                chunk = conn.recv(8192)
                if not chunk:
                    break
                got += chunk
            if got:
                conn.sendall(answer)


# -- the client ------------------------------------------------------------------------------------------


def fetch(port: int) -> tuple[bytes, float]:
    """One GET on a fresh connection: (body, seconds from connect to its last byte)."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(REQUEST)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(262144)
            if not chunk:
                raise RuntimeError(f"closed before a response: {data[:200]!r}")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"not a 200: {head[:200]!r}")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        parts = [body]
        got = len(body)
        while got < length:
            chunk = s.recv(262144)
            if not chunk:
                raise RuntimeError("closed in the middle of a body")
            parts.append(chunk)
            got += len(chunk)
    return b"".join(parts), time.perf_counter() - t0


def cpu_ns(pid: int) -> float:
    return sum(common.thread_runtime(pid).values())


def wait_port(port: int, proc: Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.argv[:5]} exited:\n{proc.logs()[-2000:]}")
        with contextlib.suppress(OSError, RuntimeError):
            fetch(port)
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.argv[:5]} did not answer on {port}:\n{proc.logs()[-2000:]}")


@contextlib.contextmanager
def servers(
    body: bytes, workdir: Path, ref: Path, baseline: Path | None
) -> Iterator[dict[str, tuple[Process, int]]]:
    body_file = workdir / f"body-{len(body)}.prom"
    body_file.write_bytes(body)
    me = [sys.executable, str(Path(__file__).resolve()), "serve"]
    specs: list[tuple[str, list[str], dict[str, str] | None]] = [
        ("ka-exporter", [*me, "ka"], None),
        ("ka (render)", [*me, "ka-render"], None),
    ]
    if baseline is not None:
        # REV's ka_exporter first on the path (before this tree's editable install).
        env = {**os.environ, "PYTHONPATH": str(baseline)}
        specs.append(("baseline", [*me, "ka"], env))
    specs += [("C reference", [str(ref)], None), ("py blocking", [*me, "floor"], None)]
    with contextlib.ExitStack() as stack:
        out: dict[str, tuple[Process, int]] = {}
        for name, argv, env in specs:
            port = common.free_port()
            args = (
                [*argv, str(port), str(body_file)]
                if name == "C reference"
                else [*argv, str(body_file), str(port)]
            )
            log = workdir / f"{name.replace(' ', '_').strip('()')}-{len(body)}.log"
            proc = stack.enter_context(Process(args, log, env=env))
            wait_port(port, proc)
            if fetch(port)[0] != body:
                raise RuntimeError(f"{name} does not serve the bytes")
            out[name] = (proc, port)
        yield out


def measure(body: bytes, requests: int, workdir: Path, ref: Path, baseline: Path | None) -> dict[str, Any]:
    with servers(body, workdir, ref, baseline) as targets:
        names = list(targets)
        for _ in range(20):  # warm up
            for _proc, port in targets.values():
                fetch(port)
        lat: dict[str, list[float]] = {k: [] for k in names}
        cpu: dict[str, float] = dict.fromkeys(names, 0.0)
        for i in range(requests):
            first = i % len(names)
            for k in names[first:] + names[:first]:
                proc, port = targets[k]
                c0 = cpu_ns(proc.pid)
                got, seconds = fetch(port)
                cpu[k] += cpu_ns(proc.pid) - c0
                if len(got) != len(body):
                    raise RuntimeError(f"{k}: {len(got)} bytes, not {len(body)}")
                lat[k].append(seconds * 1e6)
    return {
        k: {
            "median_us": round(common.median(lat[k]), 1),
            "p90_us": round(common.percentile(lat[k], 90), 1),
            "p99_us": round(common.percentile(lat[k], 99), 1),
            "cpu_us_per_request": round(cpu[k] * 1e6 / requests, 1),
        }
        for k in names
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="requests per server and size")
    ap.add_argument("--kib", default="8,256", help="body sizes in KiB, comma-separated")
    ap.add_argument("--baseline", metavar="REV", help="also serve with REV's ka_exporter (git rev)")
    ap.add_argument("--quiet", action="store_true", help="only the table and the RESULT line")
    args = ap.parse_args()
    common.exit_on_sigterm()
    sizes = [int(s) for s in args.kib.split(",")]
    rows: dict[int, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="ka-bench-serve-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        ref = build_reference(workdir)
        baseline = stack.enter_context(exported_tree(args.baseline)) if args.baseline else None
        for kib in sizes:
            body = make_body(kib)
            rows[kib] = measure(body, args.requests, workdir, ref, baseline)
            if not args.quiet:
                print(f"  ({kib} KiB: {args.requests} requests per server)", flush=True)
    print(f"the serving path: one client, a fresh connection per request; load {common.load():.2f}")
    print(f"{'KiB':>5} {'server':<12} {'median µs':>10} {'p90 µs':>9} {'p99 µs':>9} {'cpu µs/req':>10}")
    targets: list[Target] = []
    for kib, row in rows.items():
        for name, f in row.items():
            print(
                f"{kib:>5} {name:<12} {f['median_us']:>10.1f} {f['p90_us']:>9.1f} {f['p99_us']:>9.1f} "
                f"{f['cpu_us_per_request']:>10.1f}"
            )
        ka, c = row["ka-exporter"], row["C reference"]
        print(
            f"{'':>5} ka-exporter / C: median {ka['median_us'] / c['median_us']:.2f}x, cpu "
            f"{ka['cpu_us_per_request'] / max(c['cpu_us_per_request'], 1e-9):.2f}x"
            + (
                f"; / baseline {Path(args.baseline).name}: median "
                f"{ka['median_us'] / row['baseline']['median_us']:.2f}x, cpu "
                f"{ka['cpu_us_per_request'] / max(row['baseline']['cpu_us_per_request'], 1e-9):.2f}x"
                if "baseline" in row
                else ""
            )
        )
        targets.append(Target(f"{kib} KiB: median µs <= 2x C", ka["median_us"], "<=", 2 * c["median_us"]))
    common.result("serve_path", {"rows": rows, "requests": args.requests, "baseline": args.baseline}, targets)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        sys.exit(serve(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    sys.exit(main())
