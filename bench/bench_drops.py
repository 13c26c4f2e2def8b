"""Kernel drops of the wire source under a paced advert load: target 0 drops at 20,000 adverts/s.

Setup (root): two fresh namespaces joined by a veth (common.veth_pair). In one, a real `ka-exporter`
process (`--netns`, serving on the host's 127.0.0.1, every collector but the wire off) sniffs `eth0`.
In the other, a sender *process* paces valid VRRPv3 adverts on `vx`: 64 routers, each the master of
its own VRID (common.adverts), sent in turn, each router's IPv4 ID counting up with the header
checksum fixed (as keepalived's adverts look on a wire), at a fixed rate. The sender keeps a
schedule (`rate` adverts per second since its start, sleeping 0.3 ms when ahead; when it falls
behind, e.g. descheduled, it catches up at most 10 ms of schedule back to back and lets the rest
slip), counts every `sendto` that worked and times its first to its last send: the achieved rate is
that count over that time. The largest back-to-back burst and the slip are reported too.

Phases, in this order, on the same exporter: 20,000/s for 10 s (the target), then 40,000/s,
80,000/s and 160,000/s for 5 s each (where drops begin; no target). The exporter is not scraped
while a phase sends. After each phase it is scraped until its counters account for every advert
sent (packets + drops: the wire source reads PACKET_STATISTICS only when it re-checks its interfaces,
every 5 s, so its drop counter may lag by that much), and the phase's figures are the differences of:
  - sent: the sender's own count; at eth0: eth0's rx_packets in the exporter's namespace (what reached
    the interface, plus the link's own IPv6 solicitations) and the veth's and the host's input
    backlog drop counters (lost before any socket);
  - packets: keepalived_wire_packets_total (packets the sniffer read from its socket: valid adverts
    and invalid packets; the kernel's own tp_packets is not exported);
  - drops: keepalived_wire_kernel_drops_total (PACKET_STATISTICS tp_drops: receive queue full);
  - decoded: the sum of keepalived_wire_adverts_total over the 64 routers (adverts through the table);
  - CPU: the exporter's CPU seconds (all threads, /proc) over the phase's wall time, and the busiest
    thread's (the capture thread), in % of one core, and per advert; the sender's own CPU.
Last, the headroom: how many adverts the capture socket can queue, measured on a PacketSocket opened
exactly as the wire source opens it (same class, same rcvbuf) that nobody reads, and so for how long
the capture thread may stall (GIL, scheduler) at 20,000/s before the kernel drops.

Targets: 0 kernel drops at 20,000/s, with the sender within 2 % of 20,000/s (else the figure proves
nothing) and every sent advert counted by the exporter.

Prints a table and one `RESULT {json}` line (bench/common.py). Namespaces and processes are removed
whatever happens, SIGTERM included.

Run: /tmp/kavenv/bin/python bench/bench_drops.py [--rates 20000,40000,80000,160000] [--seconds 10,5]
(~35 s; the phases send on both of this machine's cores, 160,000/s saturates them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import common
from common import EXPORTER, Process, Target

ROUTERS = 64
IDS = 16  # IPv4 ID values per router in the send cycle (64 x 16 = 1,024 distinct packets)
TARGET_RATE = 20_000
RATE_TOLERANCE = 0.98  # the sender must reach 98 % of the asked rate for the drop figure to count
STATS_WAIT = 7.0  # seconds to wait for the exporter's PACKET_STATISTICS refresh (every 5 s)

SENDER = r"""
import json, resource, socket, sys, time
pkts = [bytes.fromhex(h) for h in sys.stdin.read().split()]
dev, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
addr = (dev, 0x0800, 0, 0, b"\x01\x00\x5e\x00\x00\x12")
send = s.sendto
n = len(pkts)
total = int(rate * seconds)
sent = errors = i = 0
behind = slipped = 0
cap = max(64, int(rate / 100))  # catch up at most 10 ms of schedule at once
clock = time.perf_counter
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = clock()
first = last = t0
while sent + errors < total:
    due = min(total, int((clock() - t0) * rate) + 1) - sent - errors
    if due <= 0:
        time.sleep(0.0003)
        continue
    if due > cap:  # fell behind (descheduled): move the schedule rather than burst
        t0 += (due - cap) / rate
        slipped += due - cap
        due = cap
    if due > behind:
        behind = due
    for _ in range(due):
        try:
            send(pkts[i], addr)
            sent += 1
        except OSError:
            errors += 1
        i += 1
        if i == n:
            i = 0
    last = clock()
r1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
print(json.dumps({"sent": sent, "errors": errors, "seconds": last - first, "max_burst": behind,
                  "slipped": slipped, "cpu": cpu}), flush=True)
