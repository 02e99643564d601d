"""The sidecar: the exporter's HTTP surface, run in an application's event loop or alone."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from contextlib import ExitStack
from types import TracebackType
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric
from psycopg_pool import AsyncConnectionPool

from exporter import collectors as collector_registry
from exporter import server
from exporter.causes import ERROR, TIMEOUT
from exporter.checkpointer.backend import MEMORY, POSTGRES, Backend
from exporter.checkpointer.instrumented import InstrumentedSaver
from exporter.collectors.base import BackgroundWork, Collector, ScrapeContext
from exporter.collectors.integrity import IntegrityCollector
from exporter.database import Ping, exporter_pool, ping
from exporter.health import HealthInputs, IntegritySummary, health_document
from exporter.jobs import Job, Statuses
from exporter.leader import LeaderElection
from exporter.log import get_logger
from exporter.outage import OutageLog, collapse_pool_warnings
from exporter.reachability import DatabaseCheck
from exporter.redact import redact
from exporter.scrape import (
    CONNECTION,
    DEADLINE,
    FailureCounts,
    Outcome,
    gather_outcomes,
    outcome_families,
    status_families,
)
from exporter.settings import Settings
from exporter.target import Target
from exporter.version import LANGGRAPH_CHECKPOINT_VERSION, PYTHON_VERSION, VERSION
from exporter.workflows.canary import CANARY, Canary
from exporter.workflows.recovery import RECOVERY, RecoveryCheck, RecoveryReport

log = get_logger("sidecar")

VERSIONS = {
    "version": VERSION,
    "langgraph_checkpoint_version": LANGGRAPH_CHECKPOINT_VERSION,
    "python_version": PYTHON_VERSION,
}


class Sidecar:
    """Serves ``/metrics`` and the health endpoints for one checkpointer.

    In an application, pass the instrumented saver from ``build_checkpointer``:
    the sidecar then reports its pool and last error, and shares its registry.
    Standalone (``checkpoint-exporter serve``), pass no saver: the sidecar
    watches the database named by the settings. ``start()`` binds the listen
    address, starts the canary (on the leader, every ``canary_interval``) and
    runs a recovery check in the background; ``stop()`` releases everything.
    Use as ``async with``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        checkpointer: InstrumentedSaver | None = None,
        registry: CollectorRegistry | None = None,
        collectors: Sequence[Collector] | None = None,
    ) -> None:
        self.settings = settings
        self.checkpointer = checkpointer
        self.registry = REGISTRY if registry is None else registry
        if collectors is None:
            collectors = collector_registry.create(settings.collectors)
        self.collectors = tuple(collectors)
        self._local = tuple(c for c in self.collectors if not c.database_wide)
        self._failures = FailureCounts(c.name for c in self.collectors)
        self.backend = self._backend()
        conninfo = self.backend.connection_string
        self._database = exporter_pool(conninfo, settings) if conninfo else None
        # The one description of the store every component below is handed.
        target = Target.of(conninfo, settings, self._serde()) if conninfo else None
        self.target = target
        # None when leader election is off (or no database): this sidecar then always leads.
        self.leader = (
            LeaderElection(target, settings.collector_timeout)
            if target is not None and settings.leader_election
            else None
        )
        self.canary = (
            Canary(target, interval=settings.canary_interval, timeout=settings.canary_timeout)
            if target is not None and settings.canary_interval
            else None
        )
        self.recovery = RecoveryCheck(target, settings.recovery_limit) if target else None
        # Started with the sidecar, stopped with it; collectors read their statuses.
        self.jobs: tuple[Job[Any], ...] = tuple(
            job for job in (self.canary, self.recovery) if job is not None
        )
        self.outages = OutageLog()
        self.database_check = (
            DatabaseCheck(target, settings.health_timeout, self.outages)
            if target is not None
            else None
        )
        self._pool_warnings: ExitStack | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._http: server.HttpServer | None = None
        self._started = False

    @property
    def integrity(self) -> IntegritySummary | None:
        """The last completed integrity pass of this sidecar's integrity collector, if any."""
        for collector in self.collectors:
            if isinstance(collector, IntegrityCollector) and collector.scanner is not None:
                return collector.scanner.last_pass
        return None

    def _serde(self) -> SerializerProtocol | None:
        # The application's serializer, so the recovery check decodes what it wrote.
        return self.checkpointer.serde if self.checkpointer is not None else None

    def leading(self) -> bool:
        """Whether this sidecar runs database-wide work, as of the last leader check."""
        return self.leader is None or self.leader.leading

    def _backend(self) -> Backend:
        if self.checkpointer is not None and self.checkpointer.backend is not None:
            return self.checkpointer.backend
        settings = self.settings
        if settings.use_postgres_saver:
            return Backend(POSTGRES, settings.postgres_schema, settings.postgres_connection_string)
        return Backend(MEMORY, settings.postgres_schema)

    @property
    def saver_name(self) -> str | None:
        return self.checkpointer.saver_name if self.checkpointer is not None else None

    def context(self) -> ScrapeContext:
        pools: dict[str, AsyncConnectionPool[Any]] = {}
        if self.backend.pool is not None:
            pools["checkpointer"] = self.backend.pool
        if self._database is not None:
            pools["exporter"] = self._database
        return ScrapeContext(
            self.settings,
            self._database,
            self.checkpointer,
            pools,
            jobs=Statuses.of(self.jobs),
        )

    async def check_recovery(self) -> RecoveryReport | None:
        """Run the recovery check now; None when no database is configured."""
        return await self.recovery.run() if self.recovery is not None else None

    async def ping(self) -> Ping | None:
        """Whether the database answers, and why not, within the health timeout.

        What health and readiness ask: a check on a connection of its own, so that an
        outage is reported at once with its cause. None when no database is configured.
        """
        if self.database_check is None:
            return None
        return await self.database_check.check()

    async def pool_ping(self) -> Ping | None:
        """The scrape's sign of life when leader election is off, through the exporter's pool."""
        if self._database is None:
            return None
        return await ping(self._database, self.settings.collector_timeout)

    async def scrape(self) -> list[Metric]:
        """Everything a scrape adds to the registry's own metrics, gathered concurrently.

        Database-wide collectors run only on the leader, so that N sidecars of one
        database never export those series N times. The leader check's round trip
        also answers for ``up``. A sidecar that led at its last check still leads
        while its session lives, so it confirms that alongside the collectors and
        drops their database-wide results if the session turns out lost; any other
        sidecar must win the lock before it runs them. See :meth:`_unled` for what a
        sidecar that does not lead reports of them.
        """
        leader = self.leader
        if leader is None:
            leading = True
            answer, outcomes = await asyncio.gather(
                self.pool_ping(), self._collect(self.collectors)
            )
        elif leader.leading:
            answer, outcomes = await asyncio.gather(leader.check(), self._collect(self.collectors))
            leading = leader.leading
        else:
            answer = await leader.check()
            leading = leader.leading
            outcomes = await self._collect(self.collectors if leading else self._local)
        if not leading:
            outcomes = self._unled(outcomes, answer)
        self._failures.record(outcomes)
        if answer is not None:
            self._note(answer, "scrape")
        status = status_families(
            up=answer is None or answer.ok,
            leader=leading,
            checkpointer=self.backend.checkpointer,
            saver=self.saver_name,
            schema=self.backend.schema,
            fallback=self.backend.fallback_reason is not None,
            versions=VERSIONS,
        )
        return [*status, *outcome_families(outcomes), self._failures.family()]

    def _unled(self, outcomes: Sequence[Outcome], answer: Ping | None) -> list[Outcome]:
        """What a scrape that does not lead reports: its local collectors, and maybe more.

        When another sidecar holds the lock, the database-wide collectors are that one's
        to report, and are left out. When the database did not answer, no sidecar can tell
        who leads, and those collectors could not run: each is reported failed (its figures
        withheld), with the leader check's time and a reason from its cause, so that the
        series do not vanish and an alert on collector failure fires.
        """
        ran = {outcome.collector: outcome for outcome in outcomes}
        reported = []
        for collector in self.collectors:
            outcome = ran.get(collector.name)
            if not collector.database_wide and outcome is not None:
                reported.append(outcome)
            elif collector.database_wide and answer is not None and not answer.ok:
                if outcome is None or outcome.ok:
                    reason = DEADLINE if answer.cause == TIMEOUT else CONNECTION
                    outcome = Outcome(collector.name, (), False, answer.seconds, reason)
                reported.append(outcome)
        return reported

    def _note(self, answer: Ping, source: str) -> None:
        if answer.ok:
            self.outages.answered(source)
        else:
            self.outages.failed(source, answer.cause or ERROR, answer.error or "")

    async def _collect(self, collectors: Sequence[Collector]) -> list[Outcome]:
        return await gather_outcomes(collectors, self.context(), self.settings.collector_timeout)

    async def health(self) -> tuple[dict[str, Any], int]:
        """The health document and its HTTP status."""
        pool = self.backend.pool
        statuses = Statuses.of(self.jobs)
        inputs = HealthInputs(
            backend=self.backend,
            saver=self.saver_name,
            ping=await self.ping(),
            pool_stats=pool.get_stats() if pool is not None else None,
            last_error=self.checkpointer.last_error if self.checkpointer is not None else None,
            canary=statuses.get(CANARY),
            recovery=statuses.get(RECOVERY),
            integrity=self.integrity,
        )
        return health_document(inputs)

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        if self._http is None:
            raise RuntimeError("the sidecar is not started")
        return self._http.port

    @property
    def url(self) -> str:
        """The base URL of this sidecar: https when the web configuration file enables TLS."""
        if self._http is None:
            raise RuntimeError("the sidecar is not started")
        return self._http.url

    async def start(self) -> None:
        """Open the exporter's pool (without waiting for the database) and bind the address.

        If binding fails, everything opened so far is released before the error propagates.
        """
        try:
            self._pool_warnings = ExitStack()
            self._pool_warnings.enter_context(collapse_pool_warnings(self.outages))
            if self._database is not None:
                # wait=False: an unreachable database must not keep the sidecar from serving.
                await self._database.open(wait=False)
            self._http = await server.serve(self, self.settings)
            for job in self.jobs:
                self._spawn(job.work(self.leading), job.key.name)
        except BaseException:
            await self.stop()
            raise
        self._started = True
        log.info(
            "sidecar_started",
            url=self.url,
            telemetry_path=self.settings.telemetry_path,
            tls=self.url.startswith("https:"),
            basic_auth=bool(self.settings.web_config_file and self.settings.web_config_file.users),
            checkpointer=self.backend.checkpointer,
            connection_string=redact(self.backend.connection_string or ""),
            event_loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],
        )

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=f"checkpoint-exporter-{name}"))

    async def stop(self) -> None:
        """Stop serving, the canary and any recovery check, and close the pools; safe twice."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        # Unlike awaiting each task, gather lets a cancellation of stop() itself through.
        await asyncio.gather(*tasks, return_exceptions=True)
        for job in self.jobs:
            await job.close()
        for collector in self.collectors:
            if isinstance(collector, BackgroundWork):
                await collector.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self.leader is not None:
            await self.leader.close()
        if self.database_check is not None:
            await self.database_check.close()
        if self._database is not None:
            await self._database.close()
        if self._pool_warnings is not None:
            self._pool_warnings.close()
            self._pool_warnings = None
        # A start that failed is reported by whoever called it, in one line.
        if self._started:
            self._started = False
            log.info("sidecar_stopped")

    async def __aenter__(self) -> Sidecar:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
