"""Where the scheduler's crawls run: local subprocesses, or Scrapyd nodes sharing one database.

The scheduler (crawler/schedule.py) decides *when* a source is crawled and holds
its lease; an executor decides *where* the crawl runs, supervises it and records
how it ended. The run record exists before the crawl starts and its id goes to
the crawl, which completes it (crawler/runrecord.py).

- `LocalExecutor` (``type = "local"``, the default): ``newsingest crawl NAME
  --run-id N`` as a subprocess of the scheduler; its exit code and output tail
  are recorded; timeouts go SIGINT, SIGTERM, SIGKILL.
- `ScrapydExecutor` (``type = "scrapyd"``): the least-loaded node by the
  scheduler's own count of open runs per node against the node's capacity
  (Scrapyd reports no capacity), dispatched with a unique job id per attempt.
  Scrapyd's job states cannot be trusted alone: a crashed crawl shows
  `finished`, a restarted node forgets its jobs while their processes run on.
  So the database is the truth: a crawl closes its own record; `finished`
  without a close record is **failed**; a job the node no longer knows (or a
  node that no longer answers) is **lost** once its crawl has written no
  heartbeat for ``writer_timeout``, and then the source is retried once, on
  another node if there is one. Timeouts cancel the job (SIGINT, then TERM,
  then KILL through ``cancel.json``). See docs/scale-out.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from crawler.sources import ExecutorConfig, ScrapydNode, Source

if TYPE_CHECKING:
    from crawler.schedule import SchedulerService
    from crawler.scrapyd_client import ScrapydClient

logger = logging.getLogger("newsingest.schedule")

DEFAULT_TIMEOUT = 3600.0  # a source without `timeout`: a crawl may not hold its slot forever
OUTPUT_TAIL_LINES = 50
KILL_WAIT = 5.0  # after Scrapy's forced shutdown (second signal), before SIGKILL
POLL = 0.2
SPIDER = "news"


@dataclass(slots=True)
class CrawlHandle:
    """One running crawl, as the shutdown path sees it."""

    source: str
    run_id: int
    node: str | None = None
    stop_requested: threading.Event = field(default_factory=threading.Event)


class Executor(Protocol):
    """Runs one crawl of a source whose lease the scheduler holds; returns its final status."""

    kind: str

    @property
    def capacity(self) -> int: ...

    def run(self, source: Source, trigger: str, sources_path: Path, database_url: str, repository: Any) -> str: ...


class LeaseKeeper:
    """Renews the scheduler's lease on a source every ttl/4 while its crawl runs."""

    def __init__(self, service: SchedulerService, repository: Any, source: str) -> None:
        self.service, self.repository, self.source = service, repository, source
        self.every = service.options.lease_ttl / 4
        self.next_at = time.monotonic() + self.every

    def lost(self, now: float) -> bool:
        """Renew when due; True only when the lease was taken by another scheduler."""
        if now < self.next_at:
            return False
        self.next_at = now + self.every
        try:
            return not self.repository.renew_lease(self.source, self.service.owner, self.service.options.lease_ttl)
        except Exception as exc:  # the database is away; keep crawling, retry soon
            logger.warning("could not renew the lease on %s: %s", self.source, exc)
            return False


def stop_note(reason: str | None, timeout: float) -> tuple[str | None, str | None]:
    """(forced status, note) for a crawl the scheduler stopped."""
    if reason == "timeout":
        return "timed_out", f"stopped by the scheduler: the crawl exceeded its {timeout:g}s timeout"
    if reason == "shutdown":
        return None, "stopped by the scheduler: it was shutting down and the grace period ran out"
    if reason == "lease":
        return None, "stopped by the scheduler: its lease on the source was lost to another scheduler"
    return None, None


# -- local subprocesses ------------------------------------------------------------------


