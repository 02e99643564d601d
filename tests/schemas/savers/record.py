"""Record the migrations and write SQL of released checkpoint savers as JSON, for tests to replay.

The sidecar shares its database with applications on other saver releases, so
the tests need schemas exactly as those releases leave them. This script takes
the SQL from the published packages themselves, never from memory:

- ``langgraph-checkpoint-postgres`` wheels from PyPI (``pip download``): the
  string constants of ``langgraph/checkpoint/postgres/base.py`` and the
  statement ``setup()`` in ``aio.py`` records each migration with;
- ``@langchain/langgraph-checkpoint-postgres`` from npm (``npm install`` in a
  temporary directory): ``getMigrations`` and ``getSQLStatements`` of its
  ``dist/``, evaluated by node with the schema ``__SCHEMA__``.

Run it from the repository root (``.venv/bin/python tests/schemas/savers/record.py``);
it rewrites one ``<saver>-<version>.json`` per release next to itself.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PYTHON_RELEASES = ("2.0.0", "2.0.8")
JS_RELEASES = ("1.0.5",)
# The statements a saver writes checkpoints, blobs and pending writes with.
PYTHON_STATEMENTS = (
    "UPSERT_CHECKPOINT_BLOBS_SQL",
    "UPSERT_CHECKPOINTS_SQL",
    "INSERT_CHECKPOINT_WRITES_SQL",
)
JS_STATEMENTS = PYTHON_STATEMENTS
JS_SCHEMA = "__SCHEMA__"
JS_PACKAGE = "@langchain/langgraph-checkpoint-postgres"
PACKAGE_DIR = "langgraph/checkpoint/postgres"

JS_DUMP = """
const dist = process.argv[1];
const migrations = await import(dist + "/migrations.js");
const statements = await import(dist + "/sql.js");
console.log(JSON.stringify({
  migrations: migrations.getMigrations(process.argv[2]),
  statements: statements.getSQLStatements(process.argv[2]),
}));
"""


def module_strings(source: str) -> dict[str, Any]:
    """Module-level assignments of string constants (and lists of them), as literals."""
    found: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not isinstance(target, ast.Name):
            continue
        try:
            found[target.id] = ast.literal_eval(node.value)
        except ValueError:
            continue  # an f-string or an expression: not a constant
    return found


def record_python(version: str, workdir: Path) -> dict[str, Any]:
    """The migrations and write statements of one langgraph-checkpoint-postgres wheel."""
    spec = f"langgraph-checkpoint-postgres=={version}"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(workdir), spec],
        check=True,
    )
    (wheel,) = workdir.glob(f"langgraph_checkpoint_postgres-{version}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        base = archive.read(f"{PACKAGE_DIR}/base.py").decode()
        aio = archive.read(f"{PACKAGE_DIR}/aio.py").decode()
    constants = module_strings(base)
    record = re.search(r'"(INSERT INTO checkpoint_migrations \(v\) VALUES \([^)]*\))"', aio)
    assert record is not None, "setup() records migrations differently in this release"
    return {
        "saver": "langgraph-checkpoint-postgres",
        "version": version,
        "source": f"pypi:{spec} ({wheel.name}: {PACKAGE_DIR}/base.py, aio.py)",
        "schema_qualified": False,
        "placeholder": "%s",
        "record_migration": record[1],
        "migrations": list(constants["MIGRATIONS"]),
        "statements": {name: constants[name] for name in PYTHON_STATEMENTS},
    }


def record_js(version: str, workdir: Path) -> dict[str, Any]:
    """The migrations and write statements of one npm release, as its dist/ builds them."""
    spec = f"{JS_PACKAGE}@{version}"
    subprocess.run(
        ["npm", "install", "--no-save", "--ignore-scripts", "--no-audit", "--no-fund",
         "--prefix", str(workdir), spec, "@langchain/core"],
        check=True, capture_output=True,
    )  # fmt: skip
    dist = workdir / "node_modules" / JS_PACKAGE / "dist"
    done = subprocess.run(
        ["node", "--input-type=module", "-e", JS_DUMP, str(dist), JS_SCHEMA],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    dumped = json.loads(done.stdout)
    index = (dist / "index.js").read_text()
    record = re.search(r"`(INSERT INTO \$\{SCHEMA_TABLES\.checkpoint_migrations\} [^`]*)`", index)
    assert record is not None, "setup() records migrations differently in this release"
    return {
        "saver": JS_PACKAGE,
        "version": version,
        "source": f"npm:{spec} (dist/migrations.js, dist/sql.js, dist/index.js)",
        "schema_qualified": True,
        "schema_placeholder": JS_SCHEMA,
        "placeholder": "$n",
        "record_migration": record[1].replace(
            "${SCHEMA_TABLES.checkpoint_migrations}", f'"{JS_SCHEMA}".checkpoint_migrations'
        ),
        "migrations": dumped["migrations"],
        "statements": {name: dumped["statements"][name] for name in JS_STATEMENTS},
    }


def write(record: dict[str, Any]) -> Path:
    name = "python" if record["saver"] == "langgraph-checkpoint-postgres" else "js"
    path = HERE / f"{name}-{record['version']}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def main() -> None:
    for version in PYTHON_RELEASES:
        with tempfile.TemporaryDirectory() as workdir:
            print(write(record_python(version, Path(workdir))))
    for version in JS_RELEASES:
        with tempfile.TemporaryDirectory() as workdir:
            print(write(record_js(version, Path(workdir))))


if __name__ == "__main__":
    main()
