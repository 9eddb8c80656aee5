"""The scheduler service: every enabled source's crawl on its schedule, unattended, for weeks.

APScheduler 3.x (`BackgroundScheduler`, driven by `SchedulerService.run_forever`
in the main thread) keeps one job per source, id ``crawl:<source>``, in a
SQLAlchemy job store in the configured database (table ``apscheduler_jobs``),
reconciled with the sources file on every start. Where a crawl runs is the
executor's business (crawler/executors.py, the sources file's ``[executor]``
table): by default its own ``newsingest crawl NAME --run-id N`` subprocess (the
Twisted reactor cannot be restarted in one process), so a crashed or hung crawl
never takes the scheduler or another source with it; or a job on one of several
Scrapyd nodes writing to the same database (docs/scale-out.md).

Around every crawl the service:

1. waits for one of ``max_concurrent`` slots (at most ``misfire_grace``);
2. takes the source's lease in ``source_leases`` (another scheduler on the same
   database holding it means this run is skipped), renewed while the crawl runs;
3. has the executor write the ``crawl_runs`` row (trigger ``schedule`` or
   ``manual``, status ``running``) and hand its id to the crawl, which completes it;
4. enforces the source's ``timeout`` (Scrapy's CLOSESPIDER_TIMEOUT first, then
   SIGINT, SIGTERM, SIGKILL) and records how the crawl ended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crawler.executors import DEFAULT_TIMEOUT, POLL, CrawlHandle, Executor, make_executor
from crawler.sources import ExecutorConfig, Source, SourcesError, load_sources, parse_duration

logger = logging.getLogger("newsingest.schedule")

JOB_PREFIX = "crawl:"
JOBS_TABLE = "apscheduler_jobs"
__all__ = ["DEFAULT_TIMEOUT", "SchedulerError", "SchedulerOptions", "SchedulerService"]

#: Settings with their environment variables and defaults (CLI options override them).
ENV_DEFAULTS: Mapping[str, tuple[str, str]] = {
    "max_concurrent": ("NEWSINGEST_MAX_CONCURRENT_CRAWLS", "4"),
    "misfire_grace": ("NEWSINGEST_MISFIRE_GRACE", "5m"),
    "shutdown_grace": ("NEWSINGEST_SHUTDOWN_GRACE", "60s"),
    "stop_grace": ("NEWSINGEST_STOP_GRACE", "15s"),
    "lease_ttl": ("NEWSINGEST_LEASE_TTL", "60s"),
}


class SchedulerError(RuntimeError):
    """A setting or request the scheduler cannot work with (exit code 2)."""


@dataclass(frozen=True, slots=True)
class SchedulerOptions:
    """How the service runs; every duration in seconds."""

    sources_path: Path
    database_url: str
    max_concurrent: int = 4
    misfire_grace: float = 300.0  # a run may start this late (missed while down, or waiting for a slot)
    shutdown_grace: float = 60.0  # on SIGTERM, running crawls may finish for this long
    stop_grace: float = 15.0  # after SIGINT (Scrapy's graceful stop), before forcing
    lease_ttl: float = 60.0  # a dead scheduler's lease frees itself after this; renewed every ttl/4
    crawl_settings: tuple[str, ...] = ()  # extra `-s NAME=VALUE` for every crawl
    python: str = sys.executable
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # where crawls run ([executor])

    @classmethod
    def from_env(cls, sources_path: Path, database_url: str, env: Mapping[str, str] | None = None,
                 **overrides: Any) -> SchedulerOptions:
        """Options from the NEWSINGEST_* environment, then explicit (non-None) overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, (var, default) in ENV_DEFAULTS.items():
            raw = overrides.get(name)
            if raw is None:
                raw = env.get(var) or default
            try:
                values[name] = int(raw) if name == "max_concurrent" else parse_duration(raw)
            except ValueError as exc:
                raise SchedulerError(f"{name.replace('_', '-')} ({var}): {exc}") from None
        if values["max_concurrent"] < 1:
            raise SchedulerError("max-concurrent must be at least 1")
        if values["lease_ttl"] < 1:
            raise SchedulerError("lease-ttl must be at least 1 second")
        executor = overrides.get("executor") or ExecutorConfig()
        if executor.kind == "scrapyd" and overrides.get("max_concurrent") is None and not env.get(
                ENV_DEFAULTS["max_concurrent"][0]):
            values["max_concurrent"] = executor.capacity  # the nodes' capacities are the cap
        return cls(sources_path=sources_path, database_url=database_url,
                   crawl_settings=tuple(overrides.get("crawl_settings") or ()), executor=executor, **values)


