"""Canonical URL rules: the identity of an article row.

An article is stored once per canonical URL, so every rule here decides
whether two URLs are "the same article". The rules are deliberately
conservative: merging two different articles loses data, while keeping two
spellings of one article only costs a duplicate row.

- `canonicalize_url`: the normal form stored in ``articles.canonical_url``.
- `choose_canonical`: the page's declared rel=canonical / og:url when it can
  be trusted, else the fetched URL; then canonicalized.
- `strip_tracking`: the light touch applied before a request is made, so the
  crawler does not fetch ``?utm_source=a`` and ``?utm_source=b`` separately.
- `url_fingerprint`: a fixed-size key for indexes.
- `is_own_page`: whether a fetched URL is the canonical page itself (a spelling
  of it), rather than another page (a syndicated, AMP or print copy) that
  declares it canonical; the canonical page's own text wins over a copy's.
- `fetched_url_key`: the ``article_urls.url`` of a fetched or requested URL
  (every page an article was fetched from, copies included, for recrawls).

- `strip_variant`: AMP and print renderings (``/amp/``, ``?amp=1``,
  ``?outputType=amp``, ``amp.`` hosts, AMP caches, ``/print/``, ``?print=1``)
  mapped to the article they render. `choose_canonical` applies it to both the
  fetched and the declared URL (the declared canonical of an AMP page usually
  points at the normal page already); `canonicalize_url` itself stays a pure
  spelling normalization.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from urllib.parse import unquote_plus, urljoin, urlsplit, urlunsplit

from w3lib.html import strip_html5_whitespace

__all__ = [
    "INDEX_FILES",
    "TRACKING_PARAMS",
    "TRACKING_PREFIXES",
    "canonicalize_url",
    "choose_canonical",
    "fetched_url_key",
    "is_own_page",
    "is_tracking_param",
    "strip_tracking",
    "strip_variant",
    "url_fingerprint",
]

# Query parameters that only say how a reader arrived, never which page they
# get. Matched case-insensitively on the decoded name. Generic names that
# sites also use for content (`src`, `source`, `id`, `cid`, `s`, `si`, `cmp`,
# `iid`, `trk`) are left alone on purpose: stripping them could merge two
# different articles.
TRACKING_PARAMS: frozenset[str] = frozenset({
    # ad-click identifiers
    "fbclid", "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "gad_source", "srsltid", "msclkid", "yclid",
    "twclid", "ttclid", "li_fat_id", "epik", "tblci", "rb_clickid", "ef_id", "s_kwcid",
    # analytics / social share markers
    "_ga", "_gl", "igshid", "igsh", "mc_cid", "mc_eid", "_hsenc", "_hsmi", "__hssc", "__hstc", "__hsfp",
    "hsctatracking", "mkt_tok", "vero_id", "vero_conv", "oly_anon_id", "oly_enc_id", "_openstat",
    "ml_subscriber", "ml_subscriber_hash", "_bhlid", "_kx", "_branch_match_id", "_branch_referrer",
    "fb_action_ids", "fb_action_types", "fb_ref", "fb_source", "action_object_map", "action_type_map",
    "action_ref_map", "__twitter_impression", "tt_medium", "tt_content", "guccounter", "guce_referrer",
    "guce_referrer_sig", "oborigurl",
    # Matomo / Piwik
    "pk_campaign", "pk_kwd", "pk_keyword", "pk_source", "pk_medium", "pk_content", "pk_cid",
    # referrer markers
    "ref", "ref_src", "ref_url",
    # news publishers' campaign parameters
    "cmpid", "ocid", "ncid", "icid", "sr_share", "share", "smid", "smtyp", "s_cid", "ito", "spm", "xtor",
    "ns_source", "ns_mchannel", "ns_campaign", "ns_linkname", "ns_fee",
})
# utm_* (Google), at_* (AT Internet), wt_* / WT.* (Webtrends), mtm_* (Matomo), hsa_* (HubSpot ads).
TRACKING_PREFIXES: tuple[str, ...] = ("utm_", "at_", "wt_", "wt.", "mtm_", "hsa_")

# A final path segment that names the directory's default document.
INDEX_FILES: frozenset[str] = frozenset({"index.html", "index.htm", "index.php"})

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HEX = "0123456789ABCDEFabcdef"
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters left as they are (RFC 3986 pchar plus "/" and "?"); "%" only as a valid escape.
_PATH_SAFE = _UNRESERVED | frozenset("!$&'()*+,;=:@/")
_QUERY_SAFE = _PATH_SAFE | frozenset("?")
# Section front pages: a single word such as /politics/ or /us-news.
_SECTION_RE = re.compile(r"[a-z]+(?:-[a-z]+)?", re.IGNORECASE)
# Host prefixes that name the same site as the bare domain.
_SAME_SITE_PREFIXES = ("www.", "m.", "mobile.", "amp.")


def is_tracking_param(name: str) -> bool:
    """True if a query parameter name (raw or decoded) is a tracking parameter."""
    key = unquote_plus(name).strip().lower()
    while key.startswith("amp;"):  # "&amp;utm_source=" double-escaped in feeds
        key = key[4:]
    return key in TRACKING_PARAMS or key.startswith(TRACKING_PREFIXES)


def strip_tracking(url: str) -> str:
    """Remove tracking parameters and the fragment; leave every other character alone.

    Used on links before they are requested, so it must not change what the
    server sees (no re-encoding, no sorting); `canonicalize_url` does the rest.
    """
    head = url.split("#", 1)[0]
    base, sep, query = head.partition("?")
    if not sep:
        return head
    kept = [part for part in query.split("&") if part and not is_tracking_param(part.partition("=")[0])]
    return f"{base}?{'&'.join(kept)}" if kept else base


def canonicalize_url(url: str, *, base: str | None = None) -> str:
    """The normal form of an http(s) URL, used as an article's identity.

    Resolved against `base`; scheme and host lower-cased, host IDNA-encoded,
    default port, user info and fragment dropped; tracking parameters
    removed and the rest sorted by name (stable: repeated names keep their
    order; blank values kept); percent-escapes normalized; dot segments
    resolved; a final ``index.html``/``index.htm``/``index.php`` dropped; an
    empty path becomes ``/``. Trailing slashes are otherwise kept as they
    are, because sites treat ``/a`` and ``/a/`` as different pages.

    Raises `ValueError` for anything that is not an absolute http(s) URL.
    """
    url = strip_html5_whitespace(url)
    if base is not None:
        url = urljoin(strip_html5_whitespace(base), url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    netloc = _netloc(scheme, parts.hostname, parts.port, url)

    segments = _remove_dot_segments(_normalize_escapes(parts.path, _PATH_SAFE)).split("/")
    if segments[-1] in INDEX_FILES:
        segments[-1] = ""
    path = "/".join(segments) or "/"
    if not path.startswith("/"):
        path = "/" + path

    params = [p for p in parts.query.split("&") if p and not is_tracking_param(p.partition("=")[0])]
    params.sort(key=lambda p: unquote_plus(p.partition("=")[0]))
    query = "&".join(_normalize_escapes(p, _QUERY_SAFE) for p in params)
    return urlunsplit((scheme, netloc, path, query, ""))


def choose_canonical(fetched_url: str, declared: str | None) -> str:
    """The declared canonical (rel=canonical / og:url) if trustworthy, else the fetched URL.

    The declared URL is resolved against the fetched one and accepted only if
    it is http(s), on the same site (`_same_site`) and not a home or section
    front page while the fetched URL is an article below it: CMSes that put
    ``<link rel=canonical href="/">`` on every article would otherwise merge
    all of them into one row. Either way the result is canonicalized.
    """
    fetched = strip_variant(canonicalize_url(fetched_url))
    if not declared or not declared.strip():
        return fetched
    try:
        candidate = strip_variant(canonicalize_url(declared, base=fetched_url))
    except ValueError:
        return fetched
    a, b = urlsplit(fetched), urlsplit(candidate)
    if not _same_site(a.hostname or "", a.port, b.hostname or "", b.port):
        return fetched
    if _is_front_page_of(b.path, b.query, a.path):
        return fetched
    return candidate


def is_own_page(fetched_url: str | None, canonical_url: str) -> bool:
    """Whether `fetched_url` is the page `canonical_url` names, only spelled differently.

    Tracking parameters, ``index.html``, case and escapes do not count, nor do the spellings a
    server answers with the same document as the canonical one: ``http``/``https``, a ``www.``
    label, a trailing slash (``/a`` served without a redirect while it declares ``/a/``). Judging
    the page itself a copy would lose its text for good (a copy stored first would keep standing in
    for it), while these spellings never name another page. An AMP or print rendering, or another
    page that declares `canonical_url` canonical, is not the page itself: its text is a stand-in
    until the canonical page is fetched.
    """
    if not fetched_url:
        return False
    if fetched_url == canonical_url:
        return True
    try:
        fetched = canonicalize_url(fetched_url)
        return fetched == canonical_url or _spelling_key(fetched) == _spelling_key(canonicalize_url(canonical_url))
    except ValueError:
        return False


def _spelling_key(url: str) -> tuple[str, int | None, str, str]:
    """A canonical URL without what `is_own_page` ignores: scheme, a ``www.`` label, a trailing slash."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host.startswith("www.") and host.count(".") >= 2:
        host = host[len("www."):]
    return host, parts.port, parts.path.rstrip("/") or "/", parts.query


