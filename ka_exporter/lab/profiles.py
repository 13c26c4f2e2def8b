"""Lab profiles: the seed guide's classic keepalived.conf pairs, adapted to lab addresses.

Pure text generation, no I/O: `render_config()` returns the keepalived.conf of one node, `instances()`
what the lab should see (instance name, VRID, VIPs, interface). Node order is a, b, c: priorities and
initial states follow that order, so node a is the preferred master of the first instance in every profile.

| profile      | what it mirrors                                                  | VRRP            |
|--------------|------------------------------------------------------------------|-----------------|
| fast         | a minimal pair for quick tests                                   | v3, advert 0.1  |
| fast-ipv6    | the same, native IPv6 (link-local VIP first, then a ULA VIP)      | v3, advert 0.1  |
| basic        | MASTER/BACKUP pair, PASS auth, notify script writing to a file   | v2, advert 1    |
| nginx        | web pair with a check script (weight -60: a failing check moves) | v2, advert 1    |
| mysql        | both BACKUP, nopreempt, track_script weight -20 fall 3 rise 2    | v2, advert 1    |
| dual-master  | two VRIDs, a is master of the first, b of the second             | v2, advert 1    |
| unicast      | unicast_src_ip / unicast_peer instead of multicast               | v2, advert 1    |
| ah           | MASTER/BACKUP pair with IPsec AH authentication (proto 51)       | v2, advert 1    |
| vmac         | fast with use_vmac: VIP on a macvlan vrrp.VRID, virtual MAC       | v3, advert 0.1  |
| vmac-nopreempt | vmac, both BACKUP with nopreempt (no preemption back)          | v3, advert 0.1  |
| fast-unicast | fast, with unicast_src_ip / unicast_peer                          | v3, advert 0.1  |
| many         | 100 instances on one interface (VI_1..VI_100), a master of all   | v2, advert 1    |
| track        | fast with a track_process (-10) and two track_files (-30, and 0)  | v3, advert 0.1  |

In the track profile node N's files NODE_DIR/track.file (weight -30: a 2 in it moves node a from 140 to
80, below node b's 90) and NODE_DIR/fault.file (weight 0: any non-zero number is a FAULT) start at 0.
Its track_process (`kalab-service`, weight -10) never has quorum: inside a network namespace keepalived
2.2.7 cannot listen to the kernel's process events (they exist in the initial namespace only), so every
node runs at its priority - 10.

Check scripts stand in for `pidof nginx` / a MySQL ping: they fail while the node's `service-down` flag file
exists (see `Lab.set_check`), so a rehearsal can break a service without installing one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

#: The PASS password of the profiles that use VRRPv2 authentication. It must never leave keepalived.conf:
#: the lab writes that file mode 0600 and never prints, logs or records it anywhere else.
LAB_PASSWORD = "labPa55w"  # noqa: S105 - a throw-away lab value, and the tests prove it never leaks

NODE_NAMES = ("a", "b", "c")


class LabInstance(NamedTuple):
    """One VRRP instance of a lab, as `lab.instances` lists them."""

    name: str
    vrid: int
    vips: tuple[str, ...]
    interface: str


@dataclass(frozen=True, slots=True)
class Profile:
    """How one lab profile configures keepalived. `priorities` and `masters` are indexed by node (a, b, c)."""

    name: str
    summary: str
    version: int = 2
    advert_int: float = 1.0
    auth: bool = False
    auth_type: str = "PASS"  # or "AH": the advert travels inside an IPsec AH header (IP protocol 51)
    ipv6: bool = False
    notify: bool = False
    check: str | None = None  # vrrp_script name, e.g. "chk_nginx"
    check_weight: int = 0
    check_fall: int = 1
    check_rise: int = 1
    nopreempt: bool = False
    all_backup: bool = False
    dual: bool = False
    unicast: bool = False
    notify_fifo: bool = False  # global_defs vrrp_notify_fifo NODE_DIR/notify.fifo
    priorities: tuple[int, int, int] = (150, 100, 50)
    vmac: bool = False  # use_vmac: keepalived puts the VIP on a macvlan with MAC 00:00:5e:00:01:VRID
    auth_pass: str = LAB_PASSWORD
    count: int = 1  # VRRP instances on the one interface (VRIDs and VIPs consecutive), e.g. "many"
    track: bool = False  # a track_process and two track_files (see the module docstring)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("fast", "VRRPv3, advert_int 0.1: a master within ~0.4 s", version=3, advert_int=0.1),
        Profile("fast-ipv6", "fast, native IPv6 VRRPv3", version=3, advert_int=0.1, ipv6=True),
        Profile("basic", "MASTER/BACKUP, VRRPv2, PASS auth, notify script", auth=True, notify=True),
        Profile(
            "nginx",
            "web pair with a check script (weight -60)",
            auth=True,
            check="chk_nginx",
            check_weight=-60,
            check_fall=2,
            check_rise=2,
        ),
        Profile(
            "mysql",
            "both BACKUP, nopreempt, track_script weight -20 fall 3 rise 2",
            auth=True,
            check="chk_mysql",
            check_weight=-20,
            check_fall=3,
            check_rise=2,
            nopreempt=True,
            all_backup=True,
            priorities=(100, 90, 80),
        ),
        Profile("dual-master", "two VRIDs, a master of one, b of the other", auth=True, dual=True),
        Profile("unicast", "unicast_src_ip / unicast_peer, VRRPv2, PASS auth", auth=True, unicast=True),
        Profile("ah", "MASTER/BACKUP, VRRPv2, IPsec AH authentication", auth=True, auth_type="AH"),
        Profile("vmac", "fast with use_vmac (macvlan, virtual MAC)", version=3, advert_int=0.1, vmac=True),
        Profile(
            "vmac-nopreempt",
            "vmac, both BACKUP with nopreempt",
            version=3,
            advert_int=0.1,
            vmac=True,
            nopreempt=True,
            all_backup=True,
        ),
        Profile("fifo", "fast, with vrrp_notify_fifo", version=3, advert_int=0.1, notify_fifo=True),
        Profile(
            "fast-unicast",
            "fast, with unicast_src_ip / unicast_peer",
            version=3,
            advert_int=0.1,
            unicast=True,
        ),
        Profile("many", "100 instances on one interface, a master of all", count=100),
        Profile("track", "fast, with track_process and track_file", version=3, advert_int=0.1, track=True),
    )
}


#: One node's setting differing from its peers' (`Lab.misconfigure`): each makes keepalived drop the
#: other's adverts. "auth": another PASS password; "version": VRRPv3 against VRRPv2 (or back);
#: "interval": twice the advert interval (VRRPv2 drops adverts whose interval differs).
MISMATCHES = ("auth", "version", "interval")

#: The PASS password of a node misconfigured with "auth" (a throw-away lab value like LAB_PASSWORD).
OTHER_PASSWORD = "0therPa5"  # noqa: S105


def mismatched(profile: Profile, mismatch: str | None) -> Profile:
    """`profile` with one setting changed as `MISMATCHES` describes (None: unchanged)."""
    if mismatch is None:
        return profile
    if mismatch == "auth":
        if not profile.auth:
            raise ValueError(f"profile {profile.name} has no authentication to mismatch")
        return replace(profile, auth_pass=OTHER_PASSWORD)
    if mismatch == "version":
        return replace(profile, version=2 if profile.version == 3 else 3, auth=False)
    if mismatch == "interval":
        return replace(profile, advert_int=profile.advert_int * 2)
    raise ValueError(f"unknown mismatch {mismatch!r} (choose from {', '.join(MISMATCHES)})")


def resolve_profile(name: str, ipv6: bool) -> Profile:
    """The profile called `name`, or its IPv6 variant when `ipv6` is set; ValueError names the choices."""
    if ipv6 and not name.endswith("-ipv6"):
        name = f"{name}-ipv6"
    try:
        return PROFILES[name]
    except KeyError:
        choices = ", ".join(PROFILES)
        if ipv6:
            raise ValueError(
                f"profile {name!r} does not exist: IPv6 is available as fast-ipv6 only"
            ) from None
        raise ValueError(f"unknown lab profile {name!r} (choose from {choices})") from None


@dataclass(frozen=True, slots=True)
class Addressing:
    """A lab's addresses: 10.X.Y.0/24 and fdfa:XXYY::/64, with node n at host n (a=1, b=2, c=3)."""

    x: int
    y: int

    @property
    def subnet(self) -> str:
        return f"10.{self.x}.{self.y}.0/24"

    @property
    def subnet6(self) -> str:
        return f"fdfa:{self.x:02x}{self.y:02x}::/64"

    def v4(self, host: int) -> str:
        return f"10.{self.x}.{self.y}.{host}"

    def v6(self, host: int) -> str:
        return f"fdfa:{self.x:02x}{self.y:02x}::{host:x}"

    def mac(self, host: int) -> str:
        return f"02:{self.x:02x}:{self.y:02x}:00:00:{host:02x}"

    @property
    def vrid(self) -> int:
        """The first VRID: derived from the subnet so two labs seen by one sniffer do not share it."""
        return self.y % 250 + 1