# -- triggers ------------------------------------------------------------------------

_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _crontab_weekdays(field_text: str) -> str:
    """Crontab day-of-week numbers (0/7 = Sunday) as names APScheduler 3 reads right.

    APScheduler 3.x numbers Monday 0 (`CronTrigger.from_crontab` says so), so
    a crontab `1-5` would silently run Tuesday to Saturday. Names are unambiguous.
    """
    if field_text == "*":
        return field_text
    out: list[str] = []
    for part in field_text.split(","):
        if any(ch.isalpha() for ch in part):
            out.append(part)
            continue
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            first, last = (int(x) for x in base.split("-", 1))
        else:
            first = int(base)
            last = 6 if step_text else first
        out.extend(_CRON_DAYS[day] for day in range(first, last + 1, step))
    return ",".join(dict.fromkeys(out))


def build_trigger(source: Source) -> Any:
    """The APScheduler trigger for a source's `schedule` table (UTC), or None if it has none."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    schedule = source.schedule
    if schedule is None:
        return None
    jitter = int(schedule.jitter_seconds) if schedule.jitter_seconds else None
    if schedule.cron is not None:
        minute, hour, day, month, weekday = schedule.cron.split()
        return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                           day_of_week=_crontab_weekdays(weekday), timezone=UTC, jitter=jitter)
    assert schedule.interval_seconds is not None
    return IntervalTrigger(seconds=schedule.interval_seconds, timezone=UTC, jitter=jitter)


def trigger_key(trigger: Any) -> tuple[Any, ...]:
    """What makes two triggers the same schedule; start dates (always "now") are left out,
    so an unchanged schedule keeps its next run time across restarts."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if isinstance(trigger, IntervalTrigger):
        return ("interval", trigger.interval.total_seconds(), trigger.jitter, str(trigger.timezone))
    if isinstance(trigger, CronTrigger):
        return ("cron", str(trigger), trigger.jitter, str(trigger.timezone))
    return ("other", repr(trigger))


def describe_trigger(trigger: Any) -> str:
    key = trigger_key(trigger)
    jitter = f", jitter {key[2]}s" if key[0] != "other" and key[2] else ""
    if key[0] == "interval":
        return f"every {key[1]:g}s{jitter}"
    if key[0] == "cron":
        return f"{key[1]}{jitter}"
    return key[1]


# -- the job -------------------------------------------------------------------------

_active: SchedulerService | None = None


def run_scheduled_crawl(source: str, sources_path: str) -> str:
    """The APScheduler job: one scheduled crawl of `source` (module level: the job store pickles a
    reference to it, with these plain arguments). The database is the one the job is stored in,
    the service's; its URL is not stored, as it may hold a password."""
    service = _active
    if service is None:
        raise RuntimeError("no scheduler service is running in this process")
    return service.crawl(source, trigger="schedule", sources_path=Path(sources_path))


@dataclass(frozen=True, slots=True)
class JobSpec:
    """The job a source should have, for reconciling the job store with the config."""

    job_id: str
    source: str
    trigger: Any
    args: tuple[str, str]


@dataclass(slots=True)
class Reconciled:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class JobInfo:
    """One row of `newsingest schedule --list`."""

    job_id: str
    source: str
    schedule: str
    next_run: datetime | None
    state: str