class LocalExecutor:
    """Each crawl a `newsingest crawl` subprocess of the scheduler (the Twisted reactor cannot be
    restarted in one process, and a crashed or hung crawl must not take the scheduler with it)."""

    kind = "local"

    def __init__(self, service: SchedulerService) -> None:
        self.service = service

    @property
    def capacity(self) -> int:
        return self.service.options.max_concurrent

    def crawl_command(self, source: Source, run_id: int, trigger: str, timeout: float,
                      sources_path: Path) -> list[str]:
        # The database URL goes in the environment (DATABASE_URL), not on a command line `ps` shows.
        options = self.service.options
        command = [options.python, "-m", "crawler.cli", "crawl", source.name, "--sources", str(sources_path),
                   "--run-id", str(run_id), "--trigger", trigger, "-s", f"CLOSESPIDER_TIMEOUT={timeout:g}"]
        for pair in options.crawl_settings:
            command += ["-s", pair]
        return command

    @staticmethod
    def crawl_env(database_url: str) -> dict[str, str]:
        """The scheduler's environment, its database, and this newsingest importable: the crawl runs
        in the scheduler's working directory (relative SQLite paths mean the same file)."""
        env = {**os.environ, "DATABASE_URL": database_url}
        root = str(Path(__file__).resolve().parents[1])
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in paths if p != root]])
        return env

    def run(self, source: Source, trigger: str, sources_path: Path, database_url: str, repository: Any) -> str:
        timeout = source.timeout_seconds or DEFAULT_TIMEOUT
        run_id = repository.start_run(source.name, trigger)
        command = self.crawl_command(source, run_id, trigger, timeout, sources_path)
        logger.info("crawl of %s started (run %d, trigger %s, timeout %gs)", source.name, run_id, trigger, timeout)
        try:
            # Own session: a Ctrl-C in the scheduler's terminal must not reach the crawls,
            # which get their grace period instead.
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       preexec_fn=_DIE_WITH_PARENT, env=self.crawl_env(database_url))
        except OSError as exc:
            repository.record_exit(run_id, exit_code=None, status_if_open="failed",
                                   note=f"the crawl process could not start: {exc}")
            logger.error("crawl of %s could not start: %s", source.name, exc)
            return "failed"
        handle = CrawlHandle(source.name, run_id)
        tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        reader = threading.Thread(target=_drain, args=(process, tail), name=f"output-{source.name}", daemon=True)
        reader.start()
        with self.service.track(handle):
            stop_reason = self._supervise(handle, process, timeout, LeaseKeeper(self.service, repository,
                                                                                  source.name))
        reader.join(timeout=5)
        code = process.returncode
        force, note = stop_note(stop_reason, timeout)
        status_if_open = "timed_out" if stop_reason == "timeout" else "failed"
        run = repository.record_exit(run_id, exit_code=code, status_if_open=status_if_open, force_status=force,
                                     note=note, output_tail="\n".join(tail))
        log = logger.info if run.status == "succeeded" else logger.warning
        log("crawl of %s finished: run %d %s (exit code %s)", source.name, run_id, run.status, code)
        return str(run.status)

    def _supervise(self, handle: CrawlHandle, process: subprocess.Popen[bytes], timeout: float,
                   lease: LeaseKeeper) -> str | None:
        """Wait for the crawl; renew the lease; stop it on timeout, shutdown or a lost lease.

        Scrapy gets its own CLOSESPIDER_TIMEOUT plus `stop_grace` to close cleanly; then SIGINT
        (Scrapy's graceful shutdown), `stop_grace` later SIGTERM (its forced one), then SIGKILL.
        """
        stop_grace = self.service.options.stop_grace
        deadline = time.monotonic() + timeout + stop_grace
        reason: str | None = None
        stage, stage_at = 0, 0.0
        while process.poll() is None:
            now = time.monotonic()
            if reason is None:
                if now >= deadline:
                    reason = "timeout"
                elif handle.stop_requested.is_set():
                    reason = "shutdown"
                if reason:
                    logger.warning("stopping the crawl of %s (run %d): %s", handle.source, handle.run_id, reason)
            if reason is not None:
                if stage == 0:
                    _signal(process, signal.SIGINT)
                    stage, stage_at = 1, now
                elif stage == 1 and now - stage_at >= stop_grace:
                    _signal(process, signal.SIGTERM)
                    stage, stage_at = 2, now
                elif stage == 2 and now - stage_at >= KILL_WAIT:
                    _signal(process, signal.SIGKILL)
                    stage, stage_at = 3, now
            if lease.lost(now) and reason is None:
                reason = "lease"
                logger.error("lease on %s lost; stopping run %d", handle.source, handle.run_id)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=POLL)
        # Leftovers of the crawl's process group (none normally) must not outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return reason


