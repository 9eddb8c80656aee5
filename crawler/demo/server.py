"""Serve a built demo site over loopback HTTP with the behaviour a crawler meets in the wild.

HTTP/1.1 keep-alive, per-page charsets, Last-Modified/ETag with 304s, a 301 for
slashless directory paths, a custom 404 page and configured 500s. Query strings
are ignored for file lookup, so tracking-parameter variants serve the same page,
and `hits` counts requests per path so tests can assert what a crawler fetched.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import os
import posixpath
import socket
import tempfile
import threading
from collections.abc import Iterator
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["DemoServer", "serve_demo_site"]

_TYPES = {
    ".html": "text/html", ".xml": "application/xml", ".txt": "text/plain", ".css": "text/css",
    ".svg": "image/svg+xml", ".json": "application/json", ".gz": "application/x-gzip",
}
_TEXT = {".html", ".xml", ".txt", ".css", ".svg", ".json"}
_FEED_TYPES = {"rss.xml": "application/rss+xml", "atom.xml": "application/atom+xml"}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server_version = "DemoCourier/1.0"
    demo: DemoServer  # set per server by DemoServer.start

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a crawl makes hundreds of requests and stderr is for real problems."""

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8",
              headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _not_found(self, head: bool) -> None:
        try:
            body = (self.demo.site_root / "404.html").read_bytes()
        except OSError:
            body = b"<!DOCTYPE html><title>Not found</title><h1>Not found</h1>\n"
        self._send(404, body, head=head)

    def _serve(self, head: bool) -> None:
        demo = self.demo
        split = urlsplit("http://demo" + self.path)  # a target like //x is a path here, not a host
        path = unquote(split.path) or "/"
        demo._count(path, self.path)
        norm = posixpath.normpath("/" + path.lstrip("/"))  # one leading slash: normpath keeps "//"
        if path.endswith("/") and norm != "/":
            norm += "/"
        if not norm.startswith("/") or ".." in norm.split("/"):
            return self._not_found(head)
        root = demo.site_root
        fs = root / norm.lstrip("/")
        if fs.is_dir():
            if not norm.endswith("/"):
                loc = norm + "/" + ("?" + split.query if split.query else "")
                return self._send(301, b"", headers={"Location": loc}, head=head)
            fs = fs / "index.html"
            key = norm
        else:
            key = norm[: -len("index.html")] if norm.endswith("/index.html") else norm
        if not fs.is_file():
            return self._not_found(head)
        config = demo.config()
        status = config["faults"].get(key) if demo.faults else None
        if status:
            body = b"<!DOCTYPE html><title>Server error</title><h1>500 Internal Server Error</h1>\n"
            return self._send(int(status), body, head=head)

        st = fs.stat()
        mtime = int(st.st_mtime)
        etag = f'"{mtime:x}-{st.st_size:x}"'
        headers = {"Last-Modified": formatdate(mtime, usegmt=True), "ETag": etag,
                   "Cache-Control": "max-age=60"}
        if self._not_modified(etag, mtime):
            self.send_response(304)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            return None
        ext = fs.suffix
        ctype = _FEED_TYPES.get(fs.name, _TYPES.get(ext, "application/octet-stream"))
        if ext in _TEXT:
            ctype += "; charset=" + config["charsets"].get(key, "utf-8")
        return self._send(200, fs.read_bytes(), ctype, headers, head=head)

    def _not_modified(self, etag: str, mtime: int) -> bool:
        inm = self.headers.get("If-None-Match")
        if inm is not None:  # RFC 9110: If-None-Match wins over If-Modified-Since
            return inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]
        ims = self.headers.get("If-Modified-Since")
        if not ims:
            return False
        try:
            return mtime <= int(parsedate_to_datetime(ims).timestamp())
        except (TypeError, ValueError, IndexError):
            return False


class DemoServer:
    """A ThreadingHTTPServer for a built site; loopback only, port 0 picks a free port.

    `root` is the directory `build_site` writes into (holding `site/` and
    `server.json`); it may be empty at start, so a caller can learn the port,
    build with the real base URL, and serve without restarting.
    """

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0, faults: bool = True) -> None:
        if not _is_loopback(host):
            raise ValueError(f"DemoServer binds loopback addresses only, not {host!r}")
        self.root = Path(root)
        self.host, self.port, self.faults = host, port, faults
        self.hits: collections.Counter[str] = collections.Counter()  # path (no query) -> requests
        self.target_hits: collections.Counter[str] = collections.Counter()  # raw path?query -> requests
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._config: tuple[int, dict[str, Any]] | None = None

    @property
    def site_root(self) -> Path:
        return self.root / "site"

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("DemoServer.base_url is known only after start()")
        host = "127.0.0.1" if self.host == "localhost" else self.host
        return f"http://{host}:{self.port}" if ":" not in host else f"http://[{host}]:{self.port}"

    def config(self) -> dict[str, Any]:
        """server.json (charsets, faults), re-read when the site is rebuilt."""
        path = self.root / "server.json"
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            return {"charsets": {}, "faults": {}}
        with self._lock:
            if self._config is None or self._config[0] != stamp:
                data = json.loads(path.read_text(encoding="utf-8"))
                self._config = (stamp, {"charsets": data.get("charsets", {}),
                                        "faults": data.get("faults", {})})
            return self._config[1]

    def _count(self, path: str, target: str) -> None:
        with self._lock:
            self.hits[path] += 1
            self.target_hits[target] += 1

    def start(self) -> DemoServer:
        handler = type("DemoHandler", (_Handler,), {"demo": self})
        server_cls = ThreadingHTTPServer
        if ":" in self.host:
            server_cls = type("DemoHTTPServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        httpd = server_cls(("127.0.0.1" if self.host == "localhost" else self.host, self.port), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"demo-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def serve_forever(self) -> None:
        """Block until stop() or Ctrl-C (for `python -m crawler.demo serve`)."""
        if self._thread is None:
            self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(timeout=0.5)
        finally:
            self.stop()

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve_demo_site(workdir: str | Path | None = None, faults: bool = True,
                    port: int = 0) -> Iterator[tuple[DemoServer, dict[str, Any]]]:
    """Bind a free port, build the site for that exact base URL into workdir, serve it.

    With workdir None a temporary directory is used and removed afterwards.
    """
    from crawler.demo.site import build_site

    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="demo-courier-"))
        os.makedirs(workdir, exist_ok=True)
        server = stack.enter_context(DemoServer(workdir, port=port, faults=faults))
        manifest = build_site(workdir, server.base_url)
        yield server, manifest
