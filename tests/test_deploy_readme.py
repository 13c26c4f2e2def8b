"""README.md's Deployment section, followed literally on a lab node, as a new operator would.

The test reads the section's shell block and the Prometheus scrape block from README.md, and the installed unit
and defaults file, instead of re-typing them: when they drift, this test breaks. Every command of the shell
block runs as written (through `sh`), with these substitutions only:

- paths: /opt, /etc/ka-exporter, /etc/default, /etc/sysusers.d, /etc/systemd/system live under a temporary
  root; /etc/keepalived/keepalived.conf, /run/keepalived.pid, keepalived's dumps and D-Bus socket are the lab
  node's; the certificate's example address 192.0.2.11 is the node's;
- `systemd-sysusers` applies only the file the README copied (not every package's sysusers.d);
- PID 1 is not systemd: `systemctl reload dbus` is dbus.service's ExecReload (org.freedesktop.DBus.ReloadConfig)
  on the node's bus, `systemctl restart keepalived` restarts the lab's keepalived, and `systemctl enable --now`
  runs the unit's ExecStart the way systemd would for its User=, Group=, EnvironmentFile=, UMask=,
  AmbientCapabilities=, CapabilityBoundingSet= and NoNewPrivileges= (setpriv), inside the node's network
  namespace (`ip netns exec`) so that it sees the node's keepalived; `journalctl -u` reads its output;
- `getpass` reads the password from stdin (no terminal), `editor` is a scripted edit of the hash line, and
  `curl -u USER` gets `USER:PASSWORD` plus a `--resolve` of the node's name to its address.

The sandboxing directives (ProtectSystem=, SystemCallFilter=, ...) need systemd itself and are not emulated;
tests/test_deploy.py checks them with systemd-analyze.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from ka_exporter.lab import Lab
from ka_exporter.linux import netns
from tests.conftest import REPO, parse_metrics, sample, stop_process

pytestmark = [pytest.mark.lab, pytest.mark.slow]

USER = "ka-exporter"
CAP_NET_RAW = 1 << 13
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # a Debian root shell's


# -------------------------------------------------------------------------------- reading the README


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, f"README.md has no '## {title}' section"
    return m.group(1)


def code_blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", section, re.S | re.M)


def shell_steps(block: str) -> list[tuple[str, list[str]]]:
    """The numbered steps ("# 1. Install ...") and their commands: continuations joined, comments dropped,
    `a && b` split into a and b (each must succeed before the next runs, as with &&)."""
    steps: list[tuple[str, list[str]]] = []
    block = block.replace("\\\n", " ")
    for raw in block.splitlines():
        head = re.match(r"#\s*(\d+\..*)", raw)
        if head:
            steps.append((head.group(1), []))
            continue
        line = re.sub(r"\s+#\s.*$", "", raw).strip()
        if not line or line.startswith("#"):
            continue
        assert steps, f"README command before the first numbered step: {line}"
        steps[-1][1].extend(part.strip() for part in line.split(" && "))
    return steps


def unit_file(path: Path) -> dict[str, list[str]]:
    """[Service] of a systemd unit: key -> values in order (keys may repeat)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service":
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def environment_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            (item,) = shlex.split(line, comments=True)
            key, _, value = item.partition("=")
            env[key] = value
    return env


def exec_start(line: str, env: dict[str, str]) -> list[str]:
    """systemd's ExecStart= expansion: $VAR splits on whitespace, ${VAR} is one argument."""
    argv: list[str] = []
    for word in shlex.split(line):
        if m := re.fullmatch(r"\$(\w+)", word):
            argv.extend(env.get(m.group(1), "").split())
        else:
            argv.append(re.sub(r"\$\{(\w+)\}", lambda v: env.get(v.group(1), ""), word))
    return argv


def cap_list(value: str) -> str:
    """'CAP_NET_RAW CAP_KILL' -> '-all,+net_raw,+kill' (setpriv's syntax)."""
    return ",".join(["-all", *(f"+{c.lower().removeprefix('cap_')}" for c in value.split())])