"""


# -- packets -----------------------------------------------------------------------------------------


def _ipv4_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def packets() -> list[bytes]:
    """The send cycle: routers 1..64 in turn, each one's IPv4 ID counting up (valid checksums)."""
    base = common.adverts(ROUTERS)
    out: list[bytes] = []
    for k in range(IDS):
        for r, pkt in enumerate(base):
            ihl = (pkt[0] & 0x0F) * 4
            hdr = bytearray(pkt[:ihl])
            hdr[4:6] = ((r * 997 + k) & 0xFFFF).to_bytes(2, "big")
            hdr[10:12] = b"\x00\x00"
            hdr[10:12] = _ipv4_checksum(bytes(hdr)).to_bytes(2, "big")
            out.append(bytes(hdr) + pkt[ihl:])
    return out


# -- exporter and counters ---------------------------------------------------------------------------


def exporter_argv(port: int, netns: str) -> list[str]:
    return [
        *EXPORTER,
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--netns",
        netns,
        "--hostname",
        "bench",
        "--wire.interface",
        "eth0",
        "--no-collector.process",
        "--no-collector.vips",
        "--no-collector.config",
        "--no-collector.dbus",
        "--no-collector.dumps",
        "--log.level",
        "warning",
    ]


def scrape(port: int) -> dict[str, float]:
    """The wire counters of one scrape: packets, drops, decoded adverts, invalid, routers, wire up."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body, _ = common.get(port)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    out = {"packets": 0.0, "drops": 0.0, "decoded": 0.0, "invalid": 0.0, "routers": 0.0, "up": 0.0}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == "keepalived_wire_packets_total":
                out["packets"] = s.value
            elif s.name == "keepalived_wire_kernel_drops_total":
                out["drops"] = s.value
            elif s.name == "keepalived_wire_adverts_total":
                out["decoded"] += s.value
            elif s.name == "keepalived_wire_invalid_packets_total":
                out["invalid"] += s.value
            elif s.name == "keepalived_wire_peers":
                out["routers"] = s.value
            elif s.name == "ka_exporter_source_up" and s.labels.get("source") == "wire":
                out["up"] = s.value
    return out


def wait_wire_up(port: int, proc: Process, timeout: float = 20.0) -> None:
    """Return once the wire source reports up (both sockets of eth0 bound: capturing from now on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"exporter exited {proc.popen.returncode}:\n{proc.logs()[-2000:]}")
        if scrape(port)["up"] == 1.0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the wire source did not come up:\n{proc.logs()[-2000:]}")


def link_stats(netns: str, dev: str) -> dict[str, int]:
    """rx/tx packets and drops of a link (`ip -s -j link`)."""
    out = common.sh("ip", "-n", netns, "-s", "-j", "link", "show", dev).stdout
    st = json.loads(out)[0]["stats64"]
    return {
        "rx_packets": int(st["rx"]["packets"]),
        "rx_dropped": int(st["rx"]["dropped"]),
        "tx_packets": int(st["tx"]["packets"]),
        "tx_dropped": int(st["tx"]["dropped"]),
    }


def softnet_drops() -> int:
    """Packets the host dropped for a full input backlog (netdev_max_backlog), all CPUs."""
    with open("/proc/net/softnet_stat") as fh:
        return sum(int(line.split()[1], 16) for line in fh if line.strip())


# -- one phase ------------------------------------------------------------------------------------------


