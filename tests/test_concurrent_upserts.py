"""The same articles upserted by two processes at once: one row each, nothing lost, nothing failed."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime

from storage.repository import open_repository


def _records(n: int) -> list[dict]:
    return [{
        "source": "demo", "canonical_url": f"https://example.com/story-{i}/", "url": f"https://example.com/story-{i}/",
        "content_hash": f"hash-{i}", "title": f"Story {i}", "subtitle": None,
        "body": f"Body of story {i}.\n\nSecond paragraph.", "authors": ["Ana Lima"],
        "published_at": datetime(2025, 3, 1, tzinfo=UTC), "modified_at": None, "language": "en", "section": None,
        "tags": [], "image_url": None, "site_name": None,
    } for i in range(n)]


def _upsert(db_url: str, barrier: multiprocessing.synchronize.Barrier, queue: multiprocessing.Queue) -> None:
    repository = open_repository(db_url)
    barrier.wait(timeout=30)
    total = {"inserted": 0, "updated": 0, "unchanged": 0, "failed": 0}
    records = _records(60)
    for start in range(0, len(records), 10):
        result = repository.upsert_articles(records[start:start + 10])
        total["inserted"] += result.inserted
        total["updated"] += result.updated
        total["unchanged"] += result.unchanged
        total["failed"] += len(result.failed)
    queue.put(total)


def test_two_processes_upserting_the_same_articles(db_url: str) -> None:
    repository = open_repository(db_url)
    repository.ensure_source("demo", "Demo")
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_upsert, args=(db_url, barrier, queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert sum(r["failed"] for r in results) == 0
    assert sum(r["inserted"] for r in results) == 60
    assert sum(r["inserted"] + r["unchanged"] for r in results) == 120
    assert repository.count_articles() == 60
