"""Command-line tools from the distribution (promtool, prometheus, amtool, ...) that tests run.

A test that needs one calls :func:`require_tool`: where the tool is missing it
skips, except under ``CI=true``, where it fails, as in ``tests/debian_postgres.py``.
"""

from __future__ import annotations

import os
import shutil

import pytest

# The Debian packages that ship each tool, for the skip or failure message.
PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
}


def require_tool(name: str) -> str:
    """The path of the executable ``name``, or skip the test; under ``CI=true`` fail it instead."""
    path = shutil.which(name)
    if path is not None:
        return path
    package = PACKAGES.get(name)
    reason = f"{name} not found on PATH" + (f"; install Debian's {package}" if package else "")
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