def _die_with_parent_hook() -> Callable[[], None] | None:
    """Linux: have the kernel SIGKILL a crawl whose scheduler died (kill -9, OOM killer), so no
    orphan crawl keeps going after its lease expired. SIGKILL, not SIGTERM: a crawl stopped
    while it starts up can hang at exit, and nobody would be left to escalate. Its run record
    is marked `abandoned` by the next scheduler start (or crawl of the source). The function is
    resolved here, before any fork, so the child only makes one system call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigkill)

    return hook


_DIE_WITH_PARENT = _die_with_parent_hook()


def _signal(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if signum == signal.SIGKILL:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)


def _drain(process: subprocess.Popen[bytes], tail: deque[str]) -> None:
    """Read the crawl's output as it comes (a full pipe would block it), keeping the last lines."""
    assert process.stdout is not None
    for raw in process.stdout:
        tail.append(raw.decode("utf-8", "replace").rstrip())
    process.stdout.close()


# -- Scrapyd nodes -------------------------------------------------------------------------


class NoNode(RuntimeError):
    """No node can take a crawl now (all down or full)."""


class ScrapydExecutor:
    """Dispatches crawls to Scrapyd nodes that all write to the scheduler's database."""

    kind = "scrapyd"

    def __init__(self, service: SchedulerService, config: ExecutorConfig,
                 env: dict[str, str] | None = None) -> None:
        from crawler.deploy import project_version
        from crawler.scrapyd_client import ScrapydClient

        self.service = service
        self.config = config
        self.clients: dict[str, ScrapydClient] = {}
        for node in config.nodes:
            try:
                credentials = node.credentials(env)
            except ValueError as exc:
                from crawler.schedule import SchedulerError

                raise SchedulerError(str(exc)) from None
            self.clients[node.name] = ScrapydClient(node, credentials=credentials,
                                                    cache_seconds=config.poll_interval / 2)
        self.nodes: dict[str, ScrapydNode] = {node.name: node for node in config.nodes}
        self.version = project_version()
        self.down_until: dict[str, float] = {}
        self.choose_lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self.config.capacity

    # -- choosing a node ---------------------------------------------------------------

    def mark_down(self, node: str, why: str) -> None:
        self.down_until[node] = time.monotonic() + self.config.node_retry
        logger.warning("node %s gets no crawls for %gs: %s", node, self.config.node_retry, why)

    def pick(self, loads: dict[str, int], avoid: set[str], exclude: Collection[str] = ()) -> str | None:
        """The least-loaded node with a free slot (load / capacity, then fewest runs, then config order);
        nodes in `avoid` only when no other can take the crawl, nodes in `exclude` never."""
        now = time.monotonic()
        ready = [n for n in self.nodes.values() if n.name not in exclude
                 and self.down_until.get(n.name, 0.0) <= now and loads.get(n.name, 0) < n.capacity]
        if not ready:
            return None
        preferred = [n for n in ready if n.name not in avoid] or ready
        order = {name: i for i, name in enumerate(self.nodes)}
        best = min(preferred, key=lambda n: (loads.get(n.name, 0) / n.capacity, loads.get(n.name, 0), order[n.name]))
        return best.name

    def _reserve(self, repository: Any, source: str, trigger: str, avoid: set[str], exclude: set[str],
                 run_id: int | None, deadline: float) -> tuple[int, str, str]:
        """Choose a node and write (or move) the run record to it, under one lock: the next choice
        counts this run. Waits (until `deadline`) while every node is down or full."""
        while True:
            if exclude >= self.nodes.keys():
                raise NoNode("every node refused the dispatch")
            with self.choose_lock:
                node = self.pick(repository.running_runs_per_node(), avoid, exclude)
                if node is not None:
                    job_id = uuid.uuid4().hex
                    if run_id is None:
                        run_id = repository.start_node_run(source, trigger, node, job_id)
                    else:
                        repository.redispatch_run(run_id, node, job_id)
                    return run_id, node, job_id
            if time.monotonic() >= deadline or self.service.stopping.is_set():
                raise NoNode(f"no Scrapyd node could take it within {self.service.options.misfire_grace:g}s "
                             f"(all down or at capacity: {', '.join(self.nodes)})")
            time.sleep(1.0)

    # -- one crawl ---------------------------------------------------------------------

    def run(self, source: Source, trigger: str, sources_path: Path, database_url: str, repository: Any) -> str:
        status, node = self._attempt(source, trigger, repository, avoid=set())
        if status == "lost" and not self.service.stopping.is_set():
            # The writer is gone (checked before "lost" was recorded): run the source once more now,
            # elsewhere if possible, instead of waiting for its next scheduled time.
            logger.warning("retrying %s once after its run on node %s was lost", source.name, node)
            status, _ = self._attempt(source, "retry", repository, avoid={node} if node else set())
        return status

    def job_settings(self, source: Source, run_id: int, trigger: str, timeout: float) -> dict[str, str]:
        """Per-job Scrapy settings: ids and limits only. They show in listjobs, logs and `ps`, so the
        database URL (with its password) is never one of them: it is in the node's environment."""
        settings = {"NEWSINGEST_RUN_ID": str(run_id), "NEWSINGEST_RUN_TRIGGER": trigger,
                    "CLOSESPIDER_TIMEOUT": f"{timeout:g}", "NEWSINGEST_HEARTBEAT_SECONDS": f"{self.config.heartbeat:g}"}
        for pair in self.service.options.crawl_settings:
            name, _, value = pair.partition("=")
            settings[name.strip()] = value
        return settings

    def _attempt(self, source: Source, trigger: str, repository: Any, avoid: set[str]) -> tuple[str, str | None]:
        timeout = source.timeout_seconds or DEFAULT_TIMEOUT
        run_id: int | None = None
        errors: list[str] = []
        tried: set[str] = set()  # nodes that refused this attempt's dispatch: each is tried once
        node = job_id = None
        deadline = time.monotonic() + self.service.options.misfire_grace
        while True:
            try:
                run_id, node, job_id = self._reserve(repository, source.name, trigger, avoid, tried, run_id,
                                                     deadline)
            except NoNode as exc:
                if run_id is None:
                    logger.warning("crawl of %s skipped: %s", source.name, exc)
                    return "skipped", None
                note = f"no Scrapyd node took the crawl: {'; '.join(errors) or exc}"
                repository.record_exit(run_id, exit_code=None, status_if_open="failed", note=note)
                logger.error("crawl of %s failed: %s", source.name, note)
                return "failed", None
            client = self.clients[node]
            try:
                client.schedule(self.config.project, SPIDER, jobid=job_id, version=self.version,
                                settings=self.job_settings(source, run_id, trigger, timeout),
                                args={"source": source.name})
                break
            except Exception as exc:  # NodeUnreachable, ScrapydError (e.g. version not deployed)
                errors.append(str(exc))
                tried.add(node)
                self.mark_down(node, str(exc))
                # A timeout may hide a job the node did queue: it must not start later.
                with contextlib.suppress(Exception):
                    client.cancel(self.config.project, job_id)
        logger.info("crawl of %s dispatched to node %s (run %d, job %s, trigger %s, timeout %gs)",
                    source.name, node, run_id, job_id, trigger, timeout)
        handle = CrawlHandle(source.name, run_id, node)
        with self.service.track(handle):
            reason, outcome = self._supervise(handle, client, job_id, timeout, repository,
                                              LeaseKeeper(self.service, repository, source.name))
        force, note = stop_note(reason, timeout)
        tail = None
        if outcome == "lost":
            status_if_open, note = "lost", (note + "; " if note else "") + self._lost_note(node)
        elif outcome == "unclosed":
            status_if_open = "timed_out" if reason == "timeout" else "failed"
            note = note or (f"the crawl on node {node} finished without closing its run (crashed or killed)")
        else:
            status_if_open = "timed_out" if reason == "timeout" else "failed"
        run = repository.get_run(run_id)
        if outcome != "lost" and (run is None or run.status != "succeeded"):
            tail = client.log_tail(self.config.project, SPIDER, job_id, OUTPUT_TAIL_LINES)
        run = repository.record_exit(run_id, exit_code=None, status_if_open=status_if_open, force_status=force,
                                     note=note, output_tail=tail)
        log = logger.info if run.status == "succeeded" else logger.warning
        log("crawl of %s on node %s finished: run %d %s", source.name, node, run_id, run.status)
        return str(run.status), node

    def _lost_note(self, node: str) -> str:
        return (f"the job vanished from node {node} (node restarted, killed or unreachable) and its crawl "
                f"wrote no heartbeat for {self.config.writer_timeout:g}s")

    def _supervise(self, handle: CrawlHandle, client: ScrapydClient, job_id: str, timeout: float,
                   repository: Any, lease: LeaseKeeper) -> tuple[str | None, str]:
        """Poll the node and the run record until the crawl is over; stop it on timeout, shutdown or a
        lost lease. Returns (stop reason, outcome): outcome `closed` (the crawl closed its record),
        `unclosed` (the node says finished, the record is still open) or `lost`."""
        from crawler.scrapyd_client import ScrapydError

        options = self.service.options
        project = self.config.project
        started = time.monotonic()
        deadline = started + timeout + options.stop_grace
        reason: str | None = None
        stage, stage_at = 0, 0.0
        signals = ("INT", "TERM", "KILL")
        finished_seen: float | None = None
        while True:
            now = time.monotonic()
            if reason is None:
                if now >= deadline:
                    reason = "timeout"
                elif handle.stop_requested.is_set():
                    reason = "shutdown"
                elif lease.lost(now):
                    reason = "lease"
                    logger.error("lease on %s lost; stopping run %d", handle.source, handle.run_id)
                if reason:
                    logger.warning("stopping the crawl of %s (run %d on node %s): %s", handle.source,
                                   handle.run_id, handle.node, reason)
            else:
                lease.lost(now)
            if reason is not None and stage < len(signals):
                wait = (0.0, options.stop_grace, KILL_WAIT)[stage]
                if now - stage_at >= wait:
                    try:
                        client.cancel(project, job_id, signals[stage])
                    except ScrapydError as exc:
                        logger.warning("could not cancel job %s on node %s: %s", job_id, handle.node, exc)
                    stage, stage_at = stage + 1, now
            try:
                state: str | None = client.jobs(project).get(job_id)
                reachable = True
            except ScrapydError as exc:
                state, reachable = None, False
                logger.debug("polling node %s: %s", handle.node, exc)
            run = repository.get_run(handle.run_id)
            closed = run is not None and run.status != "running"
            if state == "finished":
                if closed:
                    return reason, "closed"
                # The process is gone; its close record would be there already. Give a database write
                # in flight one more poll, then call it what it is.
                if finished_seen is None:
                    finished_seen = now
                elif now - finished_seen >= self.config.poll_interval:
                    return reason, "unclosed"
            elif state is None:
                if closed:
                    return reason, "closed"  # the node forgot the job, but the crawl had ended properly
                if run is not None and not self._writer_alive(run):
                    if reachable:
                        logger.warning("job %s (run %d of %s) vanished from node %s", job_id, handle.run_id,
                                       handle.source, handle.node)
                    return reason, "lost"
                if stage >= len(signals) and now - stage_at >= self.config.writer_timeout:
                    # An orphan the node no longer knows, still writing after every stop signal: it cannot
                    # be stopped from here, and the scheduler cannot wait for it forever.
                    logger.error("run %d of %s: its crawl still writes but node %s cannot stop it; giving up",
                                 handle.run_id, handle.source, handle.node)
                    return reason, "lost"
            time.sleep(self.config.poll_interval)

    def _writer_alive(self, run: Any) -> bool:
        """Did the crawl (or its dispatch, before the first heartbeat) show life within writer_timeout?"""
        from storage.models import utcnow

        last = run.heartbeat_at or run.started_at
        return (utcnow() - last).total_seconds() < self.config.writer_timeout


def make_executor(service: SchedulerService, config: ExecutorConfig) -> Executor:
    if config.kind == "scrapyd":
        return ScrapydExecutor(service, config)
    return LocalExecutor(service)
