"""Command line: argv and environment to settings; one-line errors with exit status 2."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any, NoReturn

from prometheus_client import disable_created_metrics

from exporter.checkpointer.factory import CheckpointerUnavailableError
from exporter.database import connection_string
from exporter.embedded import EmbeddedDatabaseError
from exporter.log import configure_logging, get_logger
from exporter.redact import redact
from exporter.settings import (
    SPECS,
    Settings,
    SettingsError,
    duration_in,
    integer_in,
    register_environment_secrets,
)
from exporter.sidecar import Sidecar
from exporter.version import VERSION

PROG = "checkpoint-exporter"
COMMANDS = ("serve", "loadtest")

log = get_logger("cli")


class UsageError(Exception):
    """A flag or argument is wrong; the message is the whole line to print."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints usage plus the error; one line is easier to read in a log.
        raise UsageError(message)


def _float_in(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not (low <= value <= high) or value != value:
            raise ValueError(f"must be between {low:g} and {high:g}, got {raw}")
        return value

    return parse


LOADTEST_OPTIONS: dict[str, tuple[Callable[[str], Any], str, str]] = {
    "workflows": (integer_in(1, 10_000), "16", "Concurrent workflows."),
    "duration": (duration_in(0.1, 86_400), "30s", "How long to run, e.g. 60s or 5m."),
    "think_time": (
        duration_in(0, 3600),
        "50ms",
        "Wait in each node, standing in for model and tool calls (0: stress test).",
    ),
    "state_kb": (_float_in(0.1, 10_240), "4", "Rough size of each workflow's state, in KiB."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Prometheus metrics and health for LangGraph checkpointers in PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {VERSION}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    serve = commands.add_parser("serve", help="Serve /metrics and health (the default).")
    loadtest = commands.add_parser(
        "loadtest", help="Run concurrent workflows and judge save/load latency against the targets."
    )
    for sub in (serve, loadtest):
        for spec in SPECS:
            if spec.flag is not None:
                sub.add_argument(
                    spec.flag,
                    dest=spec.field,
                    metavar="VALUE",
                    help=f"{spec.help} Env: {spec.env}. Default: {spec.default}.",
                )
    for name, (_, default, text) in LOADTEST_OPTIONS.items():
        loadtest.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=default,
            metavar="VALUE",
            help=f"{text} Default: {default}.",
        )
    loadtest.add_argument(
        "--output", choices=("text", "json"), default="text", help="Report format. Default: text."
    )
    loadtest.add_argument("--check", action="store_true", help="Exit 1 when a target is missed.")
    return parser


def parse(argv: Sequence[str]) -> tuple[str, Settings, argparse.Namespace]:
    """Parse ``argv`` (``serve`` when no command is named); raise UsageError or SettingsError."""
    register_environment_secrets(os.environ)  # argparse errors may echo any argument
    args = list(argv)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help", "--version")):
        args.insert(0, "serve")
    namespace = build_parser().parse_args(args)
    flags = {spec.field: getattr(namespace, spec.field, None) for spec in SPECS}
    settings = Settings.load(flags=flags)
    for name, (convert, _, _) in LOADTEST_OPTIONS.items():
        if hasattr(namespace, name):
            try:
                setattr(namespace, name, convert(getattr(namespace, name)))
            except ValueError as exc:
                raise UsageError(f"--{name.replace('_', '-')}: {exc}") from None
    return namespace.command, settings, namespace


async def serve(settings: Settings) -> int:
    """Serve until SIGINT or SIGTERM, on the embedded PostgreSQL if none is configured."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with AsyncExitStack() as stack:
        if settings.embedded:
            url = await stack.enter_async_context(connection_string(settings))
            settings = settings.replace(postgres_connection_string=url)
        await stack.enter_async_context(Sidecar(settings))
        await stop.wait()
    return 0


async def loadtest(settings: Settings, namespace: argparse.Namespace, serve_too: bool) -> int:
    # Imported here: the load test pulls in LangGraph's graph machinery (about 24 MB
    # resident) that `serve` never uses.
    from exporter.loadtest import LoadtestOptions, render, run_loadtest

    options = LoadtestOptions(
        workflows=namespace.workflows,
        duration=namespace.duration,
        think_time=namespace.think_time,
        state_kb=namespace.state_kb,
        serve=serve_too,
    )
    report = await run_loadtest(settings, options)
    print(render(report, namespace.output))
    return 1 if namespace.check and not report["passed"] else 0


def _fail(message: str, status: int) -> int:
    # One line, whatever the message quotes (argparse echoes arguments verbatim).
    line = " ".join(redact(message).splitlines())
    print(f"{PROG}: error: {line}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``checkpoint-exporter`` command; returns the exit status."""
    try:
        command, settings, namespace = parse(sys.argv[1:] if argv is None else argv)
    except (UsageError, SettingsError) as exc:
        return _fail(str(exc), 2)
    configure_logging(settings.log_level, settings.log_format)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        if command == "loadtest":
            serve_too = namespace.listen_address is not None
            return asyncio.run(loadtest(settings, namespace, serve_too))
        return asyncio.run(serve(settings))
    except (CheckpointerUnavailableError, EmbeddedDatabaseError) as exc:
        return _fail(str(exc), 1)
    except OSError as exc:
        # Binding the listen address is the only OSError that reaches here.
        return _fail(f"--web.listen-address {settings.listen_address}: {exc.strerror or exc}", 1)
    except KeyboardInterrupt:
        return 130
