"""Hostile clients for the serving tests and bench: slowloris and idle connections, held and renewed.

    python -m tests.attackers --port P [--host 127.0.0.1] --slowloris 300 --idle 1500 [--tls]

- idle: connects and sends nothing; when the server drops it, connects again.
- slowloris: (TLS handshake if --tls, then) a request line and one more header byte every second,
  never the blank line that ends the headers; when the server drops it, connects again.

Prints one JSON line `{"ready": true, ...}` once every connection is open, then one JSON line of
counts (connects, drops by the server, failures) when SIGTERM or SIGINT arrives. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Any

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Attack:
    def __init__(self, host: str, port: int, tls: bool, delay: float, trickle: float) -> None:
        self.host = host
        self.port = port
        self.delay = delay
        self.trickle = trickle
        self.ctx: ssl.SSLContext | None = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.ctx.check_hostname = False
            self.ctx.verify_mode = ssl.CERT_NONE
        self.stats: dict[str, int] = {
            "open": 0,
            "max_open": 0,
            "connects": 0,
            "dropped_by_server": 0,
            "connect_failed": 0,
        }

    async def _hold(
        self, connect: Callable[[], Awaitable[Stream]], behave: Callable[[Stream], Awaitable[None]]
    ) -> None:
        """Connect, behave until the server drops the connection, count it, connect again."""
        while True:
            try:
                stream = await asyncio.wait_for(connect(), 30)
            except (OSError, ssl.SSLError, TimeoutError):
                self.stats["connect_failed"] += 1
                await asyncio.sleep(self.delay)
                continue
            self.stats["open"] += 1
            self.stats["connects"] += 1
            self.stats["max_open"] = max(self.stats["max_open"], self.stats["open"])
            try:
                await behave(stream)
            except (OSError, ssl.SSLError):
                pass
            finally:
                self.stats["open"] -= 1
                stream[1].close()
            self.stats["dropped_by_server"] += 1
            await asyncio.sleep(self.delay)

    async def idle(self) -> None:
        async def silent(stream: Stream) -> None:
            await stream[0].read(1)  # returns when the server closes or resets

        await self._hold(lambda: asyncio.open_connection(self.host, self.port), silent)

    async def slowloris(self) -> None:
        async def trickle(stream: Stream) -> None:
            reader, writer = stream
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\nX-Slow: ")
            while True:
                writer.write(b"a")
                await writer.drain()
                try:
                    await asyncio.wait_for(reader.read(64), self.trickle)
                except TimeoutError:
                    continue
                return  # EOF, or the server answered (408): this connection is over

        await self._hold(lambda: asyncio.open_connection(self.host, self.port, ssl=self.ctx), trickle)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    attack = Attack(args.host, args.port, args.tls, args.reconnect_delay, args.trickle)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.set_exception_handler(lambda _loop, _ctx: None)  # an attacker's own errors are not the point
    tasks = []
    kinds = [attack.slowloris] * args.slowloris + [attack.idle] * args.idle
    for i, kind in enumerate(kinds):
        tasks.append(asyncio.ensure_future(kind()))
        if i % 100 == 99:
            await asyncio.sleep(0.02)
    total = len(kinds)
    ready_sent = False
    while not stop.is_set():
        if not ready_sent and attack.stats["open"] >= total:
            print(json.dumps({"ready": True, **attack.stats}), flush=True)
            ready_sent = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)
    for task in tasks:
        task.cancel()
    return attack.stats


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--slowloris", type=int, default=0)
    p.add_argument("--idle", type=int, default=0)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--reconnect-delay", type=float, default=0.1)
    p.add_argument("--trickle", type=float, default=1.0)
    ns = p.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = ns.slowloris + ns.idle + 256
    if hard == resource.RLIM_INFINITY or hard >= want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    stats = asyncio.run(main(ns))
    print(json.dumps(stats), flush=True)
    sys.exit(0)