def phase(
    *,
    rate: int,
    seconds: float,
    cycle: list[bytes],
    tx: str,
    rx: str,
    port: int,
    exporter: Process,
    before: dict[str, float],
    workdir: Path,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Send at `rate` for `seconds`; return (the phase's figures, the exporter's counters after it)."""
    rx0, tx0, soft0 = link_stats(rx, "eth0"), link_stats(tx, "vx"), softnet_drops()
    cpu0 = common.cpu_seconds(exporter.pid)
    thr0 = common.thread_cpu(exporter.pid)
    w0 = time.monotonic()
    argv = ["ip", "netns", "exec", tx, sys.executable, "-c", SENDER, "vx", str(rate), str(seconds)]
    sender = Process(argv, workdir / f"sender-{rate}.log", stdin=" ".join(p.hex() for p in cycle).encode())
    try:
        sender.popen.wait(seconds + 30)
    finally:
        sender.stop()
    wall = time.monotonic() - w0
    cpu = common.cpu_seconds(exporter.pid) - cpu0
    thr1 = common.thread_cpu(exporter.pid)
    busiest = max((thr1[t] - thr0.get(t, 0.0) for t in thr1), default=0.0)
    rx1, tx1, soft1 = link_stats(rx, "eth0"), link_stats(tx, "vx"), softnet_drops()
    lines = [ln for ln in sender.logs().splitlines() if ln.startswith("{")]
    if sender.popen.returncode != 0 or not lines:
        raise RuntimeError(f"sender at {rate}/s failed ({sender.popen.returncode}):\n{sender.logs()[-2000:]}")
    sent = json.loads(lines[-1])
    arrived = rx1["rx_packets"] - rx0["rx_packets"]
    # The wire source reads PACKET_STATISTICS when it re-checks its sockets (every 5 s): scrape until
    # packets read + kernel drops cover every advert sent, or the refresh surely happened. (eth0 also
    # counts the link's own IPv6 router/neighbour solicitations, which the VRRP filter rejects.)
    deadline = time.monotonic() + STATS_WAIT
    while True:
        after = scrape(port)
        counted = after["packets"] + after["drops"] - before["packets"] - before["drops"]
        if counted >= sent["sent"] or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    row = {
        "rate": rate,
        "seconds": seconds,
        "sent": sent["sent"],
        "send_errors": sent["errors"],
        "send_seconds": round(sent["seconds"], 3),
        "achieved_rate": round(sent["sent"] / sent["seconds"], 1) if sent["seconds"] > 0 else None,
        "max_burst": sent["max_burst"],
        "slipped": sent["slipped"],
        "sender_cpu_pct": round(100.0 * sent["cpu"] / sent["seconds"], 1) if sent["seconds"] > 0 else None,
        "veth_arrived": arrived,
        "veth_dropped": (rx1["rx_dropped"] - rx0["rx_dropped"]) + (tx1["tx_dropped"] - tx0["tx_dropped"]),
        "backlog_drops": soft1 - soft0,
        "packets": int(after["packets"] - before["packets"]),
        "drops": int(after["drops"] - before["drops"]),
        "decoded": int(after["decoded"] - before["decoded"]),
        "invalid": int(after["invalid"] - before["invalid"]),
        "unaccounted": int(sent["sent"] - counted),
        "routers": int(after["routers"]),
        "exporter_cpu_pct": round(100.0 * cpu / wall, 1),
        "capture_thread_cpu_pct": round(100.0 * busiest / wall, 1),
        "cpu_us_per_advert": round(1e6 * cpu / sent["sent"], 2) if sent["sent"] else None,
        "wall": round(wall, 2),
        "load": round(common.load(), 2),
    }
    return row, after


STOCK_RMEM_MAX = 212_992  # the kernel's default net.core.rmem_max (this machine raised it)
PROBES = {
    "as the wire source asks (1 MiB)": None,
    f"on a host with the default rmem_max ({STOCK_RMEM_MAX} B)": STOCK_RMEM_MAX,
    "asked 4 MiB": 4 << 20,
}


def queue_capacity(tx: str, rx: str, cycle: list[bytes], workdir: Path, rcvbuf: int | None) -> dict[str, Any]:
    """Adverts a capture socket (PacketSocket, as the wire source opens it) holds before dropping.

    `rcvbuf`: what to ask for (None: PacketSocket's default). The kernel grants twice the request,
    capped at twice net.core.rmem_max; asking for 212,992 B gets what a 1 MiB request gets on a host
    with the default rmem_max."""
    from ka_exporter.linux import netns
    from ka_exporter.sources.capture import PacketSocket

    opened: list[PacketSocket] = []
    errors: list[BaseException] = []

    def open_in_ns() -> None:
        try:
            netns.enter(rx)  # this thread only; the socket keeps the namespace
            opened.append(PacketSocket("eth0") if rcvbuf is None else PacketSocket("eth0", rcvbuf=rcvbuf))
        except BaseException as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=open_in_ns)
    t.start()
    t.join()
    if errors or not opened:
        raise RuntimeError(f"cannot open a capture socket in {rx}: {errors}")
    sock = opened[0]
    try:
        granted = sock.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        sock.read_stats()  # from zero
        n = 30_000
        argv = ["ip", "netns", "exec", tx, sys.executable, "-c", SENDER, "vx", "100000", str(n / 100_000)]
        with Process(
            argv, workdir / "sender-capacity.log", stdin=" ".join(p.hex() for p in cycle).encode()
        ) as p:
            p.popen.wait(30)
        packets, drops = sock.read_stats()
    finally:
        sock.close()
    queued = packets - drops  # tp_packets counts the dropped ones too
    return {
        "asked_bytes": rcvbuf if rcvbuf is not None else 1 << 20,
        "granted_bytes": granted,
        "sent": n,
        "queued": queued,
        "dropped": drops,
        "bytes_per_advert": round(granted / queued) if queued else None,
        "stall_ms_at_20k": round(1000.0 * queued / TARGET_RATE, 1),
    }


# -- main ------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rates", default="20000,40000,80000,160000", help="adverts/s, comma-separated")
    ap.add_argument("--seconds", default="10,5", help="seconds per rate, comma-separated (last repeats)")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    secs = [float(s) for s in args.seconds.split(",")]
    secs += [secs[-1]] * (len(rates) - len(secs))
    common.exit_on_sigterm()
    cycle = packets()
    workdir = Path(tempfile.mkdtemp(prefix="ka-bench-drops-"))
    rows: list[dict[str, Any]] = []
    try:
        with common.veth_pair("kbk") as (tx, rx):
            port = common.free_port()
            with Process(exporter_argv(port, rx), workdir / "exporter.log") as exporter:
                common.wait_http(port, exporter)
                wait_wire_up(port, exporter)
                before = scrape(port)
                for rate, seconds in zip(rates, secs, strict=True):
                    row, before = phase(
                        rate=rate,
                        seconds=seconds,
                        cycle=cycle,
                        tx=tx,
                        rx=rx,
                        port=port,
                        exporter=exporter,
                        before=before,
                        workdir=workdir,
                    )
                    rows.append(row)
                    print(
                        f"  ({rate}/s: {row['sent']} sent in {row['send_seconds']} s, {row['drops']} drops)",
                        flush=True,
                    )
                if not exporter.alive():
                    raise RuntimeError(f"exporter died:\n{exporter.logs()[-2000:]}")
            capacity = {name: queue_capacity(tx, rx, cycle, workdir, size) for name, size in PROBES.items()}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"wire source kernel drops: {ROUTERS} VRRPv3 routers (one VRID each) paced over a veth into a "
        "ka-exporter process; counters are the exporter's own (PACKET_STATISTICS)"
    )
    print(
        f"{'rate/s':>7} {'achieved':>9} {'sent':>8} {'burst':>5} {'slip':>5} {'at eth0':>8} {'veth drop':>9} "
        f"{'packets':>8} {'drops':>7} {'drop %':>6} {'decoded':>8} {'CPU %':>6} {'thread %':>8} "
        f"{'us/advert':>9} {'sender %':>8}"
    )
    for r in rows:
        pct = 100.0 * r["drops"] / r["packets"] if r["packets"] else float("nan")
        print(
            f"{r['rate']:>7} {r['achieved_rate']:>9.0f} {r['sent']:>8} {r['max_burst']:>5} {r['slipped']:>5} "
            f"{r['veth_arrived']:>8} {r['veth_dropped'] + r['backlog_drops']:>9} {r['packets']:>8} "
            f"{r['drops']:>7} {pct:>6.2f} {r['decoded']:>8} {r['exporter_cpu_pct']:>6.1f} "
            f"{r['capture_thread_cpu_pct']:>8.1f} {r['cpu_us_per_advert']:>9.2f} {r['sender_cpu_pct']:>8.1f}"
        )
    print(
        f"  load {rows[-1]['load'] if rows else 'n/a'}; burst: most adverts the sender sent back to back; "
        "slip: adverts it let its schedule slip by (it never catches up more than 10 ms at once)"
    )
    for r in rows:
        if r["unaccounted"]:
            print(f"  {r['rate']}/s: {r['unaccounted']} adverts sent are neither read nor counted as drops")
    print(
        f"headroom: adverts a capture socket queues (PacketSocket, unread) = longest stall at {TARGET_RATE}/s"
    )
    print(f"  {'SO_RCVBUF':<48} {'granted B':>9} {'adverts':>7} {'B/advert':>8} {'stall ms':>8}")
    for name, c in capacity.items():
        print(
            f"  {name:<48} {c['granted_bytes']:>9} {c['queued']:>7} {c['bytes_per_advert']:>8} "
            f"{c['stall_ms_at_20k']:>8.1f}"
        )

    targets: list[Target] = []
    at = next((r for r in rows if r["rate"] == TARGET_RATE), None)
    if at is not None:
        targets += [
            Target(
                f"{TARGET_RATE}/s: sender achieved / asked",
                at["achieved_rate"] / TARGET_RATE,
                ">=",
                RATE_TOLERANCE,
            ),
            Target(f"{TARGET_RATE}/s: sent - counted by the exporter", at["sent"] - at["packets"], "==", 0),
            Target(f"{TARGET_RATE}/s: kernel drops", at["drops"], "==", 0),
        ]
    common.result("drops", {"rows": rows, "capacity": capacity}, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
