"""`ka-exporter lab lvs`: keepalived's LVS on a real IPVS kernel, in a User-Mode Linux guest.

The host's kernel may have no IP_VS (keepalived's checker child then dies with "IPVS: Can't initialize
ipvs"). Debian's `user-mode-linux` package is a 6.1 kernel that runs as an ordinary process and ships the
ip_vs modules; it boots with the host's filesystem as its root (hostfs), so keepalived, ipvsadm, busybox
and this package's virtualenv all work inside it unchanged.

Host side (`run_lvs_lab`): write an init script into a private work directory under /tmp, boot
`linux.uml` with it (`TMPDIR=/dev/shm` for its RAM file), wait, read what the guest wrote, kill the UML
process group if anything is left and delete the work directory. Nothing is mounted, loaded or created
on the host: every mount, module, namespace and process lives inside the guest and ends with it.

Guest side (`python -m ka_exporter.lab.uml guest OUT`), run by the init script after it mounted a tmpfs
over /run (hostfs would share the host's) and loaded ip_vs from a private module tree:

    client ns "cl" 10.140.0.2 --veth-- cl0 10.140.0.1 [director: keepalived + ka-exporter] rs0 10.141.0.1
                                        VIP 10.140.0.100 (VRRP)            --veth-- ns "rs": 10.141.0.11-13
    VS 10.140.0.100:80    rr  NAT TCP_CHECK              rs1, rs2 (busybox httpd), rs3 (never listens)
    VS 10.140.0.100:8080  wrr NAT HTTP_GET /health       rs1 weight 3, rs2 weight 1 inhibit_on_failure,
                                                         quorum 4 (losing rs2 loses the quorum),
                                                         sorry_server rs3:8080

Scenarios, each step waiting on what ka-exporter's /metrics says: ready, client traffic (the counters
grow), rs2 fails (down within delay_loop + retries) and returns, a real server removed from IPVS by hand
(missing_from_ipvs), the IPVS privilege check (netlink as nobody, with and without CAP_NET_ADMIN), and
keepalived stopped (IPVS flushed, zeros from keepalived.conf). The guest writes `result.json` and the
scrapes it took (`scrapes.jsonl`, LVS series only) into OUT.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ka_exporter.lab.system import LabError, find_tool

VIP = "10.140.0.100"
RS = {"rs1": "10.141.0.11", "rs2": "10.141.0.12", "rs3": "10.141.0.13"}
DELAY_LOOP, CONNECT_TIMEOUT, RETRY, DELAY_BEFORE_RETRY = 2, 1, 1, 1
LVS_INTERVAL = 1.0
PORT = 9774
REQUESTS = 12  # client requests per virtual server in the traffic step
MODULES = ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "veth")

KEEPALIVED_CONF = f"""\
global_defs {{
  router_id ka-lab-lvs
  vrrp_garp_master_delay 1
}}

vrrp_instance VI_LVS {{
  state BACKUP
  interface cl0
  virtual_router_id 140
  priority 150
  advert_int 1
  virtual_ipaddress {{
    {VIP}/24 dev cl0
  }}
}}

virtual_server {VIP} 80 {{
  delay_loop {DELAY_LOOP}
  lb_algo rr
  lb_kind NAT
  protocol TCP
{
    "".join(
        f'''
  real_server {addr} 80 {{
    weight 1
    TCP_CHECK {{ connect_timeout {CONNECT_TIMEOUT} retry {RETRY} delay_before_retry {DELAY_BEFORE_RETRY} }}
  }}'''
        for addr in RS.values()
    )
}
}}

