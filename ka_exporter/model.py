"""Domain records: the frozen dataclasses every source produces and every output reads.

Nothing here does I/O or imports prometheus_client. A source turns its input into these records and
hands them to the store; collectors, verdicts and the status views only ever read them.

No record carries a VRRP password: parsers drop it at the door (the wire keeps only a keyed digest).
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from enum import IntEnum


class VrrpState(IntEnum):
    """keepalived's instance state, numbered as keepalived's JSON dump and the common exporter do."""

    INIT = 0
    BACKUP = 1
    MASTER = 2
    FAULT = 3
    STOP = 4  # keepalived 2.x "STOP" (instance being shut down); exported as-is

    @classmethod
    def parse(cls, text: str) -> VrrpState | None:
        """Map keepalived's spellings ("MASTER", "BACKUP", "FAULT", "INIT", "STOP") to a state."""
        key = text.strip().upper()
        if key.startswith("VRRP_STATE_"):
            key = key[len("VRRP_STATE_") :]
        if key == "MAST":
            key = "MASTER"
        if key == "BACK":
            key = "BACKUP"
        if key == "FAULTY":
            key = "FAULT"
        try:
            return cls[key]
        except KeyError:
            return None


# --------------------------------------------------------------------------------------------------
# keepalived.conf: what *should* exist
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfVip:
    """One `virtual_ipaddress` entry: address without prefix, plus what the line said."""

    address: str
    prefixlen: int | None = None
    dev: str | None = None
    label: str | None = None
    excluded: bool = False  # from `virtual_ipaddress_excluded`: installed with the others, not advertised


@dataclass(frozen=True, slots=True)
class ConfScript:
    """A `vrrp_script` block."""

    name: str
    script: str
    interval: float = 1.0
    weight: int = 0
    fall: int = 1
    rise: int = 1


@dataclass(frozen=True, slots=True)
class ConfInstance:
    """A `vrrp_instance` block (the password is never kept: only whether auth is configured)."""

    name: str
    interface: str | None
    vrid: int | None
    state: str | None = None
    priority: int = 100
    advert_int: float = 1.0
    nopreempt: bool = False
    version: int | None = None  # per-instance `version`, else global `vrrp_version`, else None
    family: str = "inet"  # "inet" or "inet6": from the first VIP or native_ipv6
    vips: tuple[ConfVip, ...] = ()
    unicast_src_ip: str | None = None
    unicast_peers: tuple[str, ...] = ()
    track_scripts: tuple[str, ...] = ()
    track_interfaces: tuple[str, ...] = ()
    auth_type: str | None = None  # "PASS" / "AH" / None
    sync_group: str | None = None


@dataclass(frozen=True, slots=True)
class ConfRealServer:
    """A `real_server` inside a `virtual_server` block."""

    key: str  # lvs_key(address, port): the `real_server` label
    weight: int = 1
    inhibit_on_failure: bool = False


