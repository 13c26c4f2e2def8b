"""keepalived's own view over D-Bus: instance names and states, updated by its signals as they happen.

keepalived (built with D-Bus, `enable_dbus` in global_defs) owns `org.keepalived.Vrrp1` on the system
bus and exports, per VRRP instance, an object

    /org/keepalived/Vrrp1[/<netns>][/<instance>]/Instance/<iface>/<vrid>/<IPv4|IPv6>

with interface `org.keepalived.Vrrp1.Instance`: properties `Name` and `State`, signal
`VrrpStatusChange(u)`; and one `.../Vrrp` object (`org.keepalived.Vrrp1.Vrrp`: methods PrintData,
PrintStats, signals VrrpStarted/VrrpReloaded/VrrpStopped). Instances are found by introspecting the
tree recursively; properties are read with plain `org.freedesktop.DBus.Properties.GetAll` (falling
back to `Get`). What keepalived really sends differs from what its introspection XML declares:
Debian's 2.2.7 declares `Name` as `s` but answers `(s)`, and `State` is `(us)` in 2.x but `(u)` in
older releases; `decode_name` / `decode_state` accept every shape.

Decisions:
- VrrpStopped, or the name losing its owner (a SIGKILLed keepalived sends no VrrpStopped): publish an
  empty tuple (D-Bus vouches that keepalived has no instances now) and mark the source down.
- A VrrpStatusChange is shown at once and confirmed after: the signal's state is published, then the
  instance's `State` property is read (with the client's call deadline) and published where it differs;
  transitions are counted from the reads. keepalived 1.3.9 sent the OLD state in the signal on
  BACKUP->FAULT (shown: nothing new; read: FAULT). Any local process may send a unicast signal to this
  connection (the system bus policy allows signals), but only the connection owning keepalived's name
  is listened to (below), and the bus daemon stamps the sender. When the read fails (object gone at
  shutdown) the signal's state is taken; when it times out, too, and signals are taken as they come
  until the next full read (one deadline lost, not one per signal of a burst).
- keepalived's signals count only from the connection that owns its name (as the bus last said): a
  unicast VrrpStopped or VrrpStatusChange from any other process is dropped (`signals_ignored`), or one
  such signal would make every instance vanish.
- Transitions are counted only when a VrrpStatusChange moves an instance to a different state; the
  replay keepalived sends after (re)connecting is not a transition, nor is STOP (keepalived shutting
  down sends it for every instance just before VrrpStopped).
- keepalived does not come back to a restarted dbus-daemon by itself (2.2.7 loses its name and only
  re-registers when restarted): the source reconnects to the new bus and waits for NameOwnerChanged.
- The store lets D-Bus's state win over the dumps' (it is pushed within milliseconds). Once D-Bus can no
  longer vouch for it (the bus is gone, or keepalived is not on it) that state is history: with a dump
  source to hand over to (`on_change` wired to its refresh, as the daemon does) the source withdraws its
  view and asks for a refresh, so a transition while keepalived is off the bus shows from the dumps.
  Alone, it keeps its last good view, flagged stale by its health.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, replace

from jeepney import MatchRule

from ka_exporter.linux.dbusclient import (
    BUS_NAME,
    BUS_PATH,
    BusClient,
    BusConnectionError,
    Call,
    DBusError,
    Signal,
    resolve_address,
)
from ka_exporter.model import InstanceView, KeepalivedConfig, VrrpState
from ka_exporter.settings import Settings
from ka_exporter.sources.base import Registration, Source, Wiring, wiring_log
from ka_exporter.store import Store

log = logging.getLogger("ka_exporter.sources.dbus")

SERVICE = "org.keepalived.Vrrp1"
ROOT = "/org/keepalived/Vrrp1"
IFACE_INSTANCE = "org.keepalived.Vrrp1.Instance"
IFACE_VRRP = "org.keepalived.Vrrp1.Vrrp"
PROPERTIES = "org.freedesktop.DBus.Properties"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"

# keepalived's vrrp.h: INIT 0, BACK 1, MAST 2, FAULT 3, DELETED 97 (removed on reload), STOP 98.
_STATE_BY_NUMBER = {
    0: VrrpState.INIT,
    1: VrrpState.BACKUP,
    2: VrrpState.MASTER,
    3: VrrpState.FAULT,
    97: VrrpState.STOP,
    98: VrrpState.STOP,
}
_FAMILY = {"IPv4": "inet", "IPv6": "inet6"}
_DUMP_METHODS = {"data": "PrintData", "stats": "PrintStats"}
_MAX_NODES = 8192  # introspection walk bound: 255 instances x 2 families need ~770 nodes
_MAX_DEPTH = 10
_MAX_BATCH = 256  # VrrpStatusChange signals shown together (255 instances x 1 signal fit in one)
# A burst of VrrpStatusChange is over (its State reads go out) after this long without one. The reads
# (100 calls built and replies parsed: 6-8 ms of this thread's CPU at 100 instances) then hold the GIL
# the next scrape's render waits for: 50 ms puts them after the scrapes that show the burst, not among
# them (at 15 ms they fell 15-30 ms after keepalived's last FAULT line, inside the 50 ms it must show).
_QUIET = 0.05
_MAX_DEFER = 0.25  # and its reads go out at the latest this long after its first signal

OnChange = Callable[[], None]


# --------------------------------------------------------------------------------------------------
# decoding (pure functions)
# --------------------------------------------------------------------------------------------------


def _unvariant(value: object) -> object:
    """jeepney gives a variant as (signature, value); peel that and one-element structs like `(s)`."""
    for _ in range(4):
        if (
            isinstance(value, tuple)
            and len(value) == 2
            and isinstance(value[0], str)
            and _looks_like_signature(value[0])
        ):
            value = value[1]
            continue
        if isinstance(value, tuple | list) and len(value) == 1:
            value = value[0]
            continue
        break
    return value


def _looks_like_signature(text: str) -> bool:
    return 0 < len(text) <= 16 and all(c in "ybnqiuxtdsogvh()a{}" for c in text)


def decode_name(value: object) -> str | None:
    """The `Name` property in any shape keepalived sends (`s`, `(s)`, wrapped in a variant)."""
    value = _unvariant(value)
    if isinstance(value, str) and value and len(value) <= 256 and value.isprintable():
        return value
    return None


def decode_state(value: object) -> VrrpState | None:
    """The `State` property (`u`, `(u)`, `(us)`) or a VrrpStatusChange argument (`u`)."""
    value = _unvariant(value)
    text: object = None
    if isinstance(value, tuple | list) and value:
        if len(value) > 1:
            text = value[1]
        value = value[0]
    if isinstance(value, int) and not isinstance(value, bool):
        state = _STATE_BY_NUMBER.get(value)
        if state is not None:
            return state
    elif isinstance(value, str):
        text = value
    if isinstance(text, str):
        return VrrpState.parse(text)
    return None


def parse_introspection(xml: str) -> tuple[list[str], set[str]] | None:
    """(child node names, interface names) of one Introspect answer, None if it is not valid XML."""
    try:
        # The XML comes from the bus peer that owns org.keepalived.Vrrp1; ElementTree never fetches
        # external entities and expat >= 2.4.1 caps entity expansion.
        root = ET.fromstring(xml)  # noqa: S314
    except (ET.ParseError, ValueError):
        return None
    children = [
        name
        for node in root.findall("node")
        if (name := node.get("name")) and "/" not in name and name not in {".", ".."}
    ]
    interfaces = {name for iface in root.findall("interface") if (name := iface.get("name"))}
    return children, interfaces


def instance_path_parts(path: str) -> tuple[str, int, str] | None:
    """`.../Instance/<iface>/<vrid>/<IPv4|IPv6>` -> (iface as in the path, vrid, "inet"/"inet6")."""
    parts = path.split("/")
    if len(parts) < 5 or parts[-4] != "Instance":
        return None
    iface, vrid_text, family_text = parts[-3], parts[-2], parts[-1]
    family = _FAMILY.get(family_text)
    if not iface or family is None or not vrid_text.isdigit():
        return None
    vrid = int(vrid_text)
    if not 1 <= vrid <= 255:
        return None
    return iface, vrid, family


def path_component(name: str) -> str:
    """keepalived's set_valid_path(): every non-alphanumeric character becomes '_'."""
    return "".join(c if c.isascii() and c.isalnum() else "_" for c in name)


