"""Versions reported by the build-info metric and the landing page."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


VERSION = package_version("checkpoint-exporter")
LANGGRAPH_CHECKPOINT_VERSION = package_version("langgraph-checkpoint")
PYTHON_VERSION = platform.python_version()