class SchedulerService:
    """APScheduler plus the crawl runner, leases and graceful shutdown; one per process."""

    def __init__(self, options: SchedulerOptions) -> None:
        self.options = options
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.slots = threading.BoundedSemaphore(options.max_concurrent)
        self.stopping = threading.Event()  # no new crawls from now on
        self.crawls: dict[int, CrawlHandle] = {}
        self.crawls_lock = threading.Lock()
        self.scheduler: Any = None
        self._wake = threading.Event()
        self.executor: Executor = make_executor(self, options.executor)

    @contextlib.contextmanager
    def track(self, handle: CrawlHandle) -> Iterator[CrawlHandle]:
        """Register a running crawl for the shutdown path while the executor supervises it."""
        with self.crawls_lock:
            self.crawls[handle.run_id] = handle
        try:
            yield handle
        finally:
            with self.crawls_lock:
                self.crawls.pop(handle.run_id, None)

    # -- setup -------------------------------------------------------------------------

    def repository(self, database_url: str | None = None) -> Any:
        from storage.repository import open_repository

        return open_repository(database_url or self.options.database_url)

    def load_sources(self) -> dict[str, Source]:
        return load_sources(self.options.sources_path)

    def open(self) -> None:
        """Check the schema and start APScheduler paused, on the database's job store."""
        from apscheduler.executors.pool import ThreadPoolExecutor

        repository = self.repository()  # ensure_schema: an empty database is created, an old one refused
        # The global cap is the slot semaphore, not the pool: a run waiting for a slot (misfire_grace
        # at most) must not hold up the others' submissions. Pool threads are only made when needed.
        workers = max(64, 2 * self.options.max_concurrent)
        store = _job_store(repository.engine)
        _create_jobs_table(store)
        self.scheduler = _scheduler_class()(
            jobstores={"default": store},
            executors={"default": ThreadPoolExecutor(max_workers=workers)},
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": int(self.options.misfire_grace) or 1},
            timezone=UTC,
        )
        self.scheduler.start(paused=True)

    def close(self, wait: bool = True) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=wait)
        self.scheduler = None

    # -- jobs --------------------------------------------------------------------------

    def desired_jobs(self, sources: Mapping[str, Source]) -> dict[str, JobSpec]:
        specs: dict[str, JobSpec] = {}
        for name, source in sources.items():
            trigger = build_trigger(source)
            if trigger is None or not source.enabled:
                continue
            job_id = JOB_PREFIX + name
            specs[job_id] = JobSpec(job_id, name, trigger, (name, str(self.options.sources_path)))
        return specs

    def _job_options(self) -> dict[str, Any]:
        return {"max_instances": 1, "coalesce": True, "misfire_grace_time": int(self.options.misfire_grace) or 1}

    def reconcile(self, sources: Mapping[str, Source] | None = None) -> Reconciled:
        """Make the job store match the config: add new sources, apply changed ones, drop removed or
        disabled ones. An unchanged job keeps its next run time (nothing is duplicated by a restart)."""
        sources = self.load_sources() if sources is None else sources
        desired = self.desired_jobs(sources)
        existing = {job.id: job for job in self.scheduler.get_jobs() if job.id.startswith(JOB_PREFIX)}
        result = Reconciled()
        options = self._job_options()
        for job_id, spec in desired.items():
            job = existing.get(job_id)
            if job is None or trigger_key(job.trigger) != trigger_key(spec.trigger):
                self.scheduler.add_job(run_scheduled_crawl, spec.trigger, args=spec.args, id=job_id,
                                       name=f"crawl {spec.source}", replace_existing=True, **options)
                (result.added if job is None else result.changed).append(spec.source)
            elif tuple(job.args) != spec.args or job.kwargs or any(
                    getattr(job, key) != value for key, value in options.items()):
                self.scheduler.modify_job(job_id, args=spec.args, kwargs={}, **options)
                result.changed.append(spec.source)
            else:
                result.unchanged.append(spec.source)
        for job_id in existing.keys() - desired.keys():
            self.scheduler.remove_job(job_id)
            result.removed.append(job_id.removeprefix(JOB_PREFIX))
        logger.info("jobs reconciled with %s: added %s, changed %s, removed %s, unchanged %d",
                    self.options.sources_path, result.added or "none", result.changed or "none",
                    result.removed or "none", len(result.unchanged))
        return result

    def stored_jobs(self) -> list[Any]:
        """The crawl jobs in the job store; read straight from the store when the scheduler is not
        running (`--list` must not start one: a started scheduler may run due jobs)."""
        if self.scheduler is not None and self.scheduler.running:
            jobs = self.scheduler.get_jobs()
        else:
            from apscheduler.schedulers.background import BackgroundScheduler

            store = _job_store(self.repository().engine)
            store.start(BackgroundScheduler(timezone=UTC), "default")
            jobs = store.get_all_jobs()
        return [job for job in jobs if job.id.startswith(JOB_PREFIX)]

    def job_listing(self, sources: Mapping[str, Source] | None) -> list[JobInfo]:
        """The stored jobs with their next run times, and how each compares with the config."""
        desired = self.desired_jobs(sources) if sources is not None else {}
        rows: list[JobInfo] = []
        stored = {job.id: job for job in self.stored_jobs()}
        for job_id, job in sorted(stored.items()):
            spec = desired.get(job_id)
            if sources is None:
                state = "scheduled"
            elif spec is None:
                state = "removed from config (dropped at next start)"
            elif trigger_key(spec.trigger) != trigger_key(job.trigger):
                state = f"config now says {describe_trigger(spec.trigger)} (applied at next start)"
            else:
                state = "scheduled" if job.next_run_time else "paused"
            rows.append(JobInfo(job_id, job_id.removeprefix(JOB_PREFIX), describe_trigger(job.trigger),
                                job.next_run_time, state))
        for job_id, spec in sorted(desired.items()):
            if job_id not in stored:
                rows.append(JobInfo(job_id, spec.source, describe_trigger(spec.trigger), None,
                                    "new in config (added at next start)"))
        return rows

    # -- one crawl ---------------------------------------------------------------------

    def crawl(self, source: str, *, trigger: str, sources_path: Path | None = None,
              database_url: str | None = None) -> str:
        """Run one crawl of `source` to completion; return its final status, or `skipped`."""
        sources_path = sources_path or self.options.sources_path
        database_url = database_url or self.options.database_url
        if self.stopping.is_set():
            return "skipped"
        if not self._take_slot():
            logger.warning("crawl of %s skipped: all %d crawl slots stayed busy for %.0fs",
                           source, self.options.max_concurrent, self.options.misfire_grace)
            return "skipped"
        try:
            try:
                config = load_sources(sources_path).get(source)
            except SourcesError as exc:
                logger.error("crawl of %s skipped: %s", source, exc)
                return "skipped"
            if config is None:
                logger.error("crawl of %s skipped: no such source in %s", source, sources_path)
                return "skipped"
            repository = self.repository(database_url)
            if not repository.acquire_lease(source, self.owner, self.options.lease_ttl):
                logger.info("crawl of %s skipped: another scheduler holds its lease", source)
                return "skipped"
            try:
                if self.executor.kind == "scrapyd":
                    # A crawl on a node outlives a scheduler that died (and its lease): while it writes,
                    # the source is not crawled again.
                    live = repository.live_writer(source, self.options.executor.writer_timeout)
                    if live is not None:
                        logger.warning("crawl of %s skipped: run %d on node %s is still writing", source,
                                       live.id, live.node or live.hostname)
                        return "skipped"
                return self.executor.run(config, trigger, sources_path, database_url, repository)
            finally:
                with contextlib.suppress(Exception):
                    repository.release_lease(source, self.owner)
        finally:
            self.slots.release()

    def _take_slot(self) -> bool:
        deadline = time.monotonic() + self.options.misfire_grace
        while not self.stopping.is_set():
            if self.slots.acquire(timeout=min(1.0, max(0.0, deadline - time.monotonic()))):
                return True
            if time.monotonic() >= deadline:
                return False
        return False

    def sweep_stale_runs(self, sources: Iterable[str]) -> None:
        """Close `running` records on this host whose crawl process is gone (a scheduler that was
        killed could not close them), so `newsingest runs` tells the truth after a crash."""
        repository = self.repository()
        for name in sources:
            count = repository.abandon_stale_runs(name)
            if count:
                logger.warning("marked %d run(s) of %s abandoned: their crawl process is gone", count, name)
        if self.executor.kind == "scrapyd":
            for run in repository.abandon_silent_node_runs(self.options.executor.writer_timeout):
                logger.warning("marked run %d of %s (node %s) abandoned: no sign of life", run.id, run.source,
                               run.node)

    def running_crawls(self) -> list[CrawlHandle]:
        with self.crawls_lock:
            return list(self.crawls.values())

    # -- the service ---------------------------------------------------------------------

    def run_forever(self, install_signals: bool = True, ready: Callable[[], None] | None = None) -> int:
        """Schedule until SIGTERM/SIGINT, then shut down gracefully; return the exit code (0, or 1
        if the scheduling thread died)."""
        global _active
        if _active is not None and _active is not self:
            raise SchedulerError("another scheduler service runs in this process")
        _active = self
        stop = threading.Event()
        signals_seen = [0]

        def on_signal(signum: int, _frame: Any) -> None:
            signals_seen[0] += 1
            if signals_seen[0] == 1:
                logger.info("%s received: no new crawls; running ones get %gs to finish",
                            signal.Signals(signum).name, self.options.shutdown_grace)
            else:
                logger.warning("%s received again: stopping running crawls now", signal.Signals(signum).name)
                self._wake.set()
            stop.set()

        previous: dict[int, Any] = {}
        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, on_signal)
        try:
            if self.scheduler is None:
                self.open()
            sources = self.load_sources()
            self.reconcile(sources)
            self.sweep_stale_runs(sources)
            self.scheduler.resume()
            for info in self.job_listing(None):
                logger.info("job %s: %s, next run %s", info.job_id, info.schedule,
                            f"{info.next_run:%Y-%m-%d %H:%M:%S} UTC" if info.next_run else "none")
            logger.info("scheduler %s running (max %d concurrent crawls, executor %s%s)", self.owner,
                        self.options.max_concurrent, self.executor.kind,
                        "".join(f", node {n.name} capacity {n.capacity}" for n in self.options.executor.nodes))
            if ready is not None:
                ready()
            while not stop.wait(1.0):
                thread = getattr(self.scheduler, "_thread", None)
                if thread is not None and not thread.is_alive():
                    # Should not happen (see _scheduler_class); if it does, let the service manager
                    # restart a scheduler that no longer schedules instead of idling for weeks.
                    logger.error("the APScheduler thread died; shutting down (exit 1) for a restart")
                    self.shutdown()
                    return 1
            self.shutdown()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            _active = None
        return 0

    def shutdown(self) -> None:
        """Start no new crawls, let running ones finish within the grace period, then stop them."""
        self.stopping.set()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.pause()
        deadline = time.monotonic() + self.options.shutdown_grace
        while self.running_crawls() and time.monotonic() < deadline and not self._wake.is_set():
            time.sleep(POLL)
        for crawl in self.running_crawls():
            logger.warning("stopping the crawl of %s (run %d) for shutdown", crawl.source, crawl.run_id)
            crawl.stop_requested.set()
        # The job threads record each stopped crawl's status before they return.
        self.close(wait=True)
        logger.info("scheduler stopped")

    def trigger_now(self, source: str, install_signals: bool = True) -> str:
        """`newsingest schedule trigger NAME`: one manual crawl now, in the foreground, under the
        same lease, timeout and run record as a scheduled one."""
        if source not in self.load_sources():
            raise SchedulerError(f"{self.options.sources_path}: no source named {source!r}")
        self.repository()  # schema check before anything else
        previous: dict[int, Any] = {}

        def on_signal(_signum: int, _frame: Any) -> None:
            self.stopping.set()
            for crawl in self.running_crawls():
                crawl.stop_requested.set()

        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, on_signal)
        try:
            return self.crawl(source, trigger="manual")
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _job_store(engine: Any) -> Any:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    return SQLAlchemyJobStore(engine=engine, tablename=JOBS_TABLE)


