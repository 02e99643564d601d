"""What one scrape costs the sidecar, for source trees or layers of reuse side by side.

A side is a source tree (this checkout, or a ``git worktree`` of another
commit), with layers of reuse optionally switched off (``bench/scrape_side.py``
names them). Each side runs in a process of its own, the sidecar imported from
its tree, on one embedded PostgreSQL whose tables hold real checkpoints of the
workload graph. Every side runs every setting at its default but two: no
leader election, so that each runs every collector on the shared database,
and a listen port of its own. Each side scrapes and renders in process (no
HTTP): what a scrape costs the sidecar's own CPU, which the other layers of
the server only add to.

In each round every side runs one block of scrapes, one side at a time, the
order rotating, so that the noise of a shared machine lands on all alike. A
side's figure for a round is the median over its block; its ratio to the
first side is taken round by round, and comes with a distribution-free ~95 %
interval for the median of those ratios. The exit status is 0 whatever the
figures say: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from benchlib import (
    ROOT,
    BenchError,
    code_under_test,
    describe_code,
    environment,
    median,
    median_interval,
    run_main,
    seed,
    server_version,
    span,
)
from children import child_environment, stop

from exporter.embedded import embedded_database
from exporter.log import configure_logging

SIDE_SCRIPT: Final = Path(__file__).resolve().with_name("scrape_side.py")
START_TIMEOUT: Final = 120.0
FIGURES: Final = ("scrape_cpu", "render_cpu", "scrape_wall", "render_wall")


@dataclass(frozen=True, slots=True)
class SideSpec:
    """``NAME=TREE`` or ``NAME=TREE:LAYER,LAYER``: a tree, and the layers switched off in it."""

    name: str
    tree: Path
    without: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> SideSpec:
        name, sep, rest = text.partition("=")
        if not sep or not name or not rest:
            raise argparse.ArgumentTypeError(f"expected NAME=TREE[:LAYER,...], got {text!r}")
        tree, _, layers = rest.partition(":")
        path = Path(tree).resolve()
        if not (path / "exporter" / "__init__.py").is_file():
            raise argparse.ArgumentTypeError(f"{tree} holds no exporter/ package")
        return cls(name, path, tuple(layer for layer in layers.split(",") if layer))

    def describe(self) -> str:
        without = f", without {', '.join(self.without)}" if self.without else ""
        return f"{self.tree}{without}"


@dataclass(slots=True)
class Side:
    """A running side and what it measured, per round (each a list over its block, seconds)."""

    spec: SideSpec
    process: subprocess.Popen[str]
    rounds: list[dict[str, list[float]]] = field(default_factory=list)

    def ask(self, scrapes: int) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(f"{scrapes}\n")
        stdin.flush()
        return _answer(self.spec.name, stdout)

    def per_round(self, figure: str) -> list[float]:
        """The median of each round's block; ``total_cpu`` and ``total_wall`` add the parts."""
        if figure.startswith("total_"):
            kind = figure.removeprefix("total_")
            return [
                median(
                    [a + b for a, b in zip(r[f"scrape_{kind}"], r[f"render_{kind}"], strict=True)]
                )
                for r in self.rounds
            ]
        return [median(r[figure]) for r in self.rounds]

    def overall(self, figure: str) -> float:
        return median(self.per_round(figure))


def _answer(name: str, stdout: IO[str]) -> dict[str, Any]:
    line = stdout.readline()
    if not line:
        raise BenchError(f"side {name} stopped answering")
    answer: dict[str, Any] = json.loads(line)
    return answer


