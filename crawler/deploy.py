"""`newsingest deploy`: the installed project as a Scrapyd egg, the same version on every node.

The egg holds only project code (the `crawler`, `pipelines` and `storage`
packages, with their data files: migrations, demo templates) and the entry
point Scrapyd looks for, ``scrapy: settings = crawler.scrapyd_settings``. The
dependencies (Scrapy, SQLAlchemy, psycopg, trafilatura, ...) must be installed
in each node's environment.

The version is the package version plus a digest of the code, so a scheduler
dispatches exactly the code it runs itself (`schedule.json` gets ``_version``):
a node without it refuses the crawl and names the version to deploy. The egg is
built in memory, deterministically (sorted entries, fixed timestamps), so the
same code always gives the same version.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from crawler.scrapyd_client import ScrapydClient, ScrapydError
from crawler.sources import ExecutorConfig

PACKAGES = ("crawler", "pipelines", "storage")
SETTINGS_ENTRY_POINT = "crawler.scrapyd_settings"
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


class DeployError(RuntimeError):
    """A node is unreachable or refused the egg; nothing is half-deployed when it is unreachable."""


def package_version() -> str:
    try:
        return version("newsingest")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def _package_files() -> Iterator[tuple[str, Path]]:
    """(path in the egg, file on disk) for every file of the project's packages, sorted."""
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise DeployError(f"package {package!r} is not importable: is newsingest installed?")
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(root.rglob("*")):
            if path.is_dir() or _SKIP_DIRS & set(path.relative_to(root).parts) or path.suffix in _SKIP_SUFFIXES:
                continue
            yield f"{package}/{path.relative_to(root).as_posix()}", path


@dataclass(frozen=True, slots=True)
class Egg:
    version: str
    data: bytes
    files: int


@cache
def build_egg() -> Egg:
    """The egg of the code this process runs (cached: the code does not change under a process)."""
    files = list(_package_files())
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    egg_version = f"{package_version()}-{digest.hexdigest()[:12]}"
    metadata = {
        "EGG-INFO/PKG-INFO": f"Metadata-Version: 1.1\nName: newsingest\nVersion: {egg_version}\n",
        "EGG-INFO/entry_points.txt": f"[scrapy]\nsettings = {SETTINGS_ENTRY_POINT}\n",
        "EGG-INFO/top_level.txt": "".join(f"{p}\n" for p in PACKAGES),
        "EGG-INFO/SOURCES.txt": "".join(f"{name}\n" for name, _ in files),
        "EGG-INFO/zip-safe": "\n",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as egg:
        for name, text in metadata.items():
            egg.writestr(zipfile.ZipInfo(name, _ZIP_TIME), text)
        for name, path in files:
            info = zipfile.ZipInfo(name, _ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            egg.writestr(info, path.read_bytes())
    return Egg(egg_version, buffer.getvalue(), len(files))


def node_requirements() -> list[str]:
    """What a node's environment needs besides the egg: newsingest's dependencies and Scrapyd
    (the `scaleout` extra), but not newsingest itself, which would shadow every deployed egg."""
    from importlib.metadata import requires

    try:
        declared = requires("newsingest") or []
    except PackageNotFoundError:
        declared = []
    wanted: list[str] = []
    for requirement in declared:
        spec, _, marker = requirement.partition(";")
        if not marker.strip() or "scaleout" in marker:
            wanted.append(spec.strip())
    if not any(spec.lower().startswith("scrapyd") for spec in wanted):
        wanted += ["scrapyd>=1.6,<2", "setuptools<81"]
    return wanted


def project_version() -> str:
    """The egg version of the running code: what the scheduler asks nodes to run."""
    return build_egg().version


@dataclass(frozen=True, slots=True)
class Deployed:
    node: str
    version: str
    spiders: int


def deploy(config: ExecutorConfig, clients: Sequence[ScrapydClient] | None = None) -> list[Deployed]:
    """Upload the egg to every node of `config`; refuse before uploading anything if one is down."""
    if config.kind != "scrapyd":
        raise DeployError("the sources file has no [executor] with type = 'scrapyd': nothing to deploy to")
    if clients is None:
        clients = []
        for node in config.nodes:
            try:
                clients.append(ScrapydClient(node, credentials=node.credentials()))
            except ValueError as exc:
                raise DeployError(str(exc)) from None
    down: list[str] = []
    for client in clients:
        try:
            client.daemonstatus()
        except ScrapydError as exc:
            down.append(str(exc))
    if down:
        raise DeployError("not deployed anywhere: " + "; ".join(down))
    egg = build_egg()
    done: list[Deployed] = []
    for client in clients:
        try:
            answer = client.addversion(config.project, egg.version, egg.data)
        except ScrapydError as exc:
            names = ", ".join(d.node for d in done) or "none"
            raise DeployError(f"{exc} (already deployed to: {names})") from None
        spiders = int(answer.get("spiders", 0))
        if spiders < 1:
            raise DeployError(f"node {client.name}: the egg loaded but lists no spider")
        done.append(Deployed(client.name, egg.version, spiders))
    return done
