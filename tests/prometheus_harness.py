"""A real Prometheus (Debian's package) on loopback for end-to-end tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO, free_port, stop_process

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def shorten_for(rule_file: Path, out: Path, factor: float = 0.1, minimum: float = 1.0) -> Path:
    """Copy a rule file with every `for:` scaled down (test Prometheus only; shipped rules untouched)."""
    doc = yaml.safe_load(rule_file.read_text())
    for group in doc.get("groups", []):
        group["interval"] = "1s"
        for rule in group.get("rules", []):
            if "for" in rule:
                rule["for"] = f"{max(minimum, parse_duration(rule['for']) * factor):g}s"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def parse_duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", str(text)):
        total += float(num) * units[unit]
    return total


class Prometheus:
    def __init__(self, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.port = port
        self.proc = proc
        self.log = log

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        doc = self.get("/api/v1/query", query=expr)
        assert doc["status"] == "success", doc
        return list(doc["data"]["result"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/alerts")["data"]["alerts"])

    def alert_state(self, name: str, **labels: str) -> str | None:
        """'firing', 'pending' or None for the alert with that name (and labels)."""
        states = [
            a["state"]
            for a in self.alerts()
            if a["labels"].get("alertname") == name
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]
        if "firing" in states:
            return "firing"
        return "pending" if states else None

    def targets_up(self) -> dict[str, str]:
        doc = self.get("/api/v1/targets")
        return {t["labels"]["instance"]: t["health"] for t in doc["data"]["activeTargets"]}


@contextmanager
def prometheus(
    workdir: Path,
    targets: Sequence[str],
    rule_files: Sequence[Path] = (),
    *,
    scrape_interval: str = "1s",
    scheme: str = "http",
    extra_scrape: dict[str, Any] | None = None,
) -> Iterator[Prometheus]:
    if not Path(PROMETHEUS).exists():
        raise AssertionError("prometheus is not installed (make test installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    rules = []
    for i, rf in enumerate(rule_files):
        rules.append(str(shorten_for(rf, workdir / f"rules-{i}.yml")))
    job: dict[str, Any] = {
        "job_name": "keepalived",
        "scheme": scheme,
        "static_configs": [{"targets": list(targets), "labels": {"cluster": "lab"}}],
    }
    if extra_scrape:
        job.update(extra_scrape)
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": rules,
        "scrape_configs": [job],
    }
    cfg = workdir / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config))
    port = free_port()
    log = workdir / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                f"--web.console.templates={workdir}",
                f"--web.console.libraries={workdir}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    prom = Prometheus(port, proc, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                prom.get("/api/v1/status/buildinfo")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"prometheus did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        yield prom
    finally:
        stop_process(proc)