@dataclass(frozen=True, slots=True)
class ConfVirtualServer:
    """A `virtual_server` block: `IP PORT`, `fwmark N` or `group NAME`."""

    key: str  # "10.0.0.1:80", "[2001:db8::1]:80", "fwmark:1", "group:NAME" (the `virtual_server` label)
    protocol: str = "TCP"
    lb_algo: str | None = None
    quorum: int = 1
    delay_loop: float = 60.0
    real_servers: tuple[ConfRealServer, ...] = ()
    sorry_server: str | None = None  # "address:port"


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """Something the config reader could not understand, with file and line."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class ConfNotifyFifo:
    """A `notify_fifo` / `vrrp_notify_fifo` line of global_defs.

    `has_script`: keepalived also runs a `*_notify_fifo_script` that reads this FIFO. A FIFO's lines go
    to one reader each, so reading it as well would steal events from the operator's script.
    """

    kind: str  # "notify_fifo" / "vrrp_notify_fifo"
    path: str
    has_script: bool = False


@dataclass(frozen=True, slots=True)
class KeepalivedConfig:
    """Everything the exporter needs to know from keepalived.conf."""

    instances: tuple[ConfInstance, ...] = ()
    scripts: tuple[ConfScript, ...] = ()
    sync_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    router_id: str | None = None
    vrrp_version: int | None = None
    enable_dbus: bool = False
    notify_fifos: tuple[ConfNotifyFifo, ...] = ()
    files: tuple[str, ...] = ()
    problems: tuple[ConfigProblem, ...] = ()
    virtual_servers: tuple[ConfVirtualServer, ...] = ()  # LVS (read only as far as the lvs source needs)


# --------------------------------------------------------------------------------------------------
# keepalived's own view: dumps (.data/.stats/.json) and D-Bus
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackedScript:
    name: str
    weight: int = 0
    status: str | None = None  # "GOOD" / "BAD" / "INIT" / None when unknown


@dataclass(frozen=True, slots=True)
class TrackedInterface:
    name: str
    weight: int = 0
    up: bool | None = None


@dataclass(frozen=True, slots=True)
class TrackedProcess:
    """A `vrrp_track_process` an instance tracks (keepalived.data's "VRRP Track processes" section).

    `weight` is the instance's weight for it (0: the instance goes to FAULT without quorum);
    `up` keepalived's "Have quorum", `running` its "Current processes", `quorum` its "Min processes".
    """

    name: str
    weight: int = 0
    up: bool | None = None
    running: int | None = None
    quorum: int | None = None


@dataclass(frozen=True, slots=True)
class TrackedFile:
    """A `track_file` (`vrrp_track_file`) an instance tracks: `status` is the number read from the file.

    With the instance's `weight` 0 a non-zero status is a FAULT; otherwise status * weight is added to
    the priority.
    """

    name: str
    weight: int = 0
    status: int | None = None


@dataclass(frozen=True, slots=True)
class TrackedBfd:
    """A `bfd_instance` an instance tracks (`track_bfd`): `up` is keepalived's "Bfd is up" / "Bfd is down"."""

    name: str
    weight: int = 0
    up: bool | None = None


@dataclass(frozen=True, slots=True)
class InstanceStats:
    """keepalived's per-instance counters (.stats dump or JSON "stats"), named as its JSON names them."""

    advert_rcvd: int = 0
    advert_sent: int = 0
    become_master: int = 0
    release_master: int = 0
    packet_len_err: int = 0
    ip_ttl_err: int = 0
    invalid_type_rcvd: int = 0
    advert_interval_err: int = 0
    addr_list_err: int = 0
    invalid_authtype: int = 0
    authtype_mismatch: int = 0
    auth_failure: int = 0
    pri_zero_rcvd: int = 0
    pri_zero_sent: int = 0


@dataclass(frozen=True, slots=True)
class InstanceView:
    """One VRRP instance as keepalived itself reports it (from D-Bus, dumps, or both merged)."""

    name: str
    interface: str
    vrid: int
    family: str = "inet"  # "inet" / "inet6"
    state: VrrpState | None = None
    wanted_state: VrrpState | None = None
    version: int | None = None
    priority: int | None = None  # base
    effective_priority: int | None = None
    master_priority: int | None = None  # what a BACKUP last heard from its master
    master_router: str | None = None
    advert_int: float | None = None  # seconds
    preempt: bool | None = None
    last_transition: float | None = None  # unix time
    auth_type: str | None = None  # "NONE" / "PASS" / "AH"
    vips: tuple[str, ...] = ()  # addresses without prefix
    vips_set: tuple[str, ...] = ()  # those keepalived says are installed (" set")
    sync_group: str | None = None
    tracked_scripts: tuple[TrackedScript, ...] = ()
    tracked_interfaces: tuple[TrackedInterface, ...] = ()
    stats: InstanceStats | None = None
    tracked_processes: tuple[TrackedProcess, ...] = ()
    tracked_files: tuple[TrackedFile, ...] = ()
    vips_excluded: tuple[str, ...] = ()  # `virtual_ipaddress_excluded`, addresses without prefix
    tracked_bfds: tuple[TrackedBfd, ...] = ()


# --------------------------------------------------------------------------------------------------
# local host: process and addresses
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """keepalived's processes as psutil sees them (only those in the watched network namespace)."""

    running: bool
    pid: int | None = None
    start_time: float | None = None
    vrrp_pids: tuple[int, ...] = ()
    checker_pids: tuple[int, ...] = ()
    bfd_pids: tuple[int, ...] = ()
    restarts: int = 0  # parent pid changes seen by this exporter
    child_restarts: int = 0
    exe: str | None = None
    tmpdir: str | None = None  # TMPDIR from the parent's environment, where its dumps go
    pidfile_problem: str | None = None  # e.g. "pid file /run/k.pid names pid 42 (sleep), not keepalived"
    stopped_pids: tuple[int, ...] = ()  # keepalived processes stopped (SIGSTOP: State T): frozen
    rejected: int = 0  # processes named keepalived this exporter could not verify (owner, netns) and ignored


@dataclass(frozen=True, slots=True)
class LocalAddress:
    """An address configured on a local interface (from netlink)."""

    address: str
    prefixlen: int
    interface: str
    family: str  # "inet" / "inet6"


# --------------------------------------------------------------------------------------------------
# the wire
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Advert:
    """One decoded VRRP advertisement. `auth_digest` is a keyed hash of a PASS password, never it."""

    timestamp: float
    interface: str
    family: str  # "inet" / "inet6"
    source: str
    destination: str
    version: int
    vrid: int
    priority: int
    interval: float  # seconds (v2: whole seconds, v3: centiseconds / 100)
    addresses: tuple[str, ...]
    auth_type: int = 0  # v2: 0 none, 1 PASS, 2 AH (also set when AH-wrapped); v3: 0
    auth_digest: str | None = None
    ttl: int = 255
    outgoing: bool = False


@dataclass(frozen=True, slots=True)
class WirePeer:
    """What one router (interface, family, vrid, source) has been advertising."""

    interface: str
    family: str
    vrid: int
    source: str
    first_seen: float
    last_seen: float
    priority: int
    interval: float
    version: int
    addresses: tuple[str, ...]
    auth_type: int
    auth_digest: str | None
    adverts: int
    local: bool = False  # sent by this host
    last_priority_zero: float | None = None
    contested: bool = False  # adverts from this source disagree with each other (a spoofer using its address)


@dataclass(frozen=True, slots=True)
class WireStats:
    """Counters of the wire source that are not per router."""

    packets: int = 0
    invalid: tuple[tuple[str, int], ...] = ()  # (reason, count)
    kernel_drops: int = 0
    kernel_packets: int = 0
    evictions: int = 0
    expirations: int = 0
    interfaces: tuple[str, ...] = ()
    listening_since: float | None = None  # when capture started (no verdict of absence before a hold time)


# --------------------------------------------------------------------------------------------------
# failover timing from the wire (verdicts/failover.py keeps the accounts)
# --------------------------------------------------------------------------------------------------

# From a preemption's milliseconds to a SIGKILL's master-down interval at advert_int 10 (30+ s).
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative bucket counts for BUCKETS (then +Inf = count), the count and the sum."""

    buckets: tuple[int, ...] = (0,) * len(BUCKETS)
    count: int = 0
    total: float = 0.0

    def observe(self, value: float) -> Histogram:
        return Histogram(
            tuple(n + (value <= le) for n, le in zip(self.buckets, BUCKETS, strict=True)),
            self.count + 1,
            self.total + value,
        )


@dataclass(frozen=True, slots=True)
class FailoverEvent:
    """One change of master on a VRID. Exactly one of `gap` / `overlap` is set."""

    key: tuple[str, str, int]  # (interface, family, vrid)
    at: float  # the new master's first advert
    old: str | None
    new: str
    gap: float | None = None
    overlap: float | None = None


@dataclass(frozen=True, slots=True)
class VridTiming:
    """A VRID's accounts since the exporter started."""

    key: tuple[str, str, int]  # (interface, family, vrid)
    master: str | None = None
    master_changes: int = 0
    masterless_seconds: float = 0.0
    multi_master_seconds: float = 0.0
    observed_seconds: float = 0.0
    unobserved_seconds: float = 0.0
    gaps: Histogram = field(default_factory=Histogram)
    overlaps: Histogram = field(default_factory=Histogram)
    history: tuple[StateSpan, ...] = ()  # the latest spans of one state, oldest first (bounded)
    # per VIP of the VRID: (vip, delays from a new master's first advert to its first gratuitous ARP /
    # unsolicited NA, changes it did not announce within the bound); None: no L2 witness feeds it
    announce: tuple[tuple[str, Histogram, int], ...] | None = None


@dataclass(frozen=True, slots=True)
class StateSpan:
    """A stretch of time a VRID spent in one state on the wire: `masters` 1 (one master, `master`),
    0 (no master), 2 (two or more), or -1 (unknown: the sniffer was not listening)."""

    start: float
    end: float
    masters: int
    master: str | None = None


# --------------------------------------------------------------------------------------------------
# the link layer: who answers for each VIP (ARP for IPv4, neighbour discovery for IPv6)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VipAnswers:
    """Who answers for one configured VIP on its link, as the L2 witness (`sources/l2.py`) sees it.

    Answers are ARP replies / gratuitous ARPs (IPv4) or neighbour advertisements (IPv6) naming the
    VIP as their sender/target address. `answerers` are the distinct MACs answering now: while the
    witness probes, those that answered its latest completed probe (two MACs there held the VIP at
    the same instant; a gratuitous ARP heard in passing does not count, or every failover would show
    the old and the new holder together for a while); without probes, those heard within the
    witness's window. With `use_vmac` two masters answer with the same virtual MAC, so
    `last_probe_answers` counts the answers to the latest completed probe, duplicates included
    (IPv4, where an answer to a probe is exact; for IPv6 it counts distinct MACs, two only once both
    answered two probes in a row, since an answer to a DAD probe cannot be told from an unsolicited
    advertisement, which keepalived sends in bursts when it takes over).
    `heard` is every MAC heard naming the VIP within the window, passive frames included.

    `answerers` are OTHER hosts' MACs only: the witness drops this host's own outgoing frames in the
    kernel (and a host does not hear its own ARP replies anyway). Whether this node holds the VIP
    itself comes from `Snapshot.addresses` (netlink), so "this node holds it and one answerer" is two
    holders. `probes_sent` / `answers_seen` are running totals since the witness started.
    """

    vip: str  # canonical address text (verdicts.vips.canonical_ip)
    interface: str
    family: str  # "inet" / "inet6"
    answerers: tuple[str, ...] = ()  # distinct MACs ("aa:bb:cc:dd:ee:ff"), sorted, bounded
    last_probe_answers: int | None = None  # answers to the latest completed probe; None: no probe yet
    last_probe: float | None = None  # when the latest completed probe was sent
    last_answer: float | None = None  # when any answer (reply, gratuitous, unsolicited NA) was last seen
    probing: bool = False  # active probes are sent for this VIP
    listening_since: float | None = None  # when this VIP's capture started (no verdict of absence before)
    probes_sent: int = 0  # active probes sent for this VIP
    answers_seen: int = 0  # frames naming this VIP heard (replies, gratuitous ARPs, NAs)
    heard: tuple[str, ...] = ()  # distinct MACs heard in any frame naming the VIP within the window
    # Time accounts (verdicts.l2.L2Accounts), running totals since the witness started: seconds with
    # no answerer, exactly one, two or more; observed is their sum; unobserved: time the witness could
    # not tell (its start, probes not completing, capture gaps). Unknown time is never downtime.
    confirmed: float | None = None  # the latest probe that agreed with the published result: sent at
    announced: float | None = None  # the latest gratuitous ARP / unsolicited NA heard for the VIP
    no_answerer_seconds: float = 0.0
    one_answerer_seconds: float = 0.0
    multi_answerer_seconds: float = 0.0
    observed_seconds: float = 0.0
    unobserved_seconds: float = 0.0
    vrids: tuple[int, ...] = ()  # the VRIDs of the instances configuring this VIP (keepalived.conf)
    # ... and those instances as (interface, family, vrid), the wire's key: the announce join's key
    instances: tuple[tuple[str, str, int], ...] = ()
    # (time, MAC): the first frame of each burst of gratuitous ARPs / unsolicited NAs per MAC, oldest first
    announcements: tuple[tuple[float, str], ...] = ()
    # (vrid, router address, source MAC, kernel time of the first advert of its current run), others' adverts
    advert_macs: tuple[tuple[int, str, str, float], ...] = ()


# --------------------------------------------------------------------------------------------------
# LVS: keepalived's checker view (keepalived_check.data) and the kernel's IPVS table
# --------------------------------------------------------------------------------------------------


def lvs_key(address: str, port: int | None) -> str:
    """`10.0.0.1:80`, `[2001:db8::1]:80` (address canonical): the label value of a server."""
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port if port is not None else 0}"


