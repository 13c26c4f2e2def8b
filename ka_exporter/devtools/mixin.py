"""Render the monitoring mixin (mixin/) into the files this repository ships: alerts/*.rules.yml and
grafana/*.json. Runs Debian's `jsonnet` (package `jsonnet`, 0.18)::

    python -m ka_exporter.devtools.mixin            # rewrite the shipped files
    python -m ka_exporter.devtools.mixin --check    # exit 1 (and name them) if any is stale

tests/test_mixin.py fails while the committed files and the mixin disagree.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MIXIN = ROOT / "mixin"
RENDER = MIXIN / "render.jsonnet"


def jsonnet() -> str:
    path = shutil.which("jsonnet")
    if path is None:
        raise RuntimeError("jsonnet not found: install Debian's `jsonnet` (scripts/bootstrap.sh --test does)")
    return path


def run_jsonnet(*args: str) -> str:
    """jsonnet's output for `args` (with mixin/ on the library path); raises with jsonnet's error."""
    result = subprocess.run(
        [jsonnet(), "-J", str(MIXIN), *args], capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"jsonnet {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


_RENDERED: dict[tuple[str, str], dict[str, str]] = {}


def _sources_digest() -> str:
    """A digest of every file under mixin/: a rendering is reused only while none of them changed."""
    digest = hashlib.sha256()
    for path in sorted(MIXIN.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(MIXIN)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def render(entry: Path = RENDER) -> dict[str, str]:
    """Every file render.jsonnet makes: its path relative to the repository -> its text.

    jsonnet is pure, and a whole rendering takes ~25 s on this project's 2-core CI machine (the dashboard),
    so a rendering of the same entry over the same mixin files is made once per process."""
    key = (str(entry), hashlib.sha256(entry.read_bytes()).hexdigest() + _sources_digest())
    if key not in _RENDERED:
        files = json.loads(run_jsonnet(str(entry)))
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise RuntimeError(f"{entry} must give an object of file texts")
        _RENDERED[key] = {str(k): str(v) for k, v in files.items()}
    return dict(_RENDERED[key])


def stale_in(files: dict[str, str], root: Path = ROOT) -> list[str]:
    """The files of a rendering that differ from (or are missing in) the tree at `root`."""
    return [n for n, text in files.items() if not (root / n).is_file() or (root / n).read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    args = parser.parse_args(argv)
    files = render()
    changed = stale_in(files)
    if args.check:
        for name in changed:
            print(f"stale: {name}", file=sys.stderr)
        return 1 if changed else 0
    for name in changed:
        (ROOT / name).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / name).write_text(files[name])
        print(f"rendered {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
