"""`ka-exporter lab drill`: rehearse the failover tests of the guides on the lab, measured by ka-exporter.

The guides our users follow ("failover in 1-3 s") test a keepalived pair by stopping keepalived on the
master, stopping the tracked service so its check script fails, blocking VRRP with a firewall rule,
and restoring each. The drill does exactly that on a fresh lab per profile, with an observer's
ka-exporter (wire only) as the stopwatch: every masterless gap and handover overlap in the report is
what `keepalived_wire_failover_gap_seconds` / `..._overlap_seconds` measured from the adverts, and a
split brain's length is `keepalived_wire_multi_master_seconds_total`'s growth, and the delay to the new
master's first gratuitous ARP is `keepalived_wire_failover_announce_delay_seconds` (the observer's L2
witness runs). Who holds the VIP is read from the nodes' interfaces (the lab's own view), so the drill
also checks the exporter. tests/test_drill.py runs the whole drill and asserts every row against the
physics (a graceful stop costs the backup's skew time, a crash 3 x advert_int + skew, a preemption an
overlap of milliseconds).

Profiles: `nginx` (VRRPv2, advert_int 1, preempt, check script weight -60), `mysql` (both BACKUP,
`nopreempt`, check script weight -20), `fast` (VRRPv3, advert_int 0.1, preempt, no check script).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ka_exporter.lab.core import Lab
from ka_exporter.lab.system import LabError

DRILL_PROFILES = ("nginx", "mysql", "fast")
CLAIM = 3.0  # seconds: "failover in 1-3 s"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One row of the report."""

    profile: str
    scenario: str
    expected: str
    happened: str
    ok: bool  # what happened is what was expected
    masterless: float | None = None  # seconds, as ka-exporter measured (sum of the gaps in the step)
    overlap: float | None = None  # seconds of handover overlap
    split_brain: float | None = None  # seconds with two masters
    claim_held: bool | None = None  # masterless within 1-3 s (None: no failover in this step)
    announce: float | None = None  # seconds to the new master's first gratuitous ARP (mean over changes)
    not_announced: int = 0  # changes whose new master sent no gratuitous ARP within 30 s


class Stopwatch:
    """The observer's ka-exporter: counters of one VRID, read before and after each step."""

    def __init__(self, url: str, vrid: int) -> None:
        self.url = url
        self.vrid = str(vrid)

    def read(self) -> dict[str, float]:
        with urllib.request.urlopen(self.url, timeout=3) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.labels.get("vrid") == self.vrid and "le" not in s.labels and "kind" not in s.labels:
                    out[s.name] = out.get(s.name, 0.0) + s.value
        return out


