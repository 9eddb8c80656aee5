"""The address guard: article pages name URLs, and none may reach a private network.

Checked where it cannot be fooled: on the address a connection is actually
made to (a DNS resolver that refuses non-global results, so DNS rebinding
cannot slip past), on IP-literal URLs (which skip the resolver), on every
redirect and meta refresh (they become new requests that pass the
middleware again), and on the target of proxied requests (resolved here,
since the proxy would resolve it out of our sight). Only http and https are
fetched. A source that must reach private addresses says so with
`allow_private_networks = true` (the setting NEWSINGEST_ALLOW_PRIVATE_NETWORKS).

An HTTP proxy named in the environment (`http_proxy`, `https_proxy`: the ones
Scrapy's HttpProxyMiddleware uses) is the operator's choice and usually sits on
a private address: the resolver lets the connection to it through (else every
proxied fetch would fail as a DNS error), while the middleware checks what the
proxy is asked to fetch, and refuses pages that point at the proxy itself.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies

from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Request
from scrapy.resolver import CachingThreadedResolver
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import defer
from twisted.internet.error import DNSLookupError

try:  # Scrapy >= 2.19 wraps Twisted's DNS errors
    from scrapy.exceptions import CannotResolveHostError

    _DNS_ERRORS: tuple[type[BaseException], ...] = (DNSLookupError, CannotResolveHostError)
except ImportError:  # pragma: no cover - older Scrapy
    _DNS_ERRORS = (DNSLookupError,)
from twisted.internet.threads import deferToThread

logger = logging.getLogger(__name__)

ALLOWED_SCHEMES = frozenset({"http", "https"})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddressError(ConnectionError):
    """A fetch was refused because its address is not on the public internet.

    Not a DNS error on purpose: Scrapy retries those, a block must not be retried.
    """


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 spelling carries (mapped, 6to4, Teredo, NAT64, compatible)."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in net for net in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def non_public_reason(address: str | IPAddress) -> str | None:
    """Why this address must not be fetched, or None when it is a public unicast address."""
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return "not an IP address"
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "scoped IPv6 address"
        # An IPv4-mapped address is the IPv4 address itself; other spellings must pass both ways.
        candidates = [ip.ipv4_mapped] if ip.ipv4_mapped is not None else [ip, *embedded_ipv4(ip)]
    for candidate in candidates:
        for attribute in ("is_loopback", "is_private", "is_link_local", "is_multicast", "is_reserved",
                          "is_unspecified", "is_site_local"):
            if getattr(candidate, attribute, False):
                return f"{attribute[3:].replace('_', '-')} address {candidate}"
        if isinstance(candidate, ipaddress.IPv4Address) and candidate in _CGNAT:
            return f"shared (CGNAT) address {candidate}"
        if not candidate.is_global:
            return f"non-global address {candidate}"
    return None


def literal_host(host: str) -> IPAddress | None:
    """The IP address a URL host spells in canonical form ('127.0.0.1', '[::1]'), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


# The resolver is one per process and is built from the process settings before any
# spider exists; a crawl process crawls one source, whose choice is recorded here.
_process_allows_private: bool | None = None
# Names the resolver refused, so the middleware can tell a block from a DNS failure
# (Twisted turns any resolver error into DNSLookupError, which Scrapy would retry).
_blocked_names: dict[str, str] = {}
_BLOCKED_NAMES_MAX = 10_000


def environment_proxy_hosts() -> frozenset[str]:
    """Host names of the HTTP proxies configured in the environment, as Scrapy reads them."""
    hosts = set()
    for scheme, url in getproxies().items():
        if scheme in ALLOWED_SCHEMES:
            host = urlsplit(url if "://" in url else f"http://{url}").hostname
            if host:
                hosts.add(host)
    return frozenset(hosts)


def allow_private_networks_in_process(allow: bool) -> None:
    """Record the crawled source's `allow_private_networks` for this process's resolver."""
    global _process_allows_private
    _process_allows_private = allow


def blocked_reason(host: str) -> str | None:
    """Why the resolver refused `host` in this process, if it did."""
    return _blocked_names.get(host)


