"""What importing ``python -m exporter serve``'s code costs: the RSS of a fresh interpreter
after each import it needs, in the order it needs them.

Printed at the end of ``bench/soak.py``, or alone. The exit status is 0: this is a
measurement, not a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Final

from benchlib import ROOT
from children import child_environment

# What `python -m exporter serve` imports, in the order it needs them; each step's RSS
# is measured in one fresh interpreter after importing it and everything above.
IMPORT_STEPS: Final = (
    ("asyncio", "asyncio"),
    ("prometheus_client, structlog", "prometheus_client,structlog"),
    ("aiohttp.web", "aiohttp.web"),
    ("psycopg, psycopg_pool", "psycopg,psycopg_pool"),
    ("langgraph.checkpoint.postgres.aio", "langgraph.checkpoint.postgres.aio"),
    ("exporter.server (the sidecar's code)", "exporter.server"),
    ("exporter.cli (adds loadtest: langgraph.graph)", "exporter.cli"),
)
FOOTPRINT_SCRIPT: Final = """
import json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
out = [["bare interpreter", rss(), len(sys.modules)]]
for label, modules in json.loads(sys.argv[1]):
    for module in modules.split(","):
        __import__(module)
    out.append([label, rss(), len(sys.modules)])
print(json.dumps(out))
"""


def import_footprint() -> list[tuple[str, float, int]]:
    """RSS (MB) and module count after each import step, in one fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", FOOTPRINT_SCRIPT, json.dumps(IMPORT_STEPS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=child_environment(),
    )
    if done.returncode != 0:
        return []
    return [(str(label), float(mb), int(n)) for label, mb, n in json.loads(done.stdout)]


def render_footprint(footprint: list[tuple[str, float, int]]) -> list[str]:
    return [
        "   RSS of a fresh interpreter after each import `python -m exporter serve` needs:",
        *(f"     {mb:6.1f} MB {n:>6} modules  {label}" for label, mb, n in footprint),
    ]


def main() -> int:
    print("\n".join(render_footprint(import_footprint())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
