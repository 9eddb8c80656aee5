"""Two processes writing at once: the same articles (one row each, nothing lost, nothing failed), and
copies of one story stored at the same instant (one root for the story)."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from pipelines.dedupe import content_hash
from storage.models import Article
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


# -- two processes storing copies of one story at the same instant --------------------------------

STORY = " ".join(f"word{(i * 7919) % 997} river council budget" for i in range(120))


def _copy_record(which: int, published: datetime) -> dict:
    words = STORY.split(" ")
    for i in range(5 + which, len(words), 60):  # a few words edited: a near-duplicate, not the same text
        words[i] = f"edited{which}"
    body = " ".join(words)
    url = f"https://site-{which}.example/story/"
    return {"source": "demo", "canonical_url": url, "url": url, "content_hash": content_hash(body),
            "title": f"Copy {which}", "subtitle": None, "body": body, "authors": [], "published_at": published,
            "modified_at": None, "language": "en", "section": None, "tags": [], "image_url": None, "site_name": None}


def _filler(which: int) -> dict:
    body = " ".join(f"filler{which} item{i} unrelated text" for i in range(80))
    return {**_copy_record(which, datetime(2025, 1, 1, tzinfo=UTC)), "canonical_url": f"https://f{which}.example/",
            "url": f"https://f{which}.example/", "body": body, "content_hash": content_hash(body)}


def _store_copy(db_url: str, which: int, batch_path: bool, barrier: multiprocessing.synchronize.Barrier,
                queue: multiprocessing.Queue) -> None:
    """Look up the story's group, wait until the other process has looked too, then store."""
    import storage.repository as repository_module

    waited = []

    def after_lookup() -> None:
        if not waited:  # only the first lookup: a retried batch or the recheck does not wait
            waited.append(True)
            barrier.wait(timeout=60)

    find_group, load = repository_module.Repository._find_group, repository_module._GroupIndex.load

    def racing_find_group(self, *args, **kwargs):
        found = find_group(self, *args, **kwargs)
        after_lookup()
        return found

    def racing_load(self, *args, **kwargs):
        load(self, *args, **kwargs)
        after_lookup()

    repository_module.Repository._find_group = racing_find_group
    repository_module._GroupIndex.load = racing_load
    repository = open_repository(db_url)
    published = datetime(2025, 3, 1, 8 + which, tzinfo=UTC)
    batch = [_copy_record(which, published)] + ([_filler(which)] if batch_path else [])
    result = repository.upsert_articles(batch)
    queue.put((result.inserted, len(result.failed), repository.batches_written))


@pytest.mark.parametrize("batch_path", [False, True], ids=["row-path", "set-path"])
def test_two_processes_storing_copies_of_one_story_converge_on_one_root(db_url: str, batch_path: bool) -> None:
    repository = open_repository(db_url)
    repository.ensure_source("demo", "Demo")
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_store_copy, args=(db_url, which, batch_path, barrier, queue)) for which in (1, 2)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert all(failed == 0 for _, failed, _ in results)
    assert all(written == ({"set": 1, "rows": 0} if batch_path else {"set": 0, "rows": 1})
               for _, _, written in results)
    with repository.sessions() as session:
        rows = {a.canonical_url: a for a in session.scalars(select(Article).where(Article.url.like("%site-%")))}
    first, second = rows["https://site-1.example/story/"], rows["https://site-2.example/story/"]
    assert first.duplicate_of is None, "the earliest published copy is the story's one root"
    assert second.duplicate_of == first.id and second.similarity is not None and second.similarity >= 0.7
