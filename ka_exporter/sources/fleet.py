"""--discover's wiring of one source set per watched keepalived (ka_exporter/multi.py serves them).

A discovery thread (`sources.discovery`) reads the process table every `--discover.interval`
seconds. Each keepalived found becomes a member of the fleet (`store.fleet`), with its own store and
its own sources: keepalived.conf and the dumps (read through /proc/PID/root, run by a small shared
pool, `sources.fleetloop.Scheduler`), the wire and netlink addresses (sockets opened inside its
namespace, polled by one shared thread, `sources.fleetloop.SharedLoop`), and its process record
(from discovery itself). A keepalived that vanished is dropped within one interval. Past
`--discover.max-daemons` watched daemons, the rest are counted and one warning line says so.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from ka_exporter.model import ProcessInfo
from ka_exporter.settings import Settings
from ka_exporter.sources.config import ConfigSource
from ka_exporter.sources.discovery import Discoverer
from ka_exporter.sources.dumps import DumpSource
from ka_exporter.sources.fleetloop import Scheduler, SharedLoop, SharedWire, Watch
from ka_exporter.store.fleet import Daemon, DaemonKey, Fleet, Member

log = logging.getLogger("ka_exporter.multi")

MULTI_COLLECTORS = ("config", "process", "vips", "wire", "dumps")  # what a member can have here


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
        self.discovered = 0
        self._cap_logged = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scans = 0

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        self.loop.start()
        self.scheduler.start()
        self.discover_once()
        self._thread = threading.Thread(target=self._run, name="fleet-discovery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self.scheduler.stop()
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
                self.fleet.update(daemon)
                if old.pid != daemon.pid or old.start_time != daemon.start_time:
                    member.extra["restarts"] = int(str(member.extra.get("restarts", 0))) + 1
                    self._reattach(member, old)
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

    def _attach(self, member: Member) -> None:
        s, d, store = self.settings, member.daemon, member.store
        key = d.key
        dumps = self._attach_files(member)

        def changed() -> None:
            if dumps is not None:
                self.scheduler.request(key, "dumps")

        wire = SharedWire(store, s.wire_interfaces, cap=s.wire_max_peers) if s.enabled("wire") else None
        if wire is not None or s.enabled("vips"):
            self.loop.add(
                Watch(key, store, lambda: self._pid(key, d.pid), wire, s.enabled("vips"), on_change=changed)
            )

    def _pid(self, key: DaemonKey, fallback: int) -> int:
        """The watched keepalived's pid now (discovery's, as this pid namespace sees it)."""
        m = self.fleet.get(key)
        return m.daemon.pid if m is not None else fallback

    def _reattach(self, member: Member, old: Daemon) -> None:
        """keepalived restarted (same namespace and pid file, a new process): its keepalived.conf and
        dumps are read again through the new process's /proc/PID/root (a restarted container has a new
        mount namespace; the old /proc/PID is gone), and what the old process said (its config, its
        instances from the dumps) is forgotten at once rather than served until the first new read.
        The wire and address watch stay: they belong to the network namespace, which is the same, and
        the peer table and failover accounts are about the network, not about this process."""
        self.scheduler.remove(member.daemon.key)
        member.store.set_instances(None, "dumps")
        member.store.set_config(None)
        self._attach_files(member)
        log.info(
            "keepalived in network namespace %s restarted (pid %d, now %d): re-attached",
            member.daemon.netns_name,
            old.pid,
            member.daemon.pid,
        )

    def _attach_files(self, member: Member) -> DumpSource | None:
        """keepalived.conf and the dumps of the member's current process, scheduled."""
        s, d, store = self.settings, member.daemon, member.store
        key = d.key
        if s.enabled("config"):
            config = ConfigSource(store, self._path(d, d.config) or Path(d.config), config_id=d.config_id)
            config.run_once()  # the wire source takes its interfaces and VRIDs from it
            self.scheduler.add(key, config, config.interval, first=config.interval)
        dumps = None
        if s.enabled("dumps"):
            dumps = DumpSource(
                store,
                s.keepalived_dumps_dir,
                self._path(d, d.pid_file) or Path(d.pid_file),
                signal=s.keepalived_signal,
                interval=s.keepalived_dump_interval,
                pid_of=lambda: self._pid(key, d.pid),  # the pid file names its pid in its pid namespace
            )
            self.scheduler.add(key, dumps, dumps.interval)
        return dumps

    def _detach(self, member: Member) -> None:
        key = member.daemon.key
        self.loop.remove(key)
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