virtual_server {VIP} 8080 {{
  delay_loop {DELAY_LOOP}
  lb_algo wrr
  lb_kind NAT
  protocol TCP
  persistence_timeout 30
  quorum 4
  sorry_server {RS["rs3"]} 8080

  real_server {RS["rs1"]} 8080 {{
    weight 3
    HTTP_GET {{
      url {{ path /health status_code 200 }}
      connect_timeout {CONNECT_TIMEOUT} retry {RETRY} delay_before_retry {DELAY_BEFORE_RETRY}
    }}
  }}
  real_server {RS["rs2"]} 8080 {{
    weight 1
    inhibit_on_failure
    HTTP_GET {{
      url {{ path /health status_code 200 }}
      connect_timeout {CONNECT_TIMEOUT} retry {RETRY} delay_before_retry {DELAY_BEFORE_RETRY}
    }}
  }}
}}
"""


_CHECKER_LINE = re.compile(r"^ \[[^\]]+\]:\w+:(\d+) -> \[([^\]]+)\]:\w+:\d+$")


def detection_bounds(check_dump: str) -> dict[str, float]:
    """Per checker ("RIP:VPORT"): the longest keepalived may take to call a failed real server down, from
    the timings keepalived itself reports in its checker dump: one delay loop until the next check, the
    failed attempt and each retry (timeout + delay before retry); plus one lvs interval for the exporter
    to read it. (keepalived 2.2.7 applies a 3 s delay_before_retry to HTTP_GET whatever the block says.)"""
    bounds: dict[str, float] = {}
    key: str | None = None
    fields: dict[str, float] = {}

    def close() -> None:
        if key is not None and {"Delay loop", "Retries", "Delay before retry", "Timeout"} <= fields.keys():
            bounds[key] = (
                fields["Delay loop"]
                + fields["Timeout"]
                + fields["Retries"] * (fields["Delay before retry"] + fields["Timeout"])
                + LVS_INTERVAL
            )

    for line in check_dump.splitlines():
        if m := _CHECKER_LINE.match(line):
            close()
            key, fields = f"{m.group(2)}:{m.group(1)}", {}
        elif key is not None and " = " in line:
            name, _, value = line.strip().partition(" = ")
            number = value.split()[0] if value.split() else ""
            with contextlib.suppress(ValueError):
                fields.setdefault(name, float(number) / (1e6 if value.endswith(" us") else 1))
    close()
    return bounds


INIT = """#!/bin/sh
# ka-exporter lab lvs: init of the UML guest (PID 1). Everything below lives in the guest only.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs -o mode=0755 tmpfs /run
kver=$(uname -r)
mkdir -p /run/lab/mods/lib/modules/$kver /run/lab/tmp
mount --bind /usr/lib/uml/modules/$kver /run/lab/mods/lib/modules/$kver
printf '#!/bin/sh\\nexec %s -d /run/lab/mods "$@"\\n' "$(command -v modprobe)" > /run/lab/modprobe
chmod 0755 /run/lab/modprobe
echo /run/lab/modprobe > /proc/sys/kernel/modprobe
{
  modprobe -a -d /run/lab/mods {modules} && echo "modules loaded"
  sysctl -q -w net.ipv4.vs.expire_quiescent_template=1 net.ipv4.ip_forward=1
  export TMPDIR=/run/lab/tmp HOME=/run/lab
  "$KA_PYTHON" -m ka_exporter.lab.uml guest "$KA_OUT"
  echo "guest exit status $?"
} > "$KA_OUT/guest.log" 2>&1
echo o > /proc/sysrq-trigger
sleep 60
"""


class UmlError(LabError):
    """The UML lab could not run; one line."""


# --------------------------------------------------------------------------------------------------
# host side
# --------------------------------------------------------------------------------------------------


@dataclass
class LvsLabResult:
    """What the guest measured, and the scrapes it took (LVS series only), in order."""

    result: dict[str, Any]
    scrapes: list[dict[str, Any]] = field(default_factory=list)
    guest_log: str = ""
    seconds: float = 0.0


def preflight() -> str:
    """The linux.uml binary, after checking everything the guest needs exists; UmlError if not."""
    if os.geteuid() != 0:
        raise UmlError("the LVS lab needs root (the guest runs keepalived, ip netns and IPVS as root)")
    uml = find_tool("linux.uml", "user-mode-linux")
    for tool, package in (("ipvsadm", "ipvsadm"), ("busybox", "busybox"), ("modprobe", "kmod")):
        find_tool(tool, package)
    find_tool("keepalived", "keepalived")
    kver_dirs = list(Path("/usr/lib/uml/modules").glob("*/kernel/net/netfilter/ipvs/ip_vs.ko"))
    if not kver_dirs:
        raise UmlError("no ip_vs module under /usr/lib/uml/modules: apt-get install user-mode-linux")
    return uml


def run_lvs_lab(
    *,
    timeout: float = 300.0,
    progress: Callable[[str], None] | None = None,
    keep: Path | None = None,
) -> LvsLabResult:
    """Boot the guest, run every scenario, and return what it saw; leaves nothing behind on the host."""
    uml = preflight()
    work = Path(tempfile.mkdtemp(prefix="ka-uml-", dir="/tmp"))
    umid = f"ka{os.getpid() % 10000}{secrets.token_hex(3)}"
    started = time.monotonic()
    proc: subprocess.Popen[bytes] | None = None
    try:
        work.chmod(0o700)
        init = work / "init.sh"
        init.write_text(INIT.replace("{modules}", " ".join(MODULES)))
        init.chmod(0o700)
        argv = [
            uml,
            "mem=384M",
            "root=/dev/root",
            "rootfstype=hostfs",
            "rootflags=/",
            "rw",
            f"init={init}",
            f"uml_dir={work}",
            f"umid={umid}",
            "con=null",
            "con0=null,fd:1",
            "ssl=null",
            f"KA_OUT={work}",
            f"KA_PYTHON={sys.executable}",
        ]
        with (work / "console.log").open("wb") as console:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": "/dev/shm"},
                start_new_session=True,
            )
            seen = 0
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                seen = _relay(work / "progress.log", seen, progress)
                time.sleep(0.5)
            _relay(work / "progress.log", seen, progress)
        guest_log = _read(work / "guest.log")
        if proc.poll() is None:
            raise UmlError(
                f"the UML guest did not finish within {timeout:g} s (guest log: {_last(guest_log)})"
            )
        result_path = work / "result.json"
        if not result_path.exists():
            console_tail = _last(_read(work / "console.log"))
            raise UmlError(f"the UML guest wrote no result (guest log: {_last(guest_log) or console_tail})")
        result = json.loads(result_path.read_text())
        scrapes = [json.loads(line) for line in _read(work / "scrapes.jsonl").splitlines() if line]
        if keep is not None:
            shutil.copytree(work, keep, dirs_exist_ok=True)
        return LvsLabResult(result, scrapes, guest_log, time.monotonic() - started)
    finally:
        if proc is not None:
            _stop_group(proc)
        shutil.rmtree(work, ignore_errors=True)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill what is left of the UML process group (its kernel threads are host processes)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _last(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _relay(path: Path, seen: int, progress: Callable[[str], None] | None) -> int:
    text = _read(path)
    lines = text.splitlines()
    if progress is not None:
        for line in lines[seen:]:
            progress(line)
    return len(lines)


# --------------------------------------------------------------------------------------------------
# guest side (runs inside UML as root; every syscall is slow there: few processes, no busy loops)
# --------------------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_KEEP = ("keepalived_lvs_", "keepalived_ipvs_", "keepalived_up", "ka_exporter_source_up")

Sample = tuple[str, tuple[tuple[str, str], ...]]


def parse_scrape(text: str) -> dict[Sample, float]:
    out: dict[Sample, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or line.startswith("#"):
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def rs_labels(vport: int, rs: str) -> tuple[tuple[str, str], ...]:
    return (("protocol", "TCP"), ("real_server", f"{RS[rs]}:{vport}"), ("virtual_server", f"{VIP}:{vport}"))


def with_kind(labels: tuple[tuple[str, str], ...], kind: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((*labels, ("kind", kind))))


def vs_labels(vport: int) -> tuple[tuple[str, str], ...]:
    return (("protocol", "TCP"), ("virtual_server", f"{VIP}:{vport}"))


_COSTS = """
import json, sys, time
from pathlib import Path
N = 20
out = {}
t = time.perf_counter()
from ka_exporter.sources.lvs import IpvsNetlink, read_file
from ka_exporter.parse.ipvs import parse_proc_ip_vs
out["import_ms"] = round((time.perf_counter() - t) * 1000, 1)
reader = IpvsNetlink()
t = time.perf_counter()
for _ in range(N):
    reader.read()
