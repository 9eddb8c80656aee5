"""The address classifier behind the SSRF guard: every spelling of a private address is refused."""

from __future__ import annotations

import pytest

from crawler.netguard import literal_host, non_public_reason

BLOCKED = [
    "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "100.127.255.254", "0.0.0.0", "224.0.0.1", "255.255.255.255", "198.18.0.1", "240.0.0.1",
    "::1", "::", "fc00::1", "fd12:3456::1", "fe80::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",  # IPv4-mapped
    "2002:7f00:1::", "2002:a9fe:a9fe::1",  # 6to4 of 127.0.0.1 / 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo whose client is 127.0.0.1 (obfuscated)
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",  # NAT64 of 127.0.0.1 / 169.254.169.254
    "64:ff9b:1::a00:1",  # local-use NAT64
    "::127.0.0.1", "::10.0.0.1",  # IPv4-compatible
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:830::200e",
          "::ffff:93.184.216.34"]


@pytest.mark.parametrize("address", BLOCKED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert non_public_reason(address) is not None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert non_public_reason(address) is None


@pytest.mark.parametrize(("host", "literal"), [("127.0.0.1", "127.0.0.1"), ("[::1]", "::1"),
                                               ("example.com", None), ("127.1", None), ("2130706433", None)])
def test_literal_hosts(host: str, literal: str | None) -> None:
    ip = literal_host(host)
    assert (str(ip) if ip else None) == literal


def test_environment_proxy_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The resolver lets these through (the proxy may be private); the middleware checks what they fetch."""
    from crawler.netguard import environment_proxy_hosts

    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ftp_proxy", "FTP_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert environment_proxy_hosts() == frozenset()
    monkeypatch.setenv("http_proxy", "http://user:pw@proxy.internal:3128")
    monkeypatch.setenv("https_proxy", "10.0.0.5:8080")
    monkeypatch.setenv("ftp_proxy", "http://ftp-proxy.internal:21")  # not a scheme we fetch
    assert environment_proxy_hosts() == frozenset({"proxy.internal", "10.0.0.5"})
