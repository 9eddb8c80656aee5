"""Helpers the benchmarks share to serve a newssite build on loopback and crawl it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_newssite(out: Path, port: int, env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start newssite's stdlib server on `port` and return once it accepts connections.

    With `log`, its access log (``serve --log``, on stderr) is appended to that file.
    """
    command = [sys.executable, "-m", "newssite", "serve", str(out), "--port", str(port)]
    if log is None:
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        with log.open("ab") as sink:
            server = subprocess.Popen([*command, "--log"], env=env, stdout=subprocess.DEVNULL, stderr=sink)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.1)
    server.terminate()
    raise RuntimeError("newssite server did not start")


def crawl_source(sources: Path, name: str, db_url: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """`newsingest crawl NAME` in a subprocess; return its result and wall time in seconds."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "crawler.cli", "crawl", name, "--sources", str(sources),
                             "--db", db_url, "-s", "LOG_LEVEL=WARNING"], cwd=ROOT, text=True, capture_output=True)
    return result, time.perf_counter() - started