out["netlink_read_ms"] = round((time.perf_counter() - t) * 1000 / N, 2)
t = time.perf_counter()
for _ in range(N):
    parse_proc_ip_vs(read_file(Path("/proc/net/ip_vs")))
out["proc_read_ms"] = round((time.perf_counter() - t) * 1000 / N, 2)
try:
    t = time.perf_counter()
    from pyroute2 import IPVS
    from pyroute2.ipvs import IPVSService
    out["pyroute2_import_ms"] = round((time.perf_counter() - t) * 1000, 1)
    ipvs = IPVS()
    t = time.perf_counter()
    for _ in range(N):
        for svc in ipvs.service("dump"):
            ipvs.dest("dump", service=IPVSService.from_message(svc))
    out["pyroute2_read_ms"] = round((time.perf_counter() - t) * 1000 / N, 2)
except Exception as exc:
    out["pyroute2_error"] = type(exc).__name__ + ": " + str(exc)[:100]
Path(sys.argv[1]).write_text(json.dumps(out))
"""


class Guest:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.run_dir = Path("/run/lab")
        self.conf = self.run_dir / "keepalived.conf"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.result: dict[str, Any] = {"steps": {}}
        self.t0 = time.monotonic()
        self._scrapes = (out / "scrapes.jsonl").open("a")
        self._progress = (out / "progress.log").open("a")
        self.last: dict[Sample, float] = {}
        self.bounds: dict[str, float] = {}

    # -- helpers ----------------------------------------------------------------------------------

    def say(self, line: str) -> None:
        self._progress.write(f"[{time.monotonic() - self.t0:6.1f}s] {line}\n")
        self._progress.flush()

    def sh(self, *argv: str, check: bool = True) -> str:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if check and out.returncode != 0:
            raise UmlError(f"{' '.join(argv)}: {(out.stderr or out.stdout).strip()[:200]}")
        return out.stdout

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.out / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)

    def scrape(self, phase: str) -> dict[Sample, float]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        kept = "\n".join(line for line in text.splitlines() if line.startswith(_KEEP))
        self._scrapes.write(
            json.dumps({"t": round(time.monotonic() - self.t0, 3), "phase": phase, "text": kept})
        )
        self._scrapes.write("\n")
        self._scrapes.flush()
        self.last = parse_scrape(kept)
        return self.last

    def wait(
        self, phase: str, what: str, cond: Callable[[dict[Sample, float]], bool], timeout: float
    ) -> float:
        """Scrape until cond holds; seconds it took. UmlError (naming `what`) on timeout."""
        start = time.monotonic()
        while True:
            sample = self.scrape(phase)
            if sample and cond(sample):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise UmlError(f"{phase}: {what} not seen within {timeout:g} s")
            time.sleep(0.3)

    def step(self, name: str, **facts: Any) -> None:
        self.result["steps"][name] = {"t": round(time.monotonic() - self.t0, 2), **facts}
        self.say(f"{name}: " + ", ".join(f"{k}={v}" for k, v in facts.items()))

    # -- setup ------------------------------------------------------------------------------------

    def network(self) -> None:
        ip = "ip"
        for cmd in (
            "netns add cl",
            "netns add rs",
            "link set lo up",
            "link add cl0 type veth peer name eth0 netns cl",
            "link add rs0 type veth peer name eth0 netns rs",
            "addr add 10.140.0.1/24 dev cl0",
            "addr add 10.141.0.1/24 dev rs0",
            "link set cl0 up",
            "link set rs0 up",
            "-n cl link set lo up",
            "-n cl addr add 10.140.0.2/24 dev eth0",
            "-n cl link set eth0 up",
            "-n rs link set lo up",
            *(f"-n rs addr add {a}/24 dev eth0" for a in RS.values()),
            "-n rs link set eth0 up",
            "-n rs route add default via 10.141.0.1",
        ):
            self.sh(ip, *cmd.split())

    def httpd(self, rs: str) -> None:
        root = self.run_dir / "www" / rs
        root.mkdir(parents=True, exist_ok=True)
        (root / "index.html").write_text(f"{rs}\n")
        (root / "health").write_text("ok\n")
        for port in (80, 8080):
            self.spawn(
                f"{rs}-{port}",
                [
                    "ip",
                    "netns",
                    "exec",
                    "rs",
                    "busybox",
                    "httpd",
                    "-f",
                    "-p",
                    f"{RS[rs]}:{port}",
                    "-h",
                    str(root),
                ],
            )

    def keepalived(self) -> None:
        self.conf.write_text(KEEPALIVED_CONF)
        env = {"PATH": os.environ["PATH"], "TMPDIR": str(self.run_dir / "tmp")}
        r = str(self.run_dir)
        argv = [
            "keepalived",
            "-n",
            "-l",
            "-D",
            "-f",
            str(self.conf),
            "-p",
            f"{r}/ka.pid",
            "-r",
            f"{r}/vrrp.pid",
            "-c",
            f"{r}/check.pid",
        ]
        self.spawn("keepalived", argv, env)

    def exporter(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "ka_exporter",
            "--keepalived.config",
            str(self.conf),
            "--keepalived.pid-file",
            str(self.run_dir / "ka.pid"),
            "--keepalived.dumps-dir",
            str(self.run_dir / "tmp"),
            "--lvs.interval",
            str(LVS_INTERVAL),
            "--web.listen-address",
            f"127.0.0.1:{PORT}",
        ]
        self.spawn("exporter", argv, {**os.environ, "TMPDIR": str(self.run_dir / "tmp")})

    def client(self, port: int, count: int) -> list[str]:
        """`count` HTTP requests to the VIP from the client namespace, each a new TCP connection.

        One Python process for all of them (busybox wget segfaults under UML; a process per request is slow).
        """
        code = (
            "import sys, urllib.request\n"
            "for _ in range(int(sys.argv[2])):\n"
            "    try:\n"
            "        print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode().strip())\n"
            "    except OSError as e:\n"
            "        print('ERR', type(e).__name__)\n"
        )
        url = f"http://{VIP}:{port}/"
        out = self.sh(
            "ip", "netns", "exec", "cl", sys.executable, "-I", "-S", "-c", code, url, str(count), check=False
        )
        return out.split("\n")[:-1]

    # -- scenarios --------------------------------------------------------------------------------

    def run(self) -> None:
        self.say("guest up: network, real servers, keepalived, ka-exporter")
        self.network()
        for rs in ("rs1", "rs2"):
            self.httpd(rs)
        self.keepalived()
        self.exporter()
        self.scenario_ready()
        self.scenario_traffic()
        self.scenario_fail_and_return()
        self.scenario_removed_by_hand()
        self.scenario_privileges()
        self.scenario_costs()
        self.scenario_stop()

    def up(self, s: dict[Sample, float], vport: int, rs: str) -> float | None:
        return s.get(("keepalived_lvs_real_server_up", rs_labels(vport, rs)))

    def conns(self, s: dict[Sample, float], vport: int) -> float | None:
        return s.get(("keepalived_ipvs_virtual_server_connections_total", vs_labels(vport)))

    def scenario_ready(self) -> None:
        def ready(s: dict[Sample, float]) -> bool:
            return (
                self.up(s, 80, "rs1") == 1
                and self.up(s, 80, "rs2") == 1
                and self.up(s, 80, "rs3") == 0
                and self.up(s, 8080, "rs1") == 1
                and self.up(s, 8080, "rs2") == 1
                and self.conns(s, 80) is not None
                and s.get(("keepalived_ipvs_real_server_weight", rs_labels(8080, "rs2"))) == 1
            )

        took = self.wait("ready", "every real server's state and IPVS", ready, 90)
        self.bounds = detection_bounds((self.run_dir / "tmp" / "keepalived_check.data").read_text())
        deadline = time.monotonic() + 30
        while VIP not in self.sh("ip", "-o", "addr", "show", "dev", "cl0"):
            if time.monotonic() > deadline:
                raise UmlError("ready: keepalived did not put the VIP on cl0 within 30 s")
            time.sleep(0.3)
        s = self.last
        states = {
            f"{rs}:{port}": self.up(s, port, rs)
            for port in (80, 8080)
            for rs in ("rs1", "rs2", "rs3")
            if self.up(s, port, rs) is not None
        }
        self.step(
            "ready", seconds=round(took, 1), real_servers=states, ipvs_up=s.get(("keepalived_ipvs_up", ()))
        )

    def scenario_traffic(self) -> None:
        before = {p: self.conns(self.scrape("traffic"), p) or 0.0 for p in (80, 8080)}
        answers = {p: self.client(p, REQUESTS) for p in (80, 8080)}
        ok = {p: sum(not a.startswith("ERR") for a in answers[p]) for p in (80, 8080)}
        if not all(ok.values()):
            raise UmlError(f"traffic: the client got no answer from the VIP: {answers}")
        self.wait(
            "traffic",
            "the virtual servers' connection counters growing by the requests answered",
            lambda s: all((self.conns(s, p) or 0) >= before[p] + ok[p] for p in (80, 8080)),
            20,
        )
        after = {p: self.conns(self.last, p) for p in (80, 8080)}
        in_bytes = self.last.get(("keepalived_ipvs_virtual_server_incoming_bytes_total", vs_labels(80)))
        self.step(
            "traffic",
            answered=ok,
            answers_80=sorted(set(answers[80])),
            connections_before=before,
            connections_after=after,
            incoming_bytes_80=in_bytes,
        )

    def scenario_fail_and_return(self) -> None:
        killed = time.monotonic()
        self.stop("rs2-80", signal.SIGKILL)
        self.stop("rs2-8080", signal.SIGKILL)
        seen: dict[str, float] = {}

        def down(s: dict[Sample, float]) -> bool:
            for port in (80, 8080):
                if self.up(s, port, "rs2") == 0 and str(port) not in seen:
                    seen[str(port)] = round(time.monotonic() - killed, 2)
            return len(seen) == 2

        self.wait("fail", "rs2 down on both virtual servers", down, 60)
        s = self.last
        self.step(
            "fail",
            down_after_seconds=seen,
            bound_seconds={p: self.bounds.get(f"{RS['rs2']}:{p}") for p in ("80", "8080")},
            rs2_80_in_ipvs=("keepalived_ipvs_real_server_weight", rs_labels(80, "rs2")) in s,
            rs2_8080_ipvs_weight=s.get(("keepalived_ipvs_real_server_weight", rs_labels(8080, "rs2"))),
            rs2_8080_inhibited=s.get(("keepalived_lvs_real_server_inhibited", rs_labels(8080, "rs2"))),
            rs2_8080_effective_weight=s.get(
                ("keepalived_lvs_real_server_effective_weight", rs_labels(8080, "rs2"))
            ),
            vs_8080_quorum_up=s.get(("keepalived_lvs_virtual_server_quorum_up", vs_labels(8080))),
            vs_8080_sorry_active=s.get(
                ("keepalived_lvs_virtual_server_sorry_server_active", vs_labels(8080))
            ),
            ipvs_8080=sorted(
                dict(lab)["real_server"]
                for (n, lab), _v in s.items()
                if n == "keepalived_ipvs_real_server_weight" and dict(lab)["virtual_server"] == f"{VIP}:8080"
            ),
            vs_8080_below_quorum=s.get(
                ("keepalived_lvs_virtual_server_problem", with_kind(vs_labels(8080), "below_quorum"))
            ),
            mismatches=sum(v for (n, _), v in s.items() if n == "keepalived_lvs_real_server_problem"),
        )
        # hold the failure for a few scrapes (the alert test is built from these)
        for _ in range(3):
            self.scrape("fail")
            time.sleep(0.5)
        # rs2:80 is down and out of IPVS: put it back by hand, and IPVS sends traffic to a failed server
        self.sh("ipvsadm", "-a", "-t", f"{VIP}:80", "-r", f"{RS['rs2']}:80", "-m", "-w", "1")
        key = ("keepalived_lvs_real_server_problem", with_kind(rs_labels(80, "rs2"), "weight_while_down"))
        took = self.wait("fail", "weight_while_down for rs2:80", lambda s: s.get(key) == 1, 20)
        self.sh("ipvsadm", "-d", "-t", f"{VIP}:80", "-r", f"{RS['rs2']}:80")
        self.wait("fail", "weight_while_down cleared", lambda s: s.get(key) == 0, 20)
        self.step("weight_while_down", seconds=round(took, 2))
        self.httpd("rs2")
        returned = time.monotonic()
        self.wait(
            "return",
            "rs2 up again on both virtual servers",
            lambda s: self.up(s, 80, "rs2") == 1 and self.up(s, 8080, "rs2") == 1,
            60,
        )
        s = self.last
        self.step(
            "return",
            up_after_seconds=round(time.monotonic() - returned, 2),
            rs2_8080_ipvs_weight=s.get(("keepalived_ipvs_real_server_weight", rs_labels(8080, "rs2"))),
            vs_8080_quorum_up=s.get(("keepalived_lvs_virtual_server_quorum_up", vs_labels(8080))),
        )

    def scenario_removed_by_hand(self) -> None:
        self.sh("ipvsadm", "-d", "-t", f"{VIP}:80", "-r", f"{RS['rs1']}:80")
        key = ("keepalived_lvs_real_server_problem", with_kind(rs_labels(80, "rs1"), "missing_from_ipvs"))
        took = self.wait("by-hand", "missing_from_ipvs for rs1:80", lambda s: s.get(key) == 1, 20)
        others = sum(
            v
            for (n, lab), v in self.last.items()
            if n == "keepalived_lvs_real_server_problem" and lab != key[1]
        )
        self.sh("ipvsadm", "-a", "-t", f"{VIP}:80", "-r", f"{RS['rs1']}:80", "-m", "-w", "1")
        self.wait("by-hand", "missing_from_ipvs cleared", lambda s: s.get(key) == 0, 20)
        # the exporter's netlink view against ipvsadm's own
        table = self.sh("ipvsadm", "-Ln")
        ipvsadm = sorted(re.findall(r"->\s+(\d+\.\d+\.\d+\.\d+:\d+)\s+\w+\s+(\d+)", table))
        time.sleep(LVS_INTERVAL * 2)  # no client traffic now: the counters stand still
        scraped = self.scrape("by-hand")
        exported = sorted(
            (dict(lab)["real_server"], str(int(v)))
            for (n, lab), v in scraped.items()
            if n == "keepalived_ipvs_real_server_weight"
        )
        stats = self.sh("ipvsadm", "-Ln", "--stats", "--exact")
        # TCP  10.140.0.100:80   Conns InPkts OutPkts InBytes OutBytes
        ipvsadm_counters = {
            m[0]: [int(x) for x in m[1:]]
            for m in re.findall(r"^TCP\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", stats, re.MULTILINE)
        }
        names = ("connections", "incoming_packets", "outgoing_packets", "incoming_bytes", "outgoing_bytes")
        exported_counters = {
            vs: [
                int(
                    scraped.get(
                        (f"keepalived_ipvs_virtual_server_{n}_total", vs_labels(int(vs.rsplit(":", 1)[1]))),
                        -1,
                    )
                )
                for n in names
            ]
            for vs in ipvsadm_counters
        }
        self.step(
            "by_hand",
            seconds=round(took, 2),
            other_problems=others,
            ipvsadm=ipvsadm,
            exported=exported,
            ipvsadm_counters=ipvsadm_counters,
            exported_counters=exported_counters,
        )

    def scenario_privileges(self) -> None:
        code = (
            "from ka_exporter.sources.lvs import IpvsNetlink\n"
            "try:\n    print(len(IpvsNetlink().read()))\n"
            "except OSError as e:\n    print('ERR', e.errno)\n"
        )
        base = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        plain = self.sh(*base, "--inh-caps=-all", sys.executable, "-c", code, check=False).strip()
        admin = self.sh(
            *base,
            "--inh-caps=+net_admin",
            "--ambient-caps=+net_admin",
            sys.executable,
            "-c",
            code,
            check=False,
        ).strip()
        proc_ok = self.sh(*base, "cat", "/proc/net/ip_vs", check=False).count("->") > 1
        self.step("privileges", nobody=plain, nobody_with_cap_net_admin=admin, nobody_reads_proc=proc_ok)

    def scenario_costs(self) -> None:
        """What one IPVS read costs here: this package's netlink reader, /proc/net/ip_vs, pyroute2's IPVS.

        UML makes every syscall a ptrace round trip, so the absolute figures are inflated; the ratios are
        what the choice rests on. Printed by the lab test and `lab lvs`."""
        self.sh(sys.executable, "-c", _COSTS, str(self.out / "costs.json"), check=False)
        try:
            costs = json.loads((self.out / "costs.json").read_text())
        except (OSError, ValueError):
            costs = {"error": "no figures"}
        self.step("costs", **costs)

    def scenario_stop(self) -> None:
        self.stop("keepalived")
        self.wait(
            "stopped",
            "keepalived_up 0, IPVS flushed and zeros for the configured servers",
            lambda s: (
                s.get(("keepalived_up", ())) == 0
                and not any(n == "keepalived_ipvs_real_server_weight" for n, _ in s)
                and self.up(s, 80, "rs1") == 0
            ),
            30,
        )
        s = self.last
        ipvs_left = self.sh("ipvsadm", "-Ln").count("->") - 1
        log = (self.out / "keepalived.log").read_text(errors="replace")
        self.step(
            "stopped",
            ipvs_destinations_left=ipvs_left,
            # the lvs source signals the checker child only; the VRRP child dumps for the dumps source
            checker_dumps=log.count("Printing checker data"),
            vrrp_dumps=log.count("Printing VRRP data"),
            configured_real_servers_zero=sorted(
                dict(lab)["real_server"]
                for (n, lab), v in s.items()
                if n == "keepalived_lvs_real_server_up" and v == 0
            ),
        )

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name, signal.SIGKILL)
        self._scrapes.close()
        self._progress.close()


def guest_main(out: Path) -> int:
    guest = Guest(out)
    try:
        guest.run()
        guest.result["ok"] = True
    except Exception as exc:  # reported to the host in result.json, one line
        guest.result["ok"] = False
        guest.result["error"] = f"{type(exc).__name__}: {exc}"
        guest.say(f"FAILED: {guest.result['error']}")
    finally:
        guest.close()
        (out / "result.json").write_text(json.dumps(guest.result, indent=1, sort_keys=True))
    return 0 if guest.result["ok"] else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "guest":
        sys.exit(guest_main(Path(sys.argv[2])))
    sys.exit("usage: python -m ka_exporter.lab.uml guest OUTDIR (run by the UML guest's init)")
