"""Test hosts with public addresses that exist only inside this machine: Linux network namespaces.

The SSRF guard lets a source reach loopback or private addresses only when it
says `allow_private_networks = true`, so a loopback test server cannot play a
*public* site that redirects the crawler to a private address. Here two
namespaces are joined by a veth pair and given addresses the classifier calls
global (11.0.0.0/24, see `crawler.netguard.non_public_reason`):

    origin namespace  11.0.0.1  <--veth-->  11.0.0.2  client namespace (own lo: 127.0.0.1, ::1)

Nothing is routed anywhere else: neither namespace has a default route or a
link to the host's namespace, so no packet can leave them. The crawl runs in the
client namespace (`Topology.popen`), where its 127.0.0.1/[::1] is the client's
own loopback, not the host's. Servers for either namespace run in this process:
`Topology.serve` creates the listening socket from a thread that has entered the
namespace (setns(2) acts on the calling thread only) and keeps serving from that
thread, so the handler threads it starts (a proxy's outgoing connections, say)
are in the namespace too.

Names carry the pid and a random tag, so parallel runs do not clash; the
namespaces (and the veth pair with them) are deleted on exit.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
ORIGIN_IP = "11.0.0.1"  # global by Python's and our classifier: a "public" site for the guard
CLIENT_IP = "11.0.0.2"
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip`"
    probe = f"ni-probe-{os.getpid()}-{secrets.token_hex(2)}"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as exc:
        return f"`ip netns add` failed: {exc}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=30)
    return None


def require_netns() -> None:
    """Skip without namespaces, except under CI (CI=true), where their absence is a failure."""
    reason = netns_unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"network namespace tests cannot run in CI: {reason}")
    pytest.skip(f"network namespace tests skipped: {reason}")


def _enter(namespace: str) -> None:
    """Move the calling thread (only) into `namespace`."""
    fd = os.open(os.path.join(NETNS_DIR, namespace), os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({namespace}): {os.strerror(errno)}")
    finally:
        os.close(fd)


@dataclass
class Topology:
    """Two namespaces on one veth link: `origin` (11.0.0.1) and `client` (11.0.0.2)."""

    origin: str
    client: str
    servers: list[ThreadingHTTPServer] = field(default_factory=list)
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)

    def serve(self, namespace: str, handler: type[BaseHTTPRequestHandler], host: str, port: int = 0,
              ) -> ThreadingHTTPServer:
        """Start `handler` on host:port inside `namespace`; stopped with the topology."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("NamespacedServer", (ThreadingHTTPServer,),
                            {"address_family": family, "daemon_threads": True})
        ready: dict[str, Any] = {}
        started = threading.Event()

        def run() -> None:
            try:
                _enter(namespace)
                ready["server"] = server_class((host, port), handler)
            except Exception as exc:  # reported to the caller below
                ready["error"] = exc
                return
            finally:
                started.set()
            ready["server"].serve_forever(poll_interval=0.2)

        threading.Thread(target=run, name=f"serve-{namespace}-{host}", daemon=True).start()
        started.wait(30)
        if "error" in ready or "server" not in ready:
            raise RuntimeError(f"cannot serve in {namespace} on {host}:{port}: {ready.get('error')}")
        server: ThreadingHTTPServer = ready["server"]
        self.servers.append(server)
        return server

    def command(self, namespace: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", namespace, *argv]

    def popen(self, namespace: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process inside `namespace` (tracked: killed by pid at exit if still running)."""
        proc = subprocess.Popen(self.command(namespace, argv), **kwargs)
        self.processes.append(proc)
        return proc

    def run(self, namespace: str, argv: list[str], timeout: float, **kwargs: Any,
            ) -> subprocess.CompletedProcess[str]:
        proc = self.popen(namespace, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for server in self.servers:
            server.shutdown()
            server.server_close()


@contextmanager
def topology() -> Iterator[Topology]:
    """Create the origin/client namespaces and their link; delete both on exit."""
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
    origin, client = f"ni-o-{tag}", f"ni-c-{tag}"
    veth_origin, veth_client = f"nio{tag}"[:15], f"nic{tag}"[:15]
    created: list[str] = []
    topo = Topology(origin, client)
    try:
        for name in (origin, client):
            _ip("netns", "add", name)
            created.append(name)
        _ip("link", "add", veth_origin, "netns", origin, "type", "veth", "peer", "name", veth_client,
            "netns", client)
        _ip("-n", origin, "addr", "add", f"{ORIGIN_IP}/24", "dev", veth_origin)
        _ip("-n", client, "addr", "add", f"{CLIENT_IP}/24", "dev", veth_client)
        for name, veth in ((origin, veth_origin), (client, veth_client)):
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "link", "set", veth, "up")
        yield topo
    finally:
        topo.close()
        for name in created:  # deleting a namespace deletes its end of the veth pair, and so the pair
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