@contextmanager
def observer(lab: Lab, workdir: Path) -> Iterator[Stopwatch]:
    """A wire-only ka-exporter in the lab's observer namespace (sees every advert)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    obs = lab.observer
    args = [
        sys.executable, "-m", "ka_exporter", "--web.listen-address", f"127.0.0.1:{port}",
        "--netns", obs.netns, "--hostname", "observer",
        "--keepalived.config", str(lab.nodes["a"].config_path), "--wire.interface", obs.interface,
        "--no-collector.process", "--no-collector.vips", "--no-collector.dumps", "--no-collector.dbus",
        "--no-collector.fifo",
    ]  # fmt: skip
    with open(workdir / "observer.log", "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    watch = Stopwatch(f"http://127.0.0.1:{port}/metrics", lab.instances[0].vrid)
    try:
        if not lab.wait_for(lambda: _observing(watch), 20.0, 0.1):
            raise LabError(f"drill: the observer's exporter did not start ({workdir / 'observer.log'})")
        yield watch
    finally:
        proc.terminate()
        proc.wait(10)


def _observing(watch: Stopwatch) -> bool:
    try:
        return watch.read().get("keepalived_wire_observed_seconds_total", 0.0) > 0
    except OSError:
        return False


class Drill:
    """The scenarios of one profile, run in order on one lab."""

    def __init__(self, lab: Lab, watch: Stopwatch) -> None:
        self.lab = lab
        self.watch = watch
        self.interval = lab.profile.advert_int
        self.profile = lab.profile.name

    # -- measuring ----------------------------------------------------------------------------------

    def settle(self) -> dict[str, float]:
        """Wait until the accounts caught up (they run 1.5 intervals behind and are brought up to date
        once a second), then read them."""
        time.sleep(1.5 * self.interval + 1.4)
        return self.watch.read()

    def step(
        self,
        *,
        scenario: str,
        expected: str,
        act: Callable[[], None],
        done: Callable[[], bool],
        timeout: float,
        judge: Callable[[str | None, str | None], tuple[bool, str]],
    ) -> Outcome:
        before_master = self.lab.master()
        before = self.watch.read()
        act()
        self.lab.wait_for(done, timeout, 0.05)
        after = self.settle()
        after_master = self.lab.master()
        ok, happened = judge(before_master, after_master)
        measured = _measured(before, after)
        masterless = measured["masterless"]
        return Outcome(
            profile=self.profile,
            scenario=scenario,
            expected=expected,
            happened=happened,
            ok=ok,
            claim_held=None if masterless is None else masterless <= CLAIM,
            **measured,
        )

    # -- the scenarios ------------------------------------------------------------------------------

    def run(self) -> list[Outcome]:
        lab = self.lab
        nopreempt = lab.profile.nopreempt
        first = lab.master()
        if first is None:
            raise LabError(f"drill {self.profile}: no single master to start from")
        other = next(n for n in lab.nodes if n != first)
        hold = 4 * self.interval + 1.0  # a master-down interval and a margin
        out: list[Outcome] = []

        def moved_to(node: str) -> Callable[[str | None, str | None], tuple[bool, str]]:
            def judge(_before: str | None, after: str | None) -> tuple[bool, str]:
                return after == node, f"master is {after or 'nobody/several'}"

            return judge

        out.append(
            self.step(
                scenario="stop keepalived on the master (SIGTERM)",
                expected=f"{other} takes over at once (priority-0 advert)",
                act=lambda: (lab.failover(), None)[1],
                done=lambda: lab.master() == other,
                timeout=hold + 5,
                judge=moved_to(other),
            )
        )
        out.append(
            self.step(
                scenario="start it again",
                expected=f"{other} stays master (nopreempt)" if nopreempt else f"{first} preempts {other}",
                act=lambda: (lab.start_master(), None)[1],
                done=(lambda: False) if nopreempt else (lambda: lab.master() == first),
                timeout=(3.4 * self.interval + hold + 1) if nopreempt else (4.5 * self.interval + hold + 5),
                judge=moved_to(other if nopreempt else first),
            )
        )
        master = lab.master() or first
        backup = next(n for n in lab.nodes if n != master)
        if lab.profile.check is not None:
            weight = lab.profile.check_weight
            stays = nopreempt  # with nopreempt a lower priority never hands the VIP over
            out.append(
                self.step(
                    scenario="stop the tracked service (check script fails)",
                    expected=f"{master} stays master (nopreempt: weight {weight} only lowers its priority)"
                    if stays
                    else f"{backup} takes over (weight {weight} puts {master} below it)",
                    act=lambda: lab.set_check(master, False),
                    done=(lambda: False) if stays else (lambda: lab.master() == backup),
                    timeout=lab.profile.check_fall * 1.0 + hold + (0 if not stays else 1),
                    judge=moved_to(master if stays else backup),
                )
            )
            out.append(
                self.step(
                    scenario="start the tracked service again",
                    expected=f"{master} stays master" if stays else f"{master} preempts {backup} again",
                    act=lambda: lab.set_check(master, True),
                    done=(lambda: False) if stays else (lambda: lab.master() == master),
                    timeout=lab.profile.check_rise * 1.0 + hold + (0 if not stays else 1),
                    judge=moved_to(master),
                )
            )
            master = lab.master() or master
            backup = next(n for n in lab.nodes if n != master)
        out.append(self._firewall(master, backup, hold))
        master = lab.master() or master
        backup = next(n for n in lab.nodes if n != master)
        out.append(
            self.step(
                scenario="crash the master (SIGKILL)",
                expected=f"{backup} takes over after the master down interval (3 x advert_int + skew)",
                act=lambda: (lab.stop_master(kill=True), None)[1],
                done=lambda: backup in lab.vip_holders(),
                timeout=hold + 5,
                judge=lambda _b, _a: (
                    backup in lab.vip_holders(),
                    f"{backup} holds the VIP"
                    + (f" (the killed {master} still holds it too)" if master in lab.vip_holders() else ""),
                ),
            )
        )
        return out

    def _firewall(self, master: str, backup: str, hold: float) -> Outcome:
        """Drop VRRP into the backup. It stops hearing the master and becomes master too. If its own
        priority is the lower one, the master (which still hears it) keeps its VIP: a split brain. If it
        is the higher one (a nopreempt pair after a failover), the master hears a better advert and
        yields, nopreempt or not: the VIP moves to the cut-off node, and no split brain follows."""
        lab = self.lab
        prio = {n: lab.profile.priorities[i] for i, n in enumerate(sorted(lab.nodes))}
        takeover = prio[backup] > prio[master]
        before = self.watch.read()
        lab.split("firewall", node=backup)
        if takeover:
            both = False
            flagged = False
            moved = lab.wait_for(lambda: lab.master() == backup, hold + 5, 0.05)
            time.sleep(2 * self.interval)
        else:
            moved = False
            both = lab.wait_for(lambda: len(lab.vip_holders()) == 2, hold + 5, 0.05)
            flagged = lab.wait_for(
                lambda: self.watch.read().get("keepalived_wire_split_brain", 0.0) >= 1.0,
                3 * self.interval + 3,
                0.05,
            )
            time.sleep(2 * self.interval)
        lab.heal()
        lab.wait_for(lambda: lab.master() is not None, hold + 5, 0.05)
        after = self.settle()
        master_after = lab.master()
        if takeover:
            expected = (
                f"{backup} (priority {prio[backup]}) takes the VIP: {master} hears its better adverts and "
                "yields (nopreempt only holds while the backup hears the master)"
            )
            happened = (
                f"{'master is ' + backup if moved else 'the VIP did not move'}; after the heal master is "
            )
            ok = moved and master_after is not None
        else:
            expected = "split brain: both hold the VIP and ka-exporter flags it; one master after the heal"
            happened = (
                f"{'both held the VIP' if both else 'no second holder'}, "
                f"{'flagged' if flagged else 'NOT flagged'} by the observer; after the heal master is "
            )
            ok = both and flagged and master_after is not None
        return Outcome(
            profile=self.profile,
            scenario="block VRRP with a firewall rule on the backup, then remove it",
            expected=expected,
            happened=happened + (master_after or "nobody/several"),
            ok=ok,
            **_measured(before, after),
        )


def _measured(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the observer's accounts grew by in a step: masterless time (the gaps' sum, None without a
    gap), handover overlap, time with two masters, the mean announce delay and changes not announced."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    gaps = delta("keepalived_wire_failover_gap_seconds_count")
    overlaps = delta("keepalived_wire_failover_overlap_seconds_count")
    split = delta("keepalived_wire_multi_master_seconds_total")
    announced = delta("keepalived_wire_failover_announce_delay_seconds_count")
    announce = delta("keepalived_wire_failover_announce_delay_seconds_sum") / announced if announced else None
    return {
        "masterless": round(delta("keepalived_wire_failover_gap_seconds_sum"), 3) if gaps else None,
        "overlap": round(delta("keepalived_wire_failover_overlap_seconds_sum"), 3) if overlaps else None,
        "split_brain": round(split, 3) if split > 0.001 else None,
        "announce": round(announce, 4) if announce is not None else None,
        "not_announced": round(delta("keepalived_wire_failover_not_announced_total")),
    }


def run_drill(profiles: tuple[str, ...] = DRILL_PROFILES, workdir: Path | None = None) -> list[Outcome]:
    """Every scenario on a fresh lab per profile; the labs are taken down whatever happens."""
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="ka-drill-") as tmp:
        work = workdir or Path(tmp)
        for name in profiles:
            with Lab(profile=name, nodes=2, dbus=False) as lab, observer(lab, work) as watch:
                outcomes += Drill(lab, watch).run()
    return outcomes


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s" if value >= 0.01 else f"{value * 1000:.1f} ms"


def report(outcomes: list[Outcome]) -> str:
    """The table the drill prints."""
    rows = [
        ("profile", "scenario", "expected", "what happened", "masterless", "overlap", "2 masters", "1-3 s",
         "GARP after")
    ]  # fmt: skip
    for o in outcomes:
        claim = "-" if o.claim_held is None else ("yes" if o.claim_held else "NO")
        garp = _seconds(o.announce) if o.announce is not None or not o.not_announced else "none in 30 s"
        rows.append(
            (
                o.profile,
                o.scenario,
                o.expected,
                ("" if o.ok else "UNEXPECTED: ") + o.happened,
                _seconds(o.masterless),
                _seconds(o.overlap),
                _seconds(o.split_brain),
                claim,
                garp,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def to_json(outcomes: list[Outcome]) -> str:
    return json.dumps([asdict(o) for o in outcomes], indent=2) + "\n"
