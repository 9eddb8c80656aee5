"""The sources file: the documented example, location precedence, and one test per error.

Every error must be one line naming the file, the source and the key, because
the CLI prints it as is (exit code 2) and a user fixes the file from it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crawler.sources import (
    Schedule,
    Source,
    SourcesError,
    load_source,
    load_sources,
    parse_duration,
    resolve_sources_path,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "sources.md"

# Copied verbatim into docs/sources.md (test_docs_example_is_this_one keeps them in sync).
EXAMPLE = r"""# newsingest sources file: every key, with the values used in tests/test_sources.py.

# Merged under every [sources.NAME] table; a source's own value wins.
[defaults]
follow_depth = 1
language = "en"
timeout = "30m"
exclude_url_pattern = '/(tag|author|search)/'

[defaults.settings]
DOWNLOAD_DELAY = 1.0
AUTOTHROTTLE_ENABLED = true

[defaults.schedule]
interval = "1h"
jitter = "5m"

[sources.example-news]
site_name = "Example News"
allowed_domains = ["example.com"]
feeds = ["https://www.example.com/feeds/all.rss"]
sitemaps = ["https://www.example.com/robots.txt", "https://www.example.com/sitemap-news.xml"]
start_urls = ["https://www.example.com/politics/"]
article_url_pattern = '/\d{4}/\d{2}/\d{2}/[^/]+/?$'
exclude_url_pattern = '/(live|video)/'
language = "en-GB"
timezone = "Europe/London"
follow_depth = 2
enabled = true
timeout = "45m"

[sources.example-news.settings]
DOWNLOAD_DELAY = 0.5
CONCURRENT_REQUESTS_PER_DOMAIN = 4
DEFAULT_REQUEST_HEADERS = { Accept-Language = "en-GB,en;q=0.8" }

[sources.example-news.extraction]
body = "div.article-body"
title = "h1.headline::text"
authors = '//a[@rel="author"]/text()'
published_at = "time[itemprop=datePublished]::attr(datetime)"

[sources.example-news.schedule]
cron = "*/20 6-23 * * *"
jitter = "2m"