@dataclass(frozen=True, slots=True)
class CheckerView:
    """One health checker of a real server, from the dump's "Health checkers" section."""

    method: str  # "TCP_CHECK", "HTTP_GET", "MISC_CHECK", ...
    up: bool
    failed_url: str | None = None


@dataclass(frozen=True, slots=True)
class RealServerView:
    """A real server as keepalived's checker child sees it."""

    key: str  # lvs_key(address, port)
    weight: int  # configured (initial) weight
    effective_weight: int
    alive: bool
    inhibit_on_failure: bool
    failed_checkers: int
    in_ipvs: bool  # keepalived's "RS set": it believes the server is in IPVS
    checkers: tuple[CheckerView, ...] = ()


@dataclass(frozen=True, slots=True)
class VirtualServerView:
    """A virtual server as keepalived's checker child sees it."""

    key: str  # lvs_key(...), "fwmark:N" or "group:NAME"
    protocol: str  # "TCP", "UDP", "SCTP", "none"
    scheduler: str | None
    quorum: int
    hysteresis: int
    alive: bool
    quorum_up: bool
    delay_loop: float
    sorry_server: str | None = None
    real_servers: tuple[RealServerView, ...] = ()


@dataclass(frozen=True, slots=True)
class IpvsCounters:
    """IPVS's counters for a service or destination (since it was added to IPVS) and its rate estimates."""

    connections: int = 0
    in_packets: int = 0
    out_packets: int = 0
    in_bytes: int = 0
    out_bytes: int = 0
    cps: int = 0
    in_pps: int = 0
    out_pps: int = 0
    in_bps: int = 0
    out_bps: int = 0