def local_interface_names() -> list[str]:
    try:
        return [name for _, name in socket.if_nameindex()]
    except OSError:
        return []


def resolve_interface(component: str, candidates: list[str]) -> str:
    """The real interface name behind a path component ("eth0_100" -> "eth0.100") when unambiguous."""
    if component.isalnum():
        return component
    matches = [name for name in candidates if path_component(name) == component]
    return matches[0] if len(matches) == 1 else component


# --------------------------------------------------------------------------------------------------
# the source
# --------------------------------------------------------------------------------------------------


class NotOnBusError(Exception):
    """keepalived's service name has no owner on the bus."""


@dataclass(frozen=True, slots=True)
class Discovery:
    instances: dict[str, InstanceView]  # by object path
    vrrp_path: str | None
    skipped: int = 0  # instance objects whose properties could not be read


class DbusSource(Source):
    """Instances and their states from keepalived's D-Bus service, kept current by its signals."""

    name = "dbus"
    backoff_initial = 0.5
    backoff_max = 1.0  # a reconnect to a local bus costs microseconds; recovery within 2 s of its return

    def __init__(
        self,
        store: Store,
        address: str | None = None,
        on_change: OnChange | None = None,
        *,
        service: str = SERVICE,
        call_timeout: float = 2.0,
        dump_timeout: float = 10.0,
        liveness_interval: float = 1.0,
    ) -> None:
        super().__init__(store)
        self.address = resolve_address(address)
        self.service = service
        self.on_change = on_change
        self.call_timeout = call_timeout
        self.dump_timeout = dump_timeout
        # Liveness: every `liveness_interval` s the signal loop asks the bus who owns keepalived's name,
        # with a deadline of `call_timeout` s. A frozen dbus-daemon (SIGSTOP) sends no signal and no
        # error: without this the source would stay up on a dead bus. No answer: the source goes down
        # and hands over to the dumps (within liveness_interval + call_timeout, 3 s by default).
        self.liveness_interval = liveness_interval
        self.pings = 0
        self._bus_down = threading.Event()
        self._views: dict[str, InstanceView] = {}
        self._vrrp_path = f"{ROOT}/Vrrp"
        self._client: BusClient | None = None
        self._client_lock = threading.Lock()
        self._dump_client: BusClient | None = None
        self._dump_lock = threading.Lock()
        self._dump_error: str | None = None
        self._published = False  # this source's view is in the store
        self.enumerations = 0  # full re-reads of the instance tree (signals do not cause one)
        self.signals_handled = 0
        self.status_batches = 0  # runs of VrrpStatusChange shown together (see _handle_queued)
        self.state_reads = 0  # State properties read to confirm a VrrpStatusChange
        self.early_publications = 0  # batches whose signalled states were shown before their State reads
        self.state_corrections = 0  # ... that said something else than the signal
        self._confirm = True  # read State on VrrpStatusChange (off after a timeout until the next full read)
        self._owner: str | None = None  # the unique name owning keepalived's name, at the last full read
        self.signals_ignored = 0  # keepalived's signals sent by another connection (unicast forgeries)

    # -- messages ---------------------------------------------------------------------------------

    @property
    def not_on_bus_error(self) -> str:
        return (
            f"dbus: {self.service} is not on the bus at {self.address} (is enable_dbus set in global_defs?)"
        )

    @property
    def left_bus_error(self) -> str:
        return f"dbus: keepalived left the bus at {self.address} ({self.service} has no owner)"

    def _bus_error(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"dbus: no answer from the bus at {self.address} within {self.call_timeout:g} s"
        return f"dbus: cannot use the bus at {self.address}: {exc}"

    # -- lifecycle --------------------------------------------------------------------------------

    def unexpected(self, exc: Exception) -> str:
        log.exception("dbus: unexpected error")
        return f"dbus: unexpected {type(exc).__name__}"

    def poll(self) -> None:
        """Connect, enumerate, publish, disconnect (for --once)."""
        try:
            with BusClient(self.address, timeout=self.call_timeout) as client:
                self._refresh(client)
        except NotOnBusError:
            self.fail(self.not_on_bus_error)
        except (BusConnectionError, TimeoutError, DBusError, OSError) as exc:
            self.fail(self._bus_error(exc))

    def run(self) -> None:
        """Stay connected, follow signals; reconnect with backoff (0.5 s, then every 1 s)."""
        backoff = self.backoff_initial
        while not self.stopping:
            connected = False
            try:
                client = BusClient(self.address, timeout=self.call_timeout)
                connected = True
                self._follow(client)
            except (BusConnectionError, TimeoutError, DBusError, OSError) as exc:
                if self.stopping:
                    break
                self.fail(self._bus_error(exc))
                self._withdraw()
            except Exception as exc:
                if self.stopping:
                    break
                self.fail(self.unexpected(exc))
                self._withdraw()
            if connected:
                backoff = self.backoff_initial
            if not self.sleep(backoff):
                break
            backoff = min(backoff * 2, self.backoff_max)

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.interrupt()
        with self._dump_lock:
            if self._dump_client is not None:
                self._dump_client.close()
                self._dump_client = None

    # -- the signal loop --------------------------------------------------------------------------

    def _follow(self, client: BusClient) -> None:
        with self._client_lock:
            self._client = client
        try:
            if self.stopping:
                return
            self._subscribe(client)
            self._refresh_or_report(client)
            self._bus_down.clear()
            lost = client.signals_lost
            next_ping = time.monotonic() + self.liveness_interval
            while not self.stopping:
                sig = client.next_signal(timeout=max(0.0, next_ping - time.monotonic()))
                if time.monotonic() >= next_ping:
                    self._ping(client)  # raises TimeoutError when the bus does not answer in time
                    next_ping = time.monotonic() + self.liveness_interval
                if client.signals_lost != lost:
                    # The queue overflowed: some states were missed. Everything still queued is older
                    # than what a fresh read returns, so drop it rather than replay it over the read.
                    lost = client.signals_lost
                    client.drop_signals()
                    self._refresh_or_report(client)
                elif sig is not None:
                    self._handle_queued(client, sig)
        finally:
            with self._client_lock:
                self._client = None
            client.close()

    def _subscribe(self, client: BusClient) -> None:
        """Ask the bus for keepalived's signals and for its name changing owner."""
        owner_rule = MatchRule(
            type="signal", sender=BUS_NAME, path=BUS_PATH, interface=BUS_NAME, member="NameOwnerChanged"
        )
        owner_rule.add_arg_condition(0, self.service)
        client.add_match(owner_rule)
        # sender=<well-known name>: the bus delivers only what the current owner sends.
        client.add_match(MatchRule(type="signal", sender=self.service, interface=IFACE_INSTANCE))
        client.add_match(MatchRule(type="signal", sender=self.service, interface=IFACE_VRRP))

    def _ping(self, client: BusClient) -> None:
        """The liveness call: the bus answers within call_timeout (TimeoutError if not)."""
        try:
            client.name_owner(self.service)  # keepalived leaving is told by NameOwnerChanged
        except TimeoutError:
            self._bus_down.set()
            log.debug("dbus: liveness call got no answer within %g s", self.call_timeout)
            raise
        self.pings += 1

    def _handle(self, client: BusClient, sig: Signal) -> None:
        self.signals_handled += 1
        if sig.interface == BUS_NAME and sig.member == "NameOwnerChanged":
            if len(sig.body) == 3 and sig.body[0] == self.service:
                # A dbus-daemon that is shutting down first drops keepalived's name, then us: ask the
                # bus again, so that a dying bus (no answer) is not taken for a stopped keepalived.
                if sig.body[2] or client.name_owner(self.service) is not None:
                    self._refresh_or_report(client)
                else:
                    self._gone()
            return
        if sig.interface in (IFACE_INSTANCE, IFACE_VRRP) and sig.sender != self._owner:
            self.signals_ignored += 1  # not keepalived's: a unicast signal from another process
            return
        if sig.interface == IFACE_INSTANCE and sig.member == "VrrpStatusChange":
            self._status_change(client, sig)
            return
        if sig.interface == IFACE_VRRP:
            if sig.member in {"VrrpStarted", "VrrpReloaded"}:
                self._refresh_or_report(client)
                self._changed()
            elif sig.member == "VrrpStopped":
                self._gone()

    def _handle_queued(self, client: BusClient, sig: Signal) -> None:
        """Handle `sig` and, when it is a VrrpStatusChange of keepalived's, the burst it starts.

        A failover of 100 instances is 100 signals within milliseconds. Each run of them already
        queued is shown at once (one publication), and the burst goes on while the next one arrives
        within _QUIET s; the State reads that confirm it go out once, pipelined, when the bus has been
        quiet that long (or the burst has lasted _MAX_DEFER s), after the scrapes that show it. Reading
        after each run made the signals behind it wait for keepalived's replies, slow while it is busy
        with the transitions it signals: at 100 instances going FAULT the last instance showed 80-144
        ms after keepalived's last log line. Any other signal confirms the burst first, then is
        handled, in order.
        """
        nxt: Signal | None = sig
        while nxt is not None:
            if not self._is_status_change(nxt):
                self._handle(client, nxt)
                return
            if not self._confirm:  # the reads timed out before: signals as they come, each run at once
                nxt = self._run(client, nxt)[1]
                continue
            shown: list[tuple[Signal, VrrpState | None]] = []
            saved: dict[str, InstanceView] = {}
            early = False
            until = time.monotonic() + _MAX_DEFER
            unseen = False  # a signal named an instance we have not seen
            while nxt is not None and self._is_status_change(nxt):
                batch, nxt = self._run(client, nxt, defer=True)
                got = self._show(batch, saved)
                if got is None:
                    unseen = True
                    break
                shown.extend(got[0])
                early = got[1] or early
                left = until - time.monotonic()
                if nxt is None and left > 0:
                    nxt = client.next_signal(timeout=min(_QUIET, left))
            self._confirm_shown(client, shown, saved, early)
            if unseen:  # read the whole tree again; the signal behind the run is still handled
                self._refresh_or_report(client)
                self._changed()

    def _run(
        self, client: BusClient, first: Signal, defer: bool = False
    ) -> tuple[list[Signal], Signal | None]:
        """`first` and the VrrpStatusChange signals already received behind it (no wait), and the
        next signal when it is another kind. Unless deferred, the run is applied here."""
        batch = [first]
        nxt: Signal | None = None
        while len(batch) < _MAX_BATCH:
            nxt = client.next_signal(timeout=0.0)  # queued, or on the socket already: no wait
            if nxt is None or not self._is_status_change(nxt):
                break
            batch.append(nxt)
            nxt = None
        self.signals_handled += len(batch)
        self.status_batches += 1
        if not defer:
            self._status_changes(client, batch)
        return batch, nxt

    def _is_status_change(self, sig: Signal) -> bool:
        return (
            sig.interface == IFACE_INSTANCE and sig.member == "VrrpStatusChange" and sig.sender == self._owner
        )

    def _status_change(self, client: BusClient, sig: Signal) -> None:
        self._status_changes(client, [sig])

    def _status_changes(self, client: BusClient, sigs: list[Signal]) -> None:
        """Apply keepalived's VrrpStatusChange signals, each confirmed by its instance's State.

        The State reads go out pipelined (one round trip for all) and the store gets one publication.
        Each signal still counts on its own: its read is the state it confirms, applied in the order
        the signals came.
        """
        saved: dict[str, InstanceView] = {}
        got = self._show(sigs, saved)
        if got is None:  # an instance we have not seen (created without a reload signal)
            self._refresh_or_report(client)
            self._changed()
            return
        self._confirm_shown(client, got[0], saved, got[1])

    def _show(
        self, sigs: list[Signal], saved: dict[str, InstanceView]
    ) -> tuple[list[tuple[Signal, VrrpState | None]], bool] | None:
        """Shown at once, confirmed after (`_confirm_shown`): publish the states the signals carry,
        keeping in `saved` each instance's view from before the first of them. None (nothing shown)
        when a signal names an instance we have not seen.

        A signal's state is keepalived's own word (only its connection can send as its unique name),
        and the one known wrong case, 1.3.9's BACKUP -> FAULT sending the old state, shows nothing new
        here: the read then sets FAULT. Counting and the final views are the confirmed ones.
        """
        known: list[Signal] = []
        for sig in sigs:
            if sig.path in self._views:
                known.append(sig)
            elif instance_path_parts(sig.path) is not None:
                return None
        signalled = [decode_state(sig.body[0] if sig.body else None) for sig in known]
        for sig in known:
            saved.setdefault(sig.path, self._views[sig.path])
        moved = False
        if self._confirm:
            for sig, state in zip(known, signalled, strict=True):
                view = self._views[sig.path]
                if state is not None and state != view.state:
                    self._views[sig.path] = replace(view, state=state)
                    moved = True
            if moved:
                self.early_publications += 1
                self._publish()
        return list(zip(known, signalled, strict=True)), moved

    def _confirm_shown(
        self,
        client: BusClient,
        shown: list[tuple[Signal, VrrpState | None]],
        saved: dict[str, InstanceView],
        early: bool,
    ) -> None:
        """Read the State of every instance `shown` signalled (pipelined), then apply the reads in the
        signals' order over the views from before them (`saved`): that counts each transition once,
        and publishes again only where a read differs from what was shown."""
        if not shown:
            return
        now = {path: self._views[path].state for path in saved}
        confirmed = self._confirmed_states(client, [s.path for s, _ in shown], [st for _, st in shown])
        self._views.update(saved)
        counted: list[str] = []
        moved = False
        for (sig, _), state in zip(shown, confirmed, strict=True):
            view = self._views[sig.path]
            if state is None or state == view.state:
                continue
            moved = True
            self._views[sig.path] = replace(view, state=state)
            if view.state is not None and state is not VrrpState.STOP:
                counted.append(view.name)
        if not moved and not early:
            return
        if not early or any(self._views[path].state != now[path] for path in saved):
            self._publish()  # the confirmed states, where they differ from what was shown
        if counted:
            self.store.count_transitions(counted)
        if self._last_error is not None:
            self.ok()
        self._changed()

    def _confirmed_state(self, client: BusClient, path: str, signalled: VrrpState | None) -> VrrpState | None:
        """The instance's State property now; the signal's state when it cannot be read."""
        return self._confirmed_states(client, [path], [signalled])[0]

    def _confirmed_states(
        self, client: BusClient, paths: list[str], signalled: list[VrrpState | None]
    ) -> list[VrrpState | None]:
        """Each instance's State property now (read pipelined); the signal's state where it cannot be read."""
        if not self._confirm or not paths:
            return list(signalled)
        calls = [Call(self.service, p, PROPERTIES, "Get", "ss", (IFACE_INSTANCE, "State")) for p in paths]
        try:
            replies = client.call_many(calls, timeout=self.call_timeout + 0.01 * len(calls))
        except TimeoutError:
            self._confirm = False
            log.debug("dbus: no State within %g s: taking signals as they come", self.call_timeout)
            return list(signalled)
        out: list[VrrpState | None] = []
        for path, reply, sent in zip(paths, replies, signalled, strict=True):
            if isinstance(reply, DBusError):
                out.append(sent)  # e.g. the object is gone: keepalived is stopping
                continue
            self.state_reads += 1
            read = decode_state(reply[0]) if reply else None
            if read is None:
                out.append(sent)
                continue
            if read != sent:
                self.state_corrections += 1
                log.debug("dbus: %s signalled %s but its State is %s", path, sent, read)
            out.append(read)
        return out

    def _gone(self) -> None:
        self._views = {}
        self.store.set_instances((), self.name)
        self._published = True
        self.fail(self.left_bus_error)
        self._changed()

    def _withdraw(self) -> None:
        """D-Bus cannot vouch for keepalived's state any more (bus lost, keepalived not on it): with a dump
        source to hand over to, take the view out of the store and have the dumps refreshed."""
        if self.on_change is None or not self._published:
            return
        self._views = {}
        self._published = False
        self.store.set_instances(None, self.name)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change()
        except Exception:
            log.exception("dbus: on_change callback failed")

    # -- enumeration ------------------------------------------------------------------------------

    def _refresh_or_report(self, client: BusClient) -> None:
        try:
            self._refresh(client)
        except NotOnBusError:
            self.fail(self.not_on_bus_error)
            self._withdraw()
        except DBusError as exc:
            # keepalived went away while we walked its tree: wait for the next NameOwnerChanged.
            self.fail(f"dbus: reading keepalived's objects failed: {exc}")

    def counts_transitions(self) -> bool:
        """True while keepalived's own name is read here: its VrrpStatusChange signals are counted as
        transitions. False before the first full read, while refused or without a bus: then the FIFO
        (where there is one) counts them, so a D-Bus that cannot be used leaves no counter flat."""
        return self._owner is not None and self._last_error is None

    def _refresh(self, client: BusClient) -> None:
        owner = client.name_owner(self.service)
        if owner is None:
            raise NotOnBusError
        self._owner = owner
        found = self.discover(client)
        self.enumerations += 1
        self._confirm = True
        self._views = found.instances
        if found.vrrp_path:
            self._vrrp_path = found.vrrp_path
        self._publish()
        if found.skipped and not found.instances:
            self.fail(f"dbus: could not read the properties of any of {found.skipped} instance objects")
        else:
            self.ok()

    def _publish(self) -> None:
        views = tuple(sorted(self._views.values(), key=lambda v: (v.name, v.interface, v.vrid)))
        self.store.set_instances(views, self.name)
        self._published = True

    def discover(self, client: BusClient) -> Discovery:
        """Walk keepalived's object tree (breadth first, pipelined) and read every instance.

        A leaf named like an instance (`.../Instance/<iface>/<vrid>/<IPv4|IPv6>`) is not introspected:
        its GetAll answers whether it is one, which saves a third of the round trips.
        """
        instance_paths: list[str] = []
        vrrp_path: str | None = None
        level = [ROOT]
        seen = 0
        for _depth in range(_MAX_DEPTH):
            if not level:
                break
            seen += len(level)
            calls = [Call(self.service, p, INTROSPECTABLE, "Introspect") for p in level]
            replies = client.call_many(calls, timeout=self.call_timeout + 0.01 * len(calls))
            following: list[str] = []
            for path, reply in zip(level, replies, strict=True):
                if isinstance(reply, DBusError):
                    if path == ROOT:
                        if reply.name.endswith((".ServiceUnknown", ".NameHasNoOwner")):
                            raise NotOnBusError
                        raise reply
                    continue
                parsed = parse_introspection(str(reply[0])) if reply and isinstance(reply[0], str) else None
                if parsed is None:
                    continue
                children, interfaces = parsed
                if IFACE_INSTANCE in interfaces and path not in instance_paths:
                    instance_paths.append(path)
                if IFACE_VRRP in interfaces and vrrp_path is None:
                    vrrp_path = path
                base = path.rstrip("/")
                for child in children:
                    full = f"{base}/{child}"
                    if instance_path_parts(full) is not None:
                        instance_paths.append(full)
                    else:
                        following.append(full)
            if seen + len(following) > _MAX_NODES:
                following = following[: max(0, _MAX_NODES - seen)]
            level = following
        instances, skipped = self._read_instances(client, instance_paths)
        return Discovery(instances=instances, vrrp_path=vrrp_path, skipped=skipped)

    def _read_instances(self, client: BusClient, paths: list[str]) -> tuple[dict[str, InstanceView], int]:
        located = [(p, parts) for p in paths if (parts := instance_path_parts(p)) is not None]
        if not located:
            return {}, 0
        timeout = self.call_timeout + 0.01 * len(located)
        calls = [Call(self.service, p, PROPERTIES, "GetAll", "s", (IFACE_INSTANCE,)) for p, _ in located]
        replies = client.call_many(calls, timeout=timeout)
        props: dict[str, tuple[object, object]] = {}
        retry: list[str] = []
        for (path, _), reply in zip(located, replies, strict=True):
            table = reply[0] if not isinstance(reply, DBusError) and reply else None
            if isinstance(table, dict) and "Name" in table:
                props[path] = (table.get("Name"), table.get("State"))
            else:
                retry.append(path)
        if retry:  # GetAll refused or incomplete: ask for each property on its own
            get = [
                Call(self.service, p, PROPERTIES, "Get", "ss", (IFACE_INSTANCE, prop))
                for p in retry
                for prop in ("Name", "State")
            ]
            answers = client.call_many(get, timeout=timeout)
            for i, path in enumerate(retry):
                name_reply, state_reply = answers[2 * i], answers[2 * i + 1]
                if isinstance(name_reply, DBusError) or not name_reply:
                    continue
                state_value = (
                    None if isinstance(state_reply, DBusError) or not state_reply else state_reply[0]
                )
                props[path] = (name_reply[0], state_value)
        local = local_interface_names() if any(not p[1][0].isalnum() for p in located) else []
        views: dict[str, InstanceView] = {}
        skipped = 0
        for path, (component, vrid, family) in located:
            name_value, state_value = props.get(path, (None, None))
            name = decode_name(name_value)
            if name is None:
                skipped += 1
                continue
            views[path] = InstanceView(
                name=name,
                interface=resolve_interface(component, local),
                vrid=vrid,
                family=family,
                state=decode_state(state_value),
            )
        return views, skipped

    # -- dumps on request -------------------------------------------------------------------------

    def request_dump(self, kind: str) -> bool:
        """Ask keepalived to write its "data" or "stats" dump; True once it says the file is written.

        Thread-safe: uses its own connection, never the signal loop's. "json" has no D-Bus method
        (the caller signals instead) and returns False, as does any failure (logged once per cause).
        """
        member = _DUMP_METHODS.get(kind)
        if member is None or self._bus_down.is_set():
            return False  # no JSON method, or the bus missed its liveness deadline: signal instead
        call = Call(self.service, self._vrrp_path, IFACE_VRRP, member)
        with self._dump_lock:
            for attempt in (1, 2):
                try:
                    if self._dump_client is None:
                        self._dump_client = BusClient(
                            self.address, timeout=self.call_timeout, max_queued_signals=16
                        )
                    self._dump_client.call(call, timeout=self.dump_timeout)
                except BusConnectionError as exc:
                    self._drop_dump_client()
                    if attempt == 2:
                        return self._dump_failed(f"dbus: {member}: {self._bus_error(exc)}")
                    continue  # a cached connection may have gone stale: one fresh try
                except TimeoutError:
                    self._drop_dump_client()  # a late reply would confuse the next call
                    return self._dump_failed(f"dbus: {member} got no answer within {self.dump_timeout:g} s")
                except DBusError as exc:
                    hint = ""
                    if exc.name.endswith(".AccessDenied"):
                        hint = " (the bus policy lets only root call it)"
                    elif exc.name.endswith((".ServiceUnknown", ".NameHasNoOwner")):
                        hint = " (keepalived is not on the bus)"
                    return self._dump_failed(f"dbus: {member} failed: {exc.name}{hint}")
                else:
                    if self._dump_error is not None:
                        log.info("dbus: %s works again", member)
                    self._dump_error = None
                    return True
        return False

    def _drop_dump_client(self) -> None:
        if self._dump_client is not None:
            self._dump_client.close()
            self._dump_client = None

    def _dump_failed(self, error: str) -> bool:
        if error != self._dump_error:
            log.warning("%s", error)
        self._dump_error = error
        return False


def dbus_wanted(settings: Settings, config: KeepalivedConfig | None) -> bool:
    """D-Bus is worth trying unless keepalived.conf was read and does not set enable_dbus.

    Without this, every keepalived run without D-Bus would show a permanently failed dbus source.
    An explicit --keepalived.dbus-address always tries.
    """
    if settings.keepalived_dbus_address or config is None:
        return True
    if not config.enable_dbus:
        wiring_log.info(
            "keepalived.conf does not set enable_dbus: reading keepalived's view from its dumps only"
        )
    return config.enable_dbus


def build(w: Wiring) -> DbusSource | None:
    if not dbus_wanted(w.settings, w.config):
        return None
    return DbusSource(w.store, w.settings.keepalived_dbus_address)


REGISTRATION = Registration(
    "dbus",
    "keepalived's D-Bus view",
    40,
    build,
    parts=("keepalived:collect_keepalived",),
    uses=("config",),
)