def instances(profile: Profile, addr: Addressing, interface: str = "eth0") -> list[LabInstance]:
    """The VRRP instances `profile` configures, with their VIPs (without prefix length)."""
    if profile.ipv6:
        return [LabInstance("VI_1", addr.vrid, (f"fe80::fa:{addr.y:x}:100", addr.v6(0x100)), interface)]
    first = LabInstance("VI_1", addr.vrid, (addr.v4(100),), interface)
    if profile.count > 1:
        return [
            LabInstance(f"VI_{i + 1}", (addr.vrid + i - 1) % 255 + 1, (addr.v4(100 + i),), interface)
            for i in range(profile.count)
        ]
    if profile.dual:
        return [first, LabInstance("VI_2", addr.vrid + 1, (addr.v4(101),), interface)]
    return [first]


def node_index(node: str) -> int:
    return NODE_NAMES.index(node)


def _vip_line(vip: str) -> str:
    return f"{vip}/64" if ":" in vip else f"{vip}/24"


def render_config(
    profile: Profile,
    addr: Addressing,
    node: str,
    *,
    nodes: int,
    node_dir: Path,
    dbus: bool,
    interface: str = "eth0",
) -> str:
    """keepalived.conf for `node` (one of "a", "b", "c") in a lab of `nodes` nodes."""
    idx = node_index(node)
    lines = [
        f"# ka-exporter lab, profile {profile.name}: {profile.summary}",
        "global_defs {",
        f"    router_id lab-{node}",
        "    enable_script_security",
        "    script_user root",
    ]
    if profile.version == 3:
        lines.append("    vrrp_version 3")
    if dbus:
        lines.append("    enable_dbus")
    if profile.notify_fifo:
        lines.append(f"    vrrp_notify_fifo {node_dir / 'notify.fifo'}")
    lines.append("}")
    if profile.check:
        lines += [
            "",
            f"vrrp_script {profile.check} {{",
            f'    script "{node_dir / "check.sh"}"',
            "    interval 1",
            f"    weight {profile.check_weight}",
            f"    fall {profile.check_fall}",
            f"    rise {profile.check_rise}",
            "}",
        ]
    if profile.track:
        lines += _track_blocks(node_dir)
    for n, inst in enumerate(instances(profile, addr, interface)):
        # In dual-master the second instance's preferred master is node b: rotate the priorities.
        rank = (idx - n) % nodes if profile.dual else idx
        priority = profile.priorities[rank]
        state = "BACKUP" if profile.all_backup or rank != 0 else "MASTER"
        lines += [
            "",
            f"vrrp_instance {inst.name} {{",
            f"    state {state}",
            f"    interface {interface}",
            f"    virtual_router_id {inst.vrid}",
            f"    priority {priority}",
            f"    advert_int {profile.advert_int:g}",
        ]
        if profile.ipv6:
            lines.append("    native_ipv6")
        if profile.nopreempt:
            lines.append("    nopreempt")
        if profile.vmac:
            lines.append("    use_vmac")
        if profile.unicast:
            lines.append(f"    unicast_src_ip {addr.v4(idx + 1)}")
            lines.append("    unicast_peer {")
            lines += [f"        {addr.v4(peer + 1)}" for peer in range(nodes) if peer != idx]
            lines.append("    }")
        if profile.auth:
            lines += [
                "    authentication {",
                f"        auth_type {profile.auth_type}",
                f"        auth_pass {profile.auth_pass}",
                "    }",
            ]
        lines.append("    virtual_ipaddress {")
        lines += [f"        {_vip_line(vip)}" for vip in inst.vips]
        lines.append("    }")
        if profile.check:
            lines += ["    track_script {", f"        {profile.check}", "    }"]
        if profile.track:
            lines += [
                "    track_process {",
                f"        {TRACK_PROCESS} weight -10",
                "    }",
                "    track_file {",
                f"        {TRACK_FILE} weight -30",
                f"        {FAULT_FILE} weight 0",
                "    }",
            ]
        if profile.notify:
            lines.append(f'    notify "{node_dir / "notify.sh"}"')
        lines.append("}")
    return "\n".join(lines) + "\n"