# ---------------------------------------------------------------------------- a port into the netns


class Forwarder:
    """127.0.0.1:PORT on the host -> ADDRESS:PORT in a network namespace (Prometheus runs on the host).

    One thread of this process enters the namespace (setns acts on the calling thread only) and opens the
    upstream connections there; plain TCP, so TLS and basic auth go through untouched.
    """

    def __init__(self, ns: str, address: str, port: int) -> None:
        self.ns, self.address, self.port = ns, address, port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.local_port = int(self.listener.getsockname()[1])
        self.sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._pending: list[socket.socket] = []
        self._wake = threading.Condition(self._lock)
        self._closed = False
        threading.Thread(target=self._connector, daemon=True).start()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._wake:
                self._pending.append(client)
                self._wake.notify()

    def _connector(self) -> None:
        netns.enter(self.ns)
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                client = self._pending.pop(0)
            try:
                upstream = socket.create_connection((self.address, self.port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        with self._wake:
            self._closed = True
            self._wake.notify_all()
            for s in self.sockets:
                s.close()


# ------------------------------------------------------------------------------------ the operator


@dataclass
class Operator:
    """Runs the README's commands on a lab node with the substitutions of the module docstring."""

    lab: Lab
    root: Path  # stands for / (the parts the README writes to)
    checkout: Path  # "from a checkout of ka-exporter"
    password: str
    scrape_user: str
    log: Path
    transcript: list[str] = field(default_factory=list)
    user_created: bool = False
    exporter: subprocess.Popen[bytes] | None = None
    password_hash: str | None = None
    curl_output: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def node(self) -> Any:
        return self.lab.nodes["a"]

    @property
    def system_d(self) -> Path:
        return self.node.dbus_config.parent / "system.d"

    def paths(self) -> dict[str, str]:
        r, n = self.root, self.node
        return {
            "/opt/ka-exporter": f"{r}/opt/ka-exporter",
            "/etc/ka-exporter": f"{r}/etc/ka-exporter",
            "/etc/default/": f"{r}/etc/default/",
            "/etc/sysusers.d/": f"{r}/etc/sysusers.d/",
            "/etc/systemd/system/": f"{r}/etc/systemd/system/",
            "/etc/keepalived/keepalived.conf": str(n.config_path),
            "/etc/dbus-1/system.d/": f"{self.system_d}/",
            "/run/keepalived.pid": str(n.pidfile),
            "unix:path=/run/dbus/system_bus_socket": str(n.dbus_address),
            "IP:192.0.2.11": f"IP:{n.address}",
        }

    def relocate(self, text: str) -> str:
        table = self.paths()
        pattern = "|".join(re.escape(k) for k in sorted(table, key=len, reverse=True))
        return re.sub(pattern, lambda m: table[m.group(0)], text)

    def confined(self, cmd: str) -> str:
        """Refuse a command that would still touch the real system (a path this test does not map)."""
        mine = (str(self.root), str(self.lab.workdir))
        paths = re.findall(r"(?:^|[\s'\"=:,])(/[^\s'\",]*)", cmd)
        system = r"/(etc|opt|run|var|usr|srv|lib|home|root|boot)\b"
        outside = [p for p in paths if re.match(system, p) and not p.startswith(mine)]
        assert not outside, f"README command writes outside what this test maps: {cmd} ({outside})"
        return cmd

    def relocate_file(self, path: Path) -> None:
        path.write_text(self.relocate(path.read_text()))  # in place: owner, group and mode stay

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k in {"LANG", "TERM"}}
        return {**keep, "PATH": ROOT_PATH, "HOME": "/root"}

    def sh(self, script: str, *, stdin: str | None = None, timeout: float = 120) -> str:
        self.transcript.append(script)
        r = subprocess.run(
            ["sh", "-e", "-c", script],
            cwd=self.checkout,
            env=self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,  # no controlling terminal: getpass reads stdin
            umask=0o022,
        )
        assert r.returncode == 0, f"README command failed ({r.returncode}):\n{script}\n{r.stdout}{r.stderr}"
        return r.stdout

    # The commands that need a stand-in here (see the module docstring); everything else goes to sh.

    def rules(self) -> list[tuple[str, Callable[[re.Match[str]], None]]]:
        return [
            (r"apt-get install -y (\S+)", self.apt_install),
            (r"(\S+/bin/pip) install \.", self.pip_install),
            (r"systemd-sysusers", self.sysusers),
            (r"systemctl reload dbus", self.reload_dbus),
            (r"systemctl restart keepalived", self.restart_keepalived),
            (r"systemctl daemon-reload", lambda _m: None),  # the unit file is read when started
            (r"systemctl enable --now (\S+)", self.start_unit),
            (r"journalctl -u (\S+) -n (\d+)", self.journal),
            (r"(\S+/bin/python) -c '(.*getpass.*)'", self.hash_password),
            (r"editor (\S+)", self.edit),
            (r'curl (.*) -u (\w+) ("[^"]*"|\S+)( \| head)?', self.curl),
        ]

    def follow(self, steps: list[tuple[str, list[str]]]) -> None:
        rules = self.rules()
        for title, commands in steps:
            self.transcript.append(f"# {title}")
            script: list[str] = []
            for cmd in commands:
                for pattern, action in rules:
                    m = re.fullmatch(pattern, cmd)
                    if m:
                        if script:
                            self.sh("\n".join(script))
                            script = []
                        self.transcript.append(f"# (stand-in for) {cmd}")
                        action(m)
                        break
                else:
                    assert not re.search(r"\b(systemctl|journalctl|editor|getpass)\b", cmd), (
                        f"README step {title!r}: this test does not know how to follow {cmd!r}"
                    )
                    script.append(self.confined(self.relocate(cmd)))
            if script:
                self.sh("\n".join(script))

    def apt_install(self, m: re.Match[str]) -> None:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", m.group(1)], capture_output=True, text=True)
        if "install ok installed" not in r.stdout:
            self.sh(m.group(0), timeout=300)

    def pip_install(self, m: re.Match[str]) -> None:
        t0 = time.monotonic()
        self.sh(f"{self.relocate(m.group(1))} install .", timeout=300)
        self.timings["pip install ."] = time.monotonic() - t0

    def sysusers(self, _m: re.Match[str]) -> None:
        try:
            pwd.getpwnam(USER)
        except KeyError:
            pass
        else:
            pytest.skip(f"user {USER} already exists on this machine: not this test's to create or remove")
        files = sorted((self.root / "etc" / "sysusers.d").glob("*.conf"))
        assert [f.name for f in files] == ["ka-exporter.conf"]
        self.user_created = True  # from here on, cleanup removes it
        self.sh(shlex.join(["systemd-sysusers", *map(str, files)]))

    def reload_dbus(self, _m: re.Match[str]) -> None:
        # The lab's bus stands for the system bus: its configuration gains the system.d directory that
        # Debian's /usr/share/dbus-1/system.conf includes.
        conf = self.node.dbus_config
        if str(self.system_d) not in conf.read_text():
            conf.write_text(
                conf.read_text().replace(
                    "</busconfig>", f"  <includedir>{self.system_d}</includedir>\n</busconfig>"
                )
            )
        exec_reload = "dbus-send --print-reply --system --type=method_call --dest=org.freedesktop.DBus / "
        exec_reload += "org.freedesktop.DBus.ReloadConfig"  # dbus.service's ExecReload
        self.sh(exec_reload.replace("--system", f"--bus={self.node.dbus_address}"))

    def restart_keepalived(self, _m: re.Match[str]) -> None:
        self.lab.restart("a")
        assert self.lab.wait_for(lambda: self.lab.master() == "a", timeout=10), self.lab.status()

    def start_unit(self, m: re.Match[str]) -> None:
        self.relocate_installed_files()
        unit = unit_file(self.root / "etc" / "systemd" / "system" / f"{m.group(1)}.service")
        env: dict[str, str] = {}
        for value in unit.get("EnvironmentFile", []):
            optional = value.startswith("-")
            path = Path(value.lstrip("-"))
            if path.exists() or not optional:
                env.update(environment_file(path))
        (user,) = unit["User"]
        (group,) = unit["Group"]
        account = pwd.getpwnam(user)
        # What systemd puts in a service's environment for User=.
        env |= {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "USER": user, "LOGNAME": user}
        env |= {"HOME": account.pw_dir, "SHELL": account.pw_shell}
        (ambient,) = unit["AmbientCapabilities"]
        (bounding,) = unit["CapabilityBoundingSet"]
        setpriv = [
            "setpriv",
            f"--reuid={user}",
            f"--regid={group}",
            "--init-groups",
            f"--inh-caps={cap_list(ambient)}",
            f"--ambient-caps={cap_list(ambient)}",
            f"--bounding-set={cap_list(bounding)}",
        ]
        if unit.get("NoNewPrivileges") == ["yes"]:
            setpriv.append("--no-new-privs")
        (start,) = unit["ExecStart"]
        argv = ["ip", "netns", "exec", self.node.netns, *setpriv, "--", *exec_start(start, env)]
        self.transcript.append(shlex.join(argv))
        umask = int(unit.get("UMask", ["0022"])[0], 8)
        with open(self.log, "wb") as out:
            self.exporter = subprocess.Popen(
                argv, env=env, cwd="/", stdout=out, stderr=subprocess.STDOUT, umask=umask
            )

    def relocate_installed_files(self) -> None:
        """The files the README installed name /etc/ka-exporter, /opt/ka-exporter and keepalived's real
        paths: point them at the temporary root and the lab node (an operator's paths would just be right)."""
        etc = self.root / "etc"
        for path in (
            etc / "ka-exporter" / "ka-exporter.yml",
            etc / "ka-exporter" / "web-config.yml",
            etc / "default" / "ka-exporter",
            etc / "systemd" / "system" / "ka-exporter.service",
        ):
            self.relocate_file(path)
        # keepalived runs with TMPDIR set in the lab, and on its own bus.
        yml = etc / "ka-exporter" / "ka-exporter.yml"
        yml.write_text(yml.read_text() + f"keepalived.dumps-dir: {self.node.tmpdir}\n")
        default = etc / "default" / "ka-exporter"
        default.write_text(
            default.read_text().replace("#DBUS_SYSTEM_BUS_ADDRESS=", "DBUS_SYSTEM_BUS_ADDRESS=")
        )

    def journal(self, m: re.Match[str]) -> None:
        self.wait_serving()
        lines = self.log.read_text(errors="replace").splitlines()[-int(m.group(2)) :]
        self.transcript.append("\n".join(lines))

    def hash_password(self, m: re.Match[str]) -> None:
        out = self.sh(self.relocate(m.group(0)), stdin=self.password + "\n")
        self.password_hash = out.strip().splitlines()[-1]
        assert bcrypt.checkpw(self.password.encode(), self.password_hash.encode())

    def edit(self, m: re.Match[str]) -> None:
        """What the operator does in the editor: put the new hash under basic_auth_users."""
        path = Path(self.relocate(m.group(1)))
        assert self.password_hash is not None, "the README edits web-config.yml before making a hash"
        text, n = re.subn(
            rf"^(basic_auth_users:\n(?:\s*#.*\n)*\s+{re.escape(self.scrape_user)}:\s*)\S+$",
            lambda x: x.group(1) + self.password_hash,  # type: ignore[operator]
            path.read_text(),
            flags=re.M,
        )
        assert n == 1, f"web-config.yml has no '{self.scrape_user}: <hash>' under basic_auth_users"
        path.write_text(text)

    def curl(self, m: re.Match[str]) -> None:
        options, user, url, head = m.groups()
        hostname = subprocess.run(["hostname", "-f"], capture_output=True, text=True).stdout.strip()
        resolve = f"--resolve {hostname}:9774:{self.node.address}"
        cmd = (
            f"curl --fail -sS {resolve} {self.relocate(options)} -u {user}:{self.password} {url}{head or ''}"
        )
        self.wait_serving()
        self.curl_output = self.sh(f"exec ip netns exec {self.node.netns} sh -c {shlex.quote(cmd)}")

    def wait_serving(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        assert self.exporter is not None, "the README checks the service before starting it"
        while time.monotonic() < deadline:
            assert self.exporter.poll() is None, f"the exporter exited: {self.log.read_text()}"
            r = subprocess.run(
                ["ip", "netns", "exec", self.node.netns, "curl", "-sk", "-o/dev/null", "-w%{http_code}",
                 "https://127.0.0.1:9774/-/healthy"],
                capture_output=True, text=True, timeout=10,
            )  # fmt: skip
            if r.stdout in ("200", "401"):  # answering over TLS (everything is behind basic auth)
                return
            time.sleep(0.2)
        raise AssertionError(f"the exporter never served https://:9774/: {self.log.read_text()}")

    def cleanup(self) -> None:
        if self.exporter is not None and self.exporter.poll() is None:
            stop_process(self.exporter)
        if self.user_created:
            subprocess.run(["userdel", USER], capture_output=True)
            subprocess.run(["groupdel", USER], capture_output=True)  # if userdel left it


# ------------------------------------------------------------------------------------------- the test


def checkout_to(dest: Path) -> Path:
    """A copy of the repository's tracked files as they are in the working tree (pip builds in it)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in files.decode().split("\0"):
        if name and (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def test_readme_deployment_gives_a_non_root_tls_exporter_that_prometheus_scrapes(world_dir, tmp_path):
    from tests.prometheus_harness import prometheus

    section = readme_section("Deployment")
    sh_blocks = code_blocks(section, "sh")
    yaml_blocks = code_blocks(section, "yaml")
    assert len(sh_blocks) == 1 and len(yaml_blocks) == 1, "Deployment: one sh block and one Prometheus block"
    steps = shell_steps(sh_blocks[0])
    assert [t.split(".")[0] for t, _ in steps] == [str(i) for i in range(1, len(steps) + 1)]
    (job,) = yaml.safe_load(yaml_blocks[0])["scrape_configs"]

    for d in ("etc/sysusers.d", "etc/default", "etc/systemd/system", "opt"):
        (world_dir / d).mkdir(parents=True)
    checkout = checkout_to(world_dir / "src" / "ka-exporter")
    hostname = subprocess.run(["hostname", "-f"], capture_output=True, text=True).stdout.strip()

    with Lab(profile="fast", nodes=2, dbus=True) as lab:
        user = job["basic_auth"]["username"]
        op = Operator(
            lab, world_dir, checkout, secrets.token_urlsafe(16), user, tmp_path / "ka-exporter.journal"
        )
        op.system_d.mkdir()
        fwd: Forwarder | None = None
        try:
            op.follow(steps)
            print(f"pip install . took {op.timings['pip install .']:.1f} s")
            assert op.exporter is not None

            # curl as the README does: metrics over TLS, verified against the certificate made in step 5.
            assert op.curl_output.startswith("# HELP "), op.curl_output[:500]
            assert len(op.curl_output.splitlines()) == 10  # | head

            # It really runs as the unprivileged user, in the node's namespace, with CAP_NET_RAW only.
            lines = Path(f"/proc/{op.exporter.pid}/status").read_text().splitlines()
            status = {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}
            uid, gid = pwd.getpwnam(USER).pw_uid, pwd.getpwnam(USER).pw_gid
            assert uid != 0 and uid < 1000  # a system user, as sysusers makes it
            assert status["Uid"].split() == [str(uid)] * 4
            assert status["Gid"].split() == [str(gid)] * 4
            for key in ("CapEff", "CapPrm", "CapAmb", "CapBnd"):
                assert int(status[key], 16) == CAP_NET_RAW, (key, status[key])
            assert status["NoNewPrivs"] == "1"
            assert "ka-exporter" in Path(f"/proc/{op.exporter.pid}/cmdline").read_text()
            assert os.stat(f"/proc/{op.exporter.pid}/ns/net").st_ino == netns.netns_inode(
                lab.nodes["a"].netns
            )

            # A wrong password is refused.
            wrong = subprocess.run(
                ["ip", "netns", "exec", lab.nodes["a"].netns, "curl", "-s", "-o/dev/null", "-w%{http_code}",
                 "--cacert", f"{world_dir}/etc/ka-exporter/tls/server.crt", "-u", f"{user}:guess",
                 "--resolve", f"{hostname}:9774:{lab.nodes['a'].address}", f"https://{hostname}:9774/metrics"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert wrong.stdout == "401"

            # Prometheus with the README's scrape job: https, every node's certificate in one ca_file (node
            # b's made by the README's openssl command too, and first: Prometheus must pick the right one).
            prom_dir = tmp_path / "prom"
            prom_dir.mkdir()
            (openssl,) = [c for _, cmds in steps for c in cmds if c.startswith("openssl req ")]
            other = prom_dir / "node-b"
            other.mkdir()
            op.sh(f"cd {other}\n" + openssl.replace("IP:192.0.2.11", f"IP:{lab.nodes['b'].address}"))
            ca = prom_dir / "nodes.crt"
            ca.write_bytes(
                (other / "server.crt").read_bytes()
                + (world_dir / "etc/ka-exporter/tls/server.crt").read_bytes()
            )
            secret = prom_dir / "password"
            secret.write_text(op.password)
            secret.chmod(0o600)
            scrape: dict[str, Any] = {
                k: v for k, v in job.items() if k not in {"job_name", "scheme", "static_configs"}
            }
            scrape["tls_config"] = {**scrape["tls_config"], "ca_file": str(ca), "server_name": hostname}
            scrape["basic_auth"] = {**scrape["basic_auth"], "password_file": str(secret)}
            fwd = Forwarder(lab.nodes["a"].netns, lab.nodes["a"].address, 9774)
            target = f"127.0.0.1:{fwd.local_port}"
            with prometheus(prom_dir, [target], scheme=job["scheme"], extra_scrape=scrape) as prom:
                assert lab.wait_for(lambda: prom.targets_up().get(target) == "up", timeout=20), prom.get(
                    "/api/v1/targets"
                )["data"]["activeTargets"]
                up = prom.query(f'keepalived_up{{instance="{target}"}}')
                assert [float(r["value"][1]) for r in up] == [1.0], op.log.read_text()
                masters = prom.query(f'keepalived_wire_masters{{instance="{target}"}}')
                assert masters, "the wire source reports nothing"
                assert [float(r["value"][1]) for r in masters] == [1.0]

            # What the node's own view says through the same door (the README's curl, without | head).
            full = op.sh(
                f"exec ip netns exec {lab.nodes['a'].netns} curl --fail -sS --cacert "
                f"{world_dir}/etc/ka-exporter/tls/server.crt -u {user}:{op.password} "
                f"--resolve {hostname}:9774:{lab.nodes['a'].address} https://{hostname}:9774/metrics"
            )
            m = parse_metrics(full)
            sources = {
                dict(labels)["source"]: v
                for (name, labels), v in m.items()
                if name == "ka_exporter_source_up"
            }
            # Every source the README's settings turn on works for the unprivileged user (no dumps: step 3).
            assert sources == dict.fromkeys(("config", "process", "vips", "wire", "dbus", "l2"), 1.0)
            assert (
                sample(m, "keepalived_vrrp_state", iname="VI_1", intf="eth0", vrid=str(lab.instances[0].vrid))
                == 2.0
            )
            journal = op.log.read_text()
            assert "level=error" not in journal, journal
            assert not [
                line for line in journal.splitlines() if "source " in line and "level=warning" in line
            ]
            print("journal:\n" + journal)
            print("followed:\n" + "\n".join(op.transcript))
        finally:
            if fwd is not None:
                fwd.close()
            op.cleanup()
    with pytest.raises(KeyError):
        pwd.getpwnam(USER)
    with pytest.raises(KeyError):
        grp.getgrnam(USER)