class GuardedResolver(CachingThreadedResolver):
    """Scrapy's caching resolver, refusing names that resolve to non-public addresses.

    Every hostname connection goes through here, including spellings such as
    `127.1`, `0x7f.1` or `2130706433` that the system resolver accepts (and even
    IP literals, for connections Twisted makes to a proxy). The environment's
    proxies are let through: the middleware has checked the target they fetch.
    """

    def __init__(self, reactor: Any, cache_size: int, timeout: float, allow_private: bool) -> None:
        super().__init__(reactor, cache_size, timeout)
        self.allow_private = allow_private
        self.proxy_hosts = environment_proxy_hosts()

    @classmethod
    def from_crawler(cls, crawler: Crawler, reactor: Any) -> GuardedResolver:
        settings = crawler.settings
        cache_size = settings.getint("DNSCACHE_SIZE") if settings.getbool("DNSCACHE_ENABLED") else 0
        return cls(reactor, cache_size, settings.getfloat("DNS_TIMEOUT"),
                   settings.getbool("NEWSINGEST_ALLOW_PRIVATE_NETWORKS"))

    def getHostByName(self, name: str, timeout: Any = ()) -> defer.Deferred[str]:
        deferred = super().getHostByName(name, timeout)
        allow = self.allow_private if _process_allows_private is None else _process_allows_private
        if not allow and name not in self.proxy_hosts:
            deferred.addCallback(self._check, name)
        return deferred

    @staticmethod
    def _check(address: str, name: str) -> str:
        reason = non_public_reason(address)
        if reason:
            if len(_blocked_names) < _BLOCKED_NAMES_MAX:
                _blocked_names[name] = f"{name} resolves to a {reason}"
            raise BlockedAddressError(f"{name} resolves to a {reason}")
        return address


class AddressGuardMiddleware:
    """Downloader middleware: schemes, IP-literal hosts and proxied targets."""

    def __init__(self, crawler: Crawler, allow_private: bool) -> None:
        self.stats = crawler.stats
        self.allow_private = allow_private
        self.proxy_hosts = environment_proxy_hosts()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> AddressGuardMiddleware:
        if not crawler.settings.getbool("NEWSINGEST_ADDRESS_GUARD_ENABLED", True):
            raise NotConfigured
        return cls(crawler, crawler.settings.getbool("NEWSINGEST_ALLOW_PRIVATE_NETWORKS"))

    async def process_request(self, request: Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme not in ALLOWED_SCHEMES:
            self._block(request, f"scheme {parts.scheme or '(none)'} is not fetched", "scheme")
        if self.allow_private:
            return
        host = parts.hostname or ""
        ip = literal_host(host)
        if ip is not None:
            reason = non_public_reason(ip)
            if reason:
                self._block(request, reason, "private_address")
        elif request.meta.get("proxy") or host in self.proxy_hosts:
            # The proxy resolves the name where our resolver cannot see it: resolve it here. A page
            # pointing at the proxy itself (not proxied: no_proxy, another scheme) is checked here
            # too, as the resolver lets the proxy's name through.
            infos = await maybe_deferred_to_future(deferToThread(
                socket.getaddrinfo, host, parts.port or (443 if parts.scheme == "https" else 80),
                0, socket.SOCK_STREAM))
            for info in infos:
                reason = non_public_reason(info[4][0])
                if reason:
                    self._block(request, f"{host} resolves to a {reason}", "private_address")

    def process_exception(self, request: Request, exception: BaseException) -> None:
        """Turn a resolver block (seen as a DNS error) into an ignored request: never retried."""
        reason = None
        if isinstance(exception, BlockedAddressError):
            reason = str(exception)
        elif isinstance(exception, _DNS_ERRORS):
            reason = blocked_reason(urlsplit(request.url).hostname or "")
        if reason:
            self._block(request, reason, "private_address")

    def _block(self, request: Request, reason: str, key: str) -> None:
        self.stats.inc_value(f"newsingest/blocked/{key}")
        logger.warning("blocked %s: %s", request.url, reason)
        raise IgnoreRequest(f"address guard: {reason}")
