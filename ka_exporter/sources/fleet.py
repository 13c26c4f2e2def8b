"""--discover's wiring of one source set per watched keepalived (ka_exporter/multi.py serves them).

A discovery thread (`sources.discovery`) reads the process table every `--discover.interval`
seconds. Each keepalived found becomes a member of the fleet (`store.fleet`), with its own store and
its own sources: keepalived.conf and the dumps (read through /proc/PID/root, run by a small shared
pool, `sources.fleetloop.Scheduler`), the wire and netlink addresses (sockets opened inside its
namespace, polled by one shared thread, `sources.fleetloop.SharedLoop`), and its process record
(from discovery itself). A keepalived that vanished is dropped within one interval. Past
`--discover.max-daemons` watched daemons, the rest are counted and one warning line says so.

Event sources, as with one keepalived: D-Bus where the member's keepalived.conf sets enable_dbus and
its bus's org.keepalived.Vrrp1 is its own (`sources.fleetbus`: one thread and a pool of two for every
member's connection), and its notify FIFO where keepalived.conf names one no script reads (read by the
shared I/O loop, `SharedFifo`). A keepalived restarted under the same pid file in the same namespace
keeps its member (and its series); everything tied to the old process is opened again for the new one
(/proc/PID/root paths, the FIFO, the bus connection), and what the old one reported is withdrawn.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from ka_exporter.linux.procfs import daemonized, is_session_leader
from ka_exporter.model import ProcessInfo
from ka_exporter.settings import Settings
from ka_exporter.sources.config import ConfigSource
from ka_exporter.sources.discovery import Discoverer
from ka_exporter.sources.dumps import DumpSource
from ka_exporter.sources.fifo import fifo_wanted
from ka_exporter.sources.fleetbus import BusLoop, SharedDbus
from ka_exporter.sources.fleetloop import Scheduler, SharedFifo, SharedLoop, SharedWire, Watch
from ka_exporter.store.fleet import Daemon, Fleet, Member

log = logging.getLogger("ka_exporter.multi")

MULTI_COLLECTORS = ("config", "process", "vips", "wire", "dumps", "dbus", "fifo")  # what a member can have


def _same_mount_ns(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt")
    except OSError:
        return True


class Multi:
    """The fleet, its discovery, its shared loop and scheduler, and the merged renderer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.fleet = Fleet(cap=settings.discover_max_daemons, hostname=settings.hostname)
        self.discoverer = Discoverer(settings.discover_match)
        self.loop = SharedLoop()
        self.scheduler = Scheduler()
        self.bus = BusLoop()
        self.discovered = 0
        self._cap_logged = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scans = 0

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        self.loop.start()
        self.scheduler.start()
        self.bus.start()
        self.discover_once()
        self._thread = threading.Thread(target=self._run, name="fleet-discovery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self.scheduler.stop()
        self.bus.stop()
        self.loop.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.discover_interval):
            try:
                self.discover_once()
            except Exception:
                log.exception("discovery failed")

    # -- discovery ------------------------------------------------------------------------------------

    def discover_once(self) -> None:
        found = self.discoverer.scan()
        self.scans += 1
        self.discovered = len(found)
        seen = set()
        over = 0
        for daemon in found:
            seen.add(daemon.key)
            member = self.fleet.get(daemon.key)
            if member is None:
                member = self.fleet.add(daemon)
                if member is None:
                    over += 1
                    continue
                self._attach(member)
                log.info(
                    "watching keepalived pid %d in network namespace %s (%s)",
                    daemon.pid,
                    daemon.netns_name,
                    daemon.pid_file,
                )
            else:
                old = member.daemon
                restarted = old.pid != daemon.pid or old.start_time != daemon.start_time
                handoff = restarted and _handoff(old, daemon)
                if restarted and not handoff:
                    member.extra["restarts"] = int(str(member.extra.get("restarts", 0))) + 1
                self.fleet.update(daemon)
                if restarted:
                    self._restarted(member, old, handoff)
            self._publish_process(member, daemon)
        for member in self.fleet.members():
            if member.daemon.key not in seen:
                self._detach(member)
        self.fleet.unwatched = over
        if over and not self._cap_logged:
            log.warning(
                "discovery cap reached: watching %d keepalived, %d more not watched"
                " (raise --discover.max-daemons)",
                len(self.fleet),
                over,
            )
        self._cap_logged = over > 0

    def _path(self, daemon: Daemon, path: str | None) -> Path | None:
        if path is None:
            return None
        return Path(path if _same_mount_ns(daemon.pid) else daemon.root + path)

    def _current(self, d: Daemon) -> Daemon:
        """The member's daemon as discovery last saw it (a restart changes its pid)."""
        m = self.fleet.get(d.key)
        return m.daemon if m is not None else d

    def _polled(self, member: Member) -> None:
        """keepalived.conf and the dumps, read through the current process's /proc/PID/root."""
        s, d, store = self.settings, member.daemon, member.store
        if s.enabled("config"):
            config = ConfigSource(store, self._path(d, d.config) or Path(d.config), config_id=d.config_id)
            config.run_once()  # the wire source takes its interfaces and VRIDs from it
            self.scheduler.add(d.key, config, config.interval, first=config.interval)
        if s.enabled("dumps"):
            dumps = DumpSource(
                store,
                s.keepalived_dumps_dir,
                self._path(d, d.pid_file) or Path(d.pid_file),
                signal=s.keepalived_signal,
                interval=s.keepalived_dump_interval,
                # the pid file names keepalived's pid in its own pid namespace (e.g. 9 in a container)
                pid_of=lambda: self._current(d).pid,
            )
            self.scheduler.add(d.key, dumps, dumps.interval)

    def _attach(self, member: Member) -> None:
        s, d, store = self.settings, member.daemon, member.store
        key = d.key
        where = f"keepalived {d.pid_file} in network namespace {d.netns_name}"
        self._polled(member)

        def changed() -> None:
            self.scheduler.request(key, "dumps")  # nothing when the dumps are off

        config = store.config()
        dbus = None
        # As with one keepalived: a keepalived.conf that was read and does not set enable_dbus means
        # no D-Bus to look for (else every such member would show a failed dbus source).
        if s.enabled("dbus") and (config is None or config.enable_dbus):
            dbus = SharedDbus(
                store, lambda: self._current(d), _same_mount_ns, self.discoverer.host_inode, changed
            )
            dbus.where = where
            self.bus.add(key, dbus)
        fifo = None
        fifo_path = fifo_wanted(s, config)
        if fifo_path is not None:

            def locate() -> Path:
                return self._path(self._current(d), str(fifo_path)) or fifo_path

            # D-Bus counts the transitions while it reads keepalived's name (both would count each one),
            # the FIFO whenever it does not: refused on a shared bus, or its bus down
            fifo = SharedFifo(
                store,
                locate,
                on_change=changed,
                count_transitions=True if dbus is None else (lambda: not dbus.counts_transitions()),
            )
            fifo.where = where
        wire = SharedWire(store, s.wire_interfaces, cap=s.wire_max_peers) if s.enabled("wire") else None
        if wire is not None or s.enabled("vips") or fifo is not None:

            def pid() -> int:
                return self._current(d).pid

            self.loop.add(Watch(key, store, pid, wire, s.enabled("vips"), on_change=changed, fifo=fifo))

    def _restarted(self, member: Member, old: Daemon, handoff: bool = False) -> None:
        """The same keepalived (namespace, pid file) as a new process: its /proc/PID/root paths, its FIFO
        and its bus connection are the old process's; each is opened again for the new one, and the old
        process's states are withdrawn from the store (not exported as if they were the new one's)."""
        d = member.daemon
        member.store.set_instances(None, "dumps")
        member.store.set_config(None)  # the old process's keepalived.conf is not the new one's
        self._polled(member)  # new sources under the same names replace the old ones
        self.loop.restarted(d.key)
        self.bus.restarted(d.key)
        log.info(
            "keepalived in network namespace %s %s (pid %d, now %d): re-attached",
            d.netns_name,
            "daemonized" if handoff else "restarted",
            old.pid,
            d.pid,
        )

    def _detach(self, member: Member) -> None:
        key = member.daemon.key
        self.loop.remove(key)
        self.bus.remove(key)
        self.scheduler.remove(key)
        self.fleet.remove(key)
        log.info(
            "keepalived pid %d in network namespace %s is gone: no longer watched",
            member.daemon.pid,
            member.daemon.netns_name,
        )

    def _publish_process(self, member: Member, d: Daemon) -> None:
        if not self.settings.enabled("process"):
            return
        member.store.set_process(
            ProcessInfo(
                running=True,
                pid=d.pid,
                vrrp_pids=d.children,
                restarts=int(str(member.extra.get("restarts", 0))),
                tmpdir=d.tmpdir,
            )
        )
        member.store.report("process", None)


def _handoff(old: Daemon, new: Daemon) -> bool:
    """True when NEW is the daemon OLD forked as keepalived daemonized: the same start, re-attached to
    (its pid and /proc/PID/root paths are new) but not counted as a restart (`linux.procfs.daemonized`)."""
    tick = os.sysconf("SC_CLK_TCK")
    return daemonized(
        old.start_time / tick, old.children, new.pid, new.start_time / tick, is_session_leader(new.pid)
    )
