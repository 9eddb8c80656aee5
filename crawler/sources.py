"""Load and validate the sources file (TOML): which sites to crawl, and how.

The file is read whole and validated up front so that a typo fails the
command at once with one line naming the file, the source and the key,
instead of surfacing as a silent empty crawl hours later. The format is
documented in docs/sources.md.

Location: ``--sources FILE``, else ``$NEWSINGEST_SOURCES``, else
``./sources.toml`` (see `resolve_sources_path`).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "ENV_VAR",
    "ExecutorConfig",
    "Schedule",
    "ScrapydNode",
    "Source",
    "SourcesError",
    "load_executor",
    "load_source",
    "load_sources",
    "parse_duration",
    "resolve_sources_path",
]

ENV_VAR = "NEWSINGEST_SOURCES"
DEFAULT_FILE = "sources.toml"
DEFAULT_FOLLOW_DEPTH = 2

_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_SETTING_RE = re.compile(r"[A-Z][A-Z0-9_]*")
_LABEL_RE = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_LANGUAGE_RE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

URL_LIST_KEYS = ("feeds", "sitemaps", "start_urls")
PER_SOURCE_KEYS = ("allowed_domains", *URL_LIST_KEYS)
DEFAULTABLE_KEYS = ("article_url_pattern", "exclude_url_pattern", "site_name", "language", "timezone",
                    "follow_depth", "enabled", "allow_private_networks", "settings", "extraction", "schedule",
                    "timeout")
SOURCE_KEYS = (*PER_SOURCE_KEYS, *DEFAULTABLE_KEYS)
EXTRACTION_KEYS = ("body", "title", "authors", "published_at")
SCHEDULE_KEYS = ("cron", "interval", "jitter")
TOP_LEVEL_KEYS = ("sources", "defaults", "executor")
EXECUTOR_KEYS = ("type", "project", "nodes", "poll_interval", "heartbeat", "writer_timeout", "node_retry")
NODE_KEYS = ("url", "name", "capacity", "username_env", "password_env")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PROJECT_RE = re.compile(r"[A-Za-z0-9_.-]+")
_NODE_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]+")
DEFAULT_HEARTBEAT = 10.0
DEFAULT_WRITER_TIMEOUT = 60.0
# Tables in [defaults] merged key by key under the source's own; every other
# key (including `schedule`, which is one unit) is replaced whole.
_MERGED_TABLES = ("settings", "extraction")


class SourcesError(Exception):
    """A sources file that cannot be used; `str()` is one line for the CLI to print."""

    exit_code = 2  # the CLI's "bad input" code

    def __init__(self, path: str | os.PathLike[str], message: str, *, source: str | None = None,
                 key: str | None = None, line: int | None = None, section: str | None = None) -> None:
        self.path = str(path)
        self.source = source
        self.section = section  # "defaults" for errors in [defaults]
        self.key = key
        self.line = line
        self.message = message
        parts = [self.path]
        if line is not None:
            parts.append(f"line {line}")
        if section is not None:
            parts.append(section)
        if source is not None:
            parts.append(f"source {_q(source)}")
        if key is not None:
            parts.append(f"key {_q(key)}")
        parts.append(message)
        # One line, always: a value quoted from the file must not break it.
        text = ": ".join(parts)
        super().__init__(text.replace("\r", "\\r").replace("\n", "\\n"))


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a scheduler should run the source: a crontab or a fixed interval."""

    cron: str | None
    interval_seconds: float | None
    jitter_seconds: float | None


@dataclass(frozen=True, slots=True)
class Source:
    """One validated site to crawl; immutable so it can be shared by spiders."""

    name: str
    allowed_domains: tuple[str, ...]
    feeds: tuple[str, ...]
    sitemaps: tuple[str, ...]
    start_urls: tuple[str, ...]
    article_url_pattern: re.Pattern[str] | None
    exclude_url_pattern: re.Pattern[str] | None
    site_name: str | None
    language: str | None
    follow_depth: int
    enabled: bool
    settings: Mapping[str, Any]
    extraction: Mapping[str, str]
    schedule: Schedule | None
    timeout_seconds: float | None
    allow_private_networks: bool = False
    # IANA zone of the times the site prints without one ("14:05", "um 14.05 Uhr"); None: UTC
    timezone: str | None = None

    def is_allowed(self, url: str) -> bool:
        """True if the URL's host is one of `allowed_domains` or a subdomain of one."""
        host = _url_host(url)
        return host is not None and _host_in(host, self.allowed_domains)

    def is_article_url(self, url: str) -> bool:
        """True if `article_url_pattern` is found in the URL (always, without a pattern)."""
        return self.article_url_pattern is None or self.article_url_pattern.search(url) is not None