@dataclass(frozen=True, slots=True)
class IpvsDest:
    key: str  # lvs_key(address, port)
    forward: str  # "Masq", "Route", "Tunnel", "Local"
    weight: int
    active: int
    inactive: int
    counters: IpvsCounters | None = None  # None when read from /proc (no per-destination counters there)


@dataclass(frozen=True, slots=True)
class IpvsService:
    key: str
    protocol: str  # "TCP", "UDP", "SCTP", "FWM"
    scheduler: str
    dests: tuple[IpvsDest, ...] = ()
    counters: IpvsCounters | None = None


@dataclass(frozen=True, slots=True)
class LvsView:
    """What the lvs source knows: keepalived's checker view and IPVS's table, each with its time."""

    checker: tuple[VirtualServerView, ...] | None = None
    checker_time: float | None = None
    checker_error: str | None = None
    ipvs: tuple[IpvsService, ...] | None = None
    ipvs_time: float | None = None
    ipvs_error: str | None = None
    ipvs_via: str | None = None  # "netlink" or "proc"


# --------------------------------------------------------------------------------------------------
# exporter self-health and the snapshot
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """Whether a source's last attempt worked. A failed source keeps its last good data, stale."""

    name: str
    up: bool
    error: str | None = None
    last_success: float | None = None
    last_attempt: float | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One consistent read of everything the exporter knows, taken under the store's lock."""

    time: float
    hostname: str
    config: KeepalivedConfig | None = None
    process: ProcessInfo | None = None
    addresses: tuple[LocalAddress, ...] | None = None
    instances: tuple[InstanceView, ...] | None = None
    instances_source: str | None = None  # "dbus" / "dumps" / "fifo", joined with "+"
    transitions: tuple[tuple[str, int], ...] = ()  # (instance name, count) seen via events
    wire_peers: tuple[WirePeer, ...] | None = None
    wire_stats: WireStats | None = None
    sources: tuple[SourceHealth, ...] = field(default_factory=tuple)
    addresses_changed: float | None = None  # when the local address set last changed
    views_time: tuple[tuple[str, float], ...] = ()  # (view source, when it last published)
    l2: tuple[VipAnswers, ...] | None = None  # the L2 witness, one record per watched VIP
    failover: tuple[VridTiming, ...] | None = None  # the wire's failover accounts, per VRID
    failover_events: tuple[FailoverEvent, ...] = ()  # the latest master changes, oldest first
    lvs: LvsView | None = None  # the lvs source: keepalived's checker view and IPVS

    def state_fresh_since(self) -> float | None:
        """Since when keepalived's reported states are known to be current.

        D-Bus and the notify FIFO push every transition within milliseconds, so while either source is
        up the state is current now; dumps are only as fresh as the last refresh.
        """
        times = dict(self.views_time)
        for events in ("dbus", "fifo"):  # the event streams: current while their source is up
            health = self.source(events)
            if events in times and health is not None and health.up:
                return self.time
        return times.get("dumps")

    def source(self, name: str) -> SourceHealth | None:
        for s in self.sources:
            if s.name == name:
                return s
        return None


@functools.lru_cache(maxsize=4096)  # pure; verdicts canonicalize every VIP of every VRID per judgement
def canonical_ip(address: str) -> str:
    """Canonical text of an address ("FD97:0::120/64" -> "fd97::120"); without prefix or zone if not
    an address at all."""
    text = address.split("/", 1)[0].split("%", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text