def notify_script(log_path: Path) -> str:
    """A notify script: keepalived calls it as `notify.sh TYPE NAME STATE PRIORITY`; it appends one line."""
    return f'#!/bin/sh\necho "$(date +%s.%N) $*" >> "{log_path}"\n'


def check_script(flag_path: Path) -> str:
    """A check script standing in for `pidof nginx` / a MySQL ping: fails while the flag file exists."""
    return f'#!/bin/sh\n# the lab service is "down" while {flag_path} exists\ntest ! -e "{flag_path}"\n'


#: The track profile's trackers (vrrp_track_process and track_file names) and the process it tracks.
TRACK_PROCESS = "chk_service"
TRACK_FILE = "chk_file"
FAULT_FILE = "chk_fault"
TRACKED_COMMAND = "kalab-service"


def _track_blocks(node_dir: Path) -> list[str]:
    """The track profile's vrrp_track_process and track_file blocks (files under `node_dir`, set to 0)."""
    lines = [
        "",
        f"vrrp_track_process {TRACK_PROCESS} {{",
        f"    process {TRACKED_COMMAND}",
        "    quorum 1",
        "    delay 0.1",
        "    weight -10",
        "}",
    ]
    for name, file in ((TRACK_FILE, "track.file"), (FAULT_FILE, "fault.file")):
        lines += [
            "",
            f"track_file {name} {{",
            f'    file "{node_dir / file}"',
            "    weight 1",
            "    init_file 0 overwrite",
            "}",
        ]
    return lines
