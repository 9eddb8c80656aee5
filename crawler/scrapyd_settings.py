"""Settings of a crawl on a Scrapyd node: the project's settings, run from an unpacked egg.

`newsingest deploy` names this module in the egg's ``scrapy: settings`` entry
point, so Scrapyd's runner imports it first, before anything else of the
project. Scrapyd runs an egg in place, from the zip; but newsingest reads files
beside its modules (the Alembic migrations, which every crawl's schema check
needs), and its writer and extraction processes are *spawned*: they import the
project afresh from ``sys.path``. So the egg is unpacked once per version into
a cache directory, which goes first on ``sys.path`` (and first on the already
imported ``crawler`` package's path): the crawl and its child processes then
run the same code from real files. The settings themselves are
`crawler.settings`, unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path


def _unpack_running_egg() -> Path | None:
    """Unpack the egg this module runs from (None when it is not zipped) and put it first."""
    import crawler

    package_dir = Path(crawler.__file__).parent
    if package_dir.is_dir():
        return None
    archive = next((p for p in package_dir.parents if p.is_file() and zipfile.is_zipfile(p)), None)
    if archive is None:
        return None
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"newsingest-egg-{os.getuid()}-{digest}"
    if not (target / ".unpacked").exists():
        staging = Path(tempfile.mkdtemp(prefix=target.name + "-", dir=target.parent))
        with zipfile.ZipFile(archive) as egg:
            egg.extractall(staging)
        (staging / ".unpacked").write_text(str(archive), encoding="utf-8")
        try:
            staging.rename(target)  # atomic: crawls starting together end up with one copy
        except OSError:  # another crawl won the race; its copy is identical
            shutil.rmtree(staging, ignore_errors=True)
    sys.path.insert(0, str(target))
    for name in ("crawler", "pipelines", "storage"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "__path__"):
            module.__path__.insert(0, str(target / name))
    return target


UNPACKED_EGG = _unpack_running_egg()

from crawler.settings import *  # noqa: E402, F403  (the project's settings, unchanged)
