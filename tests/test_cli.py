"""The README's promises: `newsingest demo`, `newsingest extract`, the documented sources example."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from crawler.sources import load_sources

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = ROOT, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crawler.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_demo_crawls_the_bundled_site_and_summarizes(tmp_path: Path) -> None:
    result = run("demo", "--db", f"sqlite:///{tmp_path / 'news.db'}")
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.search(r"manifest articles found\s*│\s*(\d+) / (\d+)", result.stdout)
    assert found and found.group(1) == found.group(2) and int(found.group(2)) > 30, result.stdout
    assert "succeeded" in result.stdout
    assert "Field coverage" in result.stdout


def test_extract_prints_the_fields_of_a_saved_page_as_json() -> None:
    page = ROOT / "tests" / "fixtures" / "seed" / "raven-tribune.html"
    expected = json.loads((ROOT / "tests" / "fixtures" / "seed" / "expected.json").read_text(encoding="utf-8"))
    result = run("extract", str(page), "--url", "https://raventribune.example/world/mobilization/", "--json")
    assert result.returncode == 0, result.stderr
    fields = json.loads(result.stdout)
    assert fields["is_article"] is True
    assert fields["title"] == expected["title"]
    assert fields["subtitle"] == expected["subtitle"]
    assert fields["body"] == "\n\n".join(expected["body_paragraphs"])
    assert fields["published_at"].startswith(expected["published_date"])
    assert run("extract", "/nonexistent.html").returncode == 2


def test_readme_sources_example_is_valid(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "sources.toml"
    path.write_text(example, encoding="utf-8")
    sources = load_sources(path)
    herald = sources["herald"]
    assert herald.feeds and herald.sitemaps and herald.start_urls
    assert herald.is_article_url("https://herald.example.com/world/2025/03/01/a-story/")
    assert not herald.is_article_url("https://herald.example.com/world/")
    assert herald.settings["DOWNLOAD_DELAY"] == 0.5
