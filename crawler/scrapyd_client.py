"""A small client for the Scrapyd JSON API (the calls the scheduler and `newsingest deploy` make).

Standard library only (urllib): one request per call, basic auth when the node's
config names credential variables, a timeout on every call. A node that cannot
be reached raises `NodeUnreachable`; a node that answers with an error raises
`ScrapydError` with Scrapyd's message.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from crawler.sources import ScrapydNode

DEFAULT_TIMEOUT = 10.0


class ScrapydError(RuntimeError):
    """The node answered, but refused the request (`status: error`, or an HTTP error)."""


class NodeUnreachable(ScrapydError):
    """No answer from the node: connection refused, timeout, name resolution."""


class ScrapydClient:
    """One node's API. `jobs()` is cached for `cache_seconds`, so many runs polling one node cost
    one `listjobs.json` per interval, not one per run."""

    def __init__(self, node: ScrapydNode, *, timeout: float = DEFAULT_TIMEOUT, cache_seconds: float = 0.0,
                 credentials: tuple[str, str] | None = None) -> None:
        self.node = node
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self._auth = None
        if credentials is not None:
            token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode("ascii")
            self._auth = f"Basic {token}"
        self._jobs_lock = threading.Lock()
        self._jobs: tuple[float, str, dict[str, str]] | None = None

    @property
    def name(self) -> str:
        return self.node.name

    # -- transport ---------------------------------------------------------------------

    def _open(self, path: str, *, data: bytes | None = None, content_type: str | None = None,
              query: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
              timeout: float | None = None) -> tuple[int, bytes]:
        url = f"{self.node.url}/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
        if content_type:
            request.add_header("Content-Type", content_type)
        if self._auth:
            request.add_header("Authorization", self._auth)
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise ScrapydError(f"node {self.name}: {exc.code} {exc.reason} (check its credentials)") from None
            return exc.code, exc.read()
        except OSError as exc:  # URLError, timeouts, resets
            reason = getattr(exc, "reason", exc)
            raise NodeUnreachable(f"node {self.name} ({self.node.url}) is unreachable: {reason}") from None

    def _size(self, path: str) -> tuple[int, int]:
        request = urllib.request.Request(f"{self.node.url}/{path}", method="HEAD")
        if self._auth:
            request.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, int(response.headers.get("Content-Length") or 0)
        except urllib.error.HTTPError as exc:
            return exc.code, 0
        except OSError as exc:
            raise NodeUnreachable(f"node {self.name} ({self.node.url}) is unreachable: {exc}") from None

    def _json(self, path: str, **kwargs: Any) -> dict[str, Any]:
        status, body = self._open(path, **kwargs)
        try:
            data = json.loads(body)
        except ValueError:
            raise ScrapydError(f"node {self.name}: {path} answered HTTP {status} with no JSON") from None
        if status != 200 or data.get("status") != "ok":
            message = data.get("message") or f"HTTP {status}"
            raise ScrapydError(f"node {self.name}: {path}: {str(message).strip()}")
        return data

    def _post(self, path: str, fields: Iterable[tuple[str, str]], **kwargs: Any) -> dict[str, Any]:
        data = urllib.parse.urlencode(list(fields)).encode("ascii")
        return self._json(path, data=data, content_type="application/x-www-form-urlencoded", **kwargs)

    # -- API ---------------------------------------------------------------------------

    def daemonstatus(self) -> dict[str, Any]:
        return self._json("daemonstatus.json")

    def addversion(self, project: str, version: str, egg: bytes) -> dict[str, Any]:
        """Upload an egg (multipart form, as Scrapyd expects); the node lists its spiders to check it."""
        boundary = uuid.uuid4().hex
        parts: list[bytes] = []
        for key, value in (("project", project), ("version", version)):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="egg"; filename="{project}.egg"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + egg + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        # Listing the spiders imports the whole project on the node: give it time.
        return self._json("addversion.json", data=b"".join(parts),
                          content_type=f"multipart/form-data; boundary={boundary}", timeout=max(self.timeout, 60))

    def listversions(self, project: str) -> list[str]:
        return list(self._json("listversions.json", query={"project": project}).get("versions", []))

    def schedule(self, project: str, spider: str, *, jobid: str, version: str | None = None,
                 settings: Mapping[str, Any] | None = None, args: Mapping[str, str] | None = None) -> str:
        fields: list[tuple[str, str]] = [("project", project), ("spider", spider), ("jobid", jobid)]
        if version:
            fields.append(("_version", version))
        fields += [("setting", f"{key}={value}") for key, value in (settings or {}).items()]
        fields += list((args or {}).items())
        # The first schedule of a version lists its spiders (a subprocess on the node): give it time.
        data = self._post("schedule.json", fields, timeout=max(self.timeout, 60))
        self._jobs = None  # the next poll must see the new job
        return str(data.get("jobid", jobid))

    def cancel(self, project: str, job: str, signal: str = "INT") -> str | None:
        return self._post("cancel.json", [("project", project), ("job", job), ("signal", signal)]).get("prevstate")

    def jobs(self, project: str) -> dict[str, str]:
        """job id → `pending` / `running` / `finished`, for every job the node knows in `project`."""
        with self._jobs_lock:
            now = time.monotonic()
            if self._jobs is not None and self._jobs[1] == project and now - self._jobs[0] < self.cache_seconds:
                return self._jobs[2]
            data = self._json("listjobs.json", query={"project": project})
            states: dict[str, str] = {}
            for state in ("finished", "pending", "running"):  # a job moving between lists: the later wins
                for job in data.get(state, []):
                    states[str(job.get("id"))] = state
            self._jobs = (time.monotonic(), project, states)
            return states

    def log_tail(self, project: str, spider: str, job: str, lines: int = 50, max_bytes: int = 16384) -> str | None:
        """The end of a job's log, if the node keeps logs (`logs_dir`) and serves it."""
        path = "/".join(urllib.parse.quote(part, safe="") for part in ("logs", project, spider, f"{job}.log"))
        try:
            # The size first: Twisted answers 500 to a suffix range longer than the file.
            status, size = self._size(path)
            if status != 200:
                return None
            start = max(0, size - max_bytes)
            status, body = self._open(path, headers={"Range": f"bytes={start}-{size - 1}"} if start else None)
        except ScrapydError:
            return None
        if status not in (200, 206):
            return None
        text = body.decode("utf-8", "replace").splitlines()[1 if start else 0:]  # no torn first line
        return "\n".join(text[-lines:]) or None
