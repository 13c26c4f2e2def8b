"""`make bench`: run every bench/bench_*.py, print their tables, write bench/results/latest.json.

Each script prints its own table (every figure next to its floor or target, measured in the same
run) and may print one line `RESULT {json}` with its figures; those are gathered into the JSON file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    only = set(sys.argv[1:])
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not only or p.stem.removeprefix("bench_") in only)
    results: dict[str, object] = {"started": time.time(), "benches": {}}
    failed = 0
    for script in scripts:
        name = script.stem.removeprefix("bench_")
        print(f"=== {name} ({script.name})", flush=True)
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, cwd=HERE.parent, check=False
        )
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            failed += 1
            sys.stdout.write(proc.stderr[-2000:])
        figures = [
            json.loads(line.removeprefix("RESULT "))
            for line in proc.stdout.splitlines()
            if line.startswith("RESULT ")
        ]
        results["benches"][name] = {  # type: ignore[index]
            "exit": proc.returncode,
            "seconds": round(time.monotonic() - t0, 2),
            "results": figures,
            "output": proc.stdout,
        }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    print(f"wrote {out / 'latest.json'}; {len(scripts) - failed}/{len(scripts)} benches ran")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
