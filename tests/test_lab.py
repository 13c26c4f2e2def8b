"""The keepalived lab with real keepalived, namespaces, nftables, dbus-daemon and tcpdump (no mocks)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from ka_exporter.lab import LAB_PASSWORD, PROFILES, Lab, LabError, LabNode
from ka_exporter.lab.cli import lab as lab_cli
from ka_exporter.lab.naming import state_path
from ka_exporter.lab.profiles import Addressing, render_config
from ka_exporter.lab.system import find_tool

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
]


# ---------------------------------------------------------------------------------------------- helpers


IP = find_tool("ip", "iproute2")  # root's PATH has /usr/sbin; CI's may not


def netns_list() -> set[str]:
    out = subprocess.run([IP, "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def gone(pid: int) -> bool:
    """No such process, or a zombie (reparented to pid 1, which may reap it late)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return bool(re.search(r"^State:\s+Z", status, re.M))


def keepalived_pids(node: LabNode) -> list[int]:
    """The parent and its VRRP child."""
    assert node.pid is not None
    return [node.pid, int(node.vrrp_pidfile.read_text())]


def observed_sources(lab: Lab, count: int = 20) -> set[str]:
    """Source addresses of `count` VRRP packets captured by tcpdump in the observer namespace."""
    out = subprocess.run(
        [
            *(
                IP,
                "netns",
                "exec",
                lab.observer.netns,
                find_tool("tcpdump", "tcpdump"),
                "-n",
                "-l",
                "-c",
                str(count),
            ),
            *("-i", lab.observer.interface, "ip proto 112"),
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    return set(re.findall(r"IP (\d+\.\d+\.\d+\.\d+) > ", out))


def lab_artifacts(lab: Lab) -> list[str]:
    """Every text the lab writes or shows besides keepalived.conf (which must hold the password)."""
    texts = [lab.status(), lab.state_file.read_text()]
    for node in lab.nodes.values():
        texts.append(node.log_path.read_text())
        if node.notify_log.exists():
            texts.append(node.notify_log.read_text())
        assert node.pid is not None
        texts.append(Path(f"/proc/{node.pid}/cmdline").read_bytes().decode(errors="replace"))
        texts.append(Path(f"/proc/{node.pid}/environ").read_bytes().decode(errors="replace"))
    return texts


def up_in_parallel(labs: list[Lab]) -> list[BaseException]:
    """Bring the labs up at the same time, one thread each; returns what went wrong."""
    errors: list[BaseException] = []

    def bring_up(lab: Lab) -> None:
        try:
            lab.up()
        except BaseException as exc:  # returned to the test, which asserts there is none
            errors.append(exc)

    threads = [threading.Thread(target=bring_up, args=(lab,)) for lab in labs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


# ---------------------------------------------------------------------------------------------- lifecycle


def test_up_down_leaves_no_namespace_process_or_file_behind():
    lab = Lab(profile="fast", nodes=3)
    lab.up()
    try:
        names = {lab.bridge_netns, lab.observer.netns, *(n.netns for n in lab.nodes.values())}
        assert names <= netns_list()
        pids = [pid for node in lab.nodes.values() for pid in keepalived_pids(node)]
        assert not any(gone(pid) for pid in pids)
        assert lab.state_file.exists()
        assert lab.dir.is_dir()
    finally:
        summary = lab.down()
    assert summary == f"lab {lab.prefix} down: stopped 3 processes, removed 5 namespaces"
    assert not names & netns_list()
    assert all(gone(pid) for pid in pids)
    assert not lab.state_file.exists()
    assert not lab.dir.exists()
    assert lab.down() == f"lab {lab.prefix} down: stopped 0 processes, removed 0 namespaces"


def test_fast_profile_elects_exactly_one_master_holding_all_vips(fast_lab: Lab):
    lab = fast_lab
    assert lab.master() == "a"
    assert [lab.vip_holders(vip) for vip in lab.vips] == [["a"]] * len(lab.vips)
    assert lab.nodes["b"].running()
    # keepalived starts only once the veths have carrier: no spurious FAULT at start-up
    assert all("FAULT" not in node.log_path.read_text() for node in lab.nodes.values())
    (inst,) = lab.instances
    assert inst.interface == "eth0"
    assert list(inst.vips) == lab.vips
    # The observer is on the same bridge and sees the master's adverts.
    assert observed_sources(lab, count=5) == {lab.nodes["a"].address}
    table = lab.status()
    assert re.search(
        rf"^a\s+{lab.nodes['a'].netns}\s+{lab.nodes['a'].address}\s+pid \d+\s+-\s+{lab.vips[0]}$", table, re.M
    )
    assert re.search(
        rf"^b\s+{lab.nodes['b'].netns}\s+{lab.nodes['b'].address}\s+pid \d+\s+-\s+-$", table, re.M
    )


def test_failover_moves_the_vips_to_b_and_start_master_brings_a_back(fast_lab: Lab):
    lab = fast_lab
    a_pids = keepalived_pids(lab.nodes["a"])
    assert lab.failover() == "a"
    assert lab.vip_holders() == ["b"] or lab.wait_for(lambda: lab.master() == "b", timeout=2.0)
    assert lab.master() == "b"
    assert lab.wait_for(lambda: all(gone(pid) for pid in a_pids), timeout=5.0)
    assert not lab.nodes["a"].running()
    assert lab.start_master() == "a"
    assert lab.wait_for(lambda: lab.master() == "a", timeout=3.0)  # a has the higher priority: preempts


def test_sigkill_leaves_the_stale_vip_on_the_killed_node(fast_lab: Lab):
    lab = fast_lab
    a_pids = keepalived_pids(lab.nodes["a"])
    assert lab.stop_master(kill=True) == "a"
    assert all(gone(pid) for pid in a_pids)  # parent and VRRP child died at once: nobody removed the VIP
    assert lab.wait_for(lambda: lab.vip_holders() == ["a", "b"], timeout=3.0)
    assert lab.master() is None
    assert "stopped master: a" in lab.status()
    assert lab.start_master() == "a"
    assert lab.wait_for(lambda: lab.master() == "a", timeout=3.0)


def test_bridge_split_makes_two_masters_the_observer_sees_both_and_heal_makes_one(fast_lab: Lab):
    lab = fast_lab
    a, b = lab.nodes["a"].address, lab.nodes["b"].address
    lab.split(mode="bridge")
    assert lab.wait_for(lambda: lab.vip_holders() == ["a", "b"], timeout=3.0)
    assert observed_sources(lab) == {a, b}
    with pytest.raises(LabError, match=r"no single master \(.* on a,b\)"):
        lab.failover()
    assert "split: bridge" in lab.status()
    assert lab.heal() == 1
    assert lab.wait_for(lambda: lab.master() == "a", timeout=3.0)
    assert observed_sources(lab, count=5) == {a}


def test_firewall_split_on_b_makes_two_masters_and_heal_makes_one(fast_lab: Lab):
    lab = fast_lab
    lab.split(mode="firewall", node="b")
    assert lab.wait_for(lambda: lab.vip_holders() == ["a", "b"], timeout=3.0)
    assert "split: firewall (b)" in lab.status()
    assert lab.heal() == 1
    assert lab.wait_for(lambda: lab.master() == "a", timeout=3.0)


def test_restart_starts_a_new_keepalived_and_the_master_stays(fast_lab: Lab):
    lab = fast_lab
    old = lab.nodes["b"].pid
    lab.restart("b")
    assert lab.nodes["b"].pid not in (None, old)
    assert lab.master() == "a"
    with pytest.raises(LabError, match="keepalived on node b is already running"):
        lab.start("b")
    lab.stop("b", signal=signal.SIGKILL)
    assert not lab.nodes["b"].running()
    assert lab.master() == "a"


def test_split_rejects_an_unknown_mode_or_node(fast_lab: Lab):
    with pytest.raises(LabError, match="unknown split mode 'wall'"):
        fast_lab.split(mode="wall")
    with pytest.raises(LabError, match="no node 'z'"):
        fast_lab.split(mode="firewall", node="z")
    assert fast_lab.splits == []


def test_two_labs_in_parallel_both_work():
    labs = [Lab(profile="fast"), Lab(profile="fast")]
    errors = up_in_parallel(labs)
    try:
        assert errors == []
        first, second = labs
        assert first.prefix != second.prefix
        assert first.subnet != second.subnet
        assert first.master() == "a"
        assert second.master() == "a"
        first.failover()  # one lab's failover does not touch the other
        assert first.wait_for(lambda: first.master() == "b", timeout=2.0)
        assert second.master() == "a"
    finally:
        for lab in labs:
            lab.down()
    assert not {lab.bridge_netns for lab in labs} & netns_list()


def test_classic_profiles_come_up_in_parallel():
    """dual-master, unicast and mysql (VRRPv2, advert 1: ~3.5 s each, so all at once)."""
    labs = {name: Lab(profile=name) for name in ("dual-master", "unicast", "mysql")}
    errors = up_in_parallel(list(labs.values()))
    try:
        assert errors == []
        dual = labs["dual-master"]
        assert [(i.name, dual.master(i.vips[0])) for i in dual.instances] == [("VI_1", "a"), ("VI_2", "b")]
        assert labs["unicast"].master() == "a"
        assert labs["mysql"].master() == "a"
        for lab in labs.values():
            for text in lab_artifacts(lab):
                assert LAB_PASSWORD not in text
    finally:
        for lab in labs.values():
            lab.down()


def test_basic_profile_v2_pass_auth_and_notify_scripts():
    with Lab(profile="basic") as lab:
        assert lab.master() == "a"
        a, b = lab.nodes["a"], lab.nodes["b"]
        assert lab.wait_for(lambda: "INSTANCE VI_1 MASTER" in a.notify_log.read_text(), timeout=2.0)
        assert "INSTANCE VI_1 BACKUP" in b.notify_log.read_text()
        assert "FAULT" not in a.notify_log.read_text() + b.notify_log.read_text()
        # the password is in keepalived.conf only, and that file is readable by root only
        assert LAB_PASSWORD in a.config_path.read_text()
        assert stat.S_IMODE(a.config_path.stat().st_mode) == 0o600
        for text in lab_artifacts(lab):
            assert LAB_PASSWORD not in text
        assert observed_sources(lab, count=2) == {a.address}


def test_nginx_check_script_failure_moves_the_master():
    with Lab(profile="nginx") as lab:
        assert lab.master() == "a"
        lab.set_check("a", healthy=False)  # weight -60: a drops to 90 < b's 100
        assert lab.wait_for(lambda: lab.master() == "b", timeout=6.0)


def dbus_state(address: str, vrid: int) -> str:
    """keepalived's State property of instance eth0/VRID/IPv4, read with dbus-send from the node's bus."""
    return subprocess.run(
        [
            *(
                find_tool("dbus-send", "dbus"),
                f"--bus={address}",
                "--print-reply",
                "--dest=org.keepalived.Vrrp1",
            ),
            f"/org/keepalived/Vrrp1/Instance/eth0/{vrid}/IPv4",
            *("org.freedesktop.DBus.Properties.Get", "string:org.keepalived.Vrrp1.Instance", "string:State"),
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout


def test_dbus_each_node_has_its_own_bus_with_keepalived_on_it():
    with Lab(profile="fast", dbus=True) as lab:
        a, b = lab.nodes["a"], lab.nodes["b"]
        assert a.dbus_address is not None
        assert b.dbus_address is not None
        assert a.dbus_address != b.dbus_address
        vrid = lab.instances[0].vrid
        assert re.search(r'uint32 2\s+string "Master"', dbus_state(a.dbus_address, vrid))
        assert re.search(r'uint32 1\s+string "Backup"', dbus_state(b.dbus_address, vrid))
        buses = [a.dbus_address, b.dbus_address]
        dbus_pids = [n.dbus_proc.pid for n in (a, b) if n.dbus_proc is not None]
        assert len(dbus_pids) == 2
    assert all(gone(pid) for pid in dbus_pids)
    assert not any(Path(bus.removeprefix("unix:path=")).exists() for bus in buses)


def test_ipv6_profile_holds_link_local_and_ula_vips():
    with Lab(profile="fast", ipv6=True) as lab:
        assert lab.profile.name == "fast-ipv6"
        assert lab.vips[0].startswith("fe80:")
        assert [lab.vip_holders(vip) for vip in lab.vips] == [["a"], ["a"]]
        lab.split(mode="firewall", node="b")  # the nft rule drops ip6 nexthdr 112 too
        assert lab.wait_for(lambda: lab.vip_holders() == ["a", "b"], timeout=3.0)


# ---------------------------------------------------------------------------------------------- failures


def test_no_master_within_the_timeout_raises_with_log_tails_and_cleans_up():
    lab = Lab(profile="fast")
    with pytest.raises(LabError) as info:
        lab.up(timeout=0.01)  # VRRPv3 at 0.1 s needs ~0.35 s for the master-down timer
    message = str(info.value)
    assert message.startswith(f"lab {lab.prefix}: keepalived did not settle within 0.01 s")
    # the tail of each node's log
    for node in ("a", "b"):
        assert re.search(
            rf"^node {node} \(.*keepalived\.log\):\n(  .*\n)*  .*\(VI_1\) Entering BACKUP", message, re.M
        )
    assert not {lab.bridge_netns, lab.observer.netns} & netns_list()
    assert not lab.state_file.exists()
    assert not lab.dir.exists()


def test_a_lab_name_in_use_is_refused_and_the_first_lab_survives(fast_lab: Lab):
    with pytest.raises(LabError, match=f"a lab named {fast_lab.prefix} already exists"):
        Lab(profile="fast", prefix=fast_lab.prefix).up()
    assert fast_lab.master() == "a"
    assert fast_lab.state_file.exists()


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(LabError, match=r"unknown lab profile 'nope' \(choose from fast, fast-ipv6, basic"):
        Lab(profile="nope")
    with pytest.raises(LabError, match="a lab has 2 or 3 nodes, not 4"):
        Lab(nodes=4)
    with pytest.raises(LabError, match="bad lab name 'Bad_Name'"):
        Lab(prefix="Bad_Name")
    with pytest.raises(LabError, match="IPv6 is available as fast-ipv6 only"):
        Lab(profile="basic", ipv6=True)


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_up_status_down_with_a_real_lab():
    name = f"kc{os.getpid() % 10000:04d}{secrets.token_hex(1)}"
    runner = CliRunner()
    result = runner.invoke(lab_cli, ["up", "--name", name, "--profile", "fast"])
    try:
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"lab {name} up: profile fast, nodes a,b, subnet 10.")
        loaded = Lab.load(name)
        assert f"{loaded.vips[0]} on a" in result.output
        status = runner.invoke(lab_cli, ["status", "--name", name])
        assert status.exit_code == 0, status.output
        assert re.search(
            rf"^a\s+{name}-a\s+\S+\s+pid \d+\s+-\s+{re.escape(loaded.vips[0])}$", status.output, re.M
        )
        pids = [pid for node in loaded.nodes.values() for pid in keepalived_pids(node)]
        split = runner.invoke(lab_cli, ["split", "--name", name, "--mode", "firewall"])
        assert split.exit_code == 0, split.output
        assert loaded.wait_for(lambda: loaded.vip_holders() == ["a", "b"], timeout=3.0)
        assert (
            runner.invoke(lab_cli, ["heal", "--name", name]).output
            == f"lab {name} healed: removed 1 split(s)\n"
        )
    finally:
        down = runner.invoke(lab_cli, ["down", "--name", name])
    assert down.exit_code == 0, down.output
    assert down.output == f"lab {name} down: stopped 2 processes, removed 4 namespaces\n"
    assert all(gone(pid) for pid in pids)
    assert not {f"{name}-a", f"{name}-b", f"{name}-sw", f"{name}-o"} & netns_list()
    again = runner.invoke(lab_cli, ["status", "--name", name])
    assert again.exit_code == 1
    assert again.output.startswith(f"Error: no lab named {name} ")
    assert again.output.count("\n") == 1


def test_cli_failover_and_stop_master_report_the_vip_holders():
    name = f"kc{os.getpid() % 10000:04d}{secrets.token_hex(1)}"
    runner = CliRunner()
    assert runner.invoke(lab_cli, ["up", "--name", name]).exit_code == 0
    try:
        result = runner.invoke(lab_cli, ["failover", "--name", name])
        assert result.output == "failover: stopped keepalived on a (SIGTERM); b is master now\n"
        result = runner.invoke(lab_cli, ["start-master", "--name", name])
        assert result.exit_code == 0, result.output
        assert result.output.startswith("start-master: started keepalived on a; ")
        loaded = Lab.load(name)
        vip = loaded.vips[0]
        assert loaded.wait_for(lambda: loaded.master() == "a", timeout=3.0)
        result = runner.invoke(lab_cli, ["stop-master", "--name", name])
        assert result.output == f"stop-master: killed keepalived on a; {vip} on a,b\n"
    finally:
        assert runner.invoke(lab_cli, ["down", "--name", name]).exit_code == 0


def test_cli_preconditions_are_one_line_errors(tmp_path: Path):
    name = f"kc{os.getpid() % 10000:04d}{secrets.token_hex(1)}"
    result = CliRunner().invoke(
        lab_cli, ["up", "--name", name], env={"KA_LAB_KEEPALIVED": str(tmp_path / "keepalived")}
    )
    assert result.exit_code == 1
    assert result.output.startswith("Error: keepalived is not installed: apt-get install keepalived (")
    assert result.output.count("\n") == 1
    assert not state_path(name).exists()
    # not root: a real unprivileged process
    proc = subprocess.run(
        [
            *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable),
            *("-c", "from ka_exporter.lab.cli import lab; lab(['up', '--name', 'x'])"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd="/",
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == "Error: the lab needs root (network namespaces, keepalived): run it as root\n"


def test_state_file_round_trips_and_another_process_can_take_the_lab_down(fast_lab: Lab):
    state = json.loads(fast_lab.state_file.read_text())
    assert state["prefix"] == fast_lab.prefix
    assert LAB_PASSWORD not in fast_lab.state_file.read_text()
    copy = Lab.load(fast_lab.state_file)
    assert copy.subnet == fast_lab.subnet
    assert copy.master() == "a"
    assert copy.nodes["a"].pid == fast_lab.nodes["a"].pid
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from ka_exporter.lab import Lab; print(Lab.load({fast_lab.prefix!r}).down())",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert out == f"lab {fast_lab.prefix} down: stopped 2 processes, removed 4 namespaces\n"
    assert not fast_lab.nodes["a"].running()
    assert fast_lab.bridge_netns not in netns_list()


# ---------------------------------------------------------------------------------------------- configs


def test_profiles_render_the_classic_configurations(tmp_path: Path):
    addr = Addressing(201, 7)

    def conf(profile: str, node: str) -> str:
        return render_config(PROFILES[profile], addr, node, nodes=2, node_dir=tmp_path, dbus=False)

    mysql_a, mysql_b = conf("mysql", "a"), conf("mysql", "b")
    for text in (mysql_a, mysql_b):
        assert "state BACKUP" in text
        assert "nopreempt" in text
        assert "weight -20\n    fall 3\n    rise 2" in text
    dual_a = conf("dual-master", "a")
    assert re.search(r"VI_1 \{\n    state MASTER\n.*\n    virtual_router_id 8\n    priority 150", dual_a)
    assert re.search(r"VI_2 \{\n    state BACKUP\n.*\n    virtual_router_id 9\n    priority 100", dual_a)
    unicast_b = conf("unicast", "b")
    assert "unicast_src_ip 10.201.7.2\n    unicast_peer {\n        10.201.7.1\n    }" in unicast_b
    fast = conf("fast", "a")
    assert "vrrp_version 3" in fast
    assert "advert_int 0.1" in fast
    assert "authentication" not in fast
    assert "enable_dbus" not in fast
    basic = conf("basic", "a")
    assert f"auth_pass {LAB_PASSWORD}" in basic
    assert "auth_type PASS" in basic
    assert "auth_type AH" in conf("ah", "a")
    assert f'notify "{tmp_path / "notify.sh"}"' in basic