def fetched_url_key(url: str | None) -> str | None:
    """The ``article_urls`` key of a page URL: its spelling normalized (`canonicalize_url`), None if
    it is not an http(s) URL.

    Renderings are *not* mapped to the article (no `strip_variant`): an AMP or print page has
    validators of its own, and the key must name the page that was fetched.
    """
    if not url:
        return None
    try:
        return canonicalize_url(url)
    except ValueError:
        return None


# Query parameters (lower-cased name -> values) that ask for an AMP or print rendering.
_VARIANT_PARAMS: dict[str, frozenset[str]] = {
    "amp": frozenset({"", "1", "true", "yes"}),
    "_amp": frozenset({"", "1", "true", "yes"}),
    "print": frozenset({"", "1", "true", "yes"}),
    "printable": frozenset({"", "1", "true", "yes"}),
    "outputtype": frozenset({"amp", "print"}),
    "output": frozenset({"amp", "print"}),
    "view": frozenset({"amp", "print"}),
    "template": frozenset({"amp", "print"}),
}
# Path segments that name a rendering, not a page (removed unless they are the whole path).
_VARIANT_SEGMENTS = frozenset({"amp", "print"})
# AMP caches: https://example-com.cdn.ampproject.org/c/s/example.com/a -> https://example.com/a
_AMP_CACHE_RE = re.compile(r"^/[a-z]{1,2}/(?:(s)/)?(.+)$")
# Google's AMP viewer, after its /amp prefix: /s/example.com/a (https) or /example.com/a (http).
_AMP_VIEWER_RE = re.compile(r"^/(?:(s)/)?(.+)$")