@dataclass(frozen=True, slots=True)
class ScrapydNode:
    """One Scrapyd node of the `[executor]` table; credentials are environment variable *names*."""

    name: str
    url: str
    capacity: int
    username_env: str | None = None
    password_env: str | None = None

    def credentials(self, env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
        """(user, password) from the environment, or None without auth; ValueError if a named
        variable is unset (a node that needs a password must not be called without one)."""
        if self.username_env is None and self.password_env is None:
            return None
        env = os.environ if env is None else env
        values: list[str] = []
        for var in (self.username_env, self.password_env):
            if var is None:
                values.append("")
            elif var not in env:
                raise ValueError(f"node {self.name!r}: environment variable {var} is not set")
            else:
                values.append(env[var])
        return values[0], values[1]


@dataclass(frozen=True, slots=True)
class ExecutorConfig:
    """Where crawls run: `local` subprocesses of the scheduler, or `scrapyd` nodes (docs/scale-out.md)."""

    kind: str = "local"
    nodes: tuple[ScrapydNode, ...] = ()
    project: str = "newsingest"
    poll_interval: float = 2.0  # how often the scheduler asks each node for its jobs
    heartbeat: float = DEFAULT_HEARTBEAT  # how often a crawl on a node writes its run's heartbeat_at
    writer_timeout: float = DEFAULT_WRITER_TIMEOUT  # no heartbeat for this long: nothing writes for the run any more
    node_retry: float = 30.0  # a node that could not be reached gets no dispatch for this long

    @property
    def capacity(self) -> int:
        return sum(node.capacity for node in self.nodes)


# -- public functions ----------------------------------------------------------------


def resolve_sources_path(cli_value: str | None) -> Path:
    """``--sources FILE``, else ``$NEWSINGEST_SOURCES``, else ``./sources.toml``.

    Empty values count as unset, so ``NEWSINGEST_SOURCES=`` falls through.
    """
    for value in (cli_value, os.environ.get(ENV_VAR)):
        if value:
            return Path(value).expanduser()
    return Path(DEFAULT_FILE)


def load_sources(path: str | os.PathLike[str]) -> dict[str, Source]:
    """Read and validate the whole file; sources in file order. Raises `SourcesError`."""
    data = _read_toml(path)
    return _Loader(path).load(data)


def load_executor(path: str | os.PathLike[str]) -> ExecutorConfig:
    """The `[executor]` table (the whole file is validated); `local` when the file has none."""
    loader = _Loader(path)
    loader.load(_read_toml(path))
    return loader.executor_config


def load_source(path: str | os.PathLike[str], name: str) -> Source:
    """One source by name (the whole file is still validated, disabled sources included)."""
    sources = load_sources(path)
    try:
        return sources[name]
    except KeyError:
        known = ", ".join(sources)
        hint = _suggest(name, sources)
        raise SourcesError(path, f"source {_q(name)} not found{hint}; known: {known}") from None


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``"30s"``, ``"15m"``, ``"1h"``, ``"1d"``, ``"1h30m"`` or a number of seconds.

    Raises `ValueError` for anything else, including negative values; a bare
    number inside a string (``"90"``) is refused because its unit is a guess.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '15m' or a number of seconds, got {_type(value)}")
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"duration must be a finite number of seconds >= 0, got {value!r}")
        return seconds
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like '15m' or a number of seconds, got {_type(value)}")
    text = value.strip().lower()
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_RE.match(text, pos)
        if match is None:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
    if not text or pos != len(text):
        raise ValueError(f"invalid duration {value!r}; use e.g. '30s', '15m', '1h', '1d' or '1h30m'")
    return total


# -- loading -------------------------------------------------------------------------


