"""The keepalived lab: a real keepalived pair (or trio) in network namespaces, for the demo, the tests and
failover rehearsals. See `ka_exporter.lab.core` for the topology and `ka_exporter.lab.profiles` for the
configurations.

    from ka_exporter.lab import Lab
    with Lab(profile="fast") as lab:
        assert lab.master() == "a"
        lab.failover()
        lab.wait_for(lambda: lab.master() == "b", timeout=5.0)
"""

from ka_exporter.lab.core import Lab
from ka_exporter.lab.hosts import LabHost, LabNode
from ka_exporter.lab.naming import DEFAULT_NAME, STATE_DIR, known_labs
from ka_exporter.lab.profiles import LAB_PASSWORD, PROFILES, LabInstance, Profile
from ka_exporter.lab.system import LabError

__all__ = [
    "DEFAULT_NAME",
    "LAB_PASSWORD",
    "PROFILES",
    "STATE_DIR",
    "Lab",
    "LabError",
    "LabHost",
    "LabInstance",
    "LabNode",
    "Profile",
    "known_labs",
]