def start_side(spec: SideSpec, url: str, args: argparse.Namespace, log: Path) -> Side:
    argv = [sys.executable, str(SIDE_SCRIPT), "--url", url, "--warmup", str(args.warmup)]
    argv += [f"--without={layer}" for layer in spec.without]
    argv += [f"--setting={setting}" for setting in args.setting]
    with log.open("w") as err:
        process = subprocess.Popen(
            argv,
            cwd=spec.tree,
            env=child_environment(PYTHONPATH=str(spec.tree)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    return Side(spec, process)


async def measure(url: str, scratch: Path, args: argparse.Namespace) -> list[Side]:
    sides: list[Side] = []
    try:
        for spec in args.side:
            sides.append(start_side(spec, url, args, scratch / f"{spec.name}.log"))
        for side in sides:
            stdout = side.process.stdout
            assert stdout is not None
            try:
                await asyncio.wait_for(
                    asyncio.to_thread(_answer, side.spec.name, stdout), START_TIMEOUT
                )
            except BenchError:
                tail = (scratch / f"{side.spec.name}.log").read_text()[-2000:]
                raise BenchError(f"side {side.spec.name} did not start: {tail}") from None
        for index in range(args.rounds):
            shift = index % len(sides)
            for side in sides[shift:] + sides[:shift]:
                answer = await asyncio.to_thread(side.ask, args.block)
                side.rounds.append({figure: answer[figure] for figure in FIGURES})
            if not args.json and (index + 1) % 10 == 0:
                row = "  ".join(f"{s.spec.name} {s.overall('total_cpu') * 1000:.3f}" for s in sides)
                print(f"  round {index + 1}/{args.rounds}: CPU ms {row}", file=sys.stderr)
    finally:
        for side in sides:
            if side.process.stdin is not None:
                side.process.stdin.close()
            stop(side.process)
    return sides


def ratios(side: Side, reference: Side, figure: str) -> list[float]:
    """``side`` over ``reference``, round by round: the same stretch of noise."""
    ours, theirs = side.per_round(figure), reference.per_round(figure)
    return [a / b for a, b in zip(ours, theirs, strict=True) if b]


def report(sides: list[Side], args: argparse.Namespace, postgres: str) -> dict[str, Any]:
    reference = sides[0]
    out: dict[str, Any] = {
        "postgres": postgres,
        "rounds": args.rounds,
        "block": args.block,
        "warmup": args.warmup,
        "settings": args.setting,
        "reference": reference.spec.name,
        "sides": {},
    }
    for side in sides:
        figures: dict[str, Any] = {
            figure: side.overall(figure) * 1000 for figure in ("total_cpu", "total_wall", *FIGURES)
        }
        for figure in ("total_cpu", "total_wall"):
            pairs = ratios(side, reference, figure)
            figures[f"{figure}_ratio"] = median(pairs)
            figures[f"{figure}_interval"] = median_interval(pairs)
        tree = side.spec.tree
        out["sides"][side.spec.name] = {
            "tree": str(tree),
            "code": code_under_test(str(tree), (tree / "exporter").rglob("*.py"), tree),
            "without": list(side.spec.without),
            "ms": figures,
        }
    return out


def render(env: dict[str, Any], result: dict[str, Any]) -> str:
    reference = result["reference"]
    lines = [
        f"Scrape cost side by side, {env['date']}, Python {env['python']}, {env['cpus']} CPUs, "
        f"PostgreSQL {result['postgres']} (embedded)",
        "",
        f"{result['rounds']} rounds; in each, every side runs {result['block']} scrapes + renders "
        "in process, one side at a time, the order rotating; "
        f"{result['warmup']} warm-up scrapes per side first",
        "every setting at its default but leader election (off) and the listen port"
        + (f"; also {', '.join(result['settings'])}" if result["settings"] else ""),
        "",
    ]
    for name, side in result["sides"].items():
        without = f"; without {', '.join(side['without'])}" if side["without"] else ""
        lines.append(f"   {name:<16}{describe_code(side['code'])}{without}")
    lines += [
        "",
        "   medians of the per-round medians, ms per scrape; ratios to "
        f"{reference}, median of the per-round ratios, ~95 % interval",
        "",
        f"   {'side':<16}{'CPU':>7}{'scrape':>8}{'render':>8}{'wall':>8}"
        f"   {'CPU ratio':<26}{'wall ratio':<26}",
    ]
    for name, side in result["sides"].items():
        ms = side["ms"]
        cpu = f"{ms['total_cpu_ratio']:.3f} {span(ms['total_cpu_interval'], '.3f')}"
        wall = f"{ms['total_wall_ratio']:.3f} {span(ms['total_wall_interval'], '.3f')}"
        lines.append(
            f"   {name:<16}{ms['total_cpu']:>7.3f}{ms['scrape_cpu']:>8.3f}{ms['render_cpu']:>8.3f}"
            f"{ms['total_wall']:>8.3f}   {cpu:<26}{wall:<26}"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    async with embedded_database(scratch / "pgdata") as url:
        postgres = await server_version(url)
        if not args.json:
            print(f"writing {args.seed_workflows} workflows ...", file=sys.stderr)
        await seed(url, args.seed_workflows)
        sides = await measure(url, scratch, args)
    return report(sides, args, postgres)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--side",
        action="append",
        type=SideSpec.parse,
        default=[],
        metavar="NAME=TREE[:LAYER,...]",
        help="a side: a source tree, and layers of reuse switched off in it (repeatable; the "
        "first is the reference; default: this checkout alone)",
    )
    parser.add_argument("--rounds", type=int, default=40, help="rounds (40)")
    parser.add_argument("--block", type=int, default=25, help="scrapes per side per round (25)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up scrapes per side (20)")
    parser.add_argument(
        "--seed-workflows", type=int, default=200, help="workflows written before measuring (200)"
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="VARIABLE=VALUE",
        help="a setting for every side, as its environment variable (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if not args.side:
        args.side = [SideSpec("this", ROOT)]
    if len({spec.name for spec in args.side}) != len(args.side):
        parser.error("every --side needs a name of its own")
    if args.rounds < 1 or args.block < 1:
        parser.error("--rounds and --block must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning", stream=sys.stderr)
    env = environment()  # each side's tree is described on a line of its own
    with tempfile.TemporaryDirectory(prefix="bench-scrape-cost-") as scratch:
        result = run_main(run(args, Path(scratch)), "bench/scrape_cost.py")
    if isinstance(result, int):
        return result
    print(
        json.dumps({"environment": env, **result}, indent=2) if args.json else render(env, result)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