[sources.local-demo]
allowed_domains = ["127.0.0.1"]
start_urls = ["http://127.0.0.1:8000/"]
enabled = false
"""

DEMO = """\
[sources.demo]
allowed_domains = ["example.com"]
feeds = ["https://example.com/rss"]
"""


def write(tmp_path: Path, text: str, name: str = "sources.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> SourcesError:
    with pytest.raises(SourcesError) as info:
        load_sources(path)
    return info.value


# -- the documented example ---------------------------------------------------------------


def test_example_loads_every_key(tmp_path: Path) -> None:
    sources = load_sources(write(tmp_path, EXAMPLE))
    assert list(sources) == ["example-news", "local-demo"]
    news = sources["example-news"]
    assert news == Source(
        name="example-news",
        allowed_domains=("example.com",),
        feeds=("https://www.example.com/feeds/all.rss",),
        sitemaps=("https://www.example.com/robots.txt", "https://www.example.com/sitemap-news.xml"),
        start_urls=("https://www.example.com/politics/",),
        article_url_pattern=re.compile(r"/\d{4}/\d{2}/\d{2}/[^/]+/?$"),
        exclude_url_pattern=re.compile("/(live|video)/"),
        site_name="Example News",
        language="en-GB",
        timezone="Europe/London",
        follow_depth=2,
        enabled=True,
        settings=news.settings,
        extraction=news.extraction,
        schedule=Schedule(cron="*/20 6-23 * * *", interval_seconds=None, jitter_seconds=120.0),
        timeout_seconds=2700.0,
    )
    # [defaults.settings] merged key by key under the source's own.
    assert dict(news.settings) == {
        "DOWNLOAD_DELAY": 0.5,
        "AUTOTHROTTLE_ENABLED": True,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 4,
        "DEFAULT_REQUEST_HEADERS": {"Accept-Language": "en-GB,en;q=0.8"},
    }
    assert dict(news.extraction) == {
        "body": "div.article-body",
        "title": "h1.headline::text",
        "authors": '//a[@rel="author"]/text()',
        "published_at": "time[itemprop=datePublished]::attr(datetime)",
    }


def test_defaults_fill_what_a_source_leaves_out(tmp_path: Path) -> None:
    demo = load_sources(write(tmp_path, EXAMPLE))["local-demo"]
    assert demo.enabled is False
    assert demo.follow_depth == 1
    assert demo.language == "en"
    assert demo.timeout_seconds == 1800.0
    assert demo.exclude_url_pattern is not None
    assert demo.exclude_url_pattern.pattern == "/(tag|author|search)/"
    assert demo.schedule == Schedule(cron=None, interval_seconds=3600.0, jitter_seconds=300.0)
    assert dict(demo.settings) == {"DOWNLOAD_DELAY": 1.0, "AUTOTHROTTLE_ENABLED": True}
    assert demo.article_url_pattern is None and demo.site_name is None
    assert dict(demo.extraction) == {}


def test_minimal_source_gets_the_documented_defaults(tmp_path: Path) -> None:
    demo = load_source(write(tmp_path, DEMO), "demo")
    assert (demo.follow_depth, demo.enabled, demo.schedule, demo.timeout_seconds) == (2, True, None, None)
    assert (demo.sitemaps, demo.start_urls, demo.language, demo.timezone) == ((), (), None, None)


def test_docs_example_is_this_one() -> None:
    assert EXAMPLE in DOCS.read_text(encoding="utf-8")


def test_source_is_immutable(tmp_path: Path) -> None:
    demo = load_source(write(tmp_path, EXAMPLE), "example-news")
    with pytest.raises(AttributeError):
        demo.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        demo.settings["DOWNLOAD_DELAY"] = 9  # type: ignore[index]


def test_is_allowed_and_is_article_url(tmp_path: Path) -> None:
    news = load_source(write(tmp_path, EXAMPLE), "example-news")
    assert news.is_allowed("https://example.com/a")
    assert news.is_allowed("https://WWW.Example.com:8443/a")
    assert news.is_allowed("http://cdn.www.example.com/a.jpg")
    assert not news.is_allowed("https://notexample.com/a")
    assert not news.is_allowed("https://example.com.evil.net/a")
    assert not news.is_allowed("/relative/path")
    assert news.is_article_url("https://www.example.com/2024/05/01/budget-vote/")
    assert not news.is_article_url("https://www.example.com/politics/")
    assert load_source(write(tmp_path, EXAMPLE), "local-demo").is_article_url("http://127.0.0.1:8000/x")


def test_idn_allowed_domains_match_both_spellings(tmp_path: Path) -> None:
    path = write(tmp_path, '[sources.b]\nallowed_domains = ["Bücher.de"]\nfeeds = ["https://www.bücher.de/rss"]\n')
    source = load_source(path, "b")
    assert source.allowed_domains == ("xn--bcher-kva.de",)
    assert source.is_allowed("https://www.xn--bcher-kva.de/a")
    assert source.is_allowed("https://bücher.de/a")


# -- location precedence -------------------------------------------------------------------


def test_cli_value_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSINGEST_SOURCES", "/etc/from-env.toml")
    assert resolve_sources_path("cli.toml") == Path("cli.toml")


def test_env_wins_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSINGEST_SOURCES", "/etc/from-env.toml")
    assert resolve_sources_path(None) == Path("/etc/from-env.toml")


@pytest.mark.parametrize("env", [None, ""])
def test_default_is_sources_toml_in_the_working_directory(
    env: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if env is None:
        monkeypatch.delenv("NEWSINGEST_SOURCES", raising=False)
    else:
        monkeypatch.setenv("NEWSINGEST_SOURCES", env)
    monkeypatch.chdir(tmp_path)
    write(tmp_path, DEMO)
    path = resolve_sources_path(None)
    assert path == Path("sources.toml")
    assert list(load_sources(path)) == ["demo"]


def test_resolved_env_file_is_the_one_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = write(tmp_path, DEMO, "env.toml")
    cli_file = write(tmp_path, DEMO.replace("demo", "cli"), "cli.toml")
    monkeypatch.setenv("NEWSINGEST_SOURCES", str(env_file))
    assert list(load_sources(resolve_sources_path(None))) == ["demo"]
    assert list(load_sources(resolve_sources_path(str(cli_file)))) == ["cli"]


# -- errors: one line naming the file, the source and the key --------------------------------

# (file content, the message after "<path>: ")
ERRORS = {
    "invalid_toml": (
        '[sources.demo]\nallowed_domains = ["example.com"]\nfeeds = ["https://example.com/rss" "x"]\n',
        "line 3: invalid TOML: Unclosed array (column 36)",
    ),
    "truncated_toml": (
        '[sources.demo]\nallowed_domains = ["example.com"]\nfeeds = [\n',
        "line 3: invalid TOML: Invalid value (at end of file)",
    ),
    "unknown_top_level_key": (
        DEMO + "[source.other]\nfeeds = []\n",
        "unknown top-level key 'source' (did you mean 'sources'?)",
    ),
    "no_sources": ("[defaults]\nfollow_depth = 1\n", "no sources defined; add a [sources.NAME] table"),
    "bad_source_name": (
        DEMO.replace("[sources.demo]", '[sources."my demo"]'),
        "source 'my demo': invalid source name; use only letters, digits, '_' and '-'",
    ),
    "source_not_a_table": ('[sources]\ndemo = "https://example.com"\n',
                           "source 'demo': expected a [sources.demo] table, got str"),
    "unknown_key_suggestion": (
        DEMO + 'feed = ["https://example.com/other.rss"]\n',
        "source 'demo': unknown key 'feed' (did you mean 'feeds'?)",
    ),
    "unknown_key": (DEMO + "priority = 3\n", "source 'demo': unknown key 'priority'"),
    "missing_allowed_domains": (
        '[sources.demo]\nfeeds = ["https://example.com/rss"]\n',
        "source 'demo': key 'allowed_domains': required; list the hosts this source may fetch from",
    ),
    "empty_allowed_domains": (
        DEMO.replace('["example.com"]', "[]"),
        "source 'demo': key 'allowed_domains': must not be empty",
    ),
    "allowed_domain_is_url": (
        DEMO.replace('["example.com"]', '["https://example.com/"]'),
        "source 'demo': key 'allowed_domains': 'https://example.com/' is not a bare host name "
        "(give the host only, not a URL)",
    ),
    "allowed_domain_with_port": (
        DEMO.replace('["example.com"]', '["example.com:8080"]'),
        "source 'demo': key 'allowed_domains': 'example.com:8080' is not a bare host name "
        "(ports are not allowed; give the host only)",
    ),
    "feeds_not_a_list": (
        DEMO.replace('["https://example.com/rss"]', '"https://example.com/rss"'),
        "source 'demo': key 'feeds': expected a list of URLs, got str",
    ),
    "feeds_holding_a_number": (
        DEMO.replace('["https://example.com/rss"]', '["https://example.com/rss", 3]'),
        "source 'demo': key 'feeds': expected a list of URLs, got a list holding int",
    ),
    "url_not_http": (
        DEMO + 'sitemaps = ["ftp://example.com/sitemap.xml"]\n',
        "source 'demo': key 'sitemaps': 'ftp://example.com/sitemap.xml' is not an http(s) URL",
    ),
    "url_outside_allowed_domains": (
        DEMO + 'start_urls = ["https://example.org/news/"]\n',
        "source 'demo': key 'start_urls': 'https://example.org/news/' "
        "is outside allowed_domains (example.com)",
    ),
    "url_lookalike_domain": (
        DEMO + 'start_urls = ["https://notexample.com/"]\n',
        "source 'demo': key 'start_urls': 'https://notexample.com/' is outside allowed_domains (example.com)",
    ),
    "nothing_to_crawl": (
        '[sources.demo]\nallowed_domains = ["example.com"]\nfeeds = []\n',
        "source 'demo': nothing to crawl; set at least one of 'feeds', 'sitemaps', 'start_urls'",
    ),
    "bad_article_regex": (
        DEMO + "article_url_pattern = '/(\\d+/'\n",
        "source 'demo': key 'article_url_pattern': invalid regular expression '/(\\\\d+/': "
        "missing ), unterminated subpattern at position 1",
    ),
    "bad_exclude_regex": (
        DEMO + "exclude_url_pattern = '*.pdf'\n",
        "source 'demo': key 'exclude_url_pattern': invalid regular expression '*.pdf': "
        "nothing to repeat at position 0",
    ),
    "negative_follow_depth": (
        DEMO + "follow_depth = -1\n",
        "source 'demo': key 'follow_depth': expected an integer >= 0, got int",
    ),
    "boolean_follow_depth": (
        DEMO + "follow_depth = true\n",
        "source 'demo': key 'follow_depth': expected an integer >= 0, got bool",
    ),
    "enabled_not_bool": (
        DEMO + 'enabled = "yes"\n',
        "source 'demo': key 'enabled': expected true or false, got str",
    ),
    "bad_language": (
        DEMO + 'language = "English"\n',
        "source 'demo': key 'language': expected a language code like 'en' or 'pt-BR', got 'English'",
    ),
    "empty_site_name": (
        DEMO + 'site_name = " "\n',
        "source 'demo': key 'site_name': expected a non-empty string, got str",
    ),
    "lower_case_setting": (
        DEMO + "[sources.demo.settings]\ndownload_delay = 2\n",
        "source 'demo': key 'settings.download_delay': Scrapy setting names are UPPER_CASE",
    ),
    "date_setting": (
        DEMO + "[sources.demo.settings]\nSTART_AFTER = 2024-05-01\n",
        "source 'demo': key 'settings.START_AFTER': "
        "values must be strings, numbers, booleans, lists or tables, got date",
    ),
    "unknown_extraction_key": (
        DEMO + '[sources.demo.extraction]\ntitel = "h1"\n',
        "source 'demo': unknown key 'extraction.titel' (did you mean 'extraction.title'?)",
    ),
    "bad_xpath": (
        DEMO + "[sources.demo.extraction]\nbody = '//div[@class=\"story\"'\n",
        "source 'demo': key 'extraction.body': invalid XPath '//div[@class=\"story\"': Invalid predicate",
    ),
    "bad_css": (
        DEMO + '[sources.demo.extraction]\nauthors = "a[rel=author"\n',
        "source 'demo': key 'extraction.authors': invalid CSS selector 'a[rel=author': "
        "Expected ']', got <EOF at 12>",
    ),
    "cron_and_interval": (
        DEMO + '[sources.demo.schedule]\ncron = "0 * * * *"\ninterval = "1h"\n',
        "source 'demo': key 'schedule': set exactly one of 'cron' and 'interval'",
    ),
    "bad_cron": (
        DEMO + '[sources.demo.schedule]\ncron = "61 * * * *"\n',
        "source 'demo': key 'schedule.cron': invalid crontab '61 * * * *': Error validating expression '61': "
        "the last value (61) is higher than the maximum value (59)",
    ),
    "cron_with_six_fields": (
        DEMO + '[sources.demo.schedule]\ncron = "0 0 * * * *"\n',
        "source 'demo': key 'schedule.cron': invalid crontab '0 0 * * * *': "
        "Wrong number of fields; got 6, expected 5",
    ),
    "bad_interval": (
        DEMO + '[sources.demo.schedule]\ninterval = "15 minutes"\n',
        "source 'demo': key 'schedule.interval': invalid duration '15 minutes'; "
        "use e.g. '30s', '15m', '1h', '1d' or '1h30m'",
    ),
    "zero_interval": (
        DEMO + "[sources.demo.schedule]\ninterval = 0\n",
        "source 'demo': key 'schedule.interval': must be greater than zero, got 0",
    ),
    "unknown_schedule_key": (
        DEMO + '[sources.demo.schedule]\ninterval = "1h"\njiter = "1m"\n',
        "source 'demo': unknown key 'schedule.jiter' (did you mean 'schedule.jitter'?)",
    ),
    "bad_timeout": (
        DEMO + 'timeout = "-5m"\n',
        "source 'demo': key 'timeout': invalid duration '-5m'; use e.g. '30s', '15m', '1h', '1d' or '1h30m'",
    ),
    "defaults_unknown_key": (
        "[defaults]\nfollow_dept = 1\n" + DEMO,
        "defaults: unknown key 'follow_dept' (did you mean 'follow_depth'?)",
    ),
    "defaults_per_source_key": (
        '[defaults]\nallowed_domains = ["example.com"]\n' + DEMO,
        "defaults: key 'allowed_domains': not allowed in [defaults]; set it in each [sources.NAME] table",
    ),
    "bad_timezone": (
        DEMO + 'timezone = "CEST"\n',
        "source 'demo': key 'timezone': expected an IANA time zone like 'Europe/Berlin' or 'America/New_York', "
        "got 'CEST'",
    ),
    "defaults_bad_value": (
        '[defaults]\nfollow_depth = "2"\n' + DEMO,
        "defaults: key 'follow_depth': expected an integer >= 0, got str",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_error_is_one_line_naming_file_source_and_key(case: str, tmp_path: Path) -> None:
    text, expected = ERRORS[case]
    path = write(tmp_path, text)
    error = load_error(path)
    assert str(error) == f"{path}: {expected}"
    assert "\n" not in str(error)
    assert error.exit_code == 2
    assert error.path == str(path)


def test_error_attributes_name_source_and_key(tmp_path: Path) -> None:
    error = load_error(write(tmp_path, DEMO + "follow_depth = -1\n"))
    assert (error.source, error.key) == ("demo", "follow_depth")
    assert error.message == "expected an integer >= 0, got int"


def test_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    assert str(load_error(path)) == f"{path}: file not found"


def test_file_is_a_directory(tmp_path: Path) -> None:
    assert str(load_error(tmp_path)) == f"{tmp_path}: is a directory, not a file"


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "sources.toml"
    path.write_bytes(DEMO.encode() + b'site_name = "Caf\xe9"\n')
    assert str(load_error(path)) == f"{path}: line 4: invalid TOML: not UTF-8"


def test_relative_path_is_named_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, DEMO + "feed = []\n")
    assert str(load_error(Path("sources.toml"))) == (
        "sources.toml: source 'demo': unknown key 'feed' (did you mean 'feeds'?)"
    )


def test_value_with_newline_stays_on_one_line(tmp_path: Path) -> None:
    error = load_error(write(tmp_path, DEMO + 'language = "en\\nfr"\n'))
    assert "\n" not in str(error)
    assert str(error).endswith("got 'en\\nfr'")


def test_error_anywhere_fails_every_source(tmp_path: Path) -> None:
    path = write(tmp_path, DEMO + '[sources.broken]\nallowed_domains = ["example.org"]\nfeeds = "x"\n')
    with pytest.raises(SourcesError, match="source 'broken': key 'feeds'"):
        load_source(path, "demo")


def test_unknown_source_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    with pytest.raises(SourcesError) as info:
        load_source(path, "example-nwes")
    assert str(info.value) == (
        f"{path}: source 'example-nwes' not found (did you mean 'example-news'?); "
        "known: example-news, local-demo"
    )
    with pytest.raises(SourcesError) as info:
        load_source(path, "zzz")
    assert str(info.value) == f"{path}: source 'zzz' not found; known: example-news, local-demo"


def test_a_source_named_defaults_is_not_confused_with_the_defaults_table(tmp_path: Path) -> None:
    error = load_error(write(tmp_path, DEMO.replace("demo", "defaults") + "follow_depth = -1\n"))
    assert str(error).endswith(": source 'defaults': key 'follow_depth': expected an integer >= 0, got int")
    error = load_error(write(tmp_path, '[defaults]\nfollow_depth = -1\n' + DEMO))
    assert (error.source, error.section, error.key) == (None, "defaults", "follow_depth")


def test_disabled_source_can_still_be_loaded_by_name(tmp_path: Path) -> None:
    assert load_source(write(tmp_path, EXAMPLE), "local-demo").enabled is False


# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30s", 30.0), ("15m", 900.0), ("1h", 3600.0), ("1d", 86400.0), ("1h30m", 5400.0), ("1h 30m", 5400.0),
     ("1.5h", 5400.0), (" 2M ", 120.0), (45, 45.0), (2.5, 2.5), (0, 0.0)],
)
def test_parse_duration(value: str | int | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["", "90", "15 minutes", "m", "1w", "-5m", -1, float("inf"), True, "1h-30m"]
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)  # type: ignore[arg-type]