def _create_jobs_table(store: Any) -> None:
    """Create APScheduler's table; a standby scheduler starting at the same moment may win the race
    (PostgreSQL then reports a duplicate type), which is fine as long as the table is there."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    try:
        store.jobs_t.create(store.engine, checkfirst=True)
    except (IntegrityError, ProgrammingError):
        if not inspect(store.engine).has_table(JOBS_TABLE):
            raise


def _scheduler_class() -> type:
    """BackgroundScheduler that does nothing once stopped and survives job store errors.

    APScheduler 3.11 wakes its thread on shutdown and processes due jobs one
    last time even though the executors are gone (a traceback, and a run
    marked done that never ran); a stopped scheduler must not touch the store.
    """
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.base import STATE_STOPPED

    class _StoppableScheduler(BackgroundScheduler):  # type: ignore[misc]
        def _process_jobs(self) -> float | None:
            if self.state == STATE_STOPPED:
                return None
            try:
                return super()._process_jobs()
            except Exception:
                # e.g. the database went away between reading due jobs and updating them: an
                # uncaught error would end APScheduler's thread and, silently, all scheduling.
                logger.exception("processing due jobs failed; retrying in %ss", self.jobstore_retry_interval)
                return float(self.jobstore_retry_interval)

    return _StoppableScheduler


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)


def format_jobs(rows: Iterable[JobInfo]) -> Sequence[tuple[str, ...]]:
    return [(r.source, r.schedule, f"{r.next_run:%Y-%m-%d %H:%M:%S}" if r.next_run else "—", r.state) for r in rows]
