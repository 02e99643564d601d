"""Command line: argv and environment to settings; one-line errors with exit status 2."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, NoReturn

import psycopg
from prometheus_client import disable_created_metrics

from exporter.database import connection_string
from exporter.embedded import EmbeddedDatabaseError
from exporter.factory import CheckpointerUnavailableError
from exporter.log import configure_logging
from exporter.redact import describe_error, redact
from exporter.settings import (
    SPECS,
    DurationIn,
    IntegerIn,
    NumberIn,
    Settings,
    SettingsError,
    register_environment_secrets,
    spec_for,
)
from exporter.settings.render import flag_help, help_epilog
from exporter.sidecar import Sidecar
from exporter.target import Target
from exporter.version import VERSION
from exporter.web_config import WebConfigError
from exporter.workflows.recovery import RecoveryCheck, RecoveryReport

if TYPE_CHECKING:
    from exporter.workflows.integrity import PassReport

PROG = "checkpoint-exporter"
HEALTHCHECK_TIMEOUT = 5.0


class UsageError(Exception):
    """A flag or argument is wrong; the message is the whole line to print."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints usage plus the error; one line is easier to read in a log.
        raise UsageError(message)


LOADTEST_OPTIONS: dict[str, tuple[Callable[[str], Any], str, str]] = {
    "workflows": (IntegerIn(1, 10_000), "16", "Concurrent workflows."),
    "duration": (DurationIn(0.1, 86_400), "30s", "How long to run, e.g. 60s or 5m."),
    "think_time": (
        DurationIn(0, 3600),
        "50ms",
        "Wait in each node, standing in for model and tool calls (0: stress test).",
    ),
    "state_kb": (NumberIn(0.1, 10_240), "4", "Rough size of each workflow's state, in KiB."),
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
    verify = commands.add_parser(
        "verify",
        help="Check once that the running workflows' latest checkpoints load; exit 1 if any "
        "fails, 2 if the database cannot be reached.",
    )
    healthcheck = commands.add_parser(
        "healthcheck",
        help="Ask a running sidecar's health endpoint; exit 0 when healthy or degraded, "
        "1 otherwise (for container health checks).",
    )
    healthcheck.add_argument(
        "--url",
        default=None,
        help="Health URL to ask. Default: the health endpoint on this host at the port of "
        "--web.listen-address.",
    )
    for sub in (serve, loadtest, verify, healthcheck):
        sub.epilog = help_epilog()
        for spec in SPECS:
            if spec.flag is not None:
                sub.add_argument(spec.flag, dest=spec.field, metavar="VALUE", help=flag_help(spec))
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
    verify.add_argument(
        "--output", choices=("text", "json"), default="text", help="Report format. Default: text."
    )
    verify.add_argument(
        "--integrity",
        action="store_true",
        help="Also run one whole pass of the integrity checks; exit 1 when they find problems.",
    )
    return parser


# Every option that takes a value, for _attach_values.
VALUE_FLAGS = frozenset(
    [spec.flag for spec in SPECS if spec.flag is not None]
    + ["--" + name.replace("_", "-") for name in LOADTEST_OPTIONS]
    + ["--url", "--output"]
)


def _attach_values(args: Sequence[str]) -> list[str]:
    """``--flag -1s`` as ``--flag=-1s``: argparse takes a value starting with '-' for an option.

    It then reports "expected one argument" instead of what is wrong with the value. A word
    starting with '--' stays an option, so a flag left without its value is still reported.
    """
    attached: list[str] = []
    for arg in args:
        if (
            attached
            and attached[-1] in VALUE_FLAGS
            and arg.startswith("-")
            and not arg.startswith("--")
        ):
            attached[-1] = f"{attached[-1]}={arg}"
        else:
            attached.append(arg)
    return attached


def parse(argv: Sequence[str]) -> tuple[str, Settings, argparse.Namespace]:
    """Parse ``argv`` (``serve`` when no command is named); raise UsageError or SettingsError."""
    register_environment_secrets(os.environ)  # argparse errors may echo any argument
    args = _attach_values(argv)
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


def run(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop where it is installed (it is not on Windows), else on asyncio's loop.

    A scrape is mostly event-loop work: a handful of queries and an HTTP answer.
    uvloop's transports and scheduling cost a fraction of the standard loop's.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


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


async def verify(settings: Settings, namespace: argparse.Namespace) -> int:
    """Run the recovery check (and with ``--integrity`` one integrity pass) once; print it.

    Exit 0 when nothing failed, 1 when a workflow's checkpoint or an integrity
    check failed, 2 when the database cannot be reached.
    """
    if not settings.use_postgres_saver:
        return _fail("verify needs PostgreSQL, but USE_POSTGRES_SAVER is false", 2)
    try:
        async with connection_string(settings) as conninfo:
            target = Target.of(conninfo, settings)
            recovery = await RecoveryCheck(target, settings.recovery_limit).check()
            integrity = await _integrity_pass(target, settings) if namespace.integrity else None
    except EmbeddedDatabaseError as exc:
        return _fail(str(exc), 2)
    except (psycopg.Error, OSError, TimeoutError) as exc:
        return _fail(f"PostgreSQL is unavailable: {describe_error(exc)}", 2)
    print(render_verify(recovery, integrity, namespace.integrity, namespace.output))
    failed = recovery.failed > 0 or (integrity is not None and integrity.problems > 0)
    return 1 if failed else 0


async def _integrity_pass(target: Target, settings: Settings) -> PassReport | None:
    """One whole integrity pass; None when LangGraph's tables do not exist yet."""
    from exporter.workflows.integrity import MissingTablesError, full_pass

    async with await target.connect() as conn:
        try:
            return await full_pass(
                conn,
                target.schema,
                target.serde,
                batch=settings.integrity_batch,
                orphan_grace=settings.integrity_orphan_grace,
            )
        except MissingTablesError:
            return None


def render_verify(
    recovery: RecoveryReport,
    integrity: PassReport | None,
    integrity_requested: bool,
    output: str,
) -> str:
    """The ``verify`` report as text or JSON; thread ids appear here, never in metrics."""
    if output == "json":
        document: dict[str, Any] = {"recovery": recovery.as_dict()}
        if integrity_requested:
            document["integrity"] = None if integrity is None else _integrity_dict(integrity)
        return json.dumps(document, indent=2)
    if not recovery.table_exists:
        lines = ["recovery check: no workflow_metadata table, nothing to check"]
    else:
        lines = [
            f"recovery check: {recovery.checked} running workflows checked, "
            f"{recovery.recovered} recovered, {recovery.failed} failed "
            f"({recovery.duration_seconds:.3f} s)"
        ]
    lines += [f"  failed: {f.thread_id} ({f.error})" for f in recovery.failures]
    if integrity_requested and integrity is None:
        lines.append("integrity: no checkpoint tables, nothing to check")
    elif integrity is not None:
        lines.append(
            f"integrity: {integrity.threads} threads checked, {integrity.problems} problems "
            f"({integrity.seconds:.3f} s)"
        )
        lines += [
            f"  {f.check}: {f.thread_id} [{f.checkpoint_ns}] {f.detail}" for f in integrity.findings
        ]
    return "\n".join(lines)


def _integrity_dict(report: PassReport) -> dict[str, Any]:
    return {
        "threads": report.threads,
        "problems": report.problems,
        "counts": dict(report.counts),
        "findings": [
            {
                "check": f.check,
                "threadId": f.thread_id,
                "checkpointNs": f.checkpoint_ns,
                "detail": f.detail,
                "count": f.count,
            }
            for f in report.findings
        ],
        "completedAt": report.completed_at,
        "durationSeconds": round(report.seconds, 6),
    }


def healthcheck(settings: Settings, url: str | None) -> int:
    """Ask the health endpoint once; print its status; 0 for 200, 1 for anything else.

    The web configuration file decides how: https when it enables TLS, trusting exactly the
    configured server certificate; and, when it has basic auth users (whose passwords the file
    does not hold), ``/healthz`` rather than the health document, which needs a password.
    """
    from exporter.server import HEALTH_PATH

    web_config = settings.web_config_file
    tls = web_config.tls if web_config is not None else None
    if url is None:
        path = HEALTH_PATH
        if web_config is not None and web_config.users:
            if not settings.web_healthz_open:
                return _fail(
                    f"{web_config.path} requires a password on every endpoint, and this command "
                    "has none; set CHECKPOINT_EXPORTER_WEB_HEALTHZ_OPEN=true",
                    1,
                )
            path = "/healthz"
        host = settings.listen_address.host or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if tls is not None else "http"
        url = f"{scheme}://{host}:{settings.listen_address.port}{path}"
    # Never through a proxy from the environment: the sidecar is asked directly.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    try:
        if tls is not None and url.startswith("https:"):
            handlers.append(urllib.request.HTTPSHandler(context=tls.client_context()))
        opener = urllib.request.build_opener(*handlers)
        with opener.open(url, timeout=HEALTHCHECK_TIMEOUT) as response:
            document = json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            status = json.load(exc).get("status", f"HTTP {exc.code}")
        except ValueError:
            status = f"HTTP {exc.code}"
        print(status)
        return 1
    except (OSError, ValueError) as exc:
        return _fail(f"{redact(url)}: {describe_error(exc)}", 1)
    print(document.get("status", "unknown"))
    return 0


def _reason(exc: OSError) -> str:
    """The system's own words for ``exc``, without the event loop's wrapping of them."""
    if isinstance(exc, socket.gaierror) or not exc.errno or exc.errno < 0:
        return exc.strerror or str(exc)
    return os.strerror(exc.errno)


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
        if command == "healthcheck":
            return healthcheck(settings, namespace.url)
        if command == "verify":
            return run(verify(settings, namespace))
        if command == "loadtest":
            serve_too = namespace.listen_address is not None
            return run(loadtest(settings, namespace, serve_too))
        return run(serve(settings))
    except (CheckpointerUnavailableError, EmbeddedDatabaseError) as exc:
        return _fail(str(exc), 1)
    except WebConfigError as exc:
        # Checked at load; only a file changed since then (a certificate rotated) lands here.
        return _fail(f"{spec_for('web_config_file').describe()}: {exc}", 1)
    except OSError as exc:
        # Binding the listen address is the only OSError that reaches here.
        setting = spec_for("listen_address").describe()
        return _fail(f"{setting}: cannot listen on {settings.listen_address}: {_reason(exc)}", 1)
    except KeyboardInterrupt:
        return 130