def _read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise SourcesError(path, "file not found") from None
    except IsADirectoryError:
        raise SourcesError(path, "is a directory, not a file") from None
    except OSError as exc:
        raise SourcesError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SourcesError(path, "invalid TOML: not UTF-8", line=line) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        if match:
            detail = f"{message[: match.start()]} (column {match.group(2)})"
            raise SourcesError(path, f"invalid TOML: {detail}", line=int(match.group(1))) from None
        if message.endswith("(at end of document)"):
            detail = message.removesuffix("(at end of document)").rstrip()
            raise SourcesError(path, f"invalid TOML: {detail} (at end of file)",
                               line=max(1, len(text.splitlines()))) from None
        raise SourcesError(path, f"invalid TOML: {message}") from None


class _Loader:
    """Validation of one parsed file; every error names file, source and key."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self.where: str | None = None  # the source being validated
        self.in_defaults = False
        self.executor_config = ExecutorConfig()

    def fail(self, message: str, key: str | None = None) -> SourcesError:
        if self.in_defaults:
            return SourcesError(self.path, message, section="defaults", key=key)
        return SourcesError(self.path, message, source=self.where, key=key)

    def load(self, data: dict[str, Any]) -> dict[str, Source]:
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                raise self.fail(f"unknown top-level key {_q(key)}{_suggest(key, TOP_LEVEL_KEYS)}")
        if "executor" in data:
            self.executor_config = self.executor(data["executor"])
        defaults = data.get("defaults", {})
        if not isinstance(defaults, dict):
            raise self.fail(f"expected a [defaults] table, got {_type(defaults)}", key="defaults")
        self.in_defaults = True
        for key in defaults:
            if key in PER_SOURCE_KEYS:
                raise self.fail("not allowed in [defaults]; set it in each [sources.NAME] table", key=key)
            self.check_known(key, DEFAULTABLE_KEYS)
        self.parse_fields(defaults)  # a bad default is reported once, against [defaults]
        self.in_defaults = False

        tables = data.get("sources")
        if tables is None:
            raise self.fail("no sources defined; add a [sources.NAME] table")
        if not isinstance(tables, dict):
            raise self.fail(f"expected [sources.NAME] tables, got {_type(tables)}", key="sources")
        if not tables:
            raise self.fail("no sources defined; add a [sources.NAME] table", key="sources")
        sources: dict[str, Source] = {}
        for name, table in tables.items():
            self.where = name
            sources[name] = self.source(name, table, defaults)
        self.where = None
        return sources

    def check_known(self, key: str, known: tuple[str, ...], prefix: str = "") -> None:
        if key not in known:
            raise self.fail(f"unknown key {_q(prefix + key)}{_suggest(key, known, prefix)}")

    def source(self, name: str, table: Any, defaults: dict[str, Any]) -> Source:
        if not _NAME_RE.fullmatch(name):
            raise self.fail("invalid source name; use only letters, digits, '_' and '-'")
        if not isinstance(table, dict):
            raise self.fail(f"expected a [sources.{name}] table, got {_type(table)}")
        for key in table:
            self.check_known(key, SOURCE_KEYS)
        merged = dict(defaults)
        for key, value in table.items():
            if key in _MERGED_TABLES and isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value

        if "allowed_domains" not in table:
            raise self.fail("required; list the hosts this source may fetch from", key="allowed_domains")
        domains = self.domains(table["allowed_domains"])
        urls = {key: self.urls(key, table.get(key, []), domains) for key in URL_LIST_KEYS}
        if not any(urls.values()):
            raise self.fail("nothing to crawl; set at least one of 'feeds', 'sitemaps', 'start_urls'")
        fields = self.parse_fields(merged)
        return Source(name=name, allowed_domains=domains, feeds=urls["feeds"], sitemaps=urls["sitemaps"],
                      start_urls=urls["start_urls"], **fields)

    def parse_fields(self, table: dict[str, Any]) -> dict[str, Any]:
        """The keys [defaults] may hold too, validated and converted to `Source` fields."""
        timeout = table.get("timeout")
        return {
            "article_url_pattern": self.regex("article_url_pattern", table.get("article_url_pattern")),
            "exclude_url_pattern": self.regex("exclude_url_pattern", table.get("exclude_url_pattern")),
            "site_name": self.text("site_name", table.get("site_name")),
            "language": self.language(table.get("language")),
            "timezone": self.timezone(table.get("timezone")),
            "follow_depth": self.follow_depth(table.get("follow_depth", DEFAULT_FOLLOW_DEPTH)),
            "enabled": self.boolean("enabled", table.get("enabled", True)),
            "allow_private_networks": self.boolean("allow_private_networks",
                                                   table.get("allow_private_networks", False)),
            "settings": self.settings(table.get("settings", {})),
            "extraction": self.extraction(table.get("extraction", {})),
            "schedule": self.schedule(table.get("schedule")),
            "timeout_seconds": None if timeout is None else self.duration("timeout", timeout, positive=True),
        }

    # -- [executor] ----------------------------------------------------------------

    def executor(self, value: Any) -> ExecutorConfig:
        if not isinstance(value, dict):
            raise self.fail(f"expected an [executor] table, got {_type(value)}", key="executor")
        for key in value:
            self.check_known(key, EXECUTOR_KEYS, "executor.")
        kind = value.get("type", "local")
        if kind not in ("local", "scrapyd"):
            raise self.fail(f"expected 'local' or 'scrapyd', got {kind!r}", key="executor.type")
        project = value.get("project", "newsingest")
        if not isinstance(project, str) or not _PROJECT_RE.fullmatch(project):
            raise self.fail(f"expected a Scrapyd project name, got {project!r}", key="executor.project")
        durations = {key: self.duration(f"executor.{key}", value[key], positive=True)
                     for key in ("poll_interval", "heartbeat", "writer_timeout", "node_retry") if key in value}
        heartbeat = durations.get("heartbeat", DEFAULT_HEARTBEAT)
        writer_timeout = durations.get("writer_timeout", max(DEFAULT_WRITER_TIMEOUT, 3 * heartbeat))
        if writer_timeout < 2 * heartbeat:
            raise self.fail(f"must be at least twice executor.heartbeat ({heartbeat:g}s), or a slow database "
                            "write makes a live crawl look dead", key="executor.writer_timeout")
        durations["writer_timeout"] = writer_timeout
        nodes = self.nodes(value.get("nodes", []))
        if kind == "scrapyd" and not nodes:
            raise self.fail("type 'scrapyd' needs at least one [[executor.nodes]] table", key="executor.nodes")
        if kind == "local" and nodes:
            raise self.fail("nodes are only used with type = 'scrapyd'", key="executor.nodes")
        return ExecutorConfig(kind=kind, nodes=nodes, project=project, **durations)

    def nodes(self, value: Any) -> tuple[ScrapydNode, ...]:
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.fail(f"expected [[executor.nodes]] tables, got {_describe(value)}", key="executor.nodes")
        nodes: list[ScrapydNode] = []
        for index, table in enumerate(value):
            where = f"executor.nodes[{index}]"
            for key in table:
                self.check_known(key, NODE_KEYS, f"{where}.")
            url = table.get("url")
            problem = "is required" if url is None else None if isinstance(url, str) else "must be a string"
            if problem is None:
                problem = _url_problem(url)
                if problem is None and urlsplit(url).query:
                    problem = "must not have a query"
                if problem is None and urlsplit(url).username:
                    problem = "must not hold credentials; use username_env and password_env"
            if problem:
                raise self.fail(f"{url!r} {problem}" if url is not None else problem, key=f"{where}.url")
            url = url.rstrip("/")
            name = table.get("name") or urlsplit(url).netloc
            if not isinstance(name, str) or not _NODE_NAME_RE.fullmatch(name):
                raise self.fail(f"expected a node name of letters, digits, '.', ':', '_', '-', got {name!r}",
                                key=f"{where}.name")
            capacity = table.get("capacity", 1)
            if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
                raise self.fail(f"expected an integer >= 1, got {capacity!r}", key=f"{where}.capacity")
            env_names: dict[str, str | None] = {}
            for key in ("username_env", "password_env"):
                var = table.get(key)
                if var is not None and (not isinstance(var, str) or not _ENV_NAME_RE.fullmatch(var)):
                    raise self.fail(f"expected an environment variable name, got {var!r}", key=f"{where}.{key}")
                env_names[key] = var
            if any(node.name == name for node in nodes) or any(node.url == url for node in nodes):
                raise self.fail(f"node {name!r} ({url}) is listed twice", key=where)
            nodes.append(ScrapydNode(name=name, url=url, capacity=capacity, **env_names))
        return tuple(nodes)

    # -- one key each --------------------------------------------------------------

    def domains(self, value: Any) -> tuple[str, ...]:
        key = "allowed_domains"
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(f"expected a list of host names, got {_describe(value)}", key=key)
        if not value:
            raise self.fail("must not be empty", key=key)
        domains: list[str] = []
        for item in value:
            domain = _normalize_domain(item)
            if domain is None:
                raise self.fail(f"{item!r} is not a bare host name{_domain_hint(item)}", key=key)
            if domain not in domains:
                domains.append(domain)
        return tuple(domains)

    def urls(self, key: str, value: Any, domains: tuple[str, ...]) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(f"expected a list of URLs, got {_describe(value)}", key=key)
        urls: list[str] = []
        for item in value:
            problem = _url_problem(item)
            if problem:
                raise self.fail(f"{item!r} {problem}", key=key)
            host = _url_host(item)
            if host is None or not _host_in(host, domains):
                raise self.fail(f"{item!r} is outside allowed_domains ({', '.join(domains)})", key=key)
            if item not in urls:
                urls.append(item)
        return tuple(urls)

    def regex(self, key: str, value: Any) -> re.Pattern[str] | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(f"expected a regular expression string, got {_describe(value)}", key=key)
        try:
            return re.compile(value)
        except re.error as exc:
            raise self.fail(f"invalid regular expression {value!r}: {exc}", key=key) from None

    def text(self, key: str, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"expected a non-empty string, got {_describe(value)}", key=key)
        return value.strip()

    def language(self, value: Any) -> str | None:
        text = self.text("language", value)
        if text is not None and not _LANGUAGE_RE.fullmatch(text):
            raise self.fail(f"expected a language code like 'en' or 'pt-BR', got {text!r}", key="language")
        return text

    def timezone(self, value: Any) -> str | None:
        text = self.text("timezone", value)
        if text is None:
            return None
        try:
            ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            raise self.fail(f"expected an IANA time zone like 'Europe/Berlin' or 'America/New_York', got {text!r}",
                            key="timezone") from None
        return text

    def follow_depth(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(f"expected an integer >= 0, got {_describe(value)}", key="follow_depth")
        return value

    def boolean(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(f"expected true or false, got {_describe(value)}", key=key)
        return value

    def settings(self, value: Any) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"expected a table of Scrapy settings, got {_type(value)}", key="settings")
        for name, setting in value.items():
            if not _SETTING_RE.fullmatch(name):
                raise self.fail("Scrapy setting names are UPPER_CASE", key=f"settings.{name}")
            bad = _non_settings_value(setting)
            if bad is not None:
                raise self.fail(f"values must be strings, numbers, booleans, lists or tables, got {bad}",
                                key=f"settings.{name}")
        return MappingProxyType(dict(value))

    def extraction(self, value: Any) -> Mapping[str, str]:
        if not isinstance(value, dict):
            raise self.fail(f"expected a table of selectors, got {_type(value)}", key="extraction")
        selectors: dict[str, str] = {}
        for field, selector in value.items():
            self.check_known(field, EXTRACTION_KEYS, "extraction.")
            key = f"extraction.{field}"
            if not isinstance(selector, str) or not selector.strip():
                raise self.fail(f"expected a CSS or XPath selector, got {_describe(selector)}", key=key)
            selector = selector.strip()
            problem = _selector_problem(selector)
            if problem:
                raise self.fail(problem, key=key)
            selectors[field] = selector
        return MappingProxyType(selectors)

    def schedule(self, value: Any) -> Schedule | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail(f"expected a table with 'cron' or 'interval', got {_type(value)}", key="schedule")
        for key in value:
            self.check_known(key, SCHEDULE_KEYS, "schedule.")
        if ("cron" in value) == ("interval" in value):
            raise self.fail("set exactly one of 'cron' and 'interval'", key="schedule")
        cron = interval = None
        if "cron" in value:
            cron = value["cron"]
            if not isinstance(cron, str):
                raise self.fail(f"expected a 5-field crontab string, got {_type(cron)}", key="schedule.cron")
            cron = " ".join(cron.split())
            problem = _cron_problem(cron)
            if problem:
                raise self.fail(f"invalid crontab {cron!r}: {problem}", key="schedule.cron")
        else:
            interval = self.duration("schedule.interval", value["interval"], positive=True)
        jitter = value.get("jitter")
        jitter_seconds = None if jitter is None else self.duration("schedule.jitter", jitter)
        return Schedule(cron=cron, interval_seconds=interval, jitter_seconds=jitter_seconds)

    def duration(self, key: str, value: Any, *, positive: bool = False) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.fail(str(exc), key=key) from None
        if positive and seconds <= 0:
            raise self.fail(f"must be greater than zero, got {value!r}", key=key)
        return seconds


# -- helpers -------------------------------------------------------------------------


def _q(text: str) -> str:
    """Quote a name for a message: 'demo', or repr() when it holds odd characters."""
    return f"'{text}'" if text.isprintable() and "'" not in text else repr(text)


def _type(value: Any) -> str:
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


def _describe(value: Any) -> str:
    """The type of a bad value; for lists, the type of the first bad item too."""
    if isinstance(value, list):
        odd = [item for item in value if not isinstance(item, str)]
        return f"a list holding {_type(odd[0])}" if odd else "list"
    return _type(value)


def _suggest(key: str, known: Any, prefix: str = "") -> str:
    lowered = {k.lower(): k for k in known}
    match = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {_q(prefix + lowered[match[0]])}?)" if match else ""


def _normalize_domain(value: str) -> str | None:
    """Lower-case ASCII (IDNA) form of a bare host name, or None if it is not one."""
    host = value.lower().rstrip(".") if value == value.strip() else ""
    if not host:
        return None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        return None
    return host


def _domain_hint(value: str) -> str:
    if "://" in value or "/" in value:
        return " (give the host only, not a URL)"
    if ":" in value:
        return " (ports are not allowed; give the host only)"
    if value.startswith("."):
        return " (no leading dot: subdomains are always allowed)"
    if "*" in value:
        return " (no wildcards: subdomains are always allowed)"
    return ""


def _url_problem(url: str) -> str | None:
    if url != url.strip() or any(ch.isspace() for ch in url):
        return "contains whitespace"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return "is not an http(s) URL"
    if not parts.hostname:
        return "has no host"
    return None


def _url_host(url: str) -> str | None:
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    if not host:
        return None
    host = host.rstrip(".")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return host


def _host_in(host: str, domains: tuple[str, ...]) -> bool:
    return any(host == domain or host.endswith("." + domain) for domain in domains)


def _non_settings_value(value: Any) -> str | None:
    """The type name of the first value Scrapy settings cannot hold (TOML dates), or None."""
    if isinstance(value, dict):
        return next((bad for v in value.values() if (bad := _non_settings_value(v))), None)
    if isinstance(value, list):
        return next((bad for v in value if (bad := _non_settings_value(v))), None)
    return None if isinstance(value, str | int | float | bool) else _type(value)


def _selector_problem(selector: str) -> str | None:
    """Compile the selector the way the extractor will use it; None if it is valid.

    CSS goes through parsel's translator (cssselect's GenericTranslator plus
    Scrapy's ``::text`` and ``::attr(name)``), so selectors that work in
    ``response.css()`` are accepted here too.
    """
    if selector.startswith(("/", "(")):
        from lxml import etree

        try:
            etree.XPath(selector)
        except etree.XPathSyntaxError as exc:
            return f"invalid XPath {selector!r}: {exc}"
        return None
    from cssselect import SelectorError

    try:
        from parsel.csstranslator import GenericTranslator
    except ImportError:  # pragma: no cover - parsel comes with Scrapy
        from cssselect import GenericTranslator
    try:
        GenericTranslator().css_to_xpath(selector)
    except SelectorError as exc:
        return f"invalid CSS selector {selector!r}: {exc}"
    return None


def _cron_problem(expression: str) -> str | None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(expression, timezone="UTC")
    except ValueError as exc:
        return str(exc)
    return None