def strip_variant(url: str) -> str:
    """Map an AMP or print rendering of a canonical URL to the article's own URL.

    Takes and returns a `canonicalize_url` result. Removes ``amp``/``print``
    path segments (``/news/a-b/amp/``, ``/amp/news/a-b``, ``/print/node/1``),
    an ``.amp`` / ``.amp.html`` suffix, and the query parameters that select a
    rendering (``amp=1``, ``outputType=amp``, ``print=1``, ``view=print``);
    maps an ``amp.`` host to ``www.`` and unwraps AMP cache and Google AMP
    viewer URLs. A path that is only ``/amp/`` or ``/print/`` is kept (a
    section or page of that name).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc, path = parts.netloc, parts.path
    inner = None
    if host.endswith(".cdn.ampproject.org"):
        inner = _AMP_CACHE_RE.match(path)
    elif host in ("www.google.com", "google.com") and path.startswith("/amp/"):
        inner = _AMP_VIEWER_RE.match(path[len("/amp"):])
    if inner and "." in inner.group(2).split("/", 1)[0]:
        target = f"{'https' if inner.group(1) else 'http'}://{inner.group(2)}"
        try:
            return strip_variant(canonicalize_url(target + (f"?{parts.query}" if parts.query else "")))
        except ValueError:
            return url
    if host.startswith("amp.") and host.count(".") >= 2 and not _is_ip_or_local(host):
        netloc = "www." + netloc[len("amp."):]
    segments = path.split("/")
    kept = [segment for segment in segments if segment.lower() not in _VARIANT_SEGMENTS]
    if len(kept) != len(segments) and any(kept):
        path = "/".join(kept)
    last = path.rsplit("/", 1)
    if last[-1].endswith(".amp.html"):
        path = path[: -len(".amp.html")] + ".html"
    elif last[-1].endswith(".amp") and len(last[-1]) > 4:
        path = path[: -len(".amp")]
    query = parts.query
    if query:
        params = [p for p in query.split("&")
                  if not _is_variant_param(*p.partition("=")[::2])]
        query = "&".join(params)
    return urlunsplit((parts.scheme, netloc, path or "/", query, ""))


def _is_variant_param(name: str, value: str) -> bool:
    values = _VARIANT_PARAMS.get(unquote_plus(name).lower())
    return values is not None and unquote_plus(value).lower() in values


def url_fingerprint(canonical_url: str) -> str:
    """SHA-1 hex digest of an already canonical URL: a fixed-size index key.

    The URL is hashed as given (UTF-8); canonicalize it first.
    """
    return hashlib.sha1(canonical_url.encode("utf-8")).hexdigest()


# -- helpers -------------------------------------------------------------------------


def _netloc(scheme: str, hostname: str | None, port: int | None, url: str) -> str:
    """host[:port], lower-case and IDNA-encoded; user info is never part of an identity."""
    if not hostname:
        raise ValueError(f"URL has no host: {url!r}")
    host = hostname.rstrip(".")
    if ":" in host:  # IPv6 literal
        return f"[{host}]" + (f":{port}" if port is not None and port != _DEFAULT_PORTS[scheme] else "")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"invalid host name in {url!r}: {exc}") from None
    host = host.lower()
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        return f"{host}:{port}"
    return host


def _normalize_escapes(text: str, safe: frozenset[str]) -> str:
    """RFC 3986 §6.2.2 normalization of one URL component.

    Escapes of unreserved characters are decoded (``%7E`` → ``~``), other
    escapes upper-cased (``%2f`` → ``%2F``, never decoded, so ``/`` and
    ``%2F`` stay different), and characters that may not appear raw
    (spaces, non-ASCII, stray ``%``) are UTF-8 percent-encoded.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "%" and i + 2 < n and text[i + 1] in _HEX and text[i + 2] in _HEX:
            decoded = chr(int(text[i + 1 : i + 3], 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + text[i + 1 : i + 3].upper())
            i += 3
            continue
        if ch in safe:
            out.append(ch)
        else:
            out.extend(f"%{byte:02X}" for byte in ch.encode("utf-8", "surrogatepass"))
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4: ``/a/./b/../c`` → ``/a/c``."""
    if "." not in path:
        return path
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/".join(output)


def _is_ip_or_local(host: str) -> bool:
    if "." not in host:  # localhost, intranet names, IPv6 literals
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _site_host(host: str) -> str:
    """The host without a www./m./mobile./amp. label, when a real domain remains."""
    for prefix in _SAME_SITE_PREFIXES:
        rest = host[len(prefix):]
        if host.startswith(prefix) and rest.count(".") >= 1:
            return rest
    return host


def _same_site(host_a: str, port_a: int | None, host_b: str, port_b: int | None) -> bool:
    """Whether two hosts belong to one site, without a public-suffix list.

    IP addresses and dot-less hosts (localhost) must match exactly, port
    included. Names match when equal, when one is a subdomain of the other
    (news.example.com and example.com), or when they differ only by a
    www./m./mobile./amp. label (m.example.com and www.example.com). Sibling
    subdomains do not (alice.substack.com and bob.substack.com belong to
    different people), nor do example.com and example.co.uk.
    """
    if not host_a or not host_b:
        return False
    if _is_ip_or_local(host_a) or _is_ip_or_local(host_b):
        return host_a == host_b and port_a == port_b
    a, b = _site_host(host_a), _site_host(host_b)
    if a == b:
        return True
    shorter, longer = sorted((a, b), key=len)
    return longer.endswith("." + shorter)


def _is_front_page_of(path: str, query: str, article_path: str) -> bool:
    """Whether a declared canonical is the home page or a section front above the article.

    Home: ``/`` with no query (``/?p=123`` is a WordPress article). Section:
    a single word such as ``/politics/`` that the article's path starts with,
    while the article is deeper. Article slugs have digits or several
    hyphens, which is what keeps ``/some-story/amp`` → ``/some-story`` valid.
    """
    if query or path == article_path:
        return False
    if path == "/":
        return True
    segment = path.strip("/")
    if "/" in segment or not _SECTION_RE.fullmatch(segment):
        return False
    article_segments = [s for s in article_path.split("/") if s]
    return len(article_segments) > 1 and article_segments[0] == segment
