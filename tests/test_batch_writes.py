"""The set-based batch path of the repository leaves exactly the tables the row-by-row path leaves.

Same records, same batches, once through each path on a real SQLite and PostgreSQL database:
new articles (syndicated copies first, so some later copies become the story's root), changed
texts, unchanged ones, a copy that declares a canonical URL before the canonical page itself,
a canonical URL twice in one batch and a bad row (both fall back to the row-by-row path), and
`url_only` links (pages the dedupe stage dropped): ``article_urls`` included.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from crawler.urls import fetched_url_key
from pipelines.dedupe import content_hash
from storage.models import Article, ArticleBand, ArticleUrl, ArticleVersion
from storage.repository import Repository, StoreResult, open_repository

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "neardup" / "newssite-600.json.gz"


def rec(url: str, body: str, title: str, published: datetime, **extra: Any) -> dict[str, Any]:
    return {"source": "demo", "canonical_url": url, "url": url, "content_hash": content_hash(body), "title": title,
            "subtitle": None, "body": body, "authors": ["A. Writer"], "published_at": published, "modified_at": None,
            "language": "en", "section": "World", "tags": ["t"], "image_url": None, "site_name": "Demo",
            "etag": f'"{len(body)}"', **extra}


def batches() -> list[list[dict[str, Any]]]:
    articles = [a for a in json.loads(gzip.decompress(FIXTURE.read_bytes()))["articles"] if a["body"]]
    articles.sort(key=lambda a: a["id"], reverse=True)  # syndicated copies (sNNNNN) before their originals
    first = [rec(a["url"], a["body"], a["title"], datetime.fromisoformat(a["published"])) for a in articles[:400]]
    out = [first[i:i + 50] for i in range(0, len(first), 50)]
    later = [rec(a["url"], a["body"], a["title"], datetime.fromisoformat(a["published"])) for a in articles[400:]]
    recrawl: list[dict[str, Any]] = []
    for i, r in enumerate(first[:120]):
        if i % 3 == 0:  # corrected text: a new version, new bands
            body = r["body"] + "\n\nUpdate: this story was corrected."
            recrawl.append({**r, "body": body, "content_hash": content_hash(body), "etag": '"v2"'})
            if i % 9 == 0:  # a reprint of the corrected text, later in the same batch: linked to it
                reprint = r["url"].rstrip("/") + "-reprint/"
                recrawl.append({**r, "canonical_url": reprint, "url": reprint, "body": body,
                                "content_hash": content_hash(body)})
        elif i % 3 == 1:  # unchanged
            recrawl.append(r)
        else:  # a copy that declares it canonical: never overwrites the page's own text
            recrawl.append({**r, "url": r["url"].rstrip("/") + "-syndicated/", "title": "Copy: " + r["title"]})
        if i % 5 == 0:  # an AMP copy the dedupe stage dropped: only its URL is recorded
            recrawl.append({"url_only": True, "url": r["url"] + "amp/", "canonical_url": r["canonical_url"],
                            "etag": f'"amp-{i}"', "last_modified": None})
        if i % 4 == 0 and later:
            recrawl.append(later.pop())
    out += [recrawl[i:i + 40] for i in range(0, len(recrawl), 40)]
    day = datetime(2025, 2, 1, tzinfo=UTC)
    stand_in = {**rec("https://example.com/news/own-page/", STAND_IN_TEXT, "Copy headline", day),
                "url": "https://example.com/partner/copy/"}
    own = rec("https://example.com/news/own-page/", "The page's own text " * 60, "Own headline", day)
    out.append([stand_in, *later[:20], {"url_only": True, "url": "https://example.com/news/nowhere/amp/",
                                        "canonical_url": "https://example.com/news/nowhere/", "etag": None}])
    out.append([own, *later[20:40]])
    out.append([*later[40:50], later[40]])  # a canonical URL twice in one batch
    bad = rec("https://example.com/news/bad/", "Refused " * 80, "Bad", datetime(2025, 1, 1))  # naive: refused
    out.append([*later[50:60], bad, *later[60:]])
    return out


STAND_IN_TEXT = "A copy's text " * 60


def stand_in_etag() -> str:
    return f'"{len(STAND_IN_TEXT)}"'


def run(repo: Repository, sequence: list[list[dict[str, Any]]]) -> tuple[StoreResult, dict[str, list]]:
    total = StoreResult()
    for batch in sequence:
        total.merge(repo.upsert_articles(batch))
    with repo.sessions() as session:
        url_of = dict(session.execute(select(Article.id, Article.canonical_url)).all())
        tables = {
            "articles": sorted((a.canonical_url, a.url, a.source, a.title, a.body, a.content_hash, a.version,
                                url_of.get(a.duplicate_of), a.similarity, a.minhash, a.http_etag, a.published_at,
                                tuple(a.authors), tuple(a.tags)) for a in session.scalars(select(Article))),
            "versions": sorted((url_of[v.article_id], v.version, v.title, v.body, v.content_hash)
                               for v in session.scalars(select(ArticleVersion))),
            "bands": sorted((url_of[b.article_id], b.band_no, b.band_hash)
                            for b in session.scalars(select(ArticleBand))),
            "urls": sorted((u.url, url_of[u.article_id], u.http_etag, u.http_last_modified)
                           for u in session.scalars(select(ArticleUrl))),
        }
    return total, tables


def clear(repo: Repository) -> None:
    with repo.sessions.begin() as session:
        for model in (ArticleBand, ArticleVersion, ArticleUrl):
            session.execute(delete(model))
        session.execute(Article.__table__.update().values(duplicate_of=None))
        session.execute(delete(Article))


def test_set_path_and_row_path_leave_the_same_tables(db_url: str) -> None:
    engine = open_repository(db_url).engine
    sequence = batches()
    rows_repo = Repository(engine, batch_writes=False)
    rows_repo.ensure_source("demo", "Demo")
    rows_result, rows_tables = run(rows_repo, sequence)
    clear(rows_repo)
    set_repo = Repository(engine, batch_writes=True)
    set_result, set_tables = run(set_repo, sequence)

    assert rows_repo.batches_written == {"set": 0, "rows": len(sequence)}
    assert set_repo.batches_written == {"set": len(sequence) - 2, "rows": 2}  # the two odd batches fell back
    for name in rows_tables:
        assert set_tables[name] == rows_tables[name], name
    assert (set_result.inserted, set_result.updated, set_result.unchanged, set_result.replaced,
            set_result.content_duplicates, set_result.linked_urls, set_result.failed) == (
        rows_result.inserted, rows_result.updated, rows_result.unchanged, rows_result.replaced,
        rows_result.content_duplicates, rows_result.linked_urls, rows_result.failed)
    # the scenario exercises what it claims to
    articles = rows_tables["articles"]
    assert rows_result.content_duplicates >= 10 and rows_result.updated >= 30 and rows_result.replaced == 1
    assert [url for url, _ in rows_result.failed] == ["https://example.com/news/bad/"]
    # copies (stored first) gave way to their earlier-published originals as the story's root
    assert any(a[7] is not None and a[0].rstrip("/").rsplit("-", 1)[-1].startswith("s")
               and a[7].rstrip("/").rsplit("-", 1)[-1].startswith("a") for a in articles)
    own = next(a for a in articles if a[0] == "https://example.com/news/own-page/")
    assert (own[3], own[6]) == ("Own headline", 1)
    # every page stored or linked has its URL row, pointing at the row it was stored under
    urls = {url: (canonical, etag) for url, canonical, etag, _ in rows_tables["urls"]}
    pages = [r for batch in sequence for r in batch if r["url"] != "https://example.com/news/bad/"]
    for r in pages:
        if r["canonical_url"] != "https://example.com/news/nowhere/":
            assert urls[fetched_url_key(r["url"])][0] == r["canonical_url"], r["url"]
    assert set(urls) == {fetched_url_key(r["url"]) for r in pages} - {"https://example.com/news/nowhere/amp/"}
    assert urls["https://example.com/partner/copy/"] == ("https://example.com/news/own-page/", stand_in_etag())
    assert rows_result.linked_urls == sum(1 for r in pages if r.get("url_only")) - 1 >= 8
