"""The package's imports keep the layering pyproject.toml declares (import-linter's contract)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run the contract of ``tree``/pyproject.toml on the ``exporter`` package found in ``tree``."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(tree / "pyproject.toml")],
        cwd=tree,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "exporter", tmp_path / "exporter", ignore=shutil.ignore_patterns("*.pyc")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_every_import_points_down_the_layers() -> None:
    """The package as it is keeps the contract."""
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward"),
    [
        ("checkpointer/backend.py", "exporter.workflows.tracker"),
        ("server.py", "exporter.sidecar"),
        ("workflows/progress.py", "exporter.factory"),
        ("redact.py", "exporter.log"),
    ],
)
def test_an_import_pointing_up_breaks_the_contract(
    tmp_path: Path, module: str, upward: str
) -> None:
    """One added import from a lower layer to a higher one fails the check, naming both."""
    tree = copy_of_the_package(tmp_path)
    target = tree / "exporter" / module
    target.write_text(target.read_text() + f"\nimport {upward}  # noqa\n")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 broken" in result.stdout
    importer = "exporter." + module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> {upward}" in result.stdout


def test_every_path_the_map_names_exists() -> None:
    """ARCHITECTURE.md and the README's Development section name only files that exist."""
    named = set()
    for document in ("ARCHITECTURE.md", "README.md"):
        text = (ROOT / document).read_text()
        named |= set(
            re.findall(r"`((?:exporter|tests|alerts|bench)/[\w./-]+\.(?:py|yml|md|json))`", text)
        )
    assert named, "no paths found: the pattern no longer matches the documents"
    missing = sorted(path for path in named if "<" not in path and not (ROOT / path).exists())
    assert missing == []
