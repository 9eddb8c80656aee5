"""Scrapyd nodes on loopback for tests: free ports, own working directories, one process group each.

Scrapyd has no --config flag: it reads ./scrapyd.conf from its working directory (and
/etc, ~, and the nearest scrapy.cfg), so every node runs in its own temporary directory,
outside the project (whose scrapy.cfg it would otherwise pick up). `http_port = 0` makes
it crash, so a free port is chosen first. Each node is its own session, so killing its
process group kills its crawls too, as a machine failure would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SCRAPYD_CONF = """[scrapyd]
bind_address = 127.0.0.1
http_port = {port}
poll_interval = 0.2
max_proc = {max_proc}
logs_dir = logs
jobs_dir =
items_dir =
eggs_dir = eggs
dbs_dir = dbs
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    name: str
    url: str
    workdir: Path
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> str:
        path = self.workdir / "scrapyd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        """The machine dies: SIGKILL to the node and every crawl it started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def start_node(name: str, workdir: Path, env: Mapping[str, str], max_proc: int = 4) -> Node:
    workdir.mkdir(parents=True, exist_ok=True)
    for _attempt in range(5):
        port = free_port()
        (workdir / "scrapyd.conf").write_text(SCRAPYD_CONF.format(port=port, max_proc=max_proc), encoding="utf-8")
        with (workdir / "scrapyd.log").open("ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "scrapyd"], cwd=workdir, env=dict(env),
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        node = Node(name, f"http://127.0.0.1:{port}", workdir, process)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{node.url}/daemonstatus.json", timeout=2) as response:
                    if json.loads(response.read()).get("status") == "ok":
                        return node
            except OSError:
                time.sleep(0.2)
        node.kill()  # lost the port to someone else, or too slow: try another port
    raise RuntimeError(f"Scrapyd node {name} did not start:\n{node.log[-3000:]}")
